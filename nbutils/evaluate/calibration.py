"""Judge calibration: how far the offline judge can be trusted as a stand-in for the leaderboard's
GPT-4-turbo. For each model with published outputs and GPT-4-turbo annotations, the offline judge
judges the same outputs against the same reference; then

* per instruction, agreement: both judges prefer the same side (1), opposite sides (0), or either
  calls it a tie (0.5); the offline judge compares both orders, GPT-4-turbo's weighted preference
  is in [1, 2];
* beside it, the same agreement for "the longer answer wins" (more characters; equal length a
  tie) on the same outputs: GPT-4-turbo prefers longer answers, so a judge that only matched it
  as often as length does has shown nothing beyond length;
* across models, rank correlation (Spearman, Kendall) of the two judges' win rates, and of their LC
  win rates under the same GLM;
* 95% bootstrap intervals over instructions (the same resample for every model); for LC each
  resample refits every GLM, so at most ``LC_REFITS`` resamples (a fit takes ~0.2 s).
A correlation is NaN when one judge gives every model the same value (e.g. an LC GLM that found
no length effect and predicts 50 for all).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from nbutils.compat.alpaca_eval import ANNOTATOR
from nbutils.evaluate.judging import LC_COLUMN, annotate

LC_REFITS = 100
LONGER = "agreement, longer wins (%)"  # the length baseline's row in the correlations table


def judged(judge, judge_name: str, reference: pd.DataFrame, models: list[str], batch_size: int,
           bucketing: bool = True) -> dict:
    """model -> (the offline judge's annotations, GPT-4-turbo's), on the reference's instructions."""
    from nbutils.sources import published
    out = {}
    for m in models:
        theirs = published.annotations(m).head(len(reference)).reset_index(drop=True)
        outputs = theirs[["instruction", "output_2"]].rename(columns={"output_2": "output"})
        ours = annotate(judge, judge_name, outputs, reference, m, batch_size, bucketing)
        out[m] = (ours, theirs.assign(index=range(len(theirs)), generator_2=m))
    return out


def sides(preference: np.ndarray) -> np.ndarray:
    return np.sign(np.asarray(preference, dtype=float) - 1.5)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per instruction: 1 same side, 0 opposite sides, 0.5 when either judge calls a tie."""
    a, b = sides(ours), sides(theirs)
    return np.where((a == 0) | (b == 0), 0.5, (a == b).astype(float))


def longer_wins(annotations: pd.DataFrame) -> np.ndarray:
    """Preferences of "the longer answer wins": 2 when ``output_2`` has more characters, 1 fewer, 1.5 equal."""
    diff = annotations["output_2"].fillna("").str.len().to_numpy() - annotations["output_1"].fillna("").str.len().to_numpy()
    return 1.5 + 0.5 * np.sign(diff)


def per_model(pairs: dict, glm_names: list[str]) -> tuple[pd.DataFrame, dict]:
    """A row per model (agreement, both judges' win rate and LC per GLM) and the per-instruction
    values the win-rate bootstrap resamples: ``{measure: {judge: array models x instructions}}``."""
    from nbutils.compat.alpaca_eval import leaderboard_rows, win_rates
    board = leaderboard_rows(list(pairs)).set_index("model")
    rows, draws = [], {"agreement": {"both": [], "longer": []}, "win_rate": {"offline": [], "gpt4": []}}
    for m, (ours, theirs) in pairs.items():
        agree = agreement(ours["preference"], theirs["preference"])
        longer = agreement(longer_wins(ours), theirs["preference"])
        r = {"model": m, "n": len(ours), "agreement": 100 * agree.mean(), "agreement_longer_wins": 100 * longer.mean(),
             "win_rate_gpt4": 100 * (theirs["preference"] - 1).mean(), "win_rate_offline": 100 * (ours["preference"] - 1).mean(),
             "leaderboard_win_rate": board.loc[m, "win_rate"], "leaderboard_lc_v1": board.loc[m, "lc_v1"]}
        draws["agreement"]["both"].append(agree)
        draws["agreement"]["longer"].append(longer)
        draws["win_rate"]["offline"].append(ours["preference"].to_numpy() - 1)
        draws["win_rate"]["gpt4"].append(theirs["preference"].to_numpy() - 1)
        for glm in glm_names:
            col = LC_COLUMN[glm]
            for who, ann in (("offline", ours), ("gpt4", theirs)):
                r[f"{col}_{who}"] = win_rates(ann, glm)["length_controlled_winrate"]
        rows.append(r)
    return pd.DataFrame(rows).set_index("model"), {k: {w: np.array(v) for w, v in d.items()} for k, d in draws.items()}


def _lc_means(pairs: dict, glm: str, rows) -> tuple[np.ndarray, np.ndarray]:
    """Each model's LC (GLM ``glm``, refit on instructions ``rows``) under the offline judge and GPT-4-turbo."""
    from nbutils.compat.alpaca_eval import win_rates
    return tuple(np.array([win_rates(pair[k].iloc[rows], glm)["length_controlled_winrate"] for pair in pairs.values()])
                 for k in (0, 1))


def correlations(pairs: dict, draws: dict, glm_names: list[str], n_boot: int, seed: int) -> pd.DataFrame:
    """Spearman and Kendall of the offline judge's per-model values with GPT-4-turbo's, per measure,
    the mean agreement and that of "the longer answer wins", each with a 95% bootstrap interval over
    instructions (the same resamples)."""
    from scipy.stats import kendalltau, spearmanr
    from tqdm.auto import tqdm
    rng = np.random.default_rng(seed)
    n = draws["win_rate"]["offline"].shape[1]
    samples = [rng.integers(0, n, n) for _ in range(n_boot)]
    stats = {"spearman": lambda a, b: spearmanr(a, b).statistic, "kendall": lambda a, b: kendalltau(a, b).statistic}
    per_measure = {"win_rate": (draws["win_rate"]["offline"].mean(1), draws["win_rate"]["gpt4"].mean(1),
                                [(draws["win_rate"]["offline"][:, s].mean(1), draws["win_rate"]["gpt4"][:, s].mean(1))
                                 for s in samples])}
    for glm in glm_names:
        col = LC_COLUMN[glm]
        per_measure[col] = (*_lc_means(pairs, glm, slice(None)),
                            [_lc_means(pairs, glm, s) for s in tqdm(samples[:LC_REFITS], desc=f"LC bootstrap ({glm})",
                                                                    unit="refit")])
    rows = []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input (the value is NaN, and says so)
        for measure, (off, gpt, boots) in per_measure.items():
            for name, f in stats.items():
                boot = np.array([f(a, b) for a, b in boots])
                lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan)
                rows.append({"measure": measure, "statistic": name, "value": f(off, gpt), "ci_low": lo, "ci_high": hi,
                             "resamples": len(boots)})
    for measure, agree in (("agreement (%)", draws["agreement"]["both"]),
                           (LONGER, draws["agreement"]["longer"])):
        boot = np.array([agree[:, s].mean() for s in samples])
        rows.append({"measure": measure, "statistic": "mean over models", "value": 100 * agree.mean(),
                     "ci_low": 100 * np.percentile(boot, 2.5), "ci_high": 100 * np.percentile(boot, 97.5),
                     "resamples": n_boot})
    return pd.DataFrame(rows)


def describe(judge_name: str, reference: str, models: list[str], n: int, n_boot: int) -> dict:
    return {"judge": judge_name, "against": f"{ANNOTATOR} (the AlpacaEval 2.0 leaderboard's GPT-4-turbo)",
            "reference": reference, "models": models, "instructions": n, "bootstrap": n_boot}
