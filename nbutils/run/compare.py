"""``python -m nbutils compare -f recipes/a.yaml -f recipes/b.yaml``: several recipes from the same
iteration-1 samples and scores, then notebook 06 over their runs.

The first recipe runs as ``nbutils run`` would; each other recipe's run starts from a copy of the
first's ``iter_1/`` (as a user keeps stage 01's samples): stage 01 is done there (its params are
the same: checked first), stage 02 keeps the ranker's scores (their shards' fingerprint is the
ranker and the answers) and reruns only its pair selection when that differs, and stage 03
trains by the recipe's own loss. Later iterations sample from each recipe's own policy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nbutils.run import params as P
from nbutils.run.runner import execute, run
from nbutils.run.stage import identity, stage_for
from nbutils.store.paths import RunFolder

NOTEBOOK = "06_compare_recipes"


def resolve_comparison(notebook: str, namespace: dict) -> tuple[list[Path], Path]:
    """Notebook 06's parameters checked (its own, not a recipe's: it reads runs, it makes none):
    the run folders to compare and the folder it writes (``runs_dir/<name>/``)."""
    from nbutils.logs import quiet
    from nbutils.recipes.compare import run_dirs
    from nbutils.store.files import repo_path
    quiet()
    declared = P.declared_in(P.NOTEBOOKS_DIR / f"{notebook}.ipynb")
    values = P.validate({k: namespace[k] for k in declared}, keys=declared)
    out = repo_path(values["runs_dir"]) / values["name"]
    out.mkdir(parents=True, exist_ok=True)
    return run_dirs(values["runs_dir"], values["runs"]), out


def shared_problems(files: list[str], resolved: list[dict]) -> list[str]:
    """What makes iteration 1's samples and scores (stage 01's params and the ranker) where the
    recipes differ, named by key and file; and run names that two recipes share."""
    def made_of(values: dict) -> dict:
        return {**identity(stage_for("01_generate", {**values, "iteration": 1}).params), "ranker": values["ranker"]}
    first, problems = made_of(resolved[0]), []
    for f, values in zip(files[1:], resolved[1:]):
        mine = made_of(values)
        differ = [k for k in first if json.dumps(first[k]) != json.dumps(mine.get(k))]
        if differ:
            problems.append(f"{f} differs from {files[0]} in what makes iteration 1's samples and scores: "
                            + ", ".join(f"{k} ({first[k]!r} vs {mine.get(k)!r})" for k in differ))
    names = [v["run_name"] for v in resolved]
    if len(set(names)) < len(names):
        problems.append(f"run_name: the recipes share run folders ({names}); each recipe names its own run")
    return problems


def compare_recipes(files: list[str], overrides: dict | None = None, name: str = "", verbose: bool = False) -> Path:
    """Run each recipe in ``files`` (at least two) from the first's iteration-1 samples and scores,
    then notebook 06 over the runs into ``runs_dir/<name>/``; returns that folder."""
    P.resolve(files[:1], overrides)  # -p and the first file checked first, as every command does
    if len(files) < 2:
        raise P.ParamsError("-f: name two recipes or more to compare (each a complete recipes/<name>.yaml)")
    resolved = [P.resolve([f], overrides)[0] for f in files]
    problems = shared_problems(files, resolved)
    if problems:
        raise P.ParamsError("compare: " + "; ".join(problems))
    first = run([files[0]], overrides, verbose=verbose)
    for f, values in zip(files[1:], resolved[1:]):
        target = RunFolder(first.parent / values["run_name"])
        if not target.iteration(1).exists():
            shutil.copytree(RunFolder(first).iteration(1), target.iteration(1))
        run([f], overrides, verbose=verbose)
    names = [v["run_name"] for v in resolved]
    out = first.parent / (name or "compare-" + "-".join(names))
    out.mkdir(parents=True, exist_ok=True)
    execute(NOTEBOOK, out / f"{NOTEBOOK}.ipynb", {"runs_dir": str(first.parent), "runs": names, "name": out.name},
            NOTEBOOK, verbose)
    print(f"comparison: {out / 'comparison.csv'}, {out / '06_recipes.png'}")
    return out
