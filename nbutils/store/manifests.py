"""A stage's manifest: what it committed, file by file, and what it was made from.

``<notebook>.manifest.json`` beside a stage's outputs records its params hash, the fingerprints
of its inputs (``nbutils.run.lineage``) and every output file with its size and SHA-256. The
manifest is written last (atomically) and removed when the stage starts again, so outputs
without a manifest are never trusted; an output missing or of another size than recorded
(truncated, half-copied, deleted) is named by :func:`problem` and the stage is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_of(path: Path) -> list[Path]:
    """``path`` itself, or every file under the folder ``path`` (sorted)."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def record(outputs: dict[str, Path], base: Path) -> dict:
    """``{name: {"path": relative path, "files": {relative file: [size, sha256]}}}``, paths relative
    to ``base`` (the manifest's folder), so a run folder can be moved or copied whole."""
    entries = {}
    for name, path in outputs.items():
        path = Path(path)
        entries[name] = {"path": os.path.relpath(path, base),
                         "files": {os.path.relpath(f, base): [f.stat().st_size, file_sha256(f)]
                                   for f in files_of(path)}}
    return entries


def digest(entry: dict) -> str:
    """One output's fingerprint for the stages that read it: a hash of its files' hashes
    (the same content gives the same digest, wherever and whenever it was made)."""
    return hashlib.sha256(json.dumps(sorted(entry["files"].items())).encode()).hexdigest()[:16]


def problem(outputs: dict, base: Path, shown_from: Path | None = None) -> str | None:
    """What is wrong with a manifest's recorded outputs on disk now, or None (cheap: sizes only).
    Files are named relative to ``shown_from`` (default: ``base``, the manifest's folder)."""
    for entry in outputs.values():
        if not entry["files"]:
            return f"{entry['path']} was committed empty"
        for rel, (size, _) in entry["files"].items():
            path = base / rel
            name = os.path.relpath(path, shown_from or base)
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} is {path.stat().st_size} bytes, {size} when committed (truncated or replaced)"
    return None


def read(path: Path) -> dict | None:
    """The manifest at ``path``, None if there is none; ValueError naming the file if it is not one."""
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
        if not (isinstance(m, dict) and isinstance(m["params_hash"], str) and isinstance(m["inputs"], dict)
                and all(isinstance(e["files"], dict) for e in m["outputs"].values())):
            raise TypeError("not a manifest of this version")
        return m
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None


def committed(path: Path, output: str) -> dict | None:
    """The record of ``output`` in the manifest at ``path`` if it is committed and intact on disk."""
    try:
        m = read(path)
    except ValueError:
        return None
    entry = (m or {}).get("outputs", {}).get(output)
    return entry if entry and problem({output: entry}, path.parent) is None else None
