"""The project's Jupyter settings: `make lab` puts this folder on JUPYTER_CONFIG_PATH.

* The server's root is the repository (notebooks/, runs/, params/ side by side); the browser opens
  notebooks/.
* Notebooks under notebooks/ are saved without outputs: the tracked notebooks stay clean however
  they are edited; runs keep their executed notebooks (runs/<run>/…) with outputs.
* Containers often run as root: the server starts anyway.
"""
from pathlib import Path

c = get_config()  # noqa: F821 (Jupyter's config loader defines it)

REPO = Path(__file__).resolve().parent.parent
c.ServerApp.root_dir = str(REPO)
c.ServerApp.allow_root = True
c.LabApp.default_url = "/lab/tree/notebooks"


def strip_outputs(model, path, **kwargs):
    """Before a save: a notebook under notebooks/ loses its outputs and execution counts."""
    if model.get("type") != "notebook" or not path.lstrip("/").startswith("notebooks/"):
        return
    notebook = model["content"]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    notebook.get("metadata", {}).pop("widgets", None)


c.FileContentsManager.pre_save_hook = strip_outputs

# Offline-friendly: no news feed, no update checks (nothing reaches out from a lab session)
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
