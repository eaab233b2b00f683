"""Figures: saved as PNG beside the stage's outputs and returned for inline display."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from nbutils.files import atomic_path


def save(fig, path: str | Path):
    """Write ``fig`` to ``path`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return fig


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


def score_distribution(pairs, path, title: str = "Reward scores"):
    """Histogram of every scored response, with the chosen and rejected ones overlaid."""
    every = [s for row in pairs["all_rm_scores"] for s in row if s is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(every, bins=30, color="#BBBBBB", label="all responses")
    ax.hist(pairs["score_chosen"], bins=30, alpha=0.7, color="#55A868", label="chosen")
    ax.hist(pairs["score_rejected"], bins=30, alpha=0.7, color="#C44E52", label="rejected")
    ax.set(xlabel="reward score", ylabel="responses", title=title)
    ax.legend()
    return save(fig, path)


def pair_lengths(pairs, path, title: str = "Chosen vs rejected length"):
    """Each pair as a point: rejected length (x) vs chosen length (y), in characters."""
    chosen = [len(c[-1]["content"]) for c in pairs["chosen"]]
    rejected = [len(r[-1]["content"]) for r in pairs["rejected"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(rejected, chosen, s=12, alpha=0.6)
    top = max(chosen + rejected + [1])
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="same length")
    longer = sum(c > r for c, r in zip(chosen, rejected)) / max(len(chosen), 1)
    ax.set(xlabel="rejected (chars)", ylabel="chosen (chars)",
           title=f"{title}\nchosen is longer in {longer:.0%} of pairs")
    ax.legend()
    return save(fig, path)


def training_curves(steps: list[dict], path, title: str = "DPO training"):
    """Loss, implicit rewards (chosen, rejected, margin), accuracy and learning rate per step."""
    import pandas as pd
    df = pd.DataFrame(steps).set_index("step")
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    panels = [("loss", ["loss"]), ("implicit reward", ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
              ("pair accuracy", ["rewards/accuracies"]), ("learning rate", ["learning_rate"])]
    for ax, (name, cols) in zip(axes, panels):
        for col in [c for c in cols if c in df]:
            ax.plot(df.index, df[col], label=col.split("/")[-1])
        ax.set(title=name, xlabel="step")
        if len(cols) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, y=1.04)
    return save(fig, path)


def leaderboard_bars(board, path, title: str = "Win rate against the reference"):
    """Win rate and LC win rate per row, grouped by judge; anchors hatched."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(board) + 1.2))
    y = np.arange(len(board))
    from nbutils.evaluate.judging import is_anchor
    anchors = is_anchor(board)
    ax.barh(y + 0.2, board["win_rate"], 0.4, xerr=board["standard_error"], color="#4C72B0", label="win rate",
            hatch=None)
    ax.barh(y - 0.2, board["lc_win_rate"], 0.4, color="#DD8452", label="LC win rate")
    for i in np.flatnonzero(anchors.values):
        for patch in ax.patches[i::len(board)]:
            patch.set_hatch("//")
    ax.set_yticks(y, [f"{m}\n[{j}]" for m, j in zip(board["model"], board["judge"])], fontsize=7)
    ax.axvline(50, color="grey", lw=1, ls="--")
    ax.invert_yaxis()
    ax.set(xlabel="% (hatched: the AlpacaEval 2.0 leaderboard's own numbers)", title=title)
    ax.legend(loc="lower right")
    return save(fig, path)
