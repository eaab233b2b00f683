"""Where a stage's work runs: devices, engines over them, and which shards each worker takes.

``devices`` GPUs (on the CPU: worker processes) are split into ``devices / tensor_parallel_size``
groups; each group is one worker process with its own ``CUDA_VISIBLE_DEVICES`` and one engine.
The shards a stage still has to do are dealt to the workers in turn, so a worker's unfinished
shards are redone by the next run and no shard is done twice. Where the work runs is not what
it is: these keys do not enter a stage's identity or its shards' fingerprints (stage 03's
``devices`` and ``num_nodes`` do when ``distributed`` is not none: the processes share each batch).
"""
from __future__ import annotations

PLACEMENT = ("devices", "tensor_parallel_size", "num_nodes")


def placement_free(values: dict) -> dict:
    """``values`` without the keys that say where work runs (kept when training is distributed:
    the number of processes then changes the batches)."""
    if values.get("distributed", "none") != "none":
        return {k: v for k, v in values.items() if k != "tensor_parallel_size"}
    return {k: v for k, v in values.items() if k not in PLACEMENT}


def worker_devices(devices: int, tensor_parallel_size: int = 1) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each worker: ``devices`` GPUs in groups of ``tensor_parallel_size``."""
    if devices % tensor_parallel_size:
        raise ValueError(f"tensor_parallel_size: {tensor_parallel_size} does not divide devices ({devices})")
    ids = [str(i) for i in range(devices)]
    return [",".join(ids[i: i + tensor_parallel_size]) for i in range(0, devices, tensor_parallel_size)]


def deal(pending: list[int], workers: int) -> list[list[int]]:
    """The pending shard indices dealt to ``workers`` in turn: worker k takes pending[k::workers]."""
    return [pending[k::workers] for k in range(workers)]
