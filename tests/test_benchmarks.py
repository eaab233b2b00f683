"""Every script under benchmarks/ runs to the end with ``--smoke``: the same code path as ``make bench``
at a tiny size, so a refactor that breaks a benchmark fails here (issue 25: benchmarks that cannot rot).
Each must print the numbers it exists for (its ratio lines), not just exit 0."""
import math
import os
import re
import subprocess
import sys

import pytest

from nbutils.store.files import REPO_ROOT

NUMBER = r"(\d+\.\d+)"
RATIO = re.compile(rf"ratio (.+?) time: median {NUMBER} \(rounds {NUMBER} to {NUMBER}\)")  # abba.compare's line

# script: (abba ratio lines it prints, other lines with the numbers it exists for)
EXPECTED = {
    "generation": (4, [rf"tokens/s: transformers \d+, vLLM \d+; ratio vLLM/transformers {NUMBER}"]),
    "rerank": (2, [rf"timed runs: .* ratio bucketed/unbucketed {NUMBER}"]),
    "parallel": (0, [rf"stage 01: ratio two workers / one worker, wall time: {NUMBER}",
                     rf"stage 02: ratio two workers / one worker, wall time: {NUMBER}"]),
    "dpo_padding": (1, [rf"tokens computed group_by_length / random: {NUMBER}",
                        rf"recipe scale .*: group_by_length computes {NUMBER}x the tokens"]),
    "dpo_memory": (0, [rf"ratio {mode}/full: weights {NUMBER}, training peak {NUMBER}, step time {NUMBER}"
                       for mode in ("qlora", "lora")]),
}


def test_every_benchmark_is_here():
    scripts = {p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py")} - {"abba"}  # abba: their timing helper
    assert scripts == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_benchmark_smoke(name):
    proc = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--smoke"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{proc.stderr[-6000:]}"
    ratios, patterns = EXPECTED[name]
    found = RATIO.findall(out)
    assert len(found) == ratios, f"{len(found)} abba ratio lines, expected {ratios}:\n{out}"
    numbers = [float(x) for *_, median, lo, hi in found for x in (median, lo, hi)]
    for pattern in patterns:
        match = re.search(pattern, out)
        assert match, f"no line matching {pattern!r}:\n{out}"
        numbers += [float(x) for x in match.groups()]
    assert numbers and all(math.isfinite(x) and x > 0 for x in numbers), out
