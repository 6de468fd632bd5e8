"""The `time` module on a FakeClock: sleeps, durations, after, timers, tickers, now.

Nothing here waits for real time to pass, except the one real-clock test at the end. Two ways make the
fake-clock tests deterministic:

* a *stepped* process waits on its inbox between steps; the test moves the clock, then sends "go". The
  host fires due timers before it runs any process, so the step sees every timer that is due.
* ``settle()`` asks a barrier process (same host) that sleeps 0 before answering: its answer comes after
  the host has run the timers due now and the processes they woke, so a process that did not report
  before the answer was not woken.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wippy.runtime import FakeClock, Mailbox, Message, Node

TIMEOUT = 10.0
EPS = 1e-6          # seconds either side of a deadline (far above float rounding of the fake clock)
_ids = itertools.count(1)

BARRIER = r"""
return { main = function()
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    time.sleep(0)
    process.send(m:from(), "synced", true)
  end
end }
"""

# Prepended to the body of stepped processes: `...` starts with the test's mailbox PID.
HARNESS = r"""
local py = ...
local inbox = process.inbox()
local function report(v) process.send(py, "report", v) end
local function step() inbox:receive() end
local function poll(ch)   -- the value ready on ch, or nil (never blocks)
  local r = channel.select{ ch:case_receive(), default = true }
  if r.default then return nil end
  return r.value
end
local function nano(t) return t and t:unix_nano() end
"""


class Rig:
    """One test's view of the module's node: a fresh mailbox, and the processes the test spawned."""

    def __init__(self, node: Node, clock: FakeClock, barrier: str) -> None:
        self.node = node
        self.clock = clock
        self.mb: Mailbox = node.mailbox()
        self.barrier = barrier
        self.spawned: list[str] = []

    def close(self) -> None:
        """End what the test left running (after a failure) so it cannot disturb the next test."""
        for pid in self.spawned:
            if self.node.alive(pid):
                self.node.terminate(pid)
        self.mb.close()

    def define(self, body: str) -> str:
        entry = f"time:e{next(_ids)}"
        self.node.define(entry, "process.lua", source="return { main = function(...)\n" + HARNESS + body + "\nend }")
        return entry

    def spawn(self, body: str, *args: Any) -> str:
        """Spawn `body` with the harness; its arguments are (mailbox PID, *args). Returns once it has run."""
        pid = self.node.spawn(self.define(body), self.mb.pid, *args, monitor=self.mb)
        self.spawned.append(pid)
        assert self.settle() == []
        return pid

    def run(self, body: str, *args: Any) -> Any:
        return self.node.exec(self.define(body), self.mb.pid, *args, timeout=TIMEOUT)

    def settle(self) -> list[Message]:
        """Messages that arrived before the host ran everything due now (see the module docstring)."""
        self.mb.send(self.barrier, "sync")
        got = []
        while True:
            msg = self.mb.receive(timeout=TIMEOUT)
            if msg.topic == "synced":
                return got
            got.append(msg)

    def reports(self) -> list[Any]:
        return [m.payload for m in self.settle()]

    def step(self, pid: str, advance: float = 0.0) -> Any:
        """Move the clock, let the stepped process run one step, return its report."""
        if advance:
            self.clock.advance(advance)
        self.mb.send(pid, "go")
        msg = self.mb.receive(timeout=TIMEOUT)
        assert msg.topic == "report", msg
        return msg.payload

    def finish(self, pid: str) -> Any:
        ev = self.mb.wait_exit(pid, TIMEOUT)
        assert ev.reason == "normal", ev
        return ev.result.get("value")


@pytest.fixture(scope="module")
def fake_clock_node() -> Iterator[tuple[Node, FakeClock, str]]:
    clock = FakeClock()
    node = Node(clock=clock, output=None).start()
    node.define("time:barrier", "process.lua", source=BARRIER)
    yield node, clock, node.spawn("time:barrier")
    node.stop(grace=0.2)


@pytest.fixture
def rig(fake_clock_node: tuple[Node, FakeClock, str]) -> Iterator[Rig]:
    r = Rig(*fake_clock_node)
    yield r
    r.close()


# ------------------------------------------------------------------------------------------ sleep
SLEEPS = [
    ('"150ms"', 0.15),
    ('"2s"', 2.0),
    ('"1m"', 60.0),
    ('"1h30m"', 5400.0),
    ('"1.5s"', 1.5),
    ('"100us"', 1e-4),
    ('"250µs"', 2.5e-4),
    ('"1h2m3.5s"', 3723.5),
    ('"500000ns"', 5e-4),
    ("150000000", 0.15),
    ("2 * time.second", 2.0),
    ('time.parse_duration("3s")', 3.0),
]


@pytest.mark.parametrize(("duration", "seconds"), SLEEPS, ids=[s[0] for s in SLEEPS])
def test_sleep_wakes_exactly_after_its_duration(rig: Rig, duration: str, seconds: float) -> None:
    """time.sleep(d) parks until the clock has moved by d, not a moment earlier; d as string, number or Duration."""
    pid = rig.spawn(f"""
  local t0 = time.now()
  local r = time.sleep({duration})
  report({{ ret = r, slept = time.now():sub(t0):seconds() }})
