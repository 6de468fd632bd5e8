"""MailboxView: one process's mailbox, live (``%mailbox PID``, and below a row of ``%ps --live``).

Sources: ``node.events`` send and exit events of that PID (subscriptions filtered by PID at the bus),
the supervision's tree events (the process's restarts: the view follows a supervised child to its new
PID), and the queue length sampled from ``node.statistics()`` every ``sample`` seconds (shared with the
node's other views). Shows the queue length over time as an SVG sparkline, the latest messages (time,
topic, sender, size, payload preview), and the exits and restarts.

A busy PID: while anyone subscribes to a process's sends, its host records each of them for the bus,
which costs a process that receives 100 k messages a second most of its speed. So the view measures the
process's load in work, not time: from the samples, the messages it received (``messages_in``) against the
resumes its host ran (``HostStatistics.resumes``), over at least :data:`STEP_RESUMES` resumes (one host
run step). When at least :data:`BUSY_SHARE` of them delivered to it, the view stops following every
message and samples instead: every :data:`GAP` seconds it opens a window that stays open until it has
caught :data:`WINDOW_EVENTS` of the PID's sends (the status line says so; :data:`WINDOW_LIMIT` seconds
only bound a process that went quiet meanwhile), and goes back to following every message once fewer
than :data:`QUIET_SHARE` of its host's resumes deliver to it (or its host runs less than one run step in
:data:`MEASURE_LIMIT` seconds). A machine half as fast gives the same decisions and windows of the same
size. Exits are always followed (they cost nothing).
"""

from __future__ import annotations

import collections
import html
import time
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node, ProcessStatistics, WippyError

from ..format import size
from .pump import (
    INTERVAL,
    MAXLEN,
    EventSource,
    Subscription,
    TreeBuffer,
    View,
    clock,
    events_of,
    short_pid,
    sparkline,
    table_html,
    text_table,
    timed_statistics,
)

__all__ = ["Delivery", "MailboxView"]

PREVIEW = 80  # characters of a payload preview shown
SHOWN = 12    # messages drawn (``messages`` keeps ``keep``)
STEP_RESUMES = 20_000  # resumes of its host over which a PID's load is measured (one host run step)
BUSY_SHARE = 0.1       # share of its host's resumes delivering to the PID beyond which the view samples
QUIET_SHARE = 0.05     # share under which it follows every message again
MEASURE_LIMIT = 10.0   # seconds a measure may wait for STEP_RESUMES (an idle host: the PID is quiet)
WINDOW_EVENTS = 200    # sends of the PID a sampling window catches before it closes
WINDOW_LIMIT = 10.0    # seconds a window waits at most for them (a process that went quiet)
GAP = 1.0              # seconds from the end of one sampling window to the next


@dataclass(frozen=True)
class Delivery:
    """One message that reached the process (from a ``send`` event)."""

    time: float          #: wall time of the send
    topic: str
    sender: str | None   #: the sending PID (None: sent from Python without a mailbox)
    size: int | None     #: payload bytes, as the bus measured them
    preview: str         #: the payload's start, as text


