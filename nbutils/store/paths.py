"""The run folder's layout, built in one place: ``runs/<run>/iter_<n>/…`` and the whole-run folders.

Stages talk through these files; every module that reads or writes one asks a :class:`RunFolder`
(or its :class:`~nbutils.run.stage.Stage`) for the path instead of joining names itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nbutils.store.files import repo_path
from nbutils.store.manifests import committed

# Whole-run stages (no ``iteration`` param) and the folder of the run each writes to.
RUN_STAGE_DIRS = {"04_evaluate": "evaluation", "05_length_analysis": "length_analysis"}


@dataclass(frozen=True)
class RunFolder:
    """``runs_dir/run_name``: what each stage writes, per iteration and for the whole run."""
    path: Path

    @property
    def config(self) -> Path:
        """The runner's resolved params and their sources."""
        return self.path / "config.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def stage_dir(self, notebook: str) -> Path:
        """The folder of a whole-run stage (``evaluation/``, ``length_analysis/``)."""
        return self.path / RUN_STAGE_DIRS[notebook]

    @property
    def evaluation(self) -> Path:
        return self.stage_dir("04_evaluate")

    @property
    def leaderboard(self) -> Path:
        return self.evaluation / "leaderboard.csv"

    @property
    def length_analysis(self) -> Path:
        return self.stage_dir("05_length_analysis")

    @property
    def calibration(self) -> Path:
        """``python -m nbutils calibrate-judge``: the offline judge against GPT-4-turbo."""
        return self.path / "judge_calibration"

    @property
    def evaluated(self) -> Path:
        """``python -m nbutils evaluate``: rows of model_outputs.json files from anywhere."""
        return self.path / "evaluated"

    @property
    def evaluated_leaderboard(self) -> Path:
        """``evaluate``'s rows, one per model_outputs.json evaluated (the same model: replaced)."""
        return self.evaluated / "leaderboard.csv"

    def iteration(self, n: int) -> Path:
        return self.path / f"iter_{n}"

    def iterations(self) -> list[int]:
        """The iterations that have a folder, in order."""
        found = (re.fullmatch(r"iter_(\d+)", p.name) for p in self.path.glob("iter_*") if p.is_dir())
        return sorted(int(m[1]) for m in found if m)

    def metrics(self, n: int) -> Path:
        return self.metrics_at(self.iteration(n))

    @staticmethod
    def metrics_at(folder: Path) -> Path:
        """The ``metrics.json`` of a stage's folder (``iter_<n>/``, ``evaluation/``, ...): a section per stage."""
        return Path(folder) / "metrics.json"

    def dpo_launch(self, n: int) -> Path:
        """Stage 03's launch across processes: its spec, log, progress and result."""
        return self.iteration(n) / "dpo_launch"

    def generations(self, n: int) -> Path:
        """Stage 01's answers of iteration ``n``."""
        return self.iteration(n) / "generations.parquet"

    def preference_data(self, n: int) -> Path:
        """Stage 02's pairs of iteration ``n`` (a parquet dataset)."""
        return self.iteration(n) / "preference_data"

    def training_pairs(self, n: int, train_on: str = "this_iteration") -> dict[int, Path]:
        """``{iteration: preference_data folder}`` that stage 03 of iteration ``n`` trains on (its train
        splits) and evaluates on (its test splits): ``n``'s (``train_on: this_iteration``, the blog's) or
        those of iterations 1..``n`` (``all_iterations``)."""
        first = 1 if train_on == "all_iterations" else n
        return {k: self.preference_data(k) for k in range(first, n + 1)}

    def policy(self, n: int) -> Path:
        """Stage 03's merged model of iteration ``n``: the model iteration ``n + 1`` samples from."""
        return self.iteration(n) / "policy"

    def adapter(self, n: int) -> Path:
        return self.iteration(n) / "adapter"

    def checkpoints(self, n: int) -> Path:
        return self.iteration(n) / "dpo_checkpoints"

    def manifest(self, notebook: str, n: int | None = None) -> Path:
        """What ``notebook`` committed for iteration ``n`` (or for the whole run): ``nbutils.store.manifests``."""
        folder = self.iteration(n) if n is not None else self.stage_dir(notebook)
        return folder / f"{notebook}.manifest.json"

    def has_policy(self, n: int) -> bool:
        """Iteration ``n``'s policy was committed by stage 03 and is intact (a killed merge is no policy)."""
        return committed(self.manifest("03_dpo_qlora", n), "policy") is not None


class ParamsView:
    """Resolved params read as ``view[key]``, and their run folder (``view.run``): what a notebook's
    Stage and a training worker's stand-in for it share. Subclasses hold ``params``."""
    params: dict

    def __getitem__(self, key):
        return self.params[key]

    @property
    def run(self) -> RunFolder:
        """The run folder's layout: every path a stage reads or writes."""
        return RunFolder(repo_path(self.params["runs_dir"]) / self.params["run_name"])
