"""The kernel manager of the runner's notebooks.

* **This checkout's nbutils.** The kernel's ``PYTHONPATH`` starts with the checkout the runner
  runs from, so the notebooks import the same ``nbutils`` as the runner (not whichever checkout
  an editable install points at), and a relative ``runs_dir`` means one folder for both.
* **IPC transport** (Unix sockets) instead of TCP on localhost, which ipykernel warns about
  ("Kernel is running over TCP without encryption"). The sockets live in Jupyter's runtime
  folder, never in the notebook's working directory.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir

from nbutils.store.files import checkout_first


class IPCKernelManager(AsyncKernelManager):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        self.transport = "ipc"
        self.ip = str(runtime / f"nbutils-kernel-{uuid.uuid4().hex[:12]}")

    async def start_kernel(self, **kw):
        env = dict(kw.pop("env", None) or os.environ)
        env["PYTHONPATH"] = checkout_first(env.get("PYTHONPATH"))
        return await super().start_kernel(env=env, **kw)
