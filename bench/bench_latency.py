"""Latency between Python and a Lua process: Python -> Lua send, Lua -> Python reply, and the round trip.

    .venv/bin/python bench/bench_latency.py [--quick]

What is measured: a Python mailbox (`node.mailbox()`) sends {i = i, s = "x"} to an echo process on the
default host and blocks in `mailbox.receive()` until the echo's reply arrives; one sample is the time
from just before `send` to just after `receive` returns (time.perf_counter_ns), N samples after a
warm-up, one at a time (no pipelining), taken in interleaved rounds with the baselines. The host is
otherwise idle, so every sample includes waking the sleeping host thread and then the waiting Python
thread. On this 2-vCPU virtual machine a round trip whose wake-ups cross to the other vCPU costs
25-30 µs more than one that stays on the same vCPU, so the figures move between two levels from round
to round (pin the whole process with `taskset -c 0` to see the same-vCPU level alone).

The one-way split comes from a second run whose echo stamps the arrival time with `time.now()`
(Python's time.time_ns, read through the runtime's clock; the same clock Python stamps the send and
the receipt with): send = arrival - sent, reply = received - arrival. The stamping adds a Python
callback inside the echo, so the split's round trip is slightly longer than the plain one.

Baselines, same run: a round trip into an asyncio event loop on another thread
(`loop.call_soon_threadsafe(queue.put_nowait, msg)`, the echo task answers through a
queue.SimpleQueue the caller blocks on: the same shape as a wippy Mailbox), and pykka `ask()` to an
echo ThreadingActor.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

BUDGET_ON = 100_000_000

ECHO = """
return { main = function(stamp)
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    if m:topic() == "stop" then return end
    local d = m:payload():data()
    if stamp then d.arrived = time.now():unix_nano() end
    process.send(m:from(), "echo", d)
  end
end }
"""


class WippyEcho:
    """A node (own host thread) with an echo process and a Python mailbox talking to it."""

    def __init__(self, budget: int, stamp: bool) -> None:
        self.node = common.make_node(budget)
        self.node.define("b:echo", "process.lua", source=ECHO)
        self.mb = self.node.mailbox()
        self.pid = self.node.spawn("b:echo", stamp)
        self.stamp = stamp

    def round_trips(self, count: int, warmup: int, rtt: list[int], send_leg: list[int],
                    reply_leg: list[int]) -> None:
        mb, pid = self.mb, self.pid
        for i in range(warmup + count):
            sent_wall = time.time_ns()
            t0 = time.perf_counter_ns()
            mb.send(pid, "ping", {"i": i, "s": "x"})
            msg = mb.receive(timeout=10)
            dt = time.perf_counter_ns() - t0
            got_wall = time.time_ns()
            if i < warmup:
                continue
            rtt.append(dt)
            if self.stamp:
                arrived = int(msg.payload["arrived"])
                send_leg.append(arrived - sent_wall)
                reply_leg.append(got_wall - arrived)

    def close(self) -> None:
        self.mb.send(self.pid, "stop", None)
        self.mb.close()
        self.node.stop(grace=1)


def row(label: str, samples_ns: list[int]) -> list[str]:
    s = common.summarize_us(samples_ns)
    return [label, f"{s['p50']:.1f}", f"{s['p90']:.1f}", f"{s['p99']:.1f}", f"{s['max']:.0f}", f"{s['mean']:.1f}"]


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_latency: Python <-> Lua round trips", quick)
    samples = 1000 if quick else 5000
    warmup = 200 if quick else 500

    # Everything stays up for the whole run and the measurements are interleaved in rounds, so slow
    # and fast phases of this (shared, virtual) machine hit every variant alike.
    rounds = 4 if quick else 25
    per = samples // rounds
    names = [(0, False), (BUDGET_ON, False), (0, True), (BUDGET_ON, True)]
    wippy = {k: WippyEcho(*k) for k in names}
    aecho, pecho = common.AsyncioEcho(), common.PykkaEcho()
    legs: dict[tuple[int, bool], tuple[list[int], list[int], list[int]]] = {k: ([], [], []) for k in names}
    a: list[int] = []
    p: list[int] = []
    try:
        for k, w in wippy.items():
            w.round_trips(0, warmup, *legs[k])
        aecho.round_trips(0, warmup)
        pecho.round_trips(0, warmup)
        for r in range(rounds):
            print(f"round {r + 1}/{rounds} ...", flush=True)
            a += aecho.round_trips(per)
            p += pecho.round_trips(per)
            for k, w in wippy.items():
                w.round_trips(per, 0, *legs[k])
    finally:
        for w in wippy.values():
            w.close()
        aecho.close()
        pecho.close()

    rows = []
    split_rows = []
    for budget in (0, BUDGET_ON):
        lab = common.budget_label(budget)
        rows.append(row(f"wippy round trip, budget {lab}", legs[(budget, False)][0]))
        srtt, send_leg, reply_leg = legs[(budget, True)]
        split_rows.append(row(f"Python -> Lua send, budget {lab}", send_leg))
        split_rows.append(row(f"Lua -> Python reply, budget {lab}", reply_leg))
        split_rows.append(row(f"(round trip of the stamped run, budget {lab})", srtt))
    rows.append(row("asyncio loop on another thread (call_soon_threadsafe)", a))
    rows.append(row("pykka ask() to a ThreadingActor", p))

    print()
    print(f"{per * rounds:,} samples per row ({rounds} interleaved rounds of {per:,}) after {warmup:,} warm-up "
          "round trips; microseconds")
    common.table(["round trip", "p50 µs", "p90 µs", "p99 µs", "max µs", "mean µs"], rows)
    print("one-way legs (time.time_ns stamps, same clock on both sides):")
    common.table(["leg", "p50 µs", "p90 µs", "p99 µs", "max µs", "mean µs"], split_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
