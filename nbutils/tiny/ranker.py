"""A tiny PairRM, built locally in PairRM's format, for the CPU preset.

Its taste is programmatic and easy to see (:func:`tiny_preference`): stay on the
prompt's topic, and say more about it; drifting to another topic or padding
with filler costs. Like the real PairRM it rewards longer answers, so the tiny
loop shows the same length growth the blog reports.

It is the real thing in miniature: a DeBERTa-v2 backbone stored in fp16 with no
dtype in its config (as deberta-v3-large is), and a ``pairranker`` checkpoint
built and trained (seconds, seeded) with llm-blender's own ``build_tokenizer`` /
``build_collator`` / ``build_ranker``, loaded by llm-blender's ``loadranker``.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from nbutils.tiny.cache import CACHE_DIR, cached_build, spec_key
from nbutils.tiny.corpus import CLOSERS, FACTS, FILLERS, OPENERS, TOPICS, all_prompts, answer

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
_WORD = re.compile(r"[a-z]+")


def tiny_preference(prompt: str, response: str) -> float:
    """The tiny world's taste: +1 per sentence on the prompt's topic, +0.25 per
    sentence on another topic, -1 per filler sentence, +1 for a numbered list.
    More said scores more, as with PairRM. A ``module:function`` ranker itself."""
    prompt_topics = set(_WORD.findall(prompt.lower())) & set(TOPICS)
    fillers = {" ".join(_WORD.findall(f.lower())) for f in FILLERS}
    score = 1.0 if re.search(r"(^|\s)2\s*\.", response) else 0.0
    for sentence in re.split(r"[.!?]", response.lower()):
        words = _WORD.findall(sentence)
        if set(words) & prompt_topics:
            score += 1
        elif set(words) & set(TOPICS):
            score += 0.25
        elif " ".join(words) in fillers:
            score -= 1
    return score


@dataclass(frozen=True)
class TinyRankerSpec:
    """Everything that determines the built ranker (its hash names the cache entry)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    steps: int = 150
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    version: int = 1

    def key(self) -> str:
        return spec_key(self)


RANKER_CONFIG = {"ranker_type": "pairranker", "model_type": "deberta", "model_name": "../backbone",
                 "source_maxlength": 1224, "candidate_maxlength": 412, "n_tasks": 1,
                 "loss_type": "instructgpt", "drop_out": 0.05, "inference_mode": "bubble"}


def save_backbone(spec: TinyRankerSpec, out_dir: Path) -> None:
    """A word-level fast tokenizer and a random DeBERTa-v2 stored like deberta-v3-large:
    fp16 weights, no dtype in ``config.json``."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DebertaV2Config, DebertaV2Model, PreTrainedTokenizerFast

    words = [p["prompt"] for p in all_prompts()] + FACTS + FILLERS + OPENERS + CLOSERS + TOPICS
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits()])
    tok.train_from_iterator(words + [str(i) for i in range(10)],
                            trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        unk_token="[UNK]", mask_token="[MASK]", model_max_length=4096).save_pretrained(out_dir)
    torch.manual_seed(spec.seed)
    config = DebertaV2Config(
        vocab_size=tok.get_vocab_size(), hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=512,
        relative_attention=True, position_buckets=64, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        pad_token_id=0)
    model = DebertaV2Model(config)
    config_dict = {k: v for k, v in config.to_dict().items() if k not in ("dtype", "torch_dtype")}
    (out_dir / "config.json").write_text(json.dumps({**config_dict, "architectures": ["DebertaV2Model"]}, indent=2))
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def preference_pairs(rng: random.Random, n: int) -> list[tuple[str, str, str, float, float]]:
    """(prompt, answer 1, answer 2, score 1, score 2) with different scores."""
    prompts, pairs = all_prompts(), []
    while len(pairs) < n:
        row = rng.choice(prompts)
        a, b = answer(rng, row["topic"]), answer(rng, row["topic"])
        sa, sb = tiny_preference(row["prompt"], a), tiny_preference(row["prompt"], b)
        if sa != sb:
            pairs.append((row["prompt"], a, b, sa, sb))
    return pairs


def _compare(ranker, collator, pairs):
    """(loss, logits) of the ranker on ``pairs``; logit > 0 means answer 1 is better."""
    import torch

    batch = collator([{"source": p, "candidates": [a, b]} for p, a, b, _, _ in pairs])
    cand, mask = batch["candidate_ids"], batch["candidate_attention_mask"]
    scores = torch.tensor([[s1, s2] for *_, s1, s2 in pairs])
    out = ranker._forward(batch["source_ids"], batch["source_attention_mask"],
                          cand[:, 0], mask[:, 0], cand[:, 1], mask[:, 1],
                          scores[:, :1], scores[:, 1:])
    return out["loss"], out["logits"]


def train_tiny_ranker(spec: TinyRankerSpec, out_dir: Path, progress: bool = True) -> dict:
    """Build ``out_dir/backbone`` and train ``out_dir/ranker``; returns held-out accuracy."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from nbutils.compat import llm_blender as pairrm_compat
    pairrm_compat.install()
    from llm_blender.pair_ranker.config import RankerConfig
    from llm_blender.pair_ranker.model_util import build_collator, build_ranker, build_tokenizer

    (out_dir / "backbone").mkdir(parents=True)
    (out_dir / "ranker").mkdir()
    save_backbone(spec, out_dir / "backbone")
    backbone = str(out_dir / "backbone")
    config = RankerConfig.from_dict({**RANKER_CONFIG, "model_name": backbone})
    tokenizer = build_tokenizer(backbone)
    collator = build_collator("pairranker", tokenizer, 1224, 412)
    torch.manual_seed(spec.seed)
    ranker = build_ranker("pairranker", "deberta", backbone, None, config, tokenizer)
    rng = random.Random(spec.seed)
    held_out = preference_pairs(rng, 256)
    optim = torch.optim.AdamW(ranker.parameters(), lr=spec.learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, spec.learning_rate, total_steps=spec.steps)
    ranker.train()
    bar = tqdm(range(spec.steps), desc="training tiny PairRM", disable=not progress)
    for _ in bar:
        loss, _ = _compare(ranker, collator, preference_pairs(rng, spec.batch_size))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ranker.parameters(), 1.0)
        optim.step(), sched.step(), optim.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    ranker.eval()
    with torch.no_grad():
        _, logits = _compare(ranker, collator, held_out)
    accuracy = float(((logits > 0) == torch.tensor([s1 > s2 for *_, s1, s2 in held_out])).float().mean())
    save_file({k: v.contiguous() for k, v in ranker.state_dict().items()},
              str(out_dir / "ranker" / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "ranker" / "config.json").write_text(json.dumps(RANKER_CONFIG, indent=2) + "\n")
    info = {"spec": asdict(spec), "held_out_pair_accuracy": accuracy}
    (out_dir / "tiny_spec.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def tiny_ranker_path(spec: TinyRankerSpec = TinyRankerSpec(), progress: bool = True) -> Path:
    """The cached tiny ranker's ``ranker`` dir for ``spec``; built (atomically) if missing."""
    target = CACHE_DIR / "tiny" / f"tiny-pairrm-{spec.key()}"
    return cached_build(target, lambda tmp: train_tiny_ranker(spec, tmp, progress=progress)) / "ranker"
