"""The process API of API.md: spawn, send, monitors, links, cancel, terminate, exec, names, builder."""

from __future__ import annotations

import re
import time

import pytest
from conftest import RunLua, define
from wippy.runtime import (
    EntryError,
    FakeClock,
    HostError,
    Node,
    ProcessError,
    ProcessExited,
    Timeout,
)

PID = re.compile(r"^\{app:processes\|0x[0-9a-f]+\}$")

CHILD = """
return { main = function(mode, x)
  if mode == "fail" then error("boom: " .. tostring(x)) end
  if mode == "wait" then return process.inbox():receive():payload():data() end
  if mode == "events" then
    local ev = process.events():receive()
    return ev.kind .. "|" .. tostring(ev.reason) .. "|" .. tostring(ev.from ~= nil)
  end
  if mode == "forever" then
    process.events()
    while true do time.sleep("1h") end
  end
  if mode == "park" then while true do process.inbox():receive() end end
  return x
end }
"""


@pytest.fixture
def child(node: Node) -> str:
    node.define("test:child", "process.lua", source=CHILD)
    return "test:child"


# ----------------------------------------------------------------------------------------- spawn
def test_spawn_returns_a_pid_and_passes_arguments(node: Node, run_lua: RunLua, child: str) -> None:
    """process.spawn gives a PID string and hands the extra arguments to the entry function."""
    out = run_lua("""
      local pid = process.spawn_monitored("test:child", nil, "value", {a = 1})
      local ev = process.events():receive()
      return {pid, ev.result.value.a, ev.from == pid, type(pid), process.pid()}
    """)
    assert PID.match(out[0]) and PID.match(out[4])
    assert out[1:4] == [1, True, "string"]
    assert out[0] != out[4]


def test_spawn_unknown_entry_names_it_and_what_exists(run_lua: RunLua, child: str) -> None:
    """An unknown entry is nil, err naming the ID and the entries that do exist."""
    no_pid, err = run_lua('local pid, err = process.spawn("test:nope"); return {pid == nil, err}')
    assert no_pid is True
    assert "unknown entry 'test:nope'" in err and "test:child" in err


def test_spawn_unknown_host_lists_hosts(run_lua: RunLua, child: str) -> None:
    """An unknown host is nil, err in the documented form."""
    err = run_lua('return select(2, process.spawn("test:child", "app:procs"))')
    assert "unknown host 'app:procs'; hosts: app:processes" in err


def test_spawn_refuses_non_process_entries(node: Node, run_lua: RunLua) -> None:
    """Only process.lua entries spawn; the error names the kind."""
    node.define("test:lib", "library.lua", source="return {}")
    err = run_lua('return select(2, process.spawn("test:lib"))')
    assert "library.lua" in err and "only process.lua" in err
    with pytest.raises(EntryError, match=r"only process\.lua"):
        node.spawn("test:lib")


def test_spawn_wrong_argument_types(run_lua: RunLua) -> None:
    """A non-string ID or host is nil, err, not a crash."""
    out = run_lua('return {select(2, process.spawn(42)), select(2, process.spawn("test:x", 7))}')
    assert "entry ID must be a string" in out[0]
    assert "host must be a string" in out[1]


def test_python_spawn_errors_raise(node: Node, child: str) -> None:
    """From Python, the same faults raise errors of the runtime's hierarchy."""
    with pytest.raises(EntryError, match="unknown entry 'test:none'"):
        node.spawn("test:none")
    with pytest.raises(HostError, match="unknown host 'app:procs'; hosts: app:processes"):
        node.spawn(child, host="app:procs")


def test_entry_method_and_function_chunks(node: Node) -> None:
    """`method:` picks the entry function; a chunk may also return a function."""
    node.define("test:m", "process.lua", source="return { run = function(a) return a * 2 end }", method="run")
    node.define("test:f", "process.lua", source="return function(a) return a + 1 end")
    assert node.exec("test:m", 21, timeout=5) == 42
    assert node.exec("test:f", 41, timeout=5) == 42


