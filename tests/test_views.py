"""The live views through their widget state: what the traitlets hold after the pump ran, on a real node.

Each view is checked where it is fed (a supervised crash, sends, spawns, registry commits), how it is
drawn (the SVG/HTML in the widget, the static forms), that its pump coalesces, and that closing it (by
``view.close()``, ``widget.close()`` or the front end closing the comm) stops the pump, closes its
subscriptions and frees every widget. One test of the trace's scoping feeds a stand-in subscription
(the view-model unit test); everything else runs on the real node and its event bus.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wippy.magics
from conftest import magics_shell, usage_error
from ipywidgets.widgets.widget import _instances
from wippy.magics.views import (
    MailboxView,
    ProcessTableView,
    Pump,
    RegistryHistoryView,
    TraceView,
    TreeView,
    process_table,
    trace,
)
from wippy.runtime import Node
from wippy.runtime.events import RuntimeEvent

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

WORKER = """
return { main = function(name)
  local inbox = process.inbox()
  while true do
    local msg = inbox:receive()
    if msg:topic() == "crash" then error("crashed on purpose: " .. name) end
  end
end }
"""

# answers {reply = PID, n = N} with a "pong" to PID; "stop" ends it
ECHO = """
return { main = function()
  local inbox = process.inbox()
  while true do
    local msg = inbox:receive()
    if msg:topic() == "stop" then return "bye" end
    local p = msg:payload():data()
    if type(p) == "table" and p.reply then process.send(p.reply, "pong", p.n) end
  end
end }
"""

# never reads its inbox: messages pile up (the MSGQ column)
SLEEPER = "return { main = function() time.sleep('1h') end }"


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "the view") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not reach the awaited state within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def views() -> Iterator[list[Any]]:
    """Views a test opens; closed after it, whatever happened."""
    opened: list[Any] = []
    yield opened
    for v in opened:
        v.close()


def supervisor(node: Node, max_restarts: int = 1) -> str:
    node.define("demo:worker", "process.lua", source=WORKER)
    node.define("demo:sup", "process.supervisor", strategy="one_for_one", max_restarts=max_restarts,
                period="60s", lifecycle={"auto_start": True},
                children=[{"id": "a", "process": "demo:worker", "input": ["a"], "name": "t-a"},
                          {"id": "b", "process": "demo:worker", "input": ["b"], "name": "t-b"}])
    node.supervision.wait_status("demo:sup", "running")
    return "demo:sup"


def crash(node: Node, child: str) -> None:
    before = node.supervision.tree(child).pid
    assert before is not None
    node.send(before, "crash")


def node_group(svg: str, node_id: str) -> str:
    """The <g class=...> opening tag of one tree node in an SVG."""
    m = re.search(r'<g class="([^"]*)" data-id="' + re.escape(node_id) + '"', svg)
    assert m, f"no node {node_id} in the picture"
    return m.group(1)


# ---------------------------------------------------------------------------------------------- the pump
def test_the_pump_coalesces_pokes_into_one_step_per_interval() -> None:
    steps: list[float] = []
    pump = Pump(lambda: bool(steps.append(time.monotonic())) or True, interval=0.1).start()
    try:
        time.sleep(0.25)  # idle: it steps every interval
        steps.clear()
        t0 = time.monotonic()
        for _ in range(100):
            pump.poke()
            time.sleep(0.001)
        time.sleep(0.3)
        burst = [t for t in steps if t0 <= t <= t0 + 0.1]
        assert len(burst) <= 2
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        assert all(g >= 0.09 for g in gaps), gaps  # never more than 10 steps a second
    finally:
        pump.stop()
    assert not pump.running


def test_a_failing_step_is_counted_and_the_pump_goes_on() -> None:
    calls = []

    def step() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return True

    pump = Pump(step, interval=0.02).start()
    try:
        wait_until(lambda: len(calls) >= 3, what="the pump")
    finally:
        pump.stop()
    assert pump.error_count == 1 and pump.errors[0] == "RuntimeError: boom"
    assert pump.updates >= 2


# ---------------------------------------------------------------------------------------------- TreeView
def test_tree_view_flashes_a_restart_and_marks_a_supervisor_that_failed(node: Node, views: list[Any]) -> None:
    supervisor(node, max_restarts=1)
    view = TreeView(node, "demo:sup")
    views.append(view)
    assert "wippy-running" in view.svg.value and "wippy-flash" not in view.svg.value
    crash(node, "demo:sup/a")
    svg = wait_until(lambda: "restarts 1" in view.svg.value and view.svg.value)
    assert "wippy-flash" in node_group(svg, "demo:sup/a")
    assert "wippy-flash" not in node_group(svg, "demo:sup/b")
    assert "crashed on purpose: a" in svg  # the crash reason is written under the flashing node
    assert "@keyframes wippy-flash" in svg
    # a second crash within the period is beyond the intensity: the supervisor fails
    crash(node, "demo:sup/a")
    svg = wait_until(lambda: "wippy-failed" in view.svg.value and view.svg.value)
    assert "wippy-failed" in node_group(svg, "demo:sup")
    assert "reached max restart intensity" in svg
    assert "failed" in view.status.value
    # the flash goes once the restart is old news; the failure stays
    view.FLASH_SECONDS = 0.0
    wait_until(lambda: "wippy-flash" not in view.svg.value)
    assert "wippy-failed" in view.svg.value


def test_tree_view_static_forms_and_bundle(node: Node, views: list[Any]) -> None:
    supervisor(node)
    view = TreeView(node)
    views.append(view)
    bundle = view._repr_mimebundle_()
    assert WIDGET_MIME in bundle
    assert bundle["text/html"] == view.static_html() and bundle["text/html"].startswith("<svg")
    assert bundle["text/plain"].startswith("node  root  running")
    assert "├── a  worker permanent  running" in bundle["text/plain"]
    no_pids = TreeView(node, "demo:sup", pids=False)
    views.append(no_pids)
    assert no_pids.text() == ("demo:sup  supervisor one_for_one  running\n"
                              "├── a  worker permanent  running\n"
                              "└── b  worker permanent  running")


def test_tree_view_of_a_root_that_goes_away_says_so(node: Node, views: list[Any]) -> None:
    supervisor(node)
    view = TreeView(node, "demo:sup")
    views.append(view)
    node.entries.apply(delete=["demo:sup"])
    wait_until(lambda: "no supervisor, service or child &#x27;demo:sup&#x27;" in view.svg.value)
    assert view.text().startswith("no supervisor, service or child 'demo:sup'")


# ---------------------------------------------------------------------------------------------- ProcessTableView
def test_process_table_sorts_and_filters(node: Node, views: list[Any]) -> None:
    node.define("demo:sleeper", "process.lua", source=SLEEPER)
    pids = {name: node.spawn("demo:sleeper", name=name) for name in ("alpha", "beta", "gamma")}
    for name, k in (("alpha", 1), ("beta", 5), ("gamma", 3)):
        for i in range(k):
            node.send(pids[name], "job", i)
    view = process_table(node, sample=0.05)
    views.append(view)
    mine = set(pids.values())

    def order() -> list[str]:
        return [r[1] for r in view.rows if r[0] in mine]

    view.sort.value = "MSGQ"
    view.descending.value = True
    wait_until(lambda: order() == ["beta", "gamma", "alpha"], what="the table sorted by MSGQ")
    row = next(r for r in view.rows if r[1] == "beta")
    assert row[3] == "notebook" and row[6] == "5" and row[7] == "5"  # ACTOR, MSGQ, IN
    assert row[10] != "-"  # REDUCTIONS: the scheduler's resume count
    view.filter.value = "gam"
    wait_until(lambda: [r[1] for r in view.rows] == ["gamma"], what="the filtered table")
    assert "gamma" in view.table.value and "alpha" not in view.table.value
    view.filter.value = pids["alpha"]  # by PID too
    wait_until(lambda: [r[0] for r in view.rows] == [pids["alpha"]], what="the table filtered by PID")
    view.filter.value = "demo:sleeper"  # and by entry
    wait_until(lambda: len(view.rows) == 3, what="the table filtered by entry")
    assert view.text().splitlines()[0].split() == ["PID", "NAME", "ENTRY", "ACTOR", "HOST", "STATUS", "MSGQ", "IN",
                                                   "OUT", "MEMORY", "REDUCTIONS", "UPTIME"]


def test_process_table_shows_spawns_and_exits(node: Node, views: list[Any]) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    view = ProcessTableView(node, sample=0.05)
    views.append(view)
    pid = node.spawn("demo:echo", name="echo")
    wait_until(lambda: any(r[0] == pid for r in view.rows), what="the new process in the table")
    node.send(pid, "stop")
    wait_until(lambda: "exited: normal" in view.table.value, what="the exit in the table")
    assert not any(r[0] == pid for r in view.rows)


def test_picking_a_pid_opens_its_mailbox_below(node: Node, views: list[Any]) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo", name="echo")
    view = ProcessTableView(node)
    views.append(view)
    wait_until(lambda: pid in [v for _, v in view.pick.options], what="the PID among the picks")
    view.pick.value = pid  # as the front end sets it
    mailbox = wait_until(lambda: view.mailbox, what="the mailbox view")
    assert mailbox.pid == pid and view.detail.children == (mailbox.widget,)
    node.send(pid, "hello", {"x": 1})
    wait_until(lambda: "hello" in mailbox.body.value, what="the message in the mailbox view")
    assert view.pick.value == pid  # redrawing the options kept the pick
    view.select(None)
    wait_until(lambda: view.detail.children == (), what="the mailbox closed")
    assert mailbox.closed


# ---------------------------------------------------------------------------------------------- MailboxView
def test_mailbox_lists_the_latest_messages(node: Node, views: list[Any]) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo", name="echo")
    view = MailboxView(node, "echo", keep=3)
    views.append(view)
    with node.mailbox() as mb:
        for i in range(5):
            node.send(pid, f"job-{i}", {"n": i, "reply": mb.pid}, sender=mb.pid)
        wait_until(lambda: view.received == 5, what="five messages in the view")
    assert [m.topic for m in view.messages] == ["job-2", "job-3", "job-4"]  # the latest 3, oldest first
    last = view.messages[-1]
    assert last.sender == mb.pid and last.size and "n = 4" in last.preview
    body = view.body.value
    assert body.index("job-4") < body.index("job-3")  # newest first on screen
    assert "wippy-sparkline" in body
    text = view.text()
    assert text.splitlines()[0].startswith(f"{pid} (echo)  demo:echo")
    assert "job-4" in text and "job-1" not in text


def test_mailbox_samples_the_queue_length(node: Node, views: list[Any]) -> None:
    node.define("demo:sleeper", "process.lua", source=SLEEPER)
    pid = node.spawn("demo:sleeper")
    view = MailboxView(node, pid, sample=0.05)
    views.append(view)
    for i in range(7):
        node.send(pid, "job", i)
    wait_until(lambda: view.queue and view.queue[-1] == 7, what="the queue length sampled")
    assert "7 (max 7)" in view.body.value


def test_mailbox_shows_an_exit_and_follows_a_restart(node: Node, views: list[Any]) -> None:
    supervisor(node, max_restarts=5)
    first = node.supervision.tree("demo:sup/a").pid
    assert first is not None
    view = MailboxView(node, first)
    views.append(view)
    crash(node, "demo:sup/a")
    wait_until(lambda: view.pid != first, what="the view following the restart")
    assert view.pid == node.supervision.tree("demo:sup/a").pid
    lines = [what for _, what in view.lifecycle]
    assert any(w.startswith("exit error: ") and "crashed on purpose: a" in w for w in lines), lines
    assert any(w.startswith(f"restarted as {view.pid}") for w in lines), lines
    node.send(view.pid, "after", 1)  # the new process's messages are followed too
    wait_until(lambda: any(m.topic == "after" for m in view.messages), what="a message to the new process")


def test_the_mailbox_view_coalesces_a_burst(node: Node, views: list[Any]) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo")
    view = MailboxView(node, pid, sample=60.0)  # no sampling: only the messages change the body
    views.append(view)
    time.sleep(0.15)
    updates: list[float] = []
    view.body.observe(lambda _c: updates.append(time.monotonic()), names="value")
    t0 = time.monotonic()
    for i in range(100):
        node.send(pid, "burst", i)
    wait_until(lambda: view.received == 100, what="100 messages in the view")
    time.sleep(0.15)
    assert len([t for t in updates if t <= t0 + 0.1]) <= 2
    # at most one update an interval however long the burst took to arrive (a slow machine: longer)
    assert len(updates) <= 2 + (time.monotonic() - t0) / view.pump.interval, updates


PINGPONG = """
return { main = function(role, peer)
  local inbox = process.inbox()
  if role == "ping" then
    local pong = process.registry.lookup(peer)
    while true do process.send(pong, "ping", 1); inbox:receive() end
  end
  while true do local m = inbox:receive(); process.send(m:from(), "pong", 1) end
end }
"""


def test_a_busy_mailbox_is_sampled_not_followed(node: Node, views: list[Any]) -> None:
    node.define("demo:pp", "process.lua", source=PINGPONG)
    pong = node.spawn("demo:pp", "pong", name="busy-pong")
    view = MailboxView(node, pong)
    views.append(view)
    node.spawn("demo:pp", "ping", "busy-pong")
    wait_until(lambda: view.sampling, what="the view sampling a busy process")
    assert view._sub is None and view._exits is not None  # no send subscription between windows
    count = view.received
    wait_until(lambda: view.received > count, what="a sampling window", timeout=10)
    assert view.messages[-1].topic == "ping"
    wait_until(lambda: "messages sampled" in view.status.value, what="the status line")
    assert view.sampling and view.rate is not None and view.rate > 0
    # sampled, not followed: from one window to the next, the process receives more than the view sees
    received, seen = view.stats.messages_in, view.received
    wait_until(lambda: view.received > seen, what="the next sampling window", timeout=15)
    wait_until(lambda: view.stats.messages_in - received > view.received - seen,
               what="the statistics showing more messages than sampled", timeout=15)
    assert view.sampling and view._sub is None


# ---------------------------------------------------------------------------------------------- TraceView
@dataclass
class FakeSubscription:
    """Stands in for a node.events subscription in the view-model test below (same methods)."""

    events: list[RuntimeEvent] = field(default_factory=list)
    dropped: int = 0
    closed: bool = False

    def drain(self, limit: int | None = None) -> list[RuntimeEvent]:
        out, self.events = self.events, []
        return out

    def wait(self, timeout: float | None) -> bool:
        return bool(self.events)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeSource:
    sub: FakeSubscription = field(default_factory=FakeSubscription)

    def subscribe(self, kinds: Any = None, pids: Any = None, maxlen: int = 10_000) -> FakeSubscription:
        return self.sub


def test_trace_scopes_to_what_the_cell_set_off(node: Node, views: list[Any]) -> None:
    src = FakeSource()
    view = TraceView(node, seeds=("{app:processes|0x1}",), source=src, live=False, limit=3)
    views.append(view)
    shell, a, b, bg1, bg2 = (f"{{app:processes|0x{i}}}" for i in (1, 2, 3, 8, 9))
    seq = iter(range(1, 100))

    def ev(kind: str, pid: str, peer: str | None = None, **kw: Any) -> RuntimeEvent:
        return RuntimeEvent(next(seq), kind, 0.0, pid=pid, peer=peer, **kw)

    src.sub.events = [
        ev("send", bg2, bg1, topic="tick"),              # background: not the cell's
        ev("spawn", a, shell, entry="demo:ping"),          # the cell spawns a
        ev("send", a, shell, topic="go", size=8, preview="1"),
        ev("send", b, a, topic="ping"),                    # a sets b off
        ev("send", a, b, topic="pong"),
        ev("send", b, bg1, topic="tick"),                  # background to an involved process: not shown
        ev("exit", a, reason="normal"),
    ]
    view.refresh()
    assert [(s.kind, s.label) for s in view.steps] == [("spawn", "spawn ping"), ("send", "go"), ("send", "ping")]
    assert view.left_out == 2  # pong and the exit, past the limit of 3
    view.limit = 10
    view.refresh()
    assert [s.label for s in view.steps] == ["spawn ping", "go", "ping", "pong", "normal"]
    svg = view.svg.value
    topics = re.findall(r'class="wippy-step wippy-send" data-topic="([^"]+)"', svg)
    assert topics == ["go", "ping", "pong"]
    view.everything.value = True  # the checkbox: every event collected meanwhile
    assert view.steps[0].label == "tick" and len(view.steps) == 7
    assert view.text().splitlines()[0] == "0x8 -> 0x9: tick"


def test_a_live_trace_draws_the_last_steps_and_counts_the_rest(node: Node, views: list[Any]) -> None:
    src = FakeSource()
    view = TraceView(node, source=src, live=False, limit=200, keep=250)
    views.append(view)
    a, b = "{app:processes|0x2}", "{app:processes|0x3}"
    src.sub.events = [RuntimeEvent(i, "send", 0.0, pid=b, peer=a, topic=f"m{i}") for i in range(1, 301)]
    view.refresh()
    assert [s.label for s in view.steps] == [f"m{i}" for i in range(101, 301)]
    assert view.left_out == 100
    assert view.text().endswith("(100 more left out)")
    assert "100 more steps left out" in view.svg.value


def test_python_trace_of_real_traffic(node: Node, views: list[Any]) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo", name="echo")
    with node.mailbox() as mb, trace(node) as t:
        views.append(t)
        for i in range(3):
            node.send(pid, f"ping-{i}", {"n": i, "reply": mb.pid}, sender=mb.pid)
            assert mb.receive(timeout=5).topic == "pong"
    sends = [(s.src, s.dst, s.label) for s in t.steps if s.kind == "send"]
    assert sends == [(mb.pid, pid, "ping-0"), (pid, mb.pid, "pong"), (mb.pid, pid, "ping-1"), (pid, mb.pid, "pong"),
                     (mb.pid, pid, "ping-2"), (pid, mb.pid, "pong")]
    assert not t.pump.running  # leaving the block stopped collecting
    assert t.static_html().startswith("<svg") and "echo 0x" in t.static_html()


# ---------------------------------------------------------------------------------------------- RegistryHistoryView
def test_registry_history_view_adds_versions_with_their_diff(node: Node, views: list[Any]) -> None:
    node.define("demo:f", "function.lua", source="return { main = function() return 1 end }")
    view = RegistryHistoryView(node)
    views.append(view)
    assert [v.version for v in view.versions] == [1]
    node.entries.apply([node.entries.require("demo:f").__class__(
        "demo:f", "function.lua", {"comment": "two"}, {"source": "return { main = function() return 2 end }"})],
        message="return 2")
    wait_until(lambda: len(view.versions) == 2, what="the new version in the view")
    body = view.body.value
    assert body.index('data-version="2"') < body.index('<details data-version="1"')  # newest first, open
    assert "<details open data-version=\"2\">" in body
    assert "return 2" in body and "wippy-registry-diff" in body
    assert view.text().splitlines()[-1].split()[2:] == ["return", "2", "~demo:f"]


# ---------------------------------------------------------------------------------------------- closing
def test_closing_a_view_closes_its_subscription_and_stops_its_pump(node: Node) -> None:
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo")
    before = node.events.subscribers
    view = MailboxView(node, pid)
    subs = [view._sub, view._exits]
    assert None not in subs and node.events.subscribers == before + 2  # its sends, its exits
    view.close()
    assert all(sub is not None and sub.closed for sub in subs) and node.events.subscribers == before
    assert not view.pump.running and view.closed
    assert view.widget.comm is None and view.body.comm is None
    bundle = view._repr_mimebundle_()
    assert WIDGET_MIME not in bundle and "text/html" in bundle  # a closed view shows its static form
    view.close()  # again: nothing happens


def test_widget_close_or_the_front_end_closing_the_comm_closes_the_view(node: Node) -> None:
    supervisor(node)
    view = TreeView(node)
    buffer = view._buffer
    view.widget.close()  # as a user may do
    wait_until(lambda: view.closed, what="the view closed after widget.close()")
    assert buffer is not None and buffer._unsubscribe is None
    other = TreeView(node)
    comm = other.widget.comm
    assert comm is not None
    comm.handle_close({"content": {"comm_id": comm.comm_id, "data": {}}})  # the front end dropped the model
    wait_until(lambda: other.closed, what="the view closed after the comm closed")
    assert not other.pump.running


def test_a_thousand_open_close_cycles_leave_no_widgets_or_threads(node: Node) -> None:
    supervisor(node)
    node.define("demo:echo", "process.lua", source=ECHO)
    pid = node.spawn("demo:echo")
    makers = [lambda: TreeView(node), lambda: MailboxView(node, pid), lambda: ProcessTableView(node),
              lambda: RegistryHistoryView(node), lambda: TraceView(node, seeds=())]
    for make in makers:  # warm up (imports, first statistics)
        make().close()
    widgets_before, threads_before, subs_before = len(_instances), threading.active_count(), node.events.subscribers
    for i in range(1000):
        makers[i % len(makers)]().close()
    assert len(_instances) == widgets_before
    assert node.events.subscribers == subs_before
    wait_until(lambda: threading.active_count() <= threads_before, what="the pump threads ended")


# ---------------------------------------------------------------------------------------------- magics
@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with magics_shell(tmp_path_factory.mktemp("data")) as shell:
        n = wippy.magics.node()
        n.define("demo:echo", "process.lua", source=ECHO)
        yield shell


def result(ip: Any, cell: str, views: list[Any]) -> Any:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec or res.error_before_exec
    if hasattr(res.result, "close"):
        views.append(res.result)
    return res.result


def test_magics_show_the_views(ip: Any, views: list[Any]) -> None:
    n = ip.user_ns["node"]
    pid = n.spawn("demo:echo", name="m-echo")
    assert isinstance(result(ip, "%ps --live", views), ProcessTableView)
    mb = result(ip, "%mailbox m-echo", views)
    assert isinstance(mb, MailboxView) and mb.pid == pid
    assert isinstance(result(ip, "%registry history --view", views), RegistryHistoryView)
    live = result(ip, "%trace on", views)
    assert isinstance(live, TraceView) and live.pump.running
    n.send(pid, "seen-live", 1)
    wait_until(lambda: any(s.label == "seen-live" for s in live.steps), what="the live trace")
    ip.run_cell("%trace off", store_history=False)
    assert live.closed and "seen-live" in live.static_html()


def test_a_cell_that_runs_again_closes_the_views_it_showed(ip: Any, views: list[Any]) -> None:
    first = ip.run_cell("%ps --live", store_history=False, cell_id="cell-1").result
    other = ip.run_cell("%ps --live", store_history=False, cell_id="cell-2").result
    views += [first, other]
    again = ip.run_cell("%ps --live", store_history=False, cell_id="cell-1").result
    views.append(again)
    assert first.closed and not first.pump.running  # its output was cleared by the run
    assert not other.closed and not again.closed
    assert "application/vnd.jupyter.widget-view+json" not in first._repr_mimebundle_()


def test_traced_lua_cell_draws_the_topics_in_order(ip: Any, views: list[Any]) -> None:
    view = result(ip, """%%trace --lua
