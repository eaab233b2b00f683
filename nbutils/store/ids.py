"""Stable ids and seeds: the same text or parts give the same value in every process."""
from __future__ import annotations

import hashlib


def prompt_id(prompt: str) -> str:
    """UltraFeedback's id convention: the sha256 hex digest of the prompt text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def derive_seed(*parts) -> int:
    """A 31-bit seed from any parts (stable across processes, unlike hash())."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) >> 1
