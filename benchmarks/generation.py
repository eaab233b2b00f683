"""Generation throughput: vLLM vs transformers generate on the same tiny model,
and the workbook's stage overhead over the raw engine.

    .venv/bin/python benchmarks/generation.py [--prompts 64] [--max-new-tokens 96]

Prints new tokens/s of each backend, the vLLM/HF ratio, and for the vLLM stage
its wall time against the engine's own time (model load counted separately).
"""
from __future__ import annotations

import argparse
import tempfile
import time

from nbutils.run import params as P
from nbutils.generate.backends import load_backend
from nbutils.ids import derive_seed
from nbutils.generate.policies import base_model_path
from nbutils.generate.prompts import iteration_prompts
from nbutils.generate.sampling import chat_prompt_ids, generate_responses
from nbutils.run.stage import stage_for


def measure(backend, ids, p) -> tuple[float, int]:
    backend.generate(ids[:2], [0, 1])  # warm-up
    seeds = [derive_seed(p["seed"], i) for i in range(len(ids))]
    t0 = time.perf_counter()
    samples = backend.generate(ids, seeds)
    secs = time.perf_counter() - t0
    return secs, sum(s.num_tokens for ss in samples for s in ss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        values, _ = P.resolve(["params/tiny.yaml"], {
            "prompts_per_iteration": args.prompts, "max_new_tokens": args.max_new_tokens,
            "runs_dir": runs, "run_name": "bench", "shard_size": args.prompts})
        model = base_model_path(values["base_model"])
        prompts = iteration_prompts(values["prompts_dataset"], values["prompts_split"], 1,
                                    args.prompts, values["num_iterations"])
        rows = {}
        for name in ("hf", "vllm"):
            p = {**values, "backend": name}
            t0 = time.perf_counter()
            backend = load_backend(model, p)
            load_s = time.perf_counter() - t0
            ids = chat_prompt_ids(backend.tokenizer, prompts["prompt"])
            secs, tokens = measure(backend, ids, p)
            rows[name] = dict(load_s=load_s, secs=secs, tokens=tokens, tps=tokens / secs)
            print(f"{name:5} load {load_s:6.1f} s | {tokens:6d} new tokens in {secs:6.2f} s "
                  f"| {tokens / secs:8.0f} tok/s  ({args.prompts} prompts x 5, "
                  f"max {args.max_new_tokens} new tokens)")
        print(f"ratio vLLM/HF tokens/s: {rows['vllm']['tps'] / rows['hf']['tps']:.2f}")
        stage = stage_for("01_generate", {**values, "backend": "vllm"})
        t0 = time.perf_counter()
        _, stats = generate_responses(stage, prompts, model, stage.iter_dir / "g.parquet", backend)
        wall = time.perf_counter() - t0
        print(f"vllm stage (warm engine): wall {wall:.2f} s, raw engine {stats['engine_seconds']:.2f} s, "
              f"ratio stage/engine {wall / stats['engine_seconds']:.2f} "
              f"(+ model load {rows['vllm']['load_s']:.1f} s once per stage)")


if __name__ == "__main__":
    main()
