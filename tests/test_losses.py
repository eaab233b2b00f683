"""Stage 03's losses, TRL's own (``nbutils.dpo.losses``): each variant reaches the trainer exactly as the
params say, and its training loss falls on a handful of tiny pairs; SimPO (TRL's ``CPOTrainer``) also
resumes and merges as DPO does; bad combinations are refused before anything loads.

One tiny model is loaded per module (unquantized: a deep copy per test is instant); SimPO's resume and
merge run on QLoRA, the tiny preset's path (4-bit weights are loaded per trainer). Each variant trains 6
full-batch steps (all 8 pairs in one batch, a constant learning rate, dropout off as TRL sets it): the
same batch every step, so the logged loss is a deterministic descent on one objective."""
import copy
import shutil
import subprocess
import sys

import pytest
import torch

from nbutils.dpo import hardware, losses, merge, training
from nbutils.generate.policies import base_model_path
from nbutils.run import params as P
from nbutils.run.stage import stage_for
from nbutils.store.files import REPO_ROOT

PAIRS = 8
FAST = dict(per_device_train_batch_size=PAIRS, gradient_accumulation_steps=1, max_steps=6, learning_rate=5e-3,
            lr_scheduler_type="constant", warmup_ratio=0.0, save_steps=1000, load_in_4bit=False,
            gradient_checkpointing=False, max_length=64)
VARIANTS = {
    "sigmoid+sft weighted": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
    "ld_alpha": {"ld_alpha": 0.5},
    "sppo_hard": {"loss_type": "sppo_hard", "learning_rate": 1e-3},  # squared loss aiming at log-ratios of
    # +-1/(2 beta) = +-5: Adam's 5e-3 steps overshoot and the loss oscillates (down all the same); 1e-3 descends
    "apo_zero": {"loss_type": "apo_zero"},
    "simpo": {"loss_type": "simpo", "simpo_gamma": 0.25},
}


def tiny_pairs():
    """Fixed pairs: a full, polite chosen answer against a curt rejected one."""
    from datasets import Dataset
    topics = ["tea", "owls", "chess", "rain", "bread", "maps", "kites", "jazz"][:PAIRS]
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"Tell me about {t}."}],
         "chosen": [{"role": "assistant", "content": f"Sure! {t.capitalize()} is a fine topic to learn about."}],
         "rejected": [{"role": "assistant", "content": "No."}]} for t in topics])


