"""Side-by-side timing for the benchmarks: two variants of one piece of work, in one process.

    from abba import compare
    times = compare({"padded": run_a, "bucketed": run_b}, repeats=5, same=lambda a, b: a == b)

Each variant runs once untimed (warm-up: imports, caches, allocator), then ``repeats`` rounds in
alternating order (A B, B A, A B, ...), so drift and warm-up fall on both alike. Every timed run's
result must equal that variant's warm-up result (``same``) and, where ``agree`` is given, the
variants' results must agree with each other. The torch thread count is fixed (``threads``).
Prints each variant's median time with its spread (min to max) and the median of the per-round
ratios B/A with theirs; returns {name: [seconds, ...]}. ``repeats=1`` (the scripts' ``--smoke``) is
one timed round after the warm-ups; ``warmup=False`` (a smoke run of variants that each start a
process) skips the warm-ups: the first round's results are then the ones the others must equal.

``run_child(cmd, what)``: a benchmark's child process; its stdout, or, when it fails, the tail of
its stderr printed here before the benchmark stops (exit status 1).
"""
from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Callable


def run_child(cmd: list[str], what: str, tail: int = 6000) -> str:
    """Run ``cmd`` (output captured); return its stdout. If it fails, print the last ``tail``
    characters of its stderr (and of its stdout, if any) to this process's stderr and exit 1."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        out = f"\n--- its stdout (tail) ---\n{proc.stdout[-2000:]}" if proc.stdout.strip() else ""
        print(f"{what}: the child process failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
              f"--- its stderr (tail) ---\n{proc.stderr[-tail:]}{out}", file=sys.stderr, flush=True)
        sys.exit(1)
    return proc.stdout


def fix_threads(threads: int) -> int:
    import torch
    torch.set_num_threads(threads)
    return threads


def compare(variants: dict[str, Callable[[], Any]], repeats: int = 5, threads: int = 2,
            same: Callable[[Any, Any], bool] = lambda a, b: a == b,
            agree: Callable[[Any, Any], bool] | None = None, work: float | None = None,
            unit: str = "items", warmup: bool = True) -> dict[str, list[float]]:
    """Time two variants ABBA; ``work``: items per run, to print a rate in ``unit``/s."""
    if len(variants) != 2 or repeats < 1:
        raise ValueError("compare() takes two variants and at least one repeat")
    fix_threads(threads)
    (a, run_a), (b, run_b) = variants.items()
    warm = {a: run_a(), b: run_b()} if warmup else {}
    if warm and agree is not None and not agree(warm[a], warm[b]):
        raise AssertionError(f"{a} and {b} give different results: the comparison would be meaningless")
    times: dict[str, list[float]] = {a: [], b: []}
    for r in range(repeats):
        for name in ((a, b) if r % 2 == 0 else (b, a)):
            t0 = time.perf_counter()
            out = variants[name]()
            times[name].append(time.perf_counter() - t0)
            if name not in warm:  # no warm-up: the first round is the reference
                warm[name] = out
            elif not same(out, warm[name]):
                raise AssertionError(f"{name}: round {r + 1} gave another result than its "
                                     f"{'warm-up run' if warmup else 'first round'}")
        if r == 0 and not warmup and agree is not None and not agree(warm[a], warm[b]):
            raise AssertionError(f"{a} and {b} give different results: the comparison would be meaningless")
    report(times, work, unit, threads, warmup)
    return times


def report(times: dict[str, list[float]], work: float | None, unit: str, threads: int,
           warmup: bool = True) -> None:
    (a, ta), (b, tb) = times.items()
    print(f"{len(ta)} rounds, alternating order, {threads} torch threads, "
          + ("after an untimed warm-up of each" if warmup else "no warm-up (the first round includes it)"))
    for name, ts in times.items():
        rate = f" | {work / statistics.median(ts):10.1f} {unit}/s" if work else ""
        print(f"  {name:>24}: median {statistics.median(ts):8.3f} s (min {min(ts):.3f}, max {max(ts):.3f}){rate}")
    ratios = [x / y for x, y in zip(tb, ta)]
    print(f"  ratio {b}/{a} time: median {statistics.median(ratios):.2f} (rounds {min(ratios):.2f} to "
          f"{max(ratios):.2f}); speedup {a}->{b}: {1 / statistics.median(ratios):.2f}x")
