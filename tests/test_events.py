"""The runtime event bus (``node.events``): spawns, exits and sends from Lua and from Python, supervision
tree changes and registry commits; filters, bounded buffers that drop without blocking, unsubscribing
(and the hosts' trace switch that follows it), and the Lua and Python previews of payloads.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunLua, define
from wippy.runtime import DEFAULT_HOST, EventBus, Node, RuntimeEvent, Subscription
from wippy.runtime.events import payload_size, preview

PARENT = """
return { main = function(child_entry)
  local c = process.spawn(child_entry)
  process.send(c, "m1", 1)
  process.send(c, "m2", {x = 1})
  process.send(c, "m3", "s")
  return c
end }
"""

CHILD = """
return { main = function()
  local inbox = process.inbox()
  for _ = 1, 3 do inbox:receive() end
  return "done"
end }
"""

ECHO = """
return { main = function()
  local m = process.inbox():receive()
  process.send(m:from(), "pong", m:payload():data())
  return true
end }
"""

SINK = """
return { main = function()
  local inbox = process.inbox()
  local n = 0
  while true do
    local m = inbox:receive()
    if m:topic() == "stop" then return n end
    n = n + 1
  end
end }
"""


def collect(sub: Subscription, done: Callable[[list[RuntimeEvent]], bool], timeout: float = 10.0) -> list[RuntimeEvent]:
    """Drain ``sub`` until ``done(events so far)`` holds; fails after ``timeout`` seconds."""
    got: list[RuntimeEvent] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"events so far: {got}"
        if sub.wait(min(remaining, 0.2)):
            got.extend(sub.drain())
    return got


def barrier(node: Node) -> None:
    """Every host has handled what was posted before (a trace switch, a delivery) and ended its step."""
    for h in list(node.hosts.values()):
        if h.running:
            node.call(lambda ctx: None, host=h.name)
            node.call(lambda ctx: None, host=h.name)


def lua_tracing(node: Node, host: str | None = None) -> bool:
    """The Lua side's own flag (read on the host thread)."""
    return bool(node.call(lambda ctx: ctx.scheduler.tracing(), host=host))


def short(evs: list[RuntimeEvent]) -> list[tuple[Any, ...]]:
    return [(e.kind, e.pid, e.peer, e.topic or e.entry) for e in evs]


@pytest.fixture
def entries(node: Node) -> dict[str, str]:
    return {"parent": define(node, PARENT), "child": define(node, CHILD), "echo": define(node, ECHO),
            "sink": define(node, SINK)}


