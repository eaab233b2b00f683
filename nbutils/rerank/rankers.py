"""Reward models that score each prompt's responses (higher is better).

The ``ranker`` param picks one:
* a PairRM-format ranker (``llm-blender/PairRM``, a local dir, or ``tiny-pairrm``):
  llm-blender's ``rank(return_scores=True)``, K(K-1) comparisons per prompt;
* any transformers sequence-classification reward model (hub id or dir): one
  score per (prompt, response), through its chat template when it has one;
* ``module:function``: a Python function ``f(prompt, response) -> float``;
* ``self``: the policy rates its own answers (:mod:`nbutils.rerank.self_judge`).
"""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np

from nbutils.chat import conversation
from nbutils.store.files import repo_path
from nbutils.rerank.pointwise import PointwiseRanker, RankerError, truncated_rows
from nbutils.sources.kinds import SELF, TINY_RANKERS, is_function_spec, looks_local


def local_dir(name: str) -> Path:
    """A ranker's files: the tiny one built on demand, a local dir, or a hub snapshot."""
    if name in TINY_RANKERS:
        from nbutils.tiny.ranker import tiny_ranker_path
        return tiny_ranker_path()
    if looks_local(name):
        path = repo_path(name)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"ranker: no config.json in {path} (a ranker directory is expected)")
        return path
    from nbutils.sources.hub import model_snapshot
    return model_snapshot(name)


def pairrm_format(path: Path) -> bool:
    """Whether the ranker in ``path`` is PairRM-format (its config names a ``ranker_type``)."""
    return "ranker_type" in json.loads((path / "config.json").read_text())


def is_pairrm(name: str) -> bool:
    """Whether the ranker ``name`` compares two answers at once (PairRM) rather than scoring each alone."""
    return name != SELF and not is_function_spec(name) and pairrm_format(local_dir(name))


class PairRMRanker:
    """llm-blender's PairRanker (made right under transformers 5 by nbutils.compat.llm_blender).

    A batch costs rows x its longest comparison (source + two candidates) per comparison, so
    with ``bucketing`` prompts are sorted by the tokens of their longest comparison before they
    are cut into batches (less padding); the collator truncates each example as if alone in its
    batch, so the scores do not change."""

    def __init__(self, path: Path, device: str):
        from nbutils.compat.llm_blender import load_blender
        self.blender = load_blender(str(path), device=device)
        self.name = str(path)

    def lengths(self, prompts: list[str], candidates: list[list[str]]) -> tuple[list[int], list[list[int]]]:
        """Tokens PairRM reads of each prompt and each candidate (truncated as it truncates them)."""
        from nbutils.compat.llm_blender import input_lengths
        cfg = self.blender.ranker_config
        return input_lengths(self.blender.ranker_collator, prompts, candidates, cfg.source_maxlength,
                             cfg.candidate_maxlength)

    def batches(self, prompts: list[str], candidates: list[list[str]], batch_size: int,
                bucketing: bool = True) -> list[list[int]]:
        """Prompt indices per ``rank()`` call: one candidate count per call (rank() needs it), and
        with ``bucketing`` longest comparison first (a batch that does not fit fails at once)."""
        groups = [[i for i, c in enumerate(candidates) if len(c) == k] for k in sorted({len(c) for c in candidates})]
        if bucketing:
            sources, cands = self.lengths(prompts, candidates)
            longest = [s + sum(sorted(c)[-2:]) for s, c in zip(sources, cands)]
            groups = [sorted(g, key=lambda i: -longest[i]) for g in groups]
        return [g[start: start + batch_size] for g in groups for start in range(0, len(g), batch_size)]

    def score(self, prompts: list[str], candidates: list[list[str]], batch_size: int,
              desc: str | None = None, bucketing: bool = True) -> list[np.ndarray]:
        """Each prompt's candidates' scores, in the prompts' order; with ``desc``, a progress bar."""
        from tqdm.auto import tqdm
        out: list[np.ndarray | None] = [None] * len(prompts)
        with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=desc is None) as bar:
            for chunk in self.batches(prompts, candidates, batch_size, bucketing and len(prompts) > batch_size):
                k = len(candidates[chunk[0]])
                scores = [np.zeros(1, dtype=np.float32)] * len(chunk) if k == 1 else self.blender.rank(
                    [prompts[i] for i in chunk], [candidates[i] for i in chunk],
                    return_scores=True, batch_size=len(chunk), disable_tqdm=True)
                for i, row in zip(chunk, scores):
                    out[i] = np.asarray(row)
                bar.update(len(chunk))
        return out

    def tokens(self, prompts: list[str], candidates: list[list[str]], batch_size: int,
               bucketing: bool = True) -> dict:
        """Tokens the backbone processes in :meth:`score`'s batches: ``processed`` (padded to each
        batch's longest, per comparison) and ``unpadded`` (what padding-free batches would cost)."""
        sources, cands = self.lengths(prompts, candidates)
        processed = unpadded = 0
        for chunk in self.batches(prompts, candidates, batch_size, bucketing and len(prompts) > batch_size):
            s, c = np.array([sources[i] for i in chunk]), np.array([cands[i] for i in chunk])
            pair = s[:, None, None] + c[:, :, None] + c[:, None, :]  # rows x K x K comparison lengths
            off = ~np.eye(c.shape[1], dtype=bool)
            processed += len(chunk) * int(pair.max(axis=0)[off].sum())
            unpadded += int(pair[:, off].sum())
        return {"processed": processed, "unpadded": unpadded}

    def truncation(self, prompts: list[str], candidates: list[list[str]]) -> list[dict]:
        """Per prompt: its prompt and responses longer than PairRM reads (source / candidate max length)."""
        tok, cfg = self.blender.ranker_tokenizer, self.blender.ranker_config
        prefix = {"source": "<|source|>", "candidate": "<|candidate|>"}

        def count(texts, kind):
            return [len(ids) for ids in tok([prefix[kind] + t for t in texts])["input_ids"]] if texts else []
        return truncated_rows(count, prompts, candidates, cfg.source_maxlength, cfg.candidate_maxlength)


