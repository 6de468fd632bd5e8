"""Agent sessions, journaled: every model request and response, tool call and result, registry change.

A session is a row (ID, agent, parent session and step when it is a fork, when, status) and its steps
in order: ``(seq, step, kind, data)`` where ``kind`` is ``user`` (a message to the agent), ``model``
(the request as sent: model, message count, tool names; the response: text, tool calls, tokens,
finish reason; latency), ``tool`` (a call: name, entry, arguments, result or error, duration),
``registry`` (a version the agent made: entry IDs, version number) or ``answer`` (the agent's
answer to the last user message). ``step`` numbers the model turns: a turn's model row and its tool
and registry rows share a step.

Stored like the workflow journal: one SQLite file in the node's data directory (``agents.sqlite``),
or a temporary one; values are JSON (the workflow store's codec, so tuples, bytes and maps with
non-string keys survive). Thread-safe (one lock); called from the agents' worker threads and from
the notebook's.
"""

from __future__ import annotations

import builtins
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WippyError
from .workflow_store_base import decode_value, encode_value

__all__ = ["SessionRecord", "SessionStep", "SessionStore", "UnknownSession"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, agent TEXT NOT NULL, parent TEXT, "
    "fork_step INTEGER, created REAL NOT NULL, status TEXT NOT NULL, actor TEXT)",
    "CREATE TABLE IF NOT EXISTS steps(session TEXT NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, "
    "kind TEXT NOT NULL, data TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(session, seq))",
)


class UnknownSession(WippyError):
    """A session ID that the node's store does not hold."""


@dataclass(frozen=True)
class SessionRecord:
    id: str
    agent: str
    parent: str | None
    fork_step: int | None
    created: float
    status: str  # running | answered | stopped | failed
    actor: str | None
    steps: int = 0


@dataclass(frozen=True)
class SessionStep:
    seq: int
    step: int
    kind: str  # user | model | tool | registry | answer
    data: dict[str, Any]
    at: float


class SessionStore:
    """The sessions of one node (``path`` None: a temporary file, removed at :meth:`close`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="wippy-agents-")
            path = Path(self._tmp.name) / "agents.sqlite"
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for stmt in _SCHEMA:
            self._db.execute(stmt)
        self._seq: dict[str, int] = {}

    def create(
        self,
        agent: str,
        *,
        session_id: str | None = None,
        parent: str | None = None,
        fork_step: int | None = None,
        actor: str | None = None,
    ) -> str:
        sid = session_id or uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions(id, agent, parent, fork_step, created, status, actor) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (sid, agent, parent, fork_step, time.time(), actor),
            )
            self._seq[sid] = 0
        return sid

    def exists(self, session_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def append(self, session_id: str, step: int, kind: str, data: dict[str, Any]) -> int:
        text = encode_value(data, f"session {session_id}: {kind} step {step}")
        with self._lock:
            seq = self._seq.get(session_id)
            if seq is None:
                row = self._db.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM steps WHERE session = ?", (session_id,)
                ).fetchone()
                seq = int(row[0])
            seq += 1
            self._db.execute(
                "INSERT INTO steps(session, seq, step, kind, data, at) VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, seq, step, kind, text, time.time()),
            )
            self._seq[session_id] = seq
        return seq

    def set_status(self, session_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE sessions SET status = ? WHERE id = ?", (status, session_id))

    def get(self, session_id: str) -> SessionRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT s.id, s.agent, s.parent, s.fork_step, s.created, s.status, s.actor, "
                "(SELECT COALESCE(MAX(step), 0) FROM steps WHERE session = s.id) FROM sessions s WHERE s.id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            raise UnknownSession(f"unknown agent session '{session_id}' (%agent list shows the sessions)")
        return SessionRecord(row[0], row[1], row[2], row[3], float(row[4]), row[5], row[6], int(row[7]))

    def list(self, agent: str | None = None) -> list[SessionRecord]:
        q = (
            "SELECT s.id, s.agent, s.parent, s.fork_step, s.created, s.status, s.actor, "
            "(SELECT COALESCE(MAX(step), 0) FROM steps WHERE session = s.id) FROM sessions s"
        )
        args: tuple[Any, ...] = ()
        if agent is not None:
            q += " WHERE s.agent = ?"
            args = (agent,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY s.created, s.rowid", args).fetchall()
        return [SessionRecord(r[0], r[1], r[2], r[3], float(r[4]), r[5], r[6], int(r[7])) for r in rows]

    def steps(self, session_id: str) -> builtins.list[SessionStep]:
        self.get(session_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, step, kind, data, at FROM steps WHERE session = ? ORDER BY seq", (session_id,)
            ).fetchall()
        out = []
        for seq, step, kind, data, at in rows:
            value = decode_value(data)
            out.append(SessionStep(int(seq), int(step), str(kind), value if isinstance(value, dict) else {}, float(at)))
        return out

    def children(self, session_id: str) -> builtins.list[SessionRecord]:
        """The sessions forked from ``session_id``."""
        return [r for r in self.list() if r.parent == session_id]

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
