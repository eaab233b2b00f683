"""Recipes side by side (notebook 06, ``python -m nbutils compare``): one row per run and iteration
(0: the base model), read from the files each run's stages wrote. What a method changes shows as
the win rate (± SE) and LC of the model it trained, under the judge that scored it (named in
every row), beside what it does to length: mean eval answer length, chosen length and how often
the chosen answer is the longer one. Runs compared so share their iteration-1 samples and scores
(``nbutils compare`` copies them), so iteration 1 differs only by pair selection and loss."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from nbutils.evaluate.judging import RUN
from nbutils.length.analysis import leaderboard, run_rows
from nbutils.store.files import read_json
from nbutils.store.paths import RunFolder

METHOD = ("pair_selection", "loss_type", "beta", "train_on", "reference_model", "ld_alpha")


def run_dirs(runs_dir: str | Path, names: list[str]) -> list[Path]:
    """The run folders of ``names``, each checked to be a run (its ``config.json``)."""
    from nbutils.store.files import repo_path
    folders = [repo_path(runs_dir) / name for name in names]
    if len(folders) < 2:
        raise ValueError(f"runs: {names}: name two runs or more to compare")
    missing = [str(f) for f in folders if not RunFolder(f).config.exists()]
    if missing:
        raise FileNotFoundError(f"runs: {', '.join(missing)} not a run yet (no config.json); make each with "
                                "python -m nbutils compare -f recipes/<a>.yaml -f recipes/<b>.yaml, or nbutils run -f")
    return folders


def method(run_dir: Path, params: dict | None = None) -> dict:
    """The recipe and the keys that make its method (what a comparison varies); ``params``: the run's,
    when read already (else from its ``config.json``)."""
    params = params or read_json(RunFolder(run_dir).config)["params"]
    return {"recipe": params.get("recipe") or run_dir.name, **{k: params[k] for k in METHOD if k in params}}


def samples_id(run_dir: Path) -> str | None:
    """A hash of iteration 1's samples (prompts and answers): equal when runs share them."""
    path = RunFolder(run_dir).generations(1)
    if not path.exists():
        return None
    df = pd.read_parquet(path, columns=["prompt_id", "all_generated_responses"])
    return hashlib.sha256(df.to_json().encode()).hexdigest()[:12]


def table(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per (run, iteration): the method's keys, win rate ± SE and LC with the judge and GLM
    that made them, eval answer length, candidate and chosen length, chosen-longer share."""
    frames = []
    for run_dir in run_dirs:
        params = read_json(RunFolder(run_dir).config)["params"]
        rows = run_rows(run_dir, params["num_iterations"]).reset_index()
        board = leaderboard(run_dir)
        mine = board.loc[board["kind"] == RUN, "judge"] if board is not None else pd.Series(dtype=str)
        judge = mine.iloc[0] if len(mine) else None
        keys = {k: str(v) for k, v in method(run_dir, params).items()}
        frames.append(rows.assign(run=run_dir.name, judge=judge, **keys))
    out = pd.concat(frames, ignore_index=True)
    first = ["run", "recipe", *[k for k in METHOD if k in out], "iteration", "judge"]
    return out[first + [c for c in out.columns if c not in first]].set_index(["run", "iteration"])


def wide(board: pd.DataFrame) -> pd.DataFrame:
    """:func:`table` as (measure, run) columns by iteration: what ``length.figures.run_comparison`` draws."""
    measures = [c for c in board.columns if pd.api.types.is_numeric_dtype(board[c])]
    return board[measures].unstack("run").sort_index()


def shared_samples(run_dirs: list[Path]) -> bool:
    """Whether every run started from the same iteration-1 samples."""
    ids = {samples_id(r) for r in run_dirs}
    return len(ids) == 1 and None not in ids


def published_methods() -> pd.DataFrame:
    """The field's methods on the same base model and PairRM, as their sources published them
    (AlpacaEval 2.0, GPT-4-turbo judge): a table of their own, another judge's numbers."""
    path = Path(__file__).parent.parent / "data" / "published_methods.csv"
    return pd.read_csv(path, comment="#").set_index("method")
