"""The one place a conversation is built: stage 01 samples from it, stage 02's self-judge and reward
models read it, stage 03's pairs are made of it (TRL applies the template), stage 04 answers it.

A chat template may add turns of its own: SmolLM2's adds a default system turn ("You are a helpful
AI assistant named SmolLM, trained by Hugging Face") when the conversation has none. Every stage
passes the same messages to the same template, so every stage sees that turn the same way
(``tests/test_real_model.py`` compares the token ids the stages see for one prompt)."""
from __future__ import annotations


def conversation(prompt: str, answer: str | None = None) -> list[dict]:
    """The user turn (and the assistant's answer) as chat messages."""
    turns = [{"role": "user", "content": prompt}]
    return turns if answer is None else turns + [{"role": "assistant", "content": answer}]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The token ids a model reads before it answers ``prompt``: its chat template with the
    generation prompt (the assistant turn's header)."""
    return tokenizer.apply_chat_template(conversation(prompt), tokenize=True, add_generation_prompt=True,
                                         return_dict=False)
