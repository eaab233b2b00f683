"""The same prompts answered by model n-1 and by the policy trained from it (stage 03's last look):
greedy decoding, so the difference is the training's, not the sampler's."""
from __future__ import annotations

import pandas as pd

from nbutils.chat import prompt_ids


def greedy_answers(model_path: str, prompts: list[str], max_new_tokens: int, dtype, device: str) -> list[str]:
    """Each prompt's greedy answer (transformers ``generate``, one left-padded batch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    batch = tokenizer.pad({"input_ids": [prompt_ids(tokenizer, p) for p in prompts]}, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out[:, batch["input_ids"].shape[1]:]]


def before_after(previous: str, trained: str, prompts: list[str], max_new_tokens: int, dtype,
                 device: str) -> pd.DataFrame:
    """A row per prompt: model n-1's greedy answer and the new policy's, with their lengths (one model
    in memory at a time, in ``dtype``: stage 03's ``settings["torch_dtype"]``)."""
    before = greedy_answers(previous, prompts, max_new_tokens, dtype, device)
    after = greedy_answers(trained, prompts, max_new_tokens, dtype, device)
    return pd.DataFrame({"prompt": prompts, "before (model n-1)": before, "after (model n)": after,
                         "chars before": [len(t) for t in before], "chars after": [len(t) for t in after]})
