"""Channels (Go semantics), select, the inbox and `process.listen`, and message order.

Channels belong to one process: a payload that holds one is refused, so two processes never share a
channel, and a coroutine that blocks parks its whole process. The other party of a blocking operation
is therefore the runtime itself (a timer, the inbox or a listen channel filled by other processes);
where a channel would block forever, the test watches the process stay parked.

The module's node runs on a FakeClock so that timers in selects fire when the test says so.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wippy.runtime import FakeClock, Mailbox, Node, Timeout

OTHER = "app:other"
TIMEOUT = 10.0
_ids = itertools.count(1)


class Rig:
    """One test's view of the module's node: a fresh mailbox, and the processes the test spawned."""

    def __init__(self, node: Node, clock: FakeClock) -> None:
        self.node = node
        self.clock = clock
        self.mb: Mailbox = node.mailbox()
        self.spawned: list[str] = []

    def define(self, body: str) -> str:
        """Define `body` (the inside of `function(...)`) as a fresh process entry; return its ID."""
        entry = f"chan:e{next(_ids)}"
        self.node.define(entry, "process.lua", source="return { main = function(...)\n" + body + "\nend }")
        return entry

    def run(self, body: str, *args: Any, host: str | None = None) -> Any:
        """Run `body` as a process and return its result."""
        return self.node.exec(self.define(body), *args, host=host, timeout=TIMEOUT)

    def spawn(self, body: str, *args: Any, host: str | None = None) -> str:
        """Spawn `body` as a process monitored by the rig's mailbox."""
        pid = self.node.spawn(self.define(body), *args, host=host, monitor=self.mb)
        self.spawned.append(pid)
        return pid

    def close(self) -> None:
        """End what the test left running (after a failure) so it cannot disturb the next test."""
        for pid in self.spawned:
            if self.node.alive(pid):
                self.node.terminate(pid)
        self.mb.close()

    def expect(self, topic: str) -> Any:
        msg = self.mb.receive(timeout=TIMEOUT)
        assert msg.topic == topic, msg
        return msg.payload

    def status(self, pid: str) -> tuple[str, int]:
        """(status, resumes) of a live process, from the node's statistics."""
        for p in self.node.statistics().processes:
            if p.pid == pid:
                return p.status, p.resumes
        raise AssertionError(f"{pid} is not running")

    def assert_stays_parked(self, pid: str) -> None:
        """The process sends nothing more, stays `waiting`, and is not resumed (costs no CPU)."""
        status, resumes = self.status(pid)
        with pytest.raises(Timeout):
            self.mb.receive(timeout=0.2)
        assert self.status(pid) == ("waiting", resumes)
        assert status == "waiting"

    def end(self, pid: str) -> None:
        self.node.terminate(pid)
        assert self.mb.wait_exit(pid, TIMEOUT).reason == "terminated"


@pytest.fixture(scope="module")
def fake_clock_node() -> Iterator[tuple[Node, FakeClock]]:
    clock = FakeClock()
    node = Node(clock=clock, output=None).start()
    node.add_host(OTHER)
    yield node, clock
    node.stop(grace=0.2)


@pytest.fixture
def rig(fake_clock_node: tuple[Node, FakeClock]) -> Iterator[Rig]:
    r = Rig(*fake_clock_node)
    yield r
    r.close()


# ------------------------------------------------------------------------------------------ channel.new
@pytest.mark.parametrize("size", ["-1", "1.5", "2.0", "'3'", "{}", "true", "0/0", "math.huge"])
def test_new_refuses_invalid_sizes(rig: Rig, size: str) -> None:
    """channel.new raises for a size that is not a non-negative integer."""
    result = rig.run(f"local ok, err = pcall(channel.new, {size}); return {{ ok = ok, err = err }}")
    assert result["ok"] is False
    assert "channel.new: size must be a non-negative integer" in result["err"]


def test_new_sizes(rig: Rig) -> None:
    """channel.new() and channel.new(0) are unbuffered; channel.new(n) holds n values."""
    result = rig.run("return { channel.new():cap(), channel.new(0):cap(), channel.new(5):cap(), channel.new(5):len() }")
    assert result == [0, 0, 5, 0]


