"""Latency of a trivial %%lua cell against a trivial Python cell, through a real client over ZeroMQ.

Starts the `wippy` kernel with jupyter_client, runs N executes of each (after a warm-up) and prints
p50/p90/p99 of the round trip (execute_request sent -> execute_reply received, with its output). The
issue's target: a %%lua cell at most 3 ms slower than a Python cell at p50. Figures, never a verdict
that fails: it exits 0.
Run: .venv/bin/python bench/bench_cells.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time

from jupyter_client.manager import start_new_kernel

CELLS = {
    "python `1 + 1`": "1 + 1",
    "%%lua `return 1 + 1`": "%%lua\nreturn 1 + 1",
    "%%lua print": "%%lua\nprint('x')",
    "%lua expression": "%lua 1 + 1",
}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(kc: object, code: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = kc.execute_interactive(code, timeout=30, output_hook=lambda msg: None)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t0) * 1000)
        assert reply["content"]["status"] == "ok", reply["content"]
    return out


def main() -> None:
    n = 50 if "--quick" in sys.argv else 200
    km, kc = start_new_kernel(kernel_name="wippy")
    try:
        for code in CELLS.values():
            measure(kc, code, 10)  # warm-up: the shell process, imports
        results = {name: measure(kc, code, n) for name, code in CELLS.items()}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(f"cell latency through jupyter_client, {n} executes each (ms)")
    print(f"{'cell':28} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7}")
    for name, xs in results.items():
        print(f"{name:28} {percentile(xs, 0.5):7.2f} {percentile(xs, 0.9):7.2f} "
              f"{percentile(xs, 0.99):7.2f} {statistics.mean(xs):7.2f}")
    base = percentile(results["python `1 + 1`"], 0.5)
    lua = percentile(results["%%lua `return 1 + 1`"], 0.5)
    verdict = "met" if lua - base <= 3.0 else "NOT met"
    print(f"target: %%lua at most 3 ms slower than Python at p50: {lua - base:+.2f} ms -> {verdict}")


if __name__ == "__main__":
    main()
