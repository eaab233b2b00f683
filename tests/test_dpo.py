"""Stage 03 and the loop: DPO with QLoRA on the tiny preset, merged policies, resume."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nbutils.dpo import data as dpo_data
from nbutils.dpo import hardware, merge, training
from nbutils.store.files import REPO_ROOT
from nbutils.generate.policies import base_model_path
from nbutils.rerank import dataset as preference_data
from tests.conftest import cli, metrics, params_args, read_generations

pytestmark = pytest.mark.slow
from tests.conftest import LOOP


def test_two_iterations_chain_generate_rerank_dpo(loop, runs_dir):
    for n in (1, 2):
        it = loop / f"iter_{n}"
        for nb in ("01_generate", "02_rerank", "03_dpo_qlora"):
            assert (it / f"{nb}.ipynb").exists()
        assert (it / "policy" / "config.json").exists() and (it / "adapter" / "adapter_config.json").exists()
        assert not (it / "policy" / "adapter_config.json").exists()  # merged, a plain model
        m = metrics(loop, n)["03_dpo_qlora"]
        assert m["train_pairs"] > 20 and m["global_steps"] >= 4 and m["merge_same_top1"]
        assert {"loss", "rewards/margins", "rewards/accuracies", "learning_rate"} <= set(m["steps"][0])
        assert m["linear_4bit_layers"] == 2 * 7  # load_in_4bit: every targeted layer of both blocks is nf4
        assert (it / "03_training_curves.png").stat().st_size > 10000
    # iteration 2 sampled (with vLLM) from iteration 1's merged policy
    assert read_generations(loop, 2)["model"].eq(str(loop / "iter_1" / "policy")).all()
    assert metrics(loop, 2)["01_generate"]["backend"] == "vllm"
    again = cli("run", "-f", "recipes/tiny.yaml", *params_args(runs_dir=runs_dir, run_name="loop", **LOOP)).stdout
    assert again.count("done for these params and inputs, skipped") == 7  # 2 x 3 stages, then 04_evaluate


def sequence_logps(model, tokenizer, rows) -> np.ndarray:
    """Sum of log-probs of each answer's tokens given its prompt (chat template)."""
    out = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["answer"], return_dict=False)
        ids = torch.tensor([full])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        token_logps = logps[torch.arange(len(full) - 1), ids[0, 1:]]
        out.append(float(token_logps[len(prompt) - 1:].sum()))
    return np.array(out)


def test_reference_is_model_n_minus_1_or_the_initial_model(loop, runs_dir):
    """At step 1 the fresh adapters change nothing: zero rewards against model n-1 (the blog's
    reference), non-zero against the initial model (``reference_model: initial``)."""
    first = metrics(loop, 2)["03_dpo_qlora"]["steps"][0]
    assert first["rewards/chosen"] == first["rewards/rejected"] == 0.0
    run = runs_dir / "initial-ref"
    shutil.copytree(loop / "iter_1" / "policy", run / "iter_1" / "policy")
    shutil.copy(loop / "iter_1" / "03_dpo_qlora.manifest.json", run / "iter_1")  # committed by stage 03
    shutil.copytree(loop / "iter_2" / "preference_data", run / "iter_2" / "preference_data")
    cli("run", "-f", "recipes/tiny.yaml", "--stages", "03_dpo_qlora", "--iterations", "2",
        *params_args(runs_dir=runs_dir, run_name="initial-ref", reference_model="initial", max_steps=2, **LOOP))
    first = metrics(run, 2)["03_dpo_qlora"]["steps"][0]
    assert abs(first["rewards/chosen"]) > 1e-4 and abs(first["rewards/margins"]) > 1e-4


def test_trained_policy_prefers_chosen_more_than_the_reference(loop):
    from transformers import AutoTokenizer
    pairs = preference_data.for_dpo(preference_data.load_split(loop / "iter_1" / "preference_data",
                                                               "train_iteration_1"))
    tokenizer = AutoTokenizer.from_pretrained(loop / "iter_1" / "policy")
    policy = merge.load_full(str(loop / "iter_1" / "policy"), torch.float32).eval()
    reference = merge.load_full(base_model_path("tiny-mistral"), torch.float32).eval()
    logps = {(name, side): sequence_logps(model, tokenizer, [{"prompt": r["prompt"], "answer": r[side]} for r in pairs])
             for name, model in (("policy", policy), ("reference", reference)) for side in ("chosen", "rejected")}
    margins = ((logps["policy", "chosen"] - logps["reference", "chosen"])
               - (logps["policy", "rejected"] - logps["reference", "rejected"]))
    assert margins.mean() > 0 and (margins > 0).mean() > 0.6


