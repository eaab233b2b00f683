"""DPO's loss by hand, on one batch, beside what TRL logs for it.

Notebook 03 shows the mechanism: the policy's and the reference's log-probabilities of each
chosen and rejected answer (plain forward passes here, no TRL), the implicit rewards
``beta · (log π − log π_ref)``, the margin and ``−log σ(margin)``; then TRL's own ``evaluate()``
on the same pairs, and the two must agree. The batch is the first pairs of the trainer's eval set
(its train set when there is none), tokenized and collated by TRL itself, so both sides read the
same token ids.
"""
from __future__ import annotations

import math

import pandas as pd

# TRL's metric -> the by-hand column whose mean it is
LOGGED = {"logps/chosen": "policy_chosen", "logps/rejected": "policy_rejected", "rewards/chosen": "reward_chosen",
          "rewards/rejected": "reward_rejected", "rewards/margins": "margin", "loss": "loss"}
NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}  # what TRL keeps from the model


def tolerance(dtype) -> float:
    """How far the two may differ (relative to values above 1, :func:`compare`): float32 sums agree to ~1e-5
    (TRL's fused LM head adds its log-probs in another order); bf16/fp16 logits round at ~1e-2 per token."""
    import torch
    return 1e-3 if dtype in (None, torch.float32, "float32") else 5e-2


def unsupported(params: dict, trainer) -> str | None:
    """Why the by-hand check cannot run here, or None."""
    if trainer is None:
        return "training ran in accelerate's processes (distributed): the check needs the trainer in this one"
    from nbutils.dpo.losses import is_simpo
    if is_simpo(params):
        return "loss_type simpo has no reference model: this check is DPO's"
    if params.get("ld_alpha") is not None:
        return "ld_alpha reweights the log-probs past the shorter answer: this check sums them plainly"
    return None


def batch_pairs(trainer, size: int):
    """The first ``size`` pairs of the trainer's eval set (else its train set), as TRL prepared them."""
    pairs = trainer.eval_dataset if trainer.eval_dataset is not None else trainer.train_dataset
    return pairs.select(range(min(size, len(pairs))))


def sequence_logps(model, batch: dict):
    """Sum over each completion's tokens of log p(token | everything before it): the batch holds the
    chosen rows, then the rejected ones (TRL's layout). Returns (chosen, rejected, completion tokens)."""
    import torch
    inputs = {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()  # position t predicts token t + 1
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:]
    sums = (token_logps * mask).sum(dim=1)
    return *sums.chunk(2), mask.sum(dim=1)


COLUMNS = ["policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected", "chosen_tokens",
           "rejected_tokens"]


def log_probs(trainer, pairs) -> pd.DataFrame:
    """Per pair: the policy's and the reference's log-probs of chosen and rejected, and their tokens.
    The reference is TRL's: its ``ref_model``, or the policy with its adapters off. ``pairs`` None (the
    check does not apply): no rows."""
    import torch
    from contextlib import nullcontext
    if pairs is None:
        return pd.DataFrame(columns=COLUMNS, dtype=float)
    batch = {k: v.to(trainer.accelerator.device) if hasattr(v, "to") else v
             for k, v in next(iter(trainer.get_eval_dataloader(pairs))).items()}
    model = trainer.model.eval()
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        if trainer.ref_model is not None:  # a model of its own (finetuning: full)
            reference_model, adapters_off = trainer.ref_model, nullcontext()
        else:  # the policy with its adapters off, as TRL takes it
            reference_model, adapters_off = model, model.disable_adapter()
        with adapters_off:
            reference = sequence_logps(reference_model, batch)
    tokens = policy[2].chunk(2)
    values = [*policy[:2], *reference[:2], *tokens]
    return pd.DataFrame({c: v.cpu().numpy() for c, v in zip(COLUMNS, values)})


def trl_logged(trainer, pairs) -> dict:
    """What TRL logs for ``pairs`` (one eval batch): its ``evaluate()`` on them, keys as in ``LOGGED``.
    They stand in for the eval set meanwhile: prepared already, so TRL does not tokenize them again."""
    kept, trainer.eval_dataset = trainer.eval_dataset, pairs
    try:
        out = trainer.evaluate(metric_key_prefix="by_hand_check")
    finally:
        trainer.eval_dataset = kept
    return {key: out.get(f"by_hand_check_{key}", out.get(f"eval_{key}")) for key in LOGGED}


def compare(by_hand: pd.DataFrame, logged: dict, tolerance: float, loss_types: list[str]) -> pd.DataFrame:
    """By hand (the batch's means) beside TRL's logged values, with the difference; raises when one
    differs by more than ``tolerance`` × max(1, |TRL's value|): relative for the log-prob sums (hundreds
    of nats), absolute for rewards and loss. The loss is compared for ``sigmoid`` alone (DPO's).
    ``logged`` empty (the check does not apply): an empty table."""
    if not logged:
        return pd.DataFrame(columns=["by hand", "TRL logged", "|difference|"], dtype=float)
    keys = [k for k in LOGGED if k != "loss" or loss_types == ["sigmoid"]]
    table = pd.DataFrame({"by hand": [float(by_hand[LOGGED[k]].mean()) for k in keys],
                          "TRL logged": [float(logged[k]) for k in keys]}, index=keys)
    table["|difference|"] = (table["by hand"] - table["TRL logged"]).abs()
    worse = table[~(table["|difference|"] <= tolerance * table["TRL logged"].abs().clip(lower=1.0))]
    if len(worse):
        raise AssertionError(f"the by-hand DPO values differ from TRL's logged ones by more than {tolerance}:\n"
                             f"{worse.to_string()}\n(nbutils.dpo.by_hand computes them; a difference here means "
                             "the batch, the reference or the loss is not what TRL used)")
    return table


def summary(table: pd.DataFrame, tolerance: float) -> dict:
    """The check's numbers for ``metrics.json`` (none when it did not run)."""
    if table.empty:
        return {}
    loss = table["by hand"].get("loss", math.nan)
    scaled = table["|difference|"] / table["TRL logged"].abs().clip(lower=1.0)  # as compare() holds it
    return {"by_hand_loss": float(loss), "by_hand_margin": float(table["by hand"]["rewards/margins"]),
            "by_hand_max_difference": float(scaled.max()),
            "by_hand_tolerance": tolerance}
