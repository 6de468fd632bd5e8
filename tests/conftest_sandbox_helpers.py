"""Helpers shared by test_sandbox.py and test_limits.py: a counting neighbour process and a Lua runner."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from wippy.runtime import Event, Node, ProcessExited, Timeout

# A neighbour: counts one step per `time.sleep("1ms")`, answers "count" with its count, "probe" with what
# it sees of the shared library (and prints a line), and "stop" by returning its count.
COUNTER = r"""
return { main = function()
  local data = {}
  for i = 1, 1000 do data[i] = i end
  local n = 0
  local ib = process.inbox()
  while true do
    local r = channel.select{ ib:case_receive(), default = true }
    if r.default then
      time.sleep("1ms")
      n = n + 1
    else
      local m = r.value
      local topic = m:topic()
      if topic == "count" then
        process.send(m:from(), "count", n)
      elseif topic == "probe" then
        local sum = 0
        for i = 1, #data do sum = sum + data[i] end
        print("probe " .. n)
        process.send(m:from(), "probe", {
          n = n, sum = sum, pid = process.pid(),
          rep = string.rep("ab", 2), mrep = ("ab"):rep(2), upper = string.upper("x"),
          fmt = string.format("%d", 7), tostring = tostring(12), print = type(print),
          insert = type(table.insert), send = type(process.send), floor = math.floor(2.5),
          injected = tostring(rawget(_G, "injected")), python = type(python), json = json.encode({1}),
          event = process.event.EXIT, clock = type(os.clock()),
        })
      elseif topic == "stop" then
        return n
      end
    end
  end
end }
"""

# What a healthy neighbour sees (besides its own pid and count).
EXPECTED_VIEW = {
    "sum": 500500, "rep": "abab", "mrep": "abab", "upper": "X", "fmt": "7", "tostring": "12",
    "print": "function", "insert": "function", "send": "function", "floor": 2, "injected": "nil",
    "python": "nil", "json": "[1]", "event": "pid.exit", "clock": "number",
}

_ids = itertools.count(1)
_WHERE = re.compile(r"^[^\n]*?:\d+: ")


def where_stripped(message: str) -> str:
    """An error message without its leading `chunk:line: ` position."""
    return _WHERE.sub("", message, count=1)


def define_body(node: Node, body: str, prefix: str = "sbx") -> str:
    """Define `body` (the inside of `function(...)`) as a fresh process.lua entry; return its ID."""
    entry_id = f"{prefix}:a{next(_ids)}"
    node.define(entry_id, "process.lua", source="return { main = function(...)\n" + body + "\nend }")
    return entry_id


def run(node: Node, body: str, *args: Any, host: str, timeout: float = 5.0) -> Any:
    """Run `body` as a process on `host`; return its result (ProcessExited on an abnormal end)."""
    return node.exec(define_body(node, body), *args, host=host, timeout=timeout)


def run_exit(node: Node, body: str, *args: Any, host: str, timeout: float = 5.0) -> ProcessExited:
    """Run `body` as a process that must end abnormally; return the ProcessExited it raised."""
    with pytest.raises(ProcessExited) as info:
        run(node, body, *args, host=host, timeout=timeout)
    return info.value


def spawn_body(node: Node, body: str, *args: Any, host: str, **kw: Any) -> str:
    """Spawn `body` as a process on `host` (keywords as in Node.spawn); return its PID."""
    return node.spawn(define_body(node, body), *args, host=host, **kw)


class Neighbour:
    """A counting process on a host, started before an attack and checked after it."""

    def __init__(self, node: Node, host: str) -> None:
        self.node = node
        self.host = host
        node.define("sbx:counter", "process.lua", source=COUNTER)
        self.mb = node.mailbox()
        self.pid = node.spawn("sbx:counter", host=host, monitor=self.mb)
        self.wait_advanced(0)

    def _ask(self, topic: str, timeout: float) -> Any:
        self.mb.send(self.pid, topic)
        try:
            msg = self.mb.receive(timeout)
        except Timeout:
            raise AssertionError(
                f"neighbour {self.pid} stopped answering '{topic}' (exit: {self.node.exit_reason(self.pid)})"
            ) from None
        assert msg.topic == topic
        return msg.payload

    def count(self, timeout: float = 3.0) -> int:
        """The neighbour's count now."""
        n = self._ask("count", timeout)
        assert isinstance(n, int)
        return n

    def probe(self, timeout: float = 3.0) -> dict[str, Any]:
        """What the neighbour sees of the shared library, its state and itself."""
        view = self._ask("probe", timeout)
        assert isinstance(view, dict)
        return view

    def wait_advanced(self, before: int, timeout: float = 3.0) -> int:
        """Wait until the count is above `before`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count(timeout)
            if n > before:
                return n
            if time.monotonic() > deadline:
                raise AssertionError(f"neighbour {self.pid} stopped counting at {n}")
            time.sleep(0.002)

    def check(self, before: int, timeout: float = 3.0) -> dict[str, Any]:
        """Assert the neighbour counted on from `before`, answers, and sees the original library."""
        self.wait_advanced(before, timeout)
        view = self.probe(timeout)
        assert view["n"] > before, f"neighbour count went from {before} to {view['n']}"
        assert view["pid"] == self.pid, f"neighbour {self.pid} sees process.pid() = {view['pid']}"
        seen = {k: view.get(k) for k in EXPECTED_VIEW}
        assert seen == EXPECTED_VIEW, f"neighbour sees {seen}"
        assert f"probe {view['n']}" in self.node.logs(self.pid), "neighbour's print did not reach its log"
        return view

    def stop(self, timeout: float = 3.0) -> Event:
        """Ask the neighbour to return; assert it ended normally; close its mailbox."""
        try:
            self.mb.send(self.pid, "stop")
            ev = self.mb.wait_exit(self.pid, timeout)
        finally:
            self.mb.close()
        assert ev.reason == "normal", ev
        return ev