def test_entry_without_main_says_what_to_do(node: Node) -> None:
    """A chunk without the entry function ends the process with an error that says what to write."""
    node.define("test:nomain", "process.lua", source="return { other = function() end }")
    with pytest.raises(ProcessExited) as exc:
        node.exec("test:nomain", timeout=5)
    assert "without a function 'main'" in str(exc.value)


def test_library_imports(node: Node) -> None:
    """`imports:` makes a library.lua entry a global of the process, instantiated per process."""
    node.define("test:lib", "library.lua", source="local n = 0\nreturn { bump = function() n = n + 1; return n end }")
    node.define(
        "test:user", "process.lua",
        source="return { main = function() lib.bump(); return lib.bump() end }",
        imports={"lib": "test:lib"},
    )
    assert node.exec("test:user", timeout=5) == 2
    assert node.exec("test:user", timeout=5) == 2  # a fresh instance each process


# ------------------------------------------------------------------------------------------- send
def test_send_to_name_and_reserved_topics(run_lua: RunLua, child: str) -> None:
    """send accepts registered names; '@' topics and unknown names are nil, err."""
    out = run_lua("""
      process.registry.register("me")
      local ok = process.send("me", "hi", 1)
      local m = process.inbox():receive()
      local _, e1 = process.send("me", "@system", 1)
      local _, e2 = process.send("nobody", "hi", 1)
      local _, e3 = process.send(process.pid(), 42, 1)
      return {ok, m:topic(), m:payload():data(), e1, e2, e3}
    """)
    assert out[:3] == [True, "hi", 1]
    assert "reserved" in out[3]
    assert "no process is registered as 'nobody'" in out[4]
    assert "topic must be a string" in out[5]


def test_send_to_ended_process_says_how_it_ended(run_lua: RunLua, child: str) -> None:
    """Sending to a local process that has ended is nil, err with its exit."""
    err = run_lua("""
      local pid = process.spawn_monitored("test:child", nil, "fail", 1)
      process.events():receive()
      return select(2, process.send(pid, "x", 1))
    """)
    assert "is not running (it exited: error: " in err and "boom: 1" in err


def test_order_is_kept_per_sender(node: Node, run_lua: RunLua) -> None:
    """Messages from one sender arrive in the order sent, across a second host too."""
    node.add_host("app:other")
    entry = define(node, """return { main = function(n)
      local ib = process.inbox()
      local m = ib:receive()
      local from = m:from()
      local last = m:payload():data()
      for i = 2, n do
        local v = ib:receive():payload():data()
        if v ~= last + 1 then return "out of order at " .. i end
        last = v
      end
      return last
    end }""")
    for host in (None, "app:other"):
        out = run_lua(f"""
          local pid = process.spawn_monitored("{entry}", {'nil' if host is None else repr(host)}, 5000)
          for i = 1, 5000 do process.send(pid, "n", i) end
          return process.events():receive().result.value
        """)
        assert out == 5000


def test_messages_carry_the_sender(run_lua: RunLua) -> None:
    """msg:from() is the sender's PID; msg:payload():data() the copied payload."""
    out = run_lua("""
      process.send(process.pid(), "t", {x = {1, 2}})
      local m = process.inbox():receive()
      return {m:from() == process.pid(), m:topic(), m:payload():data().x[2]}
    """)
    assert out == [True, "t", 2]


# --------------------------------------------------------------------------------- monitor / exit
def test_monitor_gets_exit_with_value_and_error(run_lua: RunLua, child: str) -> None:
    """EXIT carries result.value on a normal end and result.error (message + traceback) on an error."""
    out = run_lua("""
      local a = process.spawn("test:child", nil, "wait")
      process.monitor(a)
      process.send(a, "x", "answer")
      local ev1 = process.events():receive()
      local b = process.spawn("test:child", nil, "fail", 7)
      process.monitor(b)
      local ev2 = process.events():receive()
      return {ev1.kind, ev1.result.value, ev1.reason, ev2.kind, ev2.reason, ev2.result.error,
              process.event.EXIT}
    """)
    assert out[:5] == ["pid.exit", "answer", "normal", "pid.exit", "error"]
    assert out[5].startswith("test:child:3: boom: 7\nstack traceback:")
    assert out[6] == "pid.exit"


