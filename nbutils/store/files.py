"""Where things live and how they are written: repo-relative paths, atomic writes."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]


def checkout_first(pythonpath: str | None) -> str:
    """``PYTHONPATH`` with this checkout first (each entry once): the processes a stage starts (a
    notebook's kernel, training workers) import this checkout's nbutils, whatever an editable install
    points at."""
    entries = [str(REPO_ROOT), *filter(None, (pythonpath or "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(entries))


CACHE_DIR = Path(os.environ.get("NBUTILS_CACHE", REPO_ROOT / ".cache"))  # built tiny models, downloads


def repo_path(path: str | os.PathLike) -> Path:
    """A params path: absolute as given, relative to the repository root otherwise
    (so a notebook opened in ``notebooks/`` and the CLI agree)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if
    the block succeeds. Works for files and for directories."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(obj, target: str | os.PathLike) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(df, target: str | os.PathLike, index: bool = True) -> Path:
    """Write a DataFrame as CSV atomically."""
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=index)
    return Path(target)


def read_json(path: str | os.PathLike, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def update_json(target: str | os.PathLike, section: str, values: dict) -> dict:
    """Set ``section`` of a JSON file of sections (e.g. a stage in metrics.json)."""
    data = read_json(target, {})
    data[section] = values
    write_json(data, target)
    return data


def fresh_for(folder: Path, fingerprint: dict, what: str) -> None:
    """Make ``folder`` hold work of ``fingerprint`` only: work made under another
    fingerprint (other params or inputs) is discarded, never mixed in."""
    stamp = folder / "_fingerprint.json"
    if folder.exists() and read_json(stamp) != fingerprint:
        if any(folder.iterdir()):  # an empty folder (made by a trainer, say) holds no earlier work
            print(f"{folder.name}: {what} changed, discarding earlier work")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(fingerprint, stamp)


def size_text(n_bytes: float) -> str:
    """``12.3 GiB``, ``4.5 MiB``, ``800 KiB``: a size people read at a glance."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes / 2**10:.0f} KiB"


def cached_build(target: Path, build, marker: str) -> Path:
    """``target``, built by ``build(tmp_dir)`` into a temporary folder first if ``target/marker`` is
    missing. One process builds it; another that needs it meanwhile (two runs, or two test processes)
    waits for it instead of building it again and replacing it under the first one's readers."""
    if not (target / marker).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
            if not (target / marker).exists():
                with atomic_path(target) as tmp:
                    build(tmp)
    return target