# ------------------------------------------------------------------------------------------ unbuffered
def test_unbuffered_send_is_not_ready_without_a_receiver(rig: Rig) -> None:
    """A send on an unbuffered channel completes only with a receiver: select takes the default."""
    result = rig.run(r"""
  local ch = channel.new()
  local r = channel.select{ ch:case_send("x"), default = true }
  local r2 = channel.select{ ch:case_receive(), default = true }
  return { send_default = r.default, recv_default = r2.default, len = ch:len() }
""")
    assert result == {"send_default": True, "recv_default": True, "len": 0}


def test_unbuffered_send_blocks_the_process(rig: Rig) -> None:
    """ch:send on an unbuffered channel with no receiver parks the process (and it costs no CPU)."""
    pid = rig.spawn(r"""
  local py = ...
  local ch = channel.new(0)
  process.send(py, "before", true)
  ch:send(1)
  process.send(py, "after", true)
""", rig.mb.pid)
    rig.expect("before")
    rig.assert_stays_parked(pid)
    rig.end(pid)


def test_receive_blocks_the_process(rig: Rig) -> None:
    """ch:receive on an empty channel parks the process until a value comes."""
    pid = rig.spawn(r"""
  local py = ...
  local ch = channel.new(4)
  process.send(py, "before", true)
  ch:receive()
  process.send(py, "after", true)
""", rig.mb.pid)
    rig.expect("before")
    rig.assert_stays_parked(pid)
    rig.end(pid)


@pytest.mark.parametrize("host", [None, OTHER])
def test_parked_receiver_gets_the_value_another_process_sends(rig: Rig, host: str | None) -> None:
    """A process parked on its inbox is woken by another process's send and gets that exact value."""
    receiver = rig.spawn(r"""
  local py = ...
  process.send(py, "parked", true)
  local m = process.inbox():receive()
  return { topic = m:topic(), data = m:payload():data(), from = m:from() }
""", rig.mb.pid)
    rig.expect("parked")
    status, _ = rig.status(receiver)
    assert status == "waiting"
    sender = rig.spawn("process.send(..., 'hello', { n = 42 })", receiver, host=host)
    ev = rig.mb.wait_exit(receiver, TIMEOUT)
    assert ev.result["value"] == {"topic": "hello", "data": {"n": 42}, "from": sender}
    rig.mb.wait_exit(sender, TIMEOUT)


# ------------------------------------------------------------------------------------------ buffered
def test_buffered_send_does_not_block_until_full(rig: Rig) -> None:
    """A channel of size 3 takes 3 sends at once, refuses a 4th until a receive, and keeps FIFO order."""
    result = rig.run(r"""
  local ch = channel.new(3)
  for i = 1, 3 do ch:send(i) end
  local r = { len = ch:len(), cap = ch:cap() }
  r.full = channel.select{ ch:case_send(4), default = true }.default or false
  local first = ch:receive()
  local sent = channel.select{ ch:case_send(4), default = true }
  r.room = sent.channel == ch and sent.ok
  r.values = { first, (ch:receive()), (ch:receive()), (ch:receive()) }
  r.empty = channel.select{ ch:case_receive(), default = true }.default or false
  return r
""")
    assert result == {"len": 3, "cap": 3, "full": True, "room": True, "values": [1, 2, 3, 4], "empty": True}


def test_buffered_send_blocks_when_full(rig: Rig) -> None:
    """The send past the capacity parks the process."""
    pid = rig.spawn(r"""
  local py = ...
  local ch = channel.new(2)
  ch:send(1); ch:send(2)
  process.send(py, "before", ch:len())
  ch:send(3)
  process.send(py, "after", true)
""", rig.mb.pid)
    assert rig.expect("before") == 2
    rig.assert_stays_parked(pid)
    rig.end(pid)


# ------------------------------------------------------------------------------------------ close
def test_receive_on_closed_channel_drains_then_reports_closed(rig: Rig) -> None:
    """After close, buffered values still come out with ok=true, then nil, false on every receive."""
    result = rig.run(r"""
  local ch = channel.new(2)
  ch:send("a"); ch:send("b")
  ch:close()
  local out = {}
  for i = 1, 4 do local v, ok = ch:receive(); out[i] = { v = v, ok = ok } end
  local u = channel.new()
  u:close()
  local v, ok = u:receive()
  out[5] = { v = v, ok = ok }
  return { out = out, closed = ch:is_closed() }
""")
    assert result["out"] == [
        {"v": "a", "ok": True}, {"v": "b", "ok": True}, {"ok": False}, {"ok": False}, {"ok": False},
    ]
    assert result["closed"] is True


