"""Spawning idle processes: spawns per second and bytes per parked process; asyncio and pykka baselines.

    .venv/bin/python bench/bench_spawn.py [--quick]

What is measured: one Lua process spawns N processes of the entry `b:idle` in a loop
(`for i = 1, n do process.spawn("b:idle") end`); each parks on its inbox (`process.inbox():receive()`)
and stays there. The spawner then spawns one marker process that messages it back: the run queue is
FIFO, so when the marker's message arrives every idle process has run once and is parked.

* spawns/s, wall: N / the wall time around `node.exec` of the spawner (spawn loop + every process run
  to its park + the exit event). The honest figure, judged against the target.
* spawn loop only: N / the os.clock() time of the `for` loop alone (CPU), before any of them ran.
* RSS/process: growth of VmRSS across the whole thing, after a full Lua collection, divided by N.
* Lua heap/process: growth of the host's Lua state (lupa's `get_memory_used`), after a full collection.

Every measurement runs in a fresh Python process (this script re-runs itself with `--child`), so an
RSS delta is not muddied by what an earlier one left in the allocator. The host's heap limit is raised
for these runs (the default, 256 MB, would stop a little under 100 k processes). The entry is compiled
once (a warm-up spawn), not per spawn.

Baselines: asyncio tasks each parked on their own asyncio.Queue (created and run once to their await;
with Python's cyclic GC on, as by default, and off), and pykka ThreadingActors (one OS thread each,
so 10 k at most: pykka is thread-per-actor).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

BUDGET_ON = 100_000_000

IDLE = 'return { main = function() process.inbox():receive() end }'
MARK = "return { main = function(to) process.send(to, 'up', true) end }"
SPAWNER = """
return { main = function(n)
  local spawn = process.spawn
  local t0 = os.clock()
  for i = 1, n do spawn("b:idle") end
  local t1 = os.clock()
  spawn("b:mark", nil, process.pid())
  process.inbox():receive()
  return { t1 - t0, os.clock() - t0 }
end }
"""


# --------------------------------------------------------------------------------------- children


def child_lua(n: int, budget: int, statistics: bool = True) -> dict[str, Any]:
    """One measurement (in this fresh process); ``statistics`` also times ``node.statistics()``."""
    node = common.make_node(budget, heap_limit=max(512 << 20, n * 8192))

    def mem() -> int:
        return int(node.call(lambda ctx: ctx.lua.get_memory_used()))

    try:
        node.define("b:idle", "process.lua", source=IDLE)
        node.define("b:mark", "process.lua", source=MARK)
        node.define("b:spawner", "process.lua", source=SPAWNER)
        node.exec("b:spawner", 1, timeout=60)       # compiles the three entries; leaves one idle process
        common.lua_gc(node)
        gc.collect()
        rss0, mem0 = common.rss_bytes(), mem()
        t0 = time.perf_counter()
        loop_cpu, total_cpu = node.exec("b:spawner", n, timeout=600)
        wall = time.perf_counter() - t0
        mem_nogc = mem()
        common.lua_gc(node)
        rss1, mem1 = common.rss_bytes(), mem()
        alive = int(node.call(lambda ctx: ctx.scheduler.count()))
        stats_s = None
        if statistics and n <= 100_000:
            t0 = time.perf_counter()
            node.statistics(memory=False)
            stats_s = time.perf_counter() - t0
        t0 = time.perf_counter()
    finally:
        node.stop(grace=1)
    stop_s = time.perf_counter() - t0
    return {
        "n": n, "alive": alive, "wall": wall, "rate_wall": n / wall, "rate_loop": n / loop_cpu,
        "rate_cpu": n / total_cpu, "rss_per": (rss1 - rss0) / n, "lua_per": (mem1 - mem0) / n,
        "lua_per_nogc": (mem_nogc - mem0) / n, "rss_total": rss1, "stats_s": stats_s, "stop_s": stop_s,
    }


# Where the bytes of an idle process go: take the parts away one by one (on the host thread, after the
# measurement: destructive) and collect. Reads runtime internals (the `procs` upvalue of S.alive, the
# record fields co/inbox/wait/env), so it reports "unavailable" if those change.
BREAKDOWN_PROBE = b"""
return function(S, step)
  local procs
  for i = 1, 50 do
    local name, v = debug.getupvalue(S.alive, i)
    if name == nil then break end
    if name == "procs" then procs = v; break end
  end
  if not procs then return -1 end
  local n = 0
  for pid, p in pairs(procs) do
    if p.entry == "b:idle" then
      n = n + 1
      if step == "coroutine" then p.co = nil
      elseif step == "inbox" then p.inbox = nil; p.wait = nil
      elseif step == "environment" then p.env = nil
      elseif step == "record" then procs[pid] = nil
      end
    end
  end
  collectgarbage(); collectgarbage()
  return n
