"""Stage 04's judging: a judge compares each model's outputs with a reference's; win rate,
standard error and length-controlled (LC) win rates as alpaca_eval computes them, each LC
named by its GLM; the published outputs of the leaderboard's models judged the same way;
the leaderboard's own rows beside them, every row labelled by its judge.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.compat.alpaca_eval import MINIMAL, V1

OFFLINE = "offline: {judge} vs {reference}"
OFFICIAL = "AlpacaEval 2.0 (GPT-4-turbo)"
LEADERBOARD = f"{OFFICIAL}, leaderboard"  # the judge label of the leaderboard's own rows
RUN, PUBLISHED, BOARD = "this run", "published outputs", "leaderboard"  # the ``kind`` of a row
LC = {"lc_v1": V1, "lc_minimal": MINIMAL}  # LC column -> alpaca_eval's GLM
LC_COLUMN = {glm: column for column, glm in LC.items()}
LC_NOTES = {
    "lc_v1": f"LC win rate by alpaca_eval's {V1} GLM, the leaderboard's: length term plus AlpacaEval's "
             "instruction difficulty, regularised toward verbose/concise GPT-4-turbo baselines (both from "
             "GPT-4-turbo's judgments, in the hub's df_gamed.csv); AlpacaEval only",
    "lc_minimal": f"LC win rate by alpaca_eval's {MINIMAL} GLM: length term and intercept, fit on this "
                  "judge's preferences alone; any eval set"}
ANNOTATIONS = "annotations.json"  # a model's judged instructions, beside its model_outputs.json
COLUMNS = ["model", "kind", "judge", "win_rate", "standard_error", "lc_v1", "lc_minimal", "avg_length", "empty", "n"]


def glms(on_alpaca_eval: bool) -> list[str]:
    """The GLMs that apply: the leaderboard's and the minimal one on AlpacaEval, else the minimal one."""
    return [V1, MINIMAL] if on_alpaca_eval else [MINIMAL]


def check_outputs(model: pd.DataFrame, reference: pd.DataFrame, name: str) -> None:
    """``model`` answers the reference's instructions, in order, with an ``output`` each."""
    missing = [c for c in ("instruction", "output") if c not in model.columns]
    if missing:
        raise ValueError(f"{name}: no {missing} field; a model_outputs.json is a list of "
                         '{"instruction": ..., "output": ..., "generator": ...} rows')
    if model["output"].isna().any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(model['output'].isna())[0])} has no output "
                         f"({int(model['output'].isna().sum())} rows in all); write \"\" for an empty answer")
    if len(model) != len(reference) or list(model["instruction"]) != list(reference["instruction"]):
        differ = [i for i, (a, b) in enumerate(zip(model["instruction"], reference["instruction"])) if a != b]
        first = f"; first at row {differ[0]}: {model['instruction'].iloc[differ[0]][:80]!r} where the reference " \
                f"has {reference['instruction'].iloc[differ[0]][:80]!r}" if differ else ""
        raise ValueError(f"{name}: its instructions differ from the reference's: {len(model)} vs {len(reference)} "
                         f"rows, {len(differ)} of the first {min(len(model), len(reference))} differ{first}; a win "
                         "rate needs the reference's instructions in its order")


def preferences(judge, instructions: list[str], reference: list[str], outputs: list[str], batch_size: int,
                desc: str | None = None, bucketing: bool = True):
    """alpaca_eval preferences in [1, 2] (2: the model's output wins, 1.5: tie): the sign of
    score(output) - score(reference). PairRM's two scores compare both orders and average them
    (llm-blender's ``compare(mode="[A,B]+[B,A]")``, exactly), so position bias cancels."""
    scores = judge.score(instructions, [[o, r] for o, r in zip(outputs, reference)], batch_size, desc=desc,
                         bucketing=bucketing)
    logits = np.array([s[0] - s[1] for s in scores])
    return np.where(logits > 0, 2.0, np.where(logits < 0, 1.0, 1.5))


def annotate(judge, judge_name: str, model_outputs: pd.DataFrame, reference: pd.DataFrame, name: str,
             batch_size: int, bucketing: bool = True) -> pd.DataFrame:
    """alpaca_eval annotations of ``model_outputs`` against ``reference`` by ``judge``."""
    check_outputs(model_outputs, reference, name)
    outputs = model_outputs["output"].fillna("")
    return pd.DataFrame({
        "index": range(len(reference)), "instruction": reference["instruction"],
        "output_1": reference["output"].values, "output_2": outputs.values,
        "generator_1": reference["generator"].iloc[0], "generator_2": name, "annotator": judge_name,
        "preference": preferences(judge, list(reference["instruction"]), list(reference["output"]),
                                  list(outputs), batch_size, desc=f"judging {name}", bucketing=bucketing)})


