"""The run report: ``runs/<run>/report.html``, one page with the config, each stage's
figures and headline numbers, the leaderboard, the length analysis and links to the
executed notebooks (exported to HTML beside them). Figures are linked, not copied:
the page belongs to its run folder."""
from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import pandas as pd

from nbutils.evaluate.judging import lc_legend
from nbutils.store.files import atomic_path, read_json
from nbutils.store.paths import RunFolder

TEMPLATES = Path(__file__).parent.parent / "templates"
TEMPLATE = TEMPLATES / "report.html.j2"
# Headline metrics per iteration stage, in the report's per-iteration tables.
STAGE_METRICS = {
    "01_generate": ["prompts", "responses", "mean_response_tokens", "mean_response_chars", "empty_responses",
                    "truncated_responses", "truncated_fraction",
                    "new_tokens_per_second", "stage_seconds"],
    "02_rerank": ["ranker", "pair_selection", "length_penalty", "pairs", "mean_chosen_chars",
                  "mean_rejected_chars", "chosen_longer_fraction", "responses_truncated_by_ranker",
                  "prompts_skipped_tied", "stage_seconds"],
    "03_dpo_qlora": ["train_pairs", "global_steps", "train_loss", "eval_loss", "eval_rewards/accuracies",
                     "eval_rewards/margins", "merge_max_logprob_difference", "saved_max_logprob_difference",
                     "processes", "train_seconds"],
}


def export_notebook(notebook: Path) -> Path:
    """``<notebook>.html`` beside the executed notebook (redone only when the notebook is newer)."""
    from nbconvert import HTMLExporter

    target = notebook.with_suffix(".html")
    if target.exists() and target.stat().st_mtime >= notebook.stat().st_mtime:
        return target
    exporter = HTMLExporter(template_name="lab", extra_template_paths=[str(TEMPLATES)],
                            template_file="notebook.html.j2")
    body, _ = exporter.from_filename(str(notebook))
    with atomic_path(target) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return target


def executed_notebooks(run_dir: Path) -> list[Path]:
    """The run's executed notebooks: iterations in order, then the whole-run stages."""
    run = RunFolder(run_dir)
    return [nb for folder in [*map(run.iteration, run.iterations()), run.evaluation, run.length_analysis]
            for nb in sorted(folder.glob("*.ipynb"))]


def fmt(v) -> str:
    """A number as a person reads it: 1,676 · 30.22 · 0.0124 · 2e-06; text as is."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–" if v is None else str(v)
    if v != v:
        return "–"
    if float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"


def table_html(df: pd.DataFrame, index: bool = True) -> str:
    """A DataFrame as a compact HTML table (escaped, numbers formatted)."""
    return (f'<div class="scroll">{df.map(fmt).to_html(index=index, border=0, classes="table", escape=True)}'
            '</div>')


def iteration_section(run_dir: Path, folder: Path, links: dict[Path, str]) -> dict:
    """One iteration: its stages' headline numbers, figures and notebooks."""
    metrics = read_json(RunFolder.metrics_at(folder), {})
    rows = {stage: {k: metrics[stage][k] for k in keys if k in metrics.get(stage, {})}
            for stage, keys in STAGE_METRICS.items() if stage in metrics}
    tables = [(stage, table_html(pd.Series(values, name="value", dtype=object).to_frame()))
              for stage, values in rows.items()]
    return {"id": folder.name, "title": f"Iteration {folder.name.split('_')[1]}", "tables": tables,
            "figures": figures(run_dir, folder),
            "notebooks": [(nb.stem, links[nb]) for nb in sorted(folder.glob("*.ipynb")) if nb in links]}


def figures(run_dir: Path, folder: Path) -> list[tuple[str, str]]:
    """(caption, relative path) of the PNGs a stage saved in ``folder`` (stage order)."""
    return [(p.stem.split("_", 1)[1].replace("_", " "), p.relative_to(run_dir).as_posix())
            for p in sorted(folder.glob("*.png"))]


def csv_tables(run_dir: Path, folder: Path) -> list[tuple[str, str]]:
    return [(p.stem.replace("_", " "), table_html(pd.read_csv(p, header=[0, 1] if p.stem == "comparison" else 0,
                                                              index_col=0)))
            for p in sorted(folder.glob("*.csv")) if p.name != "leaderboard.csv" or folder.name == "evaluated"]


def notes(folder: Path) -> list[str]:
    """Sentences a whole-run section opens with: the base-reproduction check (04), what the
    calibration compared (calibrate-judge)."""
    from nbutils.evaluate.judging import reproduction_text
    check = read_json(RunFolder.metrics_at(folder), {}).get("04_evaluate", {}).get("base_reproduction")
    about = read_json(folder / "calibration.json")
    out = [reproduction_text(check)] if check else []
    if about:
        out.append(f"Judge {about['judge']} vs {about['against']}: the same published outputs of {len(about['models'])} "
                   f"models against the reference {about['reference']}, on {about['instructions']} instructions; "
                   f"95% intervals from {about['bootstrap']} bootstrap resamples of the instructions.")
        out += length_baseline(about)
    return out


