"""Generation throughput, side by side in one process (benchmarks/abba.py): vLLM with a seed per
request vs one seed per shard (``sampling_seeds``); vLLM vs transformers ``generate``; the stage
over the raw engine; and what a stage-01 child waits for on the CPU: a fresh process that starts a
vLLM engine and samples, compiled with 0.3 of the RAM for its KV cache (the tiny preset before) vs
``enforce_eager`` with 0.1 (the tiny preset now), which must draw the same tokens.

    .venv/bin/python benchmarks/generation.py [--prompts 64] [--max-new-tokens 96] [--repeats 5]
    .venv/bin/python benchmarks/generation.py --smoke   # the same code path at a tiny size (CI)

The tiny policy, the tiny preset's sampling (n=5, temperature 0.7, top-p 0.9). Seeded vs shard:
every answer runs to max_new_tokens (``ignore_eos``), so both variants do the same work; each
variant must draw the same answers every round (reproducible), and both the same token counts.
``--smoke``: 2 prompts x 4 new tokens, 1 timed round, every section on the same code path; to stay
short, this process's engine is eager (section 4's children still start a compiled one and an eager
one) and section 4 has no warm-up round (each child starts once). A child that fails shows its
stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from abba import compare, run_child

from nbutils.generate.backends import load_backend
from nbutils.generate.policies import base_model_path
from nbutils.generate.prompts import iteration_prompts
from nbutils.generate.sampling import chat_prompt_ids, kept_prompts, sample_shards, shard_fingerprint
from nbutils.store.shards import pending_shards, read_shards
from nbutils.store.ids import derive_seed
from nbutils.logs import quiet
from nbutils.run import params as P
from nbutils.run.stage import stage_for


def texts(samples) -> list[list[str]]:
    return [[s.text for s in ss] for ss in samples]


def tokens(samples) -> int:
    return sum(s.num_tokens for ss in samples for s in ss)


SMOKE = {"prompts": 2, "max_new_tokens": 4, "repeats": 1}
ENGINES = {"compiled, 0.3 of RAM": {"enforce_eager": False, "gpu_memory_utilization": 0.3},
           "eager, 0.1 of RAM": {"enforce_eager": True, "gpu_memory_utilization": 0.1}}


def engine_child(name: str, prompts: int, max_new_tokens: int) -> None:
    """In a fresh process: start an engine as stage 01's child does and sample one shard; print a hash of
    the drawn tokens."""
    quiet()
    values, _ = P.resolve(["recipes/tiny.yaml"], {"max_new_tokens": max_new_tokens, "backend": "vllm", **ENGINES[name]})
    model = base_model_path(values["base_model"])
    prompts_ = iteration_prompts(values["prompts_dataset"], values["prompts_split"], 1, prompts, values["num_iterations"])
    engine = load_backend(model, values)
    samples = engine.generate(chat_prompt_ids(engine.tokenizer, prompts_["prompt"]), [values["seed"]] * prompts)
    print(hashlib.sha256(json.dumps(texts(samples)).encode()).hexdigest())


def child(name: str, args) -> str:
    out = run_child([sys.executable, __file__, "--engine-child", name, "--prompts", str(args.prompts),
                     "--max-new-tokens", str(args.max_new_tokens)], f"4. {name}")  # its stderr if it fails
    return out.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="the same code path at a tiny size (CI): "
                    + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    ap.add_argument("--engine-child", choices=list(ENGINES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    if args.engine_child:
        return engine_child(args.engine_child, args.prompts, args.max_new_tokens)
    quiet()
    values, _ = P.resolve(["recipes/tiny.yaml"], {"prompts_per_iteration": args.prompts,
                                                 "max_new_tokens": args.max_new_tokens, "shard_size": args.prompts})
    model = base_model_path(values["base_model"])
    prompts = iteration_prompts(values["prompts_dataset"], values["prompts_split"], 1, args.prompts,
                                values["num_iterations"])
    # decoding as on a GPU: compiled (--smoke: eager, ~10 s less to start; section 4 starts a compiled one)
    vllm = load_backend(model, {**values, "backend": "vllm", "enforce_eager": args.smoke})
    ids = chat_prompt_ids(vllm.tokenizer, prompts["prompt"])
    per_prompt = [derive_seed(values["seed"], i) for i in range(len(ids))]
    work = len(ids) * values["num_samples"] * args.max_new_tokens
    print(f"tiny policy, {len(ids)} prompts x {values['num_samples']} samples x {args.max_new_tokens} new tokens "
          f"(ignore_eos): {work} tokens a run")

    print("\n1. vLLM sampling seeds: one per request vs one per shard (sampling_seeds: request / shard)")
    compare({"seed per request": lambda: texts(vllm.generate(ids, per_prompt, per_request=True, ignore_eos=True)),
             "seed per shard": lambda: texts(vllm.generate(ids, [per_prompt[0]] * len(ids), ignore_eos=True))},
            repeats=args.repeats, work=work, unit="tok",
            agree=lambda a, b: [len(x) for x in a] == [len(x) for x in b])

    print("\n2. vLLM vs transformers generate (natural stops; each reproducible; tokens/s of what each drew)")
    hf = load_backend(model, {**values, "backend": "hf"})
    drawn = {}

    def run(name, backend):
        out = backend.generate(ids, [per_prompt[0]] * len(ids))
        drawn[name] = tokens(out)
        return texts(out)
    times = compare({"transformers": lambda: run("transformers", hf), "vLLM": lambda: run("vLLM", vllm)},
                    repeats=args.repeats)
    import statistics
    rates = {n: drawn[n] / statistics.median(t) for n, t in times.items()}
    print(f"  tokens/s: transformers {rates['transformers']:.0f}, vLLM {rates['vLLM']:.0f}; "
          f"ratio vLLM/transformers {rates['vLLM'] / rates['transformers']:.2f}")

    print("\n3. stage 01 (shards, parquet, stats) vs the bare engine on the same shard seed")
    seed = derive_seed(values["seed"], 1, "shard", 0)
    with tempfile.TemporaryDirectory() as runs:
        stage = stage_for("01_generate", {**values, "backend": "vllm", "runs_dir": runs, "run_name": "bench"})
        count = iter(range(10**6))

        def staged():
            out = Path(runs) / f"g{next(count)}.parquet"
            rows = prompts.to_list()  # a worker's part of stage 01 (sample_shards), here with the loaded engine
            keep = kept_prompts(stage.params, vllm.tokenizer, rows)[1]
            todo = pending_shards(len(keep), stage["shard_size"], f"{out}.shards",
                                  shard_fingerprint(stage.params, model, rows, keep))
            sample_shards(stage.params, rows, model, out, todo, backend=vllm)
            df = read_shards(len(keep), stage["shard_size"], f"{out}.shards")
            return [list(r) for r in df["all_generated_responses"]]
        compare({"bare engine": lambda: texts(vllm.generate(ids, [seed] * len(ids))), "stage 01": staged},
                repeats=args.repeats, agree=lambda a, b: a == b)

    print("\n4. a stage-01 child on the CPU: start a process and an engine, sample the prompts once "
          "(compiled at 0.3 of RAM vs enforce_eager at 0.1; the same tokens)")
    compare({name: (lambda name=name: child(name, args)) for name in ENGINES}, repeats=args.repeats,
            agree=lambda a, b: a == b, warmup=not args.smoke)


if __name__ == "__main__":
    main()
