"""Two hosts (two threads, two Lua states) on this machine's cores against one host: do they run in parallel?

    .venv/bin/python bench/bench_hosts.py [--quick]

What is measured (instruction budget off, table payload {i = i, s = "x"}):

* two hosts: one ping-pong pair on `app:processes` and one on `app:h2` (each ping spawns its pong on
  its own host), started together from Python and waited for together; aggregate messages/s = all
  messages of both pairs / the wall time until both have exited.
* one host: the same two pairs, both on `app:processes` (the same total work, one thread).
* speed-up = one-host wall / two-host wall. 2.0 would be perfect parallelism on two cores.
* CPU: time.process_time() across the run (all threads of this Python process) divided by the wall
  time (about 2.0 means both cores were busy), and each host thread's own CPU time from
  /proc/self/task/<tid>/stat (10 ms resolution).
* extra: one pair split across the two hosts, where every message crosses Python.
* reference: the same single pair run in two separate OS processes at once, against one alone. This
  is what the machine itself gives two busy processes (no shared GIL, no shared allocator), so it
  separates "lupa/Python keeps the hosts from running in parallel" from "this machine does not give
  two busy threads two cores' worth of work".

Each repeat uses a fresh node; medians over the repeats.
"""

from __future__ import annotations

import json
import os
import subprocess
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
return { main = function(n, pong_host)
  local pong = process.spawn("b:pong", pong_host)
  local inbox = process.inbox()
  for i = 1, n do
    process.send(pong, "ping", { i = i, s = "x" })
    local d = inbox:receive():payload():data()
  end
  process.send(pong, "stop")
  return n
end }
"""

H2 = "app:h2"


def thread_cpu(tid: int | None) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc (clock ticks)."""
    if tid is None:
        return 0.0
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_pairs(n: int, hosts: list[str]) -> dict[str, Any]:
    """Start one ping (n round trips) per entry of ``hosts`` at once; wait for all; figures."""
    from wippy.runtime import HostOptions

    node = common.make_node(0)
    try:
        node.add_host(H2, HostOptions(instruction_budget=0))
        node.define("b:pong", "process.lua", source=PONG)
        node.define("b:ping", "process.lua", source=PING)
        for h in ("app:processes", H2):                       # warm-up: compile on both hosts
            node.exec("b:ping", 1000, host=h, timeout=60)
        tids = {h: node.hosts[h]._thread.native_id for h in ("app:processes", H2)}
        cpu_t0 = {h: thread_cpu(t) for h, t in tids.items()}
        with node.mailbox() as mb:
            c0 = time.process_time()
            t0 = time.perf_counter()
            pids = [node.spawn("b:ping", n, host=h, monitor=mb) for h in hosts]
            for pid in pids:
                mb.wait_exit(pid, 600)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
        per_host = {h: thread_cpu(t) - cpu_t0[h] for h, t in tids.items()}
    finally:
        node.stop(grace=1)
    msgs = 2 * n * len(hosts)
    return {"wall": wall, "rate": msgs / wall, "cpu": cpu, "cpu_ratio": cpu / wall, "per_host": per_host}


def cross_host(n: int) -> dict[str, float]:
    """One pair split across the hosts (ping on app:processes, pong on app:h2): every message goes
    through Python (copied out of one Lua state and into the other)."""
    from wippy.runtime import HostOptions

    node = common.make_node(0)
    try:
        node.add_host(H2, HostOptions(instruction_budget=0))
        node.define("b:pong", "process.lua", source=PONG)
        node.define("b:ping", "process.lua", source=PING)
        node.exec("b:ping", 500, H2, timeout=60)
        c0 = time.process_time()
        t0 = time.perf_counter()
        node.exec("b:ping", n, H2, timeout=600)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        node.stop(grace=1)
    return {"wall": wall, "rate": 2 * n / wall, "cpu_ratio": cpu / wall}


