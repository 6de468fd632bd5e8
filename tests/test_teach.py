"""Teaching mode, first part (runtime/teach.py, scheduler/teach.lua): pause, step, resume, status."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from wippy.runtime import Node
from wippy.runtime.teach import TeachError

PONG = """return { main = function()
  while true do
    local m = process.inbox():receive()
    process.send(m:from(), "pong", m:payload():data())
  end end }"""
PING = """return { main = function(peer)
  for i = 1, 2 do
    process.send(peer, "ping", i)
    process.inbox():receive()
  end
  return "done"
end }"""


def settle(node: Node, pid: str) -> None:
    """Wait until ``pid`` has parked once (it is spawned and waiting)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = {p.pid: p for p in node.statistics().processes}
        if pid in st and st[pid].resumes > 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} never ran")


def test_ping_pong_stepped_one_event_at_a_time(node: Node) -> None:
    node.define("app:pong", "process.lua", source=PONG)
    node.define("app:ping", "process.lua", source=PING)
    pong = node.spawn("app:pong")
    settle(node, pong)
    assert node.teach.pause() == ["app:processes"]
    ping = node.spawn("app:ping", pong)
    [state] = node.teach.status()
    assert state.paused and state.held == [f"spawn app:ping {ping}"]
    assert node.teach.step() == [f"1 spawn app:ping {ping}"]
    assert node.teach.step(3) == [f"2 deliver ping {ping} -> {pong}", f"3 deliver pong {pong} -> {ping}",
                                  f"4 deliver ping {ping} -> {pong}"]
    assert node.teach.status()[0].held == [f"deliver pong {pong} -> {ping}"]
    assert node.teach.step(10) == [f"5 deliver pong {pong} -> {ping}"]   # then nothing is left to do
    assert node.teach.resume() == 0
    st = {p.pid: p for p in node.statistics().processes}
    assert ping not in st   # it finished


def test_pausing_never_loses_or_reorders_a_message(node: Node) -> None:
    node.define("app:sink", "process.lua", source="""return { main = function(n)
      local got = {}
      for i = 1, n do got[i] = process.inbox():receive():payload():data() end
      print(table.concat(got, ","))
    end }""")
    node.define("app:src", "process.lua", source="""return { main = function(dest)
      for i = 51, 100 do process.send(dest, "n", i) end
    end }""")
    sink = node.spawn("app:sink", 100)
    settle(node, sink)
    node.teach.pause()
    for i in range(1, 51):   # from Python: held in order
        node.send(sink, "n", i)
    node.spawn("app:src", sink)   # its first run is held after them; its sends when it runs
    deadline = time.monotonic() + 10
    while len(node.teach.status()[0].held) < 51 and time.monotonic() < deadline:
        time.sleep(0.01)
    held = node.teach.status()[0].held
    assert len(held) == 51 and held[0] == f"deliver n python -> {sink}" and held[-1].startswith("spawn app:src")
    assert len(node.teach.step(5)) == 5
    assert node.teach.resume() == 46
    deadline = time.monotonic() + 10
    while not node.logs(sink) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.logs(sink) == [",".join(str(i) for i in range(1, 101))]


def test_a_paused_host_still_answers_the_views_and_a_step_fires_a_timer(node: Node) -> None:
    node.define("app:sleeper", "process.lua", source="""return { main = function()
      time.sleep("1h")
      print("woke")
    end }""")
    pid = node.spawn("app:sleeper")
    settle(node, pid)
    node.teach.pause()
    assert pid in {p.pid for p in node.statistics().processes}   # snapshots work while paused
    assert node.teach.step() == [f"1 timer {pid}"]                 # the hour passes in one step
    assert node.logs(pid) == ["woke"]