def test_send_on_closed_channel_errors(rig: Rig) -> None:
    """ch:send and a select case_send on a closed channel raise `send on closed channel`."""
    result = rig.run(r"""
  local ch = channel.new(5)
  ch:close()
  local ok1, e1 = pcall(ch.send, ch, 1)
  local ok2, e2 = pcall(channel.select, { ch:case_send(1), default = true })
  return { ok1 = ok1, e1 = e1, ok2 = ok2, e2 = e2, len = ch:len() }
""")
    assert result["ok1"] is False and "send on closed channel" in result["e1"]
    assert result["ok2"] is False and "send on closed channel" in result["e2"]
    assert result["len"] == 0


def test_closed_channel_is_ready_in_select(rig: Rig) -> None:
    """A closed channel is always ready for receive in a select, with ok=false."""
    result = rig.run(r"""
  local closed, open = channel.new(), channel.new()
  closed:close()
  local r = channel.select{ open:case_receive(), closed:case_receive() }
  return { closed = r.channel == closed, ok = r.ok, value = r.value }
""")
    assert result == {"closed": True, "ok": False}


def test_unlisten_closes_the_listen_channel(rig: Rig) -> None:
    """unlisten closes the channel: a receive returns nil, false; a second unlisten returns false."""
    result = rig.run(r"""
  local ch = process.listen("t")
  local first = process.unlisten(ch)
  local v, ok = ch:receive()
  return { first = first, v = v, ok = ok, second = process.unlisten(ch) }
""")
    assert result == {"first": True, "ok": False, "second": False}


def test_listening_twice_to_a_topic_closes_the_first_channel(rig: Rig) -> None:
    """A second listen of the same exact topic replaces the first, whose channel is closed."""
    result = rig.run(r"""
  local a = process.listen("dup")
  local b = process.listen("dup")
  process.send(process.pid(), "dup", "x")
  local va, oka = a:receive()
  return { oka = oka, vb = b:receive() }
""")
    assert result == {"oka": False, "vb": "x"}


# ------------------------------------------------------------------------------------------ select
def test_select_default_when_nothing_is_ready(rig: Rig) -> None:
    """select with default returns {default=true} when no case is ready, and a ready case otherwise."""
    result = rig.run(r"""
  local a, b = channel.new(1), channel.new()
  local r1 = channel.select{ a:case_receive(), b:case_receive(), b:case_send(1), default = true }
  a:send("v")
  local r2 = channel.select{ a:case_receive(), b:case_receive(), default = true }
  return { r1 = r1, r2_value = r2.value, r2_ok = r2.ok, r2_a = r2.channel == a, r2_default = r2.default }
""")
    assert result == {"r1": {"default": True}, "r2_value": "v", "r2_ok": True, "r2_a": True}


def test_select_is_fair(rig: Rig) -> None:
    """Over 2000 selects on two always-ready channels, each is picked 35%..65% of the time."""
    result = rig.run(r"""
  local a, b = channel.new(1), channel.new(1)
  a:send(1); b:send(2)
  local na, nb = 0, 0
  for _ = 1, 2000 do
    local r = channel.select{ a:case_receive(), b:case_receive() }
    if r.channel == a then na = na + 1; a:send(1) else nb = nb + 1; b:send(2) end
  end
  return { na, nb }
""")
    na, nb = result
    assert na + nb == 2000
    assert 700 <= na <= 1300 and 700 <= nb <= 1300, result


def test_select_is_fair_among_sends(rig: Rig) -> None:
    """Over 2000 selects of two sends that both have room, each is picked 35%..65% of the time."""
    result = rig.run(r"""
  local a, b = channel.new(1), channel.new(1)
  local na, nb = 0, 0
  for _ = 1, 2000 do
    local r = channel.select{ a:case_send("a"), b:case_send("b") }
    if r.channel == a then na = na + 1; a:receive() else nb = nb + 1; b:receive() end
  end
  return { na, nb }
""")
    na, nb = result
    assert 700 <= na <= 1300 and 700 <= nb <= 1300, result