""")
    rig.clock.advance(seconds - EPS)
    assert rig.reports() == []
    rig.clock.advance(2 * EPS)
    [report] = rig.reports()
    assert report["ret"] is True
    assert report["slept"] == pytest.approx(seconds + EPS, abs=1e-7)
    rig.finish(pid)


INVALID = [
    ('"abc"', "expected a number and a unit"),
    ('"10"', "expected a number and a unit"),
    ('"1.5"', "expected a number and a unit"),
    ('"5x"', 'unknown unit "x"'),
    ('"1s2"', "expected a number and a unit"),
    ('"-1s"', "expected a number and a unit"),
    ('"1 s"', "expected a number and a unit"),
    ('""', "invalid duration ''"),
    ("-1", "invalid duration -1"),
    ("0/0", "invalid duration"),
    ("true", "expected a string like '150ms', got boolean"),
    ("{}", "expected a string like '150ms', got table"),
]


@pytest.mark.parametrize(("duration", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_durations_error_clearly(rig: Rig, duration: str, message: str) -> None:
    """sleep, after, timer, ticker raise `<call>: invalid duration ...`; parse_duration returns nil, err."""
    result = rig.run(f"""
  local out = {{}}
  for _, name in ipairs({{ "sleep", "after", "timer", "ticker" }}) do
    local ok, err = pcall(time[name], {duration})
    out[name] = {{ ok = ok, err = err }}
  end
  local d, err = time.parse_duration({duration})
  out.parse = {{ d = d, err = err }}
  return out
""")
    for name in ("sleep", "after", "timer", "ticker"):
        assert result[name]["ok"] is False
        assert result[name]["err"].startswith(f"time.{name}: invalid duration"), result[name]["err"]
        assert message in result[name]["err"]
    assert "d" not in result["parse"]
    assert result["parse"]["err"].startswith("invalid duration") and message in result["parse"]["err"]


def test_ticker_refuses_a_zero_period(rig: Rig) -> None:
    """A ticker needs a positive period."""
    result = rig.run('local ok, err = pcall(time.ticker, "0s"); return { ok, err }')
    assert result[0] is False and "time.ticker: duration must be positive" in result[1]


# ------------------------------------------------------------------------------------------ parse_duration
@pytest.mark.parametrize(
    ("text", "ns"),
    [("150ms", 150_000_000), ("2s", 2_000_000_000), ("1m", 60_000_000_000), ("1h30m", 5_400_000_000_000),
     ("1.5s", 1_500_000_000), ("100us", 100_000), ("7ns", 7), ("0", 0), (".5s", 500_000_000)],
)
def test_parse_duration(rig: Rig, text: str, ns: int) -> None:
    """time.parse_duration returns a Duration: :seconds() and :milliseconds() as floats, :nanoseconds()."""
    result = rig.run(f"""
  local d = assert(time.parse_duration("{text}"))
  return {{ s = d:seconds(), ms = d:milliseconds(), ns = d:nanoseconds(), mt = getmetatable(d),
           st = math.type(d:seconds()), mst = math.type(d:milliseconds()),
           same = time.parse_duration(d):nanoseconds() == d:nanoseconds(),
           num = time.parse_duration({ns}):nanoseconds() == d:nanoseconds() }}
