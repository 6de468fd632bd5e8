"""Durable workflows (runtime/workflow.py, runtime/lua/workflow.lua): the journal of each operation, replay
after a restart, determinism, activities with idempotency keys and retries, signals, the Python and Lua
APIs, and their errors. Real stores: SQLite in tmp_path, and PostgreSQL (tests/pg_server.py) where the
backend matters. The crash scenarios with killed OS processes are in tests/test_workflow_recovery.py.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
from wippy.runtime import (
    CorruptJournal,
    EntryError,
    FakeClock,
    HostOptions,
    Node,
    StoreOpenError,
    Timeout,
    UnknownWorkflow,
    WorkflowFailed,
    WorkflowFinished,
)

MODULES = ["funcs", "workflow", "uuid"]
_ids = itertools.count(1)


# ---------------------------------------------------------------------------------------------- helpers
class Cluster:
    """Nodes on one data directory and store, made, restarted and stopped by the test."""

    def __init__(self, data: Path, store: str | None, **kw: Any) -> None:
        self.data = data
        self.store = store
        self.kw = kw
        self.setup: list[Callable[[Node], None]] = []   # run on every new node before it starts
        self.nodes: list[Node] = []

    def node(self) -> Node:
        n = Node(output=None, data_dir=self.data, workflow_store=self.store, workflow_ttl=1.0, **self.kw)
        for fn in self.setup:
            fn(n)
        self.nodes.append(n)
        return n.start()

    def restart(self, node: Node) -> Node:
        node.stop(grace=0.5)
        return self.node()

    def close(self) -> None:
        for n in self.nodes:
            if n.started:
                n.stop(grace=0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A data directory and a fresh store: SQLite in it, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        c = Cluster(tmp_path / "data", None)
        yield c
        c.close()
    else:
        with pg_server.isolated_url(request.getfixturevalue("postgres_url")) as url:
            c = Cluster(tmp_path / "data", url)
            yield c
            c.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Cluster]:
    """SQLite only (what does not depend on the backend)."""
    c = Cluster(tmp_path / "data", None)
    yield c
    c.close()


def flow(node: Node, source: str, modules: list[str] | None = None, **data: Any) -> str:
    """Define a workflow.lua entry whose main is ``source`` (the inside of ``function(...)``)."""
    entry = f"test.wf:flow{next(_ids)}"
    node.define(entry, "workflow.lua", source="return { main = function(...)\n" + source + "\nend }",
                modules=MODULES if modules is None else modules, **data)
    return entry


def ops(node: Node, wid: str) -> list[str]:
    return [h.op for h in node.workflows.history(wid)]


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def waiting(node: Node, wid: str, steps: int) -> None:
    """Wait until the workflow has journaled ``steps`` steps."""
    wait_for(f"{wid} to reach {steps} steps", lambda: len(node.workflows.history(wid)) >= steps)


# ---------------------------------------------------------------------------------------------- journal
def test_each_operation_is_journaled(cluster: Cluster) -> None:
    """Every effect is one step: its op, its arguments, and the value that replay gives back."""
    n = cluster.node()
    n.workflows.activity("test.py:double", lambda x: x * 2)
    n.define("test.lua:inc", "function.lua", source="return { main = function(x) return x + 1 end }")
    entry = flow(n, """
      local t = time.now()
      local d = math.random(1, 6)
      local f = math.random()
      local u = uuid.v4()
      local s = os.time()
      time.sleep("10ms")
      local tick = time.after("5ms"):receive()
      local msg = process.inbox():receive()
      local sel = channel.select({ process.listen("go"):case_receive(), time.after("1h"):case_receive() })
      local a = funcs.call("test.lua:inc", 41)
      local b = funcs.call("test.py:double", 21)
      local st = workflow.status(workflow.id())
      return { t = t:unix_nano(), d = d, f = f, u = u, s = s, tick = tick:unix_nano(), topic = msg:topic(),
               data = msg:payload():data(), sel = sel.value, a = a, b = b, st = st }
    """)
    wid = n.workflows.start(entry, workflow_id="ops-1")
    waiting(n, wid, 7)
    n.workflows.signal(wid, "hello", {"x": 1})
    waiting(n, wid, 9)
    n.workflows.signal(wid, "go", "now")
    res = n.workflows.result(wid, timeout=10)
    hist = n.workflows.history(wid)
    assert [h.op for h in hist] == ["now", "random", "random", "uuid", "now", "sleep", "timer", "receive",
                                    "timer", "select", "call", "call", "wf.status"]
    assert [h.seq for h in hist] == list(range(1, 14))
    by = {h.seq: h for h in hist}
    assert by[1].result == res["t"] and by[1].args is None
    assert by[2].args == [1, 6] and by[2].result == res["d"] and 1 <= res["d"] <= 6
    assert by[3].args is None and by[3].result == res["f"] and 0 <= res["f"] < 1
    assert by[4].result == res["u"] and len(res["u"]) == 36 and res["u"][14] == "4"
    assert res["s"] == by[5].result // 1_000_000_000
    assert by[6].args == pytest.approx(0.01) and by[6].result >= by[1].result + 10_000_000
    assert by[7].args == pytest.approx(0.005) and res["tick"] == by[7].result
    assert by[8].args == "inbox" and by[8].result == {"seq": 1, "topic": "hello", "payload": {"x": 1}}
    assert res["topic"] == "hello" and res["data"] == {"x": 1}
    assert by[9].args == pytest.approx(3600)
    assert by[10].args == ["listen go", "timer"]
    assert by[10].result == {"case": 1, "seq": 2, "topic": "go", "payload": "now"} and res["sel"] == "now"
    assert by[11].args == ["test.lua:inc", 41] and by[11].result == 42 == res["a"]
    assert by[11].key == f"{wid}:11" and by[11].retries == 0 and by[11].duration is not None
    assert by[12].args == ["test.py:double", 21] and by[12].result == 42 == res["b"] and by[12].key == f"{wid}:12"
    assert by[13].args == [wid] and by[13].result == "running" == res["st"]
    assert all(h.at > 0 for h in hist)


def test_replay_gives_back_what_the_live_run_saw(cluster: Cluster) -> None:
    """A node stopped mid-way; a new node on the same store replays the journal and goes on live."""
    calls: list[str] = []
    cluster.setup.append(lambda n: n.workflows.activity(
        "test.py:charge", lambda amount, idempotency_key: calls.append(idempotency_key) or {"paid": amount}))
    n = cluster.node()
    entry = flow(n, """
      local t = time.now():unix_nano()
      local r = math.random(1, 1000000)
      local u = uuid.v4()
      local paid = funcs.call("test.py:charge", 10)
      local go = process.listen("go"):receive()
      return { t = t, r = r, u = u, paid = paid, go = go, after = time.now():unix_nano() }
    """)
    wid = n.workflows.start(entry, workflow_id="replay-1")
    waiting(n, wid, 4)
    first = n.workflows.history(wid)
    n = cluster.restart(n)
    assert n.workflows.pid(wid) is not None            # resumed at start, not after the TTL
    n.workflows.signal(wid, "go", True)
    res = n.workflows.result(wid, timeout=10)
    assert (res["t"], res["r"], res["u"], res["paid"]) == tuple(h.result for h in first)
    assert calls == [f"{wid}:4"]                        # the activity is not run again
    hist = n.workflows.history(wid)
    assert [h.op for h in hist] == ["now", "random", "uuid", "call", "receive", "now"]
    assert hist[:4] == first
    assert res["after"] == hist[5].result and res["go"] is True


def test_pairs_and_next_iterate_in_key_order(local: Cluster) -> None:
    """Inside a workflow, pairs/next visit numbers, then strings, then booleans, each sorted, whatever the
    order the table was built in; outside a workflow pairs is Lua's own."""
    n = local.node()
    entry = flow(n, """
      local a, b = {}, {}
      for _, k in ipairs({ "b", 3, true, "a", 1, false, 2.5, "aa" }) do a[k] = tostring(k) end
      for _, k in ipairs({ "aa", 2.5, false, 1, "a", true, 3, "b" }) do b[k] = tostring(k) end
      local function keys(t) local out = {} for k in pairs(t) do out[#out + 1] = tostring(k) end return out end
      local chain, k = {}, next(a)
      while k ~= nil do chain[#chain + 1] = tostring(k); k = next(a, k) end
      local view = {}
      for name in pairs(string) do view[#view + 1] = name end
      local sorted = { table.unpack(view) }
      table.sort(sorted)
      local cleared = {}
      local t = { x = 1, y = 2, z = 3 }
      for key in pairs(t) do t.y = nil; cleared[#cleared + 1] = key end
      return { a = keys(a), b = keys(b), chain = chain, cleared = cleared, empty = next({}) == nil,
               view_sorted = table.concat(view, ",") == table.concat(sorted, ",") }
    """, modules=[])
    wid = n.workflows.start(entry)
    res = n.workflows.result(wid, timeout=10)
    expected = ["1", "2.5", "3", "a", "aa", "b", "false", "true"]
    assert res["a"] == expected and res["b"] == expected and res["chain"] == expected
    assert res["view_sorted"] is True
    assert res["cleared"] == ["x", "z"] and res["empty"] is True


