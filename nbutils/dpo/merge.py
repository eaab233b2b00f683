"""The next iteration's policy: the LoRA adapter merged into a full-precision copy
of model n-1 (never into the 4-bit weights), saved in HF format with its
tokenizer and chat template, so vLLM and transformers load it as any model.
With ``finetuning: full`` the trainer saved the policy itself: nothing to merge,
the saved model is checked against the trained one the same way."""
from __future__ import annotations

from pathlib import Path

from nbutils.chat import prompt_ids
from nbutils.store.files import atomic_path


def load_full(path: str, dtype, device: str = "cpu"):
    """A model in full precision, straight onto ``device`` (a 7B model: 14.5 GB of GPU memory in
    bf16, not 30 GB of RAM and slow CPU forwards)."""
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device if device != "cpu" else None)


def base_with_adapter(base_path: str, adapter_dir: Path, dtype, device: str = "cpu"):
    """Model n-1 in full precision with the trained adapter on top (not merged)."""
    from peft import PeftModel
    return PeftModel.from_pretrained(load_full(base_path, dtype, device), str(adapter_dir)).eval()


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, dtype, check_prompts: list[str],
                  device: str = "cpu") -> dict:
    """Merge and save model + tokenizer (+ generation config) to ``out_dir``, atomically; then
    check the saved model against model n-1 + adapter (loaded once, measured before merging):
    the largest next-token log-prob difference on ``check_prompts``. One model copy at a time,
    on ``device``."""
    from transformers import AutoTokenizer

    from nbutils.exec.memory import free
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    adapted_model = base_with_adapter(base_path, adapter_dir, dtype, device)
    adapted = next_token_logprobs(adapted_model, tokenizer, check_prompts)
    merged = adapted_model.merge_and_unload()
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    del adapted_model, merged
    free()
    return check_saved(out_dir, adapted, dtype, check_prompts, device, name="merge")


def check_saved(out_dir: Path, expected, dtype, check_prompts: list[str], device: str = "cpu",
                name: str = "saved") -> dict:
    """The policy saved in ``out_dir`` loads (transformers) and gives the ``expected`` next-token
    log-probs on ``check_prompts`` (model n-1 + adapter for a merge, ``name`` merge; the trained
    model, measured before the trainer was freed, for ``finetuning: full``): the largest difference,
    and whether the top token is the same."""
    from transformers import AutoTokenizer

    from nbutils.exec.memory import free
    saved_model = load_full(str(out_dir), dtype, device).eval()
    saved = next_token_logprobs(saved_model, AutoTokenizer.from_pretrained(out_dir), check_prompts)
    del saved_model
    free()
    return {f"{name}_max_logprob_difference": float((saved - expected).abs().max()),
            f"{name}_same_top1": bool((saved.argmax(-1) == expected.argmax(-1)).all())}


def next_token_logprobs(model, tokenizer, prompts: list[str]):
    """Log-probabilities of the next token after each prompt (chat-templated), [n, vocab]."""
    import torch
    rows = []
    for prompt in prompts:
        ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].float()
        rows.append(torch.log_softmax(logits, -1).cpu())
    return torch.stack(rows)
