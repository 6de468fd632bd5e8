"""The cluster's registry log: every node's registry commits, in one PostgreSQL table, and the worker that
applies the commits of other nodes here (API.md "Several nodes": a change reaches every node's
subscribers).

Table (beside ``wippy_cluster_nodes``)::

    wippy_cluster_registry
      version   bigserial PRIMARY KEY   the cluster's order of the commits
      node_id   text                    where it was made
      message   text                    its message
      changes   jsonb                   {"set": [[id, kind, meta, data]...], "del": [id...]}
      at        timestamptz

A commit made on a node (not one applied from another node) is appended here and sent to every node up
over the links (``registry`` frames, the fast path); each of them applies it to its own registry as one
version whose message says where it came from, so its subscribers (``registry.changes``, supervision,
compiled code) hear of it as of a local commit. Concurrent commits of two nodes to one entry: the last
to arrive wins on each node (the table keeps the cluster's order for the record). A node that joins
later does not replay the table (its own tree, or its data directory, is its starting point).

Threads: :meth:`RegistryLog.append` runs on the committing thread; :class:`Applier` has one thread,
``wippy-cluster-registry``, that applies what the links delivered, in order (never the links' thread:
a commit may wait for hosts).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .errors import WippyError

__all__ = ["Applier", "RegistryLog"]

_CREATE = """CREATE TABLE IF NOT EXISTS wippy_cluster_registry (
  version bigserial PRIMARY KEY, node_id text NOT NULL, message text, changes jsonb NOT NULL,
  at timestamptz NOT NULL DEFAULT now())"""
_APPEND = ("INSERT INTO wippy_cluster_registry (node_id, message, changes) VALUES (%(node)s, %(message)s, "
           "%(changes)s) RETURNING version")


class RegistryLog:
    """The append side of the table (one connection, behind a lock)."""

    def __init__(self, url: str, node_id: str, location: str) -> None:
        self.node_id = node_id
        self._url = url
        self._location = location
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            except psycopg.Error as exc:
                raise WippyError(f"registry log: the cluster database {self._location} cannot be reached "
                                 f"({str(exc).strip()})") from exc
        return self._conn

    def create(self) -> None:
        with self._lock:
            self._db().execute(_CREATE)

    def append(self, message: str | None, changes: dict[str, Any]) -> int:
        """Append one commit of this node; the cluster's version of it."""
        with self._lock:
            try:
                row = self._db().execute(_APPEND, {"node": self.node_id, "message": message,
                                                   "changes": Jsonb(changes)}).fetchone()
            except psycopg.Error as exc:
                self._conn = None
                raise WippyError(f"registry log: appending failed ({str(exc).strip()})") from exc
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class Applier:
    """Applies other nodes' commits here, one at a time, in the order the links delivered them."""

    def __init__(self, apply: Callable[[str, dict[str, Any]], None], fault: Callable[[str, str], None]) -> None:
        self._apply = apply
        self._fault = fault
        self._q: queue.SimpleQueue[tuple[str, dict[str, Any] | Callable[[], None]] | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="wippy-cluster-registry", daemon=True)
        self._thread.start()

    def put(self, node: str, commit: dict[str, Any]) -> None:
        """A commit of ``node`` (the links' thread: never blocks)."""
        with self._lock:
            self._pending += 1
        self._q.put((node, commit))

    def busy(self) -> bool:
        """Whether something waits here: then what arrives after it must wait behind it (order). An int
        read (atomic): the count goes up, under the lock, before the item is queued."""
        return self._pending > 0

    def then(self, node: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the commits queued so far (a spawn that came after a commit on the same link
        finds the entry that commit defined)."""
        with self._lock:
            self._pending += 1
        self._q.put((node, fn))

    def close(self, timeout: float = 10.0) -> None:
        self._q.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            node, commit = item
            try:
                if callable(commit):
                    commit()
                else:
                    self._apply(node, commit)
            except Exception as exc:   # a refused commit (a validator) must not stop the others
                self._fault(f"cluster registry (from {node})", f"{exc}")
            finally:
                with self._lock:
                    self._pending -= 1
