"""process.upgrade and OUTDATED: new code for a running process, keeping its identity."""

from __future__ import annotations

import pytest
from wippy.runtime import Node

V1 = """
return { main = function(tag)
  local events = process.events()
  local ib = process.inbox()
  while true do
    local r = channel.select{events:case_receive(), ib:case_receive()}
    if r.channel == events and r.value.kind == process.event.OUTDATED then
      process.upgrade(nil, tag .. "+v1-state")
    elseif r.channel == ib then
      process.send(r.value:from(), "v1", r.value:payload():data())
    end
  end
end }
"""

V2 = """
return { main = function(state)
  local ib = process.inbox()
  while true do
    local m = ib:receive()
    if m:topic() == "stop" then return "v2 stopped with " .. state end
    process.send(m:from(), "v2", state)
  end
end }
"""


def test_outdated_then_upgrade_keeps_pid_inbox_monitors_and_names(node: Node) -> None:
    """An upgradable process hears OUTDATED, upgrades, and keeps PID, name, monitors and queued messages."""
    node.define("app:svc", "process.lua", source=V1)
    with node.mailbox() as mb:
        pid = node.spawn("app:svc", "t", monitor=mb, name="svc", options={"upgradable": True})
        mb.send("svc", "ping", 1)
        assert mb.receive(timeout=5).topic == "v1"
        node.define("app:svc", "process.lua", source=V2)   # a new version of the entry
        mb.send("svc", "ping", 2)                           # v1 or v2 answers, in order, nothing lost
        first = mb.receive(timeout=5)
        mb.send("svc", "ping", 3)
        second = mb.receive(timeout=5)
        assert second.topic == "v2" and second.payload == "t+v1-state" and second.sender == pid
        assert first.topic in ("v1", "v2")
        assert node.lookup("svc") == pid
        mb.send("svc", "stop")
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "normal" and ev.result["value"] == "v2 stopped with t+v1-state"


def test_processes_that_are_not_upgradable_hear_nothing(node: Node) -> None:
    """Without upgradable = true a changed entry sends no OUTDATED; new spawns use the new code."""
    node.define("app:plain", "process.lua", source="""
      return { main = function()
        local r = channel.select{process.events():case_receive(), time.after("300ms"):case_receive()}
        return r.value and r.value.kind or "nothing"
      end }""")
    with node.mailbox() as mb:
        pid = node.spawn("app:plain", monitor=mb)
        node.define("app:plain", "process.lua", source="return { main = function() return 'new code' end }")
        assert mb.wait_exit(pid, 5).result["value"] == "nothing"
    assert node.exec("app:plain", timeout=5) == "new code"


@pytest.mark.parametrize(("code", "error"), [
    ("process.upgrade('app:none')", "process.upgrade: unknown entry 'app:none'"),
    ("process.upgrade('app:fn')", "is a function.lua entry, not process.lua"),
    ("coroutine.wrap(function() process.upgrade() end)()", "not from inside a coroutine"),
])
def test_upgrade_errors(node: Node, code: str, error: str) -> None:
    """A bad upgrade raises in the process, with a message saying why."""
    node.define("app:fn", "function.lua", source="return { main = function() end }")
    node.define("app:bad", "process.lua", source=f"return {{ main = function() {code} end }}")
    with node.mailbox() as mb:
        pid = node.spawn("app:bad", monitor=mb)
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "error" and error in ev.result["error"]
