"""Stage 01 end to end on the tiny preset, through papermill, with both backends."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from nbutils.store.files import REPO_ROOT
from nbutils.generate.sampling import SCHEMA, summarize
from tests.conftest import cli, metrics, params_args, read_generations

pytestmark = pytest.mark.slow
NB = str(REPO_ROOT / "notebooks" / "01_generate.ipynb")


def run_tiny(runs_dir, run_name, **params):
    return cli("run", "-f", "recipes/tiny.yaml", "--iterations", "1", "--stages", "01_generate",
               *params_args(runs_dir=runs_dir, run_name=run_name, **params))


@pytest.fixture(scope="module")
def vllm_run(runs_dir):
    run_tiny(runs_dir, "vllm", backend="vllm", prompts_per_iteration=64, shard_size=2)
    return runs_dir / "vllm"


@pytest.fixture(scope="module")
def hf_run(runs_dir):
    run_tiny(runs_dir, "hf", backend="hf", prompts_per_iteration=48, shard_size=4)
    return runs_dir / "hf"


def check_generations(run_dir, backend, prompts):
    df = read_generations(run_dir)
    assert list(df.columns) == SCHEMA and len(df) == prompts
    assert (df["backend"] == backend).all() and df["prompt_id"].is_unique
    assert all(len(r) == 5 for r in df["all_generated_responses"])
    assert all(len(t) == 5 for t in df["response_num_tokens"])
    responses = df["all_generated_responses"].explode()
    assert responses.str.len().gt(0).mean() > 0.95
    assert not responses.str.contains(r"</s>|\[INST\]|<pad>").any()  # special tokens stripped
    assert responses.groupby(level=0).nunique().gt(1).mean() > 0.9  # the 5 answers differ
    m = metrics(run_dir)["01_generate"]
    assert m["backend"] == backend and m["prompts"] == prompts and m["responses"] == 5 * prompts
    assert (run_dir / "iter_1" / "01_generate.ipynb").exists()  # the executed notebook, beside
    assert (run_dir / "iter_1" / "01_response_lengths.png").stat().st_size > 5000
    assert (run_dir / "config.json").exists()
    return df


def test_vllm_backend_writes_the_schema(vllm_run):
    check_generations(vllm_run, "vllm", 64)


def test_hf_backend_writes_the_same_schema(hf_run, vllm_run):
    hf, vllm = check_generations(hf_run, "hf", 48), read_generations(vllm_run)
    assert (hf.dtypes == vllm.dtypes).all()
    assert set(hf["prompt_id"]) <= set(vllm["prompt_id"])  # same prompt subset for iteration 1


def test_rerun_skips_finished_work(hf_run, runs_dir):
    out = hf_run / "iter_1" / "generations.parquet"
    before = out.stat().st_mtime_ns
    proc = run_tiny(runs_dir, "hf", backend="hf", prompts_per_iteration=48, shard_size=4)
    assert "skipped" in proc.stdout and out.stat().st_mtime_ns == before


def test_answers_cut_at_max_new_tokens_are_counted(runs_dir):
    """(A changed param reruns the stage: tests/test_faults.py.)"""
    run_tiny(runs_dir, "short", backend="hf", prompts_per_iteration=8, shard_size=8, max_new_tokens=6)
    first = read_generations(runs_dir / "short")
    m = metrics(runs_dir / "short")["01_generate"]
    assert m["truncated_responses"] > 0 and "length" in set(first["finish_reasons"].explode())
    assert first["max_new_tokens"].eq(6).all()


def marked(marker: str) -> list[str]:
    """The processes whose environment carries ``marker`` (a run started with it, and its descendants)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(f"{environ.parent.name}: {(environ.parent / 'cmdline').read_bytes()[:120]!r}")
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


