"""Global names of a cluster: ``process.registry.register(name, pid, {global = true})`` (API.md "Several
nodes"): one holder in the whole cluster.

Table (in the same schema as ``wippy_cluster_nodes``)::

    wippy_cluster_names
      name          text PRIMARY KEY
      pid           text      the holder ({node@host|id})
      node_id       text      the holder's node
      registered_at timestamptz

**Register** is one statement: ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` the current holder's
node is not up in ``wippy_cluster_nodes`` (a node that is down or left holds nothing) or the holder is
the same PID; no row back means a live holder: the caller gets ``name 'x' is already registered by PID``.
**Release**: a node deletes the rows of a process of its own when it ends (and of a name it
unregisters); the rows of a node that goes down are deleted by every survivor that sees it go (an
idempotent ``DELETE ... WHERE node_id``).

**Lookups** read a cache, not the database: a node loads every row when it joins, each change is also
sent to every node up over the links (:class:`~.cluster.Cluster` does that), which apply it to their
caches, and a node sends the names its processes hold to every node it sees come up (closing the gap
between a newcomer's load and the holder seeing it); a name the cache does not know is read from the
database once (:meth:`GlobalNames.fetch`). A name whose holder's node is not up is treated as not
registered. So a send to a known global name costs what a send to a local one does.

Threads: any thread; the connection and the cache are behind one lock.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from .errors import WippyError

__all__ = ["GlobalNames", "NamesError"]

_CREATE = """CREATE TABLE IF NOT EXISTS wippy_cluster_names (
  name text PRIMARY KEY, pid text NOT NULL, node_id text NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT now())"""
_REGISTER = """INSERT INTO wippy_cluster_names AS n (name, pid, node_id) VALUES (%(name)s, %(pid)s, %(node)s)
ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, node_id = EXCLUDED.node_id, registered_at = now()
WHERE n.pid = EXCLUDED.pid OR NOT EXISTS (
  SELECT 1 FROM wippy_cluster_nodes m WHERE m.node_id = n.node_id AND m.status = 'up')
RETURNING pid"""
_HOLDER = "SELECT pid FROM wippy_cluster_names WHERE name = %(name)s"
_UNREGISTER = "DELETE FROM wippy_cluster_names WHERE name = %(name)s AND node_id = %(node)s RETURNING pid"
_RELEASE = "DELETE FROM wippy_cluster_names WHERE pid = %(pid)s RETURNING name"
_DROP_NODE = "DELETE FROM wippy_cluster_names WHERE node_id = %(node)s RETURNING name"
_ALL = "SELECT name, pid, node_id FROM wippy_cluster_names"


class NamesError(WippyError):
    """The global names' table cannot be read or written (the database is unreachable)."""


class GlobalNames:
    """This node's view of the cluster's global names: writes go to the database, reads to the cache."""

    def __init__(self, url: str, node_id: str, location: str) -> None:
        self.node_id = node_id
        self._url = url
        self._location = location
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._cache: dict[str, str] = {}

    def _db(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            except psycopg.Error as exc:
                raise NamesError(f"global names: the cluster database {self._location} cannot be reached "
                                 f"({str(exc).strip()}); retry when it is back") from exc
            self._conn = conn
        return conn

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):   # a connection that broke while idle: once more on a fresh one
            try:
                return list(self._db().execute(sql, params).fetchall())
            except psycopg.OperationalError as exc:
                self._conn = None
                if attempt == 2:
                    raise NamesError(f"global names: the cluster database {self._location} failed "
                                     f"({str(exc).strip()}); retry") from exc
            except psycopg.Error as exc:
                raise NamesError(f"global names: {str(exc).strip()}") from exc
        return []   # pragma: no cover

    def load(self) -> dict[str, str]:
        """Create the table if missing and load every name into the cache (at join)."""
        with self._lock:
            self._db().execute(_CREATE)
            rows = self._run(_ALL, {})
            self._cache = {str(name): str(pid) for name, pid, _node in rows}
            return dict(self._cache)

    def register(self, name: str, pid: str) -> str | None:
        """Make ``pid`` (a process of this node) the holder of ``name``; None, or why not."""
        with self._lock:
            rows = self._run(_REGISTER, {"name": name, "pid": pid, "node": self.node_id})
            if rows:
                self._cache[name] = pid
                return None
            holder = self._run(_HOLDER, {"name": name})
        who = holder[0][0] if holder else "another process"
        return f"name '{name}' is already registered by {who} (a global name: one holder in the cluster)"

    def unregister(self, name: str) -> bool:
        """Drop ``name`` if a process of this node holds it."""
        with self._lock:
            rows = self._run(_UNREGISTER, {"name": name, "node": self.node_id})
            if rows:
                self._cache.pop(name, None)
            return bool(rows)

    def release(self, pid: str) -> list[str]:
        """A process of this node ended: the names it held (gone from the table and the cache)."""
        with self._lock:
            names = [str(r[0]) for r in self._run(_RELEASE, {"pid": pid})]
            for n in names:
                if self._cache.get(n) == pid:
                    del self._cache[n]
            return names

    def drop_node(self, node_id: str) -> None:
        """A node is down or left: its names are no one's (idempotent; every survivor may do it)."""
        with self._lock:
            self._run(_DROP_NODE, {"node": node_id})
            for n in [n for n, p in self._cache.items() if _node_of(p) == node_id]:
                del self._cache[n]

    # ---------------------------------------------------------------- the cache (changes from the links)
    def lookup(self, name: str) -> str | None:
        """The holder of ``name`` as this node knows it (no database access)."""
        with self._lock:
            return self._cache.get(name)

    def fetch(self, name: str) -> str | None:
        """A name the cache does not know, read from the database (and then cached): a node that joined
        while the holder registered it may have missed the change."""
        with self._lock:
            rows = self._run(_HOLDER, {"name": name})
            if rows:
                self._cache[name] = str(rows[0][0])
                return str(rows[0][0])
            return None

    def apply(self, op: str, name: str, pid: str | None) -> None:
        """A change another node made (``set`` or ``del``), sent over the links."""
        with self._lock:
            if op == "set" and pid:
                self._cache[name] = pid
            elif op == "del" and (pid is None or self._cache.get(name) == pid):
                self._cache.pop(name, None)

    def names(self) -> dict[str, str]:
        """Every global name this node knows, with its holder."""
        with self._lock:
            return dict(self._cache)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _node_of(pid: str) -> str | None:
    bar = pid.find("|")
    at = pid.find("@", 0, bar if bar >= 0 else len(pid))
    return pid[1:at] if at > 0 else None
