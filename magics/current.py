"""The node the magics act on: the Wippy kernel's, or one the extension starts for itself.

Threads: any thread may call :func:`node` (cells run on the kernel's main thread, or on a subshell thread
in JupyterLab 4.4+); a lock makes sure only one node is ever started. Imports no IPython.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from wippy.runtime import Node

__all__ = ["cell", "data_dir", "node", "replace_node", "set_node", "start_node", "stop_owned_node"]

#: the id of the notebook cell running on this thread (``cell.id``; None outside a notebook front end).
#: The live views remember the cell that showed them: when it runs again, its output is cleared, and the
#: views of its previous run are closed (JupyterLab keeps the widget models of a cleared output alive).
cell = threading.local()

_lock = threading.Lock()
_node: Node | None = None
_owned = False  # True when node() started the node itself: then it is ours to stop


def data_dir() -> Path:
    """The node's data directory (API.md): ``WIPPY_DATA_DIR`` if set; else one per notebook,
    ``.wippy/<notebook name>/`` in the working directory (Jupyter starts a notebook's kernel in the
    notebook's folder and names it in ``JPY_SESSION_NAME``); else ``.wippy/`` in the working directory."""
    configured = os.environ.get("WIPPY_DATA_DIR")
    if configured:
        return Path(configured)
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return Path.cwd() / ".wippy" / Path(session).stem
    return Path.cwd() / ".wippy"


def start_node(node_name: str | None = None, cluster: str | None = None, ttl: float | None = None) -> Node:
    """Start a node for a notebook: its data directory created and set as ``node.data_dir``; with
    ``node_name``, a node that can join a cluster (its PIDs are ``{name@host|id}``); with ``cluster`` (a
    PostgreSQL URL) too, one that joins it before it starts.

    Background processes print into their logs (``%logs``), never into whichever cell happens to run:
    only the shell process's output belongs to a cell (the ``%%lua`` magic routes it there).
    """
    path = data_dir()
    path.mkdir(parents=True, exist_ok=True)
    store = cluster if cluster is not None and not os.environ.get("WIPPY_WORKFLOW_STORE") else None
    n = Node(output=None, data_dir=path, node_name=node_name, workflow_store=store,
             workflow_ttl=(ttl or 5.0) if store else None)
    if cluster is not None:   # joined before it starts: its auto-started services are members already
        n.join_cluster(cluster, ttl=ttl)
    return n.start()


def replace_node(n: Node) -> None:
    """Make ``n`` the node of the magics in place of the current one (``%cluster join``), which the caller
    has stopped; whoever was to stop the old one (the kernel, or atexit) stops this one."""
    global _node
    with _lock:
        _node = n


def set_node(n: Node | None) -> None:
    """Make ``n`` the node of the magics (the kernel calls this before loading the extension)."""
    global _node, _owned
    with _lock:
        _node, _owned = n, False


def node() -> Node:
    """The node the magics and Python cells use; started here (and stopped at exit) if nobody set one."""
    global _node, _owned
    with _lock:
        if _node is None:
            _node, _owned = start_node(), True
            atexit.register(stop_owned_node)
        return _node


def stop_owned_node() -> None:
    """Stop the node if :func:`node` started it (a node set by the kernel is the kernel's to stop)."""
    global _node, _owned
    with _lock:
        n, owned = _node, _owned
        if owned:
            _node, _owned = None, False
    if owned and n is not None:
        n.stop(grace=1.0)
