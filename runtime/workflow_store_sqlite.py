"""The SQLite backend of the workflow store: one file, several threads and OS processes of one machine.

The contract, the records and the codec are in ``workflow_store_base.py``; :func:`~.workflow_store.open_store`
opens this backend for a path or a ``sqlite:///`` URL.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import StoreError, StoreOpenError, WippyError
from .workflow_store_base import (
    SCHEMA_VERSION,
    WF_COLUMNS,
    JournalRecord,
    SignalRecord,
    Step,
    WorkflowRecord,
    WorkflowStatus,
    WorkflowStore,
    check_id,
)

__all__ = ["SQLiteWorkflowStore"]



# ---------------------------------------------------------------------------------------------- SQLite
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS wippy_store_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS wippy_workflows("
    " workflow_id TEXT PRIMARY KEY, entry_id TEXT NOT NULL, input TEXT NOT NULL, status TEXT NOT NULL,"
    " result TEXT, error TEXT, owner TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " steps INTEGER NOT NULL DEFAULT 0, signals INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS wippy_workflows_status ON wippy_workflows(status, created_at)",
    "CREATE INDEX IF NOT EXISTS wippy_workflows_running ON wippy_workflows(owner) WHERE status = 'running'",
    "CREATE TABLE IF NOT EXISTS wippy_journal("
    " workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, op TEXT NOT NULL, args_hash TEXT NOT NULL,"
    " result TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (workflow_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS wippy_signals("
    " workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (workflow_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS wippy_nodes(node_id TEXT PRIMARY KEY, heartbeat_at REAL NOT NULL)",
)
_SQ_STEP = (
    "UPDATE wippy_workflows SET steps = ?, updated_at = ? "
    "WHERE workflow_id = ? AND steps = ? AND status = 'running' AND (? IS NULL OR owner = ?)"
)
_SQ_INSERT_STEP = "INSERT INTO wippy_journal(workflow_id, seq, op, args_hash, result, at) VALUES (?, ?, ?, ?, ?, ?)"
_SQ_STATE = "SELECT status, steps, owner FROM wippy_workflows WHERE workflow_id = ?"
_SQ_BEAT = (
    "INSERT INTO wippy_nodes(node_id, heartbeat_at) VALUES (?, ?) "
    "ON CONFLICT(node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
# SQL is built from these constants only (every value is a bound parameter): S608 does not apply
_SQ_GET = "SELECT " + WF_COLUMNS + " FROM wippy_workflows WHERE workflow_id = ?"  # noqa: S608
_SQ_LIST = "SELECT " + WF_COLUMNS + " FROM wippy_workflows ORDER BY created_at, workflow_id"  # noqa: S608
_SQ_LIST_STATUS = (
    "SELECT " + WF_COLUMNS + " FROM wippy_workflows WHERE status = ? ORDER BY created_at, workflow_id"  # noqa: S608
)
_SQ_ORPHANS = (
    "SELECT w.workflow_id FROM wippy_workflows w WHERE w.status = 'running' "
    "AND (w.owner IS NULL OR w.owner <> ?) "
    "AND NOT EXISTS (SELECT 1 FROM wippy_nodes n WHERE n.node_id = w.owner AND n.heartbeat_at >= ?) "
    "ORDER BY w.created_at, w.workflow_id LIMIT ?"
)


class SQLiteWorkflowStore(WorkflowStore):
    """The store in one SQLite file (WAL, ``synchronous=FULL``, a busy timeout): for one machine, shared
    by the threads of a process and by several OS processes. Open it with :func:`open_store`.

    Each thread gets its own connection; every write is one ``BEGIN IMMEDIATE`` transaction, so writers
    of all threads and processes take turns (waiting up to ``busy_timeout`` seconds), and readers never
    wait (WAL).
    """

    def __init__(self, path: Path, *, now: Callable[[], float] | None = None, busy_timeout: float = 10.0) -> None:
        super().__init__(str(path), now)
        self.path = path
        self._busy_timeout = busy_timeout
        self._clock: Callable[[], float] = now if now is not None else time.time
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: builtins.list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._open()

    # ------------------------------------------------------------------ connections
    def _open(self) -> None:
        """Check the path, create the schema or check its version (the opening thread)."""
        where = self._where()
        parent = self.path.parent
        if not parent.is_dir():
            raise StoreOpenError(
                f"{where}: cannot open it: the directory {parent} does not exist; create it first, or choose "
                "another path",
                self.location,
            )
        if self.path.is_dir():
            raise StoreOpenError(
                f"{where}: cannot open it: it is a directory; give the path of a file (in it, e.g. "
                f"{self.path / 'workflows.sqlite'})",
                self.location,
            )
        try:
            db = self._conn()
        except StoreError as exc:
            self.close()
            raise StoreOpenError(str(exc), self.location) from exc.__cause__
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreOpenError(
                    f"{where}: SQLite refused write-ahead logging (journal mode {mode!r}); put the store on a "
                    "local file system",
                    self.location,
                )
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SQLITE_SCHEMA:
                    db.execute(stmt)
                db.execute(
                    "INSERT OR IGNORE INTO wippy_store_meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
                schema = db.execute("SELECT value FROM wippy_store_meta WHERE key = 'schema'").fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except StoreOpenError:
            self.close()
            raise
        except sqlite3.Error as exc:
            self.close()
            raise StoreOpenError(self._open_failure(exc), self.location) from exc
        if schema != SCHEMA_VERSION:
            self.close()
            raise StoreOpenError(
                f"{where}: its schema is {schema!r}, not the one this runtime reads ({SCHEMA_VERSION!r}); "
                "open it with the wippy version that wrote it, or move it away",
                self.location,
            )

    def _open_failure(self, exc: sqlite3.Error) -> str:
        if isinstance(exc, sqlite3.OperationalError):  # cannot open or create the file, or locked too long
            return (
                f"{self._where()}: cannot open it ({exc}); check the path, its permissions, and that no other "
                "process holds it locked"
            )
        return (  # a file that is not an SQLite database
            f"{self._where()}: cannot read it as a workflow store ({exc}); is it an SQLite file written by "
            "wippy? Move it away, or choose another path"
        )

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first call (StoreError if it cannot be)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        if self._closed:
            raise self._closed_error()
        try:
            db = sqlite3.connect(
                str(self.path), timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(self._open_failure(exc), self.location) from exc
        try:
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(self._open_failure(exc), self.location) from exc
        me = threading.current_thread()
        with self._lock:
            if self._closed:
                db.close()
                raise self._closed_error()
            # connections of threads that have ended are closed here (their thread cannot any more)
            alive = []
            for thread, other in self._conns:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((me, db))
            self._conns = alive
        self._local.db = db
        return db

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for _, db in conns:
            db.close()
        self._local = threading.local()

    def _fail(self, what: str, exc: sqlite3.Error, workflow_id: str | None = None) -> StoreError:
        hint = (
            f"another process held the file locked for more than {self._busy_timeout:g} s; retry"
            if "locked" in str(exc) or "busy" in str(exc)
            else "check the disk (space, permissions)"
        )
        about = f" of workflow {workflow_id!r}" if workflow_id is not None else ""
        return StoreError(f"{self._where()}: {what}{about} failed ({exc}): {hint}", self.location, workflow_id)

    def _write(self, db: sqlite3.Connection) -> _SQLiteWrite:
        return _SQLiteWrite(db)

    # ------------------------------------------------------------------ workflows
    def _create(self, workflow_id: str, entry_id: str, text: str, node_id: str) -> tuple[bool, WorkflowRecord]:
        now = self._clock()
        db = self._conn()
        try:
            with self._write(db):
                cur = db.execute(
                    "INSERT OR IGNORE INTO wippy_workflows(workflow_id, entry_id, input, status, owner, created_at,"
                    " updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                    (workflow_id, entry_id, text, node_id, now, now),
                )
                created = cur.rowcount == 1
                db.execute(_SQ_BEAT, (node_id, now))
                row = db.execute(_SQ_GET, (workflow_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("create", exc, workflow_id) from exc
        return created, self._record(row)

    def get(self, workflow_id: str) -> WorkflowRecord | None:
        db = self._conn()
        try:
            row = db.execute(_SQ_GET, (workflow_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("get", exc, workflow_id) from exc
        return None if row is None else self._record(row)

    def list(self, status: WorkflowStatus | None = None) -> builtins.list[WorkflowRecord]:
        if status is not None:
            self._check_status(status, finished=False)
        db = self._conn()
        try:
            if status is None:
                rows = db.execute(_SQ_LIST).fetchall()
            else:
                rows = db.execute(_SQ_LIST_STATUS, (status,)).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("list", exc) from exc
        return [self._record(r) for r in rows]

    def _finish(self, workflow_id: str, status: WorkflowStatus, result_text: str | None, error_text: str | None,
                node_id: str | None) -> WorkflowRecord:
        now = self._clock()
        db = self._conn()
        row = state = None
        try:
            with self._write(db):
                cur = db.execute(
                    "UPDATE wippy_workflows SET status = ?, result = ?, error = ?, updated_at = ? "
                    "WHERE workflow_id = ? AND status = 'running' AND (? IS NULL OR owner = ?)",
                    (status, result_text, error_text, now, workflow_id, node_id, node_id),
                )
                if cur.rowcount == 1:
                    row = db.execute(_SQ_GET, (workflow_id,)).fetchone()
                else:
                    state = db.execute(_SQ_STATE, (workflow_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("finish", exc, workflow_id) from exc
        if row is None:
            raise self._refusal(workflow_id, state, node_id=node_id, action="finish")
        return self._record(row)

    # ------------------------------------------------------------------ journal
    def _append(self, workflow_id: str, seq: int, op: str, args_hash: str, text: str, node_id: str | None) -> None:
        now = self._clock()
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(_SQ_STEP, (seq, now, workflow_id, seq - 1, node_id, node_id))
                if cur.rowcount == 1:
                    db.execute(_SQ_INSERT_STEP, (workflow_id, seq, op, args_hash, text, now))
                    db.execute("COMMIT")
                    return
                state = db.execute(_SQ_STATE, (workflow_id,)).fetchone()
                db.execute("ROLLBACK")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise self._corrupt(
                workflow_id, seq, f"step {seq} is already in its journal although its record counts {seq - 1} steps",
                exc,
            ) from exc
        except sqlite3.Error as exc:
            raise self._fail(f"append of step {seq}", exc, workflow_id) from exc
        raise self._refusal(workflow_id, state, seq=seq, node_id=node_id)

    def append_many(self, steps: Iterable[Step], *, node_id: str | None = None) -> dict[str, WippyError]:
        groups = self._group(steps)
        refused: dict[str, WippyError] = {}
        batches: builtins.list[tuple[str, builtins.list[tuple[int, str, str, str]]]] = []
        for wid, group in groups.items():
            rows = self._batch_rows(wid, group)
            if isinstance(rows, WippyError):
                refused[wid] = rows
            else:
                batches.append((wid, rows))
        if not batches:
            return refused
        now = self._clock()
        db = self._conn()
        try:
            self._append_batches(db, batches, now, node_id, refused)
        except sqlite3.IntegrityError:
            # a journal row that its record does not count (a store edited by hand): write the workflows
            # one by one so that only the broken one is refused
            for batch in batches:
                refused.pop(batch[0], None)
                try:
                    self._append_batches(db, [batch], now, node_id, refused)
                except sqlite3.IntegrityError as exc:
                    wid, rows = batch
                    refused[wid] = self._corrupt(
                        wid, rows[0][0], "a step of this batch is already in its journal but not counted", exc
                    )
                except sqlite3.Error as exc:
                    raise self._fail("append_many", exc) from exc
        except sqlite3.Error as exc:
            raise self._fail("append_many", exc) from exc
        return refused

    def _append_batches(
        self,
        db: sqlite3.Connection,
        batches: Sequence[tuple[str, builtins.list[tuple[int, str, str, str]]]],
        now: float,
        node_id: str | None,
        refused: dict[str, WippyError],
    ) -> None:
        """One transaction: each workflow's guarded counter update, then its rows (or its refusal)."""
        found: dict[str, tuple[Any, ...] | None] = {}
        with self._write(db):
            for wid, rows in batches:
                first, last = rows[0][0], rows[-1][0]
                cur = db.execute(_SQ_STEP, (last, now, wid, first - 1, node_id, node_id))
                if cur.rowcount != 1:
                    found[wid] = db.execute(_SQ_STATE, (wid,)).fetchone()
                    continue
                db.executemany(_SQ_INSERT_STEP, [(wid, seq, op, h, text, now) for seq, op, h, text in rows])
        for wid, state in found.items():
            first = next(rows[0][0] for w, rows in batches if w == wid)
            refused[wid] = self._refusal(wid, state, seq=first, node_id=node_id)

    def journal(self, workflow_id: str, after_seq: int = 0) -> builtins.list[JournalRecord]:
        db = self._conn()
        try:
            rows = db.execute(
                "SELECT w.steps, j.seq, j.op, j.args_hash, j.result, j.at FROM wippy_workflows w "
                "LEFT JOIN wippy_journal j ON j.workflow_id = w.workflow_id AND j.seq > ? "
                "WHERE w.workflow_id = ? ORDER BY j.seq",
                (after_seq, workflow_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("journal read", exc, workflow_id) from exc
        return self._steps(workflow_id, after_seq, rows)

    # ------------------------------------------------------------------ signals
    def _signal(self, workflow_id: str, topic: str, text: str) -> int:
        now = self._clock()
        db = self._conn()
        state = None
        try:
            with self._write(db):
                cur = db.execute(
                    "UPDATE wippy_workflows SET signals = signals + 1, updated_at = ? "
                    "WHERE workflow_id = ? AND status = 'running'",
                    (now, workflow_id),
                )
                if cur.rowcount == 1:
                    got = db.execute("SELECT signals FROM wippy_workflows WHERE workflow_id = ?", (workflow_id,))
                    seq = int(got.fetchone()[0])
                    db.execute(
                        "INSERT INTO wippy_signals(workflow_id, seq, topic, payload, at) VALUES (?, ?, ?, ?, ?)",
                        (workflow_id, seq, topic, text, now),
                    )
                    return seq
                state = db.execute(_SQ_STATE, (workflow_id,)).fetchone()
        except sqlite3.IntegrityError as exc:
            raise self._corrupt(workflow_id, None, "a signal row is already there but not counted", exc) from exc
        except sqlite3.Error as exc:
            raise self._fail("signal", exc, workflow_id) from exc
        raise self._refusal(workflow_id, state, action=f"take the signal {topic!r}")

    def signals(self, workflow_id: str, after_seq: int = 0) -> builtins.list[SignalRecord]:
        db = self._conn()
        try:
            rows = db.execute(
                "SELECT w.signals, s.seq, s.topic, s.payload, s.at FROM wippy_workflows w "
                "LEFT JOIN wippy_signals s ON s.workflow_id = w.workflow_id AND s.seq > ? "
                "WHERE w.workflow_id = ? ORDER BY s.seq",
                (after_seq, workflow_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("signals read", exc, workflow_id) from exc
        return self._signal_records(workflow_id, after_seq, rows)

    # ------------------------------------------------------------------ leases
    def heartbeat(self, node_id: str) -> None:
        check_id("node_id", node_id)
        db = self._conn()
        try:
            with self._write(db):
                db.execute(_SQ_BEAT, (node_id, self._clock()))
        except sqlite3.Error as exc:
            raise self._fail(f"heartbeat of node {node_id!r}", exc) from exc

    def claim_orphans(self, node_id: str, ttl_seconds: float, limit: int | None = None) -> builtins.list[str]:
        check_id("node_id", node_id)
        ttl = self._check_ttl(ttl_seconds)
        now = self._clock()
        db = self._conn()
        try:
            with self._write(db):
                db.execute(_SQ_BEAT, (node_id, now))
                ids = [r[0] for r in db.execute(_SQ_ORPHANS, (node_id, now - ttl, -1 if limit is None else limit))]
                db.executemany(
                    "UPDATE wippy_workflows SET owner = ?, updated_at = ? WHERE workflow_id = ?",
                    [(node_id, now, wid) for wid in ids],
                )
        except sqlite3.Error as exc:
            raise self._fail(f"claim of orphans by node {node_id!r}", exc) from exc
        return ids

    def claim(self, workflow_id: str, node_id: str, ttl_seconds: float) -> bool:
        check_id("node_id", node_id)
        ttl = self._check_ttl(ttl_seconds)
        now = self._clock()
        db = self._conn()
        state = None
        try:
            with self._write(db):
                row = db.execute(
                    "SELECT w.status, w.steps, w.owner, n.heartbeat_at FROM wippy_workflows w "
                    "LEFT JOIN wippy_nodes n ON n.node_id = w.owner WHERE w.workflow_id = ?",
                    (workflow_id,),
                ).fetchone()
                if row is None or row[0] != "running":
                    state = row
                else:
                    db.execute(_SQ_BEAT, (node_id, now))
                    owner, beat = row[2], row[3]
                    if owner == node_id:
                        return True
                    if owner is not None and beat is not None and beat >= now - ttl:
                        return False
                    db.execute(
                        "UPDATE wippy_workflows SET owner = ?, updated_at = ? WHERE workflow_id = ?",
                        (node_id, now, workflow_id),
                    )
                    return True
        except sqlite3.Error as exc:
            raise self._fail(f"claim by node {node_id!r}", exc, workflow_id) from exc
        raise self._refusal(workflow_id, None if state is None else state[:3], action="be claimed")

    def release(self, node_id: str) -> builtins.list[str]:
        check_id("node_id", node_id)
        now = self._clock()
        db = self._conn()
        try:
            with self._write(db):
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT workflow_id FROM wippy_workflows WHERE owner = ? AND status = 'running' "
                        "ORDER BY created_at, workflow_id",
                        (node_id,),
                    )
                ]
                db.execute(
                    "UPDATE wippy_workflows SET owner = NULL, updated_at = ? WHERE owner = ? AND status = 'running'",
                    (now, node_id),
                )
                db.execute("DELETE FROM wippy_nodes WHERE node_id = ?", (node_id,))
        except sqlite3.Error as exc:
            raise self._fail(f"release of node {node_id!r}", exc) from exc
        return ids

    def nodes(self) -> dict[str, float]:
        db = self._conn()
        try:
            rows = db.execute("SELECT node_id, heartbeat_at FROM wippy_nodes ORDER BY node_id").fetchall()
        except sqlite3.Error as exc:
            raise self._fail("nodes read", exc) from exc
        return {str(n): float(t) for n, t in rows}


class _SQLiteWrite:
    """``with`` block of one ``BEGIN IMMEDIATE`` transaction: COMMIT on success, ROLLBACK on any exception."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")