def test_changed_code_fails_with_a_non_determinism_error(local: Cluster) -> None:
    """The entry changed while the workflow waited: the replay stops at the first step that differs, and
    the workflow fails naming the step and both operations."""
    n = local.node()
    src = """
      local t = time.now()
      local r = %s
      return process.listen("go"):receive()
    """
    entry = "test.wf:changing"
    n.define(entry, "workflow.lua", modules=MODULES,
             source="return { main = function()\n" + src % "math.random(1, 6)" + "\nend }")
    wid = n.workflows.start(entry, workflow_id="nd-1")
    waiting(n, wid, 2)
    n.stop(grace=0.5)
    n = local.node()
    n.define(entry, "workflow.lua", modules=MODULES,
             source="return { main = function()\n" + src % "uuid.v4()" + "\nend }")
    n.stop(grace=0.5)   # the entry is stored with the registry; the next node resumes with it
    n = local.node()
    with pytest.raises(WorkflowFailed) as info:
        n.workflows.result(wid, timeout=10)
    assert info.value.status == "failed"
    assert ("workflow 'nd-1': non-determinism at step 2: the journal has 'random' but the code asked for "
            "'uuid'") in str(info.value)
    assert n.workflows.status(wid) == "failed"
    assert ops(n, wid) == ["now", "random"]   # the journal is kept as it was


