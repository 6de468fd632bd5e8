"""The supervision tree as the public sees it: immutable snapshots and change events.

:class:`TreeNode` is one node of a snapshot (the root, a supervisor, a service or a worker), taken by
:meth:`~.supervisor.Supervision.tree` on any thread; :class:`TreeEvent` is one change, handed to
subscribers on the supervision thread. :func:`render_text` draws a snapshot as text (``%tree --text``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUSES", "TreeEvent", "TreeNode", "render_text"]

#: every status a node can be in
STATUSES = ("starting", "running", "restarting", "stopping", "stopped", "failed")


@dataclass(frozen=True)
class TreeNode:
    """One node of the supervision tree, as it was when the snapshot was taken."""

    id: str                        #: path from the root: ``app:sup``, ``app:sup/worker-a``
    kind: str                      #: root | supervisor | service | worker
    status: str                    #: one of :data:`STATUSES`
    pid: str | None = None         #: the process (worker, service) or the supervisor's own PID
    entry: str | None = None       #: the registry entry it runs (process, service or supervisor)
    restarts: int = 0              #: how many times it was restarted
    last_exit: str | None = None   #: the last exit reason, e.g. ``error: boom`` (first line)
    started_at: float | None = None  #: unix seconds of the current run's start
    strategy: str | None = None    #: supervisors: one_for_one | one_for_all | rest_for_one
    restart: str | None = None     #: supervised children: permanent | transient | temporary
    children: tuple[TreeNode, ...] = ()

    @property
    def name(self) -> str:
        """The last part of :attr:`id` (the child's id within its supervisor)."""
        return self.id.rsplit("/", 1)[-1]

    def walk(self) -> Iterator[TreeNode]:
        """This node, then every node below it, depth first in child order."""
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, key: str) -> TreeNode | None:
        """The node whose id, last id part or PID is ``key``, or None."""
        for n in self.walk():
            if key in (n.id, n.pid):
                return n
        for n in self.walk():
            if n.name == key:
                return n
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for Lua, JSON and the views)."""
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "status": self.status, "restarts": self.restarts}
        for k in ("pid", "entry", "last_exit", "started_at", "strategy", "restart"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        d["children"] = [c.to_dict() for c in self.children]
        return d


@dataclass(frozen=True)
class TreeEvent:
    """One change of the tree, in the order it happened."""

    kind: str                      #: added | status | restart | removed
    id: str                        #: the node's id (see :attr:`TreeNode.id`)
    status: str                    #: the node's status after the change
    pid: str | None = None
    reason: str | None = None      #: for a status caused by an exit: the exit reason
    restarts: int = 0
    delay: float | None = None     #: for a service waiting to restart: the backoff delay, seconds
    time: float = field(default_factory=time.time)


def _age(started: float | None, now: float) -> str:
    if started is None:
        return ""
    s = max(0.0, now - started)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def render_text(node: TreeNode, *, now: float | None = None, show_age: bool = False) -> str:
    """Draw a snapshot as an indented tree, one node a line::

        app:sup  supervisor one_for_all  running  {python|0x00003}
        ├── a  worker permanent  running  {app:processes|0x5}  restarts=1  last=error: boom
        └── b  worker transient  stopped  last=normal
    """
    now = time.time() if now is None else now
    lines: list[str] = []

    def label(n: TreeNode, top: bool) -> str:
        parts = [n.id if top else n.name]
        what = n.kind
        if n.strategy:
            what += f" {n.strategy}"
        if n.restart:
            what += f" {n.restart}"
        parts.append(what)
        parts.append(n.status)
        if n.pid:
            parts.append(n.pid)
        if n.restarts:
            parts.append(f"restarts={n.restarts}")
        if n.last_exit:
            parts.append(f"last={n.last_exit}")
        if show_age and n.status == "running":
            age = _age(n.started_at, now)
            if age:
                parts.append(f"up {age}")
        return "  ".join(parts)

    def draw(n: TreeNode, prefix: str, last: bool, top: bool) -> None:
        if top:
            lines.append(label(n, True))
            child_prefix = ""
        else:
            lines.append(prefix + ("└── " if last else "├── ") + label(n, False))
            child_prefix = prefix + ("    " if last else "│   ")
        for i, c in enumerate(n.children):
            draw(c, child_prefix, i == len(n.children) - 1, False)

    draw(node, "", True, True)
    return "\n".join(lines)
