"""nbutils.run.plan: the run planner's arithmetic (fast; no models, no network)."""
import pytest

from nbutils.run import plan as PL
from nbutils.store.files import REPO_ROOT
from tests.conftest import cli


def preset(name: str) -> dict:
    """recipes/<name>.yaml, resolved and validated."""
    from nbutils.run import params as P
    return P.resolve([f"recipes/{name}.yaml"])[0]


@pytest.fixture(scope="module")
def snorkel():
    return preset("snorkel")


def test_rows_are_stages_by_iteration(snorkel):
    table = PL.plan(snorkel, "h100")
    assert snorkel["num_iterations"] == 3
    assert len(table) == 3 * 3 + 2
    assert list(table["stage"][:3]) == ["01_generate", "02_rerank", "03_dpo_qlora"]
    assert list(table["iteration"][:9]) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert list(table["stage"][9:]) == ["04_evaluate", "05_length_analysis"]
    assert table["iteration"][9] is None and table["iteration"][10] is None
    assert {"stage", "iteration", "work", "tokens", "peak_gpu_gib", "hours", "disk_gib", "note"} <= set(table)
    assert (table["hours"][:10] > 0).all() and (table["tokens"][:10] > 0).all()


def test_faster_card_fewer_hours(snorkel):
    h100, rtx = PL.totals(PL.plan(snorkel, "h100")), PL.totals(PL.plan(snorkel, "rtx4090"))
    assert h100["hours"] < rtx["hours"]
    assert 5 < h100["hours"] < 100  # order of magnitude: a day, not minutes or months
    assert PL.fits(PL.plan(snorkel, "rtx4090"), "rtx4090") == []  # QLoRA on 24 GB is the point of the recipe


def test_doubling_prompts_doubles_per_iteration_hours(snorkel):
    one = PL.plan(snorkel, "a100")
    two = PL.plan({**snorkel, "prompts_per_iteration": 2 * snorkel["prompts_per_iteration"]}, "a100")
    for stage in ("01_generate", "02_rerank", "03_dpo_qlora"):
        ratio = two[two.stage == stage]["hours"].sum() / one[one.stage == stage]["hours"].sum()
        assert 1.8 < ratio <= 2.0, (stage, ratio)
    assert two[two.stage == "04_evaluate"]["hours"].item() == one[one.stage == "04_evaluate"]["hours"].item()


def test_keep_checkpoints_adds_disk(snorkel):
    dropped = PL.totals(PL.plan({**snorkel, "keep_checkpoints": False}, "h100"))["disk_gib"]
    kept = PL.totals(PL.plan({**snorkel, "keep_checkpoints": True}, "h100"))["disk_gib"]
    assert kept > dropped + 3 * 2  # at least 2 GiB per iteration (adapter + Adam state, r 128)


def test_memory_and_fits(snorkel):
    table = PL.plan({**snorkel, "load_in_4bit": False}, "rtx4090")
    dpo_4bit = PL.plan(snorkel, "rtx4090").query("stage == '03_dpo_qlora'")["peak_gpu_gib"].max()
    assert table.query("stage == '03_dpo_qlora'")["peak_gpu_gib"].max() > dpo_4bit
    problems = PL.fits(table, "rtx4090")
    assert any(p.startswith("03_dpo_qlora") and "RTX 4090 has 24" in p for p in problems)
    assert PL.fits(table, "h100") == []


def test_tiny_preset_is_quick():
    values = preset("tiny")
    total = PL.totals(PL.plan(values, "rtx4090"))
    assert total["hours"] < 0.5 and total["disk_gib"] < 1


