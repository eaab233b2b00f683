"""llm-blender 0.0.2 made right under transformers 5: the one place that knows how.

* Import shims: ``transformers.utils.hub.TRANSFORMERS_CACHE`` and
  ``PreTrainedTokenizerBase.batch_encode_plus`` (both removed in 5).
* fp32 backbone: transformers 5 builds a backbone in its stored dtype (PairRM's
  deberta-v3-large is stored in fp16, with no dtype in its config), which
  rounds the ranker's fp32 weights when they are loaded over it.
* Tokenizer: transformers 5's ``DebertaV2Tokenizer`` drops the sentencepiece
  model's precompiled (nmt_nfkc) normalizer; it is restored from ``spm.model``
  as 4.x's ``DebertaV2Converter`` built it. Local backbone paths skip
  llm-blender's name sniffing ("llama", "alpaca", "phi" in a path).
* Loading: a ranker path that does not exist is an error (no hub attempt), a
  relative backbone path in a ranker's config is resolved beside the ranker,
  and missing or unexpected checkpoint keys are an error.
* Batch-invariant input: llm-blender's PairRM collator gives candidates
  ``candidate_maxlength + (source_maxlength - longest source in the batch) // 2``
  tokens, so how much of a long answer PairRM reads depends on its batch
  neighbours' prompts. Each example is collated alone (as at ``batch_size=1``),
  then right-padded to the batch's longest (pad id, mask 0; the ranker moves
  padding to the end and trims it): a prompt's scores do not depend on its batch.
  :func:`input_lengths` gives the token counts PairRM reads, without collating.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

_INSTALLED = False


def install() -> None:
    """Apply the shims and fixes (idempotent); call before importing llm_blender."""
    global _INSTALLED
    if _INSTALLED:
        return
    import huggingface_hub.constants
    import transformers.utils.hub as hub
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    if not hasattr(hub, "TRANSFORMERS_CACHE"):
        hub.TRANSFORMERS_CACHE = huggingface_hub.constants.HF_HUB_CACHE
    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):
        PreTrainedTokenizerBase.batch_encode_plus = lambda self, texts, **kw: self(texts, **kw)

    from llm_blender.blender import blender_utils
    from llm_blender.pair_ranker import model_util

    original_model, original_tokenizer = model_util.build_pretrained_model, model_util.build_tokenizer

    def build_pretrained_model(model_type, model_name, **kwargs):
        import torch
        return original_model(model_type, model_name, **{"dtype": torch.float32, **kwargs})

    def build_tokenizer(model_name, **kwargs):
        if Path(model_name).is_dir():
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(model_name, **kwargs)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer = original_tokenizer(model_name, **kwargs)
        return restore_spm_normalizer(tokenizer)

    model_util.build_pretrained_model = build_pretrained_model
    model_util.build_tokenizer = build_tokenizer
    blender_utils.build_tokenizer = build_tokenizer  # imported by name there
    per_example_collation()
    _INSTALLED = True


def per_example_collation() -> None:
    """PairRM's collator (``CrossCompareCollator``) collates each example alone and pads the batch."""
    from llm_blender.pair_ranker.collator import CrossCompareCollator
    if getattr(CrossCompareCollator.__call__, "per_example", False):
        return
    collate_batch = CrossCompareCollator.__call__

    def collate(self, batch):
        if len(batch) == 1:
            return collate_batch(self, batch)
        import torch
        import torch.nn.functional as F
        parts = [collate_batch(self, [example]) for example in batch]
        out = {"scores": None if parts[0]["scores"] is None else torch.cat([p["scores"] for p in parts])}
        for key, fill in (("source_ids", self.tokenizer.pad_token_id), ("source_attention_mask", 0),
                          ("candidate_ids", self.tokenizer.pad_token_id), ("candidate_attention_mask", 0)):
            width = max(p[key].shape[-1] for p in parts)
            out[key] = torch.cat([F.pad(p[key], (0, width - p[key].shape[-1]), value=fill) for p in parts])
        return out

    collate.per_example = True
    collate.collate_batch = collate_batch  # llm-blender's own, for tests
    CrossCompareCollator.__call__ = collate


