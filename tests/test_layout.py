"""The package's layout: import-linter's layer contracts hold (and break when a lower layer imports
a higher one); the run folder's paths come from one place."""
import shutil
import subprocess
import sys

from nbutils.store import manifests
from nbutils.store.files import REPO_ROOT, fresh_for, write_json
from nbutils.store.paths import RunFolder

LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--no-cache", "pyproject.toml"]


def test_layers_and_no_import_circles():
    proc = subprocess.run(LINT, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_a_foundation_importing_the_run_machinery_breaks_the_contract(tmp_path):
    shutil.copytree(REPO_ROOT / "nbutils", tmp_path / "nbutils", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    files = tmp_path / "nbutils" / "store" / "files.py"
    files.write_text(files.read_text() + "\n\ndef _circle():\n    from nbutils.run import runner  # noqa\n")
    proc = subprocess.run(LINT, cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1 and "nbutils.store.files -> nbutils.run.runner" in proc.stdout, proc.stdout + proc.stderr


def test_run_folder_layout(tmp_path):
    run = RunFolder(tmp_path / "r")
    for n in (2, 10, 1):
        run.policy(n).mkdir(parents=True)
    (run.policy(10) / "config.json").write_text("{}")
    (run.path / "iter_x").mkdir()
    assert run.iterations() == [1, 2, 10]
    assert not run.has_policy(10), "a policy folder that stage 03 never committed"
    commit = {"params_hash": "h", "inputs": {}, "outputs": manifests.record({"policy": run.policy(10)}, run.iteration(10))}
    write_json(commit, run.manifest("03_dpo_qlora", 10))
    assert [run.has_policy(n) for n in (1, 10)] == [False, True]
    (run.policy(10) / "config.json").write_text("{}  ")
    assert not run.has_policy(10), "a policy whose files changed size since the commit"
    assert run.generations(3) == tmp_path / "r" / "iter_3" / "generations.parquet"
    assert run.leaderboard == tmp_path / "r" / "evaluation" / "leaderboard.csv"


def test_fresh_for_discards_other_work_and_says_so_only_when_there_was_some(tmp_path, capsys):
    folder = tmp_path / "dpo_checkpoints"
    folder.mkdir()  # made empty by a trainer before the stamp is checked: not "earlier work"
    fresh_for(folder, {"a": 1}, "params")
    assert capsys.readouterr().out == ""
    (folder / "checkpoint-1").mkdir()
    fresh_for(folder, {"a": 2}, "params")
    assert "params changed, discarding earlier work" in capsys.readouterr().out
    assert not (folder / "checkpoint-1").exists()
