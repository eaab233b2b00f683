"""Where the tiny models are built once and kept: ``.cache/tiny/<name>-<hash of its spec>/``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from nbutils.store import files
from nbutils.store.files import CACHE_DIR, atomic_path  # noqa: F401  (CACHE_DIR: the tiny models' home)


def spec_key(spec) -> str:
    """A short hash of a dataclass spec: the name of its cache entry."""
    return hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


def cached_build(target: Path, build) -> Path:
    """:func:`nbutils.store.files.cached_build` with the tiny models' marker, ``tiny_spec.json``."""
    return files.cached_build(target, build, "tiny_spec.json")
