"""Where a stage's work runs: devices, engines over them, and which shards each worker takes.

``devices`` GPUs (on the CPU: worker processes) are split into ``devices / tensor_parallel_size``
groups; each group is one worker process with its own ``CUDA_VISIBLE_DEVICES`` and one engine.
The shards a stage still has to do are dealt to the workers in turn, so a worker's unfinished
shards are redone by the next run and no shard is done twice. Where the work runs is not what
it is: these keys do not enter a stage's identity or its shards' fingerprints (stage 03's
``devices`` and ``num_nodes`` do when ``distributed`` is not none: the processes share each batch).
On the CPU the workers split the cores between them (:func:`worker_envs`); the tiny models draw
the same tokens with one thread as with two (tested), a larger model on the CPU may not. An engine
over ``tensor_parallel_size`` GPUs needs it to divide the model's attention heads
(:func:`check_tensor_parallel`, before anything loads).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

PLACEMENT = ("devices", "tensor_parallel_size", "num_nodes")


def placement_free(values: dict) -> dict:
    """``values`` without the keys that say where work runs (kept when training is distributed:
    the number of processes then changes the batches)."""
    if values.get("distributed", "none") != "none":
        return {k: v for k, v in values.items() if k != "tensor_parallel_size"}
    return {k: v for k, v in values.items() if k not in PLACEMENT}


def worker_devices(devices: int, tensor_parallel_size: int = 1) -> list[str]:
    """Each worker's GPUs, as indices ``0..devices-1`` in groups of ``tensor_parallel_size``
    (:func:`worker_envs` maps them to this process's own ``CUDA_VISIBLE_DEVICES``)."""
    if devices % tensor_parallel_size:
        raise ValueError(f"tensor_parallel_size: {tensor_parallel_size} does not divide devices ({devices})")
    ids = [str(i) for i in range(devices)]
    return [",".join(ids[i: i + tensor_parallel_size]) for i in range(0, devices, tensor_parallel_size)]


def visible_to(groups: list[str]) -> list[str]:
    """``groups`` of GPU indices as this process sees them: through its own ``CUDA_VISIBLE_DEVICES``
    when it has one (``CUDA_VISIBLE_DEVICES=3`` with ``devices: 1`` is GPU 3, not GPU 0)."""
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not mine:
        return groups
    wanted = max(int(i) for g in groups for i in g.split(",")) + 1
    if wanted > len(mine):
        raise ValueError(f"devices: {wanted}, but CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} shows "
                         f"{len(mine)} GPU(s); set devices to at most {len(mine)}, or show more GPUs")
    return [",".join(mine[int(i)] for i in g.split(",")) for g in groups]


def deal(pending: list[int], workers: int) -> list[list[int]]:
    """The pending shard indices dealt to ``workers`` in turn: worker k takes pending[k::workers]."""
    return [pending[k::workers] for k in range(workers)]


def workers_of(values: dict) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each worker a stage with params ``values`` runs (one: in-process
    or one child, as with a single GPU)."""
    return worker_devices(values.get("devices", 1), values.get("tensor_parallel_size", 1))


def check_tensor_parallel(model: str, tensor_parallel_size: int) -> None:
    """Refuse, before an engine loads, a ``tensor_parallel_size`` that vLLM cannot split ``model``
    by: it must divide the model's attention heads (``num_attention_heads`` in its config.json)."""
    config = Path(model) / "config.json"
    if tensor_parallel_size == 1 or not config.is_file():
        return
    values = json.loads(config.read_text())
    heads = values.get("num_attention_heads") or values.get("text_config", {}).get("num_attention_heads")
    if heads and heads % tensor_parallel_size:
        fits = [n for n in range(1, heads + 1) if heads % n == 0 and n <= max(8, tensor_parallel_size)]
        raise ValueError(f"tensor_parallel_size: {tensor_parallel_size} does not divide the {heads} attention heads "
                         f"of {model} ({config}: num_attention_heads), so vLLM cannot split it over "
                         f"{tensor_parallel_size} GPUs; set tensor_parallel_size to one of {fits} (and devices "
                         f"to a multiple of it)")


CPUS = "NBUTILS_WORKER_CPUS"  # a worker's cores on the CPU: it binds itself to them (nbutils.exec.processes)


def worker_envs(visible: list[str], device: str) -> list[dict]:
    """Each worker's environment: its GPUs (``CUDA_VISIBLE_DEVICES``). On the CPU, where the workers
    are processes on the same cores, also its own share of the cores (``OMP_NUM_THREADS`` threads,
    bound to them): each worker's threads on every core slow all of them down many times over."""
    if device != "cpu":
        return [{"CUDA_VISIBLE_DEVICES": v} for v in visible_to(visible)]
    envs = [{"CUDA_VISIBLE_DEVICES": v} for v in visible]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    share, extra = divmod(len(cores), len(envs))
    for k, env in enumerate(envs):
        start = k * share + min(k, extra)
        mine = cores[start: start + share + (k < extra)] or [cores[k % len(cores)]]  # more workers than cores
        env.update({CPUS: ",".join(map(str, mine)), "OMP_NUM_THREADS": str(len(mine))})
    return envs


def take_share(env: dict) -> None:
    """In a worker process, before torch starts its threads: its environment (:func:`worker_envs`),
    and on the CPU its cores."""
    os.environ.update(env)
    if CPUS in env and hasattr(os, "sched_setaffinity"):  # Linux
        os.sched_setaffinity(0, [int(c) for c in env[CPUS].split(",")])
