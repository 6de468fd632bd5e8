"""Teaching mode, first part (runtime/teach.py, scheduler/teach.lua): pause, step, resume, status."""

from __future__ import annotations

import time

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
    with pytest.raises(TeachError, match="S must be an integer, got 1.5"):
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
