"""TreeView: the supervision tree, drawn live (bare ``%tree [ROOT]``).

Source: ``node.supervision.subscribe`` (a :class:`~.pump.TreeBuffer`: the supervision thread only appends
and pokes), then one ``node.supervision.tree(root)`` snapshot per step that had events. Drawing:
:func:`wippy.magics.supervision.tree_svg` (status colours, restart counts, last exit). A node whose
restart count grew, or that failed, since the previous frame flashes (class ``wippy-flash``, a CSS
animation) for :attr:`TreeView.FLASH_SECONDS`, with its last exit written under it.
"""

from __future__ import annotations

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

    def _collect(self) -> None:
        assert self._buffer is not None
        events = self._buffer.drain()
        now = time.monotonic()
        for ev in events:
            if ev.kind == "restart" or ev.status == "failed":
                self._flash_until[ev.id] = now + self.FLASH_SECONDS
        if events or self.snapshot is None:
            try:
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
            nodes = [n for n in self.snapshot.walk() if n.kind != "root"]
            failed = sum(1 for n in nodes if n.status == "failed")
            restarts = sum(n.restarts for n in nodes)
            parts.append(f"{len(nodes)} supervised · {restarts} restarts · {failed} failed")
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
