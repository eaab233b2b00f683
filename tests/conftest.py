import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nbutils.files import REPO_ROOT

PRESETS = sorted((REPO_ROOT / "params").glob("*.yaml"))


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    """A runs folder of this test session (the ``runs_dir`` param)."""
    return tmp_path_factory.mktemp("runs")


def cli(*args, check=True, **kw):
    """``python -m nbutils ...`` in a subprocess, as a user types it."""
    proc = subprocess.run([sys.executable, "-m", "nbutils", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, **kw)
    if check and proc.returncode:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def params_args(**params):
    return [x for k, v in params.items() for x in ("-p", k, str(v))]


def read_generations(run_dir: Path, iteration: int = 1) -> pd.DataFrame:
    return pd.read_parquet(run_dir / f"iter_{iteration}" / "generations.parquet")


def metrics(run_dir: Path, iteration: int = 1) -> dict:
    return json.loads((run_dir / f"iter_{iteration}" / "metrics.json").read_text())


@pytest.fixture(scope="session")
def user_checkout(tmp_path_factory):
    """A copy of the workbook as a new user has it, importing its own nbutils;
    the tiny-model cache is shared so models are built once per test session."""
    import shutil
    root = tmp_path_factory.mktemp("checkout")
    for part in ("notebooks", "nbutils", "params"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root), "NBUTILS_CACHE": str(REPO_ROOT / ".cache")}
    return root, env


LOOP = dict(num_iterations=2, prompts_per_iteration=32, shard_size=16)


@pytest.fixture(scope="session")
def loop(runs_dir):
    """A whole tiny run, end to end through papermill: two iterations, the evaluation, the
    length analysis and the report (what the runner printed: ``loop.log``)."""
    proc = cli("run", "-f", "params/tiny.yaml", *params_args(runs_dir=runs_dir, run_name="loop", **LOOP))
    (runs_dir / "loop.log").write_text(proc.stdout)
    return runs_dir / "loop"


@pytest.fixture(scope="session")
def loop_lc(loop, runs_dir):
    """The tiny-lc preset over the same prompts, one iteration, compared with ``loop``."""
    cli("run", "-f", "params/tiny.yaml", "-f", "params/tiny-lc.yaml",
        *params_args(runs_dir=runs_dir, **{**LOOP, "num_iterations": 1, "run_name": "loop-lc", "compare_run": "loop"}))
    return runs_dir / "loop-lc"