def test_same_operation_with_other_arguments_is_non_determinism(local: Cluster) -> None:
    n = local.node()
    entry = "test.wf:args"
    body = "return { main = function() local x = math.random(1, %d); return process.listen('go'):receive() end }"
    n.define(entry, "workflow.lua", modules=MODULES, source=body % 6)
    wid = n.workflows.start(entry, workflow_id="nd-2")
    waiting(n, wid, 1)
    n.define(entry, "workflow.lua", modules=MODULES, source=body % 7)
    n = local.restart(n)
    with pytest.raises(WorkflowFailed, match=r"step 1: the journal has 'random' but the code asked for 'random' "
                                            r"\(the same operation with other arguments\)"):
        n.workflows.result(wid, timeout=10)


def test_a_non_determinism_error_cannot_be_caught_by_pcall(local: Cluster) -> None:
    n = local.node()
    entry = "test.wf:pcall"
    n.define(entry, "workflow.lua", modules=MODULES, source="""return { main = function()
      local ok = pcall(function() return time.now() end)
      return process.listen("go"):receive() end }""")
    wid = n.workflows.start(entry, workflow_id="nd-3")
    waiting(n, wid, 1)
    n.define(entry, "workflow.lua", modules=MODULES, source="""return { main = function()
      local ok, err = pcall(function() return math.random() end)
      return "caught: " .. tostring(err) end }""")
    n = local.restart(n)
    with pytest.raises(WorkflowFailed, match="non-determinism at step 1"):
        n.workflows.result(wid, timeout=10)


# ---------------------------------------------------------------------------------------------- activities
def test_activities_get_their_idempotency_keys(local: Cluster) -> None:
    """A Lua activity reads its key with funcs.idempotency_key(), a Python one gets it as a keyword; a
    completed activity is never run again, even after a restart."""
    seen: list[tuple[str, Any]] = []

    def setup(n: Node) -> None:
        n.workflows.activity("test.py:pay", lambda amount, *, idempotency_key: seen.append(("py", idempotency_key))
                             or amount)
        n.workflows.activity("test.py:nokey", lambda: seen.append(("nokey", None)) or "done")

    local.setup.append(setup)
    n = local.node()
    n.define("test.lua:key", "function.lua", modules=["funcs"],
             source="return { main = function() return funcs.idempotency_key() end }")
    entry = flow(n, """
      local k1 = funcs.call("test.lua:key")
      local k2 = funcs.call("test.py:pay", 5)
      local k3 = funcs.call("test.py:nokey")
      local outside = funcs.idempotency_key()
      process.listen("go"):receive()
      return { k1 = k1, k2 = k2, k3 = k3, outside = outside == nil }
    """)
    wid = n.workflows.start(entry, workflow_id="keys")
    waiting(n, wid, 3)
    n = local.restart(n)
    n.workflows.signal(wid, "go", 1)
    res = n.workflows.result(wid, timeout=10)
    assert res == {"k1": "keys:1", "k2": 5, "k3": "done", "outside": True}
    assert seen == [("py", "keys:2"), ("nokey", None)]   # once each, across the restart
    assert [h.key for h in n.workflows.history(wid)][:3] == ["keys:1", "keys:2", "keys:3"]