def test_unmonitor_stops_the_event(run_lua: RunLua, child: str) -> None:
    """After unmonitor no EXIT arrives."""
    out = run_lua("""
      local a = process.spawn("test:child", nil, "wait")
      process.monitor(a)
      process.unmonitor(a)
      process.send(a, "x", 1)
      time.sleep("20ms")
      local r = channel.select{process.events():case_receive(), default = true}
      return r.default
    """)
    assert out is True


def test_monitor_unknown_pid(run_lua: RunLua) -> None:
    """Monitoring a PID that never existed is nil, err naming it."""
    err = run_lua('return select(2, process.monitor("{app:processes|0xfffff}"))')
    assert "unknown process {app:processes|0xfffff}" in err


def test_a_crash_stays_in_its_process(node: Node, run_lua: RunLua, child: str) -> None:
    """One process failing leaves its neighbours running with their state."""
    counter = define(node, """return { main = function()
      local n = 0
      local ib = process.inbox()
      while true do
        local m = ib:receive()
        n = n + 1
        if m:topic() == "get" then process.send(m:from(), "n", n) end
      end
    end }""")
    with node.mailbox() as mb:
        pid = node.spawn(counter)
        for _ in range(3):
            node.send(pid, "inc")
        with pytest.raises(ProcessExited, match="boom"):
            node.exec(child, "fail", "x", timeout=5)
        mb.send(pid, "get")
        assert mb.receive(timeout=5).payload == 4


# ------------------------------------------------------------------------------------------ links
def test_link_kills_on_abnormal_end_only(node: Node, run_lua: RunLua, child: str) -> None:
    """A linked failure kills the partner (link_down); a normal end does not."""
    partner = define(node, """return { main = function(target_mode)
      process.spawn_linked("test:child", nil, target_mode, 1)
      time.sleep("50ms")
      return "survived"
    end }""")
    with node.mailbox() as mb:
        ok_pid = node.spawn(partner, "value", monitor=mb)
        bad_pid = node.spawn(partner, "fail", monitor=mb)
        ok = mb.wait_exit(ok_pid, 5)
        bad = mb.wait_exit(bad_pid, 5)
    assert ok.reason == "normal" and ok.result["value"] == "survived"
    assert bad.reason == "link_down"
    assert "linked process failed" in bad.result["error"]


def test_trap_links_turns_failure_into_event(run_lua: RunLua, child: str) -> None:
    """With trap_links a linked failure arrives as LINK_DOWN with the partner's result."""
    out = run_lua("""
      process.set_options{trap_links = true}
      local pid = process.spawn_linked("test:child", nil, "fail", 2)
      local ev = process.events():receive()
      return {ev.kind, ev.from == pid, ev.reason, ev.result.error:match("boom: 2") ~= nil,
              process.get_options().trap_links}
    """)
    assert out == ["pid.link.down", True, "error", True, True]


def test_terminate_fires_link_down_and_unlink_prevents_it(run_lua: RunLua, child: str) -> None:
    """terminate is abnormal (LINK_DOWN); after unlink nothing arrives."""
    out = run_lua("""
      process.set_options{trap_links = true}
      local a = process.spawn_linked("test:child", nil, "park")
      process.terminate(a)
      local ev = process.events():receive()
      local b = process.spawn_linked("test:child", nil, "park")
      process.unlink(b)
      process.terminate(b)
      time.sleep("20ms")
      local r = channel.select{process.events():case_receive(), default = true}
      return {ev.kind, ev.reason, r.default}
    """)
    assert out == ["pid.link.down", "terminated", True]


