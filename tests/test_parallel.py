"""Stages 01, 02 (and 04's sampling) over several worker processes (``devices``): the same output as
one worker, a killed worker stops the stage with one error, and the rerun ends with the same rows.

On the CPU a worker is a process (no GPU to give it): the tests check what the workers do, not
how fast (benchmarks/parallel.py). vLLM engines run in worker processes only, never in this one.
"""
import os
import re
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from nbutils.exec import placement as parallel
from nbutils.exec.processes import started, still_running
from nbutils.store.shards import read_shards
from nbutils.exec.processes import WorkerError, run_workers, worker_log

SIZES = dict(max_new_tokens=16, num_samples=2, gpu_memory_utilization=0.1)  # two engines at once on the CPU


def test_pending_shards_are_dealt_in_turn_and_devices_grouped():
    assert parallel.deal([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert parallel.deal([3, 7], 3) == [[3], [7], []]
    assert parallel.worker_devices(4) == ["0", "1", "2", "3"]
    assert parallel.worker_devices(4, 2) == ["0,1", "2,3"]
    assert parallel.workers_of({"devices": 8, "tensor_parallel_size": 8}) == ["0,1,2,3,4,5,6,7"]
    assert parallel.workers_of({}) == ["0"]
    with pytest.raises(ValueError, match="tensor_parallel_size: 3 does not divide devices"):
        parallel.worker_devices(4, 3)


def test_tensor_parallel_must_divide_the_attention_heads(tmp_path):
    (tmp_path / "config.json").write_text('{"num_attention_heads": 6}')
    parallel.check_tensor_parallel(str(tmp_path), 3)
    parallel.check_tensor_parallel(str(tmp_path / "no-config"), 4)  # nothing to check: vLLM says
    with pytest.raises(ValueError) as e:
        parallel.check_tensor_parallel(str(tmp_path), 4)
    assert all(w in str(e.value) for w in ("tensor_parallel_size: 4", "6 attention heads", str(tmp_path),
                                           "num_attention_heads", "[1, 2, 3, 6]"))
    (tmp_path / "config.json").write_text('{"text_config": {"num_attention_heads": 32}}')  # multimodal configs
    parallel.check_tensor_parallel(str(tmp_path), 8)
    with pytest.raises(ValueError, match="32 attention heads"):
        parallel.check_tensor_parallel(str(tmp_path), 3)


def _echo(x):
    return x, os.environ["CUDA_VISIBLE_DEVICES"]


def _cores(x):
    return os.sched_getaffinity(0), os.environ["OMP_NUM_THREADS"]


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not here")


def _fail_or_wait(x):
    if x == "fail":
        raise KeyError("no such prompt")
    if x == "odd":
        raise Unpicklable("an error of a class the parent cannot rebuild")
    time.sleep(120)


def test_a_failing_worker_stops_the_others_and_is_named(tmp_path):
    """The worker's own exception is raised here (a HubError stays one), noted with the worker, its
    devices, its log and what a rerun does; one that does not unpickle is a WorkerError with its text."""
    logs = [worker_log(tmp_path / "out.parquet", k) for k in range(2)]
    envs = [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert run_workers(_echo, [("a",), ("b",)], envs, logs) == [("a", "0,1"), ("b", "2,3")]
    t0 = time.time()
    with pytest.raises(KeyError, match="no such prompt") as e:
        run_workers(_fail_or_wait, [("wait",), ("fail",)], envs, logs, hint="Rerun it.", numbers=[3, 5])
    assert time.time() - t0 < 60, "the waiting worker was not stopped"
    notes = "\n".join(e.value.__notes__)
    assert "worker 5 (CUDA_VISIBLE_DEVICES=2,3) failed: KeyError: 'no such prompt'; the other workers were stopped" in notes
    assert str(logs[1]) in notes and "Rerun it." in notes and "_fail_or_wait" in notes
    assert "KeyError" in logs[1].read_text()  # the worker's traceback, in its log
    assert not [p for p in tmp_path.glob("*.pid")]
    with pytest.raises(WorkerError, match="worker 0 .* failed: Unpicklable: an error of a class") as e:
        run_workers(_fail_or_wait, [("odd",)], envs[:1], logs[:1])
    assert "the other workers" not in str(e.value)


def test_on_the_cpu_each_worker_takes_its_share_of_the_cores(tmp_path, monkeypatch):
    """Workers' threads on every core slow each other down many times over (each OpenMP pool waits
    for its slowest thread): on the CPU each worker is bound to cores of its own."""
    with monkeypatch.context() as m:
        m.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        assert parallel.worker_envs(["0", "1"], "cuda") == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
        m.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")  # the GPUs this process was given, not GPU 0 and 1
        assert parallel.worker_envs(["0", "1,2"], "cuda") == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5,7"}]
        with pytest.raises(ValueError, match="devices: 4, but CUDA_VISIBLE_DEVICES=3,5,7 shows 3 GPU"):
            parallel.worker_envs(parallel.worker_devices(4), "cuda")
        assert parallel.worker_envs(["0", "1"], "cpu")[1]["CUDA_VISIBLE_DEVICES"] == "1"  # on the CPU: a label only
    share = os.sched_getaffinity(0)  # make test gives each of its processes a share of the cores: here, all of them
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        cores, envs = os.sched_getaffinity(0), parallel.worker_envs(["0", "1"], "cpu")
        got = run_workers(_cores, [(0,), (1,)], envs, [worker_log(tmp_path / "x", k) for k in (0, 1)])
    finally:
        os.sched_setaffinity(0, share)
    for (affinity, threads), env in zip(got, envs):
        assert affinity == {int(c) for c in env[parallel.CPUS].split(",")} and threads == str(len(affinity))
    if len(cores) >= 2:
        assert not got[0][0] & got[1][0] and got[0][0] | got[1][0] == cores
    many = parallel.worker_envs([str(k) for k in range(len(cores) + 1)], "cpu")  # more workers than cores
    assert all(env["OMP_NUM_THREADS"] == "1" for env in many)


def stage_params(notebook, tmp_path, **overrides):
    from nbutils.run import params as P
    from nbutils.run.stage import stage_for
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(tmp_path), **SIZES, **overrides})
    return stage_for(notebook, values)


@pytest.fixture(scope="module")
def prompts():
    from nbutils.generate.prompts import iteration_prompts
    return iteration_prompts("nbutils/data/tiny_prompts.jsonl", "train", 1, 32, 3)


@pytest.fixture(scope="module")
def model():
    from nbutils.generate.policies import base_model_path
    return base_model_path("tiny-mistral")


def sampling_params(tmp_path, devices: int) -> dict:
    """The tiny preset's stage 01, cut small: 32 prompts in 16 shards of 2, 2 answers of up to 16 tokens."""
    return stage_params("01_generate", tmp_path, backend="vllm", shard_size=2, devices=devices).params


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, prompts, model):
    """One worker and two, vLLM: each with two jobs (stage 01's samples, and one answer per prompt
    at another temperature, as stage 04 draws them from one engine)."""
    from nbutils.generate.sampling import generate_jobs
    tmp = tmp_path_factory.mktemp("sampled")
    out = {}
    for devices in (1, 2):
        params = sampling_params(tmp, devices)
        jobs = [(params, tmp / f"d{devices}" / "generations.parquet"),
                ({**params, "iteration": 0, "num_samples": 1, "temperature": 1.0, "base_model": model},
                 tmp / f"d{devices}" / "answers" / "generations.parquet")]
        out[devices] = jobs, generate_jobs(jobs, prompts, model)
    return out