class MailboxView(View):
    """The mailbox of ``pid``: ``messages`` (oldest first), ``queue`` (sampled lengths), ``lifecycle``."""

    title = "mailbox"

    def __init__(self, node: Node, pid: str, *, keep: int = 50, history: int = 150, sample: float = 0.2,
                 source: EventSource | None = None, interval: float = INTERVAL, live: bool = True) -> None:
        self.pid = node.resolve(pid)
        self.first_pid = self.pid
        self.sample = sample
        self.messages: collections.deque[Delivery] = collections.deque(maxlen=keep)
        self.queue: collections.deque[int] = collections.deque(maxlen=history)
        self.lifecycle: collections.deque[tuple[float, str]] = collections.deque(maxlen=50)
        self.stats: ProcessStatistics | None = None
        self._names: dict[str, str] = {}  # PID -> a registered name, from the samples (for FROM)
        self.ended: str | None = None
        self.received = 0  # messages seen by this view (the deque keeps the latest)
        self._source = source if source is not None else events_of(node)
        self._sub: Subscription | None = None    # sends (while following every message)
        self._exits: Subscription | None = None
        self._tree: TreeBuffer | None = None
        self._node_id: str | None = None
        self._dropped = 0
        self.sampling = False  # a busy PID: messages are sampled in windows
        self._next_window = 0.0
        self._window: Subscription | None = None  # the open sampling window
        self._window_caught = 0
        self._window_until = 0.0
        self._measure: tuple[float, int, int] | None = None  # (when, host resumes, messages_in) at its start
        self.rate: float | None = None  # messages/s the process received, between the last two samples
        self._last_in: tuple[float, int] | None = None
        self._sampled_at = 0.0
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        self._subscribe()
        self.on_close(self._unsubscribe)
        try:
            supervised = next((n for n in self.node.supervision.tree().walk() if n.pid == self.pid), None)
        except WippyError:
            supervised = None
        if supervised is not None and supervised.kind != "root":
            self._node_id = supervised.id
            self._tree = TreeBuffer(self.node, self.poke)
            self.on_close(self._tree.close)
        self.body = widgets.HTML(value="")
        return widgets.VBox([self.body, self.status])

    def _subscribe(self) -> None:
        if self._source is not None:
            self._exits = self._source.subscribe(kinds=("exit",), pids=(self.pid,), maxlen=100)
            if not self.sampling:
                self._sub = self._source.subscribe(kinds=("send",), pids=(self.pid,), maxlen=MAXLEN)

    def _unsubscribe(self) -> None:
        if self._window is not None:
            self._window.close()
        self._window, self._window_caught = None, 0
        for attr in ("_sub", "_exits"):
            sub = getattr(self, attr)
            setattr(self, attr, None)
            if sub is not None:
                self._dropped += sub.dropped
                sub.close()

    def _deliveries(self, events: list[Any]) -> None:
        for ev in events:
            if ev.kind == "send" and ev.pid == self.pid:  # (the bus also passes what the PID sends)
                self.received += 1
                self.messages.append(Delivery(ev.time, ev.topic or "", ev.peer, ev.size, (ev.preview or "")[:PREVIEW]))

    def _sample_window(self, now: float) -> None:
        """Sampling mode (the pump's thread): open a window every GAP seconds; keep it open, step after
        step, until it caught WINDOW_EVENTS sends of the PID (or WINDOW_LIMIT seconds passed)."""
        assert self._source is not None
        if self._window is None:
            if now < self._next_window:
                return
            self._window = self._source.subscribe(kinds=("send",), pids=(self.pid,), maxlen=MAXLEN)
            self._window_caught, self._window_until = 0, now + WINDOW_LIMIT
            return
        events = [ev for ev in self._window.drain() if ev.kind == "send" and ev.pid == self.pid]
        self._deliveries(events[:WINDOW_EVENTS - self._window_caught])
        self._window_caught += len(events)
        if self._window_caught >= WINDOW_EVENTS or now >= self._window_until:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        if self._window is not None:
            self._window.close()  # (what it dropped past WINDOW_EVENTS is not a loss: it samples)
        self._window, self._window_caught, self._next_window = None, 0, now + GAP

    def _measured(self, now: float, snap: Any) -> None:
        """Weigh the PID's load in work (the pump's thread, after a new snapshot): once its host ran
        STEP_RESUMES resumes since the measure began, sample when BUSY_SHARE of them delivered to the
        PID, follow every message again under QUIET_SHARE."""
        s = self.stats
        host = snap.hosts.get(s.host) if s is not None else None
        if s is None or host is None:
            self._measure = None
            return
        if self._measure is None:
            self._measure = (now, host.resumes, s.messages_in)
            return
        began, resumes, received = self._measure
        ran, got = host.resumes - resumes, s.messages_in - received
        if ran < STEP_RESUMES:
            if now - began >= MEASURE_LIMIT:  # less than one run step in that time: not busy
                self._measure = (now, host.resumes, s.messages_in)
                if self.sampling:
                    self._follow(now)
            return
        self._measure = (now, host.resumes, s.messages_in)
        if not self.sampling and got >= BUSY_SHARE * ran:
            if self._sub is not None:  # a busy PID: sample from now on
                self._deliveries(self._sub.drain())
                self._sub.close()  # (what it dropped is why the view samples, not a loss to report)
            self._sub, self.sampling, self._next_window = None, True, now
        elif self.sampling and got < QUIET_SHARE * ran:
            self._follow(now)

    def _follow(self, now: float) -> None:
        """Quiet again: close any window and follow every message."""
        self._close_window(now)
        self.sampling = False
        if self._source is not None:
            self._sub = self._source.subscribe(kinds=("send",), pids=(self.pid,), maxlen=MAXLEN)

    # ------------------------------------------------------------------ the pump's thread
    def _collect(self) -> None:
        now = time.monotonic()
        if self._sub is not None:
            self._deliveries(self._sub.drain())
        elif self.sampling and self.ended is None and self._source is not None:
            self._sample_window(now)
        if self._exits is not None:
            for ev in self._exits.drain():
                if ev.kind == "exit" and ev.pid == self.pid:
                    why = ev.reason or "exited"
                    if ev.error and ev.error != ev.reason:
                        why += ": " + ev.error.splitlines()[0]
                    self.ended = why
                    self.lifecycle.append((ev.time, f"exit {why}"))
        if self._tree is not None:
            for tev in self._tree.drain():
                if tev.id != self._node_id:
                    continue
                if tev.pid and tev.pid != self.pid:  # restarted: follow the child to its new process
                    self.lifecycle.append((tev.time, f"restarted as {tev.pid} (restart {tev.restarts})"))
                    self._unsubscribe()
                    self.pid, self.ended, self.stats, self.sampling = tev.pid, None, None, False
                    self.rate, self._last_in, self._measure = None, None, None
                    self._subscribe()
                elif tev.status == "failed":
                    self.lifecycle.append((tev.time, f"failed: {tev.reason or 'gave up'}"))
        if now - self._sampled_at >= self.sample and self.ended is None:
            self._sampled_at = now
            try:
                snap, taken = timed_statistics(self.node, max_age=min(self.sample, INTERVAL))
                procs = snap.processes
            except WippyError:
                procs, taken = [], now
            self.stats = next((p for p in procs if p.pid == self.pid), None)
            if self.stats is not None and (self._last_in is None or taken > self._last_in[0]):
                if self._last_in is not None:  # a new snapshot: the rate since the one before
                    self.rate = (self.stats.messages_in - self._last_in[1]) / (taken - self._last_in[0])
                self._last_in = (taken, self.stats.messages_in)
                self._measured(now, snap)
            senders = {m.sender for m in self.messages if m.sender}
            self._names.update((p.pid, p.names[0]) for p in procs if p.names and p.pid in senders)
            if self.stats is not None:
                self.queue.append(self.stats.mailbox)
            elif not self.node.alive(self.pid):
                reason = self.node.exit_reason(self.pid)
                if reason is not None and self._exits is None:  # no exit event will tell: say it once
                    why = reason[0] if not reason[1] or reason[1] == reason[0] else f"{reason[0]}: {reason[1]}"
                    self.lifecycle.append((time.time(), f"exit {why.splitlines()[0]}"))
                self.ended = "exited" if reason is None else reason[0]
                self.queue.append(0)

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        return {self.body: {"value": self.static_html()}}

    def _status_html(self) -> str:
        parts = [f"{self.received} messages seen"]
        if self.sampling:
            parts.append(f"a busy process: messages sampled, {WINDOW_EVENTS} at a time every {GAP:g} s")
        dropped = self._dropped + (self._sub.dropped if self._sub is not None else 0)
        if dropped:
            parts.append(f"{dropped} events dropped")
        if self._source is None:
            parts.append("no message events: this runtime has no node.events")
        return '<span class="wippy-view-status">' + " · ".join(parts) + "</span>"

    # ------------------------------------------------------------------ static forms
    def _headline(self) -> str:
        s = self.stats
        if s is None:
            return f"{self.pid}  {self.ended or 'not running'}"
        names = f" ({', '.join(s.names)})" if s.names else ""
        return (f"{self.pid}{names}  {s.entry}  {s.status}  queue {s.mailbox}  in {s.messages_in}  "
                f"out {s.messages_out}")

    def _sender(self, pid: str | None) -> str:
        if not pid:
            return "python"
        name = self._names.get(pid)
        return f"{name} {short_pid(pid)}" if name else pid

    def _rows(self) -> list[tuple[str, ...]]:
        latest = list(self.messages)[-SHOWN:]
        return [(clock(m.time), m.topic, self._sender(m.sender), size(m.size), m.preview) for m in reversed(latest)]

    def static_html(self) -> str:
        parts = [f'<div class="wippy-mailbox"><b>{html.escape(self._headline())}</b>',
                 f"<div>queue length {sparkline(list(self.queue))}</div>"]
        if self.messages:
            parts.append(table_html(("TIME", "TOPIC", "FROM", "SIZE", "PAYLOAD"), self._rows(), "wippy-messages"))
        else:
            parts.append("<p>no messages seen yet</p>")
        if self.lifecycle:
            items = "".join(f"<li>{clock(t)} {html.escape(what)}</li>" for t, what in self.lifecycle)
            parts.append(f'<ul class="wippy-lifecycle">{items}</ul>')
        parts.append("</div>")
        return "".join(parts)

    def text(self) -> str:
        lines = [self._headline()]
        if self.messages:
            lines.append(text_table(("TIME", "TOPIC", "FROM", "SIZE", "PAYLOAD"), self._rows()))
        else:
            lines.append("no messages seen yet")
        lines += [f"{clock(t)} {what}" for t, what in self.lifecycle]
        return "\n".join(lines)