def row(annotations: pd.DataFrame, judge: str, kind: str, glm_names: list[str]) -> dict:
    """One leaderboard row from annotations: win rate ± SE, LC by each GLM, length, empty answers."""
    from nbutils.compat.alpaca_eval import win_rates
    out = {"model": annotations["generator_2"].iloc[0], "kind": kind, "judge": judge}
    for glm in glm_names:
        rates = win_rates(annotations, glm)
        out |= {"win_rate": rates["win_rate"], "standard_error": rates["standard_error"],
                LC_COLUMN[glm]: rates["length_controlled_winrate"]}
    outputs = annotations["output_2"]
    return out | {"avg_length": float(outputs.str.len().mean()), "empty": int((outputs.str.strip() == "").sum()),
                  "n": len(annotations)}


def judge_row(judge, judge_name: str, model_outputs: pd.DataFrame, reference: pd.DataFrame, name: str,
              batch_size: int, glm_names: list[str] = (MINIMAL,), kind: str = RUN, bucketing: bool = True,
              save_to: Path | None = None) -> dict:
    """One model's row under the offline judge; with ``save_to``, its annotations there too
    (``annotations.json``, alpaca_eval's format: :func:`read_annotations` reads them)."""
    annotations = annotate(judge, judge_name, model_outputs, reference, name, batch_size, bucketing)
    if save_to is not None:
        from nbutils.store.files import write_json
        write_json(annotations.to_dict("records"), Path(save_to) / ANNOTATIONS)
    label = OFFLINE.format(judge=judge_name, reference=reference["generator"].iloc[0])
    return row(annotations, label, kind, list(glm_names))


def read_annotations(folder: Path) -> pd.DataFrame:
    """A model's annotations as :func:`judge_row` saved them in ``folder``."""
    path = Path(folder) / ANNOTATIONS
    if not path.exists():
        raise FileNotFoundError(f"no {path}: run the judging cell of notebook 04 first (it saves them)")
    return pd.read_json(path, orient="records", dtype=False)


def published_rows(judge, judge_name: str, reference: pd.DataFrame, models: list[str], batch_size: int,
                   glm_names: list[str], bucketing: bool = True) -> list[dict]:
    """The leaderboard models' published outputs (first ``len(reference)`` instructions) under this judge."""
    from nbutils.sources import published
    return [judge_row(judge, judge_name, published.model_outputs(m).head(len(reference)), reference, m,
                      batch_size, glm_names, kind=PUBLISHED, bucketing=bucketing) for m in models]


def base_reproduction(judge, judge_name: str, run_base: pd.DataFrame, published_base: str, batch_size: int,
                      bucketing: bool = True) -> dict:
    """This run's base-model outputs judged against the published ones of ``published_base`` (50: alike)."""
    from nbutils.sources import published
    theirs = published.model_outputs(published_base).head(len(run_base)).assign(generator=published_base)
    r = row(annotate(judge, judge_name, run_base, theirs, "this run's base", batch_size, bucketing),
            OFFLINE.format(judge=judge_name, reference=published_base), RUN, [MINIMAL])
    return {"judge": r["judge"], "win_rate": r["win_rate"], "standard_error": r["standard_error"],
            "lc_minimal": r["lc_minimal"], "run_base_chars": r["avg_length"],
            "published_chars": float(theirs["output"].str.len().mean()), "n": r["n"], "published": published_base}


def reproduction_text(r: dict) -> str:
    """The base-reproduction check as one sentence."""
    alike = abs(r["win_rate"] - 50) <= 2 * r["standard_error"]
    return (f"Base reproduced? This run's base outputs vs the published {r['published']} outputs, judge "
            f"[{r['judge']}], {r['n']} instructions: win rate {r['win_rate']:.1f} ± {r['standard_error']:.1f} "
            f"(50 = alike), LC ({MINIMAL} GLM) {r['lc_minimal']:.1f}; mean length {r['run_base_chars']:,.0f} vs "
            f"{r['published_chars']:,.0f} chars: " + ("within 2 SE of 50, sampling matches the published run"
                                                      if alike else "more than 2 SE from 50: sampling differs "
                                                      "from the published run's; compare gains with care"))


def official_row(model_outputs: Path, name: str, out_dir: Path, requested: bool) -> dict | str:
    """The official AlpacaEval 2.0 judge's row, or why it was not run."""
    if not requested:
        return "not requested (official_judge: false)"
    if not os.environ.get("OPENAI_API_KEY"):
        return "skipped: OPENAI_API_KEY is not set in the environment"
    from nbutils.compat.alpaca_eval import official_evaluate
    return {"model": name, "kind": RUN, "judge": OFFICIAL, **official_evaluate(model_outputs, out_dir), "n": None}


def leaderboard(rows: list[dict], leaderboard_models: list[str]) -> pd.DataFrame:
    """Judged rows and the leaderboard's own rows of ``leaderboard_models``, each labelled by its judge."""
    from nbutils.compat.alpaca_eval import leaderboard_rows
    board = leaderboard_rows(leaderboard_models).assign(kind=BOARD, judge=LEADERBOARD)
    return pd.concat([pd.DataFrame(rows), board], ignore_index=True).reindex(columns=COLUMNS)


def lc_legend(board: pd.DataFrame) -> str:
    """What each LC column of ``board`` that has values means (printed under tables)."""
    return "\n".join(f"{c}: {LC_NOTES[c]}" for c in LC if c in board and board[c].notna().any())