def test_bad_input_is_a_clear_error(node: Node) -> None:
    with pytest.raises(TeachError, match="no host is paused; %runtime pause"):
        node.teach.step()
    with pytest.raises(TeachError, match="host 'app:processes' is not paused"):
        node.teach.step(1, host="app:processes")
    node.teach.pause()
    with pytest.raises(TeachError, match="N must be a positive integer, got -1"):
        node.teach.step(-1)
    with pytest.raises(TeachError, match="unknown host 'app:nope'"):
        node.teach.pause("app:nope")
    with pytest.raises(TeachError, match="S must be an integer, got 'abc'"):
        node.teach.seed("abc")
    with pytest.raises(TeachError, match=r"S must be an integer, got 1\.5"):
        node.teach.seed(1.5)
    with pytest.raises(TeachError, match="S must fit in 64 bits"):
        node.teach.seed(2**64)
    with pytest.raises(TeachError, match="log: N must be a positive integer, got 0"):
        node.teach.log(last=0)
    node.teach.resume()
    assert not node.teach.paused()


def test_a_node_stops_while_paused(node: Node) -> None:
    node.define("app:pong", "process.lua", source=PONG)
    node.spawn("app:pong")
    node.teach.pause()
    node.spawn("app:pong")
    # the fixture stops the node: a paused host stops like a running one


def test_timers_run_on_a_virtual_clock_while_paused(node: Node) -> None:
    node.define("app:sleeper", "process.lua", source="""return { main = function(name, d)
      local t0 = time.now()
      time.sleep(d)
      local waited = time.now():sub(t0):seconds()
      print(name .. " " .. tostring(waited >= 3600 * (d == "2h" and 2 or 1)))
    end }""")
    node.teach.pause()
    late = node.spawn("app:sleeper", "late", "2h")
    early = node.spawn("app:sleeper", "early", "1h")
    assert [ln.split(" ", 1)[1] for ln in node.teach.step(2)] == [f"spawn app:sleeper {late}",
                                                                   f"spawn app:sleeper {early}"]
    assert node.teach.step(2) == [f"3 timer {early}", f"4 timer {late}"]   # two hours, the earlier first
    assert node.logs(early) == ["early true"] and node.logs(late) == ["late true"]
    assert node.teach.step() == []                        # nothing left: the world is still


# ---------------------------------------------------------------------------------------------- seeds
RECV = """return { main = function(n)
  local got = {}
  for i = 1, n do got[i] = process.inbox():receive():payload():data() end
  print(table.concat(got, " "))
end }"""
SEND = """return { main = function(to, tag, n)
  for i = 1, n do process.send(to, "m", tag .. i); time.sleep("10ms") end
end }"""
RACE = """return { main = function()
  local r = process.spawn("t.teach:recv", "app:processes", 6)
  process.spawn("t.teach:send", "app:processes", r, "a", 3)
  process.spawn("t.teach:send", "app:processes", r, "b", 3)
  return r
end }"""


def seeded_run(tmp_path: Path, tag: str, seed: int, entries: dict[str, str], start: str) -> tuple[list[str], str]:
    """A fresh node (as after a kernel restart), seeded, that runs ``start`` (which returns a PID):
    its event log and what that process printed."""
    n = Node(data_dir=tmp_path / f"{tag}-{seed}")
    n.start()
    try:
        for name, src in entries.items():
            n.define(f"t.teach:{name}", "process.lua", source=src)
        n.teach.seed(seed)
        pid = n.exec(f"t.teach:{start}", timeout=10)
        assert n.teach.settle()
        return n.teach.log(last=10_000), ";".join(n.logs(pid))
    finally:
        n.stop()


def test_a_seed_decides_a_race_and_gives_the_same_events_every_time(tmp_path: Path) -> None:
    entries = {"recv": RECV, "send": SEND, "race": RACE}
    orders = {}
    for seed in range(1, 7):
        log, out = seeded_run(tmp_path, "race", seed, entries, "race")
        orders[seed] = out
        again, out2 = seeded_run(tmp_path, "again", seed, entries, "race")
        assert (again, out2) == (log, out)                    # the same seed: the same events and output
        assert sorted(out.split()) == ["a1", "a2", "a3", "b1", "b2", "b3"]
        a = [w for w in out.split() if w.startswith("a")]
        assert a == ["a1", "a2", "a3"]                        # one sender's messages stay in order
    assert len(set(orders.values())) > 1, orders             # other seeds, other interleavings


