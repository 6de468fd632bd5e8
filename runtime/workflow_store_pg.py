"""The workflow store in PostgreSQL (psycopg 3), for several nodes sharing one store.

Imported by :func:`~.workflow_store.open_store` only for a ``postgresql://`` URL, so psycopg is needed only
by those who use it. The contract, the tables and the decisions are in ``workflow_store.py``; what is
particular to PostgreSQL:

- Every connection is in autocommit mode, and the hot writes are ONE statement each, hence one round trip
  and one commit: an append is ``WITH w AS (UPDATE wippy_workflows SET steps = seq ... WHERE steps =
  seq - 1 ... RETURNING ...) INSERT INTO wippy_journal SELECT ... FROM w``; a signal is the same shape with
  the signal counter. Under READ COMMITTED a second writer of the same workflow waits for the first's row
  lock, then re-checks ``steps = seq - 1`` on the new row and matches nothing: one of two racing nodes
  gets :class:`~.errors.JournalConflict`. The counter columns are not indexed, so these are HOT updates.
- ``append_many`` sends one such statement per workflow (its rows as arrays, ``unnest``) in a pipeline,
  inside one transaction: one round trip and one commit for the whole batch.
- Claims take ``pg_advisory_xact_lock`` on a fixed key first, so claimers (of any node, on this database)
  run one after another; the lock is released with the transaction. See the module docstring of
  ``workflow_store.py`` for why leases are rows and not advisory locks.
- Time is the server's (``statement_timestamp()``) unless ``now`` was given to ``open_store``.
- The tables go in the first schema of ``search_path``: several stores can share a database with
  ``?options=-csearch_path%3Dname`` in the URL. Creating them takes an advisory lock, so nodes that open
  a new store at the same moment do not trip over each other.

Threads: each thread gets its own connection (opened on its first call); a connection that broke (the
server restarted) is dropped after the failing call raised :class:`~.errors.StoreError`, and the thread's
next call connects again.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

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
    redact_url,
)

__all__ = ["PostgresWorkflowStore"]

# advisory lock keys (any fixed 64-bit numbers; "wippy" in ASCII, then a role byte)
_LOCK_SCHEMA = 0x7769707079_01
_LOCK_CLAIM = 0x7769707079_02

#: the store's clock in SQL: the caller's ``now`` when given, else the server's
_NOW = "COALESCE(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS wippy_store_meta(key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS wippy_workflows("
    " workflow_id text PRIMARY KEY, entry_id text NOT NULL, input text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),"
    " result text, error text, owner text, created_at float8 NOT NULL, updated_at float8 NOT NULL,"
    " steps bigint NOT NULL DEFAULT 0, signals bigint NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS wippy_workflows_status ON wippy_workflows(status, created_at)",
    "CREATE INDEX IF NOT EXISTS wippy_workflows_running ON wippy_workflows(owner) WHERE status = 'running'",
    "CREATE TABLE IF NOT EXISTS wippy_journal("
    " workflow_id text NOT NULL, seq bigint NOT NULL, op text NOT NULL, args_hash text NOT NULL,"
    " result text NOT NULL, at float8 NOT NULL, PRIMARY KEY (workflow_id, seq))",
    "CREATE TABLE IF NOT EXISTS wippy_signals("
    " workflow_id text NOT NULL, seq bigint NOT NULL, topic text NOT NULL, payload text NOT NULL,"
    " at float8 NOT NULL, PRIMARY KEY (workflow_id, seq))",
    "CREATE TABLE IF NOT EXISTS wippy_nodes(node_id text PRIMARY KEY, heartbeat_at float8 NOT NULL)",
)

_FENCE = "AND (%(node)s::text IS NULL OR owner = %(node)s::text)"


def _sql(template: str) -> str:
    """``template`` with the shared fragments put in: ``{NOW}``, ``{FENCE}``, ``{COLUMNS}``. These are
    constants of this module, never values: every value is a bound parameter."""
    return template.replace("{NOW}", _NOW).replace("{FENCE}", _FENCE).replace("{COLUMNS}", WF_COLUMNS)


_APPEND = _sql(
    "WITH w AS (UPDATE wippy_workflows SET steps = %(seq)s, updated_at = {NOW} "
    "WHERE workflow_id = %(wid)s AND steps = %(seq)s - 1 AND status = 'running' {FENCE} "
    "RETURNING workflow_id) "
    "INSERT INTO wippy_journal(workflow_id, seq, op, args_hash, result, at) "
    "SELECT w.workflow_id, %(seq)s, %(op)s, %(hash)s, %(result)s, {NOW} FROM w"
)
_APPEND_GROUP = _sql(
    "WITH w AS (UPDATE wippy_workflows SET steps = %(last)s, updated_at = {NOW} "
    "WHERE workflow_id = %(wid)s AND steps = %(first)s - 1 AND status = 'running' {FENCE} "
    "RETURNING workflow_id) "
    "INSERT INTO wippy_journal(workflow_id, seq, op, args_hash, result, at) "
    "SELECT w.workflow_id, s.seq, s.op, s.args_hash, s.result, {NOW} FROM w, "
    "unnest(%(seqs)s::bigint[], %(ops)s::text[], %(hashes)s::text[], %(results)s::text[]) "
    "AS s(seq, op, args_hash, result)"
)
_GET = _sql("SELECT {COLUMNS} FROM wippy_workflows WHERE workflow_id = %(wid)s")
_LIST = _sql(
    "SELECT {COLUMNS} FROM wippy_workflows WHERE %(status)s::text IS NULL OR status = %(status)s "
    "ORDER BY created_at, workflow_id"
)
_CREATE = _sql(
    "INSERT INTO wippy_workflows(workflow_id, entry_id, input, status, owner, created_at, updated_at) "
    "VALUES (%(wid)s, %(entry)s, %(input)s, 'running', %(node)s, {NOW}, {NOW}) "
    "ON CONFLICT (workflow_id) DO NOTHING"
)
_FINISH = _sql(
    "UPDATE wippy_workflows SET status = %(status)s, result = %(result)s, error = %(error)s, updated_at = {NOW} "
    "WHERE workflow_id = %(wid)s AND status = 'running' {FENCE} RETURNING {COLUMNS}"
)
_STATE = "SELECT status, steps, owner FROM wippy_workflows WHERE workflow_id = %(wid)s"
_BEAT = _sql(
    "INSERT INTO wippy_nodes(node_id, heartbeat_at) VALUES (%(node)s, {NOW}) "
    "ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
_SIGNAL = _sql(
    "WITH w AS (UPDATE wippy_workflows SET signals = signals + 1, updated_at = {NOW} "
    "WHERE workflow_id = %(wid)s AND status = 'running' RETURNING workflow_id, signals) "
    "INSERT INTO wippy_signals(workflow_id, seq, topic, payload, at) "
    "SELECT w.workflow_id, w.signals, %(topic)s, %(payload)s, {NOW} FROM w RETURNING seq"
)
# the status check stands in the outer WHERE too: READ COMMITTED re-checks it on a row that a concurrent
# finish changed, and skips the row
_ORPHANS = _sql(
    "UPDATE wippy_workflows w SET owner = %(node)s, updated_at = {NOW} "
    "WHERE w.status = 'running' AND w.workflow_id IN ("
    " SELECT c.workflow_id FROM wippy_workflows c WHERE c.status = 'running'"
    " AND c.owner IS DISTINCT FROM %(node)s::text"
    " AND NOT EXISTS (SELECT 1 FROM wippy_nodes n WHERE n.node_id = c.owner"
    "  AND n.heartbeat_at >= {NOW} - %(ttl)s::float8)"
    " ORDER BY c.created_at, c.workflow_id LIMIT %(limit)s) "
    "RETURNING w.workflow_id, w.created_at"
)
_CLAIM_READ = _sql(
    "SELECT w.status, w.steps, w.owner, n.heartbeat_at >= {NOW} - %(ttl)s::float8 "
    "FROM wippy_workflows w LEFT JOIN wippy_nodes n ON n.node_id = w.owner "
    "WHERE w.workflow_id = %(wid)s FOR UPDATE OF w"
)
_CLAIM_ONE = _sql("UPDATE wippy_workflows SET owner = %(node)s, updated_at = {NOW} WHERE workflow_id = %(wid)s")
_RELEASE = _sql(
    "UPDATE wippy_workflows SET owner = NULL, updated_at = {NOW} "
    "WHERE owner = %(node)s AND status = 'running' RETURNING workflow_id, created_at"
)

_Conn = psycopg.Connection[tuple[Any, ...]]


class PostgresWorkflowStore(WorkflowStore):
    """The store in a PostgreSQL database, shared by several nodes. Open it with ``open_store(url)``."""

    def __init__(self, url: str, *, now: Callable[[], float] | None = None, connect_timeout: float = 10.0) -> None:
        super().__init__(redact_url(url), now)
        self._url = url
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreOpenError(
                f"{self._where()}: the URL cannot be read ({exc}); check its form", self.location
            ) from exc
        if "connect_timeout" not in given:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in given:
            self._connect_kwargs["application_name"] = "wippy"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: builtins.list[tuple[threading.Thread, _Conn]] = []
        self._open()

    # ------------------------------------------------------------------ connections
    def _open(self) -> None:
        where = self._where()
        try:
            conn = self._conn()
        except StoreError as exc:
            self.close()
            raise StoreOpenError(str(exc), self.location) from exc.__cause__
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_SCHEMA,))
                schema_name = conn.execute("SELECT current_schema()").fetchone()
                if schema_name is None or schema_name[0] is None:
                    raise StoreOpenError(
                        f"{where}: no schema of the search_path exists to hold the store's tables; create it "
                        "(CREATE SCHEMA ...) or fix search_path in the URL",
                        self.location,
                    )
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO wippy_store_meta(key, value) VALUES ('schema', %s) ON CONFLICT (key) DO NOTHING",
                    (SCHEMA_VERSION,),
                )
                row = conn.execute("SELECT value FROM wippy_store_meta WHERE key = 'schema'").fetchone()
        except StoreOpenError:
            self.close()
            raise
        except psycopg.Error as exc:
            self.close()
            raise StoreOpenError(
                f"{where}: cannot create or read the store's tables ({str(exc).strip()}); the user needs the "
                "right to create tables in the schema",
                self.location,
            ) from exc
        schema = None if row is None else row[0]
        if schema != SCHEMA_VERSION:
            self.close()
            raise StoreOpenError(
                f"{where}: its schema is {schema!r}, not the one this runtime reads ({SCHEMA_VERSION!r}); "
                "open it with the wippy version that wrote it, or use another database or schema",
                self.location,
            )

    def _conn(self) -> _Conn:
        """This thread's connection, opened on its first call (StoreError if it cannot be)."""
        conn: _Conn | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise self._closed_error()
        try:
            conn = psycopg.connect(self._url, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise StoreError(
                f"{self._where()}: cannot connect ({str(exc).strip()}); check that the server runs and the host, "
                "port, user, password and database of the URL",
                self.location,
            ) from exc
        me = threading.current_thread()
        with self._lock:
            if self._closed:
                conn.close()
                raise self._closed_error()
            alive = []
            for thread, other in self._conns:
                if thread.is_alive() and not other.closed:
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((me, conn))
            self._conns = alive
        self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for _, conn in conns:
            conn.close()
        self._local = threading.local()

    def _fail(self, what: str, exc: psycopg.Error, workflow_id: str | None = None) -> StoreError:
        conn: _Conn | None = getattr(self._local, "conn", None)
        hint = "retry"
        if conn is not None and (conn.broken or conn.closed):
            # drop it: this thread's next call connects again
            self._local.conn = None
            conn.close()
            hint = "the connection was lost (server restarted or unreachable); the next call connects again"
        about = f" of workflow {workflow_id!r}" if workflow_id is not None else ""
        return StoreError(
            f"{self._where()}: {what}{about} failed ({str(exc).strip()}); {hint}", self.location, workflow_id
        )

    def _p(self, **params: Any) -> dict[str, Any]:
        params["now"] = None if self._now_fn is None else float(self._now_fn())
        return params

    # ------------------------------------------------------------------ workflows
    def _create(self, workflow_id: str, entry_id: str, text: str, node_id: str) -> tuple[bool, WorkflowRecord]:
        p = self._p(wid=workflow_id, entry=entry_id, input=text, node=node_id)
        conn = self._conn()
        try:
            with conn.transaction():
                cur = conn.execute(_CREATE, p)
                created = cur.rowcount == 1
                conn.execute(_BEAT, p)
                row = conn.execute(_GET, p).fetchone()
        except psycopg.Error as exc:
            raise self._fail("create", exc, workflow_id) from exc
        assert row is not None  # inserted or already there, in this transaction
        return created, self._record(row)

    def get(self, workflow_id: str) -> WorkflowRecord | None:
        conn = self._conn()
        try:
            row = conn.execute(_GET, {"wid": workflow_id}).fetchone()
        except psycopg.Error as exc:
            raise self._fail("get", exc, workflow_id) from exc
        return None if row is None else self._record(row)

    def list(self, status: WorkflowStatus | None = None) -> builtins.list[WorkflowRecord]:
        if status is not None:
            self._check_status(status, finished=False)
        conn = self._conn()
        try:
            rows = conn.execute(_LIST, {"status": status}).fetchall()
        except psycopg.Error as exc:
            raise self._fail("list", exc) from exc
        return [self._record(r) for r in rows]

    def _finish(self, workflow_id: str, status: WorkflowStatus, result_text: str | None, error_text: str | None,
                node_id: str | None) -> WorkflowRecord:
        p = self._p(wid=workflow_id, status=status, result=result_text, error=error_text, node=node_id)
        conn = self._conn()
        try:
            row = conn.execute(_FINISH, p).fetchone()
            state = None if row is not None else conn.execute(_STATE, p).fetchone()
        except psycopg.Error as exc:
            raise self._fail("finish", exc, workflow_id) from exc
        if row is None:
            raise self._refusal(workflow_id, state, node_id=node_id, action="finish")
        return self._record(row)

    # ------------------------------------------------------------------ journal
    def _append(self, workflow_id: str, seq: int, op: str, args_hash: str, text: str, node_id: str | None) -> None:
        p = self._p(wid=workflow_id, seq=seq, op=op, hash=args_hash, result=text, node=node_id)
        conn = self._conn()
        try:
            if conn.execute(_APPEND, p).rowcount == 1:
                return
            state = conn.execute(_STATE, p).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise self._corrupt(
                workflow_id, seq, f"step {seq} is already in its journal although its record counts {seq - 1} steps",
                exc,
            ) from exc
        except psycopg.Error as exc:
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
        conn = self._conn()
        try:
            self._append_batches(conn, batches, node_id, refused)
        except psycopg.errors.UniqueViolation:
            # a journal row that its record does not count (edited by hand): one transaction per workflow
            for batch in batches:
                refused.pop(batch[0], None)
                try:
                    self._append_batches(conn, [batch], node_id, refused)
                except psycopg.errors.UniqueViolation as exc:
                    wid, rows = batch
                    refused[wid] = self._corrupt(
                        wid, rows[0][0], "a step of this batch is already in its journal but not counted", exc
                    )
                except psycopg.Error as exc:
                    raise self._fail("append_many", exc) from exc
        except psycopg.Error as exc:
            raise self._fail("append_many", exc) from exc
        return refused

    def _append_batches(
        self,
        conn: _Conn,
        batches: Sequence[tuple[str, builtins.list[tuple[int, str, str, str]]]],
        node_id: str | None,
        refused: dict[str, WippyError],
    ) -> None:
        """One transaction, one pipeline: a statement per workflow; then the refusals are explained."""
        now = None if self._now_fn is None else float(self._now_fn())
        with conn.transaction():
            with conn.pipeline():
                curs = [
                    conn.execute(
                        _APPEND_GROUP,
                        {
                            "now": now, "wid": wid, "node": node_id, "first": rows[0][0], "last": rows[-1][0],
                            "seqs": [r[0] for r in rows], "ops": [r[1] for r in rows],
                            "hashes": [r[2] for r in rows], "results": [r[3] for r in rows],
                        },
                    )
                    for wid, rows in batches
                ]
            missed = [(wid, rows[0][0]) for (wid, rows), cur in zip(batches, curs, strict=True) if cur.rowcount == 0]
            states: dict[str, tuple[Any, ...]] = {}
            if missed:
                for r in conn.execute(
                    "SELECT workflow_id, status, steps, owner FROM wippy_workflows WHERE workflow_id = ANY(%s)",
                    ([wid for wid, _ in missed],),
                ):
                    states[r[0]] = tuple(r[1:])
        for wid, first in missed:
            refused[wid] = self._refusal(wid, states.get(wid), seq=first, node_id=node_id)

    def journal(self, workflow_id: str, after_seq: int = 0) -> builtins.list[JournalRecord]:
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT w.steps, j.seq, j.op, j.args_hash, j.result, j.at FROM wippy_workflows w "
                "LEFT JOIN wippy_journal j ON j.workflow_id = w.workflow_id AND j.seq > %(after)s "
                "WHERE w.workflow_id = %(wid)s ORDER BY j.seq",
                {"after": after_seq, "wid": workflow_id},
            ).fetchall()
        except psycopg.Error as exc:
            raise self._fail("journal read", exc, workflow_id) from exc
        return self._steps(workflow_id, after_seq, rows)

    # ------------------------------------------------------------------ signals
    def _signal(self, workflow_id: str, topic: str, text: str) -> int:
        p = self._p(wid=workflow_id, topic=topic, payload=text)
        conn = self._conn()
        try:
            row = conn.execute(_SIGNAL, p).fetchone()
            if row is not None:
                return int(row[0])
            state = conn.execute(_STATE, p).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise self._corrupt(workflow_id, None, "a signal row is already there but not counted", exc) from exc
        except psycopg.Error as exc:
            raise self._fail("signal", exc, workflow_id) from exc
        raise self._refusal(workflow_id, state, action=f"take the signal {topic!r}")

    def signals(self, workflow_id: str, after_seq: int = 0) -> builtins.list[SignalRecord]:
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT w.signals, s.seq, s.topic, s.payload, s.at FROM wippy_workflows w "
                "LEFT JOIN wippy_signals s ON s.workflow_id = w.workflow_id AND s.seq > %(after)s "
                "WHERE w.workflow_id = %(wid)s ORDER BY s.seq",
                {"after": after_seq, "wid": workflow_id},
            ).fetchall()
        except psycopg.Error as exc:
            raise self._fail("signals read", exc, workflow_id) from exc
        return self._signal_records(workflow_id, after_seq, rows)

    # ------------------------------------------------------------------ leases
    def heartbeat(self, node_id: str) -> None:
        check_id("node_id", node_id)
        conn = self._conn()
        try:
            conn.execute(_BEAT, self._p(node=node_id))
        except psycopg.Error as exc:
            raise self._fail(f"heartbeat of node {node_id!r}", exc) from exc

    def claim_orphans(self, node_id: str, ttl_seconds: float, limit: int | None = None) -> builtins.list[str]:
        check_id("node_id", node_id)
        p = self._p(node=node_id, ttl=self._check_ttl(ttl_seconds), limit=limit)
        conn = self._conn()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_CLAIM,))
                conn.execute(_BEAT, p)
                rows = conn.execute(_ORPHANS, p).fetchall()
        except psycopg.Error as exc:
            raise self._fail(f"claim of orphans by node {node_id!r}", exc) from exc
        return [str(wid) for wid, _ in sorted(rows, key=lambda r: (r[1], r[0]))]

    def claim(self, workflow_id: str, node_id: str, ttl_seconds: float) -> bool:
        check_id("node_id", node_id)
        p = self._p(wid=workflow_id, node=node_id, ttl=self._check_ttl(ttl_seconds))
        conn = self._conn()
        state: tuple[Any, ...] | None = None
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_CLAIM,))
                row = conn.execute(_CLAIM_READ, p).fetchone()
                if row is None or row[0] != "running":
                    state = row
                else:
                    conn.execute(_BEAT, p)
                    owner, alive = row[2], row[3]
                    if owner == node_id:
                        return True
                    if owner is not None and alive:
                        return False
                    conn.execute(_CLAIM_ONE, p)
                    return True
        except psycopg.Error as exc:
            raise self._fail(f"claim by node {node_id!r}", exc, workflow_id) from exc
        raise self._refusal(workflow_id, None if state is None else tuple(state[:3]), action="be claimed")

    def release(self, node_id: str) -> builtins.list[str]:
        check_id("node_id", node_id)
        p = self._p(node=node_id)
        conn = self._conn()
        try:
            with conn.transaction():
                rows = conn.execute(_RELEASE, p).fetchall()
                conn.execute("DELETE FROM wippy_nodes WHERE node_id = %(node)s", p)
        except psycopg.Error as exc:
            raise self._fail(f"release of node {node_id!r}", exc) from exc
        return [str(wid) for wid, _ in sorted(rows, key=lambda r: (r[1], r[0]))]

    def nodes(self) -> dict[str, float]:
        conn = self._conn()
        try:
            rows = conn.execute("SELECT node_id, heartbeat_at FROM wippy_nodes ORDER BY node_id").fetchall()
        except psycopg.Error as exc:
            raise self._fail("nodes read", exc) from exc
        return {str(n): float(t) for n, t in rows}
