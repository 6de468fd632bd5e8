"""Workflow magics: ``%workflow start|signal|status|result|cancel|list|history ...``.

Durable workflows (API.md, "Durable workflows") are ``workflow.lua`` entries whose every effect is
journaled in the node's workflow store; these magics drive them through ``node.workflows``:

    %workflow start ENTRY [--id ID] [JSON]     start (or find, if ID exists) a workflow; shows its ID
    %workflow signal ID TOPIC [JSON]           a journaled message to a running workflow
    %workflow status ID                        running | completed | failed | cancelled
    %workflow result ID [--timeout S]          wait for its result (no timeout: until it ends)
    %workflow cancel ID [REASON]               stop it, wherever it runs
    %workflow list [STATUS]                    the store's workflows: a table (text and HTML)
    %workflow history ID [--live]              its journal as a table and a timeline (SVG)

Options come before the JSON, which is kept as typed (``%workflow start app:flow --id o-1 {"n": 1}``).
A result's dicts come back with their keys sorted: a Lua table has no order, and sorted, the same result
reads the same every run (saved notebooks, nbval).

``%workflow history`` reads the journal once (:class:`WorkflowHistory`: text/plain and an SVG timeline);
``--live`` is a view (magics/views/pump.py's :class:`~wippy.magics.views.View`) whose pump re-reads the
workflow's record at most four times a second and its journal only when the record changed.

Threads: each magic runs on the thread that runs the cell and calls ``node.workflows``, whose methods any
thread may call. Wrong input (an unknown workflow or entry, bad JSON, a signal to a finished workflow)
raises :class:`~IPython.core.error.UsageError`: one line naming the thing and the fix, no traceback.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from wippy.runtime import EntryError, Node, Timeout, WippyError
from wippy.runtime.entries import validate_id
from wippy.runtime.errors import UnknownWorkflow, WorkflowFailed, WorkflowFinished
from wippy.runtime.workflow_store import STATUSES, WorkflowRecord

from .current import node
from .registry import Table
from .usage import parse, parse_json, split_json

__all__ = ["OP_COLOURS", "STATUS_COLOURS", "TimelineStep", "WorkflowHistory", "WorkflowMagics", "WorkflowTable",
           "WorkflowText", "history_svg", "live_history", "workflow_history"]

SUBCOMMANDS = ("start", "signal", "status", "result", "cancel", "list", "history")
#: colours of the workflow statuses (list and history)
STATUS_COLOURS = {"running": "#1565c0", "completed": "#2e7d32", "failed": "#c62828", "cancelled": "#6d4c41"}
#: bar colours of the journal's step kinds in the timeline (any other op: grey)
OP_COLOURS = {
    "call": "#1565c0", "receive": "#6a1b9a", "select": "#6a1b9a", "sleep": "#ef6c00", "timer": "#ef6c00",
    "now": "#00838f", "random": "#00838f", "uuid": "#00838f",
}
DETAIL_WIDTH = 48


# ---------------------------------------------------------------------------------------------- display
class WorkflowText(str):
    """A workflow ID or status: a plain string, shown bare (not quoted) as a cell's result."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _short(value: Any, width: int = DETAIL_WIDTH) -> str:
    """A value as one short line of JSON (what does not fit is cut with ...)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _seconds(s: float | None) -> str:
    """A duration as 0.4ms, 12ms, 1.25s, 2m05s."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s == 0:
        return "0s"
    if s < 0.001:
        return f"{s * 1000:.2f}ms"
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.2f}s"
    minutes, secs = divmod(int(s), 60)
    return f"{minutes}m{secs:02d}s"


def _get(step: Any, *names: str, default: Any = None) -> Any:
    """The first of ``names`` that ``step`` has (an attribute, or a key of a mapping)."""
    for name in names:
        if isinstance(step, Mapping):
            if name in step:
                return step[name]
        elif hasattr(step, name):
            return getattr(step, name)
    return default


