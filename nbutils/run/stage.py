"""A stage's place in a run: its resolved params, its folder, its manifest.

A notebook's resolve cell calls :func:`resolve_notebook`; its last cell calls
:meth:`Stage.finish`, which records outputs and a hash of the params in a
manifest. The runner skips a stage whose manifest matches its params and whose
outputs all exist.
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nbutils.run import params as P
from nbutils.files import read_json, repo_path, update_json, write_json
from nbutils.layout import RunFolder


def params_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """One notebook run for one iteration of one run."""
    notebook: str
    params: dict

    def __getitem__(self, key):
        return self.params[key]

    @property
    def run(self) -> RunFolder:
        """The run folder's layout: every path a stage reads or writes (``nbutils.layout``)."""
        return RunFolder(repo_path(self.params["runs_dir"]) / self.params["run_name"])

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def iter_dir(self) -> Path:
        return self.run.iteration(self.params["iteration"])

    @property
    def out_dir(self) -> Path:
        """Where the stage writes: ``iter_<n>/``, or its folder of the run for a whole-run stage."""
        return self.iter_dir if "iteration" in self.params else self.run.stage_dir(self.notebook)

    @property
    def device(self) -> str:
        """``cuda`` or ``cpu``: the ``device`` param checked against this machine."""
        from nbutils.devices import resolve_device
        return resolve_device(self.params.get("device", "auto"))

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / f"{self.notebook}.manifest.json"

    def table(self):
        """The resolved params with their help text, as a DataFrame."""
        import pandas as pd

        vocab = P.vocabulary()
        from nbutils.tables import whole
        return whole(pd.DataFrame([{"param": k, "value": repr(v), "help": vocab[k].help}
                                   for k, v in self.params.items()]).set_index("param"))

    def is_complete(self) -> bool:
        try:
            m = read_json(self.manifest_path)
            return bool(m and m["params_hash"] == params_hash(self.params)
                        and all(Path(p).exists() for p in m["outputs"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, or not a manifest
            print(f"{self.manifest_path}: unreadable manifest ({type(e).__name__}: {e}); the stage reruns")
            return False

    def finish(self, outputs: dict[str, Path], metrics: dict) -> None:
        """Record this stage's metrics (``metrics.json``, a section per stage) and manifest."""
        missing = [str(p) for p in outputs.values() if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{self.notebook}: outputs were not written: {missing}")
        update_json(self.out_dir / "metrics.json", self.notebook, metrics)
        write_json({"notebook": self.notebook, "params_hash": params_hash(self.params),
                    "outputs": {k: str(v) for k, v in outputs.items()}}, self.manifest_path)


def stage_for(notebook: str, values: dict) -> Stage:
    """The Stage of ``notebook`` from a full resolved config (the keys it declares)."""
    declared = P.declared_in(P.NOTEBOOKS_DIR / f"{notebook}.ipynb")
    return Stage(notebook, {k: values[k] for k in declared})


def injected_names(namespace: dict) -> set[str]:
    """Names papermill assigned in its injected-parameters cell, read from IPython's
    input history (``In``); empty when the notebook runs without papermill."""
    names: set[str] = set()
    for source in namespace.get("In", []):
        if source.startswith("# Parameters\n"):
            names |= {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                      for t in node.targets if isinstance(t, ast.Name)}
    return names


def resolve_notebook(notebook: str, namespace: dict) -> Stage:
    """Validate a notebook's parameters as they stand in its ``namespace`` (the
    defaults, or what papermill injected), save a snapshot, and return its Stage.
    An injected name that no notebook declares is a mistyped param."""
    from nbutils.logs import quiet
    quiet()  # library logs below WARNING stay out of the notebook (NBUTILS_LOG_LEVEL=INFO: back on)
    declared = P.declared_in(P.NOTEBOOKS_DIR / f"{notebook}.ipynb")
    vocab = P.vocabulary()
    unknown = [P.unknown_key_message(k, vocab) for k in sorted(injected_names(namespace))
               if k not in vocab]
    if unknown:
        raise P.ParamsError("invalid parameters passed to this notebook:\n  " + "\n  ".join(unknown))
    stage = Stage(notebook, P.validate({k: namespace[k] for k in declared}, keys=declared))
    stage.device  # a GPU preset without a usable GPU stops here, before anything loads
    stage.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(stage.params, stage.out_dir / f"{notebook}.config.json")
    return stage
