"""DPO step time: random batches (padded to their longest sequence) vs length-grouped batches.

    .venv/bin/python benchmarks/dpo_padding.py [--pairs 48] [--scale 8] [--repeats 5]
    .venv/bin/python benchmarks/dpo_padding.py --smoke   # the same code path at a tiny size (CI)

TRL's collator pads every batch to its longest sequence (chosen and rejected alike); TRL 1.16's
``padding_free`` is disabled for DPO. ``train_sampling_strategy: group_by_length`` (transformers'
length-grouped sampler) puts pairs of similar length in a batch instead. This times both through the
stage's own code (``nbutils.dpo.training``: the length column, the epoch-seeded sampler) and TRL's
DPOTrainer, ABBA (``benchmarks/abba.py``), on pairs with real lengths: AlpacaEval's instructions, with
Snorkel-Mistral-PairRM-DPO's answer as chosen and Mistral-7B-Instruct-v0.2's as rejected
(``../shared/alpaca_eval/outputs``; ~4 characters a token), every length divided by ``--scale`` and
``max_length`` with them (the recipe's 1024 / 8 = 128), so a run fits a 2-core CPU. The model is a
randomly initialised small Mistral-architecture model (the tiny tokenizer; each text is one-token words
repeated to its scaled length: step time depends on token counts, not on the words). A run is one
epoch over the same ``--pairs`` pairs from the same initial weights (the recipe's batch: 4 pairs x 4
accumulation steps; LoRA on the unquantized fp32 model, as ``load_in_4bit: auto`` trains a 7B model on
an 80 GB card); the variants agree when they trained on the same pairs and tokens (their batches, hence
their weights, differ). Also printed: the share of real tokens at the recipe's own scale (~19,000
pairs with these lengths unscaled, batch 4 x 4, max_length 1024), from the samplers alone.
``--smoke``: 16 pairs (one optimizer step), lengths / 32, a 2-layer model of hidden size 128, 1
timed round.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dpo_memory
from abba import compare

OUTPUTS = Path(__file__).resolve().parents[2] / "shared" / "alpaca_eval" / "outputs"
CHOSEN, REJECTED = "Snorkel-Mistral-PairRM-DPO", "Mistral-7B-Instruct-v0.2"
WORDS = ["the", "tea", "is", "good", "and", "music", "for", "are"]  # one token each in the tiny tokenizer
SMOKE = {"pairs": 16, "scale": 32.0, "hidden": 128, "layers": 2, "repeats": 1}
RECIPE = {"pairs": 19_000, "batch": 4, "accumulation": 4, "max_length": 1024}


def token_lengths(scale: float) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) tokens of AlpacaEval's 805 instructions: characters / 4 / ``scale``."""
    chosen, rejected = (json.loads((OUTPUTS / f"{m}.json").read_text()) for m in (CHOSEN, REJECTED))
    tokens = lambda text: max(1, round(len(text) / 4 / scale))
    return [(tokens(c["instruction"]), tokens(c["output"]), tokens(r["output"])) for c, r in zip(chosen, rejected)]


