"""Work in a process of its own that ends with the work, and never outlives its parent."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def die_with_parent(parent: int) -> None:
    """In a child: the kernel sends it SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed runner or notebook leaves no sampler holding the GPU and writing shards."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if it is gone:
    with the pid, an identity that a reused pid does not share."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def still_running(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile`` if that very process still runs."""
    try:
        pid, start = pidfile.read_text().split()
        return int(pid) if started(int(pid)) == start else None
    except (OSError, ValueError):
        return None


def refuse_if_running(pidfiles: list[Path]) -> None:
    """Refuse to start while a child of an earlier attempt, recorded in one of ``pidfiles``, still
    works (started by a kernel or runner that is not ours): two would write the same shards."""
    for pidfile in pidfiles:
        earlier = still_running(pidfile)
        if earlier:
            raise RuntimeError(f"an earlier attempt still works on {pidfile.parent} (pid {earlier}, see "
                               f"{pidfile}): let it finish, or stop it (kill {earlier}), then rerun")


def start_child(parent: int, log: str | None) -> None:
    """A child's first steps: die with ``parent``; record itself in ``<log>.pid``; send what it
    prints (an engine's warnings, C++ notes) to ``log`` instead of the terminal, unless library
    logs are asked for."""
    die_with_parent(parent)
    if log:
        Path(log).with_suffix(".pid").write_text(f"{os.getpid()} {started(os.getpid())}\n")
    from nbutils.logs import level
    if log and level() == "WARNING":
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def in_child(fn, *args, poll=None, every: float = 1.0, log: Path | None = None):
    """``fn(*args)`` in a spawned process (a fresh interpreter: no CUDA or engine state inherited),
    which ends when ``fn`` returns (its memory, GPU memory included, goes back) and dies with us.
    ``poll()``, if given, is called every ``every`` seconds while it works (to show its progress);
    ``log``: the file that takes what the child prints (named in the error if it fails)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        refuse_if_running([Path(log).with_suffix(".pid")])
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_child,
                                 initargs=(os.getpid(), str(log) if log else None)) as pool:
            future = pool.submit(fn, *args)
            while True:
                try:
                    return future.result(timeout=every if poll else None)
                except TimeoutError:
                    if future.done():  # fn itself raised TimeoutError
                        raise
                    poll()
                except Exception as e:
                    if log:
                        e.add_note(f"the child process's output: {log}")
                    raise
    finally:
        if log:
            Path(log).with_suffix(".pid").unlink(missing_ok=True)
