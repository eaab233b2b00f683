"""Work in a process of its own that ends with the work, and never outlives its parent."""
from __future__ import annotations

import os
import signal


def die_with_parent(parent: int) -> None:
    """In a child: the kernel sends it SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed runner or notebook leaves no sampler holding the GPU and writing shards."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def in_child(fn, *args):
    """``fn(*args)`` in a spawned process (a fresh interpreter: no CUDA or engine state inherited),
    which ends when ``fn`` returns (its memory, GPU memory included, goes back) and dies with us."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(fn, *args).result()
