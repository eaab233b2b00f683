"""The ``device`` param, checked against this machine: a GPU preset never falls back
to a days-long CPU run because a driver or a torch build is wrong."""
from __future__ import annotations

import os


class DeviceError(RuntimeError):
    """The device asked for is not there."""


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    import torch
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA (install the GPU environment: environment.yml)"
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return ("torch sees no GPU" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
                + f"; torch {torch.__version__} needs an NVIDIA driver for CUDA {torch.version.cuda} or newer "
                "(check `nvidia-smi`)")
    return None


def resolve_device(name: str) -> str:
    """``cuda`` or ``cpu`` for the ``device`` param: ``auto`` takes CUDA when there is one;
    ``cuda`` without a usable GPU is an error that says why."""
    if name == "cpu":
        return "cpu"
    problem = cuda_problem()
    if problem is None:
        return "cuda"
    if name == "auto":
        return "cpu"
    raise DeviceError(f"device: cuda, but CUDA is not usable: {problem}. This preset is sized for a GPU "
                      "(days on a CPU); fix that, or pass `-p device cpu` to run on the CPU anyway")
