"""TreeView: the supervision tree, drawn live (bare ``%tree [ROOT]``).

Source: ``node.supervision.subscribe`` (a :class:`~.pump.TreeBuffer`: the supervision thread only appends
and pokes), then one ``node.supervision.tree(root)`` snapshot per step that had events. Drawing:
:func:`wippy.magics.supervision.tree_svg` (status colours, restart counts, last exit). A node whose
restart count grew, or that failed, since the previous frame flashes (class ``wippy-flash``, a CSS
animation) for :attr:`TreeView.FLASH_SECONDS`, with its last exit written under it.

In a cluster (``node.cluster`` set, no ROOT), the view draws every node's tree under one root, as
``%tree --text`` does: ``node.cluster_tree`` (the other nodes asked at once, over the links) about
every :attr:`TreeView.CLUSTER_POLL` seconds and after every local event. Ids repeat from node to node
(each runs its own ``app:sup``), so the view qualifies them by node (``node n1/app:sup/worker``): a
restart on one node flashes that node's box only. The other nodes' restarts are seen by comparing
restart counts from one poll to the next; their links are not drawn (statistics are this node's).
"""

from __future__ import annotations

import dataclasses
import html
import time
from typing import Any, ClassVar

import ipywidgets as widgets
from wippy.runtime import Node, WippyError
from wippy.runtime.supervisor_tree import TreeNode, render_text

from ..format import strip_pids
from ..tree_picture import tree_links, tree_svg
from .pump import INTERVAL, TreeBuffer, View

__all__ = ["TreeView"]


class TreeView(View):
    """The supervision tree under ``root`` (an id, child id or PID; None: the whole tree), live.

    ``svg`` is the HTML widget whose value is the drawing; ``snapshot`` the last
    :class:`~wippy.runtime.supervisor_tree.TreeNode` drawn; ``flashing`` the ids flashing now.
    """

    title = "tree"
    FLASH_SECONDS: ClassVar[float] = 2.0
    #: in a cluster: seconds between two reads of the other nodes' trees, and how long one read waits
    CLUSTER_POLL: ClassVar[float] = 1.0
    CLUSTER_TIMEOUT: ClassVar[float] = 1.0

    def __init__(self, node: Node, root: str | None = None, *, pids: bool = True, interval: float = INTERVAL,
                 live: bool = True) -> None:
        # a root given by PID or child id is followed by its node id (a restart changes the PID)
        self.root = node.supervision.tree(root).id if root else None
        self.pids = pids
        self.snapshot: TreeNode | None = None
        self.problem: str | None = None
        self._restarts: dict[str, int] = {}
        self._flash_until: dict[str, float] = {}
        self._links: list[tuple[str, str]] = []   # linked PIDs of the tree, drawn dotted
        self._buffer: TreeBuffer | None = None
        self._polled_at = float("-inf")          # in a cluster: when the other nodes were last asked
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        self._buffer = TreeBuffer(self.node, self.poke)
        self.on_close(self._buffer.close)
        self.svg = widgets.HTML(value="")
        return widgets.VBox([self.svg, self.status])

    @property
    def flashing(self) -> frozenset[str]:
        now = time.monotonic()
        return frozenset(k for k, t in self._flash_until.items() if t > now)

    def in_cluster(self) -> bool:
        """Whether the view draws the whole cluster (its node is in one, and no ROOT was given)."""
        return self.root is None and self.node.cluster is not None

    def _collect(self) -> None:
        assert self._buffer is not None
        events = self._buffer.drain()
        now = time.monotonic()
        cluster = self.in_cluster()
        mine = f"node {self.node.node_name}/" if cluster else ""
        for ev in events:
            if ev.kind == "restart" or ev.status == "failed":
                self._flash_until[mine + ev.id] = now + self.FLASH_SECONDS
        due = cluster and now - self._polled_at >= self.CLUSTER_POLL
        moved = self.snapshot is not None and (self.snapshot.id == "cluster") != cluster   # joined or left
        if events or self.snapshot is None or due or moved:
            try:
                if cluster:
                    self._polled_at = now
                    snap = qualified(self.node.cluster_tree(timeout=self.CLUSTER_TIMEOUT))
                else:
                    snap = self.node.supervision.tree(self.root)
                self.problem = None
            except WippyError as exc:  # the root went away (deleted, stopped): say so until it is back
                self.problem, self.snapshot = str(exc), None
                return
            for n in snap.walk():
                before = self._restarts.get(n.id)
                if before is not None and n.restarts > before:
                    self._flash_until[n.id] = now + self.FLASH_SECONDS
            self._restarts = {n.id: n.restarts for n in snap.walk()}
            self.snapshot = snap
            try:   # links between its processes, drawn dotted (read once per change of the tree)
                self._links = tree_links(self.node, snap) if self.pids else []
            except WippyError:
                self._links = []
        for k in [k for k, t in self._flash_until.items() if t <= now]:
            del self._flash_until[k]  # the next frame drops its class

    def _shown(self) -> TreeNode | None:
        if self.snapshot is None:
            return None
        return self.snapshot if self.pids else strip_pids(self.snapshot)

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        shown = self._shown()
        if shown is None:
            return {self.svg: {"value": self.static_html()}}
        return {self.svg: {"value": tree_svg(shown, flash=self.flashing, links=self._links)}}

    def _status_html(self) -> str:
        parts = []
        if self.problem:
            parts.append(f'<span style="color:#c62828">{html.escape(self.problem)}</span>')
        if self.snapshot is not None:
            nodes = [n for n in self.snapshot.walk() if n.kind != "root"]   # a cluster's nodes are roots
            failed = sum(1 for n in nodes if n.status == "failed")
            restarts = sum(n.restarts for n in nodes)
            parts.append(f"{len(nodes)} supervised · {restarts} restarts · {failed} failed")
            if self.snapshot.id == "cluster":
                parts.insert(-1, f"{len(self.snapshot.children)} nodes")
        if self._buffer is not None and self._buffer.dropped:
            parts.append(f"{self._buffer.dropped} tree events dropped")
        return '<span class="wippy-view-status">' + " · ".join(parts) + "</span>"

    def static_html(self) -> str:
        shown = self._shown()
        if shown is None:
            return f"<p>{html.escape(self.problem or 'no tree')}</p>"
        return tree_svg(shown, links=self._links)

    def text(self) -> str:
        shown = self._shown()
        return render_text(shown) if shown is not None else (self.problem or "no tree")


def qualified(tree: TreeNode) -> TreeNode:
    """A cluster's tree (``cluster`` > ``node NAME`` > ...) with every id under a node prefixed by it
    (``node n1/app:sup``): unique across nodes, and drawn the same (a box shows the id's last part)."""

    def under(n: TreeNode, prefix: str) -> TreeNode:
        return dataclasses.replace(n, id=prefix + n.id, children=tuple(under(c, prefix) for c in n.children))

    return dataclasses.replace(tree, children=tuple(
        dataclasses.replace(top, children=tuple(under(c, top.id + "/") for c in top.children))
        for top in tree.children))
