"""Durable workflows: what a journaled step costs, how fast a journal replays, how many workflows start per second.

    .venv/bin/python bench/bench_workflow.py [--quick] [--pg-url URL | --no-pg] [--dir DIR]

Definitions (what is counted; every case runs a real node on a fresh store):

* activity step: one workflow doing N ``funcs.call`` of a trivial ``function.lua`` activity. An activity's
  outcome is made durable at once, so each step is one transaction: this is the cost of a journaled step
  that must be durable before the workflow goes on (scheduler, Lua, Python and the store included).
  ms/step = wall time / N.
* steps in a loop: one workflow doing N ``time.now()`` without parking. Steps are buffered and written at
  the end of the run step (or before any effect that leaves the workflow), so the loop is one
  transaction: the cost of the Lua and Python path alone.
* group commit, W workflows: one process starts W workflows that each do K steps ``time.sleep("1ms")`` in
  step with each other; the steps they make in one run step share a transaction. ms/step = wall time /
  (W * K), their creation included.
* message: Python sends N signals (``node.workflows.signal``) one after another to a workflow that
  receives them (the signal is journaled when it arrives, its receive is a step): ms per message.
* replay: a workflow that journaled N steps (``time.now()``) and waits for a signal; the node is stopped, the
  signal written, a new node started: steps/s = N / (time from ``node.start()`` to the result), which
  includes reading the journal, handing it to Lua once, and consuming it there.
* starts/s, Python: ``node.workflows.start(entry)`` M times from one thread (a store create and a spawn on
  the host, each waited for). starts/s, Lua: one process spawning M workflows with ``process.spawn``
  (IDs generated), until the last has journaled its first step.

The disk of this machine is shared: one fsync takes 0.1-0.2 ms when it is quiet and up to ~1 ms when other
jobs write, so single-commit figures move with it (bench/bench_store.py measures the bare store).
SQLite runs in a fresh file under ``--dir`` (default: the system temp dir); PostgreSQL on a throwaway
server (tests/pg_server.py, fsync on) unless ``--pg-url`` names one (a fresh schema per case) or ``--no-pg``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import common
from wippy.runtime import Node, open_store

Store = Callable[[], contextlib.AbstractContextManager[str | None]]


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pg-url", help="use this PostgreSQL server instead of starting one (a schema per case)")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--dir", help="directory for the data directories (default: the system temp dir)")


_BASE: list[str] = []


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="wippy-bench-wf-", dir=_BASE[0] if _BASE else None))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def node(data: Path, store: str | None) -> Node:
    n = Node(output=None, data_dir=data, workflow_store=store)
    n.define("bench:noop", "function.lua", source="return { main = function(x) return x end }")
    return n


def run_flow(store: Store, body: str, n: int, workflows: int = 1) -> float:
    """Seconds for ``workflows`` workflows of ``body`` (given n) to finish, from their start."""
    with store() as target, data_dir() as data:
        nd = node(data, target).start()
        try:
            nd.define("bench:flow", "workflow.lua", modules=["funcs"],
                      source="return { main = function(n)\n" + body + "\nend }")
            nd.workflows.store.nodes()   # opened before timing
            t0 = time.perf_counter()
            ids = [nd.workflows.start("bench:flow", n) for _ in range(workflows)]
            for wid in ids:
                nd.workflows.result(wid, timeout=600)
            return time.perf_counter() - t0
        finally:
            nd.stop(grace=1.0)


def case_activity(store: Store, n: int) -> float:
    return run_flow(store, "for i = 1, n do funcs.call('bench:noop', i) end", n) / n


def case_loop(store: Store, n: int) -> float:
    return run_flow(store, "for i = 1, n do time.now() end", n) / n


def case_group(store: Store, workflows: int, k: int) -> float:
    with store() as target, data_dir() as data:
        nd = node(data, target).start()
        try:
            nd.define("bench:ticks", "workflow.lua",
                      source="return { main = function(k) for i = 1, k do time.sleep('1ms') end return true end }")
            nd.define("bench:fan", "process.lua", modules=["workflow"], source="""return { main = function(w, k)
              local ids = {}
              for i = 1, w do
                ids[i] = "g" .. i
                assert(process.with_options({ workflow_id = ids[i] }):spawn("bench:ticks", "app:processes", k))
              end
              for i = 1, w do assert(workflow.result(ids[i])) end
            end }""")
            nd.workflows.store.nodes()   # opened before timing
            t0 = time.perf_counter()
            nd.exec("bench:fan", workflows, k, timeout=600)
            return (time.perf_counter() - t0) / (workflows * k)
        finally:
            nd.stop(grace=1.0)


def case_message(store: Store, n: int) -> float:
    with store() as target, data_dir() as data:
        nd = node(data, target).start()
        try:
            nd.define("bench:inbox", "workflow.lua", source="return { main = function(n) "
                      "local ib = process.inbox() for i = 1, n do ib:receive() end end }")
            wid = nd.workflows.start("bench:inbox", n)
            t0 = time.perf_counter()
            for i in range(n):
                nd.workflows.signal(wid, "m", i)
            nd.workflows.result(wid, timeout=600)
            return (time.perf_counter() - t0) / n
        finally:
            nd.stop(grace=1.0)


def case_replay(store: Store, n: int) -> float:
    """Steps per second of a replay (node start to result)."""
    with store() as target, data_dir() as data:
        nd = node(data, target)
        nd.define("bench:long", "workflow.lua",
                  source="return { main = function(n) for i = 1, n do time.now() end "
                         "return process.listen('go'):receive() end }")
        nd.start()
        wid = nd.workflows.start("bench:long", n, workflow_id="long")
        deadline = time.monotonic() + 600
        while nd.workflows.get(wid).steps < n and time.monotonic() < deadline:
            time.sleep(0.01)
        nd.stop(grace=1.0)
        with open_store(target or str(data / "workflows.sqlite")) as s:
            s.signal(wid, "go", True)
        nd = node(data, target)
        nd.define("bench:long", "workflow.lua",
                  source="return { main = function(n) for i = 1, n do time.now() end "
                         "return process.listen('go'):receive() end }")
        t0 = time.perf_counter()
        nd.start()
        try:
            nd.workflows.result(wid, timeout=600)
            return n / (time.perf_counter() - t0)
        finally:
            nd.stop(grace=1.0)


def case_starts_python(store: Store, m: int) -> float:
    with store() as target, data_dir() as data:
        nd = node(data, target).start()
        try:
            nd.define("bench:one", "workflow.lua", source="return { main = function() "
                      "return process.listen('go'):receive() end }")
            nd.workflows.store.nodes()   # opened before timing
            t0 = time.perf_counter()
            for _ in range(m):
                nd.workflows.start("bench:one")
            return m / (time.perf_counter() - t0)
        finally:
            nd.stop(grace=1.0)


def case_starts_lua(store: Store, m: int) -> float:
    with store() as target, data_dir() as data:
        nd = node(data, target).start()
        try:
            nd.define("bench:one", "workflow.lua", source="return { main = function() "
                      "local t = time.now(); return process.listen('go'):receive() end }")
            nd.define("bench:starter", "process.lua", source="return { main = function(m) "
                      "for i = 1, m do assert(process.spawn('bench:one', 'app:processes')) end end }")
            st = nd.workflows.store
            t0 = time.perf_counter()
            nd.exec("bench:starter", m, timeout=600)
            deadline = time.monotonic() + 600
            while sum(r.steps for r in st.list("running")) < m and time.monotonic() < deadline:
                time.sleep(0.005)
            return m / (time.perf_counter() - t0)
        finally:
            nd.stop(grace=1.0)


def suite(backend: str, store: Store, quick: bool) -> list[list[str]]:
    n = 200 if quick else 2000
    repeat = 1 if quick else 3
    rows: list[list[str]] = []

    def ms_row(case: str, count: int, fn: Callable[[], float]) -> None:
        samples = [fn() * 1000 for _ in range(repeat)]
        med = common.median(samples)
        rows.append([backend, case, f"{count:,}", f"{med:.3f} ({min(samples):.3f})", common.fmt_rate(1000 / med)])

    def rate_row(case: str, count: int, fn: Callable[[], float]) -> None:
        samples = [fn() for _ in range(repeat)]
        rows.append([backend, case, f"{count:,}", "", f"{common.fmt_rate(common.median(samples))} "
                     f"(best {common.fmt_rate(max(samples))})"])

    ms_row("activity step (one commit each)", n // 2, lambda: case_activity(store, n // 2))
    ms_row("steps in a loop (time.now(), no park)", n * 5, lambda: case_loop(store, n * 5))
    ms_row("group commit, 50 workflows in step", 50 * (n // 100),
           lambda: case_group(store, 50, n // 100))
    ms_row("message (signal + its receive)", n // 4, lambda: case_message(store, n // 4))
    rate_row("replay: steps/s (node start to result)", n * 10, lambda: case_replay(store, n * 10))
    rate_row("starts/s from Python (start, sequential)", n // 4, lambda: case_starts_python(store, n // 4))
    rate_row("starts/s from Lua (process.spawn)", n // 2, lambda: case_starts_lua(store, n // 2))
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra=_options)
    common.header("durable workflows: journaled steps, replay, starts", args.quick)
    if args.dir:
        _BASE.append(args.dir)
    headers = ["store", "case", "n", "ms/step median (best)", "rate"]

    @contextlib.contextmanager
    def sqlite_store() -> Iterator[str | None]:
        yield None   # the default: data_dir/workflows.sqlite

    print(f"SQLite (WAL, synchronous=FULL), data directories in {args.dir or tempfile.gettempdir()}")
    common.table(headers, suite("sqlite", sqlite_store, args.quick))
    if args.no_pg:
        return
    import pg_server

    with common.postgres(args.pg_url) as found:
        if found is None:
            return
        url, where = found

        def pg_store() -> contextlib.AbstractContextManager[Any]:
            return pg_server.isolated_url(url)

        print(f"PostgreSQL: {where}")
        common.table(headers, suite("postgresql", pg_store, args.quick))


if __name__ == "__main__":
    main()
