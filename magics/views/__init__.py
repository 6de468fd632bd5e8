"""The live views: ipywidgets that follow the node, each with a static HTML/SVG and text form.

============================  ============================  =====================================
view                          in a cell                     from Python
============================  ============================  =====================================
:class:`ProcessTableView`     ``%ps --live``                ``views.process_table(node)``
:class:`MailboxView`          ``%mailbox PID``              ``views.mailbox(node, pid)``
:class:`TreeView`             ``%tree [ROOT]``              ``views.tree(node, root)``
:class:`TraceView`            ``%%trace``, ``%trace on``    ``with views.trace(node) as t: ...``
:class:`RegistryHistoryView`  ``%registry history --view``  ``views.registry_history(node)``
:class:`SessionView`          ``%%agent ID``                ``SessionView(node, session)``
============================  ============================  =====================================

Each view has ``.widget`` (display it, or the view itself), ``.close()``, ``static_html()``, ``text()``
and ``_repr_mimebundle_`` (the widget plus text/html and text/plain, so a saved notebook, GitHub and
nbval read the drawing). A pump per view (``pump.py``) redraws at most 10 times a second.
"""

from __future__ import annotations

from wippy.runtime import Node

from .mailbox import MailboxView
from .process_table import ProcessTableView
from .pump import Pump, View, close_widget
from .registry import RegistryHistoryView
from .session import SessionView
from .trace import TraceView
from .tree import TreeView

__all__ = [
    "MailboxView",
    "ProcessTableView",
    "Pump",
    "RegistryHistoryView",
    "SessionView",
    "TraceView",
    "TreeView",
    "View",
    "close_widget",
    "mailbox",
    "process_table",
    "registry_history",
    "trace",
    "tree",
]


def process_table(node: Node, **options: object) -> ProcessTableView:
    """The live process table of ``node`` (options: sort, descending, filter, limit, sample)."""
    return ProcessTableView(node, **options)  # type: ignore[arg-type]


def mailbox(node: Node, pid: str) -> MailboxView:
    """The live mailbox of ``pid`` (a PID or a registered name)."""
    return MailboxView(node, pid)


def tree(node: Node, root: str | None = None) -> TreeView:
    """The live supervision tree (under ``root``: an id, child id or PID)."""
    return TreeView(node, root)


def registry_history(node: Node) -> RegistryHistoryView:
    """The registry's versions as a live timeline with diffs."""
    return RegistryHistoryView(node)


def trace(node: Node, *, everything: bool = False, limit: int = 200) -> TraceView:
    """A trace of what Python code sets off: ``with views.trace(node) as t: node.send(...)``, then show ``t``.

    Leaving the ``with`` block waits a moment for the traffic to settle, then stops collecting (the
    widget stays). ``everything`` traces all of the node's traffic, live, until ``t.close()``.
    """
    if everything:
        return TraceView(node, limit=limit)
    return _ScopedTrace(node, seeds=(), limit=limit)


class _ScopedTrace(TraceView):
    def __exit__(self, *exc: object) -> None:
        self.settle()
        self.stop()
