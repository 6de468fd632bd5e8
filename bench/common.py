"""Shared helpers for the benchmarks in bench/: timing, percentiles, RSS, tables, and the baselines.

Every benchmark prints figures, never verdicts: nothing here asserts on speed. The baselines (plain
asyncio, pykka) run in the same process and the same run as the figures they are compared with, so the
ratios hold even on a noisy machine where the absolute numbers move from run to run.

Imported by the scripts as ``common`` (they put bench/ on ``sys.path`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------- arguments


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The common command line: ``--quick`` for a short run (smaller sizes, one repeat)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a short run (about 15 s): smaller sizes, one repeat")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


# --------------------------------------------------------------------------------------- header


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_pressure() -> float | None:
    """Percent of the last 10 s some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def lua_version() -> str:
    from lupa import lua54

    rt = lua54.LuaRuntime(encoding=None)
    v = rt.eval("_VERSION")
    return v.decode() if isinstance(v, bytes) else str(v)


def runtime_fingerprint() -> str:
    """The commit and a short hash of the runtime sources, so figures can be tied to the code measured.

    Only reads: ``git rev-parse`` and ``git status --porcelain`` change nothing.
    """
    import hashlib
    import subprocess

    h = hashlib.sha256()
    for f in sorted((ROOT / "runtime").rglob("*")):
        if f.is_file() and f.suffix in (".py", ".lua"):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "runtime"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "unknown", ""
    changes = " + uncommitted runtime changes" if dirty else ""
    return f"commit {head or 'unknown'}{changes}, runtime sources sha256 {h.hexdigest()[:12]}"


def header(title: str, quick: bool) -> None:
    """Print what the figures below were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    print(f"# {title}{'  (--quick)' if quick else ''}")
    print(f"date:    {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"python:  {platform.python_version()} ({platform.python_implementation()}, {sys.platform})")
    print(f"lupa:    {_version('lupa')} (lupa.lua54, {lua_version()})   pykka: {_version('pykka')}")
    print(f"cpu:     {os.cpu_count()} CPUs ({usable} usable), {_cpu_model()}")
    print(f"runtime: {runtime_fingerprint()}")
    load = os.getloadavg()
    pressure = _cpu_pressure()
    shown = f"; CPU pressure: runnable tasks waited {pressure:.0f}% of the last 10 s" if pressure is not None else ""
    print(f"load:    {' '.join(f'{x:.2f}' for x in load)} (1/5/15 min, before this run){shown}")
    busy = pressure >= 20 if pressure is not None else load[0] >= 0.5 * (os.cpu_count() or 1)
    if busy:
        print("         the CPUs were contended just before this run (other work, or a benchmark that just")
        print("         ended): absolute figures may be low; the ratios to the same-run baselines hold better")
    print()


# --------------------------------------------------------------------------------------- measuring


def best_of(fn: Callable[[], float], repeat: int) -> tuple[float, list[float]]:
    """Call ``fn`` (which returns seconds) ``repeat`` times; return (the least, all of them)."""
    times = []
    for _ in range(max(1, repeat)):
        gc.collect()
        times.append(fn())
    return min(times), times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks."""
    if not samples:
        return float("nan")
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean in microseconds of samples in nanoseconds."""
    us = [s / 1000.0 for s in samples_ns]
    return {
        "p50": percentile(us, 50),
        "p90": percentile(us, 90),
        "p99": percentile(us, 99),
        "max": max(us),
        "mean": statistics.fmean(us),
    }


def rss_bytes() -> int:
    """This process's resident set size (VmRSS of /proc/self/status), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------------------- printing


def fmt_rate(x: float) -> str:
    """Messages (or spawns) per second, plainly: 1,234,567/s."""
    return f"{x:,.0f}/s"


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))
    print()


# --------------------------------------------------------------------------------------- asyncio baselines


def baseline_asyncio_pingpong(n: int) -> float:
    """Two asyncio tasks exchange ``n`` round trips through two asyncio.Queue (2n messages).

    The payload is a 2-key dict passed by reference (no copy). Returns wall seconds.
    """

    async def run() -> float:
        to_pong: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        to_ping: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def pong() -> None:
            while True:
                m = await to_pong.get()
                if m is None:
                    return
                to_ping.put_nowait(m)

        task = asyncio.create_task(pong())
        t0 = time.perf_counter()
        for i in range(n):
            to_pong.put_nowait({"i": i, "s": "x"})
            await to_ping.get()
        t = time.perf_counter() - t0
        to_pong.put_nowait(None)
        await task
        return t

    return asyncio.run(run())