def input_lengths(collator, prompts: list[str], candidates: list[list[str]], source_maxlength: int,
                  candidate_maxlength: int) -> tuple[list[int], list[list[int]]]:
    """The tokens PairRM reads of each prompt and each candidate ([CLS], prefix and [SEP] included)
    under the per-example truncation installed above, at the max lengths ``rank()`` sets (its
    ranker config's): each comparison of a prompt reads ``source + candidate i + candidate j``."""
    if collator.mannually_add_sep_token:
        raise NotImplementedError("input_lengths: a ranker tokenizer whose sep token encodes to one id")
    tok, sep = collator.tokenizer, collator.sep_token

    def counts(texts, prefix):  # the collator's text: prefix + text, its sep token replaced by a space
        texts = [(prefix + t).replace(sep, " ") for t in texts]
        return [len(ids) for ids in tok(texts, verbose=False)["input_ids"]] if texts else []
    sources = [min(n, source_maxlength) for n in counts(prompts, collator.source_prefix)]
    flat, out, pos = counts([c for row in candidates for c in row], collator.candidate_prefix), [], 0
    for s, row in zip(sources, candidates):
        limit = candidate_maxlength + (source_maxlength - s) // 2
        out.append([min(n, limit) for n in flat[pos: pos + len(row)]])
        pos += len(row)
    return sources, out


def restore_spm_normalizer(tokenizer):
    """Give a sentencepiece-based DeBERTa-v2 tokenizer back the normalizer of its
    ``spm.model`` (Lowercase if configured, Strip, Precompiled, collapse spaces).
    Other tokenizers are returned unchanged."""
    spm_file = getattr(tokenizer, "vocab_file", None)
    if type(tokenizer).__name__ != "DebertaV2Tokenizer" or not spm_file or not Path(spm_file).is_file():
        return tokenizer
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, normalizers

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm_file).read_bytes())
    steps = [normalizers.Lowercase()] if getattr(tokenizer, "do_lower_case", False) else []
    steps.append(normalizers.Strip())
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def resolve_ranker_dir(path: str) -> Path:
    """A local PairRM-format ranker directory, or a clear error (never a hub download)."""
    ranker_dir = Path(path).expanduser()
    if not ranker_dir.is_dir():
        raise FileNotFoundError(f"no ranker directory at {ranker_dir}")
    if not (ranker_dir / "config.json").is_file():
        raise FileNotFoundError(f"{ranker_dir} has no config.json: not a PairRM-format ranker")
    return ranker_dir.resolve()


def backbone_name(ranker_dir: Path) -> str:
    """The ranker config's ``model_name`` as a local folder: a relative path beside the ranker,
    a hub id (``microsoft/deberta-v3-large``) as its snapshot, so llm-blender's
    ``AutoModel.from_pretrained`` and tokenizer never probe the hub themselves."""
    name = json.loads((ranker_dir / "config.json").read_text())["model_name"]
    local = ranker_dir / name
    if not Path(name).is_absolute() and local.exists():
        return str(local.resolve())
    if Path(name).is_absolute():
        return name
    from nbutils.sources.hub import model_snapshot
    return str(model_snapshot(name))


def check_state_dict(ranker, checkpoint_dir: Path) -> None:
    """Strict loading: the checkpoint's keys are exactly the ranker's."""
    if (checkpoint_dir / "model.safetensors").is_file():
        from safetensors import safe_open
        with safe_open(str(checkpoint_dir / "model.safetensors"), "pt") as f:
            keys = set(f.keys())
    else:
        import torch
        keys = set(torch.load(checkpoint_dir / "pytorch_model.bin", map_location="cpu"))
    expected = set(ranker.state_dict())
    missing, unexpected = sorted(expected - keys), sorted(keys - expected)
    if missing or unexpected:
        raise ValueError(f"ranker checkpoint {checkpoint_dir} does not fit its model: "
                         f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


@contextlib.contextmanager
def quiet():
    """Silence llm-blender's and transformers' chatter while a ranker loads."""
    import transformers
    root, verbosity = logging.getLogger(), transformers.logging.get_verbosity()
    level, bars = root.level, transformers.logging.is_progress_bar_enabled()
    root.setLevel(logging.ERROR), transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        root.setLevel(level), transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def load_blender(path: str, device: str = "cpu"):
    """An llm-blender ``Blender`` with the PairRM-format ranker at ``path`` loaded."""
    ranker_dir = resolve_ranker_dir(path)
    install()
    import llm_blender

    with quiet():
        blender = llm_blender.Blender()
        blender.blender_config.use_tqdm = False
        blender.loadranker(str(ranker_dir), device=device, model_name=backbone_name(ranker_dir))
    check_state_dict(blender.ranker, ranker_dir)
    return blender
