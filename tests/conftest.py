import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from nbutils.store.files import CACHE_DIR, REPO_ROOT

PRESETS = sorted((REPO_ROOT / "recipes").glob("*.yaml"))  # complete recipes (overlays: recipes/overlays/)


def pytest_configure(config):
    """`make test` runs the tests in 2 processes (pytest-xdist); each builds the session fixtures it
    needs. In such a worker: its own share of the cores, as a stage's worker has (nbutils.exec.placement):
    two processes with threads on every core slow each other down many times over."""
    from nbutils.exec import placement as parallel
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count:
        parallel.take_share(parallel.worker_envs([str(k) for k in range(int(count))], "cpu")[int(worker.removeprefix("gw"))])


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
    root = tmp_path_factory.mktemp("checkout")
    for part in ("notebooks", "nbutils", "params", "recipes", "requirements"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root), "NBUTILS_CACHE": str(REPO_ROOT / ".cache")}
    return root, env


def chromium() -> str:
    """Debian's Chromium, for Playwright (``make browser`` installs it; CI must have it)."""
    import shutil
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: make browser installs it")
        pytest.skip("needs Debian's chromium (make browser)")
    return path


LOOP = dict(num_iterations=2, prompts_per_iteration=32, shard_size=16, eval_instructions=48, best_of_n=4)


@pytest.fixture(scope="session")
def loop(runs_dir):
    """A whole tiny run, end to end through papermill: two iterations, the evaluation, the
    length analysis and the report (what the runner printed: ``loop.log``)."""
    proc = cli("run", "-f", "recipes/tiny.yaml", *params_args(runs_dir=runs_dir, run_name="loop", **LOOP))
    (runs_dir / "loop.log").write_text(proc.stdout)
    return runs_dir / "loop"


@pytest.fixture(scope="session")
def loop_lc(loop, runs_dir):
    """The tiny-lc preset over the same prompts, one iteration, compared with ``loop``. It starts from a
    copy of ``loop``'s iteration 1, as a user saves stage 01 (its samples are the same): stage 01 is done,
    02 reruns (its params changed) and keeps PairRM's scores, 03 reruns on the new pairs (``loop-lc.log``)."""
    shutil.copytree(loop / "iter_1", runs_dir / "loop-lc" / "iter_1")
    proc = cli("run", "-f", "recipes/tiny.yaml", "-f", "recipes/tiny-lc.yaml",
               *params_args(runs_dir=runs_dir, **{**LOOP, "num_iterations": 1, "run_name": "loop-lc", "compare_run": "loop"}))
    (runs_dir / "loop-lc.log").write_text(proc.stdout)
    return runs_dir / "loop-lc"


@pytest.fixture(scope="session")
def hub_twins(tmp_path_factory):
    """The hub twins (``nbutils.twins.build``) served by olah on 127.0.0.1 (``nbutils.twins.mirror``), alpaca_eval's
    GitHub ``results/`` twin (``nbutils.twins.github``), and the environment a client needs to reach them:
    ``HF_ENDPOINT``, ``NBUTILS_GITHUB_RAW``, a fresh ``HF_HOME`` and ``NBUTILS_CACHE`` (the tiny models
    linked in), no token, and a dead proxy for every other host, so a request that would leave this machine
    fails instead."""
    from nbutils.twins import build as hub_twins
    from nbutils.twins import github as github_twin
    from nbutils.twins import mirror as hub_mirror
    root = tmp_path_factory.mktemp("hub")
    hub_twins.build(root)
    with hub_mirror.serve(root) as endpoint, github_twin.serve(github_twin.build(root)) as raw:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
        (root / "cache").mkdir()
        (CACHE_DIR / "tiny").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "tiny").symlink_to(CACHE_DIR / "tiny", target_is_directory=True)
        env.update(HF_ENDPOINT=endpoint, NBUTILS_GITHUB_RAW=raw, NBUTILS_CACHE=str(root / "cache"), HF_HOME=str(root / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                   http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        yield SimpleNamespace(env=env, root=root, hf_home=root / "hf-home")


TWIN_SIZES = "tests/fixtures/twin-sizes.yaml"


def twin_run(hub_twins, runs_dir, *args) -> subprocess.CompletedProcess:
    """``python -m nbutils run <args> -f twin-sizes.yaml`` against the hub twins."""
    return cli("run", *args, "-f", TWIN_SIZES, "-p", "runs_dir", str(runs_dir), env=hub_twins.env)


@pytest.fixture(scope="session")
def twin_snorkel(hub_twins, runs_dir):
    """recipes/snorkel.yaml through all five stages on the twins (sizes only changed)."""
    proc = twin_run(hub_twins, runs_dir, "-f", "recipes/snorkel.yaml")
    (runs_dir / "twin-snorkel.log").write_text(proc.stdout + proc.stderr)
    return runs_dir / "snorkel"