class TimelineStep:
    """One journal step as the history draws it: what it was, and when it started and ended.

    Read from the engine's :class:`~wippy.runtime.workflow.HistoryStep` (or any record or mapping with
    ``seq``, ``op``, ``args``, ``result``, ``error``, ``at``, ``retries``, ``duration``). A step is
    written when it is done, so its span depends on its kind: a call ran for ``duration`` seconds before
    ``at``; a sleep or timer starts at ``at`` and lasts its seconds; a receive (a signal taken) waited
    since the step before it (``previous``); anything else (``now``, ``random``, ``uuid``, ...) is an
    instant.
    """

    __slots__ = ("args", "detail", "duration", "end", "error", "op", "result", "retries", "seq", "start", "waited")

    def __init__(self, raw: Any, index: int, previous: float | None) -> None:
        self.seq: int = int(_get(raw, "seq", default=index + 1) or index + 1)
        self.op: str = str(_get(raw, "op", default="?"))
        self.args: Any = _get(raw, "args")
        self.result: Any = _get(raw, "result")
        self.error: Any = _get(raw, "error")
        self.retries: int = int(_get(raw, "retries", default=0) or 0)
        at = _get(raw, "at", "time", default=None)
        self.end: float | None = float(at) if at is not None else None
        given = _get(raw, "duration", default=None)
        self.waited = False
        span = 0.0
        if given is not None:
            span = float(given)
        elif self.op in ("sleep", "timer") and isinstance(self.args, int | float):
            span = float(self.args)
            if self.end is not None:  # written when it began: it ends its seconds later
                self.end += span
        elif self.op in ("receive", "select") and previous is not None and self.end is not None:
            span, self.waited = max(self.end - previous, 0.0), True
        self.duration: float = max(span, 0.0)
        self.start: float | None = self.end - self.duration if self.end is not None else None
        self.detail: str = self._detail()

    def _detail(self) -> str:
        op, args, result = self.op, self.args, self.result
        if op == "call":
            name, rest = (args[0], list(args[1:])) if isinstance(args, list) and args else ("?", [])
            text = f"{name}({_short(rest, 30)[1:-1]})"
            if self.error not in (None, ""):
                return _short_text(text + " error: " + str(self.error).splitlines()[0])
            return _short_text(text + " → " + _short(result, 28))
        if op in ("receive", "select") and isinstance(result, dict):
            if result.get("topic") is not None:
                return _short_text(f"signal {result['topic']!r} {_short(result.get('payload'), 34)}")
            return _short_text(f"case {result.get('case')}")
        if op in ("sleep", "timer") and isinstance(args, int | float):
            return _seconds(float(args))
        if op in ("now", "random", "uuid"):
            return ""  # the recorded value changes every run; the table shows when, not what
        parts = [_short(args, 24)] if args not in (None, [], {}) else []
        if result is not None:
            parts.append("→ " + _short(result, 24))
        return _short_text(" ".join(parts))


