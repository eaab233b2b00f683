"""Saving a figure: PNG beside the stage's outputs, written atomically, and returned for inline
display. Each stage package draws its own figures (``generate.figures``, ``rerank.figures``, ...)."""
from __future__ import annotations

from pathlib import Path

from nbutils.store.files import atomic_path


def save(fig, path: str | Path):
    """Write ``fig`` to ``path`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return fig
