"""One runner per run: an exclusive lock on ``runs/<run>/.runner.lock`` while the runner works.

The lock is the kernel's (``flock``): it ends with the process that holds it, however that process
ends, so a killed runner never leaves a stale lock. The file names the holder (PID, host, start
time) for the message a second runner gets.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path


class RunLocked(RuntimeError):
    """Another runner works on this run."""


@contextmanager
def run_lock(run_dir: Path):
    path = Path(run_dir) / ".runner.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{}"
            raise RunLocked(f"{path.parent}: another runner is working on this run ({holder}); wait for it "
                            f"to end, or stop it, then run again") from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            print(f"note: {path.name} of an earlier runner that has ended ({previous}): taken over")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:  # a runner that ends, however it ends short of being killed, leaves an empty file
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
