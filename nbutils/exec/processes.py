"""Work in child processes: the one way the workbook runs work outside the notebook's process.

:func:`run_workers` runs ``fn(*args[k])`` in spawned worker ``k`` (a fresh interpreter: no CUDA or
engine state inherited) with its own environment (its GPUs, or on the CPU its share of the cores:
``nbutils.exec.placement.worker_envs``). Each worker dies with its parent, records itself in a pid
file and prints to a log file of its own; the parent shows progress (``poll``); the first worker
that fails stops the others and its error is raised here, naming it and its log. One GPU is one
worker; ``devices: N`` is N of them. :func:`work_over` is that over a stage's shards
(``nbutils.store.shards``), with one progress bar.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from nbutils.exec.placement import CPUS, take_share


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


SHARDS_KEPT = "Finished shards are kept: rerunning the stage redoes the rest (with any number of workers)"


class WorkerError(RuntimeError):
    """A worker process failed or died; the others were stopped."""


def worker_log(stem: Path, k: int) -> Path:
    """Worker ``k``'s log file beside ``stem`` (``generations.parquet`` -> ``generations.worker-0.log``);
    its pid file is the same name with ``.pid``."""
    return Path(stem).with_suffix(f".worker-{k}.log")


def earlier_workers(stem: Path) -> list[Path]:
    """The pid files of any earlier attempt's workers beside ``stem``, whatever their number."""
    return sorted(Path(stem).parent.glob(f"{Path(stem).with_suffix('').name}.worker-*.pid"))


def where(env: dict) -> str:
    """A worker's devices, as its error names them."""
    return f"cores {env[CPUS]}" if CPUS in env else f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}"


def _worker_main(conn, parent: int, log: str, env: dict, fn, args) -> None:
    """In the worker: its environment first (``CUDA_VISIBLE_DEVICES`` takes effect at CUDA's first
    call, ``OMP_NUM_THREADS`` when torch starts its threads: both later, in ``fn``, which imports
    torch and the engines), bound to its cores if it has some; then ``fn(*args)``. The result, or
    the error with its traceback, goes back through ``conn``."""
    take_share(env)
    start_child(parent, log)
    try:
        result = fn(*args)
    except BaseException as e:  # reported to the parent, which raises it
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)  # into the log too
        try:
            payload = pickle.dumps(e)
        except Exception:  # an exception that does not pickle: its text only
            payload = None
        conn.send(("error", (f"{type(e).__name__}: {e}", text, payload)))
        conn.close()
        os._exit(1)
    conn.send(("ok", result))
    conn.close()


def run_workers(fn: Callable, args: Sequence[tuple], envs: Sequence[dict], logs: Sequence[Path],
                poll: Callable[[], None] | None = None, every: float = 1.0, hint: str = "",
                numbers: Sequence[int] | None = None) -> list:
    """``fn(*args[k])`` in spawned worker ``k`` with ``envs[k]`` in its environment and its output in
    ``logs[k]``, all at once; returns their results in order. ``poll()`` is called every ``every``
    seconds meanwhile (progress). When a worker raises, the others are killed and its exception is
    raised here (its own type: a ``HubError`` stays one), noted with the worker (``numbers[k]``, else
    ``k``), its devices, its log, its traceback and ``hint`` (what a rerun does); one that does not
    unpickle here, or a worker that dies (killed, out of memory), is a :class:`WorkerError` saying so.
    Refuses to start while an earlier attempt's worker still runs (its pid file)."""
    import multiprocessing
    from multiprocessing.connection import wait

    for log in logs:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    refuse_if_running([Path(log).with_suffix(".pid") for log in logs])
    ctx, numbers = multiprocessing.get_context("spawn"), list(numbers or range(len(args)))
    procs, conns, results = [], [], {}
    try:
        for k, (a, env, log) in enumerate(zip(args, envs, logs)):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"worker-{numbers[k]}",
                               args=(send, os.getpid(), str(log), env, fn, a))
            proc.start()
            send.close()  # ours: the worker holds the other end; its exit shows as EOF
            procs.append(proc)
            conns.append(receive)
        left = set(range(len(procs)))
        while left:
            wait([conns[k] for k in left] + [procs[k].sentinel for k in left], timeout=every)
            for k in sorted(left):
                if not conns[k].poll() and procs[k].is_alive():
                    continue
                left.discard(k)
                try:
                    kind, value = conns[k].recv()
                except EOFError:  # gone without a word: killed
                    procs[k].join()
                    code = procs[k].exitcode
                    how = (f"was killed ({signal.Signals(-code).name})" if code and code < 0
                           else f"exited with code {code}")
                    raise WorkerError(_failure(numbers[k], envs[k], how, logs[k], hint, len(procs))) from None
                if kind == "error":
                    text, tb, payload = value
                    what = _failure(numbers[k], envs[k], f"failed: {text}", logs[k], hint, len(procs))
                    error = _loads(payload)
                    if error is None:
                        error = WorkerError(what)
                    else:
                        error.add_note(what)
                    error.add_note(f"worker {numbers[k]}'s traceback:\n{tb}")
                    raise error
                results[k] = value
            if poll:
                poll()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            proc.join()
        for log in logs:
            Path(log).with_suffix(".pid").unlink(missing_ok=True)
    return [results[k] for k in range(len(procs))]


def work_over(fn: Callable, args: Sequence[tuple | None], envs: Sequence[dict], stem: Path,
              done: Callable[[], int], total: int, desc: str) -> dict:
    """A stage's shards over workers: ``fn(*args[k])`` in worker ``k`` for each ``args[k]`` that is not
    None (a worker dealt no shard does not start), with ``envs[k]`` and its log beside ``stem``
    (:func:`worker_log`); one progress bar ``desc`` of ``total``, at ``done()``. Returns {k: result}.
    If a worker fails, the error says that finished shards are kept for the rerun."""
    from tqdm.auto import tqdm

    refuse_if_running(earlier_workers(stem))  # an earlier attempt's workers, whatever their number
    busy = [k for k, a in enumerate(args) if a is not None]
    with tqdm(total=total, desc=desc, unit="prompt") as bar:
        def poll():
            bar.n = min(total, done())
            bar.refresh()
        results = run_workers(fn, [args[k] for k in busy], [envs[k] for k in busy],
                              [worker_log(stem, k) for k in busy], poll=poll, numbers=busy,
                              hint=SHARDS_KEPT) if busy else []
        poll()
    return dict(zip(busy, results))


def _failure(k: int, env: dict, how: str, log: Path, hint: str, workers: int) -> str:
    others = "; the other workers were stopped" if workers > 1 else ""
    return f"worker {k} ({where(env)}) {how}{others}. Its output: {log}. {hint}".strip()


def _loads(payload: bytes | None) -> BaseException | None:
    try:
        error = pickle.loads(payload) if payload else None
        return error if isinstance(error, BaseException) else None
    except Exception:  # a class that does not unpickle here: the text says it all
        return None
