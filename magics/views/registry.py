"""RegistryHistoryView: the registry's versions as a timeline, each with its diff (``%registry history --view``).

Source: ``node.events`` registry events (one per new version); on a runtime without the bus, the pump
compares ``registry.version`` (a counter read under the registry's lock) at each step. Each version's
diff against the one before is the same as ``%registry diff V-1 V`` (:func:`~..registry_diff.registry_diff`),
computed once and kept. Drawing: a strip of dots (one per version) and, newest first, a ``<details>``
per version with its message, changes and coloured diff (the newest open), which works the same in the
static HTML of a saved notebook.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node, Version

from ..registry_diff import OPS, RegistryDiff, registry_diff
from .pump import INTERVAL, Subscription, View, clock, events_of, text_table

__all__ = ["RegistryHistoryView"]


class RegistryHistoryView(View):
    """The registry's history: ``versions`` (oldest first; the last ``limit`` are drawn)."""

    title = "registry"

    def __init__(self, node: Node, *, limit: int = 30, interval: float = INTERVAL, live: bool = True) -> None:
        self.limit = limit
        self.versions: list[Version] = []
        self._diffs: dict[int, RegistryDiff] = {}
        self._seen = -1
        self._sub: Subscription | None = None
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        source = events_of(self.node)
        if source is not None:
            self._sub = source.subscribe(kinds=("registry",), maxlen=1000)
            self.on_close(self._sub.close)
        self.body = widgets.HTML(value="")
        return widgets.VBox([self.body, self.status])

    def _collect(self) -> None:
        reg = self.node.registry
        news = bool(self._sub.drain()) if self._sub is not None else False
        if not news and reg.version == self._seen:
            return
        history = reg.history()
        self._seen = history[-1].version if history else 0
        if history and self.versions and history[0].version != self.versions[0].version:
            self._diffs.clear()  # reset: numbers start again
        if not history:
            self._diffs.clear()
        self.versions = history
        for v in history[-self.limit:]:
            if v.version not in self._diffs:
                self._diffs[v.version] = registry_diff(reg, v.version - 1, v.version)

    def diff(self, version: int) -> RegistryDiff:
        """Version ``version`` against the one before it."""
        d = self._diffs.get(version)
        if d is None:
            d = self._diffs[version] = registry_diff(self.node.registry, version - 1, version)
        return d

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        return {self.body: {"value": self.static_html()}}

    def _status_html(self) -> str:
        shown = min(len(self.versions), self.limit)
        more = f" · {len(self.versions) - shown} older not shown" if len(self.versions) > shown else ""
        return f'<span class="wippy-view-status">{len(self.versions)} versions{more}</span>'

    def _strip(self, shown: list[Version]) -> str:
        step, r, pad = 34, 7, 14
        width = pad * 2 + step * max(len(shown) - 1, 0) + 20
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-registry-timeline" width="{width}" '
                 f'height="44" viewBox="0 0 {width} 44" font-family="sans-serif" font-size="10">',
                 f'<line x1="{pad}" y1="16" x2="{width - pad}" y2="16" stroke="#90a4ae"/>']
        for i, v in enumerate(shown):
            cx = pad + i * step
            ops = {op for op, _, _ in v.changes}
            colour = "#cf222e" if ops == {"delete"} else "#1a7f37" if ops == {"create"} else "#0969da"
            tip = html.escape(f"v{v.version} {clock(v.time)} {v.message or ''}")
            parts.append(f'<g class="wippy-version" data-version="{v.version}"><title>{tip}</title>'
                         f'<circle cx="{cx}" cy="16" r="{r}" fill="{colour}"/>'
                         f'<text x="{cx}" y="38" text-anchor="middle">v{v.version}</text></g>')
        parts.append("</svg>")
        return "".join(parts)

    def static_html(self) -> str:
        if not self.versions:
            return '<p class="wippy-registry-history">no versions yet</p>'
        shown = self.versions[-self.limit:]
        parts = ['<div class="wippy-registry-history">', self._strip(shown)]
        for i, v in enumerate(reversed(shown)):
            changes = " ".join(f"{OPS.get(op, op)}{entry_id}" for op, entry_id, _ in v.changes)
            head = html.escape(f"v{v.version}  {clock(v.time)}  {v.message or ''}  {changes}")
            opened = " open" if i == 0 else ""
            parts.append(f'<details{opened} data-version="{v.version}"><summary><code>{head}</code></summary>'
                         f"{self.diff(v.version)._repr_html_()}</details>")
        if len(self.versions) > len(shown):
            parts.append(f"<p>{len(self.versions) - len(shown)} older versions not shown</p>")
        parts.append("</div>")
        return "".join(parts)

    def text(self) -> str:
        if not self.versions:
            return "no versions yet"
        rows = [(str(v.version), clock(v.time), v.message or "",
                 " ".join(f"{OPS.get(op, op)}{entry_id}" for op, entry_id, _ in v.changes))
                for v in self.versions[-self.limit:]]
        return text_table(("VERSION", "TIME", "MESSAGE", "CHANGES"), rows)
