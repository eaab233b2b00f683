"""The kernel manager of the runner's notebooks: IPC transport (Unix sockets) instead of TCP on
localhost, which ipykernel warns about ("Kernel is running over TCP without encryption"). The
sockets live in Jupyter's runtime folder, never in the notebook's working directory."""
from __future__ import annotations

import uuid
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir


class IPCKernelManager(AsyncKernelManager):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        self.transport = "ipc"
        self.ip = str(runtime / f"nbutils-kernel-{uuid.uuid4().hex[:12]}")
