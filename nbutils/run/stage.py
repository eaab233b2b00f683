"""A stage's place in a run: its resolved params, its folder, its manifest.

A notebook's resolve cell calls :func:`resolve_notebook`, which removes the stage's
manifest (nothing it writes is trusted until it commits); its last cell calls
:meth:`Stage.finish`, which commits: a manifest of the params hash, the inputs'
fingerprints and every output file's size and hash (``nbutils.store.manifests``). The runner
skips a stage whose manifest matches its params and inputs and whose outputs are intact,
and says why it reruns one that does not.
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nbutils.store import manifests
from nbutils.exec.placement import placement_free
from nbutils.run import lineage
from nbutils.run import params as P
from nbutils.store.files import update_json, write_json
from nbutils.store.paths import ParamsView


# Where a run lives is not what it is: a run folder moved or copied whole is still done.
LOCATION = ("runs_dir", "run_name", "recipe", "overlay")  # where a run lives and what its files are named
# How many iterations the run has does not change one iteration's work (stages 01-03 only check that the
# prompt pool holds them): a run extended to more iterations, or a copied iteration, keeps what is done.
RUN_LENGTH = ("num_iterations",)


def identity(values: dict) -> dict:
    """The params that make a stage's work what it is (all but where the run lives, how many iterations
    it has when the stage is one iteration's, and, unless training is distributed, on how many devices:
    ``nbutils.exec.placement.placement_free``)."""
    skip = LOCATION + (RUN_LENGTH if "iteration" in values else ())
    return {k: v for k, v in placement_free(values).items() if k not in skip}


def params_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(identity(values), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage(ParamsView):
    """One notebook run for one iteration of one run (``stage[key]``, ``stage.run``: ``ParamsView``)."""
    notebook: str
    params: dict

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
        from nbutils.exec.devices import resolve_device
        return resolve_device(self.params.get("device", "auto"))

    @property
    def manifest_path(self) -> Path:
        return self.run.manifest(self.notebook, self.params.get("iteration"))

    def table(self):
        """The resolved params with their help text, as a DataFrame."""
        import pandas as pd

        vocab = P.vocabulary()
        from nbutils.show.tables import whole
        return whole(pd.DataFrame([{"param": k, "value": repr(v), "help": vocab[k].help}
                                   for k, v in self.params.items()]).set_index("param"))

    def why_not_done(self) -> str | None:
        """None if this stage committed outputs that are intact, for these params and for inputs
        (``nbutils.run.lineage``) that are still what they were; else why it must run."""
        try:
            m = manifests.read(self.manifest_path)
        except ValueError as e:  # not JSON, or not a manifest
            return str(e)
        if m is None:
            return "not done yet"
        if m["params_hash"] != params_hash(self.params):
            # the recorded params, as this version counts them (a manifest of an older one may hash more)
            then, now = identity(m.get("params", {})), identity(self.params)
            keys = sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))
            if keys or not then:
                return f"params changed ({', '.join(keys)})" if keys else "params changed"
        changed = lineage.changed(m["inputs"], lineage.inputs(self))
        if changed:
            return f"inputs changed ({', '.join(changed)})"
        return manifests.problem(m["outputs"], self.manifest_path.parent, self.run_dir)

    def is_complete(self) -> bool:
        return self.why_not_done() is None

    def finish(self, outputs: dict[str, Path], metrics: dict) -> None:
        """Commit: record this stage's metrics (``metrics.json``, a section per stage), then its
        manifest (params hash, input fingerprints, each output file's size and hash), written last."""
        missing = [str(p) for p in outputs.values() if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{self.notebook}: outputs were not written: {missing}")
        update_json(self.run.metrics_at(self.out_dir), self.notebook, metrics)
        write_json({"notebook": self.notebook, "params_hash": params_hash(self.params), "params": identity(self.params),
                    "inputs": lineage.inputs(self), "outputs": manifests.record(outputs, self.out_dir)},
                   self.manifest_path)


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
    if namespace.get("overlay") and "overlay" in injected_names(namespace) and "recipe" not in injected_names(namespace):
        raise P.ParamsError(P.overlay_alone(namespace["overlay"], "this notebook's defaults (the tiny recipe)"))
    stage = Stage(notebook, P.validate({k: namespace[k] for k in declared}, keys=declared))
    stage.device  # a GPU preset without a usable GPU stops here, before anything loads
    stage.out_dir.mkdir(parents=True, exist_ok=True)
    stage.manifest_path.unlink(missing_ok=True)  # from here until finish() commits, nothing here is trusted
    write_json(stage.params, stage.out_dir / f"{notebook}.config.json")
    return stage