def test_shards_made_by_any_number_of_workers_are_the_same_work(tmp_path, prompts):
    """The shards' fingerprint leaves out where they run: a run resumes with another worker count."""
    from nbutils.generate.sampling import shard_fingerprint
    rows = prompts.to_list()
    one, two = (shard_fingerprint(sampling_params(tmp_path, d), "m", rows, [0, 1]) for d in (1, 2))
    assert one == two and not set(parallel.PLACEMENT) & one.keys()
    assert shard_fingerprint({**sampling_params(tmp_path, 1), "top_p": 0.5}, "m", rows, [0, 1]) != one


@pytest.mark.slow
def test_two_workers_sample_what_one_does(sampled):
    (_, one), (two_jobs, two) = sampled[1], sampled[2]
    for (df1, s1), (df2, s2), (_, path) in zip(one, two, two_jobs):
        pd.testing.assert_frame_equal(df1, df2)
        pd.testing.assert_frame_equal(pd.read_parquet(path), df2)
        assert s1["workers"] == 1 and s2["workers"] == 2 and s2["shards_resumed"] == 0
        assert s2["response_tokens"] == s1["response_tokens"] and s2["new_tokens_per_second"] > 0
    stem = two_jobs[0][1]
    assert worker_log(stem, 0).exists() and worker_log(stem, 1).exists()
    assert not list(stem.parent.glob("*.pid"))


