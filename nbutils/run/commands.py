"""``python -m nbutils evaluate`` and ``calibrate-judge``: stage 04's judge on files from anywhere,
and on the leaderboard's published judgments."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nbutils.evaluate import answers, judging
from nbutils.store.files import write_csv, write_json


class InputError(ValueError):
    """A model_outputs.json (or a reference) that cannot be judged as it is; says what to fix."""


def read_outputs(path: Path) -> tuple[str, pd.DataFrame]:
    """(model name, rows) of a ``model_outputs.json``; bad input names the file and what is wrong."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: expected a non-empty list of {{\"instruction\", \"output\", \"generator\"}} rows")
    for i, r in enumerate(rows):
        missing = [k for k in ("instruction", "output") if k not in r]
        if missing:
            raise InputError(f"{path}: row {i} has no {' or '.join(missing)} field")
    df = pd.DataFrame(rows)
    name = str(df["generator"].iloc[0]) if "generator" in df else \
        (Path(path).parent.name if Path(path).name == "model_outputs.json" else Path(path).stem)
    return name, df


def _run_base(stage) -> pd.DataFrame | None:
    if stage["reference_outputs"] not in ("auto", "base"):
        return None
    path = stage.run.evaluation / answers.slug("base") / "model_outputs.json"
    if not path.exists():
        raise InputError(f"reference_outputs: {stage['reference_outputs']} means this run's base outputs, and "
                         f"{path} does not exist: run stage 04 first, or set reference_outputs to a model_outputs.json")
    _, df = read_outputs(path)
    return df


def evaluate_files(values: dict, paths: list[str]) -> pd.DataFrame:
    """Judge each ``model_outputs.json`` against the preset's reference with the preset's judge;
    print the rows and save them to ``runs/<run>/evaluated/leaderboard.csv`` (same model: replaced)."""
    from nbutils.run.stage import stage_for
    from nbutils.rerank.judges import label as judge_label, stage_ranker
    stage = stage_for("04_evaluate", values)
    read = [(path, *read_outputs(Path(path))) for path in paths]  # every file read before the reference loads
    reference = answers.reference_outputs(stage, {} if answers.on_alpaca_eval(stage) else {"base": _run_base(stage)})
    files = []
    for path, name, df in read:  # every file checked before the judge loads
        df = df.head(len(reference)) if values["eval_instructions"] else df
        try:
            judging.check_outputs(df, reference, str(path))
        except ValueError as e:
            raise InputError(str(e)) from None
        empty = int((df["output"].fillna("").str.strip() == "").sum())
        if empty:
            print(f"note: {path}: {empty} of {len(df)} outputs are empty (counted: an empty answer loses)")
        files.append((path, name, df))
    judge = stage_ranker(stage, values["judge"] or values["ranker"])
    judge_name = judge_label(stage, values["judge"] or values["ranker"])
    rows = [judging.judge_row(judge, judge_name, df, reference, name, values["ranker_batch_size"],
                              judging.glms(answers.on_alpaca_eval(stage)), kind="file",
                              bucketing=values["ranker_bucketing"]) | {"file": str(path)}
            for path, name, df in files]
    board = pd.DataFrame(rows).reindex(columns=[*judging.COLUMNS, "file"])
    target = stage.run.evaluated_leaderboard
    if target.exists():
        board = pd.concat([pd.read_csv(target).query("model not in @board.model"), board], ignore_index=True)
    write_csv(board, target, index=False)
    print(board.round(2).to_string(index=False))
    print(judging.lc_legend(board))
    print(f"saved: {target}")
    return board


def calibrate_judge(values: dict) -> pd.DataFrame:
    """The offline judge against GPT-4-turbo on the leaderboard's published judgments of
    ``calibration_models`` (AlpacaEval's first ``eval_instructions``; 0: all 805); writes
    ``runs/<run>/judge_calibration/``: per-model table, correlations, a figure, calibration.json."""
    from nbutils.evaluate import calibration
    from nbutils.evaluate.figures import calibration_scatter
    from nbutils.sources.hub import alpaca_eval
    from nbutils.rerank.judges import label as judge_label, stage_ranker
    from nbutils.run.stage import stage_for
    stage = stage_for("04_evaluate", values)
    reference = alpaca_eval("reference")
    reference = reference.head(values["eval_instructions"] or len(reference)).reset_index(drop=True)
    judge = stage_ranker(stage, values["judge"] or values["ranker"])  # self: the base model judges
    judge_name = judge_label(stage, values["judge"] or values["ranker"])
    models = values["calibration_models"]
    pairs = calibration.judged(judge, judge_name, reference, models, values["ranker_batch_size"],
                               values["ranker_bucketing"])
    table, draws = calibration.per_model(pairs, judging.glms(True))
    corr = calibration.correlations(pairs, draws, judging.glms(True), values["calibration_bootstrap"], values["seed"])
    out = stage.run.calibration
    write_csv(table, out / "per_model.csv")
    write_csv(corr, out / "correlations.csv", index=False)
    about = calibration.describe(judge_name, str(reference["generator"].iloc[0]), models, len(reference),
                                 values["calibration_bootstrap"])
    write_json({**about, "per_model": table.reset_index().to_dict("records"),
                "correlations": corr.to_dict("records")}, out / "calibration.json")
    calibration_scatter(table, out / "judge_calibration.png", judge_name)
    print(f"judge {judge_name} vs {about['against']}, {len(reference)} instructions, {len(models)} models")
    print(table.round(1).to_string())
    print(corr.round(3).to_string(index=False))
    print(f"saved: {out}")
    return corr
