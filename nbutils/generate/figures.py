"""Stage 01's figures, saved as PNG beside its outputs and returned for inline display."""
from __future__ import annotations

import matplotlib.pyplot as plt

from nbutils.show.figures import save


def response_length_histogram(df, path, title: str = "Response lengths"):
    """Histogram of response lengths in tokens, truncated responses marked."""
    lengths = df["response_num_tokens"].explode().astype(int)
    truncated = df["finish_reasons"].explode() == "length"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([lengths[~truncated.values], lengths[truncated.values]], bins=30, stacked=True,
            label=["ended with EOS", "hit max_new_tokens"], color=["#4C72B0", "#DD8452"])
    ax.set(xlabel="response length (tokens)", ylabel="responses", title=title)
    ax.legend()
    return save(fig, path)