""")
    assert result["s"] == pytest.approx(ns / 1e9) and isinstance(result["s"], float)
    assert result["ms"] == pytest.approx(ns / 1e6) and isinstance(result["ms"], float)
    assert result["ns"] == ns
    assert result["mt"] == "duration"
    assert result["st"] == "float" and result["mst"] == "float"
    assert result["same"] is True and result["num"] is True


# ------------------------------------------------------------------------------------------ after
def test_after_fires_once_at_its_deadline(rig: Rig) -> None:
    """time.after(d) has no value before d, one Time value at d, and never another."""
    pid = rig.spawn(r"""
  local ch = time.after("2s")
  for _ = 1, 5 do step(); report({ v = nano(poll(ch)) }) end
""")
    assert rig.step(pid, 1.0) == {}
    assert rig.step(pid, 1.0 - EPS) == {}
    assert rig.step(pid, 2 * EPS) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 10.0) == {}
    assert rig.step(pid, 3600.0) == {}
    rig.finish(pid)


def test_after_wakes_a_blocked_receive(rig: Rig) -> None:
    """A receive on time.after's channel parks the process until the deadline."""
    pid = rig.spawn(r"""
  local ch = time.after("5s")
  local v, ok = ch:receive()
  report({ ok = ok, v = nano(v) })
""")
    rig.clock.advance(5 - EPS)
    assert rig.reports() == []
    rig.clock.advance(2 * EPS)
    assert rig.reports() == [{"ok": True, "v": rig.clock.now_ns()}]
    rig.finish(pid)


# ------------------------------------------------------------------------------------------ timer
def test_timer_stop_before_firing(rig: Rig) -> None:
    """timer:stop() before the deadline returns true and the timer never fires."""
    pid = rig.spawn(r"""
  local t = time.timer("1s")
  step(); report({ stopped = t:stop() })
  step(); report({ v = nano(poll(t:channel())), again = t:stop() })
""")
    assert rig.step(pid, 0.5) == {"stopped": True}
    assert rig.step(pid, 10.0) == {"again": False}
    rig.finish(pid)


def test_timer_stop_after_firing(rig: Rig) -> None:
    """timer:stop() after the timer fired returns false; the value stays in its channel."""
    pid = rig.spawn(r"""
  local t = time.timer("1s")
  step(); report({ stopped = t:stop(), v = nano(poll(t:channel())) })
""")
    assert rig.step(pid, 1.0) == {"stopped": False, "v": rig.clock.now_ns()}
    rig.finish(pid)


def test_timer_reset(rig: Rig) -> None:
    """timer:reset(d) moves the deadline to now + d (true if it was active); a fired timer fires again."""
    pid = rig.spawn(r"""
  local t = time.timer("1s")
  step(); report({ reset = t:reset("1s") })                -- at 0.5s: new deadline 1.5s
  step(); report({ v = nano(poll(t:channel())) })          -- at 1.0s + eps: the old deadline is gone
  step(); report({ v = nano(poll(t:channel())) })          -- at 1.5s
  step(); report({ reset = t:reset("2s") })                -- fired already: false, fires again at +2s
  step(); report({ v = nano(poll(t:channel())) })
  step(); report({ v = nano(poll(t:channel())) })
""")
    assert rig.step(pid, 0.5) == {"reset": True}
    assert rig.step(pid, 0.5 + EPS) == {}
    assert rig.step(pid, 0.5) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 0.1) == {"reset": False}
    assert rig.step(pid, 2 - EPS) == {}
    assert rig.step(pid, 2 * EPS) == {"v": rig.clock.now_ns()}
    rig.finish(pid)


