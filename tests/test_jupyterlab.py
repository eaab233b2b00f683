"""The workbook as a learner meets it: JupyterLab (started as `make lab` starts it) in headless
Chromium; each notebook opened in order and run with Run All, after only the ones before it.

A user's checkout of its own (the tiny preset, a few sizes made smaller in the parameters cells
as a learner would edit them); each notebook must finish without an error, show a figure, and
show no stderr box (library logs, warnings, text progress bars: the workbook prevents them all).
Saving a notebook writes it without outputs.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from nbutils.store.files import REPO_ROOT
from tests.conftest import chromium

# parameter edits, as a learner makes them in the parameters cell, to keep the run short
EDITS = {"01_generate": {"prompts_per_iteration": "32", "num_samples": "4", "max_new_tokens": "48"},
         "03_dpo_qlora": {"num_train_epochs": "1.0"},
         "04_evaluate": {"eval_instructions": "8", "best_of_n": "4", "eval_max_new_tokens": "48"}}
NOTEBOOKS = ["01_generate", "02_rerank", "03_dpo_qlora", "04_evaluate", "05_length_analysis"]
TIMEOUT_S = 600


def edit_parameters(path, values: dict):
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    text = "".join(cell["source"])
    for key, value in values.items():
        text, n = re.subn(rf"^({key}: \w+ = )[^#\n]+?(  #)", rf"\g<1>{value}\g<2>", text, flags=re.M)
        assert n == 1, key
    cell["source"] = text.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a fresh checkout, with the project's Jupyter config; yields (url, token, root)."""
    root = tmp_path_factory.mktemp("learner")
    for part in ("notebooks", "nbutils", "params", "recipes", "jupyter"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name, values in EDITS.items():
        edit_parameters(root / "notebooks" / f"{name}.ipynb", values)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token, home = "learner-token", root / "home"
    # every cell in the page (no windowing), so the test reads every prompt and output
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(root / "jupyter"), "PYTHONPATH": str(root),
           "NBUTILS_CACHE": str(REPO_ROOT / ".cache"), "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings")}
    log = (root / "lab.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                               f"--IdentityProvider.token={token}"], cwd=root, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def prompts(page) -> list[str]:
    return page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()


def shut_down_kernels(url, token):
    """End every session (and its kernel) through the server's REST API."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    auth = {"Authorization": f"token {token}"}
    for session in json.load(opener.open(urllib.request.Request(f"{url}/api/sessions", headers=auth))):
        opener.open(urllib.request.Request(f"{url}/api/sessions/{session['id']}", method="DELETE", headers=auth))


STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
ERROR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"


def failure(page, root, name, why):
    """An AssertionError that shows what a learner would see: the error outputs, open dialogs, the
    end of the server's log (a kernel that died says so there) and a screenshot."""
    page.screenshot(path=str(root / f"{name}.png"), full_page=True)
    errors = page.locator(ERROR).all_text_contents() + page.locator(".jp-Dialog").all_text_contents()
    log = (root / "lab.log").read_text(errors="replace")[-3000:]
    return AssertionError(f"{name}: {why}: {prompts(page)}\n" + "\n---\n".join(t[:3000] for t in errors)
                          + f"\n--- lab.log (end) ---\n{log}\n(screenshot in {root})")


def settled(url, token, name, timeout: float = 120):
    """Wait until the notebook has one kernel session, the same for 3 s (JupyterLab may start two
    and shut one down while the page opens on a busy machine)."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{url}/api/sessions", headers={"Authorization": f"token {token}"})
    last, since, deadline = None, time.time(), time.time() + timeout
    while time.time() < deadline:
        kernels = [s["kernel"]["id"] for s in json.load(opener.open(request))
                   if s["path"].endswith(f"{name}.ipynb") and s.get("kernel")]
        current = kernels[0] if len(kernels) == 1 else None
        if current != last:
            last, since = current, time.time()
        elif current and time.time() - since >= 3:
            return
        time.sleep(0.5)


def run_all(page, url, token, name, root):
    """Open ``name``, Run All, wait until every code cell has run or one has failed."""
    page.goto(f"{url}/lab/tree/notebooks/{name}.ipynb?reset&token={token}")  # reset: no earlier tabs
    page.locator(".jp-NotebookPanel .jp-CodeCell").first.wait_for(timeout=60_000)
    # Until a cell runs: a "Select Kernel" dialog (JupyterLab asks when its kernel specs are not loaded
    # yet or a kernel start fails on a busy machine) is answered with the default, as a learner does;
    # once the kernel is idle, Run All. Any other dialog fails the test.
    idle, started = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']"), time.time()
    settled(url, token, name)
    while time.time() - started < 180 and not any(re.search(r"\d|\*", p) for p in prompts(page)):
        if page.locator(".jp-Dialog", has_text="Select Kernel").count():
            page.locator(".jp-Dialog button", has_text=re.compile("^Select$")).click()
        elif page.locator(".jp-Dialog").count():
            raise failure(page, root, name, "a dialog before Run All")
        elif idle.count():
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
            page.wait_for_timeout(2500)
        page.wait_for_timeout(500)
    deadline, stalled, reruns = time.time() + TIMEOUT_S, 0, 0
    while time.time() < deadline:
        time.sleep(2)
        labels = [p.strip() for p in prompts(page)]
        if page.locator(ERROR).count() or page.locator(".jp-Dialog").count():
            raise failure(page, root, name, "a cell failed or a dialog opened")  # Run All stops at an error
        if all(re.fullmatch(r"\[\d+\]:", p) for p in labels) or (
                page.locator(STDERR).count() and not any("*" in p for p in labels)):
            return labels
        # Cells left unrun with nothing queued and no error: the queue went with a kernel JupyterLab replaced
        # while it started (two kernels started at once on a busy machine, one shut down). A learner runs
        # all again; so does the test, twice at most.
        stalled = stalled + 1 if "[ ]:" in labels and not any("*" in p for p in labels) else 0
        if stalled >= 3 and reruns < 2 and idle.count():
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
            stalled, reruns = 0, reruns + 1
    raise failure(page, root, name, f"Run All did not finish in {TIMEOUT_S} s")


@pytest.mark.slow
def test_every_notebook_runs_by_hand_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, token, root = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name in NOTEBOOKS:
            labels = run_all(page, url, token, name, root)
            stderr = page.locator(STDERR).all_text_contents()
            assert not stderr, f"{name}: stderr boxes:\n" + "\n---\n".join(t[:2000] for t in stderr)
            assert all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in labels), f"{name}: cells not run: {labels}"
            assert page.locator(".jp-OutputArea-output img").count() >= 1, f"{name}: no figure"
            if name == "01_generate":  # tqdm renders as a widget (ipywidgets), not text
                assert page.locator(".jp-OutputArea-output .widget-hprogress").count() >= 1
            if name == "04_evaluate":
                assert "no model yet for iteration(s) [2, 3]" in " ".join(page.locator(".jp-OutputArea").all_text_contents())
            page.keyboard.press("Control+s")
            page.wait_for_timeout(1500)
            saved = json.loads((root / "notebooks" / f"{name}.ipynb").read_text())
            assert all(not c.get("outputs") and c.get("execution_count") is None
                       for c in saved["cells"] if c["cell_type"] == "code"), f"{name}: saved with outputs"
            shut_down_kernels(url, token)  # as a learner closes a finished notebook's kernel
        browser.close()
    run = root / "runs" / "tiny"
    assert (run / "report.html").is_file() and (run / "evaluation" / "leaderboard.csv").is_file()