def test_a_killed_runner_leaves_no_process_and_resumes_to_the_same_rows(vllm_run, user_checkout, tmp_path):
    """From a second checkout (its own nbutils, a relative runs_dir, no PYTHONPATH), SIGKILL the
    runner alone once the sampling worker has written its first shard (it waits there:
    ``NBUTILS_TEST_PAUSE``): its kernel, the worker and vLLM's engine die with it; no file is ever
    half-written under its final name; the rerun resumes in this checkout's runs/ to the rows of an
    uninterrupted run."""
    root, env = user_checkout
    marker, gate = f"killed-runner-{os.getpid()}", tmp_path / "gate"
    gate.mkdir()
    env = {**{k: v for k, v in env.items() if k != "PYTHONPATH"}, "NBUTILS_TEST_MARK": marker}
    args = [sys.executable, "-m", "nbutils", "run", "-f", "recipes/tiny.yaml", "--iterations", "1", "--stages",
            "01_generate", *params_args(runs_dir="runs", run_name="killed", prompts_per_iteration=64, shard_size=2)]
    proc = subprocess.Popen(args, cwd=root, env={**env, "NBUTILS_TEST_PAUSE": f"1:{gate}"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = root / "runs" / "killed" / "iter_1" / "generations.parquet.shards"
    deadline = time.time() + 300
    while not list(gate.glob("paused-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(gate.glob("paused-*")), "the worker never paused after its first shard (run it by hand)"
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while marked(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert not marked(marker), "processes outlived the killed runner"
    done = sorted(shards.glob("shard-*.parquet"))
    assert len(done) == 1 and len(pd.read_parquet(done[0])) == 2  # whole under its final name
    assert not (shards.parent / "generations.parquet").exists()
    subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
    assert not (REPO_ROOT / "runs" / "killed").exists(), "the kernel wrote into another checkout"
    run = root / "runs" / "killed"
    assert metrics(run)["01_generate"]["shards_resumed"] == len(done)
    # each shard's seed: the unfinished shard redone draws the uninterrupted run's answers
    answers = lambda r: read_generations(r).set_index("prompt_id")["all_generated_responses"].map(list)  # noqa: E731
    pd.testing.assert_series_equal(answers(run), answers(vllm_run))


def test_notebook_runs_as_a_user_opens_it(user_checkout, vllm_run, tmp_path):
    """papermill with no parameters at all: the tiny preset, vLLM, in a fresh checkout."""
    root, env = user_checkout
    subprocess.run([sys.executable, "-m", "papermill", str(root / "notebooks" / "01_generate.ipynb"),
                    str(tmp_path / "out.ipynb"), "--cwd", str(root / "notebooks")],
                   env=env, check=True, capture_output=True)
    df = pd.read_parquet(root / "runs" / "tiny" / "iter_1" / "generations.parquet")
    assert len(df) == 64 and (df["backend"] == "vllm").all()
    assert set(read_generations(vllm_run)["prompt_id"]) == set(df["prompt_id"])  # the preset's prompts


def test_seeds_per_request_draw_the_same_answers_whatever_the_sharding(tmp_path):
    """sampling_seeds: request (vLLM): a prompt's answers do not depend on its shard; with the
    default (one seed per shard, the engine reseeded) they do, and a shard is reproducible. All
    from one engine, in a child process as stage 04 runs them (an engine in the test process would
    count the test process's memory against its share)."""
    from nbutils.generate.backends import _LOADED
    from nbutils.generate.policies import base_model_path
    from nbutils.generate.prompts import iteration_prompts
    from nbutils.generate.sampling import generate_jobs
    from nbutils.run import params as P
    from nbutils.run.stage import stage_for

    values, _ = P.resolve(["recipes/tiny.yaml"], {"backend": "vllm", "max_new_tokens": 24, "runs_dir": str(tmp_path)})
    model = base_model_path(values["base_model"])
    prompts = iteration_prompts(values["prompts_dataset"], values["prompts_split"], 1, 8, 3)
    runs = [("request", 8, "r8"), ("request", 2, "r2"), ("shard", 4, "s4"), ("shard", 4, "s4-again"),
            ("shard", 2, "s2")]
    jobs = [(stage_for("01_generate", {**values, "sampling_seeds": mode, "shard_size": size}).params,
             tmp_path / f"{name}.parquet") for mode, size, name in runs]
    results = generate_jobs(jobs, prompts, model)
    answers = {name: [list(r) for r in df["all_generated_responses"]] for (_, _, name), (df, _) in zip(runs, results)}
    for (mode, size, name), (df, _) in zip(runs, results):
        assert df["seed"].nunique() == (8 if mode == "request" else 8 // size), name
    assert answers["r8"] == answers["r2"]
    assert answers["s4"] == answers["s4-again"] and answers["s4"] != answers["s2"]
    # every shard done: the rerun reads them and starts no worker (vLLM's start costs minutes on a GPU)
    stage = stage_for("01_generate", {**values, "shard_size": 4})
    df, stats = generate_jobs([(stage.params, tmp_path / "s4.parquet")], prompts, model)[0]
    assert not _LOADED and stats["shards_resumed"] == 2 and stats["load_seconds"] == 0
    assert not (tmp_path / "s4.worker-0.log").exists()
    assert [list(r) for r in df["all_generated_responses"]] == answers["s4"]


@pytest.mark.parametrize("params,needle", [
    ({"num_samples": 0}, "num_samples: must be at least 1"),
    ({"num_sample": 3}, "did you mean 'num_samples'"),
    ({"prompts_dataset": "nbutils/data/missing.jsonl"}, "no such file"),
])
def test_notebook_refuses_bad_params_before_loading_a_model(params, needle, tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(NB, str(tmp_path / "out.ipynb"), cwd=str(REPO_ROOT / "notebooks"),
                            parameters={"runs_dir": str(tmp_path), **params}, progress_bar=False)
    assert needle in str(e.value) and "ParamsError" in str(e.value)
    assert not list(tmp_path.rglob("generations*"))


def test_empty_and_truncated_are_counted():
    df = pd.DataFrame({"all_generated_responses": [["a b", "", " "], ["c", "d", "e"]],
                       "finish_reasons": [["stop", "stop", "length"], ["length"] * 3],
                       "response_num_tokens": [[2, 0, 0], [1, 1, 1]]})
    s = summarize(df)
    assert (s["empty_responses"], s["truncated_responses"], s["responses"]) == (2, 4, 6)
    assert (s["truncated_fraction"], s["mean_response_tokens"]) == (round(4 / 6, 4), round(5 / 6, 1))


def test_rerunning_a_cell_reuses_the_loaded_engine():
    from nbutils.run import params as P
    from nbutils.generate.backends import load_backend
    from nbutils.generate.policies import base_model_path

    values, _ = P.resolve(["recipes/tiny.yaml"], {"backend": "hf"})
    model = base_model_path(values["base_model"])
    first = load_backend(model, values)
    again = load_backend(model, {**values, "temperature": 1.0})
    assert again is first and again.p["temperature"] == 1.0
    assert load_backend(model, {**values, "dtype": "bfloat16"}) is not first