def test_math_random_is_each_processs_own_under_a_seed(tmp_path: Path) -> None:
    dice = """return { main = function()
      local t = {}
      for i = 1, 5 do t[i] = math.random(6) end
      t[6] = math.floor(math.random() * 1000)
      t[7] = math.random(10, 20)
      print(table.concat(t, ","))
    end }"""
    two = """return { main = function()
      local a = process.spawn("t.teach:dice", "app:processes")
      local b = process.spawn("t.teach:dice", "app:processes")
      return a .. " " .. b
    end }"""
    runs = []
    for tag in ("x", "y"):
        n = Node(data_dir=tmp_path / tag)
        n.start()
        try:
            n.define("t.teach:dice", "process.lua", source=dice)
            n.define("t.teach:two", "process.lua", source=two)
            n.teach.seed(99)
            pa, pb = n.exec("t.teach:two", timeout=10).split()
            assert n.teach.settle()
            runs.append((n.logs(pa)[0], n.logs(pb)[0]))
        finally:
            n.stop()
    assert runs[0] == runs[1]                 # the same numbers on every run with the seed
    assert runs[0][0] != runs[0][1]           # each process draws from its own generator
    assert all(1 <= int(v) <= 6 for v in runs[0][0].split(",")[:5])


SUP_WORKER = """return { main = function(tag)
  local inbox, ev = process.inbox(), process.events()
  local r = channel.select { inbox:case_receive(), ev:case_receive() }
  if r.channel == ev then return end
  error("boom " .. tag)
end }"""


def test_a_one_for_all_restart_stepped_event_by_event(node: Node) -> None:
    node.define("t.teach:w", "process.lua", source=SUP_WORKER)
    node.supervision.start({"id": "s", "strategy": "one_for_all", "max_restarts": 10, "period": 10,
                            "children": [{"id": c, "process": "t.teach:w", "input": [c]} for c in "abc"]})
    tree = node.supervision.tree()
    a, b, c = (ch.pid for ch in tree.children[0].children)
    sup = node.supervision.pid
    node.teach.pause()
    node.send(a, "crash")
    lines = [ln.split(" ", 1)[1] for ln in node.teach.step(9)]
    assert lines[:6] == [
        f"deliver crash python -> {a}",
        f"exit {a} -> {sup} (error)",          # the supervision hears of it: an event of its own
        f"cancel python -> {c}",               # then stops the others, last first, one event each
        f"exit {c} -> {sup} (cancelled)",
        f"cancel python -> {b}",
        f"exit {b} -> {sup} (cancelled)",
    ]
    assert [ln.split()[0:2] for ln in lines[6:]] == [["spawn", "t.teach:w"]] * 3   # and starts all again
    assert node.teach.step() == []            # nothing else happens
    node.teach.resume()
    children = node.supervision.tree().children[0].children
    assert [ch.restarts for ch in children] == [1, 1, 1] and all(ch.status == "running" for ch in children)


CHAIN = """return { main = function(depth)
  if depth > 0 then process.spawn_linked("t.teach:chain", "app:processes", depth - 1) end
  process.inbox():receive()
  error("crash at depth " .. depth)
end }"""


def test_a_link_cascade_stepped_one_signal_at_a_time(node: Node) -> None:
    node.define("t.teach:chain", "process.lua", source=CHAIN)
    node.teach.seed(5)
    top = node.spawn("t.teach:chain", 3)
    assert node.teach.settle()
    chain = sorted(p.pid for p in node.statistics().processes if p.entry == "t.teach:chain")
    assert len(chain) == 4 and chain[0] == top
    node.teach.pause()
    node.send(top, "go")
    lines = [ln.split(" ", 1)[1] for ln in node.teach.step(10)]
    assert lines == [f"deliver go python -> {top}",
                     f"link {chain[0]} -> {chain[1]} (error)",
                     f"link {chain[1]} -> {chain[2]} (link_down)",
                     f"link {chain[2]} -> {chain[3]} (link_down)"]
    alive = {p.pid for p in node.statistics().processes}
    assert not alive & set(chain)
    node.teach.seed(None)
    node.teach.resume()


