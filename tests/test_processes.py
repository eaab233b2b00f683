"""A stage's worker process dies with its parent (no sampler left holding the GPU)."""
import os
import signal
import subprocess
import sys
import time

from nbutils.files import REPO_ROOT

PARENT = """
import sys, time
from nbutils.processes import in_child

def work(path):
    while True:
        with open(path, "a") as f:
            f.write("tick\\n")
        time.sleep(0.1)

if __name__ == "__main__":
    in_child(work, sys.argv[1])
"""


def test_a_child_dies_when_its_parent_is_killed(tmp_path):
    (tmp_path / "parent.py").write_text(PARENT)
    ticks = tmp_path / "ticks"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(ticks)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.time() + 60
    while not ticks.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert ticks.exists(), "the child never started"
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: the child is not in the signal's reach
    proc.wait()
    time.sleep(1)
    before = ticks.read_text().count("tick")
    time.sleep(1.5)
    assert ticks.read_text().count("tick") == before, "the child outlived its parent"


def _noisy(n):
    import sys
    import time
    print("engine chatter on stdout", flush=True)
    print("a C++ warning on stderr", file=sys.stderr, flush=True)
    time.sleep(1.5)
    if n < 0:
        raise ValueError("the work failed")
    return n * 2


def test_a_childs_output_goes_to_its_log_and_its_progress_to_the_parent(tmp_path, capfd):
    from nbutils.processes import in_child
    polls = []
    log = tmp_path / "child.log"
    assert in_child(_noisy, 21, poll=lambda: polls.append(1), every=0.2, log=log) == 42
    assert polls, "poll() was never called while the child worked"
    assert "engine chatter" in log.read_text() and "C++ warning" in log.read_text()
    assert "chatter" not in capfd.readouterr().out
    try:
        in_child(_noisy, -1, log=log)
    except ValueError as e:
        assert f"the child process's output: {log}" in e.__notes__
    else:
        raise AssertionError("the child's exception was not raised in the parent")
