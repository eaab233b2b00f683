"""Reranking throughput: the workbook's stage 02 scoring against llm-blender's bare rank().

    .venv/bin/python benchmarks/rerank.py [--prompts 256] [--batch-size 16]

Both score the same prompts x 5 tiny-corpus answers with the tiny PairRM
(already loaded). Prints comparisons/s (K(K-1) ordered pairs per prompt) for
each, and the overhead ratio stage/bare (shards, parquet, empty-response
handling; the ranker load is counted apart).
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from nbutils.run import params as P
from nbutils.rerank.rankers import load_ranker
from nbutils.rerank.ranking import score_responses
from nbutils.run.stage import stage_for
from nbutils.tiny.corpus import all_prompts, answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(0)
    rows = [{"prompt_id": r["prompt_id"], "prompt": r["prompt"],
             "all_generated_responses": [answer(rng, r["topic"]) for _ in range(5)]}
            for r in all_prompts()[: args.prompts]]
    t0 = time.perf_counter()
    ranker = load_ranker("tiny-pairrm", device="cpu")
    print(f"ranker load {time.perf_counter() - t0:.1f} s (once per stage)")
    prompts, cands = [r["prompt"] for r in rows], [r["all_generated_responses"] for r in rows]
    ranker.blender.rank(prompts[:4], cands[:4], return_scores=True, batch_size=4)  # warm-up
    comparisons = len(rows) * 5 * 4
    t0 = time.perf_counter()
    ranker.blender.rank(prompts, cands, return_scores=True, batch_size=args.batch_size, disable_tqdm=True)
    bare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as runs:
        values, _ = P.resolve(["params/tiny.yaml"], {"runs_dir": runs, "ranker_batch_size": args.batch_size,
                                                     "shard_size": 64})
        stage = stage_for("02_rerank", values)
        t0 = time.perf_counter()
        score_responses(stage, pd.DataFrame(rows), ranker, Path(runs) / "scores")
        workbook = time.perf_counter() - t0
    for name, secs in (("llm-blender rank()", bare), ("workbook stage 02", workbook)):
        print(f"{name:19} {secs:6.2f} s | {comparisons / secs:8.0f} comparisons/s "
              f"| {len(rows) / secs:6.1f} prompts/s  ({len(rows)} prompts x 5 responses)")
    print(f"overhead ratio workbook/bare: {workbook / bare:.2f}")


if __name__ == "__main__":
    main()
