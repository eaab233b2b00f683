"""Which of a prompt's scored responses become the DPO pair (the ``pair_selection`` param).

A selection gets the responses, their scores (``None`` for an empty response,
never picked), a seeded RNG and the stage's params, and returns (chosen index,
rejected index). Prompts with fewer than two scored responses, ties, and
identical chosen and rejected texts are skipped and counted.
"""
from __future__ import annotations

import random
from itertools import permutations
from typing import Callable

import numpy as np

from nbutils.store.ids import derive_seed

Selection = Callable[[list[str], list, random.Random, dict], tuple[int, int]]
SELECTIONS: dict[str, Selection] = {}


def selection(name: str):
    """Register a pair selection under ``name`` (a value of ``pair_selection``)."""
    def register(fn: Selection) -> Selection:
        SELECTIONS[name] = fn
        return fn
    return register


def _scored(scores) -> list[int]:
    return [i for i, s in enumerate(scores) if s is not None]


@selection("best_worst")
def best_worst(responses, scores, rng, params):
    """The blog's: highest-scored response vs lowest-scored (first of equals)."""
    valid = _scored(scores)
    return max(valid, key=lambda i: scores[i]), min(valid, key=lambda i: scores[i])


@selection("best_random")
def best_random(responses, scores, rng, params):
    """Highest-scored response vs a random other one."""
    valid = _scored(scores)
    best = max(valid, key=lambda i: scores[i])
    return best, rng.choice([i for i in valid if i != best])


@selection("length_controlled")
def length_controlled(responses, scores, rng, params):
    """The pair the ranker orders (score_chosen > score_rejected) with the largest
    length-penalised margin: (z_chosen - z_rejected) - length_penalty * (r_chosen - r_rejected),
    z = the score standardised over the prompt's responses, r = length / their mean length.
    length_penalty 0 is best_worst; larger values favour a shorter chosen and a longer
    rejected, so DPO stops learning "longer is better" from the ranker's length bias."""
    valid = _scored(scores)
    s = np.array([scores[i] for i in valid], dtype=float)
    if s.std() == 0:
        return valid[0], valid[1]  # all tied: select_pairs skips it
    z = (s - s.mean()) / s.std()
    lengths = np.array([len(responses[i]) for i in valid], dtype=float)
    r = lengths / lengths.mean()
    margin = {(a, b): (z[a] - z[b]) - params["length_penalty"] * (r[a] - r[b])
              for a, b in permutations(range(len(valid)), 2) if s[a] > s[b]}
    a, b = max(margin, key=margin.get)
    return valid[a], valid[b]


def select_pairs(rows: list[dict], method: str, seed: int, params: dict | None = None) -> tuple[list[dict], dict]:
    """Rows with ``prompt_id``, ``all_generated_responses``, ``all_rm_scores`` ->
    (rows with ``chosen_index``/``rejected_index`` added, skip counts). ``params``:
    what the selection reads (``length_penalty``)."""
    choose = SELECTIONS[method]
    kept, skipped = [], {"too_few_scored": 0, "tied": 0, "identical": 0}
    for row in rows:
        responses, scores = row["all_generated_responses"], row["all_rm_scores"]
        if len(_scored(scores)) < 2:
            skipped["too_few_scored"] += 1
            continue
        rng = random.Random(derive_seed(seed, "pairs", row["prompt_id"]))
        chosen, rejected = choose(responses, scores, rng, params or {})
        if scores[chosen] == scores[rejected]:
            skipped["tied"] += 1
        elif responses[chosen].strip() == responses[rejected].strip():
            skipped["identical"] += 1
        else:
            kept.append({**row, "chosen_index": chosen, "rejected_index": rejected})
    return kept, {f"prompts_skipped_{k}": v for k, v in skipped.items()}
