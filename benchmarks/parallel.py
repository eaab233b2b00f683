"""Stages 01 and 02 over two worker processes vs one (``devices: 2`` vs ``1``): wall time of the stage.

    .venv/bin/python benchmarks/parallel.py [--prompts 64] [--rounds 1] [--skip-generation] [--skip-ranking]
    .venv/bin/python benchmarks/parallel.py --smoke   # the same code path at a tiny size (CI)

What a user waits for, on this machine: stage 01's sampling as the notebook calls it
(``generate``: the workers start, import torch, load the engine, sample, and the output is
assembled) and stage 02's scoring (``score_responses``: the workers start and each loads its own
ranker and scores its shards). With ``devices: 1`` as with 2 the work runs in worker processes
(``nbutils.exec.processes``), never in this one. The tiny preset's work: the tiny policy, vLLM,
``--prompts`` prompts x 5 answers of up to ``--max-new-tokens`` (96) tokens in shards of
``--shard-size`` (16), then the tiny PairRM on those answers. Every run writes a fresh folder (a
finished shard would be resumed, not redone), and the variants' outputs must be identical (stage
01's rows, stage 02's scores). Printed: each run's wall time, the engines' part of it, and the ratio
two workers / one. A worker that fails shows the tail of its log here.

On the CPU a worker is a process bound to its share of the cores (``nbutils.exec.placement.worker_envs``):
on 2 cores, one core and one thread each, against one process with two threads. On a machine that
other work shares, two threads of one process can wait on each other many times over (each OpenMP
pool waits for its slowest thread), so a third variant, one worker with one thread
(``OMP_NUM_THREADS=1``), separates what the second process brings from what one thread each avoids.
The tiny models' work takes seconds, beside what each worker pays to start (a fresh interpreter,
torch, an engine, torch.compile); on GPUs, with real models, the work dominates and the ratio
approaches 1 / devices. ``--rounds`` > 1 alternates the order.

``--smoke``: 4 prompts x 5 answers of up to 8 tokens in shards of 2 (both workers get a shard), one
round, the variants one worker and two workers only (the third would start one more engine and
ranker on the same code).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from nbutils.exec.processes import worker_log
from nbutils.generate.policies import base_model_path
from nbutils.generate.prompts import iteration_prompts
from nbutils.generate.sampling import generate
from nbutils.logs import quiet
from nbutils.rerank.ranking import score_responses
from nbutils.run import params as P
from nbutils.run.stage import stage_for


SMOKE = {"prompts": 4, "max_new_tokens": 8, "shard_size": 2, "rounds": 1}
VARIANTS = {"one worker": (1, None), "two workers": (2, None), "one worker, 1 thread": (1, 1)}


def order(names: list[str], rounds: int) -> list[str]:
    return [n for r in range(rounds) for n in (names if r % 2 == 0 else names[::-1])]


@contextlib.contextmanager
def threads(n: int | None):
    """``n`` torch threads here and ``OMP_NUM_THREADS=n`` for the children started meanwhile, and this
    process on its first ``n`` cores: a worker's share of the cores, and its ``OMP_NUM_THREADS``, are
    cut from this process's cores (``nbutils.exec.placement.worker_envs``), whatever the environment says."""
    import torch
    saved, before = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if n:
        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)
        if cores:
            os.sched_setaffinity(0, sorted(cores)[:n])
    try:
        yield
    finally:
        if n and cores:
            os.sched_setaffinity(0, cores)
        torch.set_num_threads(before)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


@contextlib.contextmanager
def logs_on_failure(stem: Path, workers: int):
    """If the stage fails, the tail of each worker's log (its stderr and stdout) on this terminal: the
    error names the logs, but they lie in this run's temporary folder, which goes with the error."""
    try:
        yield
    except BaseException:
        for k in range(workers):
            if (log := worker_log(stem, k)).exists():
                print(f"--- worker {k}'s log {log.name} (tail) ---\n{log.read_text(errors='replace')[-4000:]}",
                      file=sys.stderr, flush=True)
        raise