def test_link_to_self_is_refused(run_lua: RunLua) -> None:
    """A process cannot link to itself."""
    assert "cannot link to itself" in run_lua("return select(2, process.link(process.pid()))")


def test_terminating_self_ends_the_process(node: Node, run_lua: RunLua) -> None:
    """process.terminate(process.pid()) ends the caller at once, even inside pcall."""
    entry = define(node, """return { main = function()
      pcall(process.terminate, process.pid())
      return "not reached"
    end }""")
    with pytest.raises(ProcessExited) as exc:
        node.exec(entry, timeout=5)
    assert exc.value.reason == "terminated"


# ----------------------------------------------------------------------------------------- cancel
def test_cancel_listening_process_gets_event_and_returns(run_lua: RunLua, child: str) -> None:
    """A process that called events() gets CANCEL with the reason; what it returns is its result."""
    out = run_lua("""
      local pid = process.spawn_monitored("test:child", nil, "events")
      time.sleep("5ms")
      process.cancel(pid, "shutdown")
      local ev = process.events():receive()
      return {ev.reason, ev.result.value, ev.result.error}
    """)
    assert out == ["cancelled", "pid.cancel|shutdown|true"]


def test_cancel_non_listening_process_ends_at_once(run_lua: RunLua, child: str) -> None:
    """A process that never asked for events is stopped at once (reason cancelled)."""
    out = run_lua("""
      local pid = process.spawn_monitored("test:child", nil, "park")
      process.cancel(pid)
      local ev = process.events():receive()
      return {ev.reason, ev.result.error}
    """)
    assert out == ["cancelled", "cancelled"]


def test_cancel_grace_then_terminate(clock: FakeClock, fake_node: Node) -> None:
    """A listening process that ignores CANCEL is terminated after its grace period."""
    fake_node.define("test:child", "process.lua", source=CHILD)
    with fake_node.mailbox() as mb:
        pid = fake_node.spawn("test:child", "forever", monitor=mb, options={"cancel_grace": "2s"})
        time.sleep(0.05)
        fake_node.cancel(pid, "stop")
        fake_node.call(lambda ctx: None)  # a barrier: the host has taken the cancel at this time
        clock.advance(1.0)
        with pytest.raises(Timeout):
            mb.wait_exit(pid, 0.2)
        clock.advance(1.5)
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "terminated"
    assert "did not stop within 2s" in ev.result["error"]


# ------------------------------------------------------------------------------------------- exec
def test_exec_returns_result_or_error(run_lua: RunLua, child: str) -> None:
    """process.exec waits for the child: its value, or nil, err."""
    out = run_lua("""
      local v = process.exec("test:child", nil, "value", 42)
      local nv, err = process.exec("test:child", nil, "fail", 3)
      local nv2, err2 = process.exec("test:nothing")
      return {v = v, nv = nv == nil, err = err, err2 = err2}
    """)
    assert out["v"] == 42 and out["nv"] is True
    assert "boom: 3" in out["err"]
    assert "unknown entry 'test:nothing'" in out["err2"]


# ------------------------------------------------------------------------------------------ names
def test_registry_names(run_lua: RunLua, child: str) -> None:
    """register/lookup/unregister; a name held by another process is refused; names go at exit."""
    out = run_lua("""
      local other = process.spawn_monitored("test:child", nil, "wait")
      local ok1 = process.registry.register("svc", other)
      local ok2, e2 = process.registry.register("svc")
      local found = process.registry.lookup("svc") == other
      process.send("svc", "x", "bye")
      process.events():receive()
      local gone, e3 = process.registry.lookup("svc")
      process.registry.register("mine")
      local ok4 = process.registry.unregister("mine")
      local after = process.registry.lookup("mine")
      return {ok1, ok2 == nil, e2, found, gone == nil, e3, ok4, after == nil}
    """)
    assert out[0] is True and out[1] is True
    assert "already registered" in out[2]
    assert out[3] is True and out[4] is True
    assert "no process is registered as 'svc'" in out[5]
    assert out[6] is True and out[7] is True


