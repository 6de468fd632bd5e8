"""TraceView: a message sequence diagram (``%%trace`` cells, ``%trace on``/``off``), as Kino's seq_trace.

Source: a ``node.events`` subscription (send, spawn, exit), drained by the pump into a bounded list.
Two scopes:

- a traced cell (``seeds`` given): only what the cell set off. The cell's own processes (the shell
  process for a Lua cell; Python, which sends and spawns without a process, and Python mailboxes for a
  Python cell) are involved from the start; a process becomes involved when an involved one sends to it
  or spawns it. Shown: sends from involved processes, spawns by them, exits of involved processes, in
  the order the bus numbered them. Restarts by a supervisor (a Python PID) count as Python's.
- live (``seeds=None``, ``%trace on``): every send, spawn and exit of the node, the last ``limit``.

At most ``limit`` steps are drawn (a traced cell: the first ones; live: the last ones) and the diagram
says how many were left out. The "everything" checkbox redraws with every event collected meanwhile.
"""

from __future__ import annotations

import collections
import html
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node, WippyError

from ..format import size
from .pump import INTERVAL, MAXLEN, EventSource, Subscription, View, events_of, short_pid, statistics, suppressed

__all__ = ["Step", "TraceView", "sequence_svg"]

PYTHON = "python"  # the participant of sends and spawns made from Python without a process
BUFFER = 50_000  # events the subscription holds between two steps (a busy node's background is most of them)


@dataclass(frozen=True)
class Step:
    """One arrow (or end) of the diagram."""

    seq: int
    kind: str            #: send | spawn | exit | mark (a teaching-mode step)
    src: str             #: a PID, or ``python``
    dst: str | None      #: the receiver / the spawned process; None for an exit
    label: str           #: the topic, ``spawn ENTRY``, or the exit reason
    detail: str = ""     #: size and payload preview, the error of an exit
    time: float = 0.0


