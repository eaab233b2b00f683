"""DPO memory and speed: QLoRA vs LoRA (unquantized base) vs full fine-tuning, same ~100M model.

    .venv/bin/python benchmarks/dpo_memory.py [--steps 6] [--batch-size 2] [--max-length 128]
    .venv/bin/python benchmarks/dpo_memory.py --base-model smollm2-135m-instruct   # a real model
    .venv/bin/python benchmarks/dpo_memory.py --smoke   # the same code path at a tiny size (CI)

Builds a randomly initialised ~100M-parameter Mistral-architecture model once (or takes
``--base-model``, any ``base_model`` name: SmolLM2 sized recipes/smol.yaml's choice of LoRA),
then runs each mode in its own process (so peaks don't mix) through the stage's
own loading code and TRL's DPOTrainer: the model's weights in memory
(``get_memory_footprint``), resident memory once loaded, its peak
while training and the whole process's peak (on CPU bitsandbytes quantizes
from fp32 weights, so loading peaks higher), peak GPU memory in training on a
GPU, mean step time after a warm-up step, and the ratios to full fine-tuning
(of the training peak). Full fine-tuning also keeps a reference copy; (Q)LoRA disables the
adapters instead. ``--smoke``: a ~2M-parameter model (``--hidden 256 --layers 2``), 1 timed step of
1 pair, max_length 32: each mode's child still loads, trains and reports.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from abba import run_child

SMOKE = {"steps": 1, "batch_size": 1, "max_length": 32, "hidden": 256, "layers": 2, "intermediate": 704}
MODES = {"qlora": {"load_in_4bit": True, "lora": True}, "lora": {"load_in_4bit": False, "lora": True},
         "full": {"load_in_4bit": False, "lora": False}}


def build_model(out: Path, hidden: int = 1024, layers: int = 9, intermediate: int = 2816, kv_heads: int = 4,
                max_positions: int = 512) -> int:
    """A randomly initialised Mistral-architecture model with the tiny policy's tokenizer, saved to
    ``out``; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from nbutils.generate.policies import base_model_path
    tokenizer = AutoTokenizer.from_pretrained(base_model_path("tiny-mistral"))
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                           num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=kv_heads,
                           head_dim=64, max_position_embeddings=max_positions, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model = MistralForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def pairs(n: int):
    from datasets import Dataset

    from nbutils.tiny.corpus import all_prompts, answer
    rng = random.Random(0)
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": answer(rng, r["topic"])}],
             "rejected": [{"role": "assistant", "content": answer(rng, r["topic"])}]} for r in all_prompts()[:n]]
    return Dataset.from_list(rows)


class RssSampler(threading.Thread):
    """The peak resident memory while training runs (sampled every 5 ms)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, False

    def run(self):
        proc = psutil.Process()
        while not self.stop:
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.005)


def run_mode(mode: str, model_dir: str, args) -> dict:
    import torch
    from transformers import TrainerCallback

    from nbutils.dpo import hardware
    from nbutils.dpo import training as dpo
    from nbutils.run import params as P
    from nbutils.run.stage import stage_for
    values, _ = P.resolve(["recipes/tiny.yaml"], {
        "load_in_4bit": MODES[mode]["load_in_4bit"], "max_steps": args.steps + 1, "max_length": args.max_length,
        "per_device_train_batch_size": args.batch_size, "save_steps": 10_000, "lora_r": 64, "lora_alpha": 64,
        "train_sampling_strategy": "random"})  # the stage's length grouping needs its own trainer (make_trainer)
    stage = stage_for("03_dpo_qlora", values)
    settings = hardware.device_settings(stage.params)
    model, tokenizer = dpo.load_policy(model_dir, stage.params, settings, adapters=MODES[mode]["lora"])
    loaded_rss, footprint = psutil.Process().memory_info().rss, model.get_memory_footprint()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sampler = RssSampler()
    times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        from trl import DPOTrainer
        trainer = DPOTrainer(model=model, args=dpo.dpo_config(stage.params, settings, Path(out)),
                             train_dataset=pairs(args.batch_size * (args.steps + 1)), processing_class=tokenizer,
                             peft_config=dpo.lora_config(stage.params) if MODES[mode]["lora"] else None,
                             callbacks=[StepTimer()])
        sampler.start()
        trainer.train()
        sampler.stop = True
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = {"mode": mode, "weights_gib": footprint / 2**30, "loaded_rss_gib": loaded_rss / 2**30, "train_peak_rss_gib": sampler.peak / 2**30,
              "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "step_seconds": sum(times[1:]) / max(len(times) - 1, 1), "trainable_params": trainable}
    if torch.cuda.is_available():
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--base-model", help="a base_model name (default: a random ~100M Mistral-architecture model)")
    ap.add_argument("--hidden", type=int, default=1024, help="the random model's hidden size")
    ap.add_argument("--layers", type=int, default=9, help="the random model's layers")
    ap.add_argument("--intermediate", type=int, default=2816, help="the random model's MLP size")
    ap.add_argument("--smoke", action="store_true", help="the same code path at a tiny size (CI): "
                    + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.model, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.base_model:
            from nbutils.generate.policies import base_model_path
            model_dir, what = base_model_path(args.base_model), args.base_model
        else:
            n = build_model(Path(tmp), args.hidden, args.layers, args.intermediate)
            model_dir, what = tmp, f"Mistral architecture, {n / 1e6:.{0 if n >= 1e7 else 1}f}M parameters"
        print(f"model: {what}, fp32; {args.steps} DPO steps of {args.batch_size} pairs, max_length {args.max_length}")
        rows = {}
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--model", model_dir, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
            out = run_child(cmd, f"{mode}: the training child")  # its stderr's tail if it fails
            rows[mode] = json.loads(out.strip().splitlines()[-1])
            r = rows[mode]
            print(f"{mode:5} weights {r['weights_gib']:5.2f} GiB | RSS loaded {r['loaded_rss_gib']:5.2f} GiB, peak in training "
                  f"{r['train_peak_rss_gib']:5.2f} GiB, process peak {r['process_peak_rss_gib']:5.2f} GiB"
                  + (f" | peak GPU {r['peak_gpu_gib']:5.2f} GiB" if "peak_gpu_gib" in r else "")
                  + f" | {r['step_seconds']:6.2f} s/step | trainable {r['trainable_params'] / 1e6:6.1f}M")
        key = "peak_gpu_gib" if "peak_gpu_gib" in rows["full"] else "train_peak_rss_gib"
        for mode in ("qlora", "lora"):
            print(f"ratio {mode}/full: weights {rows[mode]['weights_gib'] / rows['full']['weights_gib']:.2f}, "
                  f"training peak {rows[mode][key] / rows['full'][key]:.2f}, "
                  f"step time {rows[mode]['step_seconds'] / rows['full']['step_seconds']:.2f}")


if __name__ == "__main__":
    main()
