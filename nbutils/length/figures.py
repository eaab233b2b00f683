"""Stage 05's figures: answer length across iterations, saved as PNG and returned."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from nbutils.show.figures import save

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
SHORT = {"Mistral-7B-Instruct-v0.2": "Mistral-7B-Instruct", "Snorkel-Mistral-PairRM-DPO": "Snorkel",
         "Snorkel-Mistral-PairRM-DPO-best-of-16": "Snorkel best-of-16", "SPPO-Mistral7B-PairRM": "SPPO (board)"}


def candidate_lengths(cands, path, title: str = "Generated candidates per iteration"):
    """Each iteration's candidate lengths as a step histogram, its mean marked."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.histogram_bin_edges(cands["chars"], bins=40)
    for color, (n, df) in zip(COLORS, cands.groupby("iteration")):
        ax.hist(df["chars"], bins=bins, histtype="step", lw=1.8, color=color,
                label=f"iteration {n} (mean {df['chars'].mean():,.0f})")
        ax.axvline(df["chars"].mean(), color=color, ls="--", lw=1)
    ax.set(xlabel="response length (chars)", ylabel="responses", title=title)
    ax.legend()
    return save(fig, path)


def chosen_vs_rejected_by_iteration(table, path, title: str = "Chosen vs rejected length per iteration"):
    """Mean chosen and rejected length per iteration, the share of longer chosen ones on top."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["mean_chosen_chars"], 0.4, color="#55A868", label="chosen")
    ax.bar(x + 0.2, table["mean_rejected_chars"], 0.4, color="#C44E52", label="rejected")
    for i, share in enumerate(table["chosen_longer"]):
        top = max(table["mean_chosen_chars"].iloc[i], table["mean_rejected_chars"].iloc[i])
        ax.annotate(f"chosen longer\nin {share:.0%}", (i, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"iteration {n}" for n in table.index])
    ax.set(ylabel="mean length (chars)", title=title)
    ax.margins(y=0.25)
    ax.legend(loc="lower right")
    return save(fig, path)


def score_vs_length(scores, table, path, title: str = "Ranker score vs length"):
    """Score against length for every scored response, a panel per iteration with Spearman's rho."""
    groups = list(scores.groupby("iteration"))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.4), sharey=True, squeeze=False)
    for ax, color, (n, df) in zip(axes[0], COLORS, groups):
        row = table.loc[n]
        ax.scatter(df["chars"], df["score"], s=8, alpha=0.5, color=color)
        ax.set_title(f"iteration {n}: Spearman {row['spearman']:.2f}, within a prompt "
                     f"{row['spearman_within_prompt']:.2f}\ntruncated by the ranker: {row['truncated_by_ranker']:.1%}",
                     fontsize=9)
        ax.set_xlabel("length (chars)")
    axes[0][0].set_ylabel("ranker score")
    fig.suptitle(title, y=1.06)
    return save(fig, path)


def labels_apart(ax, points, gap: float = 9, width: float = 110):
    """Label each (x, y, text) point, nudging labels up (with a leader line) so that no two labels
    closer than ``width`` points across overlap; positions in points (1/72 inch)."""
    ax.autoscale_view()
    scale, placed = ax.figure.dpi / 72, []
    for x, y, text in sorted(points, key=lambda p: p[1]):
        px, py = ax.transData.transform((x, y)) / scale
        ly = py + 3
        for qx, qy in sorted(placed, key=lambda q: q[1]):  # bottom-up: each push only meets labels above
            if abs(qx - px) < width and qy - gap < ly < qy + gap:
                ly = qy + gap
        placed.append((px, ly))
        ax.annotate(text, (x, y), xytext=(4, ly - py), textcoords="offset points", fontsize=7,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="grey") if ly - py > 6 else None)


def eval_length_vs_win_rate(board, path, title: str = "Evaluation: average length vs win rate"):
    """Win rate and LC win rate against average answer length: this run's models joined
    in order, the leaderboard's anchors and SPPO's iterations on the same axes (log x)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    styles = {"this run": dict(marker="o", color="#4C72B0"), "published outputs": dict(marker="D", color="#55A868"),
              "leaderboard": dict(marker="s", color="#888888"), "SPPO iterations": dict(marker="^", color="#DD8452")}
    for ax, col, name in zip(axes, ["win_rate", "lc"], ["win rate", "LC win rate"]):
        for kind, df in board.groupby("kind", sort=False):
            line = kind in ("this run", "SPPO iterations")
            glm = f"; LC: {df['lc_glm'].iloc[0].removeprefix('length_controlled_')} GLM" if col == "lc" else ""
            ax.plot(df["avg_length"], df[col], ls="-" if line else "none", label=f"{kind} [{df['judge'].iloc[0]}{glm}]",
                    **styles[kind])
        ax.set(xscale="log", xlabel="average length (chars, log scale)", ylabel=f"{name} (%)", title=name)
        labels_apart(ax, [(r["avg_length"], r[col], SHORT.get(r["model"], r["model"]).replace("SPPO iteration ", "SPPO it "))
                          for _, r in board.iterrows()])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
    for ax in axes:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.suptitle(f"{title}\n(marker = judge: each legend entry names the judge and reference of its points, "
                 "and the GLM of its LC)", y=1.07, fontsize=10)
    return save(fig, path)


def run_comparison(table, path, title: str = "With and without length control"):
    """Per iteration, each run's candidate, chosen and eval length, win rate and LC."""
    panels = [("candidate_chars", "mean candidate length (chars)"), ("mean_chosen_chars", "mean chosen length"),
              ("avg_length", "eval average length"), ("win_rate", "win rate (%)"), ("lc_v1", "LC win rate, v1 GLM (%)"),
              ("lc_minimal", "LC win rate, minimal GLM (%)")]
    panels = [(c, t) for c, t in panels if c in table.columns.get_level_values(0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (col, name) in zip(axes[0], panels):
        for color, run in zip(COLORS, table[col].columns):
            values = table[col][run].dropna()
            err = table["standard_error"][run].reindex(values.index) if col == "win_rate" else None
            ax.errorbar(values.index, values, yerr=err, marker="o", color=color, label=run, capsize=3)
        ax.set(title=name, xlabel="iteration (0: base)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, y=1.05)
    return save(fig, path)
