"""Stage 05: length-controlled pairs, the length analysis of a finished run, and the run report."""
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scipy.stats import spearmanr

from nbutils.length import analysis as L
from nbutils.rerank.pairs import select_pairs
from tests.conftest import chromium, cli, metrics

FIGURES = ["05_candidate_lengths.png", "05_chosen_vs_rejected.png", "05_score_vs_length.png",
           "05_eval_length_vs_win_rate.png"]


def random_rows(n=200, seed=0):
    """Prompts with five answers whose score grows with length, plus noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lengths = [rng.randint(5, 400) for _ in range(5)]
        rows.append({"prompt_id": f"p{i}", "all_generated_responses": ["x" * k for k in lengths],
                     "all_rm_scores": [k / 100 + rng.gauss(0, 1) for k in lengths]})
    return rows


def chosen_and_rejected_lengths(kept):
    return np.array([[len(r["all_generated_responses"][r["chosen_index"]]),
                      len(r["all_generated_responses"][r["rejected_index"]])] for r in kept])


def test_no_length_penalty_is_the_blogs_best_vs_worst():
    rows = random_rows()
    plain, _ = select_pairs(rows, "best_worst", 1)
    controlled, _ = select_pairs(rows, "length_controlled", 1, {"length_penalty": 0.0})
    assert [(r["chosen_index"], r["rejected_index"]) for r in plain] == \
           [(r["chosen_index"], r["rejected_index"]) for r in controlled]


def test_length_penalty_shortens_chosen_without_overruling_the_ranker():
    rows = random_rows()
    lengths = {lam: chosen_and_rejected_lengths(select_pairs(rows, "length_controlled", 1,
                                                             {"length_penalty": lam})[0])
               for lam in (0.0, 1.0, 4.0)}
    chosen_longer = [float((v[:, 0] > v[:, 1]).mean()) for v in lengths.values()]
    mean_chosen = [float(v[:, 0].mean()) for v in lengths.values()]
    assert chosen_longer[0] > 0.8 and chosen_longer[0] > chosen_longer[1] > chosen_longer[2]
    assert mean_chosen[0] > mean_chosen[1] > mean_chosen[2]
    for lam in (1.0, 4.0):  # the ranker's order is kept: the chosen always scored higher
        kept, _ = select_pairs(rows, "length_controlled", 1, {"length_penalty": lam})
        assert all(r["all_rm_scores"][r["chosen_index"]] > r["all_rm_scores"][r["rejected_index"]] for r in kept)


def test_length_controlled_skips_ties_and_never_picks_empty_answers():
    rows = [{"prompt_id": "tied", "all_generated_responses": ["a", "bb", "ccc"], "all_rm_scores": [1.0, 1.0, 1.0]},
            {"prompt_id": "empty", "all_generated_responses": ["", "short", "a longer answer"],
             "all_rm_scores": [None, 0.5, 0.7]}]
    kept, skipped = select_pairs(rows, "length_controlled", 0, {"length_penalty": 5.0})
    assert skipped["prompts_skipped_tied"] == 1
    assert [(r["prompt_id"], r["chosen_index"], r["rejected_index"]) for r in kept] == [("empty", 2, 1)]


def test_length_params_that_would_do_nothing_are_refused():
    for pairs, words in [(("-p", "length_penalty", "1.0"), "acts only with pair_selection: length_controlled"),
                         (("-p", "length_penalty", "-1"), "length_penalty"),
                         (("-p", "compare_run", "tiny"), "is this run"),
                         (("-p", "compare_run", "../elsewhere"), "plain name")]:
        proc = cli("validate", "-f", "recipes/tiny.yaml", *pairs, check=False)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    proc = cli("validate", "-f", "recipes/tiny.yaml", "-f", "recipes/tiny-lc.yaml")
    assert "length_controlled" in proc.stdout and "compare_run" in proc.stdout


def test_report_of_a_run_that_does_not_exist_says_so(runs_dir):
    proc = cli("report", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(runs_dir), "-p", "run_name", "never",
               check=False)
    assert proc.returncode == 2 and "no run at" in proc.stderr


@pytest.mark.slow
def test_analysis_numbers_match_the_datasets_they_come_from(loop):
    out = loop / "length_analysis"
    assert all((out / f).stat().st_size > 10_000 for f in FIGURES)
    m = json.loads((out / "metrics.json").read_text())["05_length_analysis"]
    assert m["iterations"] == [1, 2]
    for n in m["iterations"]:
        gen = pd.read_parquet(loop / f"iter_{n}" / "generations.parquet")
        texts = [t for r in gen["all_generated_responses"] for t in r]
        assert m["candidates"][str(n)]["mean_chars"] == pytest.approx(np.mean([len(t) for t in texts]))
        assert m["candidates"][str(n)]["responses"] == len(texts)
        data = loop / f"iter_{n}" / "preference_data" / "data"
        pairs = pd.concat([pd.read_parquet(p) for p in data.glob("*.parquet")])
        chosen = pairs["chosen"].map(lambda c: len(c[-1]["content"]))
        rejected = pairs["rejected"].map(lambda c: len(c[-1]["content"]))
        assert m["pairs"][str(n)] == pytest.approx({"pairs": len(pairs), "mean_chosen_chars": chosen.mean(),
                                                    "mean_rejected_chars": rejected.mean(),
                                                    "chosen_longer": (chosen > rejected).mean()})
        scored = [(len(t), s) for r in pairs.itertuples() for t, s in
                  zip(r.all_generated_responses, r.all_rm_scores) if s is not None]
        lengths, scores = zip(*scored)
        rerank = json.loads((loop / f"iter_{n}" / "metrics.json").read_text())["02_rerank"]
        assert m["score_length"][str(n)]["spearman"] == pytest.approx(spearmanr(lengths, scores).statistic)
        assert m["score_length"][str(n)]["truncated_by_ranker"] == \
            rerank["responses_truncated_by_ranker"] / rerank["responses"]
    board = pd.read_csv(loop / "evaluation" / "leaderboard.csv").set_index("model")
    outputs = json.loads((loop / "evaluation" / "iteration_2" / "model_outputs.json").read_text())
    assert board.loc["iteration 2", "avg_length"] == pytest.approx(np.mean([len(o["output"]) for o in outputs]))


@pytest.mark.slow
def test_length_controlled_run_is_compared_side_by_side(loop, loop_lc):
    log = (loop_lc.parent / "loop-lc.log").read_text()  # started from a copy of loop's iteration 1
    assert "iteration 1 · 01_generate: done for these params and inputs, skipped" in log
    assert "iteration 1 · 02_rerank: params changed (length_penalty, pair_selection), rerunning" in log
    assert metrics(loop_lc)["02_rerank"]["shards_resumed"] > 0  # PairRM's scores do not depend on the selection
    out = loop_lc / "length_analysis"
    assert (out / "05_comparison.png").stat().st_size > 10_000
    table = pd.read_csv(out / "comparison.csv", header=[0, 1], index_col=0)
    for run, iterations in [(loop, 2), (loop_lc, 1)]:
        mine = L.run_rows(run, iterations)
        for measure in ["mean_chosen_chars", "avg_length", "win_rate", "lc_minimal"]:
            assert table[measure][run.name].dropna().to_dict() == pytest.approx(mine[measure].dropna().to_dict())
    assert table["avg_length"]["loop"].notna().sum() == 3 and table["avg_length"]["loop-lc"].notna().sum() == 2
    # on its own candidates, length control chose shorter answers than best vs worst would have
    pairs = L.pairs(loop_lc, [1])
    rows = [{"prompt_id": r.prompt_id, "all_generated_responses": r.responses, "all_rm_scores": r.scores}
            for r in pairs.itertuples()]
    plain = chosen_and_rejected_lengths(select_pairs(rows, "best_worst", 42)[0])
    assert pairs["chosen_chars"].mean() < plain[:, 0].mean()
    assert (pairs["chosen_chars"] > pairs["rejected_chars"]).mean() < (plain[:, 0] > plain[:, 1]).mean()


@pytest.mark.slow
def test_notebook_06_puts_the_two_recipes_side_by_side(loop, loop_lc, tmp_path):
    """06 under papermill, as ``nbutils compare`` ends: one row per run and iteration, each labelled
    with its method and judge, the numbers stage 05 reads from the same files, and the published
    methods in a table of their own."""
    import papermill as pm
    from nbutils.store.files import REPO_ROOT
    out = pm.execute_notebook(str(REPO_ROOT / "notebooks" / "06_compare_recipes.ipynb"), str(tmp_path / "06.ipynb"),
                              parameters={"runs_dir": str(loop.parent), "runs": ["loop", "loop-lc"], "name": "cmp"},
                              cwd=str(REPO_ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    printed = "".join(o.get("text", "") for c in out["cells"] for o in c.get("outputs", []))
    assert "iteration-1 samples: shared by every run" in printed  # loop-lc started from loop's iteration 1
    board = pd.read_csv(loop.parent / "cmp" / "comparison.csv", index_col=[0, 1])
    assert sorted(board.index) == [("loop", 0), ("loop", 1), ("loop", 2), ("loop-lc", 0), ("loop-lc", 1)]
    assert set(board["pair_selection"]) == {"best_worst", "length_controlled"}
    assert board["judge"].str.startswith("offline: tiny-pairrm").all()
    for run, iterations in [(loop, 2), (loop_lc, 1)]:
        mine = L.run_rows(run, iterations)
        for measure in ["win_rate", "standard_error", "avg_length", "chosen_longer"]:
            assert board.loc[run.name, measure].dropna().to_dict() == pytest.approx(mine[measure].dropna().to_dict())
    assert (loop.parent / "cmp" / "06_recipes.png").stat().st_size > 10_000
    assert "SPPO iteration 3 (leaderboard)" in printed or "GAPO" in str(out["cells"][-2].get("outputs"))


def open_page(browser, path: Path):
    """Open ``path``; return (page, problems: console errors, page errors, failed requests)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, problems


