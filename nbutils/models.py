"""Which policy an iteration starts from, and where it lives."""
from __future__ import annotations

from pathlib import Path

from .files import repo_path
from .param_rules import TINY_MODELS, looks_local


def base_model_path(name: str) -> str:
    """A local dir as an absolute path, a hub id as its local snapshot (downloaded once),
    a tiny name built on demand."""
    if name in TINY_MODELS:
        from .tiny_policy import tiny_policy_path
        return str(tiny_policy_path())
    if looks_local(name):
        return str(repo_path(name))
    from .hub import model_snapshot
    return str(model_snapshot(name))


def policy_dir(run_dir: Path, iteration: int) -> Path:
    """Where iteration ``iteration``'s DPO stage saves its merged policy."""
    return run_dir / f"iter_{iteration}" / "policy"


def policy_for_iteration(stage) -> str:
    """Model 0 is ``base_model``; iteration n samples from model n-1."""
    n = stage["iteration"]
    if n == 1:
        return base_model_path(stage["base_model"])
    path = policy_dir(stage.run_dir, n - 1)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"iteration {n} samples from iteration {n - 1}'s policy, which is not at {path}. "
            f"Stage 03_dpo_qlora of iteration {n - 1} saves it: "
            f"python -m nbutils run -f params/<preset>.yaml --iterations {n - 1}")
    return str(path)