def test_python_names_and_mailboxes(node: Node, child: str) -> None:
    """Python registers names for mailboxes; Lua replies to them by name."""
    echo = define(node, """return { main = function()
      local m = process.inbox():receive()
      process.send("py-inbox", "reply", {got = m:payload():data()})
    end }""")
    with node.mailbox(name="py-inbox") as mb:
        pid = node.spawn(echo)
        node.send(pid, "q", [1, 2, 3])
        msg = mb.receive(timeout=5)
        assert msg.topic == "reply" and msg.payload == {"got": [1, 2, 3]} and msg.sender == pid
        assert node.lookup("py-inbox") == mb.pid
    assert node.lookup("py-inbox") is None
    with pytest.raises(ProcessError, match="no process is registered as 'ghost'"):
        node.send("ghost", "x")


# ---------------------------------------------------------------------------------------- builder
def test_builder_name_message_options(run_lua: RunLua, child: str) -> None:
    """with_name registers, with_message is the first message, the builder is immutable."""
    out = run_lua("""
      local base = process.with_options({trap_links = false})
      local named = base:with_name("worker-1"):with_message("hello", "first")
      local pid = named:spawn_monitored("test:child", nil, "wait")
      local looked = process.registry.lookup("worker-1") == pid
      local ev = process.events():receive()
      local pid2 = base:spawn("test:child", nil, "value", 1)
      local ok, err = pcall(process.with_options, {bogus = true})
      return {looked, ev.result.value, type(pid2), ok, err}
    """)
    assert out[:4] == [True, "first", "string", False]
    assert "unknown option 'bogus'" in out[4]


def test_builder_exec_and_trap_links_option(run_lua: RunLua, child: str) -> None:
    """with_options{trap_links=true} applies to the child; :exec waits for the result."""
    node_src = """
      local v = process.with_options({trap_links = true}):exec("test:child", nil, "value", "ok")
      return v
    """
    assert run_lua(node_src) == "ok"


# ------------------------------------------------------------------------------ inbox / events
def test_inbox_and_events_are_the_same_channel_every_call(run_lua: RunLua) -> None:
    """process.inbox() and process.events() return one channel each, buffering from spawn."""
    out = run_lua("""
      process.send(process.pid(), "early", 1)
      return {process.inbox() == process.inbox(), process.events() == process.events(),
              process.inbox():receive():topic()}
    """)
    assert out == [True, True, "early"]


# ------------------------------------------------------------------------------------ cross host
def test_cross_host_spawn_monitor_link_exec(node: Node, run_lua: RunLua, child: str) -> None:
    """Spawn, monitor, trap a link, exec and name a process on another host, from Lua."""
    node.add_host("app:other")
    out = run_lua("""
      local h = "app:other"
      local pid = process.spawn_monitored("test:child", h, "value", {deep = {1, 2}})
      local ev = process.events():receive()
      process.set_options{trap_links = true}
      local l = process.spawn_linked("test:child", h, "fail", 9)
      local ev2 = process.events():receive()
      local v = process.exec("test:child", h, "value", "x")
      local n = process.with_options({}):with_name("remote"):spawn("test:child", h, "wait")
      local same = process.registry.lookup("remote") == n
      process.monitor(n)
      process.send("remote", "m", "via name")
      local ev3 = process.events():receive()
      return {pid:match("^{app:other|") ~= nil, ev.result.value.deep[2], ev2.kind, ev2.reason, v, same,
              ev3.result.value}
    """)
    assert out == [True, 2, "pid.link.down", "error", "x", True, "via name"]