def test_merged_policy_gives_base_plus_adapter_logits_in_transformers_and_vllm(loop):
    from transformers import AutoTokenizer

    from nbutils.generate.backends import VLLMBackend
    it = loop / "iter_1"
    prompts = ["Give me some tips about coffee.", "Why do people like owls?", "Explain chess to a child."]
    tokenizer = AutoTokenizer.from_pretrained(it / "policy")
    merged = merge.next_token_logprobs(merge.load_full(str(it / "policy"), torch.float32), tokenizer, prompts)
    adapted = merge.next_token_logprobs(merge.base_with_adapter(base_model_path("tiny-mistral"), it / "adapter",
                                                                torch.float32), tokenizer, prompts)
    assert (merged - adapted).abs().max() < 1e-4  # float32, merged vs unmerged
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    engine = VLLMBackend(str(it / "policy"), {"dtype": "float32", "seed": 0, "gpu_memory_utilization": 0.3,
                                              "max_model_len": 512, "enforce_eager": True})
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         return_dict=False) for p in prompts]
    outs = engine.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids],
                               SamplingParams(max_tokens=1, temperature=0.0, logprobs=5), use_tqdm=False)
    for out, expected in zip(outs, merged):
        top = out.outputs[0].logprobs[0]
        assert max(top, key=lambda t: top[t].logprob) == int(expected.argmax())
        for token, lp in top.items():
            assert abs(lp.logprob - float(expected[token])) < 1e-3  # vLLM CPU kernels vs transformers


