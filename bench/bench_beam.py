"""Wippy against BEAM (Erlang/OTP) and plain asyncio: ping-pong and spawn-to-park, same patterns, same run.

    .venv/bin/python bench/bench_beam.py [--quick]

Needs `erl` and `erlc` on PATH (Debian's `erlang-nox`; `scripts/ensure-erlang.sh` installs it). Without
them the script says so in one line, measures wippy and asyncio only, and exits 0.

What runs, in this order, in one run:

* ping-pong, n round trips (2n messages): wippy's `b:ping`/`b:pong` of bench_messages.py (payload
  `{i = i, s = "x"}` or the integer i; each repeat in a fresh node, instruction budget off and on);
  plain asyncio (two tasks, two asyncio.Queue, a 2-key dict passed by reference: common.py); and
  bench/beam/wippy_bench.erl, the same pattern between two Erlang processes (payload
  `#{i => I, s => <<"x">>}` or the integer I; BEAM copies every message into the receiver's heap, as
  wippy copies a table payload). Each BEAM repeat is a fresh `erl -noshell` VM.
* spawn to park, N = 10 k and 100 k: wippy's spawner of bench_spawn.py (each repeat a fresh Python
  process; budget on, the default), asyncio tasks parked on a queue each (a fresh process), and N
  Erlang processes parked in a `receive` (each repeat a fresh VM), timed from the first spawn until
  every one is parked. Memory per process: wippy's RSS growth / N (and its Lua heap), asyncio's RSS
  growth / N, BEAM's `erlang:memory(processes)` growth / N and its VM's RSS growth / N.

BEAM runs with `+S 1` (one scheduler thread: the like-for-like figure, a wippy host is one thread) and
with its default schedulers (one per CPU). The .erl source is compiled with `erlc` into a temporary
directory at each run. Rates are messages (or spawns) per second, the median of the repeats; best and
worst are shown beside it. Figures, never verdicts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_messages
import bench_spawn
import common

ERL_SOURCE = Path(__file__).resolve().parent / "beam" / "wippy_bench.erl"
SCHEDULERS: tuple[tuple[str, list[str]], ...] = (("+S 1", ["+S", "1"]), ("default schedulers", []))


# --------------------------------------------------------------------------------------- BEAM


class Beam:
    """The compiled wippy_bench module and the `erl` to run it with (see bench/beam/wippy_bench.erl)."""

    def __init__(self, erl: str, ebin: Path) -> None:
        self.erl = erl
        self.ebin = ebin
        self.release = self._eval("io:format(\"~s (erts ~s, ~s)\", [erlang:system_info(otp_release), "
                                  "erlang:system_info(version), erlang:system_info(emu_flavor)])")
        self.cpus = self._eval("io:format(\"~b\", [erlang:system_info(schedulers_online)])")

    def _eval(self, expr: str) -> str:
        out = subprocess.run([self.erl, "-noshell", "-eval", f"{expr}, halt()."], capture_output=True, text=True,
                             timeout=60, check=False, cwd=self.ebin)
        return out.stdout.strip() or "unknown"

    def run(self, flags: Sequence[str], args: Sequence[str], timeout: float = 300) -> list[dict[str, str]]:
        """One fresh VM running ``wippy_bench:main(args)``; the `result` lines it printed, as dicts."""
        cmd = [self.erl, "-noshell", *flags, "-pa", str(self.ebin), "-run", "wippy_bench", "main", *args]
        # cwd: a VM that crashes writes erl_crash.dump there, in the temporary directory, not the tree
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.ebin)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        rows = []
        for line in out.stdout.splitlines():
            if line.startswith("result "):
                rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
        if not rows:
            raise RuntimeError(f"{' '.join(cmd)} printed no result line: {out.stdout.strip()[-500:]}")
        return rows

    def pingpong_rates(self, flags: Sequence[str], kind: str, n: int, repeat: int) -> list[float]:
        """Messages/s of ``repeat`` ping-pong runs of ``n`` round trips, each in a fresh VM."""
        return [2 * n / float(self.run(flags, ["pingpong", kind, str(n), "1"])[0]["seconds"])
                for _ in range(repeat)]

    def spawn_runs(self, flags: Sequence[str], n: int, repeat: int) -> list[dict[str, float]]:
        """``repeat`` spawn-to-park runs of ``n`` processes, each in a fresh VM (so the RSS delta is honest)."""
        runs = []
        for _ in range(repeat):
            r = self.run(flags, ["spawn", str(n), "1"])[0]
            runs.append({"rate": n / float(r["seconds"]), "memory_per": float(r["memory_per"]),
                         "rss_per": float(r["rss_per"]), "checks": float(r["checks"]),
                         "process_info_memory": float(r["process_info_memory"])})
        return runs


def find_beam(tmp: Path) -> Beam | None:
    """A Beam with wippy_bench.erl compiled into ``tmp``, or None after printing the one line why not."""
    erl, erlc = shutil.which("erl"), shutil.which("erlc")
    if erl is None or erlc is None:
        missing = " and ".join(name for name, path in (("erl", erl), ("erlc", erlc)) if path is None)
        print(f"BEAM: not measured ({missing} not on PATH; install Debian's erlang-nox, e.g. "
              "`bash scripts/ensure-erlang.sh`); wippy and asyncio only")
        return None
    out = subprocess.run([erlc, "-o", str(tmp), str(ERL_SOURCE)], capture_output=True, text=True, timeout=120,
                         check=False)
    if out.returncode != 0:
        print(f"BEAM: not measured (erlc failed on {ERL_SOURCE.name}: {(out.stderr or out.stdout).strip()[-300:]})")
        return None
    return Beam(erl, tmp)


# --------------------------------------------------------------------------------------- wippy and asyncio


def wippy_pingpong(n: int, kinds: Sequence[str], budgets: Sequence[int],
                   repeat: int) -> dict[tuple[str, int], list[float]]:
    """Wall msgs/s of wippy ping-pong per (payload kind, budget); each repeat in fresh nodes."""
    out: dict[tuple[str, int], list[float]] = {}
    cases = [bench_messages.pingpong_case(n, k) for k in kinds]
    for _ in range(repeat):
        for budget in budgets:
            rates = bench_messages.fresh_node_rates(budget, cases)
            for kind, (name, *_) in zip(kinds, cases, strict=True):
                out.setdefault((kind, budget), []).append(rates[name][0])
    return out


def child_runs(args: list[str], repeat: int) -> list[dict[str, Any]]:
    """``repeat`` runs of a bench_spawn.py child (each a fresh Python process); the ones that succeeded."""
    return [r for r in (bench_spawn.run_child(args, 300) for _ in range(repeat)) if r]


# --------------------------------------------------------------------------------------- printing


def spread(xs: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """The median, with the best and worst in brackets (higher is better)."""
    if not xs:
        return "-"
    m = fmt.format(common.median(xs))
    return m if len(xs) == 1 else f"{m} ({fmt.format(max(xs))}..{fmt.format(min(xs))})"


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    return common.fmt_ratio(common.median(a), common.median(b)) if a and b else "-"


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    common.header("bench_beam: wippy against BEAM and asyncio", quick)

    repeat = 1 if quick else 5
    spawn_repeat = 1 if quick else 3
    n_pp = 100_000 if quick else 300_000
    n_async = 50_000 if quick else 150_000
    sizes = [10_000, 100_000]
    kinds = ("table", "integer")
    budgets = (0, bench_messages.BUDGET_ON)

    with tempfile.TemporaryDirectory(prefix="wippy-beam-") as tmp:
        beam = find_beam(Path(tmp))
        if beam is not None:
            print(f"BEAM:    Erlang/OTP {beam.release}; default schedulers here: {beam.cpus}")
        print()

        # ------------------------------------------------------------- ping-pong
        print("ping-pong: asyncio ...", flush=True)
        a_pp = [2 * n_async / common.baseline_asyncio_pingpong(n_async) for _ in range(repeat)]
        print("ping-pong: wippy ...", flush=True)
        w_pp = wippy_pingpong(n_pp, kinds, budgets, repeat)
        b_pp: dict[tuple[str, str], list[float]] = {}
        if beam is not None:
            for label, flags in SCHEDULERS:
                for kind in kinds:
                    print(f"ping-pong: BEAM {label}, {kind} ...", flush=True)
                    b_pp[(kind, label)] = beam.pingpong_rates(flags, kind, n_pp, repeat)

        # ------------------------------------------------------------- spawn
        w_sp: dict[int, list[dict[str, Any]]] = {}
        a_sp: dict[int, list[dict[str, Any]]] = {}
        b_sp: dict[tuple[int, str], list[dict[str, float]]] = {}
        for n in sizes:
            print(f"spawn {n:,}: wippy, asyncio ...", flush=True)
            w_sp[n] = child_runs(["lua", str(n), str(bench_messages.BUDGET_ON), "nostats"], spawn_repeat)
            a_sp[n] = child_runs(["asyncio", str(n)], 1)
            if beam is not None:
                for label, flags in SCHEDULERS:
                    print(f"spawn {n:,}: BEAM {label} ...", flush=True)
                    b_sp[(n, label)] = beam.spawn_runs(flags, n, spawn_repeat)

    # ----------------------------------------------------------------- ping-pong table
    print()
    print(f"ping-pong: {n_pp:,} round trips ({2 * n_pp:,} messages), {repeat} repeat(s), each in a fresh node "
          f"or VM; asyncio {n_async:,} round trips. msgs/s, median (best..worst)")
    rows = []
    for kind in kinds:
        for budget in budgets:
            w = w_pp[(kind, budget)]
            row = [kind, f"wippy, budget {common.budget_label(budget)}", spread(w), ratio(w, a_pp)]
            for label, _ in SCHEDULERS:
                row.append(ratio(w, b_pp[(kind, label)]) if beam is not None else "-")
            rows.append(row)
        if beam is not None:
            for label, _ in SCHEDULERS:
                b = b_pp[(kind, label)]
                rows.append([kind, f"BEAM, {label}", spread(b), ratio(b, a_pp), "-", "-"])
    rows.append(["dict (by reference)", "asyncio, 2 tasks, 2 queues", spread(a_pp), "1.00x", "-", "-"])
    common.table(["payload", "runtime", "msgs/s", "vs asyncio", "vs BEAM +S 1", "vs BEAM default"], rows)

    # ----------------------------------------------------------------- spawn
    print(f"spawn to park: {spawn_repeat} repeat(s) each in a fresh process or VM; wippy budget on "
          f"({bench_messages.BUDGET_ON:,}); spawns/s median (best..worst); bytes per parked process, median")
    rows = []
    for n in sizes:
        ws, asp = w_sp[n], a_sp[n]
        wr = [r["rate_wall"] for r in ws]
        ar = [r["rate"] for r in asp]
        row = [f"{n:,}", "wippy", spread(wr), spread([r["rss_per"] for r in ws]),
               f"Lua heap {common.median([r['lua_per'] for r in ws]):,.0f}" if ws else "-", ratio(wr, ar)]
        for label, _ in SCHEDULERS:
            row.append(ratio(wr, [r["rate"] for r in b_sp[(n, label)]]) if beam is not None else "-")
        rows.append(row)
        if beam is not None:
            for label, _ in SCHEDULERS:
                bs = b_sp[(n, label)]
                br = [r["rate"] for r in bs]
                rows.append([f"{n:,}", f"BEAM, {label}", spread(br), spread([r["rss_per"] for r in bs]),
                             f"memory(processes) {common.median([r['memory_per'] for r in bs]):,.0f}",
                             ratio(br, ar), "-", "-"])
        rows.append([f"{n:,}", "asyncio tasks (GC on)", spread(ar), spread([r["rss_per"] for r in asp]), "-",
                     "1.00x", "-", "-"])
    common.table(["processes", "runtime", "spawns/s", "RSS B/process", "other B/process", "vs asyncio",
                  "vs BEAM +S 1", "vs BEAM default"], rows)

    if beam is not None:
        print("memory: wippy's RSS per idle process against BEAM's (same N, medians):")
        for n in sizes:
            w_rss = [r["rss_per"] for r in w_sp[n]]
            b1 = b_sp[(n, SCHEDULERS[0][0])]
            print(f"  {n:,}: wippy RSS / BEAM RSS {ratio(w_rss, [r['rss_per'] for r in b1])}, "
                  f"wippy RSS / BEAM memory(processes) {ratio(w_rss, [r['memory_per'] for r in b1])} (BEAM +S 1; "
                  f"process_info(P, memory) of one idle BEAM process: "
                  f"{common.median([r['process_info_memory'] for r in b1]):,.0f} B)")
        print("(a ratio above 1 means wippy is faster, or, for memory, larger)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
