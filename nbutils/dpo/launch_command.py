"""The ``accelerate launch`` command line of stage 03's training processes (:mod:`nbutils.dpo.worker`):
``devices`` processes on each of ``num_nodes`` machines, configured by
``params/accelerate/<distributed>.yaml`` (ddp, zero3 or fsdp2: TRL's own configs, with
``num_processes`` left to the command line).

On the CPU the processes train over gloo: accelerate's ``--cpu`` flag is not passed (with it,
accelerate starts one process however many are asked for); the trainer's ``use_cpu`` picks gloo.
More than one machine (``num_nodes`` > 1): under SLURM (``SLURM_JOB_ID`` set, no ``MACHINE_RANK``) the
first node starts it on every node with ``srun``; elsewhere each machine runs the same command with
``MACHINE_RANK`` (0 on the first; SLURM's ``SLURM_NODEID`` when unset), ``MASTER_ADDR`` (the first machine's
address) and ``MASTER_PORT`` (29500 when unset) in its environment, and the run folder on a file
system that all of them share.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from nbutils.store.files import REPO_ROOT

CONFIGS = REPO_ROOT / "params" / "accelerate"
MODES = ("ddp", "zero3", "fsdp2")


def command(distributed: str, devices: int, num_nodes: int, spec: Path, env=None) -> list[str]:
    """The ``accelerate launch`` command line of the workers: ``devices`` processes on each of
    ``num_nodes`` machines, configured by ``params/accelerate/<distributed>.yaml``. ``env``: where the
    machine flags of more than one machine come from (``os.environ`` when None)."""
    if distributed not in MODES:
        raise ValueError(f"distributed: {distributed!r} has no accelerate config; one of {', '.join(MODES)} "
                         f"({CONFIGS}/<name>.yaml), or none to train in the notebook's process")
    env = os.environ if env is None else env
    if num_nodes > 1 and "SLURM_JOB_ID" in env and "MACHINE_RANK" not in env:
        return srun(distributed, devices, num_nodes, spec, env)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{distributed}.yaml"),
            "--num_processes", str(devices * num_nodes), "--num_machines", str(num_nodes),
            *machine_flags(num_nodes, env), "-m", "nbutils.dpo.worker", str(spec)]


def srun(distributed: str, devices: int, num_nodes: int, spec: Path, env) -> list[str]:
    """Under SLURM, from the first node: the same launch on every node of the allocation through ``srun``
    (one task per node), each with its own ``SLURM_NODEID`` as machine rank, so the runner and the merge
    stay on the first node (scripts/slurm/)."""
    import shlex
    one = command(distributed, devices, num_nodes, spec, {**env, "MACHINE_RANK": "__RANK__"})
    line = shlex.join(one).replace("__RANK__", '"$SLURM_NODEID"')
    return ["srun", "--nodes", str(num_nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
            "bash", "-c", line]


def machine_flags(num_nodes: int, env) -> list[str]:
    """One machine: a free port for the processes to meet on (``--main_process_port 0``). More:
    this machine's rank and the first machine's address and port, from ``env``."""
    if num_nodes == 1:
        return ["--main_process_port", "0"]
    rank = env.get("MACHINE_RANK", env.get("SLURM_NODEID"))
    missing = [name for name, value in (("MACHINE_RANK (or SLURM_NODEID)", rank),
                                        ("MASTER_ADDR", env.get("MASTER_ADDR"))) if not value]
    if missing:
        raise ValueError(f"num_nodes: {num_nodes} needs {' and '.join(missing)} in the environment of each machine: "
                         "MACHINE_RANK 0 to num_nodes - 1 (0 on the first machine), MASTER_ADDR the first "
                         "machine's address, MASTER_PORT its port (29500 when unset)")
    return ["--machine_rank", str(rank), "--main_process_ip", env["MASTER_ADDR"],
            "--main_process_port", env.get("MASTER_PORT", "29500")]


def preflight(distributed: str, devices: int, gpu: bool) -> None:
    """Refuse, before any model loads, what the launch cannot do on this machine (``gpu``: the
    ``device`` param resolved to cuda)."""
    import importlib.util
    if distributed in ("zero3", "fsdp2") and not gpu:
        raise RuntimeError(f"distributed: {distributed} shards the weights over GPUs, and there is none here "
                           "(device resolved to cpu): on the CPU accelerate would quietly fall back to DDP. Set "
                           "distributed: ddp (or none), or run on a machine with GPUs")
    if distributed == "zero3" and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError("distributed: zero3 needs DeepSpeed, which is not installed here: pip install the pin "
                           "in requirements/gpu.txt (deepspeed), or set distributed: fsdp2 or ddp")
    if gpu:
        import torch
        if devices > torch.cuda.device_count():
            raise RuntimeError(f"devices: {devices} but this machine has {torch.cuda.device_count()} GPU(s): "
                               "set devices to at most that")
