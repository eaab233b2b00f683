"""Where the tiny models are built once and kept: ``.cache/tiny/<name>-<hash of its spec>/``."""
from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from nbutils.files import CACHE_DIR, atomic_path  # noqa: F401  (CACHE_DIR: the tiny models' home)


def spec_key(spec) -> str:
    """A short hash of a dataclass spec: the name of its cache entry."""
    return hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


def cached_build(target: Path, build) -> Path:
    """``target``, built by ``build(tmp_dir)`` into a temporary folder first if it is missing. One
    process builds it; another that needs it meanwhile (two runs, or two test processes) waits for it
    instead of building it again and replacing it under the first one's readers."""
    if not (target / "tiny_spec.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
            if not (target / "tiny_spec.json").exists():
                with atomic_path(target) as tmp:
                    build(tmp)
    return target