local echo = process.spawn("demo:echo")
for i = 1, 3 do
  process.send(echo, "ping-" .. i, {n = i, reply = process.pid()})
  process.inbox():receive()
end
process.send(echo, "stop")""", views)
    assert isinstance(view, TraceView) and not view.pump.running
    labels = [(s.kind, s.label) for s in view.steps]
    assert labels == [("spawn", "spawn echo"), ("send", "ping-1"), ("send", "pong"), ("send", "ping-2"),
                      ("send", "pong"), ("send", "ping-3"), ("send", "pong"), ("send", "stop"), ("exit", "normal")]
    svg = view.svg.value
    assert re.findall(r'data-topic="([^"]+)"', svg) == ["spawn echo", "ping-1", "pong", "ping-2", "pong", "ping-3",
                                                        "pong", "stop"]
    assert svg.count('class="wippy-lifeline"') == 2  # the shell process and echo


def test_traced_python_cell_returns_the_trace_and_shows_its_value(ip: Any, views: list[Any],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    view = result(ip, "%%trace\npid = node.spawn('demo:echo')\nnode.send(pid, 'hello', [1, 2])\n"
                      "node.send(pid, 'stop')\n40 + 2", views)
    assert "42" in capsys.readouterr().out
    assert [s.label for s in view.steps] == ["spawn echo", "hello", "stop", "normal"]
    assert view.steps[1].src == "python" and view.steps[1].detail.endswith("{1, 2}")


def test_trace_usage_errors(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(ip, "%trace", capsys, one_line=True).startswith("%trace: say on or off")
    assert "--limit must be at least 1" in usage_error(ip, "%%trace --limit 0\n1", capsys)
    assert "%%trace takes options only" in usage_error(ip, "%%trace on\n1", capsys)
    msg = usage_error(ip, "%mailbox {app:processes|0x7777777}", capsys, one_line=True)
    assert msg.startswith("%mailbox: ")


def test_a_traced_cell_that_fails_shows_the_trace_and_raises(ip: Any) -> None:
    res = ip.run_cell("%%trace --lua\nprocess.spawn('demo:echo')\nerror('boom')", store_history=False)
    assert res.error_in_exec is not None and "boom" in str(res.error_in_exec)


def test_the_module_has_the_python_helpers(tmp_path: Path) -> None:
    import wippy.magics.views as v

    assert {"process_table", "mailbox", "tree", "trace", "registry_history"} <= set(v.__all__)
