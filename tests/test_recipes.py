"""One recipe, one run: a recipe file means the same params under ``papermill -f`` and ``nbutils
run -f``; overlays need a recipe before them; a notebook whose params mix the tiny world with the
hub's stops in its parameters check."""
import json
import subprocess
import sys

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from nbutils.run import params as P
from nbutils.run.stage import stage_for
from nbutils.store.files import REPO_ROOT
from tests.conftest import cli

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
OVERLAYS = sorted((REPO_ROOT / "recipes" / "overlays").glob("*.yaml"))
CPU_RECIPES = [r for r in RECIPES if yaml.safe_load(r.read_text())["device"] != "cuda"]
GPU_RECIPES = [r for r in RECIPES if r not in CPU_RECIPES]


def papermill_params(notebook: str, files: list, tmp_path) -> dict:
    """What ``papermill notebooks/<notebook>.ipynb out.ipynb -f <files> -p runs_dir <tmp>`` resolves:
    the real papermill command prepares the notebook; its cells up to the parameters check
    (``resolve_notebook``, which saves the resolved params) then run in a kernel."""
    prepared = tmp_path / f"{notebook}.prepared.ipynb"
    args = [sys.executable, "-m", "papermill", str(REPO_ROOT / "notebooks" / f"{notebook}.ipynb"), str(prepared),
            "--prepare-only", "-p", "runs_dir", str(tmp_path)]
    for f in files:
        args += ["-f", str(f)]
    subprocess.run(args, check=True, capture_output=True, cwd=REPO_ROOT)
    nb = nbformat.read(prepared, as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if "resolve_notebook(" in c.source)
    nb.cells = nb.cells[: last + 1]
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}}).execute()
    values = yaml.safe_load("\n".join(f.read_text() for f in files[-1:])) if files else {}
    run_dir = tmp_path / (values.get("run_name") or "tiny")
    return json.loads((run_dir / "iter_1" / f"{notebook}.config.json").read_text())


def cli_params(notebook: str, files: list, tmp_path) -> dict:
    values, _ = P.resolve(files, {"runs_dir": str(tmp_path)})
    return json.loads(json.dumps(stage_for(notebook, values).params))


def test_every_recipe_is_complete_and_named_for_its_file():
    """The alignment-handbook's habit: a recipe sets every key (papermill then has no notebook default
    left to mix in) and names itself; an overlay sets sizes or devices, names itself and no recipe."""
    vocab = set(P.vocabulary())
    assert RECIPES and OVERLAYS
    for recipe in RECIPES:
        values = yaml.safe_load(recipe.read_text())
        assert set(values) == vocab, f"{recipe.name}: missing {sorted(vocab - set(values))}, unknown {sorted(set(values) - vocab)}"
        assert values["recipe"] == recipe.stem and values["overlay"] == ""
    for overlay in OVERLAYS:
        values = yaml.safe_load(overlay.read_text())
        assert values["overlay"] == overlay.stem and "recipe" not in values and len(values) < len(vocab) / 2


@pytest.mark.parametrize("recipe", [r for r in CPU_RECIPES if r.stem in ("tiny-lc", "smol-simpo")], ids=lambda p: p.stem)
def test_a_recipe_means_the_same_params_under_papermill_and_the_cli(recipe, tmp_path):
    """Two recipes unlike the notebooks' defaults (the completeness test covers the rest: papermill's
    merge is the same dict update for every file)."""
    assert papermill_params("01_generate", [recipe], tmp_path) == cli_params("01_generate", [recipe], tmp_path)


def test_a_gpu_recipe_under_papermill_on_a_cpu_stops_with_the_gpu_message(tmp_path):
    """Not a tiny run under the recipe's name: the recipe's ``device: cuda`` stops it before anything loads."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CellExecutionError, match="device: cuda, but CUDA is not usable"):
        papermill_params("01_generate", [REPO_ROOT / "recipes" / "snorkel.yaml"], tmp_path)
    assert not list(tmp_path.rglob("01_generate.config.json"))


def test_an_incomplete_preset_under_papermill_names_the_mixed_keys(tmp_path):
    """Today's trap, kept as a test: a file of a few keys over the notebook's tiny defaults."""
    partial = tmp_path / "partial.yaml"
    partial.write_text("run_name: partial\nprompts_dataset: snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset\n"
                       "prompts_split: train_iteration_{iteration}\n")
    with pytest.raises(CellExecutionError, match=r"base_model: 'tiny-mistral' \(a tiny model\) with prompts_dataset"):
        papermill_params("01_generate", [partial], tmp_path)


def test_an_overlay_alone_is_refused_by_the_cli_and_by_papermill(tmp_path):
    overlay = OVERLAYS[0]
    proc = cli("run", "-f", str(overlay.relative_to(REPO_ROOT)), "-p", "runs_dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and f"overlay: '{overlay.stem}'" in proc.stderr and "needs a complete recipe" in proc.stderr
    with pytest.raises(CellExecutionError, match="needs a complete recipe before it"):
        papermill_params("01_generate", [overlay], tmp_path)
    values, _ = P.resolve([REPO_ROOT / "recipes" / "snorkel.yaml", overlay])
    assert values["recipe"] == "snorkel" and values["overlay"] == overlay.stem


def test_compare_refuses_recipes_that_cannot_share_their_samples(tmp_path):
    """``nbutils compare`` shares the first recipe's iteration-1 samples and scores: recipes that differ
    in what makes them, or that name the same run folder, are refused before anything runs."""
    proc = cli("compare", "-f", "recipes/tiny.yaml", "-f", "recipes/smol.yaml", "-p", "runs_dir", str(tmp_path),
               check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "recipes/smol.yaml differs from recipes/tiny.yaml in what makes iteration 1's samples and scores" in proc.stderr
    assert "base_model ('tiny-mistral' vs 'smollm2-135m-instruct')" in proc.stderr
    proc = cli("compare", "-f", "recipes/tiny.yaml", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(tmp_path),
               check=False)
    assert proc.returncode == 2 and "share run folders" in proc.stderr
    proc = cli("compare", "-f", "recipes/tiny.yaml", "-p", "runs_dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "two recipes or more" in proc.stderr
    assert not list(tmp_path.iterdir())
