"""Judges of one explicit, measurable axis each, as ``module:function`` rankers (``ranker:`` or
``judge: nbutils.rerank.axes:relevance``), cheap enough for 2 CPU cores.

``relevance``: the cosine similarity of the instruction's and the answer's static embeddings
(WordLlama, PyPI ``wordllama``: 256-d token embeddings distilled from an LLM's, mean-pooled; the
wheel ships them, nothing is downloaded). It measures whether an answer is about what was asked,
nothing else: not correctness, not helpfulness, and a paraphrase of the question scores high. It
is named for that one axis, so a table that shows its win rate says what was compared.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.cache
def wordllama():
    """WordLlama's 256-d model from the installed wheel. Its loader looks for the tokenizer under
    ``tokenizer/`` in ``cache_dir`` while the wheel has ``tokenizers/``, so the package folder is
    passed as ``cache_dir`` with downloads off (a missing file then fails instead of fetching)."""
    try:
        import wordllama as package
        from wordllama import WordLlama
    except ImportError as e:
        raise ImportError("judge/ranker nbutils.rerank.axes:relevance needs the wordllama wheel: "
                          "pip install --no-deps wordllama==0.4.0.post1 toml==0.10.2 (both in requirements/cpu.txt)") from e
    from pathlib import Path
    return WordLlama.load(cache_dir=Path(package.__file__).parent, disable_download=True)


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings (an empty text: the zero vector, so its relevance is 0)."""
    vectors = np.asarray(wordllama().embed(texts, norm=False), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def relevance(prompt: str, response: str) -> float:
    """Cosine similarity in [-1, 1] of the instruction's and the answer's embeddings."""
    if not prompt.strip() or not response.strip():
        return 0.0
    a, b = embed([prompt, response])
    return float(a @ b)
