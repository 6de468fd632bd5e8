"""The speed and memory targets of issue 11, each measured beside its plain-asyncio baseline in the same run.

    .venv/bin/python bench/bench_targets.py [--quick] [--repeat N]

One table, one row per target: the median figure (best and worst of the repeats beside it), the same-run
asyncio baseline (median), the ratio, and MET / NOT MET judged on the median. The targets:

* fan-out 1->1000 >= 2x asyncio with the instruction budget on, >= 2.5x with it off;
* ping-pong (2-key table payload, the same shape as the asyncio baseline's dict) >= 4x asyncio with the
  budget off;
* the instruction budget costs <= 15 % on ping-pong: 1 - (median rate budget on / median rate budget
  off), both in the same run (best and worst: the same figure for each repeat's pair of nodes);
* spawn to first park >= 200,000/s at 10 k and at 100 k processes (budget on, the default);
* <= 2,048 B RSS per idle process at 100 k processes.

The code measured is bench_messages.py's (ping-pong and fan-out: `b:ping`, `b:fan`, each repeat in
fresh nodes, one with the budget off and one with it on, their order swapped every other repeat) and
bench_spawn.py's (each spawn run in a fresh Python process); the baselines are common.py's, run
between them in every repeat. The message rates are wall rates around `node.exec` (fan-out's includes
spawning its 1,000 workers and a warm-up round, as in bench_messages.py). Repeats: 5 (`--repeat N`);
`--quick` (under a minute) runs smaller sizes and 3 spawn repeats. Figures, never assertions: the
script exits 0 whatever it measures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_messages
import bench_spawn
import common

FAN = 1000
BUDGET_ON = bench_messages.BUDGET_ON


class Row(NamedTuple):
    """One target: what it says, the repeats' figures, the baseline's, and how the two are judged."""

    target: str
    figures: list[float]
    baseline: list[float]
    fmt: Callable[[float], str]
    judged: float               # the figure judged (the median, or a ratio of medians)
    met: bool
    ratio: str


def rate(x: float) -> str:
    return common.fmt_rate(x)


def nbytes(x: float) -> str:
    return f"{x:,.0f} B"


def percent(x: float) -> str:
    return f"{x * 100:.1f} %"


def ratio_row(target: str, figures: list[float], baseline: list[float], wanted: float) -> Row:
    """A target "the figure >= ``wanted`` x the baseline" (rates, higher is better)."""
    r = common.median(figures) / common.median(baseline)
    return Row(target, figures, baseline, rate, r, r >= wanted, f"{r:.2f}x")


def bound_row(target: str, figures: list[float], baseline: list[float], fmt: Callable[[float], str],
              met: Callable[[float], bool]) -> Row:
    """A target on the median figure itself (``met(median)``); the ratio to the baseline is shown only."""
    med = common.median(figures)
    return Row(target, figures, baseline, fmt, med, met(med),
               common.fmt_ratio(med, common.median(baseline)) if baseline else "-")


def print_rows(rows: Sequence[Row]) -> None:
    table = []
    for row in rows:
        f = row.figures
        med = row.fmt(common.median(f)) if f else "-"
        best, worst = (row.fmt(max(f)), row.fmt(min(f))) if f else ("-", "-")
        if row.fmt is nbytes:      # fewer bytes is better
            best, worst = worst, best
        if row.fmt is percent:     # a smaller cost is better; the figure is the ratio of the medians
            med, best, worst = percent(row.judged), percent(min(f)), percent(max(f))
        base = row.fmt(common.median(row.baseline)) if row.baseline and row.fmt is not percent else "-"
        table.append([row.target, med, best, worst, base, row.ratio, "MET" if row.met else "NOT MET"])
    common.table(["target", "median", "best", "worst", "asyncio, same run (median)", "ratio", "verdict"], table)


def main() -> int:
    def options(ap: Any) -> None:
        ap.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="repeats of every measurement (default 5; 3 for the spawns with --quick)")

    args = common.parse_args(__doc__.splitlines()[0], extra=options)
    quick = args.quick
    repeat = args.repeat or 5
    spawn_repeat = args.repeat or (3 if quick else 5)
    common.header("bench_targets: the targets of issue 11", quick)

    n_pp = 100_000 if quick else 300_000          # wippy ping-pong round trips (x2 messages)
    rounds = 60 if quick else 200                 # wippy fan-out rounds (x2000 messages)
    n_async = 50_000 if quick else 150_000        # asyncio ping-pong round trips
    rounds_async = 40 if quick else 150           # asyncio fan-out rounds
    sizes = (10_000, 100_000)

    pp = bench_messages.pingpong_case(n_pp, "table")
    pp_int = bench_messages.pingpong_case(n_pp, "integer")
    fo = bench_messages.fanout_case(rounds, FAN)
    cases = [pp, pp_int, fo]

    a_pp: list[float] = []
    a_fo: list[float] = []
    walls: dict[tuple[str, int], list[float]] = {}
    for rep in range(repeat):
        print(f"messages, repeat {rep + 1}/{repeat}: asyncio, wippy budget off and on ...", flush=True)
        a_pp.append(2 * n_async / common.baseline_asyncio_pingpong(n_async))
        a_fo.append(2 * FAN * rounds_async / common.baseline_asyncio_fanout(rounds_async, FAN))
        for budget in (0, BUDGET_ON) if rep % 2 == 0 else (BUDGET_ON, 0):
            for name, (wall, _cpu) in bench_messages.fresh_node_rates(budget, cases).items():
                walls.setdefault((name, budget), []).append(wall)

    spawns: dict[int, list[dict[str, Any]]] = {}
    a_spawns: dict[int, list[dict[str, Any]]] = {}
    for n in sizes:
        print(f"spawn {n:,}: asyncio, then wippy x{spawn_repeat} (each a fresh process) ...", flush=True)
        a_spawns[n] = [r for r in (bench_spawn.run_child(["asyncio", str(n)], 300),) if r]
        spawns[n] = [r for r in (bench_spawn.run_child(["lua", str(n), str(BUDGET_ON), "nostats"], 300)
                                 for _ in range(spawn_repeat)) if r]

    off, on = walls[(pp[0], 0)], walls[(pp[0], BUDGET_ON)]
    cost = 1 - common.median(on) / common.median(off)
    rows = [
        ratio_row("fan-out 1->1000, budget on >= 2x asyncio", walls[(fo[0], BUDGET_ON)], a_fo, 2.0),
        ratio_row("fan-out 1->1000, budget off >= 2.5x asyncio", walls[(fo[0], 0)], a_fo, 2.5),
        ratio_row("ping-pong (table), budget off >= 4x asyncio", off, a_pp, 4.0),
        Row("budget cost on ping-pong (table) <= 15 %", [1 - b / a for a, b in zip(off, on, strict=True)], [],
            percent, cost, cost <= 0.15, f"on/off {1 - cost:.2f}"),
    ]
    for n in sizes:
        if spawns[n]:
            rows.append(bound_row(f"spawn to first park, {n // 1000} k, >= 200,000/s",
                                  [r["rate_wall"] for r in spawns[n]], [r["rate"] for r in a_spawns[n]], rate,
                                  lambda x: x >= 200_000))
    if spawns[100_000]:
        rows.append(bound_row("RSS per idle process, 100 k, <= 2,048 B", [r["rss_per"] for r in spawns[100_000]],
                              [r["rss_per"] for r in a_spawns[100_000]], nbytes, lambda x: x <= 2048))

    print()
    print(f"{repeat} repeats ({spawn_repeat} of the spawns). ping-pong {n_pp:,} round trips, fan-out {rounds} "
          f"rounds x {FAN} (wall rates, msgs/s); asyncio ping-pong {n_async:,} round trips, fan-out "
          f"{rounds_async} rounds; spawn: budget on")
    print_rows(rows)
    int_off = walls[(pp_int[0], 0)]
    print(f"also (no target): ping-pong with an integer payload, budget off: {common.median(int_off):,.0f}/s, "
          f"{common.median(int_off) / common.median(a_pp):.2f}x asyncio; budget on: "
          f"{common.median(walls[(pp_int[0], BUDGET_ON)]):,.0f}/s")
    missing = [f"spawn {n:,}" for n in sizes if not spawns[n]]
    if missing:
        print(f"not measured (a child run failed, see above): {', '.join(missing)}")
    met = sum(r.met for r in rows)
    print(f"{met} of {len(rows)} targets met (judged on the median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
