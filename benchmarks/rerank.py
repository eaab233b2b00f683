"""Reranking with PairRM, side by side in one process (benchmarks/abba.py): length-bucketed
batches vs batches in the prompts' order; a stage-02 worker's work on a shard (``score_rows``) over
the bare ranker.

    .venv/bin/python benchmarks/rerank.py [--prompts 128] [--batch-size 16] [--scale 8] [--repeats 5] [--threads 1]
    .venv/bin/python benchmarks/rerank.py --smoke   # the same code path at a tiny size, in seconds (CI)

Real texts: a seeded sample of AlpacaEval's 805 instructions (../shared/alpaca_eval/), each with
five real answers (GPT-4-turbo's, claude-2's and three published Mistral-7B models'), scored by
the tiny PairRM on the CPU.

* Tokens: what the backbone processes (every comparison padded to its batch's longest), with and
  without bucketing, at PairRM's own max lengths (1224 prompt, 412+ answer tokens); counted, not run.
* Time: the tiny PairRM at those lengths reads ~4k tokens/s on 2 cores (minutes for a handful of
  prompts), so the timed runs use the texts' first 1/``scale`` of characters and max lengths over
  ``scale`` (the same length spread at a fraction of the cost); their token counts are printed too.
  Every run's scores must equal its warm-up's, and bucketed scores the unbucketed (allclose, atol
  1e-5, and the same best and worst answer per prompt).
* One torch thread by default: steadier times on a small machine that others share.
* Stage vs bare: what a stage-02 worker does per shard, ``nbutils.rerank.ranking.score_rows`` (the
  empty-response handling, the per-row truncation counts, the shard's DataFrame; all prompts as one
  shard, so the same batches), against the bare ``ranker.score`` on the same prompts, both bucketed
  and with the same loaded ranker, in this process. ``score_responses`` itself always scores in
  worker processes that load their own ranker (their start and load: ``benchmarks/parallel.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile

import numpy as np
from abba import compare

from nbutils.store.files import REPO_ROOT
from nbutils.rerank.rankers import load_ranker
from nbutils.rerank.ranking import score_rows
from nbutils.run import params as P
from nbutils.run.stage import stage_for

ALPACA = REPO_ROOT.parent / "shared" / "alpaca_eval"
SMOKE = {"prompts": 6, "batch_size": 2, "scale": 32, "repeats": 1}  # 3 batches: bucketing reorders them
PUBLISHED = ["Mistral-7B-Instruct-v0.2", "Snorkel-Mistral-PairRM-DPO", "SPPO-Mistral7B-PairRM"]


def alpaca_rows(n: int, seed: int) -> list[dict]:
    """``n`` AlpacaEval instructions (a seeded sample, in sampled order), five real answers each."""
    reference = json.loads((ALPACA / "reference_gpt4_1106_preview.json").read_text())
    published = [json.loads((ALPACA / "outputs" / f"{m}.json").read_text()) for m in PUBLISHED]
    claude = json.loads((ALPACA / "annotations" / "claude-2.json").read_text())
    assert all(len(x) == len(reference) for x in (*published, claude))
    return [{"prompt_id": f"alpaca-{i}", "prompt": reference[i]["instruction"],
             "all_generated_responses": [reference[i]["output"], claude[i]["output_2"],
                                         *(p[i]["output"] for p in published)]}
            for i in random.Random(seed).sample(range(len(reference)), n)]


def same_scores(a, b, atol=0.0) -> bool:
    """Equal scores per prompt (within ``atol``) and the same best and worst answer."""
    return len(a) == len(b) and all(
        np.allclose(x, y, rtol=0, atol=atol) and (np.argmax(x), np.argmin(x)) == (np.argmax(y), np.argmin(y))
        for x, y in zip(a, b))


def token_line(label: str, ranker, prompts, candidates, batch_size: int) -> None:
    plain = ranker.tokens(prompts, candidates, batch_size, bucketing=False)
    bucketed = ranker.tokens(prompts, candidates, batch_size, bucketing=True)
    print(f"  {label}: unbucketed {plain['processed']:,} | bucketed {bucketed['processed']:,} | ratio bucketed/"
          f"unbucketed {bucketed['processed'] / plain['processed']:.3f} | pad-free {plain['unpadded']:,} "
          f"(padding: {plain['processed'] / plain['unpadded'] - 1:.1%} unbucketed, "
          f"{bucketed['processed'] / plain['unpadded'] - 1:.1%} bucketed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=128, help="AlpacaEval instructions (of 805)")
    ap.add_argument("--batch-size", type=int, default=16, help="ranker_batch_size (prompts per PairRM batch)")
    ap.add_argument("--scale", type=int, default=8, help="timed runs: texts and max lengths divided by this")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per variant, after a warm-up")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 on a shared 2-core machine: runs "
                    "up to 8x slower whenever another process runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="the same code path at a tiny size (CI): "
                    + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    load = os.getloadavg()[0]
    rows = alpaca_rows(args.prompts, args.seed)
    ranker = load_ranker("tiny-pairrm", device="cpu")
    config = ranker.blender.ranker_config
    prompts, candidates = [r["prompt"] for r in rows], [r["all_generated_responses"] for r in rows]
    words = [len(t.split()) for row in candidates for t in row]
    print(f"{len(rows)} AlpacaEval instructions x 5 real answers ({min(words)} to {max(words)} words, median "
          f"{int(np.median(words))}), tiny PairRM on the CPU, ranker_batch_size {args.batch_size}")
    print("tokens the backbone processes (each comparison padded to its batch's longest):")
    token_line(f"max lengths {config.source_maxlength}/{config.candidate_maxlength} (PairRM's)",
               ranker, prompts, candidates, args.batch_size)

    def cut(text: str) -> str:
        return text[: max(1, len(text) // args.scale)]
    prompts, candidates = [cut(p) for p in prompts], [[cut(c) for c in row] for row in candidates]
    rows = [{**r, "prompt": p, "all_generated_responses": c} for r, p, c in zip(rows, prompts, candidates)]
    config.source_maxlength //= args.scale
    config.candidate_maxlength //= args.scale
    token_line(f"timed runs: texts and max lengths ({config.source_maxlength}/{config.candidate_maxlength}) "
               f"over {args.scale}", ranker, prompts, candidates, args.batch_size)

    print("\nPairRM scoring, unbucketed vs bucketed (same scores asserted):")
    compare({"unbucketed": lambda: ranker.score(prompts, candidates, args.batch_size, bucketing=False),
             "bucketed": lambda: ranker.score(prompts, candidates, args.batch_size, bucketing=True)},
            repeats=args.repeats, threads=args.threads, same=same_scores,
            agree=lambda a, b: same_scores(a, b, atol=1e-5), work=len(rows), unit="prompts")

    with tempfile.TemporaryDirectory() as runs:
        values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": runs, "ranker_batch_size": args.batch_size,
                                                     "shard_size": len(rows), "ranker_bucketing": True})
        stage = stage_for("02_rerank", values)

        def stage_scores():  # a worker's work on one shard (here: all prompts), with this process's ranker
            df, _ = score_rows(stage, ranker, rows)
            return [np.asarray(s, dtype=np.float32) for s in df["all_rm_scores"]]
        print("\nstage 02's per-shard work (score_rows: scores, empty answers, truncation counts, the shard's "
              "table) vs the bare ranker.score, in this process, same ranker, same batches (bucketed):")
        compare({"bare ranker.score": lambda: ranker.score(prompts, candidates, args.batch_size, bucketing=True),
                 "stage score_rows": stage_scores},
                repeats=args.repeats, threads=args.threads, same=same_scores,
                agree=lambda a, b: same_scores(a, b, atol=1e-5), work=len(rows), unit="prompts")
    print(f"\nload average (1 min) at the start {load:.2f}, at the end {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores: other processes' work skews the times")


if __name__ == "__main__":
    main()