end
"""
BREAKDOWN_STEPS = ("coroutine", "inbox", "environment", "record")


def child_breakdown(n: int) -> dict[str, Any]:
    node = common.make_node(0, heap_limit=max(512 << 20, n * 8192))

    def mem() -> int:
        return int(node.call(lambda ctx: ctx.lua.get_memory_used()))

    out: dict[str, Any] = {"n": n}
    try:
        node.define("b:idle", "process.lua", source=IDLE)
        node.define("b:mark", "process.lua", source=MARK)
        node.define("b:spawner", "process.lua", source=SPAWNER)
        node.exec("b:spawner", 1, timeout=60)
        common.lua_gc(node)
        m0 = mem()
        node.exec("b:spawner", n, timeout=600)
        common.lua_gc(node)
        prev = m1 = mem()
        out["total"] = (m1 - m0) / n
        for step in BREAKDOWN_STEPS:
            k = node.call(lambda ctx, step=step: ctx.lua.execute(BREAKDOWN_PROBE)(ctx.scheduler, step.encode()))
            if int(k) < n:
                return {"n": n, "unavailable": True}
            m = mem()
            out[step] = (prev - m) / n
            prev = m
        out["rest"] = (prev - m0) / n
    finally:
        node.stop(grace=1)
    return out


def run_child(args: list[str], timeout: float) -> dict[str, Any] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"  {' '.join(args)}: timed out after {timeout:.0f}s", flush=True)
        return None
    if out.returncode != 0:
        print(f"  {' '.join(args)}: failed ({out.returncode}): {out.stderr.strip()[-500:]}", flush=True)
        return None
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def child_main(argv: list[str]) -> int:
    kind, n = argv[0], int(argv[1])
    if kind == "lua":
        r = child_lua(n, int(argv[2]), statistics="nostats" not in argv[3:])
    elif kind == "lua-breakdown":
        r = child_breakdown(n)
    elif kind == "asyncio":
        r = common.baseline_asyncio_spawn(n)
    elif kind == "asyncio-nogc":
        gc.disable()
        r = common.baseline_asyncio_spawn(n)
    elif kind == "pykka":
        r = common.baseline_pykka_spawn(n)
    else:
        raise SystemExit(f"unknown child kind {kind}")
    print(json.dumps(r))
    return 0


# --------------------------------------------------------------------------------------- parent


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_spawn: spawning idle processes", quick)

    sizes = [10_000] if quick else [10_000, 100_000]
    repeat = 1 if quick else 3
    stretch = 0 if quick else 1_000_000

    lua_rows: list[tuple[int, int, list[dict[str, Any]]]] = []
    for n in sizes:
        for budget in (0, BUDGET_ON):
            print(f"wippy: {n:,} processes, budget {common.budget_label(budget)}, {repeat} run(s) ...", flush=True)
            runs = [r for r in (run_child(["lua", str(n), str(budget)], 300) for _ in range(repeat)) if r]
            if runs:
                lua_rows.append((n, budget, runs))

    stretch_run = None
    if stretch:
        need = stretch * 6000
        avail = mem_available()
        if avail > 2 * need:
            print(f"wippy: {stretch:,} processes (stretch), budget off ...", flush=True)
            stretch_run = run_child(["lua", str(stretch), "0"], 300)
        else:
            print(f"skipping {stretch:,} processes: {avail / 2**30:.1f} GiB available, want {2 * need / 2**30:.1f}")

    bd_n = 10_000 if quick else 100_000
    print(f"wippy: where the bytes go, {bd_n:,} processes ...", flush=True)
    breakdown = run_child(["lua-breakdown", str(bd_n)], 300)

    base_rows = []
    for kind, n in [("asyncio", s) for s in sizes] + [("asyncio-nogc", s) for s in sizes] + \
            [("pykka", 2_000 if quick else 10_000)]:
        print(f"baseline {kind}: {n:,} ...", flush=True)
        r = run_child([kind, str(n)], 300)
        if r:
            base_rows.append((kind, n, r))

    print()
    rows = []
    for n, budget, runs in lua_rows:
        med = lambda k, runs=runs: common.median([r[k] for r in runs])  # noqa: E731
        stats_s = med("stats_s") if all(r["stats_s"] is not None for r in runs) else None
        rows.append([f"{n:,}", common.budget_label(budget), common.fmt_rate(med("rate_wall")),
                     common.fmt_rate(max(r["rate_wall"] for r in runs)), common.fmt_rate(med("rate_loop")),
                     f"{med('rss_per'):,.0f}", f"{med('lua_per'):,.0f}",
                     f"{stats_s:.2f}" if stats_s is not None else "-", f"{med('stop_s'):.2f}"])
    if stretch_run:
        r = stretch_run
        rows.append([f"{stretch:,} (stretch)", "off", common.fmt_rate(r["rate_wall"]), "-",
                     common.fmt_rate(r["rate_loop"]), f"{r['rss_per']:,.0f}", f"{r['lua_per']:,.0f}", "-",
                     f"{r['stop_s']:.2f}"])
    print(f"wippy: median of {repeat} fresh processes (best wall also shown)")
    common.table(["processes", "budget", "spawns/s wall (median)", "best", "spawn loop only", "RSS B/process",
                  "Lua heap B/process", "node.statistics() s", "node.stop() s"], rows)
    if stretch_run:
        r = stretch_run
        print(f"stretch: {stretch:,} idle processes took {r['wall']:.1f} s to spawn and park; RSS grew by "
              f"{r['rss_per'] * stretch / 2**30:.2f} GiB (process RSS then {r['rss_total'] / 2**30:.2f} GiB); "
              f"node.stop() took {r['stop_s']:.1f} s; {r['alive']:,} processes were alive.")
        print()

    if breakdown and not breakdown.get("unavailable"):
        total = breakdown["total"]
        print(f"where the Lua heap of an idle process goes ({bd_n:,} processes, budget off; each part taken away "
              "in turn and collected):")
        what = {
            "coroutine": "its coroutine (lua_State, stack, call frames, the closures only its stack holds)",
            "inbox": "its inbox channel (state table, handle, weak-table slot)",
            "environment": "its environment table",
            "record": "its process record in the scheduler, with the PID string",
            "rest": "the rest (arrays that do not shrink: run queue, process table slots)",
        }
        common.table(["part", "bytes", "share"], [
            [what[k], f"{breakdown[k]:,.0f}", f"{breakdown[k] / total * 100:.0f}%"] for k in (*BREAKDOWN_STEPS, "rest")
        ] + [["total Lua heap per idle process", f"{total:,.0f}", "100%"]])
    elif breakdown:
        print("where the bytes go: unavailable (the runtime's internals changed; see BREAKDOWN_PROBE)\n")

    brows = []
    for kind, n, r in base_rows:
        label = {"asyncio": "asyncio tasks (GC on)", "asyncio-nogc": "asyncio tasks (GC off)",
                 "pykka": "pykka ThreadingActors"}[kind]
        brows.append([label, f"{n:,}", common.fmt_rate(r["rate"]), f"{r['rss_per']:,.0f}"])
    print("baselines (each in a fresh process, same run):")
    common.table(["baseline", "count", "created/s", "RSS B each"], brows)

    print("targets (issue): >= 200,000 spawns/s; <= 2 KB (2,048 B) RSS per idle process. Median figures:")
    for n, budget, runs in lua_rows:
        rate = common.median([r["rate_wall"] for r in runs])
        loop = common.median([r["rate_loop"] for r in runs])
        rss = common.median([r["rss_per"] for r in runs])
        print(f"  {n:,}, budget {common.budget_label(budget)}: {rate:,.0f} spawns/s -> "
              f"{'met' if rate >= 200_000 else 'NOT met'} (spawn loop alone {loop:,.0f}/s: "
              f"{'met' if loop >= 200_000 else 'NOT met'}); {rss:,.0f} B RSS/process -> "
              f"{'met' if rss <= 2048 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
