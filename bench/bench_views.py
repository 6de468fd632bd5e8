"""What the live views cost a busy notebook: a trivial cell's latency with views open vs without.

Starts the `wippy` kernel with jupyter_client (as bench_cells.py does), puts two ping-pong pairs under a
supervisor on a host without instruction budget (well over 100 k messages/s), then, through a real
client over ZeroMQ:

1. no view open: the node's message rate, and N executes of `1 + 1` (p50/p90/p99 of the round trip);
2. TreeView (the supervisor) + ProcessTableView open: the same figures;
3. and a MailboxView of one ponger (the busiest PID): the same, plus the comm messages the views send
   per second with no cell running, and their pumps' counters;
4. the views closed again: the same figures as 1 (how much of a difference is the machine's noise).

The MailboxView subscribes to its PID's sends, so the hosts record that PID's sends for the event bus:
the message rate with views open includes that cost. Figures, never a verdict: it exits 0.
Run: .venv/bin/python bench/bench_views.py [--quick]
"""

from __future__ import annotations

import os
import queue
import statistics
import sys
import tempfile
import time
from typing import Any

from jupyter_client.manager import start_new_kernel

HOST = 'node.add_host("bench:fast", instruction_budget=0)'

LOAD = """%%registry
namespace: bench
entries:
  - name: pong
    kind: process.lua
    source: |
      return { main = function()
        local inbox = process.inbox()
        while true do
          local m = inbox:receive()
          process.send(m:from(), "pong", m:payload():data())
        end
      end }
  - name: ping
    kind: process.lua
    source: |
      return { main = function(peer)
        local inbox, send = process.inbox(), process.send
        local pong = process.registry.lookup(peer)
        while not pong do time.sleep("1ms"); pong = process.registry.lookup(peer) end
        local i = 0
        while true do
          i = i + 1
          send(pong, "ping", i)
          inbox:receive()
        end
      end }
  - name: load
    kind: process.supervisor
    strategy: one_for_one
    lifecycle: {auto_start: true}
    children:
      - {id: pong-1, process: bench:pong, host: bench:fast, name: pong-1}
      - {id: ping-1, process: bench:ping, host: bench:fast, input: [pong-1]}
      - {id: pong-2, process: bench:pong, host: bench:fast, name: pong-2}
      - {id: ping-2, process: bench:ping, host: bench:fast, input: [pong-2]}
"""

RATE = """
import time as _t
_h = lambda: node.statistics(processes=False).hosts["bench:fast"].delivered
_a = _h(); _t0 = _t.perf_counter(); _t.sleep(1.0); print(round((_h() - _a) / (_t.perf_counter() - _t0)))
"""

OPEN_TREE_PS = """
from wippy.magics.views import MailboxView, ProcessTableView, TreeView
_views = [TreeView(node, "bench:load"), ProcessTableView(node)]
for _v in _views:
    display(_v)
"""

OPEN_MAILBOX = """
_views.append(MailboxView(node, "pong-1"))
display(_views[-1])
"""

CLOSE = """
for _v in _views:
    _v.close()
"""

COUNTERS = """
for _v in _views:
    print(type(_v).__name__, "steps", _v.pump.steps, "updates", _v.pump.updates, "errors", _v.pump.error_count,
          "dropped", getattr(_v, "_dropped", 0) + (_v._sub.dropped if getattr(_v, "_sub", None) else 0))
"""


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(kc: Any, code: str) -> str:
    out: list[str] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=60, output_hook=keep)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def measure(kc: Any, n: int) -> tuple[list[float], int]:
    """Latencies (ms) of n trivial cells, and the comm messages seen meanwhile."""
    comms = 0

    def hook(msg: dict[str, Any]) -> None:
        nonlocal comms
        if msg["msg_type"] == "comm_msg":
            comms += 1

    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = kc.execute_interactive("1 + 1", timeout=30, output_hook=hook)
        out.append((time.perf_counter() - t0) * 1000)
        assert reply["content"]["status"] == "ok", reply["content"]
    return out, comms


def drain_iopub(kc: Any, seconds: float) -> int:
    """Read iopub for `seconds` (no cell running): the views' comm messages."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = kc.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            continue
        n += msg["msg_type"] == "comm_msg"
    return n


def row(name: str, xs: list[float], rate: int) -> str:
    return (f"{name:28} {percentile(xs, 0.5):7.2f} {percentile(xs, 0.9):7.2f} {percentile(xs, 0.99):7.2f} "
            f"{statistics.mean(xs):7.2f} {rate / 1000:10.0f}k")


def main() -> None:
    n = 50 if "--quick" in sys.argv else 200
    env = {**os.environ, "WIPPY_DATA_DIR": tempfile.mkdtemp(prefix="bench-views-")}
    km, kc = start_new_kernel(kernel_name="wippy", env=env)
    phases: list[tuple[str, list[float], int]] = []
    try:
        run(kc, HOST)
        run(kc, LOAD)
        time.sleep(0.5)
        idle_comms = 0
        counters = ""
        for name, opener in (("no view open", None), ("tree + ps --live", OPEN_TREE_PS),
                             ("tree + ps --live + mailbox", OPEN_MAILBOX), ("views closed again", CLOSE)):
            if opener == CLOSE:
                idle_comms = drain_iopub(kc, 2.0)
                counters = run(kc, COUNTERS)
            if opener is not None:
                run(kc, opener)
                time.sleep(0.5)
            measure(kc, 10)  # warm-up
            rate = int(run(kc, RATE).split()[-1])
            lat, _ = measure(kc, n)
            phases.append((name, lat, rate))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(f"a trivial cell (`1 + 1`) through jupyter_client, {n} executes each (ms); node: 2 ping-pong pairs")
    print(f"{'':28} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7} {'msg/s':>11}")
    for name, lat, rate in phases:
        print(row(name, lat, rate))
    _, base, base_rate = phases[0]
    for name, lat, rate in phases[1:]:
        print(f"{name}: p50 {percentile(lat, 0.5) - percentile(base, 0.5):+.2f} ms, "
              f"p99 {percentile(lat, 0.99) - percentile(base, 0.99):+.2f} ms, "
              f"messages/s {100 * (rate - base_rate) / max(base_rate, 1):+.0f}% against no view")
    print(f"comm messages to the front end with the three views open, no cell running: {idle_comms / 2:.1f}/s")
    print(counters.rstrip())

if __name__ == "__main__":
    main()