def test_python_activity_from_a_plain_process_has_no_key(local: Cluster) -> None:
    n = local.node()
    n.workflows.activity("test.py:echo", lambda x, idempotency_key=None: {"x": x, "key": idempotency_key})
    assert n.shell().run('return funcs.call("test.py:echo", 3)').value == {"x": 3}


def test_retries_with_backoff_on_a_fake_clock(tmp_path: Path) -> None:
    """A failing activity is tried again after 1 s, then 2 s (the policy), on the node's clock; the
    journal records the outcome once with its retries and duration."""
    clock = FakeClock()
    c = Cluster(tmp_path / "data", None, clock=clock)
    try:
        n = c.node()
        attempts: list[float] = []
        tried = threading.Semaphore(0)

        @n.workflows.activity("test.py:flaky", retry={"max_attempts": 4, "initial_interval": "1s", "backoff": 2})
        def flaky(x: int) -> int:
            attempts.append(clock.monotonic())
            tried.release()
            if len(attempts) < 3:
                raise ConnectionError(f"attempt {len(attempts)} failed")
            return x * 10

        n.define("test.lua:never", "function.lua", retry={"max_attempts": 2, "initial_interval": "5s"},
                 source="return { main = function() error('card declined') end }")
        entry = flow(n, """
          local v = funcs.call("test.py:flaky", 4)
          local bad, err = funcs.call("test.lua:never")
          return { v = v, bad = bad == nil, err = err }
        """)
        wid = n.workflows.start(entry, workflow_id="retry")
        assert tried.acquire(timeout=5)
        for step in (1.0, 2.0):
            time.sleep(0.05)
            clock.advance(step)
            assert tried.acquire(timeout=5)
        waiting(n, wid, 1)   # the third attempt succeeded and is journaled
        waiting_for_second = 0
        while n.workflows.status(wid) == "running" and waiting_for_second < 200:
            clock.advance(5.0)
            time.sleep(0.02)
            waiting_for_second += 1
        res = n.workflows.result(wid, timeout=5)
        assert res["v"] == 40 and res["bad"] is True and "card declined" in res["err"]
        assert [b - a for a, b in itertools.pairwise(attempts)] == [1.0, 2.0]
        h = n.workflows.history(wid)
        assert (h[0].retries, h[0].duration, h[0].result) == (2, pytest.approx(3.0), 40)
        assert h[1].retries == 1 and "card declined" in (h[1].error or "") and h[1].result is None
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------- signals
def test_signals_from_every_side_are_consumed_once_in_order(cluster: Cluster) -> None:
    """workflow.signal (Python and Lua), process.send and node.send all become journaled signals; the
    workflow takes each once, in arrival order; a restart replays them without taking them again."""
    n = cluster.node()
    entry = flow(n, """
      local got = {}
      local ib = process.inbox()
      for i = 1, 4 do
        local m = ib:receive()
        got[#got + 1] = m:topic() .. "=" .. tostring(m:payload():data())
        if i == 2 then process.listen("pause"):receive() end
      end
      return got
    """)
    wid = n.workflows.start(entry, workflow_id="sig")
    pid = n.workflows.pid(wid)
    assert pid is not None
    n.workflows.signal(wid, "a", 1)
    n.shell().run(f'assert(workflow.signal("{wid}", "b", 2))')
    waiting(n, wid, 2)
    n = cluster.restart(n)
    pid = n.workflows.pid(wid)
    assert pid is not None
    n.shell().run(f'assert(process.send("{pid}", "c", 3))')
    n.send(pid, "d", 4)
    wait_for("d to be journaled", lambda: len(n.workflows.store.signals(wid)) == 4)
    n.workflows.signal(wid, "pause", None)
    assert n.workflows.result(wid, timeout=10) == ["a=1", "b=2", "c=3", "d=4"]
    hist = n.workflows.history(wid)
    # pause (signal 5) was taken by its listener before the inbox took c and d
    assert [h.result["seq"] for h in hist if h.op == "receive"] == [1, 2, 5, 3, 4]
    assert [(s.seq, s.topic) for s in n.workflows.store.signals(wid)] == [
        (1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "pause")]


def test_a_signal_sent_while_no_node_runs_is_taken_after_the_restart(local: Cluster) -> None:
    n = local.node()
    entry = flow(n, "return process.listen('approval'):receive()")
    wid = n.workflows.start(entry, workflow_id="offline")
    waiting(n, wid, 0)
    n.stop(grace=0.5)
    from wippy.runtime import open_store

    with open_store(local.data / "workflows.sqlite") as store:
        store.signal(wid, "approval", {"ok": True})
    n = local.node()
    assert n.workflows.result(wid, timeout=10) == {"ok": True}


