"""Resumable work in shards: each shard is one parquet file, written atomically.

A killed run leaves whole shards only; rerunning skips them. A fingerprint of
what the work depends on is kept beside the shards, and shards made under
another fingerprint are discarded, never mixed in. Over several workers
(``nbutils.exec.processes``), the parent makes the folder fresh and lists the pending
shards (:func:`pending_shards`), each worker writes the shards dealt to it
(:func:`write_shards`), and the parent reads them all (:func:`read_shards`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from nbutils.store.files import atomic_path, fresh_for, read_json


def write_parquet(df: pd.DataFrame, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)


def shard_path(shard_dir: str | Path, i: int) -> Path:
    return Path(shard_dir) / f"shard-{i:05d}.parquet"


def shard_paths(n_items: int, shard_size: int, shard_dir: str | Path) -> list[Path]:
    """The file of each shard of ``n_items`` in chunks of ``shard_size``, in order."""
    return [shard_path(shard_dir, i) for i in range(-(-n_items // shard_size))]


def done_shards(shard_dir: str | Path) -> int:
    """How many shards ``shard_dir`` holds (progress of workers in other processes)."""
    return len(list(Path(shard_dir).glob("shard-*.parquet")))


def pending_shards(n_items: int, shard_size: int, shard_dir: str | Path, fingerprint: dict) -> list[int]:
    """Make ``shard_dir`` hold work of ``fingerprint`` only (once, before any worker starts, so none
    races on it), and list the shards still to do; says how many are resumed."""
    fresh_for(Path(shard_dir), fingerprint, "inputs or params")
    paths = shard_paths(n_items, shard_size, shard_dir)
    pending = [i for i, p in enumerate(paths) if not p.exists()]
    if len(pending) < len(paths):
        print(f"resuming: {len(paths) - len(pending)} of {len(paths)} shards already done")
    return pending


def write_shards(chunks: dict[int, Sequence], shard_dir: str | Path, fingerprint: dict,
                 work: Callable[[Sequence, int], pd.DataFrame]) -> int:
    """A worker's part: ``work(chunk, i)`` for each shard ``i`` of ``chunks`` not written yet; returns
    how many it wrote. The folder must already be fresh for ``fingerprint`` (:func:`pending_shards`):
    a worker never discards shards, which other workers write at the same time."""
    stamp = Path(shard_dir) / "_fingerprint.json"
    if read_json(stamp) != json.loads(json.dumps(fingerprint, default=str)):  # as JSON keeps it
        raise RuntimeError(f"{stamp} is not this work's fingerprint: the parent did not prepare "
                           f"{shard_dir}, or its params or inputs changed meanwhile; rerun the stage")
    written = 0
    for i, chunk in chunks.items():
        path = shard_path(shard_dir, i)
        if not path.exists():
            write_parquet(work(chunk, i), path)
            written += 1
            pause_point(written)
    return written


def pause_point(written: int) -> None:
    """Tests only: with ``NBUTILS_TEST_PAUSE=<n>:<folder>``, after this process's ``n``-th shard,
    say so (``<folder>/paused-<pid>``) and wait for ``<folder>/resume``."""
    spec = os.environ.get("NBUTILS_TEST_PAUSE")
    if not spec or int(spec.split(":", 1)[0]) != written:
        return
    folder = Path(spec.split(":", 1)[1])
    (folder / f"paused-{os.getpid()}").touch()
    while not (folder / "resume").exists():
        time.sleep(0.02)


def read_shards(n_items: int, shard_size: int, shard_dir: str | Path) -> pd.DataFrame:
    """All shards' rows in shard order; an error names the shards that are missing."""
    paths = shard_paths(n_items, shard_size, shard_dir)
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{shard_dir}: {len(missing)} of {len(paths)} shards missing ({', '.join(missing[:5])}"
                                f"{', ...' if len(missing) > 5 else ''}); rerun the stage to make them")
    frames = [pd.read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