def test_select_case_send(rig: Rig) -> None:
    """A case_send completes on the channel that has room; the value lands in it; the result says send."""
    result = rig.run(r"""
  local full, free = channel.new(1), channel.new(1)
  full:send("old")
  local r = channel.select{ full:case_send("new"), free:case_send("new") }
  return { free = r.channel == free, ok = r.ok, send = r.send, got = free:receive(), kept = full:receive() }
""")
    assert result == {"free": True, "ok": True, "send": True, "got": "new", "kept": "old"}


def test_select_refuses_bad_cases(rig: Rig) -> None:
    """select without cases (and no default), or with something that is not a case, raises."""
    result = rig.run(r"""
  local ok1, e1 = pcall(channel.select, {})
  local ok2, e2 = pcall(channel.select, { channel.new() })
  local ok3, e3 = pcall(channel.select, "x")
  return { ok1, e1, ok2, e2, ok3, e3 }
""")
    assert result[0] is False and "select: no cases" in result[1]
    assert result[2] is False and "select: case 1 is not a case" in result[3]
    assert result[4] is False and "select: expected a table of cases" in result[5]


def test_select_blocks_until_a_timer_fires(rig: Rig) -> None:
    """A select with nothing ready parks until one case becomes ready (here a time.after channel)."""
    pid = rig.spawn(r"""
  local py = ...
  local never = channel.new()
  local after = time.after("1s")
  local t0 = time.now()
  process.send(py, "parked", true)
  local r = channel.select{ never:case_receive(), never:case_send(1), after:case_receive() }
  return { after = r.channel == after, ok = r.ok, is_time = getmetatable(r.value) == "time",
           waited = time.now():sub(t0):seconds() }
""", rig.mb.pid)
    rig.expect("parked")
    rig.clock.advance(0.5)
    rig.assert_stays_parked(pid)
    rig.clock.advance(0.5)
    result = rig.mb.wait_exit(pid, TIMEOUT).result["value"]
    assert result == {"after": True, "ok": True, "is_time": True, "waited": 1.0}


def test_inbox_and_timer_in_one_select(rig: Rig) -> None:
    """process.inbox() mixes with time.after in a select: a message wins before the deadline, the timer after."""
    pid = rig.spawn(r"""
  local py = ...
  local inbox = process.inbox()
  local out = { same_inbox = rawequal(inbox, process.inbox()) }
  local after = time.after("10s")
  process.send(py, "waiting", 1)
  local r = channel.select{ inbox:case_receive(), after:case_receive() }
  out.first = r.channel == inbox and r.value:topic() or "timer"
  out.first_data = r.channel == inbox and r.value:payload():data() or nil
  process.send(py, "waiting", 2)
  r = channel.select{ inbox:case_receive(), after:case_receive() }
  out.second = r.channel == after and "timer" or r.value:topic()
  return out
""", rig.mb.pid)
    assert rig.expect("waiting") == 1
    rig.mb.send(pid, "poke", {"k": "v"})
    assert rig.expect("waiting") == 2
    rig.clock.advance(10)
    result = rig.mb.wait_exit(pid, TIMEOUT).result["value"]
    assert result == {"same_inbox": True, "first": "poke", "first_data": {"k": "v"}, "second": "timer"}


def test_select_send_blocks_until_a_timer_fires(rig: Rig) -> None:
    """A case_send that cannot complete leaves the select parked; the timer case ends it, nothing was sent."""
    pid = rig.spawn(r"""
  local py = ...
  local ch = channel.new(1)
  ch:send("filler")
  local after = time.after("2s")
  process.send(py, "parked", true)
  local r = channel.select{ ch:case_send("extra"), after:case_receive() }
  return { timer = r.channel == after, len = ch:len(), head = ch:receive() }
""", rig.mb.pid)
    rig.expect("parked")
    rig.clock.advance(2)
    assert rig.mb.wait_exit(pid, TIMEOUT).result["value"] == {"timer": True, "len": 1, "head": "filler"}