def test_cross_host_terminate_and_cancel(node: Node, run_lua: RunLua, child: str) -> None:
    """terminate and cancel reach processes on another host."""
    node.add_host("app:other")
    out = run_lua("""
      local a = process.spawn_monitored("test:child", "app:other", "park")
      process.terminate(a)
      local e1 = process.events():receive()
      local b = process.spawn_monitored("test:child", "app:other", "events")
      time.sleep("10ms")
      process.cancel(b, "why")
      local e2 = process.events():receive()
      return {e1.reason, e2.reason, e2.result.value}
    """)
    assert out == ["terminated", "cancelled", "pid.cancel|why|true"]


def test_python_monitor_of_lua_process(node: Node, child: str) -> None:
    """A Python mailbox monitors a Lua process; monitoring an ended PID gives reason noproc."""
    with node.mailbox() as mb:
        pid = node.spawn(child, "wait")
        mb.monitor(pid)
        node.send(pid, "x", {"v": 1})
        ev = mb.wait_exit(pid, 5)
        assert ev.reason == "normal" and ev.result == {"value": {"v": 1}}
        mb.monitor(pid)
        ev2 = mb.wait_exit(pid, 5)
        assert ev2.reason == "noproc"


def test_python_linked_mailbox_gets_link_down(node: Node, child: str) -> None:
    """A Python mailbox linked to a failing process gets pid.link.down."""
    with node.mailbox() as mb:
        pid = mb.spawn_linked(child, "fail", "L")
        ev = mb.receive_event(5)
    assert ev.kind == "pid.link.down" and ev.sender == pid and "boom: L" in ev.result["error"]


# ----------------------------------------------------------------------------------- statistics
def test_statistics_per_process_and_host(node: Node, child: str) -> None:
    """statistics(): mailbox length, messages in/out, status, memory estimate, host counters."""
    pid = node.spawn(child, "park")
    parked = define(node, "return { main = function() time.sleep('1h') end }")
    sleeper = node.spawn(parked)
    for i in range(5):
        node.send(sleeper, "m", i)
    deadline = time.monotonic() + 5
    while True:
        st = node.statistics(memory=True)
        procs = {p.pid: p for p in st.processes}
        if procs.get(sleeper) and procs[sleeper].mailbox == 5 and procs[pid].status == "waiting":
            break
        assert time.monotonic() < deadline, procs
        time.sleep(0.01)
    assert procs[sleeper].messages_in == 5 and procs[sleeper].status == "waiting"
    assert procs[sleeper].memory is not None and procs[sleeper].memory > 0
    assert procs[sleeper].entry == parked and procs[sleeper].host == "app:processes"
    host = st.hosts["app:processes"]
    assert host.processes == 2 and host.spawned >= 2 and host.delivered >= 5
    assert host.instruction_budget == 100_000_000 and host.heap_limit == 256 * 1024 * 1024


def test_print_and_logger_are_kept_per_process(node: Node) -> None:
    """print and logger lines are kept per process (node.logs), never mixed."""
    entry = define(node, """return { main = function(tag)
      print("hello", tag, 1.5)
      logger:info("started", {tag = tag})
      logger.warn("careful")
      local l = logger:with({component = "x"})
      l:error("bad")
    end }""")
    with node.mailbox() as mb:
        a = node.spawn(entry, "A", monitor=mb)
        b = node.spawn(entry, "B", monitor=mb)
        mb.wait_exit(a, 5)
        mb.wait_exit(b, 5)
    la, lb = node.logs(a), node.logs(b)
    assert la[0] == "hello\tA\t1.5" and lb[0] == "hello\tB\t1.5"
    assert la[1] == "[info] started tag='A'"
    assert la[2] == "[warn] careful"
    assert la[3] == "[error] bad component='x'"


def test_stop_cancels_then_terminates(node: Node, child: str) -> None:
    """node.stop gives listening processes their CANCEL, then ends the hosts."""
    with node.mailbox() as mb:
        pid = node.spawn(child, "events", monitor=mb)
        time.sleep(0.05)
        node.stop(grace=2)
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "cancelled" and ev.result["value"].startswith("pid.cancel|node stopping")
