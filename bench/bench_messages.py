"""Lua-to-Lua message throughput on one host: ping-pong and fan-out 1->1000, instruction budget off and on.

    .venv/bin/python bench/bench_messages.py [--quick]

Definitions (what is counted):

* ping-pong: process `ping` sends to `pong` and waits for its answer, n times; `pong` answers every
  message with the payload it got. 2 messages per round trip. Payload: a 2-key table {i = i, s = "x"}
  (deep-copied on every send, as every table payload is) or an integer (no copy). Written as a user
  would (`process.send(...)` looked up through the sandbox each time, the reply's payload read);
  the "table, lean" row caches `process.send` in a local and does not read the reply.
* fan-out 1->1000: a coordinator sends one message to each of 1000 worker processes, then receives
  their 1000 replies (each worker answers every message with the payload it got); that is one round.
  2000 messages per round. Payload: {i = round, s = "x"}. One untimed warm-up round runs first inside
  Lua; the wall figure includes it and the 1000 spawns.

Rates are messages per second. "wall" is measured in Python around `node.exec` (spawn of the
processes, the run, the exit event: the honest figure); "cpu" divides by the os.clock() time the timed
loop took inside Lua (process CPU time; other threads are idle meanwhile). Each repeat runs in a fresh
node (a fresh Lua state); the median over repeats is the figure (best and worst are shown). The
plain-asyncio and pykka baselines run in the same process, same run, same message pattern.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

BUDGET_ON = 100_000_000

PONG = """
return { main = function()
  local inbox = process.inbox()
  local n = 0
  while true do
    local m = inbox:receive()
    if m:topic() == "stop" then return n end
    n = n + 1
    process.send(m:from(), "pong", m:payload():data())
  end
end }
"""

PING = """
return { main = function(n, kind)
  local pong = process.spawn("b:pong")
  local inbox = process.inbox()
  local t0 = os.clock()
  if kind == "table" then
    for i = 1, n do
      process.send(pong, "ping", { i = i, s = "x" })
      local d = inbox:receive():payload():data()
    end
  elseif kind == "integer" then
    for i = 1, n do
      process.send(pong, "ping", i)
      local d = inbox:receive():payload():data()
    end
  else -- "table, lean": process.send cached in a local, the reply's payload not read
    local send = process.send
    for i = 1, n do
      send(pong, "ping", { i = i, s = "x" })
      local m = inbox:receive()
    end
  end
  local cpu = os.clock() - t0
  process.send(pong, "stop")
  return cpu
end }
"""

WORKER = """
return { main = function()
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    if m:topic() == "stop" then return end
    process.send(m:from(), "r", m:payload():data())
  end
end }
"""

FAN = """
return { main = function(rounds, fan)
  local workers = {}
  for k = 1, fan do workers[k] = process.spawn("b:worker") end
  local inbox = process.inbox()
  local send = process.send
  local function round(r)
    for k = 1, fan do send(workers[k], "w", { i = r, s = "x" }) end
    for k = 1, fan do local m = inbox:receive() end
  end
  round(0)                      -- warm-up: every worker runs to its first receive
  local t0 = os.clock()
  for r = 1, rounds do round(r) end
  local cpu = os.clock() - t0
  for k = 1, fan do send(workers[k], "stop") end
  return cpu
end }
"""


def define(node: Any) -> None:
    node.define("b:pong", "process.lua", source=PONG)
    node.define("b:ping", "process.lua", source=PING)
    node.define("b:worker", "process.lua", source=WORKER)
    node.define("b:fan", "process.lua", source=FAN)


def run_once(node: Any, entry: str, args: tuple[Any, ...], messages: int) -> tuple[float, float]:
    """(wall rate, Lua-CPU rate) of one run of ``entry``."""
    t0 = time.perf_counter()
    cpu = node.exec(entry, *args, timeout=600)
    wall = time.perf_counter() - t0
    return messages / wall, messages / float(cpu)


def pingpong_case(n: int, kind: str = "table") -> tuple[str, str, tuple[Any, ...], int]:
    """The ping-pong case of ``n`` round trips (2n messages) with a payload ``kind``: "table",
    "integer" or "table, lean"; as (name, entry, arguments, messages) for :func:`fresh_node_rates`."""
    return f"ping-pong, {kind} payload", "b:ping", (n, kind), 2 * n


def fanout_case(rounds: int, fan: int = 1000) -> tuple[str, str, tuple[Any, ...], int]:
    """The fan-out 1->``fan`` case of ``rounds`` rounds (2 * fan * rounds messages)."""
    return f"fan-out 1->{fan}, table payload", "b:fan", (rounds, fan), 2 * fan * rounds


def fresh_node_rates(budget: int, cases: list[tuple[str, str, tuple[Any, ...], int]],
                     gc_call: str | None = None) -> dict[str, tuple[float, float]]:
    """Run each case once in a fresh node with the given instruction budget (after a warm-up that
    compiles the entries); {name: (wall rate, Lua-CPU rate)}. ``gc_call`` (Lua source) switches the
    host's collector first."""
    node = common.make_node(budget)
    try:
        if gc_call:
            node.call(lambda ctx: ctx.lua.execute(gc_call.encode()))
        define(node)
        node.exec("b:ping", 2000, "table", timeout=60)   # warm-up (compiles the entries)
        return {name: run_once(node, entry, eargs, msgs) for name, entry, eargs, msgs in cases}
    finally:
        node.stop(grace=1)