def _short_text(text: str, width: int = DETAIL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class WorkflowHistory:
    """A workflow's journal: a table (text/plain) and a timeline of its steps (text/html, an inline SVG).

    ``created`` (Unix seconds) is where the timeline starts, ``finished`` where it ends once finished.
    The table and the drawing show the last ``limit`` steps (a long journal would drown the cell); the
    header counts them all.
    """

    def __init__(self, workflow_id: str, steps: Sequence[Any], status: str | None = None,
                 created: float | None = None, finished: float | None = None, error: str | None = None,
                 limit: int = 200) -> None:
        self.workflow_id = workflow_id
        self.limit = max(int(limit), 1)
        self.status = status
        self.created = created
        self.finished = finished
        self.error = error
        self.steps: list[TimelineStep] = []
        previous = created
        for i, raw in enumerate(steps):
            step = TimelineStep(raw, i, previous)
            self.steps.append(step)
            if step.end is not None:
                previous = step.end if previous is None else max(previous, step.end)

    @property
    def origin(self) -> float | None:
        """Unix seconds where the timeline starts (the workflow's creation, else its first step)."""
        starts = [s.start for s in self.steps if s.start is not None]
        if self.created is not None:
            starts.append(self.created)
        return min(starts) if starts else None

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.steps)

    @property
    def shown(self) -> list[TimelineStep]:
        """The steps the table and the drawing show: the last ``limit``."""
        return self.steps[-self.limit:]

    def hidden_note(self) -> str | None:
        hidden = len(self.steps) - len(self.shown)
        return f"({hidden} earlier steps not shown)" if hidden > 0 else None

    def header(self) -> str:
        status = f" ({self.status})" if self.status else ""
        extra = f", {self.retries} retries" if self.retries else ""
        count = len(self.steps)
        return f"workflow {self.workflow_id}{status}: {count} step{'' if count == 1 else 's'}{extra}"

    def rows(self) -> list[tuple[str, ...]]:
        origin = self.origin
        return [
            (str(s.seq), s.op, s.detail,
             f"+{s.start - origin:.3f}s" if s.start is not None and origin is not None else "-",
             ("waited " if s.waited else "") + _seconds(s.duration) if s.duration or s.op == "call" else "-",
             str(s.retries) if s.retries else "-")
            for s in self.shown
        ]

    def text(self) -> str:
        lines = [self.header()]
        if self.error:
            lines.append("error: " + str(self.error).splitlines()[0])
        note = self.hidden_note()
        if note:
            lines.append(note)
        if not self.steps:
            return "\n".join(lines) + " (nothing journaled yet)"
        columns = ("SEQ", "OP", "DETAIL", "AT", "DURATION", "RETRIES")
        rows = self.rows()
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        right = {0, 3, 4, 5}

        def fmt(row: Sequence[str]) -> str:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            return "  ".join(cells).rstrip()

        return "\n".join([*lines, fmt(columns), *(fmt(r) for r in rows)])

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _repr_html_(self) -> str:
        error = ""
        if self.error:
            error = (f'<p style="color:#c62828;margin:2px 0"><code>error: '
                     f"{html.escape(str(self.error).splitlines()[0])}</code></p>")
        note = self.hidden_note()
        more = f'<p style="margin:2px 0">{html.escape(note)}</p>' if note else ""
        return f'<div class="wippy-workflow-history">{history_svg(self)}{error}{more}</div>'


def _tick_label(t: float) -> str:
    """An axis time without trailing zeros: 0s, 250ms, 1.5s, 20s, 2m30s."""
    if t == 0:
        return "0s"
    if t < 1:
        return f"{t * 1000:g}ms" if t >= 0.001 else f"{t * 1e6:.3g}µs"
    if t < 60:
        return f"{t:.3g}s"
    return _seconds(t)


def _legend(x0: float, y0: float) -> str:
    """The key of the timeline's marks, in one line."""
    items = (("call", "activity", "bar"), ("receive", "waited for a signal", "dash"), ("sleep", "sleep", "bar"),
             ("now", "instant", "tick"))
    parts = ['<g class="wippy-legend" font-size="10" fill="#546e7a">']
    x = x0
    for op, text, mark in items:
        colour = OP_COLOURS[op]
        if mark == "dash":
            parts.append(f'<line x1="{x}" y1="{y0 + 5}" x2="{x + 14}" y2="{y0 + 5}" stroke="{colour}" '
                         'stroke-width="2" stroke-dasharray="4 3"/>')
        else:
            w = 14 if mark == "bar" else 3
            parts.append(f'<rect x="{x + 14 - w}" y="{y0}" width="{w}" height="10" rx="1" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="{y0 + 9}">{text}</text>')
        x += 26 + len(text) * 5.2
    parts.append("</g>")
    return "".join(parts)


