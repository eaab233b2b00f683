"""Which policy an iteration starts from: model 0 is ``base_model``, iteration n samples from model n-1."""
from __future__ import annotations

from nbutils.store.files import repo_path
from nbutils.sources.kinds import kind


def base_model_path(name: str) -> str:
    """A local dir as an absolute path, a hub id as its local snapshot (downloaded once),
    a tiny name built on demand, a packaged model converted from its wheel on demand."""
    if kind(name) == "tiny":
        from nbutils.tiny.policy import tiny_policy_path
        return str(tiny_policy_path())
    if kind(name) == "packaged":
        from nbutils.packaged.smollm2 import smollm2_path
        return str(smollm2_path())
    if kind(name) == "local":
        return str(repo_path(name))
    from nbutils.sources.hub import model_snapshot
    return str(model_snapshot(name))


def model_of(stage, n: int) -> str:
    """Model ``n`` of the stage's run: the base model for 0, iteration n's merged policy otherwise."""
    if n == 0:
        return base_model_path(stage["base_model"])
    if not stage.run.has_policy(n):
        raise FileNotFoundError(
            f"model {n} is iteration {n}'s DPO policy, which is not at {stage.run.policy(n)}. "
            f"Run iterations 1..{n} first: notebooks 01-03 once per iteration (set `iteration` in their "
            f"parameters cell), or python -m nbutils run -f <this run's presets> --iterations 1..{n}")
    return str(stage.run.policy(n))


def policy_for_iteration(stage) -> str:
    """The model iteration ``n`` samples from and trains: model n-1."""
    return model_of(stage, stage["iteration"] - 1)
