"""Run the stages in order with papermill into ``runs/<run>/iter_<n>/``.

Params are resolved and validated once, before any notebook (or model) starts;
``config.json`` records them with where each value came from. A stage whose
manifest matches its params and its inputs and whose outputs are intact is skipped;
any other reruns and the runner says why. The kernels import this checkout's
``nbutils`` (``PYTHONPATH``), whichever checkout an editable install points at.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from nbutils.run import params as P
from nbutils.store.files import REPO_ROOT, size_text, write_json
from nbutils.store.paths import RUN_STAGE_DIRS, RunFolder
from nbutils.run.stage import stage_for

# Stages run for every iteration, in order; then once for the whole run.
ITERATION_STAGES = ["01_generate", "02_rerank", "03_dpo_qlora"]
RUN_STAGES = list(RUN_STAGE_DIRS)
# Stages that read what other stages (and runs) wrote and take seconds: never skipped.
ALWAYS_RUN = {"05_length_analysis"}


def execute(notebook: str, out: Path, parameters: dict, label: str, verbose: bool = False) -> None:
    """Execute ``notebooks/<notebook>.ipynb`` into ``out`` (the run product). The terminal shows one
    live line (papermill's cell progress: the cell running, cells done, elapsed time); ``verbose``
    streams the notebook's output instead."""
    import logging

    import papermill as pm

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    pm.execute_notebook(str(P.NOTEBOOKS_DIR / f"{notebook}.ipynb"), str(out),
                        parameters=parameters, cwd=str(REPO_ROOT / "notebooks"), kernel_name="python3",
                        progress_bar=False if verbose else {"desc": label, "unit": "cell", "leave": True,
                                                            "bar_format": BAR, "dynamic_ncols": True},
                        log_output=verbose, kernel_manager_class=KERNEL_MANAGER)


# one line per stage: "iteration 1 · 01_generate: 6/15 cells [00:41]"
BAR = "{desc}: {n_fmt}/{total_fmt} cells [{elapsed}]"
# kernels talk to papermill over local IPC sockets, not plain TCP (ipykernel warns about that)
KERNEL_MANAGER = "nbutils.run.kernels.IPCKernelManager"


def run(files: list[str], overrides: dict | None = None, iterations: list[int] | None = None,
        stages: list[str] | None = None, force: bool = False, verbose: bool = False) -> Path:
    """Resolve params, then run ``stages`` (default all) for ``iterations`` (default
    1..num_iterations). Returns the run directory."""
    values, sources = P.resolve(files, overrides)
    every = ITERATION_STAGES + RUN_STAGES
    unknown = [s for s in stages or [] if s not in every]
    if unknown:
        raise P.ParamsError(f"--stages: unknown stage(s) {unknown}; stages: {','.join(every)}")
    whole_run = iterations is None or max(iterations) == values["num_iterations"]
    stages = stages or (every if whole_run else ITERATION_STAGES)
    iterations = iterations or list(range(1, values["num_iterations"] + 1))
    outside = sorted({n for n in iterations if not 1 <= n <= values["num_iterations"]})
    if outside:
        raise P.ParamsError(f"--iterations: {outside} outside 1..{values['num_iterations']} "
                            f"(num_iterations {values['num_iterations']})")
    before = min(iterations) - 1  # the policy the first iteration asked for samples from
    if before and "01_generate" in stages and before not in iterations:
        prior = stage_for("03_dpo_qlora", {**values, "iteration": before})
        why = prior.why_not_done()
        if why:
            asked = ",".join(map(str, iterations))
            raise P.ParamsError(f"--iterations {asked}: iteration {min(iterations)} samples from "
                                f"iteration {before}'s policy, which is not done ({why}: {prior.manifest_path}); "
                                f"run --iterations {','.join(map(str, range(1, max(iterations) + 1)))}")
    from nbutils.run.lock import run_lock
    from nbutils.run.preflight import before_run
    first = stage_for(ITERATION_STAGES[0], {**values, "iteration": iterations[0]})
    before_run(values)  # CUDA, disk, RAM, keys; the hub models fetched before the first stage
    with run_lock(first.run_dir):  # one runner per run: a second one stops here
        write_json({"params": values, "sources": sources, "preset_files": [str(f) for f in files]},
                   first.run.config)
        todo = [({**values, "iteration": n}, name, f"iteration {n} · {name}")
                for n in iterations for name in stages if name in ITERATION_STAGES]
        todo += [(values, name, name) for name in stages if name in RUN_STAGES]
        for params, name, label in todo:
            stage = stage_for(name, params)
            out = stage.out_dir / f"{name}.ipynb"
            if name not in ALWAYS_RUN and not force:
                why = stage.why_not_done()
                if why is None:
                    print(f"{label}: done for these params and inputs, skipped ({stage.manifest_path.name})")
                    continue
                if why != "not done yet":
                    print(f"{label}: {why}, rerunning")
            stage.out_dir.mkdir(parents=True, exist_ok=True)
            try:
                execute(name, out, stage.params, label, verbose)
            except Exception as e:
                if no_space(e):
                    raise DiskFull(label, stage.out_dir, e) from None
                raise
        print_summary(first.run_dir, iterations)
    return first.run_dir


class DiskFull(OSError):
    """A stage stopped because the disk filled: where, how much is free, what to do."""
    def __init__(self, label: str, folder: Path, error: Exception):
        free = size_text(shutil.disk_usage(folder).free)
        detail = getattr(error, "evalue", None) or str(error)
        super().__init__(f"{label}: the disk is full ({detail}); {free} free at {folder}. Free some space and run "
                         "the same command again: committed stages are kept, finished shards and checkpoints resume, "
                         "and nothing of this stage was committed")


def no_space(error: Exception) -> bool:
    """The disk filled: in this process (writing the executed notebook) or in the notebook's kernel."""
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or \
        "No space left on device" in str(getattr(error, "evalue", ""))


def print_summary(run_dir: Path, iterations: list[int]) -> Path:
    """Write the run report; print the per-iteration summary, the leaderboard and where the report is."""
    import pandas as pd

    from nbutils.run.report import summary, write_report

    path = write_report(run_dir)
    print(summary(run_dir, iterations).round(3).to_string(na_rep="-"))
    board = RunFolder(run_dir).leaderboard
    if board.exists():
        from nbutils.evaluate.judging import lc_legend
        rows = pd.read_csv(board)
        print(rows.drop(columns=["n"]).round(2).to_string(index=False))
        print(lc_legend(rows))
    print(f"run directory: {run_dir}\nreport: {path}")
    return path