class TraceView(View):
    """A sequence diagram of runtime events: ``steps`` are the shown ones, ``left_out`` how many were not.

    ``seeds``: the PIDs a traced cell starts from (None: trace everything). ``limit``: steps drawn: the
    newest (``newest``, the default without seeds: a live trace) or the first ones (a traced cell).
    """

    title = "trace"

    def __init__(self, node: Node, *, seeds: Iterable[str] | None = None, limit: int = 200,
                 keep: int = MAXLEN, newest: bool | None = None, source: EventSource | None = None,
                 interval: float = INTERVAL, live: bool = True) -> None:
        self.scoped = seeds is not None
        self.newest = seeds is None if newest is None else newest  # keep and draw the newest steps
        self.involved: set[str] = set(seeds or ()) | ({PYTHON} if seeds is not None else set())
        self.limit = limit
        source = source if source is not None else events_of(node)
        if source is None:
            raise WippyError("tracing needs the runtime's event bus (node.events), which this node lacks")
        self._source = source
        self._sub: Subscription | None = None
        self._dropped = 0
        # every event collected: (step, involved?); a traced cell keeps the first `keep` of its own and
        # the first `keep` of the others (the "everything" checkbox), live the last `keep`
        self.collected: collections.deque[tuple[Step, bool]] = collections.deque(maxlen=keep if self.newest else None)
        self.keep = keep
        self._kept = [0, 0]  # steps kept (first-steps mode): [others', the cell's own]
        self._seen = [0, 0]  # steps seen
        self.labels: dict[str, str] = {PYTHON: PYTHON}
        self._unlabelled: set[str] = set()
        self.started = time.time()
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        self._sub = self._source.subscribe(kinds=("send", "spawn", "exit", "teach.step"), maxlen=BUFFER)
        self.on_close(self._close_sub)
        self.everything = widgets.Checkbox(value=False, description="everything (not only what the cell set off)",
                                           indent=False, layout=widgets.Layout(width="360px"))
        self.everything.observe(self.mark_dirty, names="value")
        self.svg = widgets.HTML(value="")
        controls = [self.everything] if self.scoped else []
        return widgets.VBox([*controls, self.svg, self.status])

    def _close_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self._dropped = sub.dropped
            sub.close()

    @property
    def dropped(self) -> int:
        """Events the subscription dropped (its buffer was full between two steps)."""
        sub = self._sub
        return sub.dropped if sub is not None else self._dropped

    # ------------------------------------------------------------------ the pump's thread
    def _collect(self) -> None:
        sub = self._sub
        if sub is None:
            return
        for ev in sub.drain():
            step = self._step(ev)
            if step is None:
                continue
            involved = self._involve(step)
            self._seen[involved] += 1
            if not self.newest:
                if self._kept[involved] >= self.keep:
                    continue
                self._kept[involved] += 1
            self.collected.append((step, involved))
            for pid in (step.src, step.dst):
                if pid and pid not in self.labels:
                    self._unlabelled.add(pid)
            if step.kind == "spawn" and step.dst and (ev.name or ev.entry):
                self.labels[step.dst] = ev.name or _short_entry(ev.entry)
                self._unlabelled.discard(step.dst)
        if self._unlabelled:
            self._label()

    @staticmethod
    def _step(ev: Any) -> Step | None:
        src = ev.peer or PYTHON
        if ev.kind == "send" and ev.pid:
            detail = " ".join(x for x in (size(ev.size) if ev.size is not None else "", ev.preview or "") if x)
            return Step(ev.seq, "send", src, ev.pid, ev.topic or "", detail, ev.time)
        if ev.kind == "spawn" and ev.pid:
            return Step(ev.seq, "spawn", src, ev.pid, "spawn " + _short_entry(ev.entry), ev.entry or "", ev.time)
        if ev.kind == "teach.step" and ev.topic:   # teaching mode: a band across the diagram
            return Step(ev.seq, "mark", "", None, ev.topic, ev.host or "", ev.time)
        if ev.kind == "exit" and ev.pid:
            error = (ev.error or "").splitlines()[0] if ev.error and ev.error != ev.reason else ""
            return Step(ev.seq, "exit", ev.pid, None, ev.reason or "exit", error, ev.time)
        return None

    def _involve(self, step: Step) -> bool:
        """Whether the cell set this step off; grows the involved set (traced cells only)."""
        if not self.scoped or step.kind == "mark":
            return True
        src_in = step.src in self.involved or step.src.startswith("{python|")
        if step.kind == "exit":
            return step.src in self.involved
        if src_in and step.dst:
            self.involved.add(step.dst)
        return src_in

    def _label(self) -> None:
        try:
            procs = statistics(self.node, max_age=1.0).processes
        except WippyError:
            procs = []
        known = {p.pid: (p.names[0] if p.names else _short_entry(p.entry)) for p in procs}
        for pid in list(self._unlabelled):
            if pid in known:
                self.labels[pid] = known[pid]
            elif pid.startswith("{python|"):
                self.labels[pid] = "mailbox"  # a Python mailbox, or a supervisor
            self._unlabelled.discard(pid)

    # ------------------------------------------------------------------ what is shown
    @property
    def steps(self) -> list[Step]:
        """The steps drawn: those the cell set off (or all, with "everything"), capped at ``limit``."""
        chosen = [s for s, involved in self.collected if involved or self.everything.value]
        return chosen[-self.limit:] if self.newest else chosen[: self.limit]

    @property
    def left_out(self) -> int:
        """Steps seen but not drawn: past the limit, or past what the view keeps (see also :attr:`dropped`)."""
        seen = self._seen[1] + (self._seen[0] if self.everything.value else 0)
        return max(0, seen - len(self.steps))

    def label(self, pid: str) -> str:
        name = self.labels.get(pid)
        if pid == PYTHON:
            return PYTHON
        tail = short_pid(pid)
        return f"{name} {tail}" if name else tail

    def settle(self, quiet: float = 0.1, wait: float = 1.0) -> None:
        """Collect until nothing new was drawn for ``quiet`` seconds and over a whole run step of every
        host, or ``wait`` seconds passed.

        The run step counts, not only the time: a host publishes its sends at the end of each run step, so
        on a slow machine a step still running after ``quiet`` seconds may hold the cell's traffic. A
        fresh ``node.statistics()`` is answered by every host between two run steps, after it published
        its records: nothing new after it means the traffic really settled."""
        deadline = time.monotonic() + wait
        last, calm_since, barrier_at = -1, time.monotonic(), -1
        while True:
            self.refresh()
            n = len(self.collected)
            now = time.monotonic()
            if n != last:
                last, calm_since = n, now
            if now >= deadline:
                return
            if now - calm_since >= quiet:
                if barrier_at == n:  # nothing new since the hosts passed a step boundary
                    return
                barrier_at = n
                with suppressed(WippyError):
                    self.node.statistics(memory=False)
                continue
            time.sleep(min(quiet / 2, max(0.0, deadline - now)))

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        return {self.svg: {"value": self.static_html()}}

    def _status_html(self) -> str:
        parts = [f"{len(self.steps)} steps"]
        if self.left_out:
            parts.append(f"{self.left_out} left out")
        if self.dropped:
            parts.append(f"{self.dropped} events dropped by a full buffer")
        return '<span class="wippy-view-status">' + " · ".join(parts) + "</span>"

    def static_html(self) -> str:
        return sequence_svg(self.steps, self.label, self.left_out, self.dropped)

    def text(self) -> str:
        steps = self.steps
        if not steps:
            return "no messages, spawns or exits traced"
        lines = []
        for s in steps:
            if s.kind == "mark":
                lines.append(f"-- step {s.label} --")
            elif s.kind == "exit":
                lines.append(f"{self.label(s.src)} exits: {s.label}" + (f" ({s.detail})" if s.detail else ""))
            else:
                assert s.dst is not None
                lines.append(f"{self.label(s.src)} -> {self.label(s.dst)}: {s.label}")
        if self.left_out:
            lines.append(f"({self.left_out} more left out)")
        if self.dropped:
            lines.append(f"({self.dropped} events dropped by a full buffer, the node's other traffic among them)")
        return "\n".join(lines)


def _short_entry(entry: str | None) -> str:
    return (entry or "?").rsplit(":", 1)[-1]


