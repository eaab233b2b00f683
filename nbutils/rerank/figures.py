"""Stage 02's figures, saved as PNG beside its outputs and returned for inline display."""
from __future__ import annotations

import matplotlib.pyplot as plt

from nbutils.show.figures import save


def score_distribution(pairs, path, title: str = "Reward scores"):
    """Histogram of every scored response (each prompt's once, however many pairs it gave), with the
    chosen and rejected ones of each pair overlaid."""
    every = [s for row in pairs.drop_duplicates("prompt_id")["all_rm_scores"] for s in row if s is not None]
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


def comparison_matrix(matrix, answers, path, title: str = "Pairwise comparisons"):
    """Heatmap of the K×K matrix (row i, column j: how much the ranker prefers answer i to j), each
    answer labelled with its length and its part in the pairs (``answers``: comparisons.example's rows)."""
    import numpy as np
    k = len(matrix)
    labels = [f"{i}: {c} ch" + (f" ({p})" if p else "") for i, (c, p) in
              enumerate(zip(answers["chars"], answers.get("picked", [""] * k)))]
    top = float(np.abs(matrix).max()) or 1.0
    fig, ax = plt.subplots(figsize=(1.1 * k + 3, 0.9 * k + 1.5))
    image = ax.imshow(matrix, cmap="RdBu", vmin=-top, vmax=top)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(matrix[i, j]) > 0.6 * top else "black")
    ax.set_xticks(range(k), [str(j) for j in range(k)])
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="answer j", ylabel="answer i", title=title)
    fig.colorbar(image, ax=ax, label="i preferred to j (logit)")
    return save(fig, path)