# ------------------------------------------------------------------------------------- the sequence
def test_spawn_send_exit_from_lua_in_order(node: Node, entries: dict[str, str]) -> None:
    """A Lua parent spawns a child, sends it three messages and returns: the exact sequence, with
    parents, topics, sizes, previews and hosts; seq increases."""
    with node.events.subscribe() as sub:
        parent = node.spawn(entries["parent"], entries["child"])
        evs = collect(sub, lambda got: sum(e.kind == "exit" for e in got) == 2)
    child = next(e.pid for e in evs if e.kind == "spawn" and e.pid != parent)
    assert short(evs) == [
        ("spawn", parent, None, entries["parent"]),
        ("spawn", child, parent, entries["child"]),
        ("send", child, parent, "m1"),
        ("send", child, parent, "m2"),
        ("send", child, parent, "m3"),
        ("exit", parent, None, None),
        ("exit", child, None, None),
    ]
    sends = [e for e in evs if e.kind == "send"]
    assert [(e.size, e.preview) for e in sends] == [(8, "1"), (9, "{x = 1}"), (1, '"s"')]
    assert {e.host for e in evs} == {DEFAULT_HOST}
    assert [(e.reason, e.error) for e in evs if e.kind == "exit"] == [("normal", None), ("normal", None)]
    seqs = [e.seq for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(abs(e.time - time.time()) < 60 for e in evs)


def test_error_exit_carries_the_first_line(node: Node) -> None:
    entry = define(node, 'return { main = function() error("boom\\nsecond line") end }')
    with node.events.subscribe(["exit"]) as sub:
        pid = node.spawn(entry)
        (ev,) = collect(sub, lambda got: len(got) == 1)
    assert (ev.kind, ev.pid, ev.reason) == ("exit", pid, "error")
    assert ev.error is not None and ev.error.endswith("boom") and "\n" not in ev.error


def test_sends_from_python_and_back(node: Node, entries: dict[str, str]) -> None:
    """Mailbox.send names the mailbox as the peer; node.send without a sender has none; a Lua process's
    answer to a mailbox is a send whose pid is the mailbox (host ``python``), published before it arrives."""
    with node.events.subscribe(["send"]) as sub, node.mailbox() as mb:
        echo = node.spawn(entries["echo"])
        mb.send(echo, "ping", {"k": [1, 2]})
        assert mb.receive(5).topic == "pong"
        node.send(node.spawn(entries["sink"]), "stop")
        evs = collect(sub, lambda got: len(got) == 3)
    sink = evs[2].pid
    assert [(e.pid, e.peer, e.topic, e.host, e.preview) for e in evs] == [
        (echo, mb.pid, "ping", DEFAULT_HOST, "{k = {1, 2}}"),
        (mb.pid, echo, "pong", "python", "{k = {1, 2}}"),
        (sink, None, "stop", DEFAULT_HOST, "nil"),
    ]
    assert evs[0].size == evs[1].size == 1 + 16 + 16   # "k", then two (index, number) pairs


def test_spawn_names_and_spawns_on_another_host(node: Node, run_lua: RunLua, entries: dict[str, str]) -> None:
    """A name given at spawn is on the event; a spawn on another host names its parent and comes before
    the sends to it; each event says the host of its pid."""
    node.add_host("app:other", instruction_budget=0)
    with node.events.subscribe(["spawn", "send"]) as sub:
        me, child = run_lua(f"""
            local c = process.with_options({{}}):with_name("the-child"):spawn({entries["child"]!r}, "app:other")
            for i = 1, 3 do process.send(c, "t" .. i, i) end
            return {{process.pid(), c}}
        """)
        evs = collect(sub, lambda got: sum(e.kind == "send" for e in got) == 3)
    mine = [e for e in evs if e.pid == child or e.peer == me]
    assert short(mine) == [("spawn", child, me, entries["child"]), ("send", child, me, "t1"),
                           ("send", child, me, "t2"), ("send", child, me, "t3")]
    assert mine[0].name == "the-child" and mine[0].host == "app:other"
    assert all(e.host == "app:other" for e in mine)


def test_a_spawn_that_fails_on_another_host_ends_with_an_exit(node: Node, run_lua: RunLua) -> None:
    """The spawn was published when the PID was given out; its failure on the other host is its exit."""
    node.add_host("app:other")
    bad = define(node, "return { main = function() x = = 1 end }")
    with node.events.subscribe(["spawn", "exit"]) as sub:
        child = run_lua(f"return process.spawn({bad!r}, 'app:other')")
        evs = collect(sub, lambda got: any(e.kind == "exit" and e.pid == child for e in got))
    mine = [e for e in evs if e.pid == child]
    assert [(e.kind, e.entry, e.reason) for e in mine] == [("spawn", bad, None), ("exit", None, "error")]
    assert "syntax error" in (mine[1].error or "")


def test_lua_and_python_previews_agree(node: Node, run_lua: RunLua) -> None:
    """The same payload sent from Lua and from Python gets the same preview and size."""
    payloads = [
        ("{a = 1, b = \"x\", list = {1, 2.5, true}}", {"a": 1, "b": "x", "list": [1, 2.5, True]}),
        ('"tab\\tquote\\"nl\\n"', 'tab\tquote"nl\n'),
        ("{[\"not ident\"] = 1.0, [3] = false}", {"not ident": 1.0, 3: False}),
        ("{}", {}),
        ("string.rep('x', 200)", "x" * 200),
        ("{n = {deep = {deeper = {deepest = string.rep('y', 100)}}}}",
         {"n": {"deep": {"deeper": {"deepest": "y" * 100}}}}),
    ]
    with node.events.subscribe(["send"]) as sub, node.mailbox() as mb:
        for lua, py in payloads:
            run_lua(f"process.send(..., 'p', {lua})", mb.pid)
            mb.send(mb.pid, "p", py)
        evs = collect(sub, lambda got: len(got) == 2 * len(payloads))
    for i in range(len(payloads)):
        from_lua, from_py = evs[2 * i], evs[2 * i + 1]
        assert (from_lua.preview, from_lua.size) == (from_py.preview, from_py.size), payloads[i]
        assert from_lua.preview is not None and len(from_lua.preview) <= 80
    assert evs[0].preview == '{a = 1, b = "x", list = {1, 2.5, true}}'
    assert evs[8].preview == '"' + "x" * 76 + "..."


def test_preview_and_size_of_python_values() -> None:
    assert preview(None) == "nil"
    assert preview([1, [2, {"k": b"v"}]]) == '{1, {2, {k = "v"}}}'
    assert preview({"b": 1, "a": 2, 10: 3}) == "{[10] = 3, a = 2, b = 1}"
    assert preview(list(range(10_000))).endswith("...") and len(preview(list(range(10_000)))) == 80
    assert payload_size({"ab": "xyz", "n": [1.5, True]}) == 2 + 3 + 1 + (8 + 8) + (8 + 1)
    assert payload_size(list(range(100_000))) <= 16 * 10_000   # counting stops: approximate, bounded


# ------------------------------------------------------------------------------------- filters
def test_filters_by_kind_and_by_pid(node: Node, entries: dict[str, str], run_lua: RunLua) -> None:
    """A kind filter keeps only its kinds; a pid filter keeps events whose pid or peer is the process."""
    sink = node.spawn(entries["sink"])
    with node.events.subscribe(["exit"]) as exits, node.events.subscribe() as everything, \
            node.events.subscribe(["send", "exit", "spawn"], pids=[sink]) as about_sink:
        me = run_lua(f"""
            local sink = ...
            local c = process.spawn({entries["echo"]!r})
            process.send(sink, "a", 1)
            process.send(process.pid(), "self", 2)
            process.send(c, "to-child", 3)
            process.send(sink, "stop")
            return process.pid()
        """, sink)
        evs = collect(everything, lambda got: any(e.kind == "exit" and e.pid == sink for e in got))
        assert {e.kind for e in evs} == {"spawn", "send", "exit", "registry"}   # run_lua defines an entry
        barrier(node)
        assert [e.kind for e in exits.drain()] == [e.kind for e in evs if e.kind == "exit"]
        assert short(about_sink.drain()) == [("send", sink, me, "a"), ("send", sink, me, "stop"),
                                             ("exit", sink, None, None)]


def test_a_pid_filter_is_applied_inside_lua(node: Node, entries: dict[str, str], run_lua: RunLua) -> None:
    """With only a pid-filtered subscription, sends between other processes are not even recorded."""
    sink = node.spawn(entries["sink"])
    with node.events.subscribe(["send"], pids=[sink]) as sub:
        barrier(node)
        before = node.events.published
        run_lua("""
            local me = process.pid()
            for i = 1, 5000 do process.send(me, "self", i); process.inbox():receive() end
        """)
        barrier(node)
        assert node.events.published == before        # nothing about `sink`: nothing reached Python
        run_lua("process.send(...)", sink, "x", 1)
        (ev,) = collect(sub, lambda got: len(got) == 1)
        assert (ev.pid, ev.topic) == (sink, "x")
        node.send(sink, "stop")


def test_unknown_kind_and_bad_maxlen_are_refused(node: Node) -> None:
    with pytest.raises(ValueError, match=r"unknown event kind.*spwan"):
        node.events.subscribe(["spwan"])
    with pytest.raises(ValueError, match="maxlen"):
        node.events.subscribe(maxlen=0)
    assert node.events.subscribers == 0


# ------------------------------------------------------------------------------------- bounded buffers
def test_a_flood_drops_and_counts_without_blocking(node: Node, entries: dict[str, str], run_lua: RunLua) -> None:
    """100 k sends with a subscriber that never drains (maxlen 100): the flood ends promptly, the buffer
    holds 100 events, the rest are counted as dropped, and the node goes on working."""
    sink = node.spawn(entries["sink"])
    with node.events.subscribe(["send"], maxlen=100) as sub:
        barrier(node)
        t0 = time.monotonic()
        run_lua("""
            local sink, send = ..., process.send
            for i = 1, 100000 do send(sink, "flood", {i = i}) end
            return true
        """, sink, timeout=60)
        with node.mailbox() as mb:
            mb.monitor(sink)
            node.send(sink, "stop")
            ev = mb.receive_event(30)
        elapsed = time.monotonic() - t0
        assert ev.result == {"value": 100_000}
        barrier(node)
        assert len(sub) == 100
        kept = sub.drain()
        assert [e.topic for e in kept] == ["flood"] * 100 and kept[0].preview == "{i = 1}"
        assert sub.dropped > 0
        assert len(kept) + sub.dropped == 100_001     # 100 k floods and the stop: each kept or counted
        assert node.events.dropped >= sub.dropped
        assert elapsed < 30, elapsed
        # the subscriber can take events again once it drains
        node.send(node.spawn(entries["sink"]), "stop")
        assert collect(sub, lambda got: len(got) == 1)[0].topic == "stop"
    assert run_lua("return 41 + 1") == 42
    assert node.faults == []


def test_lua_side_cap_counts_lost_records(node: Node, run_lua: RunLua) -> None:
    """More than 50 000 records in one run step: the rest never reach Python and are counted dropped."""
    with node.events.subscribe(["send"], maxlen=200_000) as sub:
        barrier(node)
        run_lua("""
            local me, send = process.pid(), process.send
            for i = 1, 60000 do send(me, "self", i) end   -- one resume: yields every 4000, runs on at once
            return true
        """, timeout=60)
        barrier(node)
        got = sub.drain()
    assert len(got) + sub.dropped == 60_000
    assert sub.dropped > 0 and node.events.dropped >= sub.dropped


def test_publish_never_waits_for_a_full_or_waiting_subscriber() -> None:
    bus = EventBus()
    sub = bus.subscribe(["registry"], maxlen=2)
    waiter_saw: list[bool] = []
    other = bus.subscribe(["registry"])
    t = threading.Thread(target=lambda: waiter_saw.append(other.wait(10)))
    t.start()
    t0 = time.monotonic()
    for i in range(1000):
        bus.publish(RuntimeEvent(0, "registry", 0.0, reason=f"v{i}"))
    assert time.monotonic() - t0 < 1
    t.join(5)
    assert waiter_saw == [True]
    assert [e.reason for e in sub.drain()] == ["v0", "v1"] and sub.dropped == 998
    assert [e.seq for e in other.drain(limit=3)] == [1, 2, 3] and len(other) == 997
    assert bus.published == 1000 and bus.dropped == 998


def test_wait_times_out_and_close_wakes_a_waiter() -> None:
    bus = EventBus()
    sub = bus.subscribe(["tree"])
    assert sub.wait(0.05) is False
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(sub.wait(30)))
    t.start()
    time.sleep(0.05)
    sub.close()
    t.join(5)
    assert result == [False] and sub.closed
    sub.close()   # idempotent
    assert bus.subscribers == 0