def length_baseline(about: dict) -> list[str]:
    """The judge's agreement with GPT-4-turbo beside that of "the longer answer wins" on the same
    instructions (calibration.json from before the baseline existed: nothing)."""
    from nbutils.evaluate.calibration import LONGER
    rows = {r["measure"]: r for r in about.get("correlations", [])}
    if LONGER not in rows:
        return []
    judge, longer = (f"{r['value']:.1f}% [{r['ci_low']:.1f}, {r['ci_high']:.1f}]" for r in (rows["agreement (%)"], rows[LONGER]))
    return [f"Length baseline: over the models, {about['judge']} agrees with GPT-4-turbo on {judge} of the instructions, "
            f"\"the longer answer wins\" on {longer} of the same ones (per model: agreement_longer_wins). "
            "A judge that agrees no more often than length has shown nothing beyond length."]


def run_config(run: RunFolder) -> dict:
    """The runner's ``config.json``; for stages run by hand in JupyterLab (no runner), the params
    each notebook ran with (its ``<stage>.config.json`` snapshot), later snapshots winning."""
    config = read_json(run.config)
    if config is not None:
        return config
    snapshots = sorted(run.path.glob("*/*.config.json"), key=lambda p: p.stat().st_mtime)
    if not snapshots:
        raise FileNotFoundError(f"{run.path}: not a run folder (no config.json and no stage has run here)")
    params = {k: v for s in snapshots for k, v in read_json(s).items() if k != "iteration"}
    return {"params": dict(sorted(params.items())), "sources": {k: "notebook" for k in params},
            "how": "notebooks run by hand (their parameters cells)"}


def write_report(run_dir: Path) -> Path:
    """Export the executed notebooks to HTML and write ``run_dir/report.html``."""
    import jinja2

    run_dir = Path(run_dir)
    config = run_config(RunFolder(run_dir))
    links = {nb: export_notebook(nb).relative_to(run_dir).as_posix() for nb in executed_notebooks(run_dir)}
    run = RunFolder(run_dir)
    iterations = [run.iteration(n) for n in run.iterations()]
    numbers = [int(p.name.split("_")[1]) for p in iterations]
    board = run.leaderboard
    whole_run = []
    for folder, title in [(run.evaluation, "Evaluation"), (run.length_analysis, "Length analysis"),
                          (run.calibration, "Judge calibration"), (run.evaluated, "Evaluated files")]:
        if folder.is_dir():
            whole_run.append({"id": folder.name, "title": title, "figures": figures(run_dir, folder),
                              "tables": csv_tables(run_dir, folder), "notes": notes(folder),
                              "notebooks": [(nb.stem, links[nb]) for nb in sorted(folder.glob("*.ipynb"))]})
    params = pd.DataFrame({"value": {k: repr(v) for k, v in config["params"].items()},
                           "from": config.get("sources", {})}).rename_axis("param")
    page = jinja2.Template(TEMPLATE.read_text()).render(
        run=run_dir.name, run_dir=str(run_dir), when=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        presets=config.get("how") or ", ".join(config.get("preset_files", [])) or "params/base.yaml only",
        summary=table_html(summary(run_dir, numbers)) if numbers else "",
        leaderboard=table_html(pd.read_csv(board).drop(columns=["n"], errors="ignore"), index=False)
        if board.exists() else "", board_notes=lc_legend(pd.read_csv(board)).splitlines() if board.exists() else [],
        iterations=[iteration_section(run_dir, p, links) for p in iterations], whole_run=whole_run,
        params=table_html(params), notebooks=[(html.escape(nb.relative_to(run_dir).as_posix()), link)
                                              for nb, link in links.items()])
    target = run.report
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


HEADLINES = ["prompts", "mean_response_tokens", "mean_response_chars", "empty_responses", "truncated_fraction",
             "pairs", "mean_chosen_chars", "mean_rejected_chars", "chosen_longer_fraction", "train_loss",
             "eval_rewards/margins", "eval_rewards/accuracies", "model_n_win_rate", "model_n_se"]


def summary(run_dir: Path, iterations: list[int]):
    """The headline numbers of each iteration, a row each (all of them: ``iter_<n>/metrics.json``),
    the win rate ± standard error of the model it trained (stage 04's leaderboard, whose judge the
    leaderboard names) and the minutes its executed notebooks ran."""
    import pandas as pd

    board = pd.read_csv(RunFolder(run_dir).leaderboard) if RunFolder(run_dir).leaderboard.exists() else None
    rows = []
    for n in iterations:
        folder = RunFolder(run_dir).iteration(n)
        merged = {k: v for m in read_json(RunFolder(run_dir).metrics(n), {}).values() for k, v in m.items()}
        if merged:
            seconds = sum((read_json(nb, {}).get("metadata", {}).get("papermill", {}).get("duration") or 0)
                          for nb in folder.glob("*.ipynb"))
            judged = {} if board is None else board[board["model"] == f"iteration {n}"]
            if len(judged):
                merged |= {"model_n_win_rate": judged["win_rate"].iloc[0], "model_n_se": judged["standard_error"].iloc[0]}
            rows.append({"iteration": n, **{k: merged[k] for k in HEADLINES if k in merged},
                         "minutes": round(seconds / 60, 1)})
    return pd.DataFrame(rows).set_index("iteration") if rows else pd.DataFrame()
