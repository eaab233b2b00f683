"""Stage 05: how answer length moves across a run's iterations, read from the
files stages 01, 02 and 04 wrote (lengths in characters, as AlpacaEval counts)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nbutils.evaluate.judging import LC, RUN
from nbutils.store.files import read_json
from nbutils.store.paths import RunFolder
from nbutils.rerank.dataset import load_split, split_names

SPPO_CSV = Path(__file__).parent.parent / "data" / "sppo_iterations.csv"


def iterations_done(run_dir: Path, num_iterations: int) -> list[int]:
    """The iterations of ``run_dir`` whose generations and pairs exist (a clear error if none)."""
    done = [n for n in range(1, num_iterations + 1)
            if RunFolder(run_dir).generations(n).exists() and (RunFolder(run_dir).preference_data(n) / "data").is_dir()]
    if not done:
        raise FileNotFoundError(f"{run_dir}: no iteration has both generations.parquet and preference_data "
                                "yet; run stages 01_generate and 02_rerank first")
    return done


def candidates(run_dir: Path, iterations: list[int]) -> pd.DataFrame:
    """One row per generated response: iteration, prompt_id, chars, tokens, hit_max_new_tokens."""
    frames = []
    for n in iterations:
        g = pd.read_parquet(RunFolder(run_dir).generations(n))
        long = g[["prompt_id", "all_generated_responses", "response_num_tokens", "finish_reasons"]].explode(
            ["all_generated_responses", "response_num_tokens", "finish_reasons"])
        frames.append(pd.DataFrame({"iteration": n, "prompt_id": long["prompt_id"].values,
                                    "chars": long["all_generated_responses"].str.len().values,
                                    "tokens": long["response_num_tokens"].astype(int).values,
                                    "hit_max_new_tokens": (long["finish_reasons"] == "length").values}))
    return pd.concat(frames, ignore_index=True)


def candidate_table(cands: pd.DataFrame) -> pd.DataFrame:
    """Per iteration: responses, mean/median/p90 chars, mean tokens, share that hit max_new_tokens."""
    by = cands.groupby("iteration")
    return pd.DataFrame({"responses": by.size(), "mean_chars": by["chars"].mean(),
                         "median_chars": by["chars"].median(), "p90_chars": by["chars"].quantile(0.9),
                         "mean_tokens": by["tokens"].mean(), "hit_max_new_tokens": by["hit_max_new_tokens"].mean()})


def pairs(run_dir: Path, iterations: list[int]) -> pd.DataFrame:
    """Every DPO pair (train and test splits) with its candidates' lengths and scores: a row per pair,
    so a prompt with several pairs (``all_pairs``) has several rows."""
    frames = []
    for n in iterations:
        folder = RunFolder(run_dir).preference_data(n)
        for name in split_names([str(p) for p in folder.glob("data/*.parquet")]):
            df = load_split(folder, name).to_pandas()
            frames.append(pd.DataFrame({
                "iteration": n, "split": name, "prompt_id": df["prompt_id"].values,
                "chosen_chars": df["chosen"].map(lambda m: len(m[-1]["content"])).values,
                "rejected_chars": df["rejected"].map(lambda m: len(m[-1]["content"])).values,
                "responses": df["all_generated_responses"].map(list).values,
                "scores": df["all_rm_scores"].map(list).values}))
    return pd.concat(frames, ignore_index=True)


def pair_table(prs: pd.DataFrame) -> pd.DataFrame:
    """Per iteration: pairs, mean chosen and rejected chars, share where the chosen is longer (over the
    pairs DPO trains on: a prompt with several pairs counts once per pair)."""
    by = prs.assign(chosen_longer=prs["chosen_chars"] > prs["rejected_chars"]).groupby("iteration")
    return pd.DataFrame({"pairs": by.size(), "mean_chosen_chars": by["chosen_chars"].mean(),
                         "mean_rejected_chars": by["rejected_chars"].mean(),
                         "chosen_longer": by["chosen_longer"].mean()})


def scored(prs: pd.DataFrame) -> pd.DataFrame:
    """One row per scored response of the paired prompts: iteration, prompt_id, chars, score (each
    prompt once, however many pairs it gave)."""
    once = prs.drop_duplicates(["iteration", "prompt_id"])
    rows = [(r.iteration, r.prompt_id, len(t), s) for r in once.itertuples()
            for t, s in zip(r.responses, r.scores) if s is not None and not np.isnan(s)]
    return pd.DataFrame(rows, columns=["iteration", "prompt_id", "chars", "score"])


def score_length_table(run_dir: Path, scores: pd.DataFrame) -> pd.DataFrame:
    """Per iteration: Spearman of ranker score with length over all scored responses, its
    mean within a prompt (the ranker's length preference among answers to one question),
    and the share of responses the ranker truncated (stage 02's count)."""
    from scipy.stats import spearmanr

    out = {}
    for n, df in scores.groupby("iteration"):
        within = [spearmanr(g["chars"], g["score"]).statistic for _, g in df.groupby("prompt_id")
                  if g["chars"].nunique() > 1 and g["score"].nunique() > 1]
        rerank = read_json(RunFolder(run_dir).metrics(n), {}).get("02_rerank", {})
        truncated = rerank.get("responses_truncated_by_ranker")
        out[n] = {"scored_responses": len(df), "spearman": spearmanr(df["chars"], df["score"]).statistic,
                  "spearman_within_prompt": float(np.mean(within)) if within else np.nan,
                  "truncated_by_ranker": truncated / rerank["responses"] if truncated is not None else np.nan}
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("iteration")


def leaderboard(run_dir: Path) -> pd.DataFrame | None:
    """Stage 04's leaderboard with each row's kind (this run, published outputs, leaderboard) and SPPO's
    iterations, and ``lc``: the leaderboard's GLM's LC where it applies, else the minimal GLM's, named in
    ``lc_glm``. None when the run has not been evaluated."""
    path = RunFolder(run_dir).leaderboard
    if not path.exists():
        return None
    board = pd.read_csv(path)
    sppo = pd.read_csv(SPPO_CSV, comment="#").assign(kind="SPPO iterations",
                                                     judge="AlpacaEval 2.0 (GPT-4-turbo), SPPO README / paper")
    board = pd.concat([board, sppo], ignore_index=True)
    board["lc_glm"] = np.where(board["lc_v1"].notna(), LC["lc_v1"], LC["lc_minimal"])
    board["lc"] = board["lc_v1"].fillna(board["lc_minimal"])
    return board


def iteration_of(model: str) -> int | None:
    """``iteration 2`` -> 2, ``base`` -> 0, anything else (best-of-N, anchors) -> None."""
    if model == "base":
        return 0
    parts = model.split()
    return int(parts[1]) if len(parts) == 2 and parts[0] == "iteration" and parts[1].isdigit() else None


def run_rows(run_dir: Path, num_iterations: int) -> pd.DataFrame:
    """One row per iteration (0 = the base model) of what length control should move:
    mean candidate length, chosen length and share, eval length, win rate and LC (a column per
    GLM that the run's rows have: ``lc_v1`` on AlpacaEval, ``lc_minimal``)."""
    its = iterations_done(run_dir, num_iterations)
    table = candidate_table(candidates(run_dir, its))[["mean_chars"]].rename(columns={"mean_chars": "candidate_chars"})
    table = table.join(pair_table(pairs(run_dir, its))[["mean_chosen_chars", "chosen_longer"]])
    board = leaderboard(run_dir)
    if board is not None:
        mine = board[board["kind"] == RUN].assign(iteration=lambda b: b["model"].map(iteration_of))
        mine = mine.dropna(subset=["iteration"]).astype({"iteration": int}).set_index("iteration")
        lc = [c for c in LC if mine[c].notna().any()]
        table = table.join(mine[["avg_length", "win_rate", "standard_error", *lc]], how="outer")
    return table.rename_axis("iteration")


def compare(run_dir: Path, other_dir: Path, num_iterations: int) -> pd.DataFrame:
    """This run and another side by side, per iteration: columns (measure, run name).
    The other run's iterations are read from its ``config.json``."""
    config = read_json(RunFolder(other_dir).config)
    if config is None:
        raise FileNotFoundError(f"compare_run: {other_dir} is not a run (no config.json); make it first, "
                                f"e.g. python -m nbutils run -f recipes/tiny.yaml")
    rows = {run_dir.name: run_rows(run_dir, num_iterations),
            other_dir.name: run_rows(other_dir, config["params"]["num_iterations"])}
    measures = list(dict.fromkeys(c for df in rows.values() for c in df.columns))
    return pd.DataFrame({(m, name): df[m] if m in df else np.nan for m in measures for name, df in rows.items()})


def comparison(run_dir: Path, compare_run: str, num_iterations: int) -> pd.DataFrame | None:
    """:func:`compare` with ``compare_run`` beside this run, or None (and why) when it is
    empty or not made yet."""
    if not compare_run:
        print("compare_run is empty: no side-by-side comparison (the -lc presets name the plain run)")
        return None
    other = run_dir.parent / compare_run
    if not RunFolder(other).config.exists():
        print(f"compare_run {compare_run!r}: no such run in {run_dir.parent} yet; make it, then rerun this "
              f"stage (e.g. python -m nbutils run -f recipes/tiny.yaml, then --stages 05_length_analysis)")
        return None
    return compare(run_dir, other, num_iterations)


def records(table: pd.DataFrame) -> dict:
    """A per-iteration table as JSON-ready ``{iteration: {column: value}}`` (NaN -> None)."""
    if isinstance(table.columns, pd.MultiIndex):
        table = table.set_axis([" · ".join(map(str, c)) for c in table.columns], axis=1)
    clean = table.astype(object).where(table.notna(), None)
    return {str(k): v for k, v in clean.to_dict("index").items()}


def answer_examples(run_dir: Path, k: int = 2, width: int = 600) -> pd.DataFrame | None:
    """The first ``k`` eval instructions answered by each model of this run (stage 04's
    ``model_outputs.json``, in leaderboard order), each answer up to ``width`` characters, with its
    full length: how the answers change, in the models' own words. None before stage 04."""
    from nbutils.evaluate.answers import slug
    board = leaderboard(run_dir)
    if board is None:
        return None
    rows = []
    for model in board.loc[board["kind"] == RUN, "model"]:
        outputs = read_json(RunFolder(run_dir).evaluation / slug(model) / "model_outputs.json", [])
        rows += [{"instruction": o["instruction"], "model": model, "chars": len(o["output"]),
                  "answer": o["output"][:width] + (" […]" if len(o["output"]) > width else "")} for o in outputs[:k]]
    return pd.DataFrame(rows).sort_values("instruction", kind="stable").set_index(["instruction", "model"]) if rows else None
