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
