"""A stage's worker process dies with its parent (no sampler left holding the GPU), prints to its
log and shows its progress to the parent (``nbutils.exec.processes.run_workers``, one worker)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbutils.exec.processes import run_workers, started, still_running
from nbutils.store.files import REPO_ROOT

PARENT = """
import sys, time
from pathlib import Path
from nbutils.exec.processes import run_workers

def work(path):
    while True:
        with open(path, "a") as f:
            f.write("tick\\n")
        time.sleep(0.1)

if __name__ == "__main__":
    run_workers(work, [(sys.argv[1],)], [{}], [Path(sys.argv[1]).with_suffix(".log")])
"""


def await_(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_a_child_dies_when_its_parent_is_killed(tmp_path):
    (tmp_path / "parent.py").write_text(PARENT)
    ticks, pidfile = tmp_path / "ticks", tmp_path / "ticks.pid"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(ticks)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    await_(lambda: ticks.exists() and still_running(pidfile), 60, "the child never started")
    child = still_running(pidfile)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: the child is not in the signal's reach
    proc.wait()
    await_(lambda: started(child) is None, 10, "the child outlived its parent")


def _noisy(n, flag):
    import sys
    import time
    from pathlib import Path
    print("engine chatter on stdout", flush=True)
    print("a C++ warning on stderr", file=sys.stderr, flush=True)
    deadline = time.time() + 60
    while not Path(flag).exists() and time.time() < deadline:  # until the parent has polled
        time.sleep(0.02)
    if n < 0:
        raise ValueError("the work failed")
    return n * 2


def test_a_childs_output_goes_to_its_log_and_its_progress_to_the_parent(tmp_path, capfd):
    log, flag = tmp_path / "child.log", tmp_path / "polled"
    assert run_workers(_noisy, [(21, str(flag))], [{}], [log], poll=flag.touch, every=0.2) == [42]
    assert "engine chatter" in log.read_text() and "C++ warning" in log.read_text()
    assert "chatter" not in capfd.readouterr().out
    with pytest.raises(ValueError, match="the work failed") as e:
        run_workers(_noisy, [(-1, str(flag))], [{}], [log])
    assert any(f"Its output: {log}" in note for note in e.value.__notes__)