def test_a_signal_written_by_another_process_reaches_a_running_workflow(local: Cluster) -> None:
    """The node polls the store: a signal written there by someone else arrives."""
    n = local.node()
    entry = flow(n, "return process.listen('approval'):receive()")
    wid = n.workflows.start(entry, workflow_id="polled")
    from wippy.runtime import open_store

    with open_store(local.data / "workflows.sqlite") as store:
        store.signal(wid, "approval", "yes")
    assert n.workflows.result(wid, timeout=10) == "yes"


def test_select_between_a_signal_and_a_timer_replays_its_outcome(local: Cluster) -> None:
    """The select's outcome (a timeout, then a signal) and a finished sleep replay as they were, even on a
    node whose clock is behind the first one's (its new FakeClock starts 60 s earlier)."""
    clock = FakeClock()
    local.kw["clock"] = clock
    n = local.node()
    entry = flow(n, """
      local out = {}
      local approvals = process.listen("approval")
      for i = 1, 2 do
        local r = channel.select({ approvals:case_receive(), time.after("10s"):case_receive() })
        out[i] = r.channel == approvals and ("signal:" .. tostring(r.value)) or "timeout"
      end
      time.sleep("30s")
      local woke = time.now()
      process.listen("go"):receive()
      return out
    """)
    wid = n.workflows.start(entry, workflow_id="sel")
    waiting(n, wid, 1)
    clock.advance(10)                 # the first select times out
    waiting(n, wid, 3)
    n.workflows.signal(wid, "approval", "ok")   # the second takes the signal
    waiting(n, wid, 5)
    clock.advance(30)                 # the sleep ends
    waiting(n, wid, 6)
    local.kw["clock"] = FakeClock(start_ns=1_700_000_000_000_000_000 - 60 * 10**9)
    n = local.restart(n)
    n.workflows.signal(wid, "go", 1)
    assert n.workflows.result(wid, timeout=10) == ["timeout", "signal:ok"]
    assert ops(n, wid) == ["timer", "select", "timer", "select", "sleep", "now", "receive"]


def test_timers_stop_and_reset(local: Cluster) -> None:
    clock = FakeClock()
    local.kw["clock"] = clock
    n = local.node()
    entry = flow(n, """
      local t = time.timer("5s")
      local stopped = t:stop()
      local again = t:reset("1s")
      local fired = t:channel():receive()
      return { stopped = stopped, again = again, fired = fired:unix_nano() }
    """)
    wid = n.workflows.start(entry, workflow_id="timers")
    waiting(n, wid, 2)
    clock.advance(1)
    res = n.workflows.result(wid, timeout=10)
    hist = n.workflows.history(wid)
    assert res == {"stopped": True, "again": False, "fired": hist[1].result}
    assert [h.op for h in hist] == ["timer", "timer"]


def test_sends_and_prints_are_not_repeated_by_a_replay(local: Cluster) -> None:
    """A send is a step: made once, skipped by a replay; print is silent while the journal replays."""
    lines: list[str] = []
    n = local.node()
    n._output_sink = lambda pid, text: lines.append(text)
    entry = flow(n, """
      print("printed once")
      local t = time.now()
      process.send("sink", "step", 1)
      process.listen("go"):receive()
      process.send("sink", "step", 2)
      return true
    """)
    with n.mailbox("sink") as mb:
        wid = n.workflows.start(entry, workflow_id="sends")
        assert mb.receive(timeout=5).payload == 1
        waiting(n, wid, 2)
    assert ops(n, wid) == ["now", "send"]
    n = local.restart(n)
    n._output_sink = lambda pid, text: lines.append(text)
    with n.mailbox("sink") as mb:
        n.workflows.signal(wid, "go", 1)
        assert n.workflows.result(wid, timeout=10) is True
        assert mb.receive(timeout=5).payload == 2
        with pytest.raises(Timeout):
            mb.receive(timeout=0.2)
    assert lines == ["printed once"]


