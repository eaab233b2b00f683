"""A local Hugging Face hub: olah (a mirror server, in its own venv ``.venv-hub``) serving
the git repos of :mod:`nbutils.twins.build` in offline mode, bound to 127.0.0.1. The real clients
(huggingface_hub, datasets, transformers, vLLM, llm-blender) reach it through ``HF_ENDPOINT``;
it never asks the real hub (its upstream is the discard port).

    python -m nbutils.twins.mirror DIR      # build the twins in DIR and serve them until Ctrl-C
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nbutils.store.files import REPO_ROOT

OLAH = Path(os.environ.get("NBUTILS_OLAH", REPO_ROOT / ".venv-hub" / "bin" / "olah-cli"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root/mirrors`` with olah on 127.0.0.1 (offline: it never asks the real hub);
    yields the endpoint for ``HF_ENDPOINT``. The server dies with the block."""
    if not OLAH.exists():
        raise FileNotFoundError(f"no olah at {OLAH}: `make install` builds .venv-hub (or set NBUTILS_OLAH)")
    port, root = _free_port(), Path(root)
    config = root / "olah.toml"
    config.write_text(f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirror-netloc = "127.0.0.1:{port}"\n'
                      f'mirror-lfs-netloc = "127.0.0.1:{port}"\nhf-scheme = "http"\n'
                      f'hf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'  # upstream: the discard port
                      f'repos-path = "{root / "olah-cache"}"\nmirrors-path = ["{root / "mirrors"}"]\n'
                      "[accessibility]\noffline = true\n")
    with open(root / "olah.log", "w") as log:
        proc = subprocess.Popen([str(OLAH), "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"olah exited ({proc.returncode}); see {root / 'olah.log'}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    from nbutils.twins import github
    from nbutils.twins.build import build
    where = Path(sys.argv[1] if len(sys.argv) > 1 else "hub-twins").resolve()
    if not (where / "mirrors").exists():
        build(where)
    with serve(where) as endpoint, github.serve(github.build(where)) as raw:
        print(f"hub twins in {where / 'mirrors'}, alpaca_eval's GitHub results/ in {where / 'raw'}\n"
              f"export HF_ENDPOINT={endpoint} NBUTILS_GITHUB_RAW={raw}  # Ctrl-C stops the servers")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