def baseline_asyncio_fanout(rounds: int, fan: int = 1000) -> float:
    """One asyncio task sends to ``fan`` worker tasks (one asyncio.Queue each) and collects ``fan``
    replies, ``rounds`` times: 2 * fan * rounds messages. Returns wall seconds."""

    async def run() -> float:
        replies: asyncio.Queue[int] = asyncio.Queue()
        inboxes: list[asyncio.Queue[int | None]] = [asyncio.Queue() for _ in range(fan)]

        async def worker(q: asyncio.Queue[int | None]) -> None:
            while True:
                m = await q.get()
                if m is None:
                    return
                replies.put_nowait(m)

        tasks = [asyncio.create_task(worker(q)) for q in inboxes]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for r in range(rounds):
            for q in inboxes:
                q.put_nowait(r)
            for _ in range(fan):
                await replies.get()
        t = time.perf_counter() - t0
        for q in inboxes:
            q.put_nowait(None)
        await asyncio.gather(*tasks)
        return t

    return asyncio.run(run())


def baseline_asyncio_spawn(n: int) -> dict[str, float]:
    """Create ``n`` asyncio tasks that each park on their own asyncio.Queue; tasks/s and bytes each.

    The time covers creating the tasks and running each once to its first await. Run it in a fresh
    process for an honest RSS delta.
    """
    result: dict[str, float] = {}

    async def idle(q: asyncio.Queue[None]) -> None:
        await q.get()

    async def run() -> None:
        await asyncio.sleep(0)
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        queues: list[asyncio.Queue[None]] = [asyncio.Queue() for _ in range(n)]
        tasks = [asyncio.create_task(idle(q)) for q in queues]
        await asyncio.sleep(0)          # every task runs once, up to its await
        t = time.perf_counter() - t0
        gc.collect()
        rss1 = rss_bytes()
        result.update(seconds=t, rate=n / t, rss_per=(rss1 - rss0) / n)
        for q in queues:
            q.put_nowait(None)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    return result


class AsyncioEcho:
    """An event loop on its own thread with an echo task: round trips from the calling thread.

    The caller hands the message over with ``loop.call_soon_threadsafe(queue.put_nowait, ...)``; the
    echo task answers through a ``queue.SimpleQueue`` the caller blocks on (the same shape as a wippy
    Mailbox).
    """

    def __init__(self) -> None:
        import queue as _queue

        ready = threading.Event()
        self._back: _queue.SimpleQueue[Any] = _queue.SimpleQueue()
        self._box: dict[str, Any] = {}

        def loop_thread() -> None:
            async def main() -> None:
                q: asyncio.Queue[Any] = asyncio.Queue()
                self._box["loop"] = asyncio.get_running_loop()
                self._box["q"] = q
                ready.set()
                while True:
                    m = await q.get()
                    if m is None:
                        return
                    self._back.put(m)

            asyncio.run(main())

        self._thread = threading.Thread(target=loop_thread, daemon=True)
        self._thread.start()
        ready.wait()

    def round_trips(self, count: int, warmup: int = 0) -> list[int]:
        loop, q, back = self._box["loop"], self._box["q"], self._back
        out = []
        for i in range(warmup + count):
            t0 = time.perf_counter_ns()
            loop.call_soon_threadsafe(q.put_nowait, {"i": i, "s": "x"})
            back.get()
            dt = time.perf_counter_ns() - t0
            if i >= warmup:
                out.append(dt)
        return out

    def close(self) -> None:
        self._box["loop"].call_soon_threadsafe(self._box["q"].put_nowait, None)
        self._thread.join(5)


class PykkaEcho:
    """An echo ThreadingActor: round trips of ``ask()`` from the calling thread."""

    def __init__(self) -> None:
        import pykka

        class Echo(pykka.ThreadingActor):
            def on_receive(self, message: Any) -> Any:
                return message

        self._ref = Echo.start()

    def round_trips(self, count: int, warmup: int = 0) -> list[int]:
        out = []
        for i in range(warmup + count):
            t0 = time.perf_counter_ns()
            self._ref.ask({"i": i, "s": "x"})
            dt = time.perf_counter_ns() - t0
            if i >= warmup:
                out.append(dt)
        return out

    def close(self) -> None:
        self._ref.stop()


def baseline_asyncio_latency(samples: int, warmup: int) -> list[int]:
    """Round trips (ns) into an asyncio loop on another thread and back (see :class:`AsyncioEcho`)."""
    e = AsyncioEcho()
    try:
        return e.round_trips(samples, warmup)
    finally:
        e.close()


def baseline_pykka_latency(samples: int, warmup: int) -> list[int]:
    """Round trips (ns) of ``ask()`` to an echo ThreadingActor (see :class:`PykkaEcho`)."""
    e = PykkaEcho()
    try:
        return e.round_trips(samples, warmup)
    finally:
        e.close()