def child(n: int) -> dict[str, Any]:
    """One pair on one host, in this (child) process: wall rate."""
    r = run_pairs(n, ["app:processes"])
    return {"wall": r["wall"], "rate": r["rate"]}


def os_processes(n: int, count: int) -> dict[str, float]:
    """Run ``count`` children at once, each one pair; aggregate rate over the longest child."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"child failed: {err.strip()[-400:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(o["wall"] for o in outs)
    return {"wall": wall, "rate": 2 * n * count / wall, "each": [o["rate"] for o in outs]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
        return 0
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_hosts: two hosts vs one", quick)
    n = 60_000 if quick else 300_000          # round trips per pair
    repeat = 1 if quick else 3

    n_cross = 5_000 if quick else 30_000
    dual, single, os1, os2, cross = [], [], [], [], []
    for rep in range(repeat):
        print(f"repeat {rep + 1}/{repeat}: two hosts, one host, OS-process reference ...", flush=True)
        dual.append(run_pairs(n, ["app:processes", H2]))
        single.append(run_pairs(n, ["app:processes", "app:processes"]))
        os1.append(os_processes(n, 1))
        os2.append(os_processes(n, 2))
        cross.append(cross_host(n_cross))

    med = common.median
    d_wall, s_wall = med([r["wall"] for r in dual]), med([r["wall"] for r in single])
    o1_wall, o2_wall = med([r["wall"] for r in os1]), med([r["wall"] for r in os2])
    msgs = 4 * n
    print()
    print(f"two pairs x {n:,} round trips = {msgs:,} messages in all; median of {repeat} (fresh node each)")
    common.table(
        ["setup", "wall s", "aggregate msgs/s", "process CPU s", "CPU / wall", "host CPU s (processes / h2)"],
        [
            ["two hosts, one pair each", f"{d_wall:.3f}", common.fmt_rate(msgs / d_wall),
             f"{med([r['cpu'] for r in dual]):.2f}", f"{med([r['cpu_ratio'] for r in dual]):.2f}",
             f"{med([r['per_host']['app:processes'] for r in dual]):.2f} / "
             f"{med([r['per_host'][H2] for r in dual]):.2f}"],
            ["one host, both pairs", f"{s_wall:.3f}", common.fmt_rate(msgs / s_wall),
             f"{med([r['cpu'] for r in single]):.2f}", f"{med([r['cpu_ratio'] for r in single]):.2f}",
             f"{med([r['per_host']['app:processes'] for r in single]):.2f} / "
             f"{med([r['per_host'][H2] for r in single]):.2f}"],
        ],
    )
    print(f"speed-up, two hosts over one: {s_wall / d_wall:.2f}x (2.00x = both cores fully used)")
    print()
    print("reference: the same work in separate OS processes (one pair each, one host each):")
    common.table(
        ["setup", "wall s", "aggregate msgs/s"],
        [
            ["one OS process, one pair (half the work)", f"{o1_wall:.3f}", common.fmt_rate(2 * n / o1_wall)],
            ["two OS processes at once, one pair each", f"{o2_wall:.3f}", common.fmt_rate(msgs / o2_wall)],
        ],
    )
    print(f"machine speed-up, two OS processes over one doing twice the work serially: "
          f"{2 * o1_wall / o2_wall:.2f}x")
    print(f"two hosts in one process reach {(s_wall / d_wall) / (2 * o1_wall / o2_wall) * 100:.0f}% of the "
          f"machine's own two-process speed-up")
    print()
    c_rate = med([r["rate"] for r in cross])
    print(f"for comparison, one pair split across the two hosts (every message through Python): "
          f"{c_rate:,.0f} msgs/s ({n_cross:,} round trips, CPU / wall {med([r['cpu_ratio'] for r in cross]):.2f}), "
          f"{med([r['rate'] for r in single]) / c_rate:.1f}x slower than a pair on one host")
    return 0


if __name__ == "__main__":
    sys.exit(main())