def main() -> int:
    def gc_option(ap: Any) -> None:
        ap.add_argument("--gc", default="runtime", metavar="MODE",
                        help="collector of the host's Lua state: 'runtime' (as the scheduler sets it), "
                             "'incremental' or 'generational' (Lua's defaults), or any "
                             "collectgarbage(...) argument list, e.g. '\"generational\", 20, 100'")

    args = common.parse_args(__doc__.splitlines()[0], extra=gc_option)
    quick = args.quick
    gc_call = None
    if args.gc != "runtime":
        gc_call = f'collectgarbage("{args.gc}")' if args.gc.isidentifier() else f"collectgarbage({args.gc})"
    common.header("bench_messages: Lua->Lua messages on one host", quick)
    if gc_call:
        print(f"host collector switched before each run: {gc_call}\n")

    repeat = 1 if quick else 5
    n_pp = 100_000 if quick else 300_000          # round trips (x2 messages)
    fan = 1000
    rounds = 40 if quick else 200                 # fan-out rounds (x2000 messages)
    n_base_async = 50_000 if quick else 150_000   # round trips
    n_base_pykka = 5_000 if quick else 20_000
    fan_base_async = 40 if quick else 150
    fan_base_pykka = 5 if quick else 20

    # ----------------------------------------------------------------- baselines (same run)
    print("baselines ...", flush=True)
    t, _ = common.best_of(lambda: common.baseline_asyncio_pingpong(n_base_async), repeat)
    a_pp = 2 * n_base_async / t
    t, _ = common.best_of(lambda: common.baseline_pykka_pingpong(n_base_pykka), repeat)
    p_pp = 2 * n_base_pykka / t
    t, _ = common.best_of(lambda: common.baseline_asyncio_fanout(fan_base_async, fan), repeat)
    a_fo = 2 * fan * fan_base_async / t
    t, _ = common.best_of(lambda: common.baseline_pykka_fanout(fan_base_pykka, fan), repeat)
    p_fo = 2 * fan * fan_base_pykka / t

    # ----------------------------------------------------------------- wippy
    # Each repeat uses a fresh node (a fresh Lua state): rates differ by up to ~20% from one Lua state
    # to the next (see docs/performance.md), so the median over fresh states is the figure to judge.
    cases = [pingpong_case(n_pp, k) for k in ("table", "integer", "table, lean")]
    cases.append(fanout_case(rounds, fan))
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for rep in range(repeat):
        for budget in (0, BUDGET_ON):
            print(f"wippy, repeat {rep + 1}/{repeat}, instruction budget {common.budget_label(budget)} ...", flush=True)
            for name, (w, c) in fresh_node_rates(budget, cases, gc_call).items():
                walls.setdefault((name, budget), []).append(w)
                cpus.setdefault((name, budget), []).append(c)

    print()
    print(f"ping-pong: {n_pp:,} round trips ({2 * n_pp:,} messages); fan-out: {rounds} rounds x {fan} workers "
          f"({2 * fan * rounds:,} messages); {repeat} repeats, each in a fresh node")
    print()
    rows = []
    for budget in (0, BUDGET_ON):
        for name, *_ in cases:
            w, c = walls[(name, budget)], cpus[(name, budget)]
            a, p = (a_fo, p_fo) if name.startswith("fan") else (a_pp, p_pp)
            med = common.median(w)
            rows.append([name, common.budget_label(budget), common.fmt_rate(med), common.fmt_rate(max(w)),
                         common.fmt_rate(min(w)), common.fmt_rate(common.median(c)),
                         common.fmt_ratio(med, a), common.fmt_ratio(med, p)])
    common.table(["benchmark", "budget", "msgs/s wall, median", "best", "worst", "Lua-CPU median",
                  "vs asyncio", "vs pykka"], rows)

    print("baselines (same run, same pattern; payload a 2-key dict passed by reference, no copy):")
    common.table(["baseline", "msgs/s"], [
        ["asyncio ping-pong (2 tasks, asyncio.Queue)", common.fmt_rate(a_pp)],
        ["pykka ping-pong (2 ThreadingActors, tell with reply-to ref)", common.fmt_rate(p_pp)],
        [f"asyncio fan-out 1->{fan} ({fan_base_async} rounds)", common.fmt_rate(a_fo)],
        [f"pykka fan-out 1->{fan} ({fan_base_pykka} rounds, {fan} threads)", common.fmt_rate(p_fo)],
    ])

    print("targets (issue): ping-pong and fan-out >= 1,000,000 msgs/s with the budget off, >= 700,000 with it on;")
    print("below 300,000 the design is wrong. Median wall figures against the targets:")
    for budget in (0, BUDGET_ON):
        target = 1_000_000 if budget == 0 else 700_000
        for name, *_ in cases:
            med, best = common.median(walls[(name, budget)]), max(walls[(name, budget)])
            if med >= target:
                verdict = "met"
            elif med < 300_000:
                verdict = "NOT met (below 300k: design problem)"
            elif best >= target:
                verdict = "NOT met (the best run reaches it)"
            else:
                verdict = "NOT met"
            print(f"  {name}, budget {common.budget_label(budget)}: {med:,.0f}/s vs {target:,}/s -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
