"""What the event bus (node.events) costs Lua-to-Lua messaging: ping-pong with tracing off and on.

    .venv/bin/python bench/bench_trace.py [--quick]

Definitions (what is counted):

* ping-pong: as in bench_messages.py, process `ping` sends to `pong` and waits for its answer, n times,
  with a 2-key table payload {i = i, s = "x"}; 2 messages per round trip; instruction budget off.
* rows: no subscriber at all; a subscriber to exits, tree changes and commits only (the hosts do not
  trace: nothing is recorded in Lua); a subscriber to "send" events whose buffer (default maxlen 10 000)
  a Python thread drains as fast as it can (every send is recorded in Lua with its size and preview,
  handed to Python once per run step, built into a RuntimeEvent and buffered); a subscriber to "send"
  events of one unrelated PID (tracing is on, the Lua side filters every send out).
* for the draining subscriber: events it received and events dropped (its buffer was full when the
  event came, or the Lua side's per-step cap of 50 000 records was reached). The runtime never waits
  for the subscriber, so drops are the price of a slow reader, not a slower runtime.

Rates are messages per second, wall time around `node.exec` (spawns, the run, the exit event). Each
repeat runs in a fresh node; the median over repeats is the figure (best and worst shown). The plain
asyncio baseline runs in the same process and the same run.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_messages
import common


class Drainer:
    """A thread that drains a subscription as fast as it can and counts what it took."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sub.wait(0.05):
                self.received += len(self.sub.drain())
        self.received += len(self.sub.drain())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run_case(node: Any, case: str, n: int) -> tuple[float, int, int]:
    """(wall msg/s, events received, events dropped) of one ping-pong run under ``case``."""
    sub = drainer = None
    if case == "exits, tree, commits":
        sub = node.events.subscribe(["exit", "tree", "registry"])
    elif case == "send, drained by a thread":
        sub = node.events.subscribe(["send"])
        drainer = Drainer(sub)
    elif case == "send of one unrelated PID":
        sub = node.events.subscribe(["send"], pids=["{app:processes|0xfffff}"])
    for _ in range(2):   # the trace switch is a queued item: let the host take it before timing
        node.call(lambda ctx: None)
    try:
        t0 = time.perf_counter()
        node.exec("b:ping", n, "table", timeout=600)
        wall = time.perf_counter() - t0
    finally:
        if drainer is not None:
            time.sleep(0.1)
            drainer.stop()
        received = drainer.received if drainer is not None else 0
        dropped = sub.dropped if sub is not None else 0
        if sub is not None:
            sub.close()
    return 2 * n / wall, received, dropped


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_trace: ping-pong with the event bus off and on", quick)
    repeat = 1 if quick else 5
    n = 100_000 if quick else 300_000          # round trips (x2 messages)
    n_base = 50_000 if quick else 150_000

    print("baseline ...", flush=True)
    t, _ = common.best_of(lambda: common.baseline_asyncio_pingpong(n_base), repeat)
    a_pp = 2 * n_base / t

    cases = ["no subscriber", "exits, tree, commits", "send, drained by a thread", "send of one unrelated PID"]
    rates: dict[str, list[float]] = {c: [] for c in cases}
    got: dict[str, list[tuple[int, int]]] = {c: [] for c in cases}
    for rep in range(repeat):
        print(f"wippy, repeat {rep + 1}/{repeat} ...", flush=True)
        node = common.make_node(0)
        try:
            bench_messages.define(node)
            node.exec("b:ping", 2000, "table", timeout=60)   # warm-up (compiles the entries)
            for case in cases:
                rate, received, dropped = run_case(node, case, n)
                rates[case].append(rate)
                got[case].append((received, dropped))
        finally:
            node.stop(grace=1)

    print()
    print(f"ping-pong, table payload, budget off: {n:,} round trips ({2 * n:,} messages); {repeat} repeats, "
          "each in a fresh node")
    print()
    off = common.median(rates["no subscriber"])
    rows = []
    for case in cases:
        r = rates[case]
        med = common.median(r)
        events = ""
        if case == "send, drained by a thread":
            rec = common.median([float(x[0]) for x in got[case]])
            drop = common.median([float(x[1]) for x in got[case]])
            events = f"{rec:,.0f} received, {drop:,.0f} dropped"
        rows.append([case, common.fmt_rate(med), common.fmt_rate(max(r)), common.fmt_rate(min(r)),
                     common.fmt_ratio(med, off), common.fmt_ratio(med, a_pp), events])
    common.table(["subscriber", "msgs/s wall, median", "best", "worst", "vs no subscriber", "vs asyncio",
                  "events (median)"], rows)
    print("baseline (same run, same pattern; payload a 2-key dict passed by reference, no copy):")
    common.table(["baseline", "msgs/s"], [["asyncio ping-pong (2 tasks, asyncio.Queue)", common.fmt_rate(a_pp)]])
    print("target (issue): ping-pong >= 1,000,000 msgs/s with the budget off and nobody tracing sends;")
    print(f"  no subscriber: {off:,.0f}/s; exits, tree, commits only: "
          f"{common.median(rates['exits, tree, commits']):,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