# ------------------------------------------------------------------------------------- unsubscribing
def test_close_turns_the_hosts_trace_switch_off(node: Node) -> None:
    node.add_host("app:second")
    hosts = [DEFAULT_HOST, "app:second"]
    assert not any(lua_tracing(node, h) for h in hosts)
    exits_only = node.events.subscribe(["exit", "tree", "registry"])
    barrier(node)
    assert not any(lua_tracing(node, h) for h in hosts)   # exits need no tracing in Lua
    sends = node.events.subscribe(["send"])
    spawns = node.events.subscribe(["spawn"], pids=["{app:processes|0x1}"])
    assert node.events.subscribers == 3
    barrier(node)
    assert all(lua_tracing(node, h) for h in hosts)
    assert all(s.tracing for s in node.statistics(processes=False).hosts.values())
    node.add_host("app:third")   # a host added later starts with the switch on
    assert lua_tracing(node, "app:third")
    sends.close()
    barrier(node)
    assert lua_tracing(node, DEFAULT_HOST)   # `spawns` still wants spawns
    spawns.close()
    barrier(node)
    assert not any(lua_tracing(node, h) for h in [*hosts, "app:third"])
    assert not any(s.tracing for s in node.statistics(processes=False).hosts.values())
    exits_only.close()
    assert node.events.subscribers == 0 and node.events.wanted == frozenset()