def test_timer_blocked_receive(rig: Rig) -> None:
    """A receive on timer:channel() parks until it fires; the value is the Time it fired."""
    pid = rig.spawn(r"""
  local t = time.timer("3s")
  local v = t:channel():receive()
  report({ v = nano(v), is_time = getmetatable(v) })
""")
    rig.clock.advance(2.0)
    assert rig.reports() == []
    rig.clock.advance(1.0)
    assert rig.reports() == [{"v": rig.clock.now_ns(), "is_time": "time"}]
    rig.finish(pid)


# ------------------------------------------------------------------------------------------ ticker
def test_ticker_ticks_each_period(rig: Rig) -> None:
    """A ticker delivers one Time per period, at the period."""
    pid = rig.spawn(r"""
  local tk = time.ticker("1s")
  for _ = 1, 6 do step(); report({ v = nano(poll(tk:channel())) }) end
  tk:stop()
""")
    assert rig.step(pid, 1.0 - EPS) == {}
    assert rig.step(pid, 2 * EPS) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 0.5) == {}
    assert rig.step(pid, 0.5) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 1.0) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 0.999) == {}
    rig.finish(pid)


def test_ticker_drops_ticks_for_a_slow_receiver(rig: Rig) -> None:
    """Ticks that find the channel full (buffer 1) are dropped: the oldest one waits, the rest are lost."""
    pid = rig.spawn(r"""
  local tk = time.ticker("1s")
  step(); step(); step()   -- three periods pass without a receive
  step(); report({ first = nano(poll(tk:channel())), second = nano(poll(tk:channel())) })
  step(); report({ v = nano(poll(tk:channel())) })
  tk:stop()
""")
    first = None
    for _ in range(3):
        rig.clock.advance(1.0)
        assert rig.reports() == []   # each tick fires in its own period
        first = first or rig.clock.now_ns()
        rig.mb.send(pid, "go")
    assert rig.step(pid) == {"first": first}
    assert rig.step(pid, 1.0) == {"v": rig.clock.now_ns()}
    rig.finish(pid)


def test_ticker_stop(rig: Rig) -> None:
    """ticker:stop() returns true and no tick comes afterwards."""
    pid = rig.spawn(r"""
  local tk = time.ticker("1s")
  step(); report({ v = nano(poll(tk:channel())), stopped = tk:stop() })
  step(); report({ v = nano(poll(tk:channel())) })
""")
    assert rig.step(pid, 1.0) == {"v": rig.clock.now_ns(), "stopped": True}
    assert rig.step(pid, 5.0) == {}
    rig.finish(pid)


def test_ticker_keeps_its_phase_after_a_late_tick(rig: Rig) -> None:
    """When the clock jumps 3.5 periods, the next tick is at 4 periods, as in Go."""
    pid = rig.spawn(r"""
  local tk = time.ticker("1s")
  step(); report({ v = nano(poll(tk:channel())) })
  step(); report({ v = nano(poll(tk:channel())) })
  tk:stop()
""")
    assert rig.step(pid, 3.5) == {"v": rig.clock.now_ns()}
    assert rig.step(pid, 0.5) == {"v": rig.clock.now_ns()}
    rig.finish(pid)


