"""Prompts: one loader for hub datasets and local JSONL/parquet files.

Rows need a non-empty ``prompt`` (AlpacaEval's ``instruction`` is taken as one); ``prompt_id`` is kept when present, else it
is the sha256 of the prompt (UltraFeedback's convention). Iteration ``n`` gets
the n-th disjoint slice of ``prompts_per_iteration`` rows, or, when the split
name holds ``{iteration}`` (the Snorkel dataset's ``train_iteration_{n}``),
that split, taken whole up to ``prompts_per_iteration`` rows.
"""
from __future__ import annotations

import json
from pathlib import Path

from nbutils.sources import hub
from nbutils.store.files import repo_path
from nbutils.sources.kinds import looks_local
from nbutils.store.ids import prompt_id


class PromptError(ValueError):
    """A prompt source that cannot be used as it is."""


def read_text(path) -> str:
    """A prompt file's text: UTF-8 and not empty, or an error naming the line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PromptError(f"{path} line {line}: not UTF-8 (byte {e.start}); save the file as UTF-8") from None
    if not text.strip():
        raise PromptError(f"{path}: the file is empty; it should hold one prompt per line (JSONL)")
    return text


def check_jsonl(path) -> None:
    """Fail on the first bad line, naming it (1-based)."""
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptError(f"{path} line {n}: not valid JSON ({e.msg})") from None
        _check_row(row, f"{path} line {n}")


def _check_row(row, where: str) -> None:
    if isinstance(row, dict) and "prompt" not in row and "instruction" in row:  # AlpacaEval's name
        row = {"prompt": row["instruction"]}
    if not isinstance(row, dict) or "prompt" not in row:
        raise PromptError(f"{where}: a row must be an object with a 'prompt' (or an 'instruction')")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise PromptError(f"{where}: empty prompt")


def load_prompt_source(source: str, split: str):
    """All rows of a hub dataset split or a local file, as a ``datasets.Dataset``
    with ``prompt_id`` and ``prompt``; bad rows raise PromptError naming the row."""
    import datasets

    if looks_local(source):
        path = repo_path(source)
        if not path.is_file():
            raise PromptError(f"prompt file not found: {path}")
        if path.suffix == ".jsonl":
            check_jsonl(path)
        elif path.suffix == ".json":
            read_text(path)
        kind = "parquet" if path.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    elif source == hub.ALPACA_EVAL:  # a repo with a loading script: datasets 5 refuses it
        if split != "eval":
            raise PromptError(f"{source} has one split, 'eval' (got {split!r})")
        ds = datasets.Dataset.from_pandas(hub.alpaca_eval("eval")[["instruction"]], preserve_index=False)
    else:
        ds = datasets.load_dataset(source, split=split)  # a gated dataset reads HF_TOKEN
    if "prompt" not in ds.column_names and "instruction" in ds.column_names:
        ds = ds.rename_column("instruction", "prompt")
    if "prompt" not in ds.column_names:
        raise PromptError(f"{source}: no 'prompt' column (columns: {ds.column_names})")
    for i, p in enumerate(ds["prompt"]):
        _check_row({"prompt": p}, f"{source} row {i}")
    if "prompt_id" not in ds.column_names:
        ds = ds.add_column("prompt_id", [prompt_id(p) for p in ds["prompt"]])
    return ds.select_columns(["prompt_id", "prompt"])


def iteration_prompts(source: str, split: str, iteration: int, per_iteration: int,
                      num_iterations: int):
    """The prompts of ``iteration`` (1-based), duplicates dropped."""
    if "{iteration}" in split:
        ds = load_prompt_source(source, split.format(iteration=iteration))
        ds = ds.select(range(min(per_iteration, len(ds))))
    else:
        ds = load_prompt_source(source, split)
        needed = per_iteration * num_iterations
        if len(ds) < needed:
            raise PromptError(f"{source}: {len(ds)} prompts, but {num_iterations} iterations of "
                              f"{per_iteration} disjoint prompts need {needed}")
        ds = ds.select(range((iteration - 1) * per_iteration, iteration * per_iteration))
    seen: set[str] = set()
    keep = [i for i, pid in enumerate(ds["prompt_id"]) if not (pid in seen or seen.add(pid))]
    if len(keep) < len(ds):
        print(f"dropped {len(ds) - len(keep)} duplicate prompt_id rows")
        ds = ds.select(keep)
    return ds
