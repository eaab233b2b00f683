"""Which ranker a stage loads, and how its scores name their judge. Only ``self`` depends on the
stage: in stage 02 the model the iteration samples from judges (Self-Rewarding's M_t rating its own
answers); in stage 04, ``evaluate`` and ``calibrate-judge`` the run's base model, so evaluation has
one fixed judge across iterations. Its label says which model (``self (<model>)``), since every
score names its judge.
"""
from __future__ import annotations

from nbutils.rerank.rankers import load_ranker
from nbutils.sources.kinds import SELF


def judge_model(stage) -> tuple[str, str]:
    """(model folder, name) of the model that judges for ``stage``: stage 02's iteration n is judged by
    model n-1, the policy it samples from; every other stage by the run's base model (one fixed judge)."""
    from nbutils.generate.policies import base_model_path, policy_for_iteration
    if stage.notebook == "02_rerank":
        n = stage["iteration"]
        return policy_for_iteration(stage), stage["base_model"] if n == 1 else f"iteration {n - 1}'s policy"
    return base_model_path(stage["base_model"]), stage["base_model"]


def label(stage, name: str) -> str:
    """How rows name the judge ``name``: ``self (<model>)`` for the self-judge, else the name itself."""
    return f"{SELF} ({judge_model(stage)[1]})" if name == SELF else name


def stage_ranker(stage, name: str | None = None):
    """The ranker ``name`` (default: the stage's ``ranker``) as ``stage`` loads it: only ``self``
    depends on the stage (which model judges), so only then is a model resolved."""
    name = name or stage["ranker"]
    if name != SELF:
        return load_ranker(name, stage.device)
    path, model = judge_model(stage)
    return load_ranker(name, stage.device, policy=path, label=f"{SELF} ({model})")
