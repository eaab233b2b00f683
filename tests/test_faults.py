"""Hostile but fair: bad inputs name their file and line; a second runner on a run is refused.
(Issue 13's first cases; fast, no model runs.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nbutils.files import REPO_ROOT
from nbutils.generate.prompts import PromptError, load_prompt_source
from nbutils.run import params as P
from nbutils.run.lock import RunLocked, run_lock
from nbutils.run.stage import stage_for
from tests.conftest import cli


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


def test_a_garbage_manifest_means_the_stage_reruns(tmp_path, capsys):
    values, _ = P.resolve(["params/tiny.yaml"], {"runs_dir": str(tmp_path), "iteration": 1})
    stage = stage_for("01_generate", values)
    stage.manifest_path.parent.mkdir(parents=True)
    for garbage in ("{not json", '["a list"]', '{"outputs": 3}'):
        stage.manifest_path.write_text(garbage)
        assert not stage.is_complete()
        assert f"{stage.manifest_path}: unreadable manifest" in capsys.readouterr().out


def test_iterations_and_reward_functions_are_checked_before_anything_runs(tmp_path):
    proc = cli("run", "-f", "params/tiny.yaml", "-p", "runs_dir", str(tmp_path), "--iterations", "0,1", check=False)
    assert proc.returncode == 2 and "--iterations: [0] outside 1..3" in proc.stderr
    proc = cli("run", "-f", "params/tiny.yaml", "-p", "runs_dir", str(tmp_path), "-p", "ranker", "nomodule:nofunc",
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
        proc = cli("run", "-f", "params/tiny.yaml", "-p", "runs_dir", str(tmp_path), check=False)
        assert proc.returncode == 2 and "another runner is working on this run" in proc.stderr
        assert f'"pid": {holder.pid}' in proc.stderr
        assert not (run_dir / "config.json").exists()
        with pytest.raises(RunLocked):
            with run_lock(run_dir):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.2)
    with run_lock(run_dir):  # the kernel released the dead runner's lock
        assert json.loads((run_dir / ".runner.lock").read_text())["pid"] == os.getpid()
    assert f'"pid": {holder.pid}' in capsys.readouterr().out


def test_a_runner_that_fails_leaves_nothing_to_take_over(tmp_path, capsys):
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path):
            raise RuntimeError("a stage failed")
    with run_lock(tmp_path):
        pass
    assert "taken over" not in capsys.readouterr().out
