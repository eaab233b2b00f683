"""What a stage is made from: the fingerprints of its inputs, recorded in its manifest.

A stage is done only if its params **and** these fingerprints are what they were when it
committed; change anything upstream and everything downstream reruns, and says why.

* an earlier stage's output (``iter_1/generations.parquet``, ``iter_1/policy``, ...): the
  digest of its files' hashes in that stage's manifest (``missing`` if not committed); stage 03
  with ``train_on: all_iterations`` reads the pairs of every iteration up to its own;
* a source named by a param (prompts, models, ranker, eval set): a local file's SHA-256, a local
  folder's file list (sizes, mtimes), a ``module:function``'s source file, a hub repo's cached
  revision; a built-in tiny name stands for itself.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from nbutils.store import manifests
from nbutils.store.files import repo_path
from nbutils.sources.kinds import HUB_ID, kind

# Params that name something read from outside the run, and the hub repo type of each.
SOURCES = {"prompts_dataset": "dataset", "base_model": "model", "ranker": "model", "eval_dataset": "dataset",
           "judge": "model"}


def source(name: str, repo_type: str) -> str:
    """The fingerprint of what ``name`` names now."""
    k = kind(name)
    if k == "function":
        spec = importlib.util.find_spec(name.split(":")[0])
        origin = Path(spec.origin) if spec and spec.origin else None
        return f"function:{manifests.file_sha256(origin)[:16]}" if origin and origin.is_file() else f"function:{name}"
    if k == "local":
        path = repo_path(name)
        if path.is_file():
            return f"file:{manifests.file_sha256(path)[:16]}"
        if path.is_dir():
            listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in manifests.files_of(path)]
            return f"folder:{hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}"
        return "missing"
    if k == "packaged":
        from nbutils.packaged.smollm2 import gguf_file
        return f"packaged:{gguf_file()[1][:16]}"
    if k == "hub" and HUB_ID.match(name):
        from nbutils.sources.hub import cached_revision
        return f"hub:{cached_revision(name, repo_type) or 'not fetched'}"
    return k


def output(manifest: Path, name: str) -> str:
    """The digest of output ``name`` committed in ``manifest``, or ``missing``."""
    entry = manifests.committed(manifest, name)
    return manifests.digest(entry) if entry else "missing"


def upstream(stage) -> dict[str, tuple[Path, str]]:
    """The earlier stages' outputs ``stage`` reads: ``{label: (manifest, output name)}``."""
    run, n = stage.run, stage.params.get("iteration")
    policy = lambda k: {f"iter_{k}/policy": (run.manifest("03_dpo_qlora", k), "policy")} if k else {}  # noqa: E731
    if stage.notebook == "01_generate":
        return policy(n - 1)
    if stage.notebook == "02_rerank":
        return {f"iter_{n}/generations.parquet": (run.manifest("01_generate", n), "generations")}
    if stage.notebook == "03_dpo_qlora":  # train_on: all_iterations reads iterations 1..n's pairs
        pairs = run.training_pairs(n, stage.params.get("train_on", "this_iteration"))
        return {**{f"iter_{k}/preference_data": (run.manifest("02_rerank", k), "preference_data") for k in pairs},
                **policy(n - 1)}
    if stage.notebook == "04_evaluate":  # the iterations it evaluates: those committed
        return {k: v for n in range(1, stage.params["num_iterations"] + 1) if run.has_policy(n)
                for k, v in policy(n).items()}
    return {}


def inputs(stage) -> dict[str, str]:
    """``{input: fingerprint}`` for ``stage`` now."""
    found = {key: source(stage.params[key], repo_type) for key, repo_type in SOURCES.items()
             if stage.params.get(key)}
    return {**found, **{label: output(*where) for label, where in upstream(stage).items()}}


def changed(recorded: dict, now: dict) -> list[str]:
    """The inputs whose fingerprint differs (or that appeared or went)."""
    return sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
