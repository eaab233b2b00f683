"""Stage 03 on this machine: the ``auto`` params resolved once per stage (dtype, optimizer,
``load_in_4bit``, ``use_liger_kernel``), each with the reason a user sees.

``load_in_4bit: auto`` trains LoRA on the unquantized model when the GPU holds it with room to
spare (the run plan's estimate + 10%), QLoRA otherwise and always on the CPU; the run plan
(``nbutils.run.plan.quantize_base``) decides with the same function. With ``distributed: zero3`` or
``fsdp2`` (the weights are sharded over the processes) and with ``finetuning: full`` (every weight
trains) it is always false: ``nbutils.run.rules`` refuses ``load_in_4bit: true`` with them.
"""
from __future__ import annotations

import importlib.util

AUTO_4BIT_MARGIN = 0.10  # load_in_4bit: auto wants the estimate + 10% free on the GPU (estimates are rough)


SHARDED = ("zero3", "fsdp2")  # distributed modes that shard every weight over the processes


def resolve_load_in_4bit(value, gpu_gib: float | None, unquantized_gib: float | None, distributed: str = "none",
                         finetuning: str = "lora") -> tuple[bool, str]:
    """(load_in_4bit, why) for the ``load_in_4bit`` param: true or false as set; ``auto``: false with
    ``distributed`` zero3 or fsdp2 and with ``finetuning: full``; else QLoRA on the CPU (``gpu_gib``
    None: the CPU path as always) and on a GPU without room; LoRA on the unquantized model when the
    GPU's ``gpu_gib`` hold ``unquantized_gib`` (the run plan's estimate of training with load_in_4bit
    false: ``nbutils.run.plan.dpo_memory``) plus 10%."""
    if isinstance(value, bool):
        kind = "QLoRA" if value else ("every weight, unquantized" if finetuning == "full" else "LoRA, unquantized")
        return value, f"load_in_4bit: {str(value).lower()} as set: {kind}"
    if value != "auto":
        raise ValueError(f"load_in_4bit: must be true, false or auto, got {value!r}")
    if finetuning == "full":
        return False, "load_in_4bit: auto with finetuning: full: unquantized (every weight trains; 4-bit weights do not)"
    if distributed in SHARDED:
        return False, (f"load_in_4bit: auto with distributed: {distributed}: LoRA on the unquantized model "
                       f"({distributed} shards the weights over the processes instead of quantizing them)")
    if gpu_gib is None:
        return True, "load_in_4bit: auto on the CPU: QLoRA (bitsandbytes' CPU path)"
    if unquantized_gib is None:
        return True, "load_in_4bit: auto with no estimate of the unquantized training's memory: QLoRA"
    need = unquantized_gib * (1 + AUTO_4BIT_MARGIN)
    fits = need <= gpu_gib
    return not fits, (f"load_in_4bit: auto: training on the unquantized model needs ~{unquantized_gib:.1f} GiB "
                      f"(+{AUTO_4BIT_MARGIN:.0%}: {need:.1f}), the GPU has {gpu_gib:.1f} GiB: "
                      + ("LoRA on the unquantized model" if fits else "QLoRA"))


def resolve_liger_kernel(value, gpu: bool) -> bool:
    """``use_liger_kernel``: auto is on with CUDA and the liger-kernel package (Triton kernels for
    RMSNorm, RoPE and SwiGLU; TRL already computes log-probs with a chunked LM head); true without
    them is an error."""
    have = importlib.util.find_spec("liger_kernel") is not None
    if value == "auto":
        return gpu and have
    if value is True and not (gpu and have):
        missing = " and ".join(m for m, ok in (("CUDA", gpu), ("the liger-kernel package", have)) if not ok)
        raise ValueError(f"use_liger_kernel: true needs CUDA and the liger-kernel package (pip install "
                         f"liger-kernel; Triton kernels, GPU only); {missing} missing here. Set use_liger_kernel: "
                         "auto (on where it can be) or false")
    return bool(value)


def device_settings(p: dict, unquantized_gib: float | None = None, say: bool = True) -> dict:
    """Compute dtype, optimizer, device, 4-bit or not and Liger kernels for this machine (``auto``
    resolved, once per stage; ``say``: print the line that says why). ``unquantized_gib``: the run
    plan's estimate of training with load_in_4bit false (GiB), which ``load_in_4bit: auto`` weighs
    against the GPU's memory."""
    import torch

    from nbutils.exec.devices import resolve_device
    gpu = resolve_device(p["device"]) == "cuda"
    dtype = p["dtype"] if p["dtype"] != "auto" else ("bfloat16" if gpu else "float32")
    optim = p["optim"] if p["optim"] != "auto" else ("paged_adamw_32bit" if gpu else "adamw_torch")
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else None
    load_in_4bit, why = resolve_load_in_4bit(p["load_in_4bit"], gpu_gib, unquantized_gib,
                                             p.get("distributed", "none"), p.get("finetuning", "lora"))
    liger = resolve_liger_kernel(p["use_liger_kernel"], gpu)
    if say:
        print(f"{why}; use_liger_kernel: {p['use_liger_kernel']} -> {str(liger).lower()}")
    return {"gpu": gpu, "dtype": dtype, "torch_dtype": getattr(torch, dtype), "optim": optim,
            "load_in_4bit": load_in_4bit, "load_in_4bit_reason": why, "use_liger_kernel": liger}
