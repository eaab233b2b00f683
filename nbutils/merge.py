"""The next iteration's policy: the LoRA adapter merged into a full-precision copy
of model n-1 (never into the 4-bit weights), saved in HF format with its
tokenizer and chat template, so vLLM and transformers load it as any model."""
from __future__ import annotations

from pathlib import Path

from .files import atomic_path


def load_full(path: str, dtype):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def base_with_adapter(base_path: str, adapter_dir: Path, dtype):
    """Model n-1 in full precision with the trained adapter on top (not merged)."""
    from peft import PeftModel
    return PeftModel.from_pretrained(load_full(base_path, dtype), str(adapter_dir)).eval()


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, dtype) -> Path:
    """Merge and save model + tokenizer (+ generation config) to ``out_dir``, atomically."""
    from transformers import AutoTokenizer
    merged = base_with_adapter(base_path, adapter_dir, dtype).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def next_token_logprobs(model, tokenizer, prompts: list[str]):
    """Log-probabilities of the next token after each prompt (chat-templated), [n, vocab]."""
    import torch
    rows = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            logits = model(**ids).logits[0, -1].float()
        rows.append(torch.log_softmax(logits, -1))
    return torch.stack(rows)


def merge_check(base_path: str, adapter_dir: Path, merged_dir: Path, dtype, prompts: list[str]) -> dict:
    """Largest next-token log-prob difference, merged model vs model n-1 + adapter."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = next_token_logprobs(load_full(str(merged_dir), dtype).eval(), tokenizer, prompts)
    adapted = next_token_logprobs(base_with_adapter(base_path, adapter_dir, dtype), tokenizer, prompts)
    return {"merge_max_logprob_difference": float((merged - adapted).abs().max()),
            "merge_same_top1": bool((merged.argmax(-1) == adapted.argmax(-1)).all())}