# --------------------------------------------------------------------------------------- pykka baselines


def baseline_pykka_pingpong(n: int) -> float:
    """Two pykka ThreadingActors exchange ``n`` round trips with ``tell()`` (2n messages; each message
    carries the sender's ActorRef to reply to, so no futures are involved). Returns wall seconds."""
    import pykka

    done = threading.Event()

    class Pong(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> None:
            message["reply_to"].tell({"i": message["i"], "s": "x", "reply_to": self.actor_ref})

    class Ping(pykka.ThreadingActor):
        def __init__(self, pong: Any) -> None:
            super().__init__()
            self.pong = pong

        def on_receive(self, message: Any) -> None:
            i = message["i"]
            if i >= n:
                done.set()
                return
            self.pong.tell({"i": i + 1, "s": "x", "reply_to": self.actor_ref})

    pong = Pong.start()
    ping = Ping.start(pong)
    t0 = time.perf_counter()
    ping.tell({"i": 0})
    done.wait()
    t = time.perf_counter() - t0
    ping.stop()
    pong.stop()
    return t


def baseline_pykka_fanout(rounds: int, fan: int = 1000) -> float:
    """One pykka actor tells ``fan`` worker actors (one thread each) and counts ``fan`` replies,
    ``rounds`` times: 2 * fan * rounds messages, all tell(). Returns wall seconds (actor start-up
    excluded)."""
    import pykka

    done = threading.Event()

    class Worker(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> None:
            message[1].tell(message[0])

    class Coordinator(pykka.ThreadingActor):
        def __init__(self, workers: list[Any]) -> None:
            super().__init__()
            self.workers = workers
            self.round = 0
            self.got = 0

        def _send_round(self) -> None:
            me = self.actor_ref
            for w in self.workers:
                w.tell((self.round, me))

        def on_receive(self, message: Any) -> None:
            if message == "go":
                self._send_round()
                return
            self.got += 1
            if self.got == len(self.workers):
                self.got = 0
                self.round += 1
                if self.round >= rounds:
                    done.set()
                else:
                    self._send_round()

    workers = [Worker.start() for _ in range(fan)]
    coord = Coordinator.start(workers)
    t0 = time.perf_counter()
    coord.tell("go")
    done.wait()
    t = time.perf_counter() - t0
    coord.stop()
    for w in workers:
        w.stop(block=False)
    for w in workers:
        w.actor_stopped.wait(10)
    return t


def baseline_pykka_spawn(n: int) -> dict[str, float]:
    """Start ``n`` idle pykka ThreadingActors (one OS thread each); starts/s and RSS bytes each."""
    import pykka

    class Idle(pykka.ThreadingActor):
        pass

    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    refs = [Idle.start() for _ in range(n)]
    t = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    for r in refs:
        r.stop(block=False)
    for r in refs:
        r.actor_stopped.wait(30)
    return {"seconds": t, "rate": n / t, "rss_per": (rss1 - rss0) / n}


# --------------------------------------------------------------------------------------- wippy helpers


def make_node(budget: int, heap_limit: int | None = None) -> Any:
    """A started Node whose default host has the given instruction budget (0 = no count hook)."""
    from wippy.runtime import HostOptions, Node

    kw: dict[str, Any] = {"instruction_budget": budget}
    if heap_limit is not None:
        kw["heap_limit"] = heap_limit
    return Node(output=None, host_options=HostOptions(**kw)).start()


def lua_gc(node: Any, host: str | None = None) -> None:
    """A full collection in a host's Lua state (on its thread)."""
    node.call(lambda ctx: ctx.lua.execute(b"collectgarbage(); collectgarbage()"), host=host)


def lua_memory(node: Any, host: str = "app:processes") -> int:
    return int(node.statistics(memory=False).hosts[host].lua_memory)


def budget_label(budget: int) -> str:
    return "off" if budget == 0 else f"on ({budget:,})"


# --------------------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[tuple[str, str] | None]:
    """A PostgreSQL server for a benchmark: ``url`` when given, else a throwaway one (fsync on, from
    tests/pg_server.py) stopped afterwards. Yields ``(url, where)`` (``where`` says which, without the
    password), or None after printing why none could be started."""
    sys.path.insert(0, str(ROOT / "tests"))
    import pg_server
    from wippy.runtime.workflow_store import redact_url

    server = None
    if url is None:
        try:
            server = pg_server.start_postgres(fsync=True)
        except pg_server.PostgresNotFound as exc:
            print(f"PostgreSQL: not measured ({exc})")
            yield None
            return
        url = server.url
    try:
        yield url, ("a throwaway server on 127.0.0.1, fsync on (tests/pg_server.py)" if server else redact_url(url))
    finally:
        if server is not None:
            server.stop()