def test_the_trace_marks_each_step_before_what_it_caused(node: Node) -> None:
    node.define("app:pong", "process.lua", source=PONG)
    node.define("app:ping", "process.lua", source=PING)
    pong = node.spawn("app:pong")
    settle(node, pong)
    with node.events.subscribe(("send", "teach.step")) as sub:
        node.teach.pause()
        ping = node.spawn("app:ping", pong)
        node.teach.step(3)
        node.teach.resume()
        evs = [(e.kind, e.topic) for e in sub.drain()]
    assert evs[:5] == [("teach.step", f"1 spawn app:ping {ping}"), ("send", "ping"),
                       ("teach.step", f"2 deliver ping {ping} -> {pong}"), ("send", "pong"),
                       ("teach.step", f"3 deliver pong {pong} -> {ping}")]


def test_seed_off_lets_the_held_events_happen(node: Node) -> None:
    node.define("t.teach:recv", "process.lua", source=RECV)
    node.teach.seed(3)
    node.teach.pause()
    r = node.spawn("t.teach:recv", 2)
    node.send(r, "m", "x")
    node.send(r, "m", "y")
    assert len(node.teach.status()[0].held) == 3
    node.teach.seed(None)
    node.teach.resume()
    deadline = time.monotonic() + 10
    while not node.logs(r) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.logs(r) == ["x y"]
    assert not any(s.seeded or s.paused for s in node.teach.status())


# a world of 26 processes: a supervisor of 5 tickers (one may crash on its 3rd tick, and is restarted),
# 4 chains of 4 linked processes whose tails crash at random times, and a collector of every tick
TICKER = """return { main = function(tag, sink, crash_at)
  for i = 1, 6 do
    time.sleep(math.random(5, 50) .. "ms")
    process.send(sink, "tick", tag .. ":" .. i)
    if i == crash_at and math.random(3) ~= 1 then error("ticker " .. tag .. " crashed") end
  end
  process.inbox():receive()
end }"""
LINKS = """return { main = function(depth, sink)
  if depth > 0 then process.spawn_linked("t.world:links", "app:processes", depth - 1, sink) end
  time.sleep(math.random(20, 200) .. "ms")
  process.send(sink, "tick", "chain" .. depth)
  if depth == 0 then error("tail gives up") end
  process.inbox():receive()
end }"""
SINK = """return { main = function()
  local n = 0
  while true do
    local m = process.inbox():receive()
    n = n + 1
    if m:topic() == "count" then process.send(m:from(), "count", n - 1) end
  end
end }"""
WORLD = """return { main = function(sink)
  for i = 1, 4 do process.spawn("t.world:links", "app:processes", 3, sink) end
  return "built"
end }"""


def build_world(n: Node) -> None:
    for name, src in (("ticker", TICKER), ("links", LINKS), ("sink", SINK), ("world", WORLD)):
        n.define(f"t.world:{name}", "process.lua", source=src)


def world_log(tmp_path: Path, tag: str, seed: int) -> tuple[list[str], int]:
    n = Node(data_dir=tmp_path / tag)
    n.start()
    try:
        build_world(n)
        n.teach.seed(seed)
        sink = n.spawn("t.world:sink")
        n.supervision.start({"id": "tickers", "strategy": "one_for_one", "max_restarts": 50, "period": 60,
                             "children": [{"id": f"t{i}", "process": "t.world:ticker",
                                           "input": [f"t{i}", sink, 3 if i in (1, 3) else 0]} for i in range(5)]})
        n.spawn("t.world:world", sink)
        assert n.teach.settle()
        procs = len({ln.split()[-1] for ln in n.teach.log(last=10_000) if " spawn " in ln})
        return n.teach.log(last=10_000), procs
    finally:
        n.stop()


def test_the_same_seed_gives_the_same_trace_of_a_world_with_timers_links_and_a_supervisor(tmp_path: Path) -> None:
    one, procs = world_log(tmp_path, "one", 2026)
    two, _ = world_log(tmp_path, "two", 2026)
    assert procs >= 20
    kinds = {ln.split()[1] for ln in one}
    assert {"spawn", "deliver", "timer", "link", "exit"} <= kinds, kinds
    assert any(" exit " in ln and "(error)" in ln for ln in one)   # the crashed ticker's exit...
    assert sum(" spawn t.world:ticker " in ln for ln in one) > 5     # ...and its restart
    assert one == two
    other, _ = world_log(tmp_path, "other", 7)
    assert other != one
