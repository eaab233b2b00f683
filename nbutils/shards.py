"""Resumable work in shards: each shard is one parquet file, written atomically.

A killed run leaves whole shards only; rerunning skips them. A fingerprint of
what the work depends on is kept beside the shards, and shards made under
another fingerprint are discarded, never mixed in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from nbutils.files import atomic_path, fresh_for


def write_parquet(df: pd.DataFrame, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)


def run_sharded(items: Sequence, shard_size: int, shard_dir: str | Path, fingerprint: dict,
                work: Callable[[Sequence, int], pd.DataFrame], desc: str | None) -> tuple[pd.DataFrame, int]:
    """Apply ``work(chunk, shard_index)`` to ``items`` in chunks of ``shard_size``,
    keeping each result in ``shard_dir``; return (all rows, shards resumed). A progress bar
    named ``desc`` (none when ``desc`` is None: a parent process shows it)."""
    shard_dir = Path(shard_dir)
    fresh_for(shard_dir, fingerprint, "inputs or params")
    starts = range(0, len(items), shard_size)
    paths = [shard_dir / f"shard-{i:05d}.parquet" for i in range(len(starts))]
    resumed = sum(p.exists() for p in paths)
    if resumed:
        print(f"resuming: {resumed} of {len(paths)} shards already done")
    with tqdm(total=len(items), desc=desc, unit="prompt", disable=desc is None) as bar:
        for i, (start, path) in enumerate(zip(starts, paths)):
            chunk = items[start: start + shard_size]
            if not path.exists():
                write_parquet(work(chunk, i), path)
            bar.update(len(chunk))
    frames = [pd.read_parquet(p) for p in paths]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), resumed