def report(stage: str, times: dict[str, list[float]], parts: dict[str, list[float]], part: str) -> None:
    med = {n: statistics.median(t) for n, t in times.items()}
    for n in times:
        print(f"  {n:>21}: wall {med[n]:7.2f} s (runs {', '.join(f'{t:.2f}' for t in times[n])}); "
              f"{part} {statistics.median(parts[n]):.2f} s")
    for base in [n for n in ("one worker", "one worker, 1 thread") if n in times]:
        ratio = med["two workers"] / med[base]
        print(f"  {stage}: ratio two workers / {base}, wall time: {ratio:.2f} (speedup {1 / ratio:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="runs of each variant, in alternating order")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--skip-ranking", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="the same code path at a tiny size (CI): "
                    + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items()))
    args = ap.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    names = [n for n in VARIANTS if not (args.smoke and n == "one worker, 1 thread")]
    quiet()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; the tiny preset, {args.prompts} prompts x 5 answers (up to {args.max_new_tokens} "
          f"tokens), shards of {args.shard_size}, vLLM then the tiny PairRM; {args.rounds} run(s) of each variant")
    with tempfile.TemporaryDirectory() as runs:
        values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": runs, "backend": "vllm",
                                                     "max_new_tokens": args.max_new_tokens,
                                                     "shard_size": args.shard_size,
                                                     "gpu_memory_utilization": 0.1})  # two engines at once
        model = base_model_path(values["base_model"])
        prompts = iteration_prompts(values["prompts_dataset"], values["prompts_split"], 1, args.prompts,
                                    values["num_iterations"])
        root, outputs = Path(runs), {}
        if not args.skip_generation:
            print("\nstage 01: generate (the engine's load, sampling, the output), devices 1 vs 2")
            times, engine = {n: [] for n in names}, {n: [] for n in names}
            for i, name in enumerate(order(names, args.rounds)):
                devices, n = VARIANTS[name]
                params = stage_for("01_generate", {**values, "devices": devices}).params
                t0 = time.perf_counter()
                out = root / f"g{i}" / "generations.parquet"
                with threads(n), logs_on_failure(out, devices), contextlib.redirect_stderr(io.StringIO()):  # the bar
                    df, stats = generate(params, prompts, model, out)
                times[name].append(time.perf_counter() - t0)
                engine[name].append(stats["engine_seconds"])
                if outputs.setdefault("generations", df) is not df:
                    pd.testing.assert_frame_equal(df, outputs["generations"])  # the same rows, whoever drew them
            report("stage 01", times, engine, "sampling (the longest worker's)")
        if not args.skip_ranking:
            print("\nstage 02: score_responses (the workers' start, the ranker's load and scoring), devices 1 vs 2")
            if "generations" not in outputs:
                out = root / "g" / "generations.parquet"
                with logs_on_failure(out, 1), contextlib.redirect_stderr(io.StringIO()):
                    outputs["generations"], _ = generate(stage_for("01_generate", values).params, prompts, model, out)
            times, ranker_s, scores = {n: [] for n in names}, {n: [] for n in names}, None
            for i, name in enumerate(order(names, args.rounds)):
                devices, n = VARIANTS[name]
                stage = stage_for("02_rerank", {**values, "devices": devices})
                t0 = time.perf_counter()
                with threads(n), logs_on_failure(root / f"s{i}", devices), contextlib.redirect_stderr(io.StringIO()):
                    got, stats = score_responses(stage, outputs["generations"], root / f"s{i}")
                times[name].append(time.perf_counter() - t0)
                ranker_s[name].append(stats["ranker_seconds"])
                if scores is not None and got != scores:
                    raise AssertionError(f"{name} scored otherwise")
                scores = got
            report("stage 02", times, ranker_s, "scoring (the longest worker's)")
    print(f"\nload average (1 min) at the start {load:.2f}, at the end {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores: other processes' work skews the times")


if __name__ == "__main__":
    main()
