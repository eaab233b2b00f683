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
    """One panel per judge (its label the panel's title): win rate ± SE and each LC that has
    values, named by its GLM; within a panel, rows of published outputs are hatched."""
    import numpy as np

    from nbutils.evaluate.judging import LC, PUBLISHED
    judges = list(dict.fromkeys(board["judge"]))
    measures = [("win_rate", "win rate", "#4C72B0")] + [
        (c, f"LC, {glm} GLM", color) for (c, glm), color in zip(LC.items(), ["#DD8452", "#55A868"])
        if c in board and board[c].notna().any()]
    sizes = [int((board["judge"] == j).sum()) for j in judges]
    fig, axes = plt.subplots(len(judges), 1, figsize=(9, 0.5 * len(board) * len(measures) / 2 + 1.2 * len(judges)),
                             sharex=True, squeeze=False, gridspec_kw={"height_ratios": sizes})
    height = 0.8 / len(measures)
    for ax, judge in zip(axes[:, 0], judges):
        rows = board[board["judge"] == judge].reset_index(drop=True)
        y = np.arange(len(rows))
        for k, (col, label, color) in enumerate(measures):
            values = rows[col].astype(float)
            bars = ax.barh(y - 0.4 + height * (k + 0.5), values.fillna(0), height, color=color, label=label,
                           xerr=rows["standard_error"] if col == "win_rate" else None)
            for bar, kind, v in zip(bars, rows.get("kind", [""] * len(rows)), values):
                bar.set_hatch("//" if kind == PUBLISHED else None)
                bar.set_visible(v == v)
        ax.set_yticks(y, rows["model"], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(50, color="grey", lw=1, ls="--")
        ax.set_title(f"judge: {judge}", fontsize=9, loc="left")
    from matplotlib.patches import Patch
    handles = [Patch(color=color, label=label) for _, label, color in measures]
    if (board.get("kind") == PUBLISHED).any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                             label="published outputs of a leaderboard model"))
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("% (each panel: one judge; 50: as good as that panel's reference)")
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return save(fig, path)


def calibration_scatter(table, path, judge: str):
    """Per model: the offline judge's win rate (y) against GPT-4-turbo's (x), and each LC likewise."""
    cols = [c.removesuffix("_offline") for c in table.columns if c.endswith("_offline")]
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 4.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        x, y = table[f"{col}_gpt4"], table[f"{col}_offline"]
        ax.scatter(x, y, color="#4C72B0")
        for model in table.index:
            ax.annotate(model, (x[model], y[model]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--")
        name = "win rate" if col == "win_rate" else f"LC ({col.removeprefix('lc_')} GLM)"
        ax.set(xlabel=f"{name}, judge GPT-4-turbo (%)", ylabel=f"{name}, judge {judge} (%)", title=name)
    fig.suptitle("Offline judge vs the leaderboard's GPT-4-turbo, same outputs and reference", y=1.0)
    fig.tight_layout()
    return save(fig, path)
