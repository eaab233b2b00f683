"""Hostile but fair: bad inputs name their file and line; a second runner on a run is refused.
(Issue 13's first cases; fast, no model runs.)"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from nbutils.store.files import REPO_ROOT
from nbutils.generate.prompts import PromptError, load_prompt_source
from nbutils.run import params as P
from nbutils.run.lock import RunLocked, run_lock
from nbutils.run.runner import ITERATION_STAGES
from nbutils.run.stage import resolve_notebook, stage_for
from tests.conftest import LOOP, cli, params_args


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nbeta: [0.1\nlearning_rate: 1e-3\n")
    proc = cli("validate", "-f", str(bad), check=False)
    assert proc.returncode == 2 and f"{bad}, line 3, column" in proc.stderr and "Traceback" not in proc.stderr


def test_prompt_files_that_are_not_utf8_or_empty_name_the_file(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(PromptError, match=r"latin.jsonl line 2: not UTF-8"):
        load_prompt_source(str(latin), "train")
    for name in ("empty.jsonl", "empty.json"):
        (tmp_path / name).write_text("\n")
        with pytest.raises(PromptError, match=rf"{name}: the file is empty"):
            load_prompt_source(str(tmp_path / name), "train")


def test_a_garbage_manifest_means_the_stage_reruns(tmp_path):
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(tmp_path), "iteration": 1})
    stage = stage_for("01_generate", values)
    stage.manifest_path.parent.mkdir(parents=True)
    for garbage in ("{not json", '["a list"]', '{"outputs": 3}', '{"params_hash": "x", "inputs": {}, "outputs": {"a": 1}}'):
        stage.manifest_path.write_text(garbage)
        assert stage.why_not_done().startswith(f"{stage.manifest_path}: unreadable manifest")


def test_iterations_and_reward_functions_are_checked_before_anything_runs(tmp_path):
    proc = cli("run", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(tmp_path), "--iterations", "0,1", check=False)
    assert proc.returncode == 2 and "--iterations: [0] outside 1..3" in proc.stderr
    proc = cli("run", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(tmp_path), "-p", "ranker", "nomodule:nofunc",
               check=False)
    assert proc.returncode == 2 and "cannot import module 'nomodule'" in proc.stderr
    assert not list(tmp_path.iterdir()), "a refused run left files behind"


HOLD = "import sys, time\nfrom nbutils.run.lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True)\n    time.sleep(120)\n"


def test_one_runner_per_run_and_a_dead_runners_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = cli("run", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(tmp_path), check=False)
        assert proc.returncode == 2 and "another runner is working on this run" in proc.stderr
        assert f'"pid": {holder.pid}' in proc.stderr
        assert not (run_dir / "config.json").exists()
        with pytest.raises(RunLocked):
            with run_lock(run_dir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(run_dir):  # the kernel released the dead runner's lock (it is reaped: wait() returned)
        assert json.loads((run_dir / ".runner.lock").read_text())["pid"] == os.getpid()
    assert f'"pid": {holder.pid}' in capsys.readouterr().out


def test_a_runner_that_fails_leaves_nothing_to_take_over(tmp_path, capsys):
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path):
            raise RuntimeError("a stage failed")
    with run_lock(tmp_path):
        pass
    assert "taken over" not in capsys.readouterr().out


# ---- lineage and commits, on a copy of the session's finished tiny run (``loop``) ----

@pytest.fixture
def loop_copy(loop, tmp_path):
    """A copy of the finished two-iteration tiny run, moved to another folder (still done: a run's
    place is not part of what it is); returns (stage_of(notebook, iteration), run folder)."""
    run = tmp_path / "moved"
    shutil.copytree(loop, run)
    values, _ = P.resolve(["recipes/tiny.yaml"], {"runs_dir": str(tmp_path), "run_name": "moved", **LOOP})
    return (lambda name, n=None: stage_for(name, {**values, **({"iteration": n} if n else {})})), run


def test_a_moved_run_is_done_and_damage_is_named_and_redone_downstream(loop_copy):
    stage, run = loop_copy
    assert all(stage(name, n).why_not_done() is None for n in (1, 2) for name in ITERATION_STAGES)
    assert stage("04_evaluate").why_not_done() is None
    generations = run / "iter_1" / "generations.parquet"
    size = generations.stat().st_size
    with open(generations, "r+b") as f:
        f.truncate(size // 2)
    assert stage("01_generate", 1).why_not_done() == (f"iter_1/generations.parquet is {size // 2} bytes, "
                                                      f"{size} when committed (truncated or replaced)")
    assert stage("02_rerank", 1).why_not_done() == "inputs changed (iter_1/generations.parquet)"
    (run / "iter_1" / "policy" / "model.safetensors").unlink()
    assert stage("03_dpo_qlora", 1).why_not_done() == "iter_1/policy/model.safetensors is missing"
    assert stage("01_generate", 2).why_not_done() == "inputs changed (iter_1/policy)"
    assert stage("04_evaluate").why_not_done() == "inputs changed (iter_1/policy)"


def test_a_stage_that_starts_again_is_not_done_until_it_commits(loop_copy):
    """Killed after its outputs were replaced, before its manifest: not done (the manifest went first)."""
    stage, run = loop_copy
    again = resolve_notebook("02_rerank", {**stage("02_rerank", 1).params})  # what the notebook's resolve cell does
    assert again.why_not_done() == "not done yet" and not again.manifest_path.exists()
    assert stage("03_dpo_qlora", 1).why_not_done() == "inputs changed (iter_1/preference_data)"


def test_later_iterations_without_the_earlier_policy_are_refused(loop_copy):
    stage, run = loop_copy
    shutil.rmtree(run / "iter_1")
    proc = cli("run", "-f", "recipes/tiny.yaml", *params_args(runs_dir=run.parent, run_name="moved", **LOOP),
               "--iterations", "2", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "iteration 2 samples from iteration 1's policy, which is not done (not done yet" in proc.stderr
    assert "run --iterations 1,2" in proc.stderr and not (run / "iter_1").exists()
    assert stage("04_evaluate").why_not_done() == "inputs changed (iter_1/policy)"  # the leaderboard is redone


def test_an_upstream_param_change_reruns_what_reads_it_and_says_why(loop_copy):
    stage, run = loop_copy
    proc = cli("run", "-f", "recipes/tiny.yaml", *params_args(runs_dir=run.parent, run_name="moved", **LOOP),
               *params_args(temperature=0.9, prompts_per_iteration=8, backend="hf"),  # smaller, to be quick
               "--iterations", "1", "--stages", "01_generate,02_rerank")
    assert ("iteration 1 · 01_generate: params changed (backend, prompts_per_iteration, temperature), rerunning"
            in proc.stdout)
    assert "iteration 1 · 02_rerank: inputs changed (iter_1/generations.parquet), rerunning" in proc.stdout
    generations = pd.read_parquet(run / "iter_1" / "generations.parquet")
    pairs = pd.read_parquet(next((run / "iter_1" / "preference_data").rglob("train*.parquet")))
    assert (generations["temperature"] == 0.9).all()
    answers = set(generations["all_generated_responses"].explode())
    assert set(pairs["chosen"].map(lambda m: m[-1]["content"])) <= answers  # the pairs are of the new answers
    assert stage("03_dpo_qlora", 1).why_not_done() == "inputs changed (iter_1/preference_data)"


def test_a_child_of_an_earlier_attempt_that_still_runs_is_named(tmp_path):
    from nbutils.exec.processes import run_workers, started
    log = tmp_path / "generations.log"
    earlier = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        log.with_suffix(".pid").write_text(f"{earlier.pid} {started(earlier.pid)}\n")
        with pytest.raises(RuntimeError, match=rf"an earlier attempt still works on {tmp_path} \(pid {earlier.pid}"):
            run_workers(print, [("never",)], [{}], [log])
    finally:
        earlier.kill()
        earlier.wait()
    assert run_workers(len, [("gone",)], [{}], [log]) == [4]  # once it is gone (or the pid reused by another process)
    assert not log.with_suffix(".pid").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MiB tmpfs (the tiny plan asks for ~10 MiB, so the preflight lets the run start)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a small tmpfs on this machine ({proc.stderr.strip() or 'mount failed'}): "
                    "the full-disk case is not tested here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_during_a_stage_is_named_and_the_rerun_resumes(small_disk, tmp_path):
    """The disk fills once the sampling worker has written its first shard (it waits there:
    ``NBUTILS_TEST_PAUSE``); the next shard cannot be written."""
    args = [sys.executable, "-m", "nbutils", "run", "-f", "recipes/tiny.yaml", "--iterations", "1", "--stages",
            "01_generate", *params_args(runs_dir=small_disk, backend="hf", prompts_per_iteration=8, shard_size=2,
                                        num_samples=2, max_new_tokens=24)]
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NBUTILS_TEST_PAUSE": f"1:{gate}"})
    shards = small_disk / "tiny" / "iter_1" / "generations.parquet.shards"
    deadline = time.time() + 300
    while not list(gate.glob("paused-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(gate.glob("paused-*")), "the worker never paused after its first shard"
    ballast = small_disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # the disk fills while the stage works (unbuffered: no flush at close)
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    (gate / "resume").touch()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "01_generate: the disk is full ([Errno 28] No space left on device)" in err
    assert f"free at {small_disk / 'tiny' / 'iter_1'}. Free some space and run the same command again" in err
    assert "Traceback" not in err and not (small_disk / "tiny" / "iter_1" / "01_generate.manifest.json").exists()
    assert len(list(shards.glob("shard-*.parquet"))) == 1
    ballast.unlink()
    subprocess.run(args, cwd=REPO_ROOT, check=True, capture_output=True)
    m = json.loads((small_disk / "tiny" / "iter_1" / "metrics.json").read_text())["01_generate"]
    assert m["shards_resumed"] == 1 and m["prompts"] == 8
