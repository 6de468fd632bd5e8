"""wippy.magics: IPython magics for the runtime.

``%%lua`` / ``%lua`` (magics/lua.py), ``%ps``, ``%mailbox``, ``%spawn``, ``%send``, ``%kill``, ``%cancel``,
``%logs`` (magics/process.py), ``%registry`` (magics/registry.py), ``%tree`` (magics/supervision.py),
``%%trace`` / ``%trace`` (magics/trace.py), ``%workflow`` (magics/workflow.py) and ``%whoami`` /
``%policy`` (magics/security.py), ``%%agent`` / ``%agent`` (magics/agent.py), ``%runtime``
(magics/teach.py); the live views they show are in magics/views/. The Wippy kernel loads them itself,
sharing its node; in any other IPython kernel, ``%load_ext wippy.magics`` loads them and starts a node
of its own. Either way the node is
:func:`node` here and ``node`` in the user namespace.

IPython is imported lazily (in :func:`load_ipython_extension`), so importing this package stays cheap.
"""

from __future__ import annotations

import sys
from typing import Any

from .current import cell, node, set_node

__all__ = ["cell", "load_ipython_extension", "node", "set_node", "unload_ipython_extension"]


def _pre_run_cell(info: Any) -> None:
    """IPython's pre_run_cell hook (the cell's thread)."""
    cell_id = getattr(info, "cell_id", None)
    cell.id = cell_id
    pump = sys.modules.get("wippy.magics.views.pump")  # no view was ever shown: nothing to close
    if pump is not None and cell_id:
        pump.cell_runs_again(cell_id)


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the Lua error display on ``ipython``; put ``node`` in its namespace.

    Runs on the thread that loads the extension (the kernel's main thread).
    """
    from .agent import AgentMagics
    from .cluster import ClusterMagics
    from .lua import LuaMagics, install_error_display
    from .process import ProcessMagics
    from .registry import RegistryMagics, show_watch_reports
    from .security import SecurityMagics
    from .supervision import SupervisionMagics
    from .teach import RuntimeMagics
    from .trace import TraceMagics
    from .workflow import WorkflowMagics

    n = node()
    # Start the shell process now, while nothing else runs: Node.shell() waits on its host while holding
    # the node's lock, which a host thread reporting an exit or a print at that moment would also need.
    n.shell()
    ipython.register_magics(LuaMagics, ProcessMagics)
    ipython.register_magics(RegistryMagics, SupervisionMagics, TraceMagics)
    ipython.register_magics(WorkflowMagics, SecurityMagics, AgentMagics, RuntimeMagics, ClusterMagics)
    install_error_display(ipython)
    ipython.events.register("pre_run_cell", lambda *_: show_watch_reports())
    ipython.events.register("pre_run_cell", _pre_run_cell)
    ipython.push({"node": n})


def unload_ipython_extension(ipython: Any) -> None:
    """Stop watching trees, and the node if the extension started it (``%unload_ext wippy.magics``)."""
    from .current import stop_owned_node
    from .registry import stop_watchers
    from .trace import LIVE

    stop_watchers()
    while LIVE:
        LIVE.pop().close()
    try:
        ipython.events.unregister("pre_run_cell", _pre_run_cell)
    except ValueError:  # not registered (loaded elsewhere)
        pass
    stop_owned_node()
