"""Which of a prompt's scored responses become DPO pairs (the ``pair_selection`` param).

A selection gets the responses, their scores (``None`` for an empty response,
never picked), a seeded RNG and the stage's params, and returns a (chosen index,
rejected index) pair, or a list of them (``all_pairs``: several rows for one prompt).
Prompts with fewer than two scored responses, ties, and identical chosen and
rejected texts are skipped and counted (a prompt is skipped when none of its pairs is kept).
"""
from __future__ import annotations

import random
from itertools import permutations
from typing import Callable

import numpy as np

from nbutils.store.ids import derive_seed

Pair = tuple[int, int]
Selection = Callable[[list[str], list, random.Random, dict], "Pair | list[Pair]"]
SELECTIONS: dict[str, Selection] = {}
# The params each selection reads, at base.yaml's value: with another selection a different value would
# do nothing, so ``nbutils.run.rules`` refuses it (tests/test_pairs.py checks base.yaml agrees).
SELECTION_PARAMS = {"length_controlled": {"length_penalty": 0.0}, "shortest_near_best": {"near_best": 0.1},
                    "all_pairs": {"max_pairs_per_prompt": 10}}


def selection(name: str):
    """Register a pair selection under ``name`` (a value of ``pair_selection``)."""
    def register(fn: Selection) -> Selection:
        SELECTIONS[name] = fn
        return fn
    return register


def _scored(scores) -> list[int]:
    return [i for i, s in enumerate(scores) if s is not None]


def _same_text(responses, a: int, b: int) -> bool:
    return responses[a].strip() == responses[b].strip()


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


@selection("mean_minus_2sd")
def mean_minus_2sd(responses, scores, rng, params):
    """Xiao et al. 2025, "Finding the Sweet Spot" (arXiv 2502.16825): chosen = the highest-scored
    response (first of equals), rejected = the scored response whose score is closest to
    mean - 2 SD of the prompt's scores (the population SD over its scored responses; ties: the
    lower score, then the first). The paper finds this rejected better than the minimum as the
    samples per prompt grow. With K <= 5 answers it IS best_worst: every score lies within
    SD x sqrt(K - 1) of the mean (Samuelson's inequality), so mean - 2 SD is at or below the lowest
    score; it differs from K = 6 on, and often only with tens of samples (normal scores: in ~4% of
    prompts at K = 16, ~1/3 at K = 32). All scores equal: the chosen one itself, skipped as tied."""
    valid = _scored(scores)
    s = np.array([scores[i] for i in valid], dtype=float)
    target = s.mean() - 2 * s.std()
    best = max(valid, key=lambda i: scores[i])
    return best, min(valid, key=lambda i: (abs(scores[i] - target), scores[i], i))


@selection("shortest_near_best")
def shortest_near_best(responses, scores, rng, params):
    """Meta-Rewarding's length control (Wu et al. 2024, arXiv 2407.19594): among the responses
    scored within ``near_best`` x (max - min) of the top score (the paper's top quality tier
    [(1 - rho) S_max + rho S_min, S_max], rho = ``near_best``), the SHORTEST
    (characters; equal lengths: the higher score, then the first) is chosen; the lowest-scored
    (first of equals) is rejected. ``near_best`` 0 is best_worst with the shortest of equal best
    scores; larger values trade score for brevity. Where this may differ from the paper: its scores
    are the policy's own LLM-as-a-judge scores on a fixed rubric, ours any ranker's (hence the
    tolerance in units of the prompt's score range, not of the score); our tier never takes in
    the lowest score (``near_best`` >= 1 would otherwise pair the worst answer with itself). The tier
    and the rejected side follow our reading of the paper, not re-checked against its text here; nor
    were how it picks among equal lowest scores and the rho it used."""
    valid = _scored(scores)
    top, low = max(scores[i] for i in valid), min(scores[i] for i in valid)
    worst = min(valid, key=lambda i: scores[i])
    if top == low:
        return valid[0], valid[1]  # all tied: select_pairs skips it
    floor = top - params["near_best"] * (top - low)
    tier = [i for i in valid if scores[i] >= floor and scores[i] > low]
    return min(tier, key=lambda i: (len(responses[i]), -scores[i], i)), worst


@selection("all_pairs")
def all_pairs(responses, scores, rng, params):
    """Every ordered pair the ranker orders (score_chosen > score_rejected, both scored, texts not
    identical once stripped; one row per distinct pair of texts), largest score margin first
    (equal margins: by chosen, then rejected index), at most ``max_pairs_per_prompt`` of them:
    each becomes a row of the dataset. With K answers that is up to K(K-1)/2 pairs (10 for 5).
    SPPO (arXiv 2405.00675) also trains on all K answers, but on soft targets, PairRM's win
    probabilities; TRL's DPOTrainer (1.16) takes no per-pair soft label (its collator passes
    prompt, chosen, rejected and optional reference log-probs only; ``label_smoothing``, read by
    the robust, exo_pair, aot and aot_unpaired losses, is one scalar for every pair, and its
    ``sppo_hard`` loss is SPPO with hard 1/0 targets), so these are plain DPO pairs."""
    valid = _scored(scores)
    ordered = sorted(((a, b) for a, b in permutations(valid, 2) if scores[a] > scores[b]),
                     key=lambda p: (scores[p[1]] - scores[p[0]], p))
    kept, seen = [], set()
    for a, b in ordered:
        texts = (responses[a].strip(), responses[b].strip())
        if not _same_text(responses, a, b) and texts not in seen:
            seen.add(texts)
            kept.append((a, b))
    if kept:
        return kept[:params["max_pairs_per_prompt"]]
    return ordered[:1] or [(valid[0], valid[1])]  # identical texts or all tied: select_pairs skips it


def select_pairs(rows: list[dict], method: str, seed: int, params: dict | None = None) -> tuple[list[dict], dict]:
    """Rows with ``prompt_id``, ``all_generated_responses``, ``all_rm_scores`` ->
    (one row per pair, the prompt's row with ``chosen_index``/``rejected_index`` added, in prompt
    order: a prompt may give several; skip counts, per prompt). ``params``: what the selection reads
    (``SELECTION_PARAMS``)."""
    choose = SELECTIONS[method]
    kept, skipped = [], {"too_few_scored": 0, "tied": 0, "identical": 0}
    for row in rows:
        responses, scores = row["all_generated_responses"], row["all_rm_scores"]
        if len(_scored(scores)) < 2:
            skipped["too_few_scored"] += 1
            continue
        rng = random.Random(derive_seed(seed, "pairs", row["prompt_id"]))
        picked = choose(responses, scores, rng, params or {})
        good, why = [], None
        for chosen, rejected in [picked] if isinstance(picked, tuple) else picked:
            if scores[chosen] == scores[rejected]:
                why = why or "tied"
            elif _same_text(responses, chosen, rejected):
                why = why or "identical"
            else:
                good.append({**row, "chosen_index": chosen, "rejected_index": rejected})
        if good:
            kept += good
        else:
            skipped[why] += 1
    return kept, {f"prompts_skipped_{k}": v for k, v in skipped.items()}
