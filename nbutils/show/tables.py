"""Tables for the notebooks: a stage's numbers as a table, long text shown whole."""
from __future__ import annotations

import pandas as pd

WHOLE = {"text-align": "left", "white-space": "pre-wrap"}


def stats(values: dict, name: str = "value") -> pd.DataFrame:
    """A dict of numbers (nested dicts flattened as ``a.b``) as a table of one row per key."""
    flat = pd.json_normalize(values, sep=".").iloc[0] if values else pd.Series(dtype=object)
    return flat.rename(name).rename_axis("").to_frame().map(
        lambda v: round(v, 4) if isinstance(v, float) else v)


def whole(df: pd.DataFrame):
    """``df`` with every cell shown whole (no "…"), left-aligned: for help texts and answers."""
    return df.style.set_properties(**WHOLE)