def _ticks(span: float) -> list[float]:
    """Round times from 0 to ``span`` for the axis: 3 to 6 of them, 1, 2 or 5 times a power of ten apart."""
    raw = span / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = int(span / step + 1e-9)
    return [i * step for i in range(count + 1)]


def history_svg(h: WorkflowHistory, width: int = 760) -> str:
    """Draw a history as a timeline: one row a step, a bar from its start to its end on a shared time axis
    (instants get a tick), coloured by op (a failed call red); a wait for a signal is a dashed line (it
    includes any time the workflow's node was down); retries are red marks before the bar, with ``↻N``;
    the hover title of a row gives the step's details. An empty journal draws a note instead."""
    title = html.escape(h.header())
    head_colour = STATUS_COLOURS.get(h.status or "", "#37474f")
    if not h.steps:
        return (f'<p class="wippy-workflow-timeline"><b style="color:{head_colour}">{title}</b> '
                "(nothing journaled yet)</p>")
    label_w, right_pad, row_h, top = 300, 90, 20, 26
    plot_w = width - label_w - right_pad
    shown = h.shown
    starts = [s.start for s in shown if s.start is not None]
    origin = (h.origin or 0.0) if len(shown) == len(h.steps) or not starts else min(starts)
    ends = [s.end for s in shown if s.end is not None]
    if h.finished is not None:
        ends.append(h.finished)
    span = max((max(ends) - origin) if ends else 0.0, 1e-3)

    def x(t: float) -> float:
        return label_w + (t - origin) / span * plot_w

    axis_y = top + row_h * len(shown) + 4
    height = axis_y + 22
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-workflow-timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="4" y="15" font-weight="bold" fill="{head_colour}">{title}</text>',
        _legend(width - right_pad - 330, 6),
    ]
    for t in _ticks(span):
        tx = x(origin + t)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 2}" x2="{tx:.1f}" y2="{axis_y}" stroke="#eceff1"/>'
                     f'<text x="{tx:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#546e7a">'
                     f"{html.escape(_tick_label(t))}</text>")
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#90a4ae"/>')
    for i, s in enumerate(shown):
        y = top + i * row_h
        failed = s.error not in (None, "")
        colour = "#c62828" if failed else OP_COLOURS.get(s.op, "#78909c")
        tip = html.escape(f"step {s.seq}: {s.op} {s.detail}".rstrip()
                          + (f" · {'waited ' if s.waited else ''}{_seconds(s.duration)}" if s.duration else "")
                          + (f" · {s.retries} retries" if s.retries else ""))
        label = html.escape(_short_text(f"{s.seq:>2} {s.op:<8} {s.detail}", 44))
        parts.append(f'<g class="wippy-step" data-seq="{s.seq}" data-op="{html.escape(s.op)}"><title>{tip}</title>')
        if i % 2 == 0:
            parts.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f5f7f8"/>')
        parts.append(f'<text x="4" y="{y + 14}" font-family="monospace" xml:space="preserve">{label}</text>')
        if s.start is not None and s.end is not None:
            x0, x1 = x(s.start), x(s.end)
            mid = y + row_h / 2
            if s.waited:
                parts.append(f'<line x1="{x0:.1f}" y1="{mid}" x2="{x1:.1f}" y2="{mid}" stroke="{colour}" '
                             'stroke-width="2" stroke-dasharray="4 3"/>'
                             f'<circle cx="{x1:.1f}" cy="{mid}" r="4" fill="{colour}"/>')
            elif x1 - x0 < 2:
                parts.append(f'<rect x="{x0 - 1:.1f}" y="{y + 4}" width="3" height="{row_h - 8}" fill="{colour}"/>')
            else:
                parts.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" height="{row_h - 8}" '
                             f'rx="2" fill="{colour}"/>')
            for k in range(min(s.retries, 5)):
                mx = x0 - 5 - k * 4
                parts.append(f'<line x1="{mx:.1f}" y1="{y + 4}" x2="{mx:.1f}" y2="{y + row_h - 4}" '
                             'stroke="#c62828" stroke-width="2"/>')
            note = (("waited " if s.waited else "") + _seconds(s.duration)) if s.duration >= 0.001 else ""
            if s.retries:
                note = (note + " " if note else "") + f"↻{s.retries}"
            if note:
                parts.append(f'<text x="{max(x1, x0 + 3) + 4:.1f}" y="{y + 14}" fill="#37474f">'
                             f"{html.escape(note)}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- errors
def _fail(sub: str, message: str) -> UsageError:
    return UsageError(f"%workflow {sub}: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _workflows(sub: str, n: Node | None = None) -> Any:
    wf = getattr(n or node(), "workflows", None)
    if wf is None:
        raise _fail(sub, "this node has no workflow engine (node.workflows); update wippy")
    return wf


def _record(sub: str, workflow_id: str, n: Node | None = None) -> WorkflowRecord:
    """The workflow's record, or a UsageError naming the unknown ID (the store cannot be opened: its reason)."""
    try:
        rec: WorkflowRecord = _workflows(sub, n).get(workflow_id)
    except UnknownWorkflow:
        raise _fail(sub, f"unknown workflow {workflow_id!r}; %workflow list shows the workflows") from None
    except WippyError as exc:
        raise _fail(sub, _first_line(exc)) from None
    return rec


def _refused(sub: str, exc: WippyError, workflow_id: str) -> UsageError:
    """The one-line UsageError for a refusal of the engine about ``workflow_id``."""
    if isinstance(exc, UnknownWorkflow):
        return _fail(sub, f"unknown workflow {workflow_id!r}; %workflow list shows the workflows")
    if isinstance(exc, WorkflowFinished):
        status = getattr(exc, "status", None) or "finished"
        if sub == "signal":
            return _fail(sub, f"workflow {workflow_id!r} has already {status} and takes no more signals; "
                              "%workflow start a new one (under another ID) to run it again")
        return _fail(sub, f"workflow {workflow_id!r} has already {status}; %workflow result {workflow_id} "
                          "shows how it ended")
    return _fail(sub, _first_line(exc))


# ---------------------------------------------------------------------------------------------- options
# each subcommand's line is parsed by its own magic_arguments parser (the functions are never called)
@magic_arguments()
@argument("--id", dest="workflow_id", metavar="ID", help="the workflow ID (default: a new one); "
          "starting an ID that exists gives back that workflow")
@argument("entry", metavar="ENTRY", help="the workflow.lua entry, e.g. app.orders:flow")
def start(line: str) -> None:
    """%workflow start ENTRY [--id ID] [JSON]: start a workflow; JSON is its input."""


@magic_arguments()
@argument("workflow_id", metavar="ID", help="the workflow ID")
@argument("topic", metavar="TOPIC", help="the signal's topic (what the workflow listens for)")
def signal(line: str) -> None:
    """%workflow signal ID TOPIC [JSON]: a journaled message to a running workflow (no JSON: nil)."""


@magic_arguments()
@argument("workflow_id", metavar="ID", help="the workflow ID")
def status(line: str) -> None:
    """%workflow status ID: running, completed, failed or cancelled."""


@magic_arguments()
@argument("--timeout", type=float, metavar="S", help="seconds to wait at most (default: until it ends)")
@argument("workflow_id", metavar="ID", help="the workflow ID")
def result(line: str) -> None:
    """%workflow result ID [--timeout S]: wait for the workflow's result."""


@magic_arguments()
@argument("workflow_id", metavar="ID", help="the workflow ID")
@argument("reason", metavar="REASON", nargs="*", help="why (kept as the workflow's error)")
def cancel(line: str) -> None:
    """%workflow cancel ID [REASON]: stop a running workflow."""


@magic_arguments()
@argument("status", metavar="STATUS", nargs="?", default=None, choices=STATUSES,
          help="only the workflows of this status")
def list_(line: str) -> None:
    """%workflow list [STATUS]: the workflows of the store."""


@magic_arguments()
@argument("--live", action="store_true", help="a live view that follows the workflow as it runs")
@argument("workflow_id", metavar="ID", help="the workflow ID")
def history(line: str) -> None:
    """%workflow history ID [--live]: the journal's steps, with retries and durations, and a timeline."""


PARSERS: dict[str, Callable[[str], None]] = {
    "start": start, "signal": signal, "status": status, "result": result, "cancel": cancel,
    "list": list_, "history": history,
}


def _parse(sub: str, line: str) -> Any:
    return parse(PARSERS[sub], line, f"%workflow {sub}")


def _json(sub: str, raw: str, what: str) -> Any:
    """The JSON at the end of the line; options written after it get their own message."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        words = raw.split()
        late = [w for w in words[1:] if w.startswith("--")]
        if late:
            raise _fail(sub, f"options go before the JSON: move {late[0]} before {words[0]!r}") from None
    return parse_json(raw, f"%workflow {sub}", what)


# ---------------------------------------------------------------------------------------------- magics
@magics_class
class WorkflowMagics(Magics):
    """Start, steer and look into durable workflows from cells."""

    @line_magic
    def workflow(self, line: str) -> Any:
        """``%workflow start|signal|status|result|cancel|list|history ...``: durable workflows.

        %workflow start ENTRY [--id ID] [JSON]   start a workflow.lua entry; shows its ID. JSON is the
                                                 input: the entry function's argument list (an array) or
                                                 its one argument. An ID that exists gives back that
                                                 workflow (nothing new starts)
        %workflow signal ID TOPIC [JSON]         a journaled message to a running workflow
        %workflow status ID                      running | completed | failed | cancelled
        %workflow result ID [--timeout S]        wait for its result (no timeout: until it ends)
        %workflow cancel ID [REASON]             stop a running workflow, wherever it runs
        %workflow list [STATUS]                  the store's workflows: ID, entry, status, steps, ...
        %workflow history ID [--live]            its journal: a table and a timeline (--live: follows it)

        Options go before the JSON, which is kept as typed.
        """
        sub, _, rest = line.strip().partition(" ")
        if not sub:
            raise UsageError(f"%workflow: missing subcommand; subcommands: {', '.join(SUBCOMMANDS)}")
        if sub not in SUBCOMMANDS:
            raise UsageError(f"%workflow: unknown subcommand {sub!r}; subcommands: {', '.join(SUBCOMMANDS)}")
        handler: Callable[[str], Any] = getattr(self, f"_{sub}")
        return handler(rest.strip())

    # ------------------------------------------------------------------ subcommands
    @staticmethod
    def _start(rest: str) -> WorkflowText:
        head, raw = split_json(rest, 1, 0, valued=("--id",))
        args = _parse("start", head)
        try:
            validate_id(args.entry)
        except EntryError as exc:
            raise _fail("start", str(exc)) from None
        n = node()
        entry = n.registry.get(args.entry)
        if entry is None:
            raise _fail("start", f"{n.registry.unknown_message(args.entry)}; define it in a %%registry cell "
                                 "(kind: workflow.lua), or %registry apply its tree")
        if entry.kind != "workflow.lua":
            raise _fail("start", f"{args.entry} is a {entry.kind} entry, not a workflow.lua one; "
                                 "%spawn starts a process, or give the entry kind: workflow.lua")
        values: list[Any] = []
        if raw:
            parsed = _json("start", raw, "input")
            values = parsed if isinstance(parsed, list) else [parsed]
        wid = args.workflow_id
        if wid is not None and not wid.strip():
            raise _fail("start", "--id is empty; give an ID such as --id order-42, or leave --id out for a new one")
        wf = _workflows("start", n)
        before = None
        if wid is not None:
            with contextlib.suppress(WippyError):
                before = wf.get(wid)
        try:
            started = wf.start(args.entry, *values, workflow_id=wid)
        except (WippyError, TypeError) as exc:
            raise _fail("start", _first_line(exc)) from None
        if before is not None:
            print(f"workflow {started} exists already ({before.status}, {before.entry_id}): nothing new started")
        return WorkflowText(started)

    @staticmethod
    def _signal(rest: str) -> None:
        head, raw = split_json(rest, 2)
        args = _parse("signal", head)
        payload = _json("signal", raw, "payload") if raw else None
        try:
            seq = _workflows("signal").signal(args.workflow_id, args.topic, payload)
        except WippyError as exc:
            raise _refused("signal", exc, args.workflow_id) from None
        number = f" (signal {seq})" if isinstance(seq, int) else ""
        print(f"{args.topic!r} sent to workflow {args.workflow_id}{number}")

    @staticmethod
    def _status(rest: str) -> WorkflowText:
        args = _parse("status", rest)
        return WorkflowText(_record("status", args.workflow_id).status)

    @staticmethod
    def _result(rest: str) -> Any:
        args = _parse("result", rest)
        if args.timeout is not None and not args.timeout >= 0:
            raise _fail("result", f"--timeout {args.timeout:g} is negative; give seconds, e.g. --timeout 5")
        wid = args.workflow_id
        _record("result", wid)  # an unknown ID fails at once, whatever the timeout
        try:
            return _ordered(_workflows("result").result(wid, timeout=args.timeout))
        except Timeout:
            state = _record("result", wid).status
            raise _fail("result", f"workflow {wid!r} has not finished within {args.timeout:g}s (it is {state}); "
                                  f"%workflow history {wid} shows where it is") from None
        except WorkflowFailed as exc:
            why = (exc.error or exc.status).strip().splitlines()[0]
            if why.startswith(f"{exc.status}: "):   # the engine keeps a cancel's reason as "cancelled: why"
                why = why[len(exc.status) + 2:]
            raise _fail("result", f"workflow {wid!r} {exc.status}: {why}; %workflow history {wid} shows its "
                                  "steps") from None
        except WippyError as exc:
            raise _refused("result", exc, wid) from None

    @staticmethod
    def _cancel(rest: str) -> None:
        args = _parse("cancel", rest)
        reason = " ".join(args.reason) or None
        try:
            _workflows("cancel").cancel(args.workflow_id, reason)
        except WippyError as exc:
            raise _refused("cancel", exc, args.workflow_id) from None
        print(f"workflow {args.workflow_id} cancelled" + (f" ({reason})" if reason else ""))

    @staticmethod
    def _list(rest: str) -> Table:
        args = _parse("list", rest)
        try:
            records = _workflows("list").list(args.status)
        except WippyError as exc:
            raise _fail("list", _first_line(exc)) from None
        rows = [(r.workflow_id, r.entry_id, r.status, str(r.steps), str(r.signals), r.owner or "-",
                 time.strftime("%H:%M:%S", time.localtime(r.updated_at)))
                for r in records]
        empty = f"no {args.status} workflows" if args.status else "no workflows; %workflow start ENTRY starts one"
        return WorkflowTable(("ID", "ENTRY", "STATUS", "STEPS", "SIGNALS", "OWNER", "UPDATED"), rows, empty,
                             "wippy-workflows")

    @staticmethod
    def _history(rest: str) -> Any:
        args = _parse("history", rest)
        n = node()
        history = workflow_history(n, args.workflow_id)
        if args.live:
            return live_history(n, args.workflow_id)
        return history


def _ordered(value: Any) -> Any:
    """``value`` with the keys of its dicts sorted, at every depth: a Lua table has no order, so the one it
    came with would change from run to run; sorted, a result reads the same every time."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (type(k).__name__, str(k)))
        return {k: _ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


class WorkflowTable(Table):
    """``%workflow list``: the registry magics' table, its status column coloured in HTML."""

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for r in self.rows:
            cells = []
            for i, c in enumerate(r):
                if i == 2:
                    colour = STATUS_COLOURS.get(c, "#37474f")
                    cells.append(f'<td style="color:{colour};font-weight:bold">{html.escape(c)}</td>')
                else:
                    cells.append(f"<td>{html.escape(c)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (f'<table class="{self.css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
                "</tbody></table>")


def workflow_history(n: Node, workflow_id: str, sub: str = "history") -> WorkflowHistory:
    """The history of ``workflow_id`` in node ``n``'s store (any thread); a UsageError for an unknown ID."""
    rec = _record(sub, workflow_id, n)
    try:
        steps = _workflows(sub, n).history(workflow_id)
    except WippyError as exc:
        raise _refused(sub, exc, workflow_id) from None
    return WorkflowHistory(workflow_id, steps, rec.status, rec.created_at,
                           rec.updated_at if rec.finished else None,
                           None if rec.error is None else str(rec.error))


# ---------------------------------------------------------------------------------------------- live view
_view_class: type[Any] | None = None


def live_history(n: Node, workflow_id: str, **options: Any) -> Any:
    """``%workflow history ID --live``: a :class:`~wippy.magics.views.View` that redraws the timeline as
    steps are journaled (the widgets are imported on first use)."""
    global _view_class
    if _view_class is None:
        _view_class = _make_view_class()
    return _view_class(n, workflow_id, **options)


def _make_view_class() -> type[Any]:
    import ipywidgets as widgets

    from .views.pump import INTERVAL, View

    class WorkflowHistoryView(View):
        """A workflow's timeline, live. Source: the store's record of the workflow (its step count,
        status and signal count), read on the pump's thread at most every ``every`` seconds (the engine
        publishes no events of its own; the store is where every node's steps meet); the journal is read
        again only when the record changed. Its pump stops once the workflow has finished."""

        title = "workflow"

        def __init__(self, node: Node, workflow_id: str, *, every: float = 0.25, interval: float = INTERVAL,
                     live: bool = True) -> None:
            self.workflow_id = workflow_id
            self.every = every
            self.history: WorkflowHistory | None = None
            self.problem: str | None = None
            self._seen: tuple[Any, ...] | None = None
            self._read_at = 0.0
            super().__init__(node, interval=interval, live=live)

        def _build(self) -> widgets.Box:
            self.svg = widgets.HTML(value="")
            return widgets.VBox([self.svg, self.status])

        def _collect(self) -> None:
            now = time.monotonic()
            if self.history is not None and (self.history.finished or now - self._read_at < self.every):
                return
            self._read_at = now
            try:
                rec = self.node.workflows.get(self.workflow_id)
                key = (rec.steps, rec.status, rec.signals, rec.updated_at)
                if key != self._seen:
                    self.history = workflow_history(self.node, self.workflow_id)
                    self._seen = key
                self.problem = None
            except (WippyError, UsageError) as exc:
                self.problem = _first_line(exc)
                return
            if self.history is not None and self.history.finished:
                self.pump.stop()   # nothing will change any more (from the pump's thread: does not wait)

        def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
            return {self.svg: {"value": self.static_html()}}

        def _status_html(self) -> str:
            if self.problem:
                return f'<span style="color:#c62828">{html.escape(self.problem)}</span>'
            h = self.history
            state = "finished" if h is not None and h.finished else "following" if self.pump.running else "still"
            return f'<span class="wippy-view-status">{state}</span>'

        def static_html(self) -> str:
            if self.history is None:
                return f"<p>workflow {html.escape(self.workflow_id)}</p>"
            return self.history._repr_html_()

        def text(self) -> str:
            return self.history.text() if self.history is not None else f"workflow {self.workflow_id}"

    return WorkflowHistoryView
