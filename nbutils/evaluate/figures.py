"""Stage 04's figures (and ``calibrate-judge``'s), saved as PNG and returned for inline display."""
from __future__ import annotations

import matplotlib.pyplot as plt

from nbutils.show.figures import save


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


def lc_fit(annotations, fit: dict, path, title: str = "Length control: the GLM's fit"):
    """Each instruction's preference for the model (0 loses, ½ tie, 1 wins; jittered) against its
    answer's length minus the reference's, the means of length bins, the fitted GLM curve
    (``fit``: ``compat.alpaca_eval.glm_fit``) and its value at equal length: the LC win rate."""
    import numpy as np
    import pandas as pd
    delta = (annotations["output_2"].str.len() - annotations["output_1"].str.len()).to_numpy(float)
    wins = (annotations["preference"].astype(float) - 1).to_numpy()
    w, b = (fit["weights"].get(k, np.nan) for k in ("np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"))
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, len(wins))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(delta, wins + jitter, s=10, alpha=0.4, color="#4C72B0", label="one instruction")
    bins = pd.qcut(delta, min(6, len(set(delta))), duplicates="drop")
    means = pd.DataFrame({"d": delta, "w": wins}).groupby(bins, observed=True).mean()
    ax.plot(means["d"], means["w"], "s", color="#222222", label="mean of a length bin")
    x = np.linspace(delta.min(), delta.max(), 200)
    ax.plot(x, 1 / (1 + np.exp(-(b + w * np.tanh(-x / fit["length_scale"])))), color="#DD8452",
            label=f"GLM: σ({b:.2f} {w:+.2f}·tanh(−Δ/{fit['length_scale']:.0f}))")
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.plot([0], [fit["length_controlled_winrate"] / 100], "o", color="#C44E52", ms=9,
            label=f"at equal length: LC {fit['length_controlled_winrate']:.1f}")
    ax.axhline(fit["win_rate"] / 100, color="#4C72B0", lw=1, ls=":", label=f"win rate {fit['win_rate']:.1f}")
    ax.set(xlabel="model answer − reference answer (characters), Δ", ylabel="model wins", ylim=(-0.08, 1.08),
           title=title)
    ax.legend(fontsize=8, loc="center right")
    return save(fig, path)