def test_subscribe_close_cycles_leave_nothing_behind(node: Node) -> None:
    def cycles(n: int) -> None:
        for i in range(n):
            sub = node.events.subscribe(["send", "exit"] if i % 2 else ["exit"], pids=[f"{{x|{i}}}"])
            sub.close()

    cycles(100)
    barrier(node)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cycles(1000)
        barrier(node)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 200_000, grown
    assert node.events.subscribers == 0 and node.events._subs == ()
    assert not lua_tracing(node)


# ------------------------------------------------------------------------------------- tree and registry
CRASHER = """
return { main = function()
  local m = process.inbox():receive()
  error("boom on " .. m:topic())
end }
"""


def test_tree_events_after_a_supervised_crash(node: Node) -> None:
    node.define("test:crasher", "process.lua", source=CRASHER)
    with node.events.subscribe(["tree", "exit"]) as sub:
        node.supervision.start({"id": "s", "strategy": "one_for_one", "max_restarts": 5, "period": 10,
                                "children": [{"id": "w", "process": "test:crasher"}]})
        first = node.supervision.tree().find("s/w")
        assert first is not None and first.pid is not None
        node.send(first.pid, "crash")
        evs = collect(sub, lambda got: any(e.kind == "tree" and e.entry == "s/w" and e.reason == "running"
                                           and e.pid not in (None, first.pid) for e in got))
    worker = [e for e in evs if e.entry == "s/w" or e.pid == first.pid]
    running = [e for e in worker if e.kind == "tree" and e.reason == "running"]
    assert running[0].pid == first.pid and running[-1].pid != first.pid
    crash_exit = next(e for e in worker if e.kind == "exit")
    assert crash_exit.pid == first.pid and crash_exit.reason == "error" and "boom on crash" in (crash_exit.error or "")
    after = worker[worker.index(crash_exit) + 1:]
    assert after[0].kind == "tree" and after[0].change == "status" and "boom on crash" in (after[0].error or "")
    assert all(e.kind == "tree" for e in evs if e.kind != "exit")
    assert any(e.entry == "s" and e.change == "added" for e in evs)
    node.supervision.stop("s")