# ------------------------------------------------------------------------------------------ now
def test_now_follows_the_fake_clock(rig: Rig) -> None:
    """time.now() reads the node's clock: unix(), unix_nano(), and sub() giving a Duration in float seconds/ms."""
    pid = rig.spawn(r"""
  local t0 = time.now()
  step(); report({ unix = t0:unix(), nano = t0:unix_nano(), ut = math.type(t0:unix()) })
  step()
  local d = time.now():sub(t0)
  report({ s = d:seconds(), ms = d:milliseconds(), st = math.type(d:seconds()), mst = math.type(d:milliseconds()),
           mt = getmetatable(d), neg = t0:sub(time.now()):seconds() })
""")
    ns0 = rig.clock.now_ns()
    assert rig.step(pid) == {"unix": ns0 // 1_000_000_000, "nano": ns0, "ut": "integer"}
    assert rig.step(pid, 1.5) == {"s": 1.5, "ms": 1500.0, "st": "float", "mst": "float", "mt": "duration",
                                  "neg": -1.5}
    rig.finish(pid)


def test_now_starts_at_the_clock_start() -> None:
    """A FakeClock's start_ns is what time.now() reads before any advance."""
    clock = FakeClock(start_ns=1_234_567_890_123_456_789)
    with Node(clock=clock, output=None) as node:
        node.define("t:now", "process.lua",
                    source="return { main = function() local t = time.now(); return { t:unix(), t:unix_nano() } end }")
        assert node.exec("t:now", timeout=TIMEOUT) == [1_234_567_890, 1_234_567_890_123_456_789]
        clock.advance(2.0)
        assert node.exec("t:now", timeout=TIMEOUT) == [1_234_567_892, 1_234_567_892_123_456_789]


# ------------------------------------------------------------------------------------------ many sleepers
SLEEPER = r"""
return { main = function(py, i, ms)
  time.sleep(ms * time.millisecond)
  process.send(py, "woke", i)
end }
"""

SPAWNER = r"""
return { main = function(py, deadlines)
  for i, ms in ipairs(deadlines) do assert(process.spawn("time:sleeper", nil, py, i, ms)) end
  return #deadlines
end }
"""


def test_many_sleepers_wake_in_deadline_order_and_cost_nothing_while_asleep(rig: Rig) -> None:
    """1000 sleeping processes use no CPU while parked and wake in deadline order."""
    n = 1000
    deadlines = random.Random(1234).sample(range(1, n + 1), n)     # distinct ms, shuffled
    rig.node.define("time:sleeper", "process.lua", source=SLEEPER)
    rig.node.define("time:spawner", "process.lua", source=SPAWNER)
    spawner = rig.node.spawn("time:spawner", rig.mb.pid, deadlines, monitor=rig.mb)
    assert rig.finish(spawner) == n
    assert rig.settle() == []

    stats = rig.node.statistics()
    sleepers = [p for p in stats.processes if p.entry == "time:sleeper"]
    assert len(sleepers) == n and all(p.status == "waiting" for p in sleepers)
    assert stats.hosts["app:processes"].timers >= n
    resumes = stats.hosts["app:processes"].resumes
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.1
    assert rig.node.statistics().hosts["app:processes"].resumes == resumes

    order = [i + 1 for i in sorted(range(n), key=lambda i: deadlines[i])]
    rig.clock.advance(0.5 + EPS)
    first = [m.payload for m in rig.settle()]
    assert first == order[:500]
    rig.clock.advance(0.5)
    second = [m.payload for m in rig.settle()]
    assert second == order[500:]


# ------------------------------------------------------------------------------------------ real clock
def test_sleep_on_the_real_clock() -> None:
    """With the real clock, sleep("50ms") takes at least 50 ms and well under a second."""
    with Node(output=None) as node:
        node.define("t:sleep", "process.lua", source=r"""
return { main = function()
  local t0 = time.now()
  time.sleep("50ms")
  return time.now():sub(t0):seconds()
end }""")
        t0 = time.monotonic()
        slept = node.exec("t:sleep", timeout=TIMEOUT)
        elapsed = time.monotonic() - t0
    assert 0.05 <= slept < 1.0
    assert 0.05 <= elapsed < 1.0