# ------------------------------------------------------------------------------------------ listen
LISTENER = r"""
local py, expected = ...
local orders = process.listen("orders.*")
local ping = process.listen("ping")
local full = process.listen("audit.?", { message = true })
local exact = process.listen("orders.special")
process.send(py, "ready", true)
local out = { orders = {}, ping = {}, audit = {}, special = {}, inbox = {} }
local chans = { [orders] = "orders", [ping] = "ping", [full] = "audit", [exact] = "special",
                [process.inbox()] = "inbox" }
local cases = {}
for ch in pairs(chans) do cases[#cases + 1] = ch:case_receive() end
for _ = 1, expected do
  local r = channel.select(cases)
  local name = chans[r.channel]
  local v = r.value
  if name == "inbox" then
    v = { topic = v:topic(), data = v:payload():data() }
  elseif name == "audit" then
    v = { topic = v:topic(), from = v:from(), data = v:payload():data(), is_message = getmetatable(r.value) }
  end
  table.insert(out[name], v)
end
return out
"""


def test_listen_routes_topics(rig: Rig) -> None:
    """listen: exact and glob topics get payloads, {message=true} gets Messages, the rest go to the inbox."""
    sends = [
        ("orders.new", {"id": 1}), ("ping", "p1"), ("orders.cancel", {"id": 2}), ("ordersXnew", "no glob"),
        ("orders.special", "exact wins"), ("audit.1", [1]), ("audit.12", "too long"), ("pong", None),
        ("orders.", "empty tail"), ("ping", "p2"),
    ]
    pid = rig.spawn(LISTENER, rig.mb.pid, len(sends))
    rig.expect("ready")
    for topic, payload in sends:
        rig.mb.send(pid, topic, payload)
    result = rig.mb.wait_exit(pid, TIMEOUT).result["value"]
    assert result["orders"] == [{"id": 1}, {"id": 2}, "empty tail"]
    assert result["ping"] == ["p1", "p2"]
    assert result["special"] == ["exact wins"]
    assert result["audit"] == [{"topic": "audit.1", "from": rig.mb.pid, "data": [1], "is_message": "message"}]
    assert result["inbox"] == [
        {"topic": "ordersXnew", "data": "no glob"}, {"topic": "audit.12", "data": "too long"}, {"topic": "pong"},
    ]


def test_messages_sent_before_the_first_inbox_call_wait_in_it(rig: Rig) -> None:
    """Messages sent to a process before it first asks for its inbox (one of them before it has even
    run) are counted in its statistics and then received in order from the inbox, which reports them
    with len() and is the same channel on every call; a process never sent anything has mailbox 0."""
    body = r"""
  local mb = ...
  local go = process.listen("go")
  process.send(mb, "ready", process.pid())
  go:receive()
  local ib = process.inbox()
  local n, got = ib:len(), {}
  for i = 1, n do local m = ib:receive(); got[i] = { m:topic(), m:data() } end
  return { len = n, cap = ib:cap(), same = ib == process.inbox(), got = got, after = ib:len() }
"""
    pid = rig.spawn(body, rig.mb.pid)
    rig.node.send(pid, "a", 1)                    # before the process has run at all
    quiet = rig.spawn(body, rig.mb.pid)
    ready = {rig.expect("ready"), rig.expect("ready")}
    assert ready == {pid, quiet}
    rig.node.send(pid, "b", {"x": 2})
    rig.node.send(pid, "c", "three")
    deadline = time.monotonic() + TIMEOUT             # node.send returns before the delivery
    while True:
        procs = {p.pid: p for p in rig.node.statistics().processes}
        if procs[pid].mailbox == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert procs[pid].mailbox == 3 and procs[pid].messages_in == 3
    assert procs[quiet].mailbox == 0 and procs[quiet].messages_in == 0
    rig.node.send(pid, "go")
    rig.node.send(quiet, "go")
    assert rig.mb.wait_exit(pid, TIMEOUT).result["value"] == {
        "len": 3, "cap": -1, "same": True, "after": 0, "got": [["a", 1], ["b", {"x": 2}], ["c", "three"]]}
    assert rig.mb.wait_exit(quiet, TIMEOUT).result["value"] == {
        "len": 0, "cap": -1, "same": True, "after": 0, "got": {}}


def test_unlisten_sends_later_messages_to_the_inbox(rig: Rig) -> None:
    """After unlisten, messages of that topic go to the inbox again."""
    result = rig.run(r"""
  local me = process.pid()
  local ch = process.listen("jobs.*")
  process.send(me, "jobs.a", 1)
  local before = ch:receive()
  process.unlisten(ch)
  process.send(me, "jobs.b", 2)
  local m = process.inbox():receive()
  return { before = before, after_topic = m:topic(), after_data = m:payload():data() }
""")
    assert result == {"before": 1, "after_topic": "jobs.b", "after_data": 2}


