"""Security (issue 12): Lua ping-pong with no policies (open) and with 10 policies (strict); bytes per process.

    .venv/bin/python bench/bench_security.py [--quick]

What is measured:

* ping-pong: process `ping` sends to `pong` and waits for its answer, n times; `pong` answers every
  message (as bench_messages.py's "table payload" case: 2 messages per round trip, payload {i = i, s = "x"}).
  OPEN: a node with no security.policy entry (every check is skipped). STRICT: the same node shape with 10
  security.policy entries: allows of process.send on `*` and on `app:*` PIDs, and denies and allows on other
  actions and resources (registry.get, registry.apply, funcs.call, process.terminate, ...), and the notebook
  narrowed (node.whoami) to the groups of all ten, so the processes it spawns carry a real scope and every
  send is decided by the engine (then cached per host). Rounds are interleaved: open, strict, open, strict...
  each in a fresh node; the median of each is the figure, and the ratio strict/open is printed (target >= 90%).
* bytes per process: the Lua heap growth of N idle processes (bench_spawn.py's method: spawn N parked
  processes, full collection, growth / N), open and strict in the same run. Every process record carries
  `sec` (a context key, a string shared by all processes of one context), so the field costs one hash slot
  per record; open and strict differ only by what the key is.

Rates are messages per second, wall time around `node.exec`. Figures only, no verdicts gate anything.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PONG = """
return { main = function()
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    if m:topic() == "stop" then return end
    process.send(m:from(), "pong", m:payload():data())
  end
end }
"""

PING = """
return { main = function(n)
  local pong = process.spawn("b:pong")
  local inbox = process.inbox()
  local t0 = os.clock()
  for i = 1, n do
    process.send(pong, "ping", { i = i, s = "x" })
    local d = inbox:receive():payload():data()
  end
  local cpu = os.clock() - t0
  process.send(pong, "stop")
  return cpu
end }
"""

IDLE = 'return { main = function() process.inbox():receive() end }'
MARK = "return { main = function(to) process.send(to, 'up', true) end }"
SPAWNER = """
return { main = function(n)
  local spawn = process.spawn
  for i = 1, n do spawn("b:idle") end
  spawn("b:mark", nil, process.pid())
  process.inbox():receive()
  return true
end }
"""

GROUPS = ["bench"]


def policies() -> list[Any]:
    """Ten security.policy entries, all in group "bench": allows that match the sends, others that the
    engine must still look at."""
    from wippy.runtime.entries import Entry

    def pol(pid: str, actions: list[str], resources: list[str], effect: str = "allow") -> Entry:
        return Entry(pid, "security.policy", {}, {"groups": GROUPS,
                                                   "policy": {"actions": actions, "resources": resources,
                                                              "effect": effect}})
    return [
        pol("sec:spawn", ["process.spawn"], ["b:*"]),
        pol("sec:send_any", ["process.send"], ["*"]),
        pol("sec:send_app", ["process.send"], ["app:*"]),
        pol("sec:no_send_x", ["process.send"], ["x:nowhere"], "deny"),
        pol("sec:read", ["registry.get", "registry.find"], ["app.config:*"]),
        pol("sec:no_secret", ["registry.get", "registry.find"], ["app.config:secret"], "deny"),
        pol("sec:write", ["registry.apply"], ["app.config:*"]),
        pol("sec:call", ["funcs.call"], ["app.fn:*"]),
        pol("sec:no_kill", ["process.terminate", "process.cancel"], ["*"], "deny"),
        pol("sec:wf", ["workflow.start"], ["app.wf:*"]),
    ]


def narrow(node: Any, strict: bool) -> None:
    """After the entries are defined: the notebook (and so what it spawns) runs as actor "bench" with the
    scope of the ten policies."""
    if strict:
        node.whoami("bench", groups=GROUPS)


def make(strict: bool, heap_limit: int | None = None) -> Any:
    node = common.make_node(0, heap_limit=heap_limit)
    if strict:
        node.apply(policies())
        assert node.security.mode == "strict", node.security.mode
    else:
        assert node.security.mode == "open", node.security.mode
    return node


def pingpong(strict: bool, n: int) -> tuple[float, float]:
    """(wall rate, Lua-CPU rate) of n round trips in a fresh node."""
    node = make(strict)
    try:
        node.define("b:pong", "process.lua", source=PONG)
        node.define("b:ping", "process.lua", source=PING)
        narrow(node, strict)
        node.exec("b:ping", 2000, timeout=60)   # warm-up: compiles; fills the decision cache
        t0 = time.perf_counter()
        cpu = node.exec("b:ping", n, timeout=600)
        wall = time.perf_counter() - t0
        return 2 * n / wall, 2 * n / float(cpu)
    finally:
        node.stop(grace=1)


def bytes_per_process(strict: bool, n: int) -> float:
    node = make(strict, heap_limit=max(512 << 20, n * 8192))

    def mem() -> int:
        return int(node.call(lambda ctx: ctx.lua.get_memory_used()))

    try:
        node.define("b:idle", "process.lua", source=IDLE)
        node.define("b:mark", "process.lua", source=MARK)
        node.define("b:spawner", "process.lua", source=SPAWNER)
        narrow(node, strict)
        node.exec("b:spawner", 1, timeout=60)
        common.lua_gc(node)
        m0 = mem()
        node.exec("b:spawner", n, timeout=600)
        common.lua_gc(node)
        return (mem() - m0) / n
    finally:
        node.stop(grace=1)


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_security: ping-pong open vs strict (10 policies); bytes per process", quick)
    rounds = 2 if quick else 5
    n = 50_000 if quick else 200_000
    n_idle = 10_000 if quick else 50_000

    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for strict in (False, True):
            print(f"round {r + 1}/{rounds}, {'strict' if strict else 'open'} ...", flush=True)
            w, c = pingpong(strict, n)
            walls[strict].append(w)
            cpus[strict].append(c)
    mem: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for strict in (False, True):
            print(f"bytes per process, round {r + 1}/{rounds}, {'strict' if strict else 'open'} ...", flush=True)
            mem[strict].append(bytes_per_process(strict, n_idle))

    print()
    print(f"ping-pong, table payload, {n:,} round trips ({2 * n:,} messages), median of {rounds} fresh nodes each:")
    rows = []
    for strict in (False, True):
        rows.append(["strict, 10 policies" if strict else "open, no policies",
                     common.fmt_rate(common.median(walls[strict])), common.fmt_rate(max(walls[strict])),
                     common.fmt_rate(common.median(cpus[strict]))])
    common.table(["mode", "msgs/s wall (median)", "best", "msgs/s Lua CPU (median)"], rows)
    ratio_w = common.median(walls[True]) / common.median(walls[False])
    ratio_c = common.median(cpus[True]) / common.median(cpus[False])
    print(f"strict/open: wall {ratio_w * 100:.0f}%, Lua CPU {ratio_c * 100:.0f}% (target >= 90%)")
    print()
    print(f"Lua heap per idle process ({n_idle:,} processes, median of {rounds} fresh nodes each):")
    common.table(["mode", "Lua heap B/process"],
                 [["open" if not s else "strict", f"{common.median(mem[s]):,.0f}"] for s in (False, True)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