# ---------------------------------------------------------------------------------------------- starting
def test_start_is_idempotent_by_id(cluster: Cluster) -> None:
    n = cluster.node()
    entry = flow(n, "return process.listen('go'):receive()")
    assert n.workflows.start(entry, workflow_id="once") == "once"
    pid = n.workflows.pid("once")
    assert n.workflows.start(entry, workflow_id="once") == "once"
    assert n.workflows.pid("once") == pid
    cell = n.shell()
    again = cell.run(f'return process.with_options({{workflow_id = "once"}}):spawn("{entry}", "app:processes")')
    assert again.value == pid
    assert [r.workflow_id for r in n.workflows.list()] == ["once"]
    n.workflows.signal("once", "go", "done")
    assert n.workflows.result("once", timeout=10) == "done"
    # a finished workflow is not run again: Python's start returns its ID, Lua's spawn says why
    wait_for("the process to end", lambda: n.workflows.pid("once") is None)
    assert n.workflows.start(entry, workflow_id="once") == "once"
    assert n.workflows.status("once") == "completed" and n.workflows.pid("once") is None
    out = cell.run(f'return {{process.with_options({{workflow_id = "once"}}):spawn("{entry}", "app:processes")}}')
    assert out.value[0] is None if isinstance(out.value, list) else True
    msg = cell.run(f'local p, e = process.with_options({{workflow_id = "once"}}):spawn("{entry}"); return e').value
    assert "workflow 'once' has already completed" in msg and "workflow.result('once')" in msg


def test_spawned_from_lua_with_an_input_and_awaited_from_lua(local: Cluster) -> None:
    n = local.node()
    entry = flow(n, "local order, n = ...; return order .. ':' .. tostring(n)")
    cell = n.shell()
    pid = cell.run(f'return process.with_options({{workflow_id = "o-1"}}):spawn("{entry}", "app:processes", "ord", 3)')
    assert isinstance(pid.value, str) and pid.value.startswith("{app:processes|")
    assert cell.run('return workflow.result("o-1", "5s")').value == "ord:3"
    assert cell.run('return workflow.status("o-1")').value == "completed"
    assert n.workflows.get("o-1").input == ["ord", 3]


def test_plain_spawn_generates_an_id_and_exec_returns_the_result(local: Cluster) -> None:
    n = local.node()
    entry = flow(n, "return { sum = (...) + 1, id = workflow.id() }")
    res = n.exec(entry, 41, timeout=10)
    assert res["sum"] == 42 and len(res["id"]) == 36
    assert n.workflows.status(res["id"]) == "completed"
    pid = n.spawn(entry, 1)
    assert pid.startswith("{app:processes|")


def test_a_spawn_on_another_host_starts_the_workflow_there(local: Cluster) -> None:
    n = local.node()
    n.add_host("app:other")
    entry = flow(n, "return workflow.id()")
    cell = n.shell()
    pid = cell.run(f'return process.with_options({{workflow_id = "far"}}):spawn("{entry}", "app:other")').value
    assert pid.startswith("{app:other|")
    assert n.workflows.result("far", timeout=10) == "far"


# ---------------------------------------------------------------------------------------------- status, result, cancel
def test_status_result_cancel_and_list_from_python_and_lua(cluster: Cluster) -> None:
    n = cluster.node()
    entry = flow(n, "return process.listen('go'):receive()")
    a = n.workflows.start(entry, workflow_id="a")
    b = n.workflows.start(entry, workflow_id="b")
    cell = n.shell()
    assert cell.run('return workflow.status("a")').value == "running"
    timeout = cell.run('local v, err = workflow.result("a", "50ms"); return {v == nil, err}').value
    assert timeout == [True, "timeout: workflow 'a' did not finish within 0.05s"]
    with pytest.raises(Timeout):
        n.workflows.result("a", timeout=0.05)
    assert cell.run('return workflow.cancel("b", "not needed")').value is True
    assert n.workflows.status(b) == "cancelled"
    with pytest.raises(WorkflowFailed, match="cancelled: not needed") as info:
        n.workflows.result(b, timeout=5)
    assert info.value.status == "cancelled"
    wait_for("b's process to end", lambda: n.workflows.pid(b) is None)
    with pytest.raises(WorkflowFinished):
        n.workflows.cancel(b)
    lua_err = cell.run('local ok, err = workflow.cancel("b"); return err').value
    assert "has already finished (cancelled)" in lua_err

    waiter = cell.run(f'''
      local pid = process.spawn("{flow(n, 'return workflow.result("a")', modules=["workflow"])}", "app:processes")
      return pid''').value
    assert waiter
    n.workflows.signal(a, "go", {"n": 1})
    assert n.workflows.result(a, timeout=5) == {"n": 1}
    listed = cell.run("local out = {} for _, w in ipairs(workflow.list()) do out[#out + 1] = w.id .. ':' .. "
                      "w.status end return out").value
    assert "a:completed" in listed and "b:cancelled" in listed
    assert {r.workflow_id: r.status for r in n.workflows.list("completed")}.get("a") == "completed"
    hist = cell.run('return workflow.history("a")').value
    assert hist[0]["op"] == "receive" and hist[0]["result"]["payload"] == {"n": 1}


