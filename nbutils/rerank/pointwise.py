"""What every pointwise ranker shares (one score per (prompt, response), on its own): the batching
of :meth:`PointwiseRanker.score` and the error a ranker raises. Its own module so that rankers
living elsewhere (``nbutils.rerank.self_judge``) subclass it without importing the loader.
"""
from __future__ import annotations

import numpy as np


class RankerError(RuntimeError):
    """A ranker that cannot load or cannot score."""


class PointwiseRanker:
    """Scores each (prompt, response) on its own; subclasses define ``score_pairs``."""

    def score(self, prompts, candidates, batch_size, desc: str | None = None,
              bucketing: bool = True) -> list[np.ndarray]:
        """Each prompt's candidates' scores; ``bucketing`` is PairRM's (taken, not used here)."""
        from tqdm.auto import tqdm
        flat = [(p, c) for p, cs in zip(prompts, candidates) for c in cs]
        values = []
        for start in tqdm(range(0, len(flat), batch_size), desc=desc, unit="batch", disable=desc is None):
            values.extend(self.score_pairs(flat[start: start + batch_size], start))
        out, pos = [], 0
        for cs in candidates:
            out.append(np.asarray(values[pos: pos + len(cs)], dtype=np.float32))
            pos += len(cs)
        return out

    def truncation(self, prompts, candidates) -> list[dict]:
        """Per prompt, what the ranker cuts (:func:`truncated_rows`); none here."""
        return [{} for _ in prompts]


def truncated_rows(count, prompts, candidates, source_limit: int, candidate_limit: int) -> list[dict]:
    """Per prompt: 1 when the ranker reads its prompt in part, how many of its responses it cuts, and
    both limits. ``count(texts, kind)``: each text's tokens as the ranker reads it (kind ``source`` or
    ``candidate``), one tokenizer call for all of them."""
    sources = count(list(prompts), "source")
    flat = count([c for row in candidates for c in row], "candidate")
    out, pos = [], 0
    for s, row in zip(sources, candidates):
        out.append({"prompts_truncated_by_ranker": int(s > source_limit),
                    "responses_truncated_by_ranker": sum(n > candidate_limit for n in flat[pos: pos + len(row)]),
                    "ranker_source_maxlength": source_limit, "ranker_candidate_maxlength": candidate_limit})
        pos += len(row)
    return out
