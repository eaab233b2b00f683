"""Stage 04's judging: a judge compares each model's outputs with a reference's; win
rate, standard error and length-controlled win rate as AlpacaEval computes them;
the leaderboard beside the anchors, every row labelled by its judge.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

OFFLINE = "offline: {judge} vs {reference}"
OFFICIAL = "AlpacaEval 2.0 (GPT-4-turbo)"
ANCHOR = f"{OFFICIAL}, leaderboard"  # the judge label of the leaderboard's own rows


def is_anchor(board: pd.DataFrame) -> pd.Series:
    """Which leaderboard rows are the AlpacaEval leaderboard's own numbers (not this run's)."""
    return board["judge"] == ANCHOR


def check_same_instructions(model: pd.DataFrame, reference: pd.DataFrame, name: str) -> None:
    if list(model["instruction"]) != list(reference["instruction"]):
        missing = set(reference["instruction"]) ^ set(model["instruction"])
        raise ValueError(f"{name}: its instructions differ from the reference's ({len(model)} vs "
                         f"{len(reference)} rows, {len(missing)} not in both, or in another order); "
                         f"a win rate needs the same instruction set")


def preferences(judge, instructions: list[str], reference: list[str], outputs: list[str], batch_size: int,
                desc: str | None = None):
    """alpaca_eval preferences in [1, 2] (2: the model's output wins, 1.5: tie). PairRM
    compares both orders and averages them ([A,B]+[B,A]), so position bias cancels."""
    from tqdm.auto import tqdm
    if hasattr(judge, "blender"):
        logits = np.concatenate([judge.blender.compare(
            instructions[s: s + batch_size], outputs[s: s + batch_size], reference[s: s + batch_size],
            batch_size=batch_size, return_logits=True, mode="[A,B]+[B,A]", disable_tqdm=True)
            for s in tqdm(range(0, len(instructions), batch_size), desc=desc, unit="batch", disable=desc is None)])
    else:
        scores = judge.score(instructions, [[o, r] for o, r in zip(outputs, reference)], batch_size, desc=desc)
        logits = np.array([s[0] - s[1] for s in scores])
    return np.where(logits > 0, 2.0, np.where(logits < 0, 1.0, 1.5))


def judge_row(judge, judge_name: str, model_outputs: pd.DataFrame, reference: pd.DataFrame,
              name: str, batch_size: int) -> dict:
    """One leaderboard row: win rate, its standard error, LC win rate, mean length."""
    from nbutils.compat.alpaca_eval import win_rates
    check_same_instructions(model_outputs, reference, name)
    annotations = pd.DataFrame({
        "index": range(len(reference)), "instruction": reference["instruction"],
        "output_1": reference["output"].values, "output_2": model_outputs["output"].values,
        "generator_1": reference["generator"].iloc[0], "generator_2": name, "annotator": judge_name,
        "preference": preferences(judge, list(reference["instruction"]), list(reference["output"]),
                                  list(model_outputs["output"]), batch_size, desc=f"judging {name}")})
    rates = win_rates(annotations)
    return {"model": name, "judge": OFFLINE.format(judge=judge_name, reference=reference["generator"].iloc[0]),
            "win_rate": rates["win_rate"], "standard_error": rates["standard_error"],
            "lc_win_rate": rates["length_controlled_winrate"],
            "avg_length": float(model_outputs["output"].str.len().mean()), "n": len(annotations)}


def official_row(model_outputs: Path, name: str, out_dir: Path, requested: bool) -> dict | str:
    """The official AlpacaEval 2.0 judge's row, or why it was not run."""
    if not requested:
        return "not requested (official_judge: false)"
    if not os.environ.get("OPENAI_API_KEY"):
        return "skipped: OPENAI_API_KEY is not set in the environment"
    from nbutils.compat.alpaca_eval import official_evaluate
    return {"model": name, "judge": OFFICIAL, **official_evaluate(model_outputs, out_dir), "n": None}


def leaderboard(rows: list[dict]) -> pd.DataFrame:
    """This run's rows and the leaderboard's anchor rows, each labelled by its judge."""
    from nbutils.compat.alpaca_eval import anchors
    board = anchors().assign(judge=ANCHOR, n=805)
    return pd.concat([pd.DataFrame(rows), board], ignore_index=True)[
        ["model", "judge", "win_rate", "standard_error", "lc_win_rate", "avg_length", "n"]]