def test_a_workflow_awaits_another_and_the_wait_is_journaled(local: Cluster) -> None:
    n = local.node()
    child = flow(n, "return process.listen('go'):receive()")
    parent = flow(n, f"""
      local p = process.with_options({{workflow_id = "child"}}):spawn("{child}", "app:processes")
      local v = workflow.result("child")
      local st = workflow.status("child")
      return {{ v = v, st = st }}
    """)
    wid = n.workflows.start(parent, workflow_id="parent")
    wait_for("the child", lambda: n.workflows.pid("child") is not None)
    n.workflows.signal("child", "go", 7)
    assert n.workflows.result(wid, timeout=10) == {"v": 7, "st": "completed"}
    assert ops(n, wid) == ["wf.result", "wf.status"]


def test_a_workflow_that_raises_fails_and_terminating_its_process_cancels_it(local: Cluster) -> None:
    n = local.node()
    boom = flow(n, "error('out of stock')")
    wid = n.workflows.start(boom)
    with pytest.raises(WorkflowFailed, match="out of stock") as info:
        n.workflows.result(wid, timeout=5)
    assert "stack traceback" in str(info.value) and "workflow.lua" not in str(info.value)
    waits = flow(n, "return process.listen('go'):receive()")
    wid2 = n.workflows.start(waits)
    pid = n.workflows.pid(wid2)
    assert pid
    n.terminate(pid)
    wait_for("cancelled", lambda: n.workflows.status(wid2) == "cancelled")


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_workflow_ids_are_clear_errors(local: Cluster) -> None:
    n = local.node()
    for call in (lambda: n.workflows.status("nope"), lambda: n.workflows.result("nope", 1),
                 lambda: n.workflows.signal("nope", "t", 1), lambda: n.workflows.cancel("nope"),
                 lambda: n.workflows.history("nope")):
        with pytest.raises(UnknownWorkflow, match="no workflow has the ID 'nope'"):
            call()
    cell = n.shell()
    for expr in ('workflow.status("nope")', 'workflow.signal("nope", "t", 1)', 'workflow.result("nope")',
                 'workflow.cancel("nope")'):
        v = cell.run(f"local v, err = {expr}; return {{v == nil, err}}").value
        assert v[0] is True and "no workflow has the ID 'nope'" in v[1], expr
    with pytest.raises(EntryError, match="unknown entry"):
        n.workflows.start("test.wf:none")
    n.define("test.p:proc", "process.lua", source="return { main = function() end }")
    with pytest.raises(EntryError, match=r"needs a workflow\.lua entry"):
        n.workflows.start("test.p:proc")


def test_a_signal_to_a_finished_workflow_is_refused(local: Cluster) -> None:
    n = local.node()
    wid = n.workflows.start(flow(n, "return 1"))
    assert n.workflows.result(wid, timeout=5) == 1
    with pytest.raises(WorkflowFinished, match="has already finished"):
        n.workflows.signal(wid, "late", 1)
    err = n.shell().run(f'local ok, err = workflow.signal("{wid}", "late", 1); return err').value
    assert "has already finished (completed)" in err


def test_a_store_that_cannot_be_opened(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "w.sqlite"
    n = Node(output=None, workflow_store=str(target)).start()
    try:
        assert any("cannot open it" in f for f in n.faults)
        n.define("test.wf:x", "workflow.lua", source="return { main = function() end }")
        with pytest.raises(StoreOpenError, match=r"the directory .* does not exist"):
            n.workflows.start("test.wf:x")
        err = n.shell().run('local v, err = workflow.status("x"); return err').value
        assert "does not exist" in err
    finally:
        n.stop(grace=0.5)
    bad = Node(output=None, workflow_store="ftp://example.org/w")
    with pytest.raises(StoreOpenError, match="unknown scheme 'ftp'"):
        _ = bad.workflows.store
    bad.stop(grace=0.1)


def test_a_corrupted_journal_row_fails_the_workflow_and_stays_as_it_is(local: Cluster) -> None:
    n = local.node()
    entry = flow(n, "local t = time.now(); return process.listen('go'):receive()")
    wid = n.workflows.start(entry, workflow_id="corrupt")
    waiting(n, wid, 1)
    n.stop(grace=0.5)
    path = local.data / "workflows.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("UPDATE wippy_journal SET result = '{not json' WHERE workflow_id = ? AND seq = 1", (wid,))
    n = local.node()
    with pytest.raises(WorkflowFailed, match=r"its journal cannot be read: .*step 1 cannot be read"):
        n.workflows.result(wid, timeout=5)
    with pytest.raises(CorruptJournal, match="step 1 cannot be read"):
        n.workflows.history(wid)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT result FROM wippy_journal WHERE workflow_id = ?", (wid,)).fetchall() == [
            ("{not json",)]


