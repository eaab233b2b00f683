"""Stage 03's input: an iteration's preference pairs, checked before TRL sees them.

Pairs whose chosen and rejected texts are the same, and pairs whose prompt
alone fills ``max_length`` (no room for an answer), are skipped and counted;
pairs longer than ``max_length`` are kept (TRL truncates the answers) and
counted. An empty or missing dataset is a clear error.
"""
from __future__ import annotations

from pathlib import Path

from nbutils.rerank.dataset import for_dpo, load_split


def prompt_length(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                             return_dict=False))


def full_length(tokenizer, prompt: list[dict], answer: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False))


def check_pairs(dataset, tokenizer, max_length: int, name: str):
    """(kept DPO rows, counts) for one split, in TRL's conversational form."""
    rows = for_dpo(dataset)
    keep, counts = [], {"identical": 0, "prompt_too_long": 0, "truncated": 0}
    for i, row in enumerate(rows):
        if row["chosen"][-1]["content"].strip() == row["rejected"][-1]["content"].strip():
            counts["identical"] += 1
        elif prompt_length(tokenizer, row["prompt"]) >= max_length:
            counts["prompt_too_long"] += 1
        else:
            keep.append(i)
            longest = max(full_length(tokenizer, row["prompt"], row[k]) for k in ("chosen", "rejected"))
            counts["truncated"] += longest > max_length
    stats = {f"{name}_pairs_skipped_identical": counts["identical"],
             f"{name}_pairs_skipped_prompt_too_long": counts["prompt_too_long"],
             f"{name}_pairs_truncated": counts["truncated"], f"{name}_pairs": len(keep)}
    return rows.select(keep), stats


def require_pairs(dataset_dir: Path, iteration: int) -> None:
    """Fail fast (before a model loads) when stage 02 has not written the pairs."""
    if not (Path(dataset_dir) / "data").is_dir():
        raise FileNotFoundError(
            f"no preference pairs at {dataset_dir}: run stage 02_rerank for iteration {iteration} first "
            f"(python -m nbutils run -f params/<preset>.yaml --stages 02_rerank --iterations {iteration})")


def load_pairs(dataset_dir: Path, iteration: int, tokenizer, max_length: int):
    """(train, eval or None, stats) from stage 02's ``train_iteration_<n>`` / ``test_iteration_<n>``."""
    require_pairs(dataset_dir, iteration)
    train, stats = check_pairs(load_split(dataset_dir, f"train_iteration_{iteration}"), tokenizer,
                               max_length, "train")
    if len(train) == 0:
        raise ValueError(f"no pairs to train on in {dataset_dir} (train_iteration_{iteration}): "
                         f"{stats}. Stage 02's metrics.json says why prompts were skipped.")
    evaluation, eval_stats = check_pairs(load_split(dataset_dir, f"test_iteration_{iteration}"), tokenizer,
                                         max_length, "eval")
    return train, (evaluation if len(evaluation) else None), {**stats, **eval_stats}


def check_prompts(pairs, k: int = 4) -> list[str]:
    """The first ``k`` pairs' prompts: where the next policy is checked against the trained model."""
    return [row["prompt"][0]["content"] for row in pairs.select(range(min(k, len(pairs))))]
