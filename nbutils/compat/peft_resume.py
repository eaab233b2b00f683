"""Exact resume of QLoRA training (TRL 1.16, peft 0.21, transformers 5).

TRL's ``DPOTrainer`` casts a quantized model's trainable adapter weights to bf16, as the QLoRA
paper recommends. A run resumed from a checkpoint loads them again through peft's ``load_adapter``,
which upcasts them to fp32. From then on the resumed run computes in another precision than the run
it continues (measured on the tiny preset: 1e-5 on the losses, 1e-3 on the weights after 6 steps).
The callback here casts them back, with their optimizer state, before the first resumed step.
Both casts are exact (bf16 values held in fp32), so the resumed run matches the uninterrupted one
bit for bit (``tests/test_dpo.py``).
"""
from __future__ import annotations


def adapter_dtype_keeper(model):
    """A callback that gives ``model``'s trainable weights (and their optimizer state) back the
    dtype they have now, when training begins (after a resume has loaded a checkpoint)."""
    import torch
    from transformers import TrainerCallback

    dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}

    class KeepAdapterDtype(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            inner = getattr(optimizer, "optimizer", optimizer)
            # torch's optimizers keep their state in the param's dtype (and cast it so on loading);
            # bitsandbytes' keep theirs in fp32 or 8 bits whatever the param: left as loaded
            follows_param = type(inner).__module__.startswith("torch.optim")
            optimizer_state = getattr(inner, "state", {}) if follows_param else {}
            for name, p in model.named_parameters():
                want = dtypes.get(name)
                if want is not None and p.dtype != want:
                    p.data = p.data.to(want)
                    for key, value in optimizer_state.get(p, {}).items():
                        if key != "step" and torch.is_floating_point(value):
                            optimizer_state[p][key] = value.to(want)

    return KeepAdapterDtype()