def test_a_node_that_lost_its_lease_stops_the_workflow_without_finishing_it(local: Cluster) -> None:
    n = local.node()
    entry = flow(n, "process.listen('go'):receive(); local t = time.now(); return 1")
    wid = n.workflows.start(entry, workflow_id="stolen")
    pid = n.workflows.pid(wid)
    with sqlite3.connect(local.data / "workflows.sqlite") as db:   # another node took it over
        db.execute("INSERT INTO wippy_nodes VALUES ('other', 9e18)")
        db.execute("UPDATE wippy_workflows SET owner = 'other' WHERE workflow_id = ?", (wid,))
    n.workflows.signal(wid, "go", 1)
    wait_for("the process to stop", lambda: not n.alive(pid))
    rec = n.workflows.get(wid)
    assert (rec.status, rec.owner, rec.steps) == ("running", "other", 0)
    assert n.exit_reason(pid)[0] == "error" and "owned by node 'other'" in (n.exit_reason(pid)[1] or "")


# ---------------------------------------------------------------------------------------------- scale
def test_steps_of_many_workflows_are_written_together(local: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: the steps a host makes in one run step go to the store in one transaction."""
    n = local.node()
    store = n.workflows.store
    batches: list[int] = []
    real = store.append_many

    def counting(steps: Any, **kw: Any) -> Any:
        steps = list(steps)
        batches.append(len(steps))
        return real(steps, **kw)

    monkeypatch.setattr(store, "append_many", counting)
    entry = flow(n, "local g = process.listen('go'):receive(); for i = 1, 20 do time.now() end; return g")
    ids = [n.workflows.start(entry, workflow_id=f"many-{i}") for i in range(20)]
    for wid in ids:
        n.workflows.signal(wid, "go", wid)
    for wid in ids:
        assert n.workflows.result(wid, timeout=10) == wid
        assert ops(n, wid) == ["receive"] + ["now"] * 20
    assert sum(batches) == 20 * 21 and len(batches) <= 40


def test_a_long_journal_replays_within_the_instruction_budget(local: Cluster) -> None:
    local.kw["host_options"] = HostOptions(instruction_budget=3_000_000)
    n = local.node()
    entry = flow(n, "local s = 0 for i = 1, 3000 do s = s + math.random(1, 10) end; "
                    "process.listen('go'):receive(); return s")
    wid = n.workflows.start(entry, workflow_id="long")
    waiting(n, wid, 3000)
    n = local.restart(n)
    n.workflows.signal(wid, "go", 1)
    total = n.workflows.result(wid, timeout=20)
    assert total == sum(h.result for h in n.workflows.history(wid) if h.op == "random")


def test_a_store_opened_before_the_node_starts_resumes_at_start(local: Cluster) -> None:
    n = local.node()
    wid = n.workflows.start(flow(n, "return process.listen('go'):receive()"), workflow_id="early")
    n.stop(grace=0.5)
    n = Node(output=None, data_dir=local.data, workflow_ttl=1.0)
    local.nodes.append(n)
    assert [r.workflow_id for r in n.workflows.list("running")] == [wid]   # opens the store, runs nothing
    assert n.workflows.pid(wid) is None
    n.start()
    wait_for("the resume", lambda: n.workflows.pid(wid) is not None)
    n.workflows.signal(wid, "go", 5)
    assert n.workflows.result(wid, timeout=10) == 5


def test_process_upgrade_is_refused_in_a_workflow(local: Cluster) -> None:
    n = local.node()
    wid = n.workflows.start(flow(n, "process.upgrade()"))
    with pytest.raises(WorkflowFailed, match=r"process\.upgrade is not available in a workflow"):
        n.workflows.result(wid, timeout=5)


def test_a_bad_retry_policy_is_refused_when_defined(node: Node) -> None:
    with pytest.raises(EntryError, match=r"entry 'test.lua:r': retry: unknown field\(s\) tries"):
        node.define("test.lua:r", "function.lua", retry={"tries": 3}, source="return { main = function() end }")
    with pytest.raises(EntryError, match="max_attempts must be an integer >= 1"):
        node.define("test.lua:r", "function.lua", retry={"max_attempts": 0}, source="return { main = function() end }")
    with pytest.raises(EntryError, match="invalid duration"):
        node.workflows.activity("test.py:r", lambda: 1, retry={"initial_interval": "soon"})
