"""A tiny instruction-following policy in the Mistral architecture, built locally.

Word-level tokenizer (``tokenizers``), Mistral's ``[INST] … [/INST]`` chat
template, and a short seeded pre-training on :mod:`nbutils.tiny.corpus`, so it
writes words, follows the template and stops with ``</s>``. head_dim is 64
(vLLM's CPU attention rejects 16). Built once per spec into the cache and
reused; the cache key is a hash of the spec, so changing it rebuilds.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nbutils.tiny.cache import CACHE_DIR, cached_build, spec_key
from nbutils.tiny.corpus import sft_corpus

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('This template has no system role; "
    "put the system text in the first user message.') }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]"]


@dataclass(frozen=True)
class TinyPolicySpec:
    """Everything that determines the built model (its hash names the cache entry)."""
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    num_examples: int = 4000
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    version: int = 1

    def key(self) -> str:
        return spec_key(self)


def build_tokenizer(texts: list[str]):
    """A word-level fast tokenizer over ``texts`` with Mistral's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=["[INST]", "[/INST]"],
        chat_template=CHAT_TEMPLATE, model_max_length=512, padding_side="left")


def _batches(tokenizer, corpus: list[dict], spec: TinyPolicySpec, generator):
    """Padded (input_ids, attention_mask, labels) batches; loss on the answer only."""
    import torch

    encoded = []
    for row in corpus:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]},
             {"role": "assistant", "content": row["response"]}], tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        encoded.append((ids, len(p_ids)))
    for _ in range(spec.steps):
        idx = torch.randint(len(encoded), (spec.batch_size,), generator=generator).tolist()
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id)
        labels = torch.full((len(idx), width), -100)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq, n_prompt = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, n_prompt: len(seq)] = torch.tensor(seq[n_prompt:])
            mask[row, : len(seq)] = 1
        yield ids, mask, labels


def train_tiny_policy(spec: TinyPolicySpec, out_dir: Path, progress: bool = True) -> Path:
    """Build tokenizer and model from ``spec`` and save both (HF format) to ``out_dir``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import MistralConfig, MistralForCausalLM

    corpus = sft_corpus(spec.num_examples, spec.seed)
    # " " teaches the lone "▁" that precedes "[/INST]" in the chat template.
    tokenizer = build_tokenizer([r["prompt"] for r in corpus] + [r["response"] for r in corpus] + [" "])
    torch.manual_seed(spec.seed)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings, sliding_window=None,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, dtype="float32")
    model = MistralForCausalLM(config)
    optim = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, spec.learning_rate, total_steps=spec.steps)
    generator = torch.Generator().manual_seed(spec.seed)
    bar = tqdm(_batches(tokenizer, corpus, spec, generator), total=spec.steps,
               desc="pre-training tiny policy", disable=not progress)
    model.train()
    for ids, mask, labels in bar:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step(), sched.step(), optim.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    model.generation_config.update(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=96)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out_dir


def tiny_policy_path(spec: TinyPolicySpec = TinyPolicySpec(), progress: bool = True) -> Path:
    """The cached tiny policy for ``spec``; built (atomically) if missing."""
    target = CACHE_DIR / "tiny" / f"tiny-mistral-{spec.key()}"
    return cached_build(target, lambda tmp: train_tiny_policy(spec, tmp, progress=progress))
