"""Every dotted ``nbutils.…`` name a reader meets (notebooks' markdown and code, params, recipes,
README, docs) imports: a learner who follows one finds it. Names that died with a change of layout
(``nbutils.pairrm_compat``, ``nbutils.tiny_policy``) fail here, with the file that still says them."""
import importlib
import json
import re
from pathlib import Path

from nbutils.store.files import REPO_ROOT

NAME = re.compile(r"\bnbutils(?:\.[A-Za-z_]\w*)+")
TEXTS = ["README.md", "CHANGELOG.md", "docs/*.md", "notebooks/*.ipynb", "params/*.yaml", "params/*/*.yaml",
         "recipes/*.yaml", "recipes/overlays/*.yaml", "nbutils/data/*.md"]


def texts(root: Path = REPO_ROOT) -> dict[str, str]:
    """The files a reader reads, by path; a notebook as its cells' sources (markdown and code)."""
    found = {}
    for pattern in TEXTS:
        for path in sorted(root.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".ipynb":
                text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
            found[str(path.relative_to(root))] = text
    return found


def resolves(name: str) -> bool:
    """``nbutils.a.b.c``: the longest prefix that imports as a module, then attributes for the rest."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is not None and not ".".join(parts[:i]).startswith(e.name):
                raise  # the module exists but one of its own imports is missing: not this test's finding
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def unresolved(found: dict[str, str]) -> list[str]:
    return [f"{path}: {name}" for path, text in found.items() for name in sorted(set(NAME.findall(text)))
            if not resolves(name)]


def test_every_nbutils_name_in_notebooks_params_recipes_readme_and_docs_imports():
    found = texts()
    assert {"README.md", "notebooks/02_rerank.ipynb", "recipes/tiny.yaml", "params/base.yaml"} <= set(found)
    assert sum(len(NAME.findall(t)) for t in found.values()) > 50  # the texts do name the package's parts
    missing = unresolved(found)
    assert not missing, "names that do not import (fix the text, or the name):\n" + "\n".join(missing)


def test_a_stale_name_is_found_with_its_file(tmp_path):
    (tmp_path / "notebooks").mkdir()
    cell = {"cell_type": "markdown", "metadata": {}, "source": ["The ranker lives in `nbutils.pairrm_compat`; ",
                                                                 "its data in `nbutils.tiny.corpus`."]}
    (tmp_path / "notebooks" / "02_rerank.ipynb").write_text(json.dumps({"cells": [cell]}))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "tiny.yaml").write_text("# made by nbutils.tiny_policy.build\nseed: 0\n")
    assert unresolved(texts(tmp_path)) == ["notebooks/02_rerank.ipynb: nbutils.pairrm_compat",
                                           "params/tiny.yaml: nbutils.tiny_policy.build"]
