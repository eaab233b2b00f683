"""Side-by-side timing for the benchmarks: two variants of one piece of work, in one process.

    from abba import compare
    times = compare({"padded": run_a, "bucketed": run_b}, repeats=5, same=lambda a, b: a == b)

Each variant runs once untimed (warm-up: imports, caches, allocator), then ``repeats`` rounds in
alternating order (A B, B A, A B, ...), so drift and warm-up fall on both alike. Every timed run's
result must equal that variant's warm-up result (``same``) and, where ``agree`` is given, the
variants' results must agree with each other. The torch thread count is fixed (``threads``).
Prints each variant's median time with its spread (min to max) and the median of the per-round
ratios B/A with theirs; returns {name: [seconds, ...]}.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def fix_threads(threads: int) -> int:
    import torch
    torch.set_num_threads(threads)
    return threads


def compare(variants: dict[str, Callable[[], Any]], repeats: int = 5, threads: int = 2,
            same: Callable[[Any, Any], bool] = lambda a, b: a == b,
            agree: Callable[[Any, Any], bool] | None = None, work: float | None = None,
            unit: str = "items") -> dict[str, list[float]]:
    """Time two variants ABBA; ``work``: items per run, to print a rate in ``unit``/s."""
    if len(variants) != 2 or repeats < 1:
        raise ValueError("compare() takes two variants and at least one repeat")
    fix_threads(threads)
    (a, run_a), (b, run_b) = variants.items()
    warm = {a: run_a(), b: run_b()}
    if agree is not None and not agree(warm[a], warm[b]):
        raise AssertionError(f"{a} and {b} give different results: the comparison would be meaningless")
    times: dict[str, list[float]] = {a: [], b: []}
    for r in range(repeats):
        for name in ((a, b) if r % 2 == 0 else (b, a)):
            t0 = time.perf_counter()
            out = variants[name]()
            times[name].append(time.perf_counter() - t0)
            if not same(out, warm[name]):
                raise AssertionError(f"{name}: round {r + 1} gave another result than its warm-up run")
    report(times, work, unit, threads)
    return times


def report(times: dict[str, list[float]], work: float | None, unit: str, threads: int) -> None:
    (a, ta), (b, tb) = times.items()
    print(f"{len(ta)} rounds, alternating order, {threads} torch threads, after an untimed warm-up of each")
    for name, ts in times.items():
        rate = f" | {work / statistics.median(ts):10.1f} {unit}/s" if work else ""
        print(f"  {name:>24}: median {statistics.median(ts):8.3f} s (min {min(ts):.3f}, max {max(ts):.3f}){rate}")
    ratios = [x / y for x, y in zip(tb, ta)]
    print(f"  ratio {b}/{a} time: median {statistics.median(ratios):.2f} (rounds {min(ratios):.2f} to "
          f"{max(ratios):.2f}); speedup {a}->{b}: {1 / statistics.median(ratios):.2f}x")
