"""Stage 03's input: an iteration's preference pairs, checked before TRL sees them.

Iteration n trains on its own ``train_iteration_<n>`` and evaluates on ``test_iteration_<n>``
(``train_on: this_iteration``, the blog's), or on those of iterations 1..n together
(``all_iterations``: the folders are ``RunFolder.training_pairs``). A prompt may have several
pairs (``pair_selection: all_pairs``); stage 02 puts all of them in one split.
Pairs whose chosen and rejected texts are the same, and pairs whose prompt
alone fills ``max_length`` (no room for an answer), are skipped and counted;
pairs longer than ``max_length`` are kept (TRL truncates the answers) and
counted. An empty or missing dataset is a clear error that names the stage to run.
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


def require_pairs(folders: dict[int, Path]) -> None:
    """Fail fast (before a model loads) when stage 02 has not written the pairs of an iteration trained
    on. ``folders``: ``{iteration: preference_data folder}`` (``RunFolder.training_pairs``)."""
    last = max(folders)
    for k, folder in folders.items():
        if not (Path(folder) / "data").is_dir():
            why = (f"; train_on: all_iterations trains iteration {last} on the pairs of iterations 1..{last}"
                   if len(folders) > 1 else "")
            raise FileNotFoundError(
                f"no preference pairs at {folder}: run stage 02_rerank for iteration {k} first "
                f"(python -m nbutils run -f recipes/<recipe>.yaml --stages 02_rerank --iterations {k}){why}")


def splits(folders: dict[int, Path], kind: str):
    """The ``train`` or ``test`` splits of ``folders``' iterations, in iteration order, as one dataset.
    Empty splits are left out: their parquet columns have no types to agree with the others'."""
    from datasets import concatenate_datasets
    parts = [load_split(folder, f"{kind}_iteration_{k}") for k, folder in folders.items()]
    rows = [p for p in parts if len(p)] or parts[:1]
    return rows[0] if len(rows) == 1 else concatenate_datasets(rows)


def load_pairs(folders: dict[int, Path], tokenizer, max_length: int):
    """(train, eval or None, stats) from stage 02's ``train_iteration_<k>`` / ``test_iteration_<k>`` of each
    iteration k of ``folders`` (``{iteration: preference_data folder}``: ``RunFolder.training_pairs``)."""
    require_pairs(folders)
    names = ", ".join(f"train_iteration_{k}" for k in folders)
    train, stats = check_pairs(splits(folders, "train"), tokenizer, max_length, "train")
    if len(train) == 0:
        raise ValueError(f"no pairs to train on in {', '.join(map(str, folders.values()))} ({names}): "
                         f"{stats}. Stage 02's metrics.json says why prompts were skipped.")
    evaluation, eval_stats = check_pairs(splits(folders, "test"), tokenizer, max_length, "eval")
    return train, (evaluation if len(evaluation) else None), {**stats, **eval_stats,
                                                              "pairs_of_iterations": list(folders)}


def check_prompts(pairs, k: int = 4) -> list[str]:
    """The first ``k`` distinct prompts of the pairs (a prompt may have several): where the next policy
    is checked against the trained model."""
    prompts: list[str] = []
    for row in pairs:
        if row["prompt"][0]["content"] not in prompts:
            prompts.append(row["prompt"][0]["content"])
        if len(prompts) == k:
            break
    return prompts
