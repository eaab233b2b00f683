"""A twin of alpaca_eval's GitHub ``results/`` folder, served like raw.githubusercontent.com.

Built from the real AlpacaEval data in ``../shared/alpaca_eval/``: the three published
``model_outputs.json`` files as they are, and for the five models with the leaderboard's
GPT-4-turbo judgments, ``weighted_alpaca_eval_gpt4_turbo/annotations.json`` as they are and
the ``model_outputs.json`` those judgments judged (their ``output_2``). Paths are the real
ones (``/tatsu-lab/alpaca_eval/<commit>/results/<model>/...``); the server binds to
127.0.0.1 in a thread of the calling process (it dies with it). Clients reach it through
``NBUTILS_GITHUB_RAW``.
"""
from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from nbutils.sources.published import ANNOTATIONS, COMMIT, REPO
from nbutils.twins.build import ALPACA_DATA


def build(root: Path) -> Path:
    """``root/raw/tatsu-lab/alpaca_eval/<commit>/results/<model>/...``; returns ``root/raw``."""
    results = Path(root) / "raw" / REPO / COMMIT / "results"
    for f in sorted((ALPACA_DATA / "outputs").glob("*.json")):
        (results / f.stem).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, results / f.stem / "model_outputs.json")
    for f in sorted((ALPACA_DATA / "annotations").glob("*.json")):
        target = results / f.stem / ANNOTATIONS
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
        rows = [{"dataset": r["dataset"], "instruction": r["instruction"], "output": r["output_2"],
                 "generator": r["generator_2"]} for r in json.loads(f.read_text())]
        (results / f.stem / "model_outputs.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return Path(root) / "raw"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(raw: Path):
    """Serve ``raw`` on 127.0.0.1; yields the base URL for ``NBUTILS_GITHUB_RAW``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(raw)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
