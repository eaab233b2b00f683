"""Stage 03's checkpoints: what they were trained under, which one a rerun resumes from, and
dropping them once the next policy is saved.

Checkpoints live in ``dpo_checkpoints/`` with a fingerprint of the params and pairs they were
trained under (``_fingerprint.json``); a rerun under another fingerprint discards them. Across
processes (``distributed`` not none) the first process picks the checkpoint and removes the
broken ones while the others wait; the number of processes is then part of the fingerprint (it
changes every batch).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from nbutils.store.files import fresh_for

TRAINING_KEYS = ["beta", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_length", "warmup_ratio", "lr_scheduler_type", "optim",
                 "gradient_checkpointing", "loss_type", "loss_weights", "ld_alpha", "simpo_gamma", "load_in_4bit",
                 "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "reference_model", "dtype", "device",
                 "seed", "save_steps", "base_model", "train_sampling_strategy", "use_liger_kernel", "finetuning"]
PLACEMENT_KEYS = ["distributed", "devices", "num_nodes"]  # in the fingerprint when distributed is not none


def fingerprint(stage, train, resolved: dict | None = None) -> dict:
    """What a checkpoint was trained under: the params (with ``distributed``, ``devices`` and
    ``num_nodes`` when training is distributed), with ``resolved`` (the values ``auto`` took on
    this machine) over them, and the pairs."""
    pairs = hashlib.sha256(json.dumps(train.to_list(), sort_keys=True).encode()).hexdigest()
    keys = TRAINING_KEYS + (PLACEMENT_KEYS if stage.params.get("distributed", "none") != "none" else [])
    return {**{k: stage.params.get(k) for k in keys}, **(resolved or {}), "iteration": stage["iteration"],
            "pairs_sha256": pairs}


def last_checkpoint(output_dir: Path, fingerprint: dict, processes: int = 1) -> str | None:
    """The newest complete checkpoint to resume from (of a run in ``processes`` processes). A
    checkpoint cut short by a kill (no ``trainer_state.json``, which the trainer writes last) is
    removed, and so are checkpoints made under another fingerprint."""
    fresh_for(output_dir, fingerprint, "params or pairs")
    for ckpt in sorted(output_dir.glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]), reverse=True):
        if checkpoint_complete(ckpt, processes):
            return str(ckpt)
        print(f"removing incomplete {ckpt.name}")
        shutil.rmtree(ckpt)
    return None


def resume_point(accelerator, output_dir: Path, fingerprint: dict) -> str | None:
    """:func:`last_checkpoint` on the first process only (it removes folders); the other
    processes wait for its answer (a broadcast: every process must call this)."""
    from accelerate.utils import broadcast_object_list
    found = [last_checkpoint(output_dir, fingerprint, accelerator.num_processes) if accelerator.is_main_process
             else None]
    return broadcast_object_list(found)[0]


def checkpoint_complete(ckpt: Path, processes: int = 1) -> bool:
    """The trainer writes the RNG state, then ``trainer_state.json`` (not atomically): a checkpoint
    is whole when both are there and the state parses. In ``processes`` > 1 processes each writes
    its own RNG state (``rng_state_<rank>.pth``), in no order with the first one's trainer state:
    all must be there."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if processes > 1:
        return all((ckpt / f"rng_state_{rank}.pth").is_file() for rank in range(processes))
    return any(ckpt.glob("rng_state*.pth"))


def drop_checkpoints(output_dir: Path, keep: bool) -> dict:
    """Once the adapter and the merged policy are saved, the checkpoints (adapter plus optimizer
    state: ~3.4 GB each for r 128 on a 7B model; every weight's with ``finetuning: full``) only fill
    the disk; ``keep`` keeps them."""
    size = sum(f.stat().st_size for f in output_dir.rglob("*") if f.is_file()) if output_dir.exists() else 0
    if not keep and output_dir.exists():
        shutil.rmtree(output_dir)
        print(f"removed {output_dir.name}/ ({size / 2**30:.2f} GiB; keep_checkpoints: true keeps it)")
    return {"checkpoints_gib": round(size / 2**30, 3), "checkpoints_kept": keep}