class RewardModelRanker(PointwiseRanker):
    """A transformers ``AutoModelForSequenceClassification`` with one output."""

    def __init__(self, path: Path, device: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(device).eval()
        if self.model.config.num_labels != 1:
            raise RankerError(f"reward model {path} has {self.model.config.num_labels} outputs; one score is expected")
        self.device, self.name = device, str(path)

    def score_pairs(self, pairs, start):
        import torch
        if self.tokenizer.chat_template:
            texts = [self.tokenizer.apply_chat_template(conversation(p, r), tokenize=False) for p, r in pairs]
            enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        else:
            enc = self.tokenizer([p for p, _ in pairs], [r for _, r in pairs], padding=True,
                                 truncation=True, return_tensors="pt")
        with torch.no_grad():
            return self.model(**enc.to(self.device)).logits[:, 0].float().cpu().tolist()


class FunctionRanker(PointwiseRanker):
    """``module:function`` scoring (prompt, response) -> float."""

    def __init__(self, spec: str):
        module, _, attr = spec.partition(":")
        try:
            self.fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise RankerError(f"ranker {spec!r}: cannot import it ({type(e).__name__}: {e})") from e
        self.name = spec

    def score_pairs(self, pairs, start):
        values = []
        for j, (prompt, response) in enumerate(pairs):
            try:
                value = float(self.fn(prompt, response))
            except Exception as e:
                raise RankerError(f"reward function {self.name} raised on response {start + j} "
                                  f"(prompt {prompt[:60]!r}): {type(e).__name__}: {e}") from e
            if not math.isfinite(value):
                raise RankerError(f"reward function {self.name} returned {value} for response {start + j}")
            values.append(value)
        return values


_LOADED: dict = {}  # one slot: rerunning a notebook cell reuses the loaded ranker


def load_ranker(name: str, device: str | None = None, policy: str | None = None, label: str = SELF):
    """The ranker named by the ``ranker`` param (reused if it is the one loaded last). ``self`` needs
    ``policy``, the folder of the model that judges (``judges.stage_ranker`` picks it for a stage),
    and is named ``label``."""
    if is_function_spec(name):
        return FunctionRanker(name)
    if name == SELF and not policy:
        raise RankerError("ranker/judge self: no model to judge with; pass policy=<model folder> to load_ranker "
                          "(or load it with nbutils.rerank.judges.stage_ranker(stage), which picks the model)")
    if device is None:
        from nbutils.exec.devices import resolve_device
        device = resolve_device("auto")
    if name == SELF:
        if (name, device, policy) not in _LOADED:
            from nbutils.rerank.self_judge import SelfJudge
            _LOADED.clear()
            _LOADED[name, device, policy] = SelfJudge(policy, device)
        _LOADED[name, device, policy].name = label
        return _LOADED[name, device, policy]
    if (name, device) not in _LOADED:
        _LOADED.clear()
        path = local_dir(name)
        _LOADED[name, device] = (PairRMRanker if pairrm_format(path) else RewardModelRanker)(path, device)
    return _LOADED[name, device]