@pytest.mark.slow
def test_report_opens_in_a_headless_browser_and_shows_its_figures(loop):
    from playwright.sync_api import sync_playwright

    report = loop / "report.html"
    assert f"report: {report}" in (loop.parent / "loop.log").read_text()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page, problems = open_page(browser, report)
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        headings = page.locator("h2").all_inner_texts()
        links = page.evaluate("Array.from(document.querySelectorAll('a[href$=\".html\"]')).map(a => a.getAttribute('href'))")
        page.screenshot(path=str(loop / "report.png"), full_page=True)
        notebook, notebook_problems = open_page(browser, loop / links[0])
        notebook_text = notebook.inner_text("body")
        browser.close()
    assert problems == [] and notebook_problems == []
    assert headings[:2] == ["Summary", "Evaluation"] and {"Length analysis", "Iteration 1", "Iteration 2",
                                                          "Config"} <= set(headings)
    shown = {src for src, width in images if width > 100}
    assert len(shown) == len(images) and {f"length_analysis/{f}" for f in FIGURES} <= shown
    assert {"iter_1/03_training_curves.png", "evaluation/04_leaderboard.png"} <= shown
    assert len(links) >= 8 and all((loop / link).exists() for link in links)  # 3 per iteration, 04, 05
    assert " · " in notebook_text  # a notebook title, e.g. "05 · Length analysis, ..."
    assert (loop / "report.png").stat().st_size > 100_000


def test_labels_of_identical_points_are_stacked_apart():
    """Models with the same length and win rate (a twin run's judge ties everything): each label
    gets its own line, and placing them ends (float sums once made it loop forever)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nbutils.length.figures import labels_apart
    fig, ax = plt.subplots()
    ax.plot([127.25] * 3 + [2000], [0.0] * 3 + [30.0], "o")
    ax.set_xscale("log")
    labels_apart(ax, [(127.25, 0.0, "base"), (127.25, 0.0, "iteration 1"), (127.25, 0.0, "iteration 2"),
                      (2000, 30.0, "anchor")], gap=9)
    offsets = sorted(t.xyann[1] for t in ax.texts if t.get_text() != "anchor")
    assert [round(b - a, 6) for a, b in zip(offsets, offsets[1:])] == [9.0, 9.0]
    plt.close(fig)