def test_listen_from_another_host(rig: Rig) -> None:
    """A listen channel gets messages from other hosts and from Python alike."""
    pid = rig.spawn(r"""
  local py = ...
  local ch = process.listen("x.*", { message = true })
  process.send(py, "ready", true)
  local out = {}
  for i = 1, 2 do
    local m = ch:receive()
    out[i] = { topic = m:topic(), data = m:payload():data(), from = m:from() }
  end
  return out
""", rig.mb.pid)
    rig.expect("ready")
    remote = rig.spawn("process.send(..., 'x.remote', 'r')", pid, host=OTHER)
    rig.mb.wait_exit(remote, TIMEOUT)
    rig.mb.send(pid, "x.python", "p")
    assert rig.mb.wait_exit(pid, TIMEOUT).result["value"] == [
        {"topic": "x.remote", "data": "r", "from": remote},
        {"topic": "x.python", "data": "p", "from": rig.mb.pid},
    ]


# ------------------------------------------------------------------------------------------ order
RECEIVER = r"""
local py, n = ...
local inbox = process.inbox()
process.send(py, "ready", true)
local last, disorder = 0, 0
for _ = 1, n do
  local v = inbox:receive():payload():data()
  if v ~= last + 1 then disorder = disorder + 1 end
  last = v
end
return { last = last, disorder = disorder }
"""

SENDER = r"""
local dest, n = ...
for i = 1, n do assert(process.send(dest, "n", i)) end
return n
"""


@pytest.mark.parametrize("sender_host", [None, OTHER], ids=["same host", "across hosts"])
def test_order_is_kept_per_sender(rig: Rig, sender_host: str | None) -> None:
    """10 000 numbered messages from one process arrive strictly in order."""
    n = 10_000
    receiver = rig.spawn(RECEIVER, rig.mb.pid, n)
    rig.expect("ready")
    sender = rig.spawn(SENDER, receiver, n, host=sender_host)
    assert rig.mb.wait_exit(receiver, 30).result["value"] == {"last": n, "disorder": 0}
    assert rig.mb.wait_exit(sender, TIMEOUT).result["value"] == n


def test_order_is_kept_per_sender_with_interleaving_senders(rig: Rig) -> None:
    """Two senders (one per host) interleave, but each one's messages stay in order."""
    n = 5_000
    receiver = rig.spawn(r"""
  local py, n = ...
  local inbox = process.inbox()
  process.send(py, "ready", true)
  local last, disorder, count = {}, 0, 0
  for _ = 1, 2 * n do
    local m = inbox:receive()
    local from, v = m:from(), m:payload():data()
    if v ~= (last[from] or 0) + 1 then disorder = disorder + 1 end
    last[from] = v
    count = count + 1
  end
  return { disorder = disorder, count = count }
""", rig.mb.pid, n)
    rig.expect("ready")
    a = rig.spawn(SENDER, receiver, n)
    b = rig.spawn(SENDER, receiver, n, host=OTHER)
    assert rig.mb.wait_exit(receiver, 30).result["value"] == {"disorder": 0, "count": 2 * n}
    rig.mb.wait_exit(a, TIMEOUT)
    rig.mb.wait_exit(b, TIMEOUT)


def test_order_is_kept_from_python_and_to_python(rig: Rig) -> None:
    """A Python mailbox's messages reach Lua in order, and a Lua process's reach Python in order."""
    n = 2_000
    receiver = rig.spawn(RECEIVER, rig.mb.pid, n)
    rig.expect("ready")
    for i in range(1, n + 1):
        rig.mb.send(receiver, "n", i)
    assert rig.mb.wait_exit(receiver, 30).result["value"] == {"last": n, "disorder": 0}

    with rig.node.mailbox() as sink:
        sender = rig.spawn(SENDER, sink.pid, 10_000, host=OTHER)
        got = [sink.receive(timeout=TIMEOUT).payload for _ in range(10_000)]
        assert got == list(range(1, 10_001))
        rig.mb.wait_exit(sender, TIMEOUT)

