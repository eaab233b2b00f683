"""Stage 03's loss, TRL's own: the trainer and the config fields that ``loss_type``, ``loss_weights``,
``ld_alpha`` and ``simpo_gamma`` select, and the rules between them (checked before anything loads:
:func:`problems`, from ``nbutils.run.rules``). No loss is written here; each param goes to TRL as it is.

* DPO's losses: ``trl.DPOTrainer``, ``DPOConfig.loss_type`` (``sigmoid`` is DPO; ``ipo``, ``sppo_hard``,
  ``apo_zero``, ...), one name or a list whose losses TRL sums, weighted by ``loss_weights`` (null: 1.0
  each); ``ld_alpha`` (LD-DPO, arXiv 2409.06411) weights the log-probs of the longer answer's tokens
  past the shorter one's length (1.0: plain DPO). The reference is model n-1, or the initial model.
* ``simpo`` (SimPO, arXiv 2405.14734): ``trl.experimental.cpo.CPOTrainer`` with ``loss_type="simpo"``
  and ``cpo_alpha=0`` (CPO without its behaviour-cloning term): ``-log σ(β·Δ - γ)``, Δ the margin of
  the answers' *mean* token log-probs, γ ``simpo_gamma``. No reference model: none is loaded, no
  second forward pass. Its β is on another scale than DPO's (the SimPO authors' Mistral-7B-Instruct:
  β 2.5, γ 0.25, i.e. γ/β 0.1, learning rate 5e-7; DPO's recipe here: β 0.01).
"""
from __future__ import annotations

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")  # TRL 1.16's DPOConfig
SIMPO = "simpo"  # CPOTrainer's; its other losses (sigmoid, hinge, ipo) are DPOTrainer's too, so not offered


def names(loss_type) -> list[str]:
    """``loss_type`` (one name or a list) as a list."""
    return [loss_type] if isinstance(loss_type, str) else list(loss_type)


def is_simpo(p: dict) -> bool:
    return SIMPO in names(p.get("loss_type", "sigmoid"))


def loss_type_problem(v):
    """The ``loss_type`` rule: a name TRL knows, or a non-empty list of them."""
    unknown = [n for n in names(v) if n not in DPO_LOSSES + (SIMPO,)]
    if not names(v) or unknown:
        return (f"must be one of {', '.join(DPO_LOSSES + (SIMPO,))}, or a list of them (TRL 1.16's DPO losses, "
                f"summed with loss_weights; simpo: SimPO, alone)" + (f"; {unknown} unknown" if unknown else ""))
    return None


def loss_weights_problem(v):
    if v is None:
        return None
    return None if v and all(w >= 0 for w in v) else "must be null (1.0 each) or a list of weights >= 0"


def ld_alpha_problem(v):
    return None if v is None or 0 <= v <= 1 else "must be null (plain DPO) or in [0, 1] (LD-DPO's alpha)"


def simpo_gamma_problem(v):
    return None if v is None or v >= 0 else "must be null (TRL's 0.5) or at least 0 (SimPO's target margin)"


def problems(v: dict) -> list[str]:
    """Rules between the loss keys (and ``reference_model``), each naming the keys and what to do."""
    if "loss_type" not in v:
        return []
    losses, out = names(v["loss_type"]), []
    weights, simpo = v.get("loss_weights"), SIMPO in losses
    if simpo and len(losses) > 1:
        out.append(f"loss_type: {losses}: simpo cannot be combined with other losses (SimPO is TRL's CPOTrainer, "
                   "the others DPOTrainer's); set loss_type: simpo alone, or DPO losses only")
    elif weights is not None and len(weights) != len(losses):
        out.append(f"loss_weights: {len(weights)} weight(s) {weights} for {len(losses)} loss(es) in loss_type "
                   f"{losses}: give one weight per loss, in loss_type's order, or loss_weights: null (1.0 each)")
    if simpo and weights is not None:
        out.append(f"loss_weights: {weights} acts only with DPO's losses (loss_type: simpo is one CPOTrainer loss); "
                   "set loss_weights: null")
    if simpo and v.get("ld_alpha") is not None:
        out.append(f"ld_alpha: {v['ld_alpha']} is LD-DPO's, a DPOTrainer field; loss_type: simpo (CPOTrainer) has "
                   "none (SimPO already averages over the answer's tokens); set ld_alpha: null")
    if not simpo and v.get("simpo_gamma") is not None:
        out.append(f"simpo_gamma: {v['simpo_gamma']} acts only with loss_type: simpo (it is {v['loss_type']}); "
                   "set both, or simpo_gamma: null")
    if simpo and v.get("reference_model") == "initial":
        out.append("reference_model: initial with loss_type: simpo: SimPO has no reference model; set "
                   "reference_model: previous (not used by simpo), or a DPO loss_type")
    return out


def config_fields(p: dict) -> dict:
    """The loss's fields of the trainer's config, the params as they are: ``DPOConfig``'s
    ``loss_type`` (a list), ``loss_weights``, ``ld_alpha``; for simpo ``CPOConfig``'s ``loss_type``,
    ``cpo_alpha`` 0 and ``simpo_gamma`` (null: left to TRL, 0.5)."""
    if is_simpo(p):
        gamma = {} if p.get("simpo_gamma") is None else {"simpo_gamma": p["simpo_gamma"]}
        return {"loss_type": SIMPO, "cpo_alpha": 0.0, **gamma}
    return {"loss_type": names(p["loss_type"]), "loss_weights": p.get("loss_weights"), "ld_alpha": p.get("ld_alpha")}


def config_class(p: dict):
    if is_simpo(p):
        from nbutils.compat.trl_cpo import cpo_classes
        return cpo_classes()[0]
    from trl import DPOConfig
    return DPOConfig


def trainer_class(p: dict):
    if is_simpo(p):
        from nbutils.compat.trl_cpo import cpo_classes
        return cpo_classes()[1]
    from trl import DPOTrainer
    return DPOTrainer


def describe(p: dict) -> str:
    """One line for titles and logs: ``DPO (sigmoid)``, ``DPO (sigmoid x1.0 + sft x0.5, ld_alpha 0.5)``,
    ``SimPO (gamma 0.25)``."""
    if is_simpo(p):
        return f"SimPO (gamma {p.get('simpo_gamma') if p.get('simpo_gamma') is not None else '0.5, TRL default'})"
    losses, weights = names(p["loss_type"]), p.get("loss_weights")
    terms = [f"{n} x{w:g}" for n, w in zip(losses, weights)] if weights else losses
    return f"DPO ({' + '.join(terms)}" + (f", ld_alpha {p['ld_alpha']:g})" if p.get("ld_alpha") is not None else ")")


def reward_name(p: dict) -> str:
    """What TRL logs as ``rewards/*``: DPO's implicit reward (β times the log-ratio to the reference),
    or SimPO's (β times the mean token log-prob)."""
    return "SimPO reward (β · mean log-prob)" if is_simpo(p) else "implicit reward"


def reference(p: dict) -> str:
    """What the trainer compares the policy with (stage 03's metrics, ``reference``)."""
    if is_simpo(p):
        return "none: SimPO is reference-free (reference_model does not apply)"
    if p.get("reference_model") == "initial" and p.get("iteration", 1) > 1:
        return "the initial model (base_model), loaded separately"
    if p.get("finetuning", "lora") == "full":
        return "model n-1, a second copy loaded by TRL"
    return "model n-1: the policy with its adapters disabled"
