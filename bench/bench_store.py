"""The durable-workflow store: what one journaled step costs, single and group-committed, SQLite and PostgreSQL.

    .venv/bin/python bench/bench_store.py [--quick] [--pg-url URL | --no-pg] [--dir DIR]

Definitions (what is counted):

* single append: ``store.append(wid, seq, "call", hash, {"ok": True, "n": seq})``, one workflow, steps one
  after another; each is one durable transaction (SQLite: WAL, ``synchronous=FULL``, so one fsync;
  PostgreSQL: one statement in autocommit, so one round trip and one WAL flush).
* 4 threads, single: four threads of one store, each appending to its own workflow; the figure is wall
  time over all their steps (their commits queue for the file lock or the WAL flush).
* group commit, batch N: ``store.append_many`` with N steps spread over 10 workflows in one transaction
  (what an engine's committer thread does with the steps of all its workflows that arrived meanwhile).
* signal: ``store.signal(wid, "topic", {"n": i})``.
* journal read: ``store.journal(wid)`` of a 1000-step journal (per step).
* floor: the same durable insert written with the bare driver (sqlite3 INSERT + COMMIT; psycopg one
  autocommit INSERT), so the store's own overhead shows as the difference.

ms/step is wall time divided by steps; the median over repeats is shown (best in brackets). SQLite runs in
a fresh file under ``--dir`` (default: the system temp dir, on this machine the same disk as /work).
PostgreSQL runs on a throwaway server that this script starts (tests/pg_server.py, fsync on) unless
``--pg-url`` names one (each case uses a fresh schema in it) or ``--no-pg``.

For comparison (not measured by this script): DBOS 3.x took 2.3 ms per step on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import common
from wippy.runtime.workflow_store import Step, WorkflowStore, open_store

Target = Callable[[], contextlib.AbstractContextManager[str]]


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pg-url", help="use this PostgreSQL server instead of starting one (a schema per case)")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--dir", help="directory for the SQLite files (default: the system temp dir)")


def _result(n: int) -> dict[str, Any]:
    return {"ok": True, "n": n}


# ------------------------------------------------------------------------------------------ cases
def case_single(store: WorkflowStore, n: int) -> float:
    store.create("single", "bench:flow", None, "node")
    t0 = time.perf_counter()
    for seq in range(1, n + 1):
        store.append("single", seq, "call", "3f2a9c", _result(seq))
    return time.perf_counter() - t0


def case_threads(store: WorkflowStore, n: int, threads: int = 4) -> float:
    per = n // threads
    for i in range(threads):
        store.create(f"t{i}", "bench:flow", None, "node")
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            store.get(f"t{i}")  # connect before the clock starts
            start.wait()
            for seq in range(1, per + 1):
                store.append(f"t{i}", seq, "call", "3f2a9c", _result(seq))
        except BaseException as exc:
            errors.append(exc)
            raise

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return dt * n / (per * threads)  # per-step time over n steps


def case_batch(store: WorkflowStore, n: int, batch: int, workflows: int = 10) -> float:
    for w in range(workflows):
        store.create(f"b{w}", "bench:flow", None, "node")
    next_seq = [1] * workflows
    t0 = time.perf_counter()
    done = 0
    while done < n:
        steps = []
        for i in range(min(batch, n - done)):
            w = i % workflows
            steps.append(Step(f"b{w}", next_seq[w], "call", "3f2a9c", _result(next_seq[w])))
            next_seq[w] += 1
        refused = store.append_many(steps)
        if refused:
            raise RuntimeError(f"refused: {refused}")
        done += len(steps)
    return time.perf_counter() - t0


def case_signal(store: WorkflowStore, n: int) -> float:
    store.create("sig", "bench:flow", None, "node")
    t0 = time.perf_counter()
    for i in range(n):
        store.signal("sig", "topic", {"n": i})
    return time.perf_counter() - t0


def case_read(store: WorkflowStore, n: int) -> float:
    store.create("read", "bench:flow", None, "node")
    store.append_many(Step("read", seq, "call", "3f2a9c", _result(seq)) for seq in range(1, 1001))
    reads = max(1, n // 1000)
    t0 = time.perf_counter()
    for _ in range(reads):
        assert len(store.journal("read")) == 1000
    return (time.perf_counter() - t0) * n / (reads * 1000)


def floor_sqlite(path: str, n: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE j(w TEXT, seq INTEGER, v TEXT, PRIMARY KEY (w, seq)) WITHOUT ROWID")
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO j VALUES ('w', ?, '{\"ok\":true}')", (seq,))
            db.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        db.close()


def floor_pg(url: str, n: int) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE j(w text, seq bigint, v text, PRIMARY KEY (w, seq))")
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            conn.execute("INSERT INTO j VALUES ('w', %s, '{\"ok\":true}')", (seq,))
        return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ running
def measure(target: Target, n: int, repeat: int, run: Callable[[WorkflowStore], float]) -> list[float]:
    """ms/step of ``run`` over ``repeat`` fresh stores."""
    out = []
    for _ in range(repeat):
        with target() as where, open_store(where) as store:
            out.append(run(store) / n * 1000)
    return out


def measure_floor(target: Target, n: int, repeat: int, floor: Callable[[str, int], float]) -> list[float]:
    out = []
    for _ in range(repeat):
        with target() as where:
            out.append(floor(where, n) / n * 1000)
    return out


def row(backend: str, case: str, n: int, ms: list[float]) -> list[str]:
    med = statistics.median(ms)
    return [backend, case, f"{n:,}", f"{med:.3f} ({min(ms):.3f})", common.fmt_rate(1000 / med)]


def suite(backend: str, target: Target, quick: bool, floor: Callable[[str, int], float]) -> list[list[str]]:
    n = 300 if quick else 2000
    repeat = 1 if quick else 3
    rows = [
        row(backend, "floor: bare driver, 1 durable insert", n, measure_floor(target, n, repeat, floor)),
        row(backend, "single append", n, measure(target, n, repeat, lambda s: case_single(s, n))),
        row(backend, "single append, 4 threads", n, measure(target, n, repeat, lambda s: case_threads(s, n))),
    ]
    for batch in (10, 100):
        nb = n * 5 if batch == 100 else n
        rows.append(row(backend, f"group commit, batch {batch}", nb,
                        measure(target, nb, repeat, lambda s, b=batch, k=nb: case_batch(s, k, b))))
    rows.append(row(backend, "signal", n, measure(target, n, repeat, lambda s: case_signal(s, n))))
    nr = 20_000 if quick else 100_000
    rows.append(row(backend, "journal read (per step, 1000 steps)", nr, measure(target, nr, repeat,
                                                                               lambda s: case_read(s, nr))))
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra=_options)
    common.header("workflow store: ms per journaled step", args.quick)
    base = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    counter = iter(range(10**9))

    @contextlib.contextmanager
    def sqlite_target() -> Iterator[str]:
        with tempfile.TemporaryDirectory(dir=base, prefix="wippy-bench-") as d:
            yield str(Path(d) / f"store{next(counter)}.sqlite")

    headers = ["backend", "case", "steps", "ms/step median (best)", "steps/s"]
    rows = suite("sqlite", sqlite_target, args.quick, floor_sqlite)
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL, files in {base}")
    common.table(headers, rows)

    if args.no_pg:
        return
    import pg_server

    with common.postgres(args.pg_url) as found:
        if found is None:
            return
        url, where = found
        import psycopg

        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()

        def pg_target() -> contextlib.AbstractContextManager[str]:
            return pg_server.isolated_url(url)

        rows = suite("postgresql", pg_target, args.quick, floor_pg)
        print(f"PostgreSQL {version[0] if version else '?'}, fsync={fsync[0] if fsync else '?'}, "
              f"synchronous_commit={sync[0] if sync else '?'}, psycopg {psycopg.__version__}, {where}")
        common.table(headers, rows)
    print("For comparison (not measured here): DBOS 3.x took 2.3 ms per step on this machine.")


if __name__ == "__main__":
    main()
