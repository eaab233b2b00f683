"""Memory in use: this process's resident memory, and the GPU's peak when there is one."""
from __future__ import annotations


def free() -> None:
    """Give back the memory of models that are no longer referenced (and the GPU's cache)."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def report(label: str) -> dict:
    """Print and return memory now (GiB): process RSS, and GPU allocated / peak."""
    import psutil
    import torch
    out = {"rss_gib": round(psutil.Process().memory_info().rss / 2**30, 3)}
    if torch.cuda.is_available():
        out.update(gpu_allocated_gib=round(torch.cuda.memory_allocated() / 2**30, 3),
                   gpu_peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3))
    print(f"memory {label}: " + ", ".join(f"{k} {v}" for k, v in out.items()))
    return {f"{label.replace(' ', '_')}_{k}": v for k, v in out.items()}
