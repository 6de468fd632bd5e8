"""ProcessTableView: the node's processes, live (``%ps --live``, ``wippy.magics.views.process_table(node)``).

Sources: ``node.statistics(memory=True)`` sampled by the pump every ``sample`` seconds (shared with the
other views of the node, at most once per step), and ``node.events`` exit events, which make the next
step sample at once (an exit shows within 0.1 s) and keep the last exits as grey rows. Spawns are not
subscribed to: the bus records spawns and sends inside Lua while anyone wants either, which would cost
every message of a busy node; a new process shows at the next sample.
Sortable (a Dropdown and a descending toggle), filterable (a Text matching PID, name, entry or actor); picking a
PID in the "mailbox" Dropdown opens that process's :class:`~.mailbox.MailboxView` below the table.

Columns: PID, NAME, ENTRY, ACTOR (who it acts as, for security), HOST, STATUS, MSGQ (messages waiting
in the inbox), IN, OUT, MEMORY, REDUCTIONS (times the scheduler resumed the process), UPTIME.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node, ProcessStatistics, WippyError

from ..format import duration, size
from .mailbox import MailboxView
from .pump import INTERVAL, Subscription, View, events_of, statistics, table_html, text_table

__all__ = ["COLUMNS", "ProcessTableView"]

COLUMNS = ("PID", "NAME", "ENTRY", "ACTOR", "HOST", "STATUS", "MSGQ", "IN", "OUT", "MEMORY", "REDUCTIONS",
           "UPTIME")
RIGHT = (6, 7, 8, 9, 10, 11)  # numbers read best right-aligned
SORT_KEYS: dict[str, Callable[[ProcessStatistics], Any]] = {
    "PID": lambda p: (p.host, p.pid),
    "NAME": lambda p: (", ".join(p.names), p.pid),
    "ENTRY": lambda p: (p.entry, p.pid),
    "ACTOR": lambda p: (p.actor, p.pid),
    "HOST": lambda p: (p.host, p.pid),
    "STATUS": lambda p: (p.status, p.pid),
    "MSGQ": lambda p: p.mailbox,
    "IN": lambda p: p.messages_in,
    "OUT": lambda p: p.messages_out,
    "MEMORY": lambda p: p.memory or 0,
    "REDUCTIONS": lambda p: p.resumes,
    "UPTIME": lambda p: p.uptime,
}
NONE = "(none)"


def row(p: ProcessStatistics) -> tuple[str, ...]:
    return (p.pid, ", ".join(p.names) or "-", p.entry, p.actor or "-", p.host, p.status, str(p.mailbox),
            str(p.messages_in), str(p.messages_out), size(p.memory), str(p.resumes), duration(p.uptime))


class ProcessTableView(View):
    """The processes of ``node``, live: ``rows`` are the shown rows (after filter, sort and ``limit``)."""

    title = "ps"

    def __init__(self, node: Node, *, sort: str = "PID", descending: bool = False, filter: str = "",
                 limit: int = 200, sample: float = 0.5, interval: float = INTERVAL, live: bool = True) -> None:
        if sort.upper() not in SORT_KEYS:
            raise ValueError(f"unknown column {sort!r} to sort by; columns: {', '.join(COLUMNS)}")
        self.limit = limit
        self.sample = sample
        self.processes: list[ProcessStatistics] = []
        self.rows: list[tuple[str, ...]] = []
        self.hidden = 0  # rows left out by the limit
        self.exits: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=10)  # pid, entry, why
        self.mailbox: MailboxView | None = None
        self._sampled_at = 0.0
        self._want_sample = True
        self._sub: Subscription | None = None
        self._picked = ""
        self._entries: dict[str, str] = {}
        self._init = (sort.upper(), descending, filter)
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        source = events_of(self.node)
        if source is not None:
            # exits only: spawns and sends are recorded inside Lua while anyone subscribes to them, which
            # costs every message; new processes show at the next sample
            self._sub = source.subscribe(kinds=("exit",), maxlen=1000)
            self.on_close(self._sub.close)
        self.on_close(self._close_mailbox)
        sort, descending, text = self._init
        self.sort = widgets.Dropdown(options=COLUMNS, value=sort, description="sort by",
                                     layout=widgets.Layout(width="200px"))
        self.descending = widgets.Checkbox(value=descending, description="descending", indent=False,
                                           layout=widgets.Layout(width="110px"))
        self.filter = widgets.Text(value=text, placeholder="filter: PID, name, entry or actor",
                                   layout=widgets.Layout(width="240px"))
        self.pick = widgets.Dropdown(options=((NONE, NONE),), value=NONE, description="mailbox",
                                     layout=widgets.Layout(width="340px"))
        self.table = widgets.HTML(value="")
        self.detail = widgets.VBox([])
        for w in (self.sort, self.descending, self.filter):
            w.observe(self.mark_dirty, names="value")
        self.pick.observe(self._on_pick, names="value")
        return widgets.VBox([widgets.HBox([self.filter, self.sort, self.descending, self.pick]),
                             self.table, self.status, self.detail])

    # ------------------------------------------------------------------ callbacks (any thread)
    def _on_pick(self, change: dict[str, Any]) -> None:
        if self.drawing:  # the view set the options (which selects the first one): not the user
            return
        self.select(change["new"] if change["new"] != NONE else None)

    def select(self, pid: str | None) -> None:
        """Open ``pid``'s mailbox view below the table (None closes it); drawn at the next step."""
        self._picked = pid or ""
        self.mark_dirty()

    def _close_mailbox(self) -> None:
        mb, self.mailbox = self.mailbox, None
        if mb is not None:
            mb.close()

    # ------------------------------------------------------------------ the pump's thread
    def _collect(self) -> None:
        if self._sub is not None:
            for ev in self._sub.drain():
                self._want_sample = True
                if ev.kind == "exit" and ev.pid:
                    why = ev.reason or "exited"
                    if ev.error and ev.error != ev.reason:
                        why += ": " + ev.error.splitlines()[0][:40]
                    self.exits.appendleft((ev.pid, self._entries.get(ev.pid, ""), why))
        now = time.monotonic()
        if self._want_sample or now - self._sampled_at >= self.sample:
            try:
                self.processes = statistics(self.node, max_age=INTERVAL, memory=True).processes
            except WippyError:
                self.processes = []
            self._sampled_at, self._want_sample = now, False
            self._entries.update((p.pid, p.entry) for p in self.processes)
            if len(self._entries) > 10 * max(len(self.processes), 1000):
                self._entries = {p.pid: p.entry for p in self.processes}
        self._shape()
        want = self._picked
        current = self.mailbox.pid if self.mailbox is not None else ""
        if want != current and not (self.mailbox is not None and want == self.mailbox.first_pid):
            self._close_mailbox()
            if want:
                self.mailbox = MailboxView(self.node, want, interval=self.pump.interval)

    def _shape(self) -> None:
        text = self.filter.value.strip().lower()
        shown = [p for p in self.processes
                 if not text or text in p.pid.lower() or text in p.entry.lower() or text in p.actor.lower()
                 or any(text in n.lower() for n in p.names)]
        shown.sort(key=SORT_KEYS[self.sort.value], reverse=self.descending.value)
        self.hidden = max(0, len(shown) - self.limit)
        self.rows = [row(p) for p in shown[: self.limit]]

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        options = [(NONE, NONE)] + [(r[0] if r[1] == "-" else f"{r[0]} {r[1]}", r[0]) for r in self.rows]
        picked = self._picked
        if picked and picked not in [value for _, value in options]:
            options.append((picked, picked))
        return {
            self.table: {"value": self.static_html()},
            # options first: setting them selects the first option, the value then puts the pick back
            self.pick: {"options": tuple(options), "value": picked or NONE},
            self.detail: {"children": (self.mailbox.widget,) if self.mailbox is not None else ()},
        }

    def _status_html(self) -> str:
        parts = [f"{len(self.processes)} processes"]
        if self.hidden:
            parts.append(f"{self.hidden} more not shown (filter, or sort to see them)")
        if self._sub is not None and self._sub.dropped:
            parts.append(f"{self._sub.dropped} events dropped")
        return '<span class="wippy-view-status">' + " · ".join(parts) + "</span>"

    # ------------------------------------------------------------------ static forms
    def static_html(self) -> str:
        exited = [(pid, "-", entry, "", "", f"exited: {why}", "", "", "", "", "", "") for pid, entry, why in self.exits]
        if not self.rows and not exited:
            return "<p>no processes are running</p>"
        shown = len(self.rows)
        table = table_html(COLUMNS, [*self.rows, *exited], "wippy-ps",
                           lambda i: "wippy-exited" if i >= shown else "")
        style = "<style>.wippy-ps tr.wippy-exited{color:#9e9e9e}</style>"
        more = f"<p>{self.hidden} more not shown</p>" if self.hidden else ""
        return style + table + more

    def text(self) -> str:
        if not self.rows:
            return "no processes are running"
        out = text_table(COLUMNS, self.rows, RIGHT)
        return out + (f"\n({self.hidden} more not shown)" if self.hidden else "")

    @property
    def sort_column(self) -> str:
        return str(self.sort.value)