def sequence_svg(steps: list[Step], label: Any, left_out: int = 0, dropped: int = 0) -> str:
    """Draw ``steps`` as a sequence diagram: one lifeline per participant in order of appearance, one row
    per step: sends as arrows labelled by topic, spawns as dashed arrows, exits as a cross."""
    col_w, row_h, head_h, pad = 150, 26, 44, 20
    order: list[str] = []
    born: dict[str, int] = {}
    ended: dict[str, int] = {}
    last_mark = max((i for i, s in enumerate(steps) if s.kind == "mark"), default=-1)
    for i, s in enumerate(steps):
        for p in (s.src, s.dst):
            if p and p not in order:
                order.append(p)
        if s.kind == "spawn" and s.dst and s.dst not in born:
            born[s.dst] = i
        if s.kind == "exit":
            ended[s.src] = i
    if not order:
        return '<p class="wippy-trace">no messages, spawns or exits traced</p>'
    x = {p: pad + col_w * k + col_w / 2 for k, p in enumerate(order)}
    width = pad * 2 + col_w * len(order)
    notes = [f"{left_out} more steps left out"] if left_out else []
    if dropped:
        notes.append(f"{dropped} events dropped by a full buffer (the node's other traffic among them)")
    height = head_h + row_h * (len(steps) + 1) + 16 * len(notes) + pad

    def y(i: int) -> float:
        return head_h + row_h * (i + 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-trace" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             '<defs><marker id="wippy-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>']
    for p in order:
        top = y(born[p]) - 8 if p in born else head_h
        bottom = y(ended[p]) if p in ended else height - pad
        name = label(p)
        parts.append(f'<g class="wippy-lifeline" data-pid="{html.escape(p)}"><title>{html.escape(p)}</title>'
                     f'<rect x="{x[p] - col_w / 2 + 6}" y="{top - 34}" width="{col_w - 12}" height="26" rx="4" '
                     f'fill="#eceff1" stroke="#607d8b"/>'
                     f'<text x="{x[p]}" y="{top - 17}" text-anchor="middle">{html.escape(name[:24])}</text>'
                     f'<line x1="{x[p]}" y1="{top - 8}" x2="{x[p]}" y2="{bottom}" stroke="#90a4ae" '
                     'stroke-dasharray="4 3"/></g>')
    for i, s in enumerate(steps):
        yy = y(i)
        title = html.escape(f"#{s.seq} {s.kind} {s.label} {s.detail}".strip())
        if s.kind == "mark":   # teaching mode's step: the newest one stands out
            now = i == last_mark
            colour, css = ("#ef6c00", "wippy-mark wippy-mark-last") if now else ("#b0bec5", "wippy-mark")
            parts.append(f'<g class="wippy-step {css}"><title>{title}</title>'
                         f'<line x1="{pad}" y1="{yy}" x2="{width - pad}" y2="{yy}" stroke="{colour}" '
                         f'stroke-width="{2 if now else 1}" stroke-dasharray="2 2"/>'
                         f'<text x="{pad}" y="{yy - 3}" fill="{colour}">step {html.escape(s.label[:60])}</text></g>')
            continue
        if s.kind == "exit":
            cx = x[s.src]
            colour = "#2e7d32" if s.label in ("normal", "cancelled") else "#c62828"
            parts.append(f'<g class="wippy-step wippy-exit"><title>{title}</title>'
                         f'<path d="M{cx - 6},{yy - 6} L{cx + 6},{yy + 6} M{cx + 6},{yy - 6} L{cx - 6},{yy + 6}" '
                         f'stroke="{colour}" stroke-width="2"/>'
                         f'<text x="{cx + 10}" y="{yy + 4}" fill="{colour}">{html.escape(s.label[:30])}</text></g>')
            continue
        assert s.dst is not None
        x1, x2 = x[s.src], x[s.dst]
        dash = ' stroke-dasharray="5 3"' if s.kind == "spawn" else ""
        css = "wippy-send" if s.kind == "send" else "wippy-spawn"
        text = html.escape(s.label[:28])
        if x1 == x2:  # to itself: a loop
            parts.append(f'<g class="wippy-step {css}" data-topic="{html.escape(s.label)}"><title>{title}</title>'
                         f'<path d="M{x1},{yy - 8} h24 v12 h-22" fill="none" stroke="#333"{dash} '
                         f'marker-end="url(#wippy-arrow)"/><text x="{x1 + 28}" y="{yy}">{text}</text></g>')
            continue
        parts.append(f'<g class="wippy-step {css}" data-topic="{html.escape(s.label)}"><title>{title}</title>'
                     f'<line x1="{x1}" y1="{yy}" x2="{x2}" y2="{yy}" stroke="#333"{dash} '
                     f'marker-end="url(#wippy-arrow)"/>'
                     f'<text x="{(x1 + x2) / 2}" y="{yy - 4}" text-anchor="middle">{text}</text></g>')
    for k, note in enumerate(notes):
        parts.append(f'<text x="{pad}" y="{height - pad - 16 * (len(notes) - 1 - k)}" fill="#666">{note}</text>')
    parts.append("</svg>")
    return "".join(parts)
