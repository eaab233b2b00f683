"""The Hugging Face hub, as the GPU presets meet it.

* **Models** (the policy, PairRM, PairRM's backbone) are resolved to a local
  snapshot once, with ``snapshot_download``, and then loaded from that path:
  transformers, vLLM and llm-blender never probe the hub for optional files,
  the 15 GB download and a gated-access error come before the first GPU stage,
  and duplicate weight formats are skipped (Mistral's ``consolidated.safetensors``
  and ``.bin`` copies when ``.safetensors`` shards exist).
* **AlpacaEval.** ``tatsu-lab/alpaca_eval`` holds a loading script, which
  datasets 5 refuses ("Dataset scripts are no longer supported"), and
  alpaca_eval 0.6.6 reads its reference through that script (alpaca_eval
  issue #454). The workbook reads the repo's JSON files with ``hf_hub_download``
  and pandas instead, in the leaderboard's instruction order.

``HF_ENDPOINT`` (a mirror), ``HF_HOME`` and ``HF_TOKEN`` work as usual.
"""
from __future__ import annotations

import os
from pathlib import Path

ALPACA_EVAL = "tatsu-lab/alpaca_eval"
ALPACA_EVAL_FILES = {"eval": "alpaca_eval.json",                     # the 805 instructions (AlpacaEval 1 outputs)
                     "reference": "alpaca_eval_gpt4_baseline.json",  # GPT-4-turbo's outputs: AlpacaEval 2.0's reference
                     "gamed": "df_gamed.csv"}                        # the LC GLM's difficulty/regularisation rows
# Never downloaded: other formats of the same weights.
DUPLICATE_WEIGHTS = ["consolidated*", "*.pth", "original/*", "*.msgpack", "*.h5", "*.ot", "*.onnx", "*.gguf",
                     "*.tflite", "*.mlmodel", "coreml/*", "flax_model*", "tf_model*", "rust_model*"]


class HubError(RuntimeError):
    """A hub repo that cannot be had as it is named (missing, gated, offline)."""


def offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def explain(repo_id: str, error: Exception, repo_type: str = "model") -> HubError:
    """A HubError that says what to do about ``error``."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    if isinstance(error, GatedRepoError):
        return HubError(f"{repo_id} is gated: accept its terms at {url} with your account, then set HF_TOKEN "
                        "(or run `hf auth login`)")
    if isinstance(error, RepositoryNotFoundError):
        return HubError(f"{repo_id}: no such {repo_type} repo at {url} (or it is private: set HF_TOKEN)")
    return HubError(f"{repo_id}: could not reach it on the hub ({type(error).__name__}: {error}); "
                    "check the network, HF_ENDPOINT, or pre-fill the cache and set HF_HUB_OFFLINE=1")


def weight_skips(files: list[str]) -> list[str]:
    """Patterns not to download from a repo with ``files``: other formats of the weights,
    and ``.bin`` copies when ``.safetensors`` weights exist."""
    safetensors = any(f.endswith(".safetensors") and not f.startswith("consolidated") for f in files)
    return DUPLICATE_WEIGHTS + (["*.bin", "*.pt"] if safetensors else [])


def cached_revision(repo_id: str, repo_type: str = "model") -> str | None:
    """The commit of ``repo_id`` that the local cache resolved ``main`` to, None if never fetched."""
    from huggingface_hub import constants
    ref = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.exists() else None


def model_snapshot(repo_id: str) -> Path:
    """The local snapshot folder of hub model ``repo_id`` (downloaded once, then read from the cache)."""
    from huggingface_hub import HfApi, snapshot_download
    try:
        files = [] if offline() else HfApi().list_repo_files(repo_id)
        return Path(snapshot_download(repo_id, ignore_patterns=weight_skips(files)))
    except Exception as e:
        raise explain(repo_id, e) from e


def dataset_file(repo_id: str, filename: str) -> Path:
    """One file of a hub dataset repo, downloaded once."""
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as e:
        raise explain(repo_id, e, "dataset") from e


def alpaca_eval(which: str):
    """AlpacaEval's ``eval`` set (instructions) or GPT-4-turbo ``reference`` outputs, as a DataFrame
    in the leaderboard's order (columns ``instruction``, ``output``, ``generator``, ``dataset``)."""
    import pandas as pd
    return pd.read_json(dataset_file(ALPACA_EVAL, ALPACA_EVAL_FILES[which]))