def text(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def pairs(lengths: list[tuple[int, int, int]]):
    from datasets import Dataset
    return Dataset.from_list([{"id": i, "prompt": [{"role": "user", "content": text(p)}],
                               "chosen": [{"role": "assistant", "content": text(c, 1)}],
                               "rejected": [{"role": "assistant", "content": text(r, 2)}]}
                              for i, (p, c, r) in enumerate(lengths)])


def build_model(out: Path, hidden: int, layers: int) -> int:
    return dpo_memory.build_model(out, hidden, layers, intermediate=hidden * 8 // 3, kv_heads=2, max_positions=1024)


class Recorder:
    """TRL's collator, recording which pairs each batch held and its real and padding tokens."""

    def __init__(self, collate):
        self.collate, self.ids, self.real, self.padding = collate, [], 0, 0

    def __call__(self, examples):
        batch = self.collate(examples)
        self.ids += [e["id"] for e in examples]
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.padding += int(mask.numel() - mask.sum())
        return batch


def trainers(strategy: str, model_dir: str, data, args, count: int) -> list:
    """``count`` trainers of one variant, each with its own copy of the same initial weights (the
    variant's runs then time ``train()`` alone)."""
    import torch

    import datasets
    from transformers.trainer_callback import ProgressCallback

    from nbutils.dpo import hardware, training
    from nbutils.logs import quiet
    from nbutils.run import params as P
    from nbutils.run.stage import stage_for
    quiet()
    datasets.disable_progress_bars()
    values, _ = P.resolve(["recipes/tiny.yaml"], {
        "train_sampling_strategy": strategy, "num_train_epochs": 1.0, "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4, "max_length": round(RECIPE["max_length"] / args.scale),
        "load_in_4bit": False, "lora_r": 16, "lora_alpha": 16, "save_steps": 10_000, "warmup_ratio": 0.0})
    stage = stage_for("03_dpo_qlora", values)
    settings = hardware.device_settings(stage.params)
    out = []
    for i in range(count):
        model, tokenizer = training.load_policy(model_dir, stage.params, settings)
        torch.manual_seed(0)  # the same LoRA initialisation in every trainer
        trainer = training.make_trainer(stage, model, tokenizer, data, None, settings,
                                        Path(model_dir) / f"out-{strategy}-{i}")
        trainer.data_collator = Recorder(trainer.data_collator)
        trainer.remove_callback(ProgressCallback)  # its bars and per-step log lines would bury the comparison
        out.append(trainer)
    return out


def run(pool: list):
    trainer = pool.pop()
    trainer.train()
    rec = trainer.data_collator
    return {"pairs": sorted(rec.ids), "steps": trainer.state.global_step, "real": rec.real, "padding": rec.padding}


def recipe_real_share(lengths: list[tuple[int, int, int]], strategy: str) -> float:
    """Real / all tokens in the batches one epoch gives at the recipe's scale (lengths unscaled)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng = random.Random(0)
    cap, batch = RECIPE["max_length"], RECIPE["batch"]
    drawn = [rng.choice(lengths) for _ in range(RECIPE["pairs"])]
    seqs = [(min(p + c, cap), min(p + r, cap)) for p, c, r in drawn]
    generator = torch.Generator().manual_seed(0)
    order = (get_length_grouped_indices([max(s) for s in seqs], batch * RECIPE["accumulation"], generator=generator)
             if strategy == "group_by_length" else torch.randperm(len(seqs), generator=generator).tolist())
    real = padded = 0
    for i in range(0, len(order), batch):
        rows = [x for j in order[i:i + batch] for x in seqs[j]]
        real, padded = real + sum(rows), padded + max(rows) * len(rows)
    return real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48, help="pairs per run (one epoch; 16 per optimizer step)")
    ap.add_argument("--scale", type=float, default=8.0, help="divide every length (and max_length 1024) by this")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="the same code path at a tiny size (CI): "
                    + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    t0 = time.perf_counter()
    lengths = token_lengths(1.0)
    share = {strategy: recipe_real_share(lengths, strategy) for strategy in ("random", "group_by_length")}
    print(f"recipe scale ({RECIPE['pairs']:,} pairs with AlpacaEval's lengths, batch {RECIPE['batch']} x "
          f"{RECIPE['accumulation']}, max_length {RECIPE['max_length']}): real tokens {share['random']:.0%} of "
          f"random batches, {share['group_by_length']:.0%} of length-grouped ones: group_by_length computes "
          f"{share['random'] / share['group_by_length']:.2f}x the tokens")
    scaled = token_lengths(args.scale)
    chosen = random.Random(0).sample(scaled, args.pairs)
    data = pairs(chosen)
    with tempfile.TemporaryDirectory() as tmp:
        n = build_model(Path(tmp), args.hidden, args.layers)
        mean = sum(p + (c + r) / 2 for p, c, r in chosen) / len(chosen)
        print(f"model: Mistral architecture, {n / 1e6:.1f}M parameters, fp32, LoRA r 16 on every linear layer; "
              f"{args.pairs} pairs from AlpacaEval (lengths / {args.scale:g}: ~{mean:.0f} tokens per sequence, "
              f"max_length {round(RECIPE['max_length'] / args.scale)}), batch 4 x 4 accumulation, one epoch per run")
        pools = {s: trainers(s, tmp, data, args, args.repeats + 1) for s in ("random", "group_by_length")}
        results = {}

        def variant(name):
            def go():
                results[name] = run(pools[name])
                return results[name]
            return go

        compare({"random": variant("random"), "group_by_length": variant("group_by_length")}, repeats=args.repeats,
                agree=lambda a, b: (a["pairs"], a["real"], a["steps"]) == (b["pairs"], b["real"], b["steps"]),
                work=args.pairs, unit="pairs")
    total = {name: r["real"] + r["padding"] for name, r in results.items()}
    for name, r in results.items():
        print(f"  {name:>15}: {r['steps']} optimizer steps, {len(r['pairs'])} pairs, {r['real']:,} real + "
              f"{r['padding']:,} padding tokens ({r['real'] / total[name]:.0%} real)")
    print(f"tokens computed group_by_length / random: {total['group_by_length'] / total['random']:.2f}; "
          f"whole script {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
