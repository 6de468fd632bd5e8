"""Teaching mode (issue 14): what its hooks cost a world that is not paused, and how fast a seeded one runs.

    .venv/bin/python bench/bench_teach.py [--quick] [--before REV]

What is measured, in one run, rounds interleaved (before, now, before, now...), each in a fresh node:

* ping-pong (bench_messages.py's table-payload case: `ping` sends {i = i, s = "x"} to `pong` and waits
  for the answer, n times; 2 messages per round trip), messages per second of wall time around
  `node.exec`, and of the Lua CPU time the ping process measured (os.clock).
  BEFORE: the scheduler's Lua modules as they were at REV (default 98e2f02, the commit before teaching
  mode), read with `git show`, loaded into today's hosts. NOW: today's modules, never paused or seeded.
  The ratio now/before is the cost of the hooks (the target: at most 2%, a ratio of at least 0.98).
  The Python side (host.py) is today's in both: its part is one test per run batch of 20 000 resumes.
* seeded: the same ping-pong with `node.teach.seed(1)` (every event held, then drawn and applied one
  at a time: what a class pays for reproducibility), beside NOW.

Figures only, no verdicts gate anything.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

REPO = Path(__file__).resolve().parent.parent
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


def chunks_at(rev: str) -> list[tuple[str, bytes]] | None:
    """The scheduler's modules at ``rev`` (its own module list), or None without git."""
    def show(path: str) -> bytes:
        return subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, timeout=30).stdout
    try:
        src = show("runtime/lua_modules.py").decode()
    except (OSError, subprocess.SubprocessError):
        return None
    block = re.search(r"^SCHEDULER_MODULES[^=]*=\s*\((.*?)^\)", src, re.S | re.M)
    if block is None:
        return None
    names = re.findall(r'^\s*"(\w+)",', block.group(1), re.M)
    return [(f"scheduler/{m}.lua", show(f"runtime/lua/scheduler/{m}.lua")) for m in names]


def pingpong(n: int, chunks: list[tuple[str, bytes]] | None, seeded: bool) -> tuple[float, float]:
    """(wall rate, Lua-CPU rate) of n round trips in a fresh node (``chunks``: the scheduler to load)."""
    from wippy.runtime import lua_modules

    real = lua_modules.scheduler_chunks
    if chunks is not None:
        lua_modules.scheduler_chunks = lambda: chunks   # type: ignore[assignment]
    try:
        node = common.make_node(0)
    finally:
        lua_modules.scheduler_chunks = real
    try:
        node.define("b:pong", "process.lua", source=PONG)
        node.define("b:ping", "process.lua", source=PING)
        node.exec("b:ping", 2000, timeout=60)   # warm-up: compiles
        if seeded:
            node.teach.seed(1)
        t0 = time.perf_counter()
        cpu = node.exec("b:ping", n, timeout=600)
        wall = time.perf_counter() - t0
        return 2 * n / wall, 2 * n / float(cpu)
    finally:
        node.stop(grace=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    ap.add_argument("--before", default="98e2f02", help="the revision whose scheduler is the baseline")
    args = ap.parse_args()
    common.header("teaching mode: the hooks' cost unpaused, and a seeded world", args.quick)
    n, rounds = (50_000, 3) if args.quick else (200_000, 7)
    before = chunks_at(args.before)
    if before is None:
        print(f"note: git could not read {args.before}: only today's scheduler is measured")
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "now": [], "seeded": []}
    for r in range(rounds):
        if before is not None:
            runs["before"].append(pingpong(n, before, False))
        runs["now"].append(pingpong(n, None, False))
        runs["seeded"].append(pingpong(max(n // 10, 5000), None, True))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    med = {k: (common.median([w for w, _ in v]), common.median([c for _, c in v])) for k, v in runs.items() if v}
    rows = [[k, common.fmt_rate(w), common.fmt_rate(c)] for k, (w, c) in med.items()]
    print(f"ping-pong, {n:,} round trips (seeded: {max(n // 10, 5000):,}), median of {rounds} interleaved rounds")
    common.table(["scheduler", "msgs/s (wall)", "msgs/s (Lua CPU)"], rows)
    if "before" in med:
        w = med["now"][0] / med["before"][0]
        c = med["now"][1] / med["before"][1]
        print(f"now / before ({args.before}): wall {w:.3f}, Lua CPU {c:.3f}   (hooks cost {100 * (1 - w):+.1f}% wall, "
              f"{100 * (1 - c):+.1f}% CPU; target: at most 2%)")
    print(f"seeded / now: wall {med['seeded'][0] / med['now'][0]:.3f}   (every event held, drawn and applied alone)")


if __name__ == "__main__":
    main()