def test_model_params(tmp_path):
    assert PL.model_params("mistralai/Mistral-7B-Instruct-v0.2") == pytest.approx(7.24e9)
    assert PL.model_params("llm-blender/PairRM") == pytest.approx(0.435e9)
    assert PL.model_params("tiny-mistral") < 1e7
    notes = []
    assert PL.model_params("someone/unknown-model", notes) == pytest.approx(7.24e9) and notes
    (tmp_path / "config.json").write_text('{"dtype": "bfloat16"}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2000)
    assert PL.model_params(str(tmp_path)) == pytest.approx(1000)
    assert PL.lora_params(128, 7.24e9) == pytest.approx(128 * 2_621_440)


def test_every_gpu_cites_each_figure(snorkel):
    assert set(PL.GPUS) == {"h100", "a100", "l40s", "rtx4090"}
    for key, g in PL.GPUS.items():
        assert g.memory_gib > 20 and g.gen_tok_s > 0 and g.dpo_tok_s() > 0 and g.pairrm_cmp_s() > 0
        for source in (g.gen_source, g.dpo_source(), g.pairrm_source):
            assert source.strip(), key
        assert "derived" in g.dpo_source() and "derived" in g.pairrm_source
    text = PL.format_plan(PL.plan(snorkel, "l40s"), "l40s")
    assert "Sources:" in text and PL.GPUS["l40s"].gen_source in text and "Total:" in text


def test_the_snorkel_preset_fits_a_rented_day_on_an_h100(snorkel):
    """With the speedups on (one seed per shard, bucketed PairRM batches, bf16 LoRA where it fits,
    length-grouped DPO batches) the plan is at most 12 hours on one H100; each one counts."""
    assert snorkel["load_in_4bit"] == "auto" and snorkel["train_sampling_strategy"] == "group_by_length"
    assert snorkel["ranker_bucketing"] and snorkel["sampling_seeds"] == "shard"
    fast = PL.plan(snorkel, "h100")
    assert PL.totals(fast)["hours"] <= 12
    slow = {"load_in_4bit": True, "train_sampling_strategy": "random", "ranker_bucketing": False}
    for key, value in slow.items():
        assert PL.totals(PL.plan({**snorkel, key: value}, "h100"))["hours"] > PL.totals(fast)["hours"] + 0.5, key
    assert "LoRA on the bf16 base" in fast.query("stage == '03_dpo_qlora'")["note"].iloc[0]
    assert "QLoRA (load_in_4bit: auto" in PL.plan(snorkel, "rtx4090").query("stage == '03_dpo_qlora'")["note"].iloc[0]
    quantized, why = PL.quantize_base(snorkel, 7.24e9, 24.0)
    assert quantized and "the GPU has 24.0 GiB: QLoRA" in why
    assert PL.quantize_base({**snorkel, "load_in_4bit": False}, 7.24e9, 24.0)[0] is False


def test_more_gpus_plan_fewer_wall_hours_with_the_recipes_batch(snorkel):
    """snorkel.yaml on 1, 4 and 8 H100s (DDP, the recipe's 16 pairs per step kept): fewer wall-clock
    hours, each stage at most linearly faster; the plan says how many GPUs and the effective batch."""
    runs = {}
    for devices, per_device in ((1, 4), (4, 4), (8, 2)):
        values = {**snorkel, "devices": devices, "distributed": "ddp" if devices > 1 else "none",
                  "per_device_train_batch_size": per_device,
                  "gradient_accumulation_steps": 4 if devices == 1 else 1}
        runs[devices] = PL.plan(values, "h100")
        assert "steps of 16," in runs[devices].query("stage == '03_dpo_qlora'")["work"].iloc[0]
    hours = {d: PL.totals(t)["hours"] for d, t in runs.items()}
    assert hours[1] > hours[4] > hours[8] > hours[1] / 8
    assert "Plan on 8 x H100" in PL.format_plan(runs[8], "h100") and "hours on 8 GPUs" in PL.format_plan(runs[8], "h100")
    for stage in ("01_generate", "02_rerank", "03_dpo_qlora"):  # never better than linear
        one, eight = (runs[d].query(f"stage == '{stage}'")["hours"].sum() for d in (1, 8))
        assert one / 8 < eight < one, stage


def test_snorkel_full_needs_zero3_to_fit_eight_h100s():
    """Full fine-tuning of a 7B model: ~16 bytes per parameter of weights, gradients and Adam state,
    which one 80 GB GPU cannot hold; ZeRO-3 over 8 splits it."""
    full = preset("snorkel-full")
    assert full["finetuning"] == "full" and full["distributed"] == "zero3" and full["devices"] == 8
    table = PL.plan(full, "h100")
    assert PL.fits(table, "h100") == []
    dpo = table.query("stage == '03_dpo_qlora'")
    assert "full fine-tuning on 8 processes (zero3)" in dpo["note"].iloc[0]
    unsharded = PL.plan({**full, "distributed": "ddp"}, "h100").query("stage == '03_dpo_qlora'")
    assert unsharded["peak_gpu_gib"].min() > 80 > dpo["peak_gpu_gib"].max()
    assert "DPO full fine-tuning" in PL.format_plan(table, "h100")


def test_a_card_is_named_in_any_case_and_an_unknown_one_gets_the_list():
    upper = cli("preflight", "-f", "recipes/snorkel.yaml", "--dry-run", "--gpu", "H100")
    assert "Plan on one H100 80GB" in upper.stdout
    bad = cli("preflight", "-f", "recipes/snorkel.yaml", "--dry-run", "--gpu", "B200", check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "unknown card 'B200'; known: h100, a100, l40s, rtx4090" in bad.stderr


@pytest.mark.parametrize("name", ["snorkel", "snorkel-lc", "sppo", "simpo", "ld-dpo", "meta-rewarding-lc"])
@pytest.mark.parametrize("gpu", ["h100", "rtx4090"])
def test_every_gpu_recipe_plans_on_one_h100_and_one_24_gb_card(name, gpu):
    """What a recipe's method changes in the plan: all_pairs trains on every ranked pair (10 of 5
    answers), SimPO has no reference model (no reference forwards), the others train what the blog does."""
    v, blog = preset(name), PL.plan(preset("snorkel"), gpu)
    table = PL.plan(v, gpu)
    assert PL.totals(table)["peak_gpu_gib"] <= PL.GPUS[gpu].memory_gib
    mine, theirs = (t[t["stage"] == "03_dpo_qlora"].reset_index() for t in (table, blog))
    ratio = (mine["tokens"] / theirs["tokens"]).tolist()
    assert ratio == pytest.approx([10 if name == "sppo" else 1] * len(ratio), rel=0.01)
    faster = theirs["hours"] > mine["hours"]
    assert faster.all() if name == "simpo" else not faster.any()
    assert ("SimPO (no reference model)" in mine["note"][0]) == (name == "simpo")
