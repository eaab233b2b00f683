"""The kernel manager of the runner's notebooks: IPC transport (Unix sockets in Jupyter's runtime
folder) instead of TCP on localhost, which ipykernel warns about ("Kernel is running over TCP
without encryption")."""
from __future__ import annotations

from jupyter_client import AsyncKernelManager


class IPCKernelManager(AsyncKernelManager):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"
