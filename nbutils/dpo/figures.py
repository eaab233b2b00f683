"""Stage 03's figures, saved as PNG beside its outputs and returned for inline display."""
from __future__ import annotations

import matplotlib.pyplot as plt

from nbutils.show.figures import save


def training_curves(steps: list[dict], path, title: str = "DPO training", reward: str = "implicit reward"):
    """Loss, rewards (chosen, rejected, margin; ``reward`` names them: ``nbutils.dpo.losses.reward_name``),
    accuracy and learning rate per step."""
    import pandas as pd
    df = pd.DataFrame(steps).set_index("step")
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    panels = [("loss", ["loss"]), (reward, ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
              ("pair accuracy", ["rewards/accuracies"]), ("learning rate", ["learning_rate"])]
    for ax, (name, cols) in zip(axes, panels):
        for col in [c for c in cols if c in df]:
            ax.plot(df.index, df[col], label=col.split("/")[-1])
        ax.set(title=name, xlabel="step")
        if len(cols) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, y=1.04)
    return save(fig, path)
