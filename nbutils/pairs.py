"""Which of a prompt's scored responses become the DPO pair (the ``pair_selection`` param).

A selection gets the responses, their scores (``None`` for an empty response,
never picked) and a seeded RNG, and returns (chosen index, rejected index).
Prompts with fewer than two scored responses, ties, and identical chosen and
rejected texts are skipped and counted.
"""
from __future__ import annotations

import random
from typing import Callable

from .generation import derive_seed

Selection = Callable[[list[str], list, random.Random], tuple[int, int]]
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
def best_worst(responses, scores, rng):
    """The blog's: highest-scored response vs lowest-scored (first of equals)."""
    valid = _scored(scores)
    return max(valid, key=lambda i: scores[i]), min(valid, key=lambda i: scores[i])


@selection("best_random")
def best_random(responses, scores, rng):
    """Highest-scored response vs a random other one."""
    valid = _scored(scores)
    best = max(valid, key=lambda i: scores[i])
    return best, rng.choice([i for i in valid if i != best])


# "length_controlled" is registered by stage 05's length analysis (issue 6).


def select_pairs(rows: list[dict], method: str, seed: int) -> tuple[list[dict], dict]:
    """Rows with ``prompt_id``, ``all_generated_responses``, ``all_rm_scores`` ->
    (rows with ``chosen_index``/``rejected_index`` added, skip counts)."""
    choose = SELECTIONS[method]
    kept, skipped = [], {"too_few_scored": 0, "tied": 0, "identical": 0}
    for row in rows:
        responses, scores = row["all_generated_responses"], row["all_rm_scores"]
        if len(_scored(scores)) < 2:
            skipped["too_few_scored"] += 1
            continue
        chosen, rejected = choose(responses, scores, random.Random(derive_seed(seed, "pairs", row["prompt_id"])))
        if scores[chosen] == scores[rejected]:
            skipped["tied"] += 1
        elif responses[chosen].strip() == responses[rejected].strip():
            skipped["identical"] += 1
        else:
            kept.append({**row, "chosen_index": chosen, "rejected_index": rejected})
    return kept, {f"prompts_skipped_{k}": v for k, v in skipped.items()}