@pytest.mark.slow
def test_a_rerun_with_every_shard_done_starts_no_worker(sampled, prompts, model):
    from nbutils.generate.sampling import generate_jobs
    jobs, first = sampled[2]
    logs = [worker_log(jobs[0][1], k) for k in (0, 1)]
    before = [log.stat().st_mtime_ns for log in logs]
    again = generate_jobs(jobs, prompts, model)
    for (df, _), (df_again, stats) in zip(first, again):
        pd.testing.assert_frame_equal(df, df_again)
        assert stats["shards_resumed"] == 16 and stats["load_seconds"] == 0 and "new_tokens_per_second" not in stats
    assert [log.stat().st_mtime_ns for log in logs] == before


@pytest.mark.slow
def test_two_workers_rank_what_one_does(sampled, tmp_path):
    """Stage 02: the tiny PairRM over two worker processes scores what it scores in this one."""
    from nbutils.rerank.ranking import rerank
    generations = sampled[1][0][0][1]
    results = {}
    for devices in (1, 2):
        stage = stage_params("02_rerank", tmp_path, run_name=f"d{devices}", shard_size=8, devices=devices)
        out = stage.iter_dir / "preference_data"
        splits, stats = rerank(stage, generations, out)
        scores = read_shards(32, 8, out.parent / "preference_data.scores")
        results[devices] = splits, stats, scores
    (splits1, stats1, scores1), (splits2, stats2, scores2) = results[1], results[2]
    pd.testing.assert_frame_equal(scores1, scores2)
    assert scores1["all_rm_scores"].map(len).eq(2).all()
    for name in splits1:
        pd.testing.assert_frame_equal(splits1[name], splits2[name])
    assert stats2["workers"] == 2 and stats2["pairs"] == stats1["pairs"] > 0
    assert worker_log(tmp_path / "d2" / "iter_1" / "preference_data.scores", 1).exists()


@pytest.mark.slow
def test_a_killed_worker_fails_the_stage_and_the_rerun_ends_with_the_same_rows(sampled, tmp_path, prompts, model,
                                                                              monkeypatch):
    """SIGKILL worker 0 once each worker has written one shard (both wait there: ``NBUTILS_TEST_PAUSE``):
    the parent stops worker 1, and the error names worker 0 and its log. The rerun (the same command)
    redoes the missing shards only, each once, and ends with the rows of one worker."""
    from nbutils.generate.sampling import generate
    out, params = tmp_path / "generations.parquet", sampling_params(tmp_path, 2)
    shards, pidfiles = Path(f"{out}.shards"), [worker_log(out, k).with_suffix(".pid") for k in (0, 1)]
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv("NBUTILS_TEST_PAUSE", f"1:{gate}")
    killed, stop = {}, threading.Event()

    def kill_worker_0():
        deadline = time.time() + 300
        while not stop.is_set() and len(list(gate.glob("paused-*"))) < 2 and time.time() < deadline:
            time.sleep(0.02)
        pids = [still_running(p) for p in pidfiles]
        if len(list(gate.glob("paused-*"))) == 2 and pids[0]:
            os.kill(pids[0], signal.SIGKILL)
            killed.update(pids=pids)
    watcher = threading.Thread(target=kill_worker_0)
    watcher.start()
    try:
        with pytest.raises(WorkerError) as e:
            generate(params, prompts, model, out)
    finally:
        stop.set()
        watcher.join()
    assert killed, "the workers never paused after their first shard"
    assert re.search(r"worker 0 \((cores |CUDA_VISIBLE_DEVICES=)[\d,]+\) was killed \(SIGKILL\)", str(e.value))
    assert str(worker_log(out, 0)) in str(e.value)
    assert "Finished shards are kept: rerunning the stage redoes the rest" in str(e.value)
    assert all(started(pid) is None for pid in killed["pids"] if pid), "a worker outlived the failed stage"
    done = sorted(p.name for p in shards.glob("shard-*.parquet"))
    assert done == ["shard-00000.parquet", "shard-00001.parquet"], done  # one each, where they paused
    assert not out.exists() and not list(tmp_path.glob("*.pid"))
    monkeypatch.delenv("NBUTILS_TEST_PAUSE")
    df, stats = generate(params, prompts, model, out)
    assert stats["shards_resumed"] == 2 and stats["workers"] == 2
    assert sorted(p.name for p in shards.glob("shard-*.parquet")) == [f"shard-{i:05d}.parquet" for i in range(16)]
    assert df["prompt_id"].is_unique and len(df) == 32
    pd.testing.assert_frame_equal(df, sampled[1][1][0][0])