def test_killed_training_resumes_to_the_uninterrupted_result(loop, runs_dir):
    """SIGKILL stage 03 once a checkpoint is whole; the rerun resumes from it and ends where the loop's
    uninterrupted iteration 1 (same pairs, params and seed; checkpoints every 4 steps) ended: the same
    losses at every step (1e-6) and the same adapter weights, bit for bit."""
    from safetensors.torch import load_file
    run = runs_dir / "killed-dpo"
    shutil.copytree(loop / "iter_1" / "preference_data", run / "iter_1" / "preference_data")
    args = ["run", "-f", "recipes/tiny.yaml", "--stages", "03_dpo_qlora", "--iterations", "1",
            *params_args(runs_dir=runs_dir, run_name="killed-dpo", save_steps=1, **LOOP)]
    proc = subprocess.Popen([sys.executable, "-m", "nbutils", *args], cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = run / "iter_1" / "dpo_checkpoints" / "checkpoint-2"
    deadline = time.time() + 300
    while not (first.is_dir() and training.checkpoint_complete(first)) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "iter_1" / "adapter").exists(), "training ended before the kill"
    cli(*args)
    m, full = metrics(run)["03_dpo_qlora"], metrics(loop)["03_dpo_qlora"]
    assert m["resumed_from_checkpoint"] and int(m["resumed_from_checkpoint"].split("-")[1]) >= 2
    assert m["global_steps"] == full["global_steps"] == len(m["steps"])  # each step once
    np.testing.assert_allclose([s["loss"] for s in m["steps"]], [s["loss"] for s in full["steps"]], rtol=0, atol=1e-6)
    assert m["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)  # over the whole run
    resumed, whole = (load_file(r / "iter_1" / "adapter" / "adapter_model.safetensors") for r in (run, loop))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def write_pairs(path, rows):
    df = preference_data.snorkel_rows([
        {"prompt_id": str(i), "prompt": p, "all_generated_responses": [c, r], "all_rm_scores": [1.0, 0.0],
         "chosen_index": 0, "rejected_index": 1} for i, (p, c, r) in enumerate(rows)])
    preference_data.write_dataset({"train_iteration_1": df, "test_iteration_1": df.head(0)}, path, "")


def test_awkward_pairs_are_skipped_and_counted(tmp_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(base_model_path("tiny-mistral"))
    long_prompt = "Tell me about coffee " * 40
    write_pairs(tmp_path / "pairs", [("Tips about tea?", "Tea is fun.", "Tea is fun. "),
                                     (long_prompt, "Sure!", "No."),
                                     ("Tips about tea?", "Many people enjoy tea every day. " * 12, "No."),
                                     ("Tips about owls?", "Owls are a wonderful topic to explore.", "Sure!")])
    train, evaluation, stats = dpo_data.load_pairs({1: tmp_path / "pairs"}, tokenizer, max_length=64)
    assert len(train) == 2 and evaluation is None
    assert (stats["train_pairs_skipped_identical"], stats["train_pairs_skipped_prompt_too_long"],
            stats["train_pairs_truncated"]) == (1, 1, 1)
    write_pairs(tmp_path / "none", [("Tips about tea?", "Same.", "Same.")])
    with pytest.raises(ValueError, match="no pairs to train on"):
        dpo_data.load_pairs({1: tmp_path / "none"}, tokenizer, max_length=64)


def test_missing_pairs_say_which_stage_to_run(runs_dir):
    proc = cli("run", "-f", "recipes/tiny.yaml", "--stages", "03_dpo_qlora", "--iterations", "1",
               *params_args(runs_dir=runs_dir, run_name="no-pairs"), check=False)
    assert proc.returncode == 1 and "02_rerank" in proc.stdout + proc.stderr


@pytest.mark.parametrize("key,value,words", [("lora_r", "0", "at least 1"), ("beta", "0", "> 0"),
                                             ("beta", "-0.1", "> 0"), ("loss_type", "dpo", "sigmoid"),
                                             ("optim", "adam", "adamw_torch"), ("lora_target_modules", "[]", "at least one"),
                                             ("load_in_4bit", "maybe", "true, false or auto"),
                                             ("train_sampling_strategy", "sorted", "group_by_length")])
def test_bad_training_params_are_refused_before_anything_loads(key, value, words):
    proc = cli("validate", "-f", "recipes/tiny.yaml", "-p", key, value, check=False)
    assert proc.returncode == 2 and key in proc.stderr and words in proc.stderr, proc.stderr


def test_load_in_4bit_auto_takes_qlora_on_the_cpu_and_unquantized_lora_where_the_gpu_has_room():
    assert hardware.resolve_load_in_4bit("auto", None, 3.0)[0] is True  # the CPU: QLoRA, as always
    assert hardware.resolve_load_in_4bit("auto", 79.6, None)[0] is True  # no estimate: the safe side
    fits, why = hardware.resolve_load_in_4bit("auto", 79.6, 25.0)  # a 7B bf16 base on an H100
    assert fits is False and "25.0 GiB" in why and "79.6 GiB" in why and "unquantized" in why
    assert hardware.resolve_load_in_4bit("auto", 24.0, 25.0)[0] is True  # ... on an RTX 4090
    assert hardware.resolve_load_in_4bit("auto", 27.0, 25.0)[0] is True  # fits, but not with 10% to spare
    assert hardware.resolve_load_in_4bit("auto", 27.6, 25.0)[0] is False
    assert [hardware.resolve_load_in_4bit(v, 79.6, 25.0)[0] for v in (True, False)] == [True, False]  # as set
    assert hardware.resolve_liger_kernel("auto", gpu=False) is False
    assert hardware.resolve_liger_kernel(False, gpu=True) is False
    with pytest.raises(ValueError, match="use_liger_kernel: true needs CUDA and the liger-kernel package"):
        hardware.resolve_liger_kernel(True, gpu=False)


def pairs_of_mixed_lengths(n: int):
    """Short and long pairs alternating (a few tokens vs ~100-200): random batches mix them."""
    import random

    from datasets import Dataset
    rng = random.Random(0)
    rows = []
    for i in range(n):
        words = rng.randint(1, 4) if i % 2 else rng.randint(30, 60)
        rows.append({"prompt": [{"role": "user", "content": f"Tell me about tea, please ({i})."}],
                     "chosen": [{"role": "assistant", "content": " ".join(["Tea is good."] * words)}],
                     "rejected": [{"role": "assistant", "content": " ".join(["No tea."] * (words // 2 + 1))}]})
    return Dataset.from_list(rows)


def test_length_grouped_batches_pad_less_and_leave_every_pairs_log_probs_as_they_were(tmp_path):
    """One epoch at learning rate 0 (the model stays as it is) with random batches and with
    length-grouped ones: the grouped batches hold far fewer padding tokens, and the mean log-prob
    of the chosen and of the rejected answers over all pairs (equal batches: the mean of the steps'
    means) is the same: padding changes no pair's log-probs."""
    from nbutils.run import params as P
    from nbutils.run.stage import stage_for
    pairs = pairs_of_mixed_lengths(48)
    out = {}
    for strategy in ("random", "group_by_length"):
        values, _ = P.resolve(["recipes/tiny.yaml"], {"train_sampling_strategy": strategy, "num_train_epochs": 1.0,
                                                     "per_device_train_batch_size": 4, "save_steps": 1000,
                                                     "load_in_4bit": False, "gradient_checkpointing": False})  # 3x faster
        stage = stage_for("03_dpo_qlora", {**values, "learning_rate": 0.0})  # below what the params allow
        settings = hardware.device_settings(stage.params)
        model, tokenizer = training.load_policy(base_model_path("tiny-mistral"), stage.params, settings)
        trainer = training.make_trainer(stage, model, tokenizer, pairs, None, settings, tmp_path / strategy)
        tokens = training.padding_stats(trainer)
        trainer.train()
        steps = [r for r in trainer.state.log_history if "loss" in r]
        assert len(steps) == 12
        out[strategy] = {**tokens, **{k: np.mean([r[f"logps/{k}"] for r in steps]) for k in ("chosen", "rejected")}}
    grouped, mixed = out["group_by_length"], out["random"]
    assert grouped["real_tokens"] == mixed["real_tokens"]  # the same pairs
    assert grouped["padding_tokens"] < 0.5 * mixed["padding_tokens"], out
    for k in ("chosen", "rejected"):
        assert grouped[k] == pytest.approx(mixed[k], rel=1e-4), out


def test_notebook_03_checks_the_dpo_loss_by_hand_against_what_trl_logs(loop):
    """Each iteration's notebook 03 computed the DPO loss of one eval batch by hand and compared it with
    TRL's evaluate() on that batch (nbutils.dpo.by_hand; the notebook raises past the tolerance)."""
    for n in (1, 2):
        m = metrics(loop, n)["03_dpo_qlora"]
        assert m["by_hand_tolerance"] == 1e-3 and m["by_hand_max_difference"] <= 1e-3
        assert m["by_hand_margin"] != 0 and abs(m["by_hand_loss"] - 0.6931) > 1e-3  # a trained policy
