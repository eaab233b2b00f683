"""The AlpacaEval leaderboard's published files: each model's ``model_outputs.json`` (what
GPT-4-turbo judged) and its ``weighted_alpaca_eval_gpt4_turbo/annotations.json`` (how), from
the ``results/<model>/`` folder of alpaca_eval's GitHub repository at a pinned commit.

Each file is downloaded once into ``NBUTILS_CACHE/alpaca_eval_results/<host>/<commit>/``
and read from there after. ``NBUTILS_GITHUB_RAW`` replaces ``https://raw.githubusercontent.com``
(a mirror, or the tests' twin: :mod:`nbutils.twins.github`); offline, pre-fill the cache.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from nbutils.store.files import CACHE_DIR, atomic_path

REPO, COMMIT = "tatsu-lab/alpaca_eval", "cd543a149df89434d8a54582c0151c0b945c3d20"  # August 2025
ANNOTATIONS = "weighted_alpaca_eval_gpt4_turbo/annotations.json"


def raw_base() -> str:
    return os.environ.get("NBUTILS_GITHUB_RAW", "https://raw.githubusercontent.com").rstrip("/")


def url(model: str, file: str) -> str:
    return f"{raw_base()}/{REPO}/{COMMIT}/results/{model}/{file}"


def cached(model: str, file: str) -> Path:
    """The local copy of ``results/<model>/<file>``, downloaded first if it is not cached."""
    where = urlparse(raw_base()).netloc.replace(":", "_")
    target = CACHE_DIR / "alpaca_eval_results" / where / COMMIT[:7] / model / file
    if not target.exists():
        try:
            with urllib.request.urlopen(url(model, file), timeout=60) as response, atomic_path(target) as tmp:
                tmp.write_bytes(response.read())
        except urllib.error.HTTPError as e:
            raise FileNotFoundError(f"{url(model, file)}: HTTP {e.code}; is {model!r} a model in alpaca_eval's "
                                    f"results/ folder (https://github.com/{REPO}/tree/{COMMIT[:7]}/results)?") from e
        except OSError as e:
            raise ConnectionError(f"{url(model, file)}: {e}; check the network or NBUTILS_GITHUB_RAW, or put the "
                                  f"file at {target}") from e
    return target


def model_outputs(model: str) -> pd.DataFrame:
    """The leaderboard's ``model_outputs.json`` of ``model`` (805 rows, AlpacaEval's order)."""
    return pd.read_json(cached(model, "model_outputs.json"))


def annotations(model: str) -> pd.DataFrame:
    """GPT-4-turbo's judgments of ``model`` against the reference (``preference`` in [1, 2], 2 = the model)."""
    df = pd.read_json(cached(model, ANNOTATIONS))
    df["preference"] = df["preference"].astype(float)
    return df