def test_registry_events_on_commits(node: Node) -> None:
    with node.events.subscribe(["registry"]) as sub:
        node.define("test:a", "process.lua", source="return {main = function() end}")
        v1 = node.entries.version
        node.define("test:b", "process.lua", source="return {main = function() end}")
        v2 = node.entries.version
        evs = collect(sub, lambda got: len(got) == 2)
    assert [(e.kind, e.reason, e.pid, e.entry) for e in evs] == [("registry", f"v{v1}", None, None),
                                                                 ("registry", f"v{v2}", None, None)]


def test_nothing_is_published_without_subscribers(node: Node, entries: dict[str, str], run_lua: RunLua) -> None:
    node.spawn(entries["parent"], entries["child"])
    node.define("test:c", "process.lua", source="return {main = function() end}")
    run_lua("return 1")
    barrier(node)
    assert node.events.published == 0 and not lua_tracing(node)


def test_iterating_a_subscription_ends_when_closed(node: Node) -> None:
    sub = node.events.subscribe(["registry"])
    seen: list[str | None] = []

    def reader() -> None:
        for ev in sub:
            seen.append(ev.reason)

    t = threading.Thread(target=reader)
    t.start()
    node.define("test:it", "process.lua", source="return {main = function() end}")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    sub.close()
    t.join(5)
    assert not t.is_alive() and seen == [f"v{node.entries.version}"]