def stage_with(**overrides):
    values, _ = P.resolve(["recipes/tiny.yaml"], {**FAST, **overrides})
    return stage_for("03_dpo_qlora", values)


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, settings): the tiny policy, loaded once, unquantized; tests train copies."""
    stage = stage_with()
    settings = hardware.device_settings(stage.params, say=False)
    model, tokenizer = training.load_policy(base_model_path("tiny-mistral"), stage.params, settings)
    return model, tokenizer, settings


def trainer_for(tiny, tmp_path, **overrides):
    """(stage, stage 03's trainer) for the tiny params with ``overrides``, on a copy of the module's
    model (``load_in_4bit``: a fresh 4-bit load)."""
    model, tokenizer, settings = tiny
    stage = stage_with(**overrides)
    if stage["load_in_4bit"]:
        settings = hardware.device_settings(stage.params, say=False)
        model = training.load_policy(base_model_path("tiny-mistral"), stage.params, settings)[0]
    else:
        model = copy.deepcopy(model)
    torch.manual_seed(0)
    return stage, training.make_trainer(stage, model, tokenizer, tiny_pairs(), None, settings, tmp_path / "ckpt")


def logged_losses(trainer) -> list[float]:
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_each_loss_reaches_the_trainer_as_the_params_say_and_falls(tiny, tmp_path, variant):
    params = VARIANTS[variant]
    stage, trainer = trainer_for(tiny, tmp_path, **params)
    if variant == "simpo":
        from nbutils.compat.trl_cpo import cpo_classes
        assert type(trainer) is cpo_classes()[1] and type(trainer.args) is cpo_classes()[0]
        assert (trainer.args.loss_type, trainer.args.cpo_alpha, trainer.args.simpo_gamma) == ("simpo", 0.0, 0.25)
        assert (trainer.loss_type, trainer.cpo_alpha, trainer.simpo_gamma) == ("simpo", 0.0, 0.25)
        assert getattr(trainer, "ref_model", None) is None and training.reference_model(stage, tiny[2]) is None
        pairs = trainer.train_dataset  # CPO's columns: prompt + answer in each sequence
        sequences = zip(pairs["chosen_input_ids"], pairs["rejected_input_ids"])
        assert pairs["length"] == [max(len(c), len(r)) for c, r in sequences]
    else:
        from trl import DPOConfig, DPOTrainer
        assert type(trainer) is DPOTrainer and type(trainer.args) is DPOConfig and trainer.ref_model is None
        assert trainer.args.loss_type == trainer.loss_types == losses.names(params.get("loss_type", "sigmoid"))
        assert trainer.args.loss_weights == params.get("loss_weights")
        assert trainer.args.ld_alpha == trainer.ld_alpha == params.get("ld_alpha")
    assert trainer.args.beta == stage["beta"]
    assert "length" in trainer.train_dataset.column_names  # the length-grouped sampler has its lengths
    trainer.train()
    steps = logged_losses(trainer)
    assert len(steps) == FAST["max_steps"]
    assert steps[-1] < 0.7 * steps[0], steps  # one batch, 6 steps: a clear fall, not noise


def test_simpo_resumes_exactly_and_merges_like_dpo(tiny, tmp_path):
    """SimPO on QLoRA goes through stage 03's own training (``training.train``: resume point,
    fingerprint, saved adapter) and merge: a run resumed from its step-2 checkpoint ends with the
    losses and the adapter of the uninterrupted run; the merged policy gives the adapted model's
    log-probs."""
    from safetensors.torch import load_file
    overrides = dict(loss_type="simpo", max_steps=4, save_steps=2, load_in_4bit=True)
    stage, whole = trainer_for(tiny, tmp_path / "whole", **overrides)
    stats = training.train(whole, stage, tmp_path / "whole" / "ckpt", tmp_path / "whole" / "adapter")
    assert (stats["trainer"], stats["resumed_from_checkpoint"]) == ("CPOTrainer", None)
    assert stats["reference"].startswith("none") and stats["loss"].startswith("SimPO")
    assert stats["linear_4bit_layers"] == 2 * 7  # QLoRA: every targeted layer of both blocks is nf4
    shutil.copytree(tmp_path / "whole" / "ckpt", tmp_path / "killed" / "ckpt")
    shutil.rmtree(tmp_path / "killed" / "ckpt" / "checkpoint-4")  # as if killed after step 2's checkpoint
    stage, resumed = trainer_for(tiny, tmp_path / "killed", **overrides)
    stats = training.train(resumed, stage, tmp_path / "killed" / "ckpt", tmp_path / "killed" / "adapter")
    assert stats["resumed_from_checkpoint"] == "checkpoint-2"
    assert logged_losses(resumed) == pytest.approx(logged_losses(whole), abs=1e-6)  # steps 1-2 read back, 3-4 rerun
    a, b = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    check = merge.merge_adapter(base_model_path("tiny-mistral"), tmp_path / "whole" / "adapter",
                                tmp_path / "policy", torch.float32, ["Tell me about tea."])
    assert check["merge_max_logprob_difference"] < 1e-4 and check["merge_same_top1"]


@pytest.mark.parametrize("overrides, keys", [
    ({"loss_type": "[sigmoid, sft]", "loss_weights": "[1.0]"}, ["loss_weights", "loss_type"]),
    ({"ld_alpha": "2"}, ["ld_alpha", "[0, 1]"]),
    ({"loss_type": "[simpo, sft]"}, ["loss_type", "simpo cannot be combined"]),
    ({"loss_type": "simpo", "ld_alpha": "0.5"}, ["ld_alpha", "loss_type: simpo"]),
    ({"loss_type": "simpo", "reference_model": "initial"}, ["reference_model: initial", "loss_type: simpo"]),
    ({"simpo_gamma": "0.3"}, ["simpo_gamma", "loss_type: simpo"]),
])
def test_bad_loss_combinations_are_refused_before_anything_loads(overrides, keys):
    with pytest.raises(P.ParamsError) as refused:
        P.resolve(["recipes/tiny.yaml"], {k: P.parse_yaml(v) for k, v in overrides.items()})
    assert all(k in str(refused.value) for k in keys), str(refused.value)


def test_the_cli_takes_a_loss_list_as_yaml_and_refuses_a_bad_one():
    from tests.conftest import cli
    assert P.resolve(["recipes/tiny.yaml"], {"loss_type": P.parse_yaml("sigmoid")})[0]["loss_type"] == "sigmoid"
    ok = cli("validate", "-f", "recipes/tiny.yaml", "-p", "loss_type", "[sigmoid, sft]", "-p", "loss_weights", "[1, 0.5]")
    assert "['sigmoid', 'sft']" in ok.stdout and "[1.0, 0.5]" in ok.stdout
    bad = cli("validate", "-f", "recipes/tiny.yaml", "-p", "loss_type", "[sigmoid, sft]", "-p", "loss_weights",
              "[1.0, 0.5, 2.0]", check=False)
    assert bad.returncode == 2 and "loss_weights: 3 weight(s)" in bad.stderr and "loss_type" in bad.stderr


def test_cpo_imports_without_trl_experimental_notice():
    """``nbutils.compat.trl_cpo`` silences ``trl.experimental``'s import notice (in a fresh process: the
    notice comes once, on the first import)."""
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as seen:\n    warnings.simplefilter('always')\n"
            "    from nbutils.compat.trl_cpo import cpo_classes\n    cpo_classes()\n"
            "print([str(w.message) for w in seen if 'trl.experimental' in str(w.message)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def by_hand_table(stage, trainer, beta=None, trl_pairs=None):
    """Notebook 03's cells: the log-probs by hand, then rewards, margin and loss, then TRL's values
    (on ``trl_pairs``: by default the same pairs)."""
    import numpy as np

    from nbutils.dpo import by_hand
    pairs = by_hand.batch_pairs(trainer, PAIRS)
    logps = by_hand.log_probs(trainer, pairs)
    beta = stage["beta"] if beta is None else beta
    logps["reward_chosen"] = beta * (logps.policy_chosen - logps.reference_chosen)
    logps["reward_rejected"] = beta * (logps.policy_rejected - logps.reference_rejected)
    logps["margin"] = logps.reward_chosen - logps.reward_rejected
    logps["loss"] = np.logaddexp(0, -logps.margin)
    logged = by_hand.trl_logged(trainer, pairs if trl_pairs is None else trl_pairs)
    return by_hand.compare(logps, logged, by_hand.tolerance(torch.float32), ["sigmoid"])


def test_the_dpo_loss_by_hand_is_what_trl_logs_for_the_same_batch(tiny, tmp_path):
    """Notebook 03's check on a trained policy: the by-hand loss, rewards and log-probs equal TRL's
    evaluate() on the same 8 pairs; a wrong beta, or TRL's values of other pairs, fail it."""
    stage, trainer = trainer_for(tiny, tmp_path)
    trainer.train()
    table = by_hand_table(stage, trainer)
    assert table["|difference|"].max() <= 1e-3 and set(table.index) >= {"loss", "rewards/margins", "logps/chosen"}
    assert table.loc["rewards/margins", "by hand"] > 0.05  # trained: not the untrained ln 2 with margin 0
    with pytest.raises(AssertionError, match="rewards/chosen"):
        by_hand_table(stage, trainer, beta=2 * stage["beta"])
    with pytest.raises(AssertionError, match="logps/chosen"):
        by_hand_table(stage, trainer, trl_pairs=trainer.train_dataset.select(range(1, PAIRS)))
