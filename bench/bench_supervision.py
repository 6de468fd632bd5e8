"""Supervision: how long from a crash to the restarted child running, and how fast a supervisor starts.

    .venv/bin/python bench/bench_supervision.py [--quick]

What is measured:
* crash -> running again (one_for_one): a Python mailbox sends `crash` to a supervised worker (found by
  its registered name) and waits for the restarted worker's `started` message (each worker sends one to
  the mailbox when it starts). One sample per crash, the supervisor's intensity set high enough never to
  trip. This is the path a user meets: the exit travels host -> supervision thread (EXIT event), the
  supervision thread decides and spawns, the host runs the new process.
* one_for_all with 10 children: the same, until all 10 restarted workers said `started`.
* supervisor start with N children: `node.supervision.start({...})` wall time (it returns once every
  child ran its first steps), as children started per second.

Baseline, same run: an asyncio "supervisor" task that awaits a worker task, and when it raises creates
a new one, which puts `started` on a queue.SimpleQueue the caller blocks on (the same shape: a thread
outside the loop sends the crash and waits for the restart).
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

WORKER = """
return { main = function(name, probe)
  process.send(probe, "started", name)
  local inbox = process.inbox()
  while true do
    local msg = inbox:receive()
    if msg:topic() == "crash" then error("crash") end
  end
end }
"""


def _wait(mb: Any, n: int) -> None:
    for _ in range(n):
        mb.receive(timeout=10)


def bench_restart(node: Any, samples: int) -> list[int]:
    with node.mailbox() as mb:
        node.supervision.start({"id": "b1", "strategy": "one_for_one", "max_restarts": 10 ** 9,
                                "period": "1s", "children": [
                                    {"id": "w", "process": "bench:worker", "input": ["w", mb.pid], "name": "bw"}]})
        _wait(mb, 1)
        out = []
        for _ in range(samples):
            t0 = time.perf_counter_ns()
            node.send("bw", "crash")
            mb.receive(timeout=10)
            out.append(time.perf_counter_ns() - t0)
        node.supervision.stop("b1")
    return out


def bench_all(node: Any, samples: int, width: int = 10) -> list[int]:
    with node.mailbox() as mb:
        children = [{"id": f"w{i}", "process": "bench:worker", "input": [f"w{i}", mb.pid], "name": f"ba{i}"}
                    for i in range(width)]
        node.supervision.start({"id": "b2", "strategy": "one_for_all", "max_restarts": 10 ** 9,
                                "period": "1s", "children": children})
        _wait(mb, width)
        out = []
        for _ in range(samples):
            t0 = time.perf_counter_ns()
            node.send("ba3", "crash")
            _wait(mb, width)
            out.append(time.perf_counter_ns() - t0)
        node.supervision.stop("b2")
    return out


def bench_start(node: Any, n: int) -> float:
    with node.mailbox() as mb:
        children = [{"id": f"w{i}", "process": "bench:worker", "input": [f"w{i}", mb.pid]} for i in range(n)]
        t0 = time.perf_counter()
        node.supervision.start({"id": "b3", "children": children})
        dt = time.perf_counter() - t0
        _wait(mb, n)
        node.supervision.stop("b3")
    return n / dt


def baseline_asyncio(samples: int) -> list[int]:
    loop = asyncio.new_event_loop()
    started: queue.SimpleQueue[str] = queue.SimpleQueue()
    crash: dict[str, asyncio.Event] = {}

    async def worker() -> None:
        ev = asyncio.Event()
        crash["w"] = ev
        started.put("w")
        await ev.wait()
        raise RuntimeError("crash")

    async def supervisor() -> None:
        while True:
            try:
                await asyncio.create_task(worker())
            except RuntimeError:
                continue

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    fut = asyncio.run_coroutine_threadsafe(supervisor(), loop)
    started.get(timeout=10)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        loop.call_soon_threadsafe(crash["w"].set)
        started.get(timeout=10)
        out.append(time.perf_counter_ns() - t0)
    fut.cancel()
    time.sleep(0.05)   # let the loop run the cancellation before it stops
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    common.header("supervision: crash -> restarted, supervisor start", args.quick)
    samples = 200 if args.quick else 2000
    from wippy.runtime import Node

    node = Node(output=None).start()
    node.define("bench:worker", "process.lua", source=WORKER)
    try:
        restart = common.summarize_us(bench_restart(node, samples))
        every = common.summarize_us(bench_all(node, max(20, samples // 10)))
        starts = [bench_start(node, 1000 if args.quick else 5000) for _ in range(1 if args.quick else 3)]
    finally:
        node.stop(grace=1.0)
    base = common.summarize_us(baseline_asyncio(samples))
    def row(what: str, s: dict[str, float]) -> list[str]:
        return [what, f"{s['p50']:.0f}", f"{s['p90']:.0f}", f"{s['p99']:.0f}"]

    common.table(["what", "p50 µs", "p90 µs", "p99 µs"], [
        row("crash -> restarted (one_for_one)", restart),
        row("crash -> 10 restarted (one_for_all)", every),
        row("asyncio task restart (baseline)", base),
    ])
    print(f"supervisor start: {common.fmt_rate(max(starts))} children (best of {len(starts)}; "
          f"{1000 if args.quick else 5000} children, start returns once they ran)")


if __name__ == "__main__":
    main()
