"""Cluster membership: which wippy nodes sharing one PostgreSQL database are up.

The pattern of Orleans' SQL membership table: every node keeps a row with a heartbeat; a node whose
heartbeat is older than its ``ttl`` is declared down by the others. Changes wake the other nodes at once
through LISTEN/NOTIFY; a periodic scan (every ``heartbeat`` seconds) is the fallback and the failure
detector.

::

    m = Membership("postgresql://app@db/wippy", "n1", "tcp://10.0.0.5:7000", on_event=print)
    m.join()                       # -> 1, the incarnation
    m.wait_for(lambda live: len(live) >= 3, timeout=30)
    m.leave()

Table (created by the first ``join()`` in the first schema of ``search_path``; several clusters can
share a database with ``?options=-csearch_path%3Dname`` in the URL)::

    wippy_cluster_nodes
      node_id       text PRIMARY KEY   the node's name in the cluster (chosen by the node)
      address       text               where the others reach it (e.g. tcp://host:port)
      status        text               'up' | 'down' | 'left'
      incarnation   bigint             1 on the first join of a node_id, +1 on every rejoin
      ttl           float8             seconds: the node promises a heartbeat at least this often
      load          bigint             what the node last reported (set_load), written with the heartbeat
      meta          jsonb              a JSON object given at join
      started_at    timestamptz        when this incarnation joined
      heartbeat_at  timestamptz        its last heartbeat
      changed_at    timestamptz        the last change of status
      changed_by    text               who made it: the node itself (up, left) or the node that declared
                                       it down

Every timestamp is the database's ``now()``, and every age is computed by it (``now() - heartbeat_at``):
the machines' clocks do not matter.

Protocol:

- **join**: one statement, ``INSERT ... ON CONFLICT (node_id) DO UPDATE ... WHERE`` the existing row is
  not live, ``RETURNING`` the incarnation (the previous one + 1), with ``pg_notify`` in the same statement
  (delivered at commit, so a woken listener sees the row). A live row (status up, heartbeat younger than
  *its* ttl) is another node using the id: nothing is returned and :class:`ClusterError` says so. Two
  nodes joining with one id at once: the second waits for the first's row lock, re-checks the ``WHERE`` on
  the new row, and is refused.
- **heartbeat**, every ``heartbeat`` seconds: ``UPDATE ... SET heartbeat_at = now(), load = ... WHERE
  node_id = me AND incarnation = mine AND status = 'up'``. No row matched means this incarnation was
  declared down (the node stalled past its ttl) or replaced: down is final for an incarnation (the others
  may have acted on it), so the node rejoins with the next incarnation ("disconnected" then "reconnected"
  with the new incarnation), or, if a live node holds the id now, stays disconnected and retries.
- **declare down**, after each heartbeat: ``UPDATE ... SET status = 'down' WHERE status = 'up' AND
  heartbeat_at < now() - ttl * interval '1 second' RETURNING ...`` with a ``pg_notify`` per row. Each row
  is judged by its own ttl, so nodes configured differently do not flap each other. Races: the row lock
  makes a declaration happen once: a second declarer waits for the first's lock, re-checks ``status =
  'up'`` on the new row version and skips it; a heartbeat racing a declaration either commits first (the
  declarer's re-check then sees the fresh ``heartbeat_at`` and skips the row) or finds its row down and
  rejoins.
- **scan**: ``SELECT`` every row; the events are the difference with the previous scan (see
  :class:`MemberEvent`). A node's first scan reports "joined" for every other node that is up.
- **notify**: channel ``wippy_cluster``, payload ``{"schema", "by", "kind", "node_id", "incarnation"}``
  (JSON). It is only a wake-up: a listener rescans the table (the truth) on any notification of its own
  schema sent by another session. Heartbeats send none.
- **leave**: stop the thread, then ``UPDATE ... SET status = 'left'`` with a ``pg_notify``.

Rows are never deleted: a node that left or is down keeps its row (its incarnation counts on from it).

Threads: ``join()``, ``leave()``, ``nodes()``, ``live()``, ``set_load()`` and ``wait_for()`` run on the
caller's thread. ``join()`` starts one daemon thread, ``wippy-cluster-NODE``, that owns two connections
(the heartbeat-and-scan one, the LISTEN one), runs every heartbeat, declaration and scan, and calls
``on_event``; after each scan it notifies the condition that ``wait_for()`` waits on. ``nodes()`` and
``live()`` read the table through a third connection, guarded by a lock. An ``on_event`` that raises, or
an unexpected error of the thread, is printed to stderr (once per distinct message) and the thread goes
on.
"""

from __future__ import annotations

import json
import math
import re
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from .errors import WippyError

__all__ = ["CHANNEL", "TABLE", "ClusterError", "ClusterTimeout", "MemberEvent", "Membership", "NodeInfo"]

#: the membership table, in the first schema of the connection's search_path
TABLE = "wippy_cluster_nodes"
#: the LISTEN/NOTIFY channel (database-wide: the payload names the schema)
CHANNEL = "wippy_cluster"

# advisory lock key taken while the table is created ("wippy" in ASCII, then a role byte; the workflow
# store uses ...01 and ...02)
_LOCK_SCHEMA = 0x7769707079_03

#: the columns this module reads and writes, with their types as information_schema names them
_COLUMNS: dict[str, str] = {
    "node_id": "text",
    "address": "text",
    "status": "text",
    "incarnation": "bigint",
    "ttl": "double precision",
    "load": "bigint",
    "meta": "jsonb",
    "started_at": "timestamp with time zone",
    "heartbeat_at": "timestamp with time zone",
    "changed_at": "timestamp with time zone",
    "changed_by": "text",
}

_CREATE = (
    "CREATE TABLE IF NOT EXISTS wippy_cluster_nodes("
    " node_id text PRIMARY KEY,"
    " address text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('up', 'down', 'left')),"
    " incarnation bigint NOT NULL CHECK (incarnation > 0),"
    " ttl float8 NOT NULL CHECK (ttl > 0),"
    " load bigint NOT NULL DEFAULT 0,"
    " meta jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meta) = 'object'),"
    " started_at timestamptz NOT NULL,"
    " heartbeat_at timestamptz NOT NULL,"
    " changed_at timestamptz NOT NULL,"
    " changed_by text NOT NULL)"
)
_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"
_CURRENT_SCHEMA = "SELECT current_schema()"
_TABLE_EXISTS = (
    "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = 'wippy_cluster_nodes'"
)
_TABLE_COLUMNS = (
    "SELECT column_name::text, data_type::text FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = 'wippy_cluster_nodes'"
)
_SETUP = "SELECT set_config('statement_timeout', %(ms)s, false)"
_LISTEN = "LISTEN wippy_cluster"


# every change sends pg_notify('wippy_cluster', PAYLOAD) in its own statement, PAYLOAD being
# json_build_object('schema', current_schema(), 'by', NODE, 'kind', KIND, 'node_id', ID, 'incarnation', N)

#: join or rejoin: the next incarnation, unless a live row holds the id (then no row is returned)
_JOIN = (
    "WITH j AS ("
    "INSERT INTO wippy_cluster_nodes AS n (node_id, address, status, incarnation, ttl, load, meta,"
    " started_at, heartbeat_at, changed_at, changed_by)"
    " VALUES (%(node)s::text, %(address)s::text, 'up', %(after)s::bigint + 1, %(ttl)s::float8, %(load)s::bigint,"
    " %(meta)s, now(), now(), now(), %(node)s::text)"
    " ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, status = 'up',"
    " incarnation = GREATEST(n.incarnation + 1, EXCLUDED.incarnation), ttl = EXCLUDED.ttl, load = EXCLUDED.load,"
    " meta = EXCLUDED.meta, started_at = now(), heartbeat_at = now(), changed_at = now(),"
    " changed_by = EXCLUDED.changed_by"
    " WHERE NOT (n.status = 'up' AND n.heartbeat_at >= now() - n.ttl * interval '1 second')"
    " RETURNING n.incarnation) "
    "SELECT j.incarnation, pg_notify('wippy_cluster', json_build_object('schema', current_schema(),"
    " 'by', %(node)s::text, 'kind', 'joined'::text, 'node_id', %(node)s::text, 'incarnation', j.incarnation)::text)"
    " FROM j"
)
#: the row that refused a join
_HOLDER = (
    "SELECT address, status, incarnation, extract(epoch FROM now() - heartbeat_at)::float8, ttl "
    "FROM wippy_cluster_nodes WHERE node_id = %(node)s::text"
)
_BEAT = (
    "UPDATE wippy_cluster_nodes SET heartbeat_at = now(), load = %(load)s::bigint "
    "WHERE node_id = %(node)s::text AND incarnation = %(inc)s::bigint AND status = 'up'"
)
_DOWN = (
    "WITH d AS ("
    "UPDATE wippy_cluster_nodes SET status = 'down', changed_at = now(), changed_by = %(node)s::text"
    " WHERE status = 'up' AND node_id <> %(node)s::text AND heartbeat_at < now() - ttl * interval '1 second'"
    " RETURNING node_id, incarnation) "
    "SELECT d.node_id, d.incarnation, pg_notify('wippy_cluster', json_build_object('schema', current_schema(),"
    " 'by', %(node)s::text, 'kind', 'down'::text, 'node_id', d.node_id, 'incarnation', d.incarnation)::text)"
    " FROM d"
)
_SCAN = (
    "SELECT node_id, address, status, incarnation, extract(epoch FROM now() - heartbeat_at)::float8, load,"
    " extract(epoch FROM started_at)::float8, meta, ttl FROM wippy_cluster_nodes ORDER BY node_id"
)
_LEAVE = (
    "WITH l AS ("
    "UPDATE wippy_cluster_nodes SET status = 'left', changed_at = now(), changed_by = %(node)s::text"
    " WHERE node_id = %(node)s::text AND incarnation = %(inc)s::bigint AND status <> 'left'"
    " RETURNING incarnation) "
    "SELECT l.incarnation, pg_notify('wippy_cluster', json_build_object('schema', current_schema(),"
    " 'by', %(node)s::text, 'kind', 'left'::text, 'node_id', %(node)s::text, 'incarnation', l.incarnation)::text)"
    " FROM l"
)

_Conn = psycopg.Connection[tuple[Any, ...]]


class ClusterError(WippyError):
    """Cluster membership failed: the database cannot be reached or refuses the login, the table is not a
    membership table (or cannot be created), a node id is taken by a live node, or the membership is used
    out of order (``nodes()`` before ``join()``, ``join()`` twice). ``location`` is the database's URL
    without its password; ``node_id`` is the node concerned."""

    def __init__(self, message: str, location: str | None = None, node_id: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.node_id = node_id


class ClusterTimeout(ClusterError, TimeoutError):
    """``wait_for()`` ran out of time: the live set never satisfied the predicate. ``live`` is the last
    live set this node saw."""

    def __init__(self, message: str, location: str, node_id: str, live: dict[str, NodeInfo]) -> None:
        super().__init__(message, location, node_id)
        self.live = live


@dataclass(frozen=True)
class NodeInfo:
    """One row of the membership table, as read at one moment."""

    node_id: str
    """The node's name in the cluster."""
    address: str
    """Where the others reach it (as it said at join)."""
    status: str
    """``"up"``, ``"down"`` (declared by another node after missing its ttl) or ``"left"``."""
    incarnation: int
    """1 on the first join of this node_id, +1 on each rejoin."""
    age: float
    """Seconds since its last heartbeat, by the database's clock (``now() - heartbeat_at``)."""
    load: int
    """What the node last reported with ``set_load`` (written with its heartbeats)."""
    started_at: float
    """When this incarnation joined, in unix seconds (the database's clock)."""
    meta: dict[str, Any]
    """The JSON object the node gave at join."""
    ttl: float = math.inf
    """The node's own ttl: it is live while ``status == "up" and age <= ttl``, down once older."""

    @property
    def live(self) -> bool:
        """Up, and heard from within its ttl."""
        return self.status == "up" and self.age <= self.ttl


@dataclass(frozen=True)
class MemberEvent:
    """A change seen by this node's scans (another node) or of this node's own connection.

    Kinds: ``"joined"`` (a node_id not seen up before, or a new incarnation of one: then "down" of the old
    incarnation comes first if it had not been seen down), ``"down"`` (declared down, by any node, or its
    row vanished), ``"left"``; and for this node itself: ``"disconnected"`` (once, when a heartbeat fails)
    and ``"reconnected"`` (when one works again; ``incarnation`` is the new one if the node had to rejoin).
    """

    kind: str
    """``"joined"``, ``"down"``, ``"left"``, ``"disconnected"`` or ``"reconnected"``."""
    node_id: str
    """The node concerned (this node's own id for disconnected and reconnected)."""
    incarnation: int
    """The incarnation concerned (for "down" after a restart: the old one)."""
    address: str
    """The node's address (as in its row)."""


def _redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in the authority and in a ``password=`` parameter)."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&\s]*", r"\1***", url)


def _text(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


class Membership:
    """This node's membership of the cluster in the database at ``url``.

    ``ttl``: seconds without a heartbeat after which the others declare this node down; ``heartbeat``:
    seconds between heartbeats (and scans), ``ttl / 5`` by default, less than ``ttl``. ``meta``: a JSON
    object stored in the row. ``on_event``: called on the membership thread with each
    :class:`MemberEvent` (keep it short: heartbeats wait for it; it may call ``nodes()`` or ``leave()``,
    not ``wait_for()``). ``connect_timeout``: seconds for each connection attempt (libpq counts whole
    seconds, at least 2), unless the URL says.

    A Membership joins once: after ``leave()`` create a new one to rejoin. It is also a context manager
    (joins on entry unless joined, leaves on exit).
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        address: str,
        *,
        ttl: float = 5.0,
        heartbeat: float | None = None,
        meta: Mapping[str, Any] | None = None,
        on_event: Callable[[MemberEvent], None] | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(node_id, str) or not node_id.strip():
            raise ValueError(f"node_id must be a non-empty string, not {node_id!r}")
        if not isinstance(address, str):
            raise ValueError(f"address must be a string (e.g. 'tcp://host:port'), not {address!r}")
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        beat = ttl / 5 if heartbeat is None else heartbeat
        if not (isinstance(beat, int | float) and math.isfinite(beat) and 0 < beat < ttl):
            raise ValueError(
                f"heartbeat must be a positive number of seconds less than ttl ({ttl}), not {heartbeat!r}: "
                "a node beating less often than its ttl would be declared down between two heartbeats"
            )
        self._meta = dict(meta or {})
        try:
            json.dumps(self._meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON (a mapping of str keys to JSON values): {exc}") from exc
        self.node_id = node_id
        self.address = address
        self.ttl = float(ttl)
        self.heartbeat = float(beat)
        self.location = _redact(url)
        self._url = url
        self._on_event = on_event
        self._kwargs: dict[str, Any] = {"autocommit": True}
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ClusterError(
                f"the cluster database URL {self.location} cannot be read ({_text(exc)}); write it as "
                "postgresql://user:password@host:port/database", self.location, node_id,
            ) from exc
        if "connect_timeout" not in given:
            self._kwargs["connect_timeout"] = max(2, math.ceil(connect_timeout))
        if "application_name" not in given:
            self._kwargs["application_name"] = f"wippy-cluster:{node_id}"[:63]
        if "tcp_user_timeout" not in given:
            # a write into a dead network fails after this long instead of TCP's minutes of retries
            self._kwargs["tcp_user_timeout"] = max(1000, round(self.ttl * 1000))
        self._connect_timeout = float(self._kwargs.get("connect_timeout", connect_timeout))

        self._state = "new"  # new -> joined -> left
        self._lock = threading.Lock()  # join and leave
        self._cond = threading.Condition()  # the view, for wait_for
        self._view: dict[str, NodeInfo] | None = None
        self._seen: dict[str, tuple[int, str, str]] = {}  # other nodes: (incarnation, status, address)
        self._main: _Conn | None = None
        self._main_pid = 0
        self._listen: _Conn | None = None
        self._listen_fd = -1
        self._query: _Conn | None = None
        self._qlock = threading.Lock()
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._incarnation = 0
        self._connected = False
        self._load = 0
        self._last_error: str | None = None
        self._reported: set[str] = set()
        self._schema = ""

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """True while this node's heartbeats reach the database (False before join and after leave)."""
        return self._connected

    @property
    def incarnation(self) -> int:
        """This node's incarnation (0 before join; it changes if the node had to rejoin)."""
        return self._incarnation

    @property
    def last_error(self) -> str | None:
        """Why the last heartbeat or scan failed, if one did (kept after reconnecting)."""
        return self._last_error

    def __repr__(self) -> str:
        return (
            f"<Membership {self.node_id!r} {self._state} incarnation={self._incarnation} "
            f"connected={self._connected} at {self.location}>"
        )

    def __enter__(self) -> Membership:
        if self._state == "new":
            self.join()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.leave()

    def _where(self) -> str:
        return f"node {self.node_id!r} in the cluster database {self.location}"

    def _error(self, message: str) -> ClusterError:
        return ClusterError(message, self.location, self.node_id)

    # ------------------------------------------------------------------ join and leave
    def join(self) -> int:
        """Create the table if missing, put this node's row up with the next incarnation, tell the others
        (NOTIFY) and start the membership thread. Returns the incarnation.

        Raises :class:`ClusterError` when the database cannot be reached, the table is wrong, or a live
        node (a row up, heard from within its ttl) holds ``node_id``; nothing is left running then.
        """
        with self._lock:
            if self._state == "joined":
                raise self._error(
                    f"{self._where()} has already joined (incarnation {self._incarnation}); call leave() first"
                )
            if self._state == "left":
                raise self._error(
                    f"{self._where()} has left; a Membership joins once: create a new one to rejoin (it takes "
                    "the next incarnation)"
                )
            listen: _Conn | None = None
            main: _Conn | None = None
            try:
                listen = self._connect()
                try:
                    listen.execute(_LISTEN)
                    main = self._connect(statement_timeout=True)
                    self._schema = self._ensure_table(main)
                    incarnation = self._upsert(main, 0)
                except psycopg.Error as exc:
                    raise self._error(f"{self._where()}: join failed ({_text(exc)}); retry") from exc
            except BaseException:
                for conn in (listen, main):
                    if conn is not None:
                        conn.close()
                raise
            self._listen, self._listen_fd = listen, listen.fileno()
            self._main, self._main_pid = main, main.info.backend_pid
            self._incarnation = incarnation
            self._connected = True
            self._state = "joined"
            r, w = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self._wake = (r, w)
            self._thread = threading.Thread(target=self._run, name=f"wippy-cluster-{self.node_id}", daemon=True)
            self._thread.start()
            return incarnation

    def leave(self) -> None:
        """Stop the membership thread, mark this node's row "left" (the others see "left" at once, by
        NOTIFY) and close the connections. Idempotent; a Membership that never joined just becomes left.

        Raises :class:`ClusterError` (after everything is stopped and closed) if the row could not be
        marked: the others then declare this node down when its ttl runs out.
        """
        with self._lock:
            if self._state != "joined":
                self._state = "left"
                return
            self._state = "left"
            self._stop.set()
            self._poke()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():  # leave() from on_event
                thread.join(timeout=self._connect_timeout + self.ttl + 5)
            error: BaseException | None = None
            extra: _Conn | None = None
            try:
                conn = self._main
                if conn is None or conn.broken or conn.closed or (thread is not None and thread.is_alive()):
                    conn = extra = self._connect()
                conn.execute(_LEAVE, {"node": self.node_id, "inc": self._incarnation}).fetchall()
            except (psycopg.Error, ClusterError) as exc:
                error = exc
            finally:
                with self._qlock:
                    conns = [self._main, self._listen, self._query, extra]
                    self._main = self._listen = self._query = None
                    self._listen_fd = -1
                for c in conns:
                    if c is not None:
                        c.close()
                if self._wake is not None:
                    for s in self._wake:
                        s.close()
                    self._wake = None
                self._connected = False
                with self._cond:
                    self._cond.notify_all()
            if error is not None:
                raise self._error(
                    f"{self._where()} stopped, but its row could not be marked 'left' ({_text(error)}); the "
                    f"others will declare it down within its ttl ({self.ttl:g} s)"
                ) from error

    # ------------------------------------------------------------------ reading
    def nodes(self) -> list[NodeInfo]:
        """Every row of the table (this node's too), sorted by node_id, read now from the database."""
        with self._qlock:
            self._check_joined("nodes()")
            for _attempt in range(2):
                fresh = self._query is None
                if self._query is None:
                    self._query = self._connect()
                conn = self._query
                try:
                    rows = conn.execute(_SCAN).fetchall()
                    return [self._info(r) for r in rows]
                except psycopg.Error as exc:
                    self._query = None
                    conn.close()
                    if fresh or not conn.broken:
                        raise self._error(f"{self._where()}: reading the nodes failed ({_text(exc)}); retry") from exc
                    # an idle connection that broke (the server restarted): connect again once
            raise AssertionError("unreachable")  # pragma: no cover

    def live(self) -> dict[str, NodeInfo]:
        """The nodes that are up and heard from within their ttl (this one included), by node_id."""
        return {n.node_id: n for n in self.nodes() if n.live}

    def set_load(self, n: int) -> None:
        """Report ``n`` as this node's load; written with the next heartbeat."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"load must be an int, not {n!r}")
        self._load = n

    def wait_for(self, predicate: Callable[[dict[str, NodeInfo]], bool], timeout: float) -> dict[str, NodeInfo]:
        """Block until the live set of this node's latest scan satisfies ``predicate``; return that set.

        The predicate runs on the caller's thread (an exception from it propagates). Raises
        :class:`ClusterTimeout` (a :class:`ClusterError` and a TimeoutError) after ``timeout`` seconds,
        and :class:`ClusterError` if the node is not joined or leaves meanwhile.
        """
        if self._thread is not None and self._thread is threading.current_thread():
            raise self._error(
                f"{self._where()}: wait_for() called from on_event, on the membership thread: it would wait for "
                "scans that this thread runs; wait on another thread"
            )
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_joined("wait_for()")
                view = self._view
                if view is not None and predicate(dict(view)):
                    return dict(view)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    live = dict(view or {})
                    raise ClusterTimeout(
                        f"{self._where()}: the live nodes did not satisfy the predicate within {timeout:g} s; "
                        f"live now: {', '.join(sorted(live)) or '(none seen yet)'}; check that the expected "
                        "nodes joined the same database and schema, or wait longer",
                        self.location, self.node_id, live,
                    )
                self._cond.wait(remaining)

    def _check_joined(self, what: str) -> None:
        if self._state == "new":
            raise self._error(f"{self._where()}: {what} needs a joined membership; call join() first")
        if self._state == "left":
            raise self._error(f"{self._where()}: {what} after leave(); create a new Membership and join()")

    @staticmethod
    def _info(row: tuple[Any, ...]) -> NodeInfo:
        node_id, address, status, incarnation, age, load, started_at, meta, ttl = row
        return NodeInfo(
            node_id=str(node_id), address=str(address), status=str(status), incarnation=int(incarnation),
            age=max(0.0, float(age)), load=int(load), started_at=float(started_at),
            meta=dict(meta) if isinstance(meta, dict) else {}, ttl=float(ttl),
        )

    # ------------------------------------------------------------------ database
    def _connect(self, *, statement_timeout: bool = False) -> _Conn:
        try:
            conn = psycopg.connect(self._url, **self._kwargs)
        except psycopg.Error as exc:
            raise self._error(
                f"cannot connect to the cluster database {self.location} ({_text(exc)}); check that the server "
                "runs and the host, port, user, password and database of the URL"
            ) from exc
        if statement_timeout:
            # a heartbeat stuck behind a lock for longer than the ttl is a failed heartbeat
            try:
                conn.execute(_SETUP, {"ms": str(max(1000, round(self.ttl * 1000)))})
            except psycopg.Error as exc:
                conn.close()
                raise self._error(f"{self._where()}: cannot set up the connection ({_text(exc)}); retry") from exc
        return conn

    def _ensure_table(self, conn: _Conn) -> str:
        """Create the table if missing (under an advisory lock: joiners do not trip over each other) and
        check its columns; returns the schema it is in."""
        with conn.transaction():
            conn.execute(_LOCK, {"key": _LOCK_SCHEMA})
            row = conn.execute(_CURRENT_SCHEMA).fetchone()
            if row is None or row[0] is None:
                raise self._error(
                    f"{self._where()}: no schema of the search_path exists to hold the table {TABLE}; create it "
                    "(CREATE SCHEMA ...) or fix search_path in the URL"
                )
            schema = str(row[0])
            if conn.execute(_TABLE_EXISTS).fetchone() is None:
                try:
                    conn.execute(_CREATE)
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise self._error(
                        f"{self._where()}: cannot create the table {schema}.{TABLE} ({_text(exc)}); grant the "
                        "user CREATE on the schema, or create the table once as its owner"
                    ) from exc
            columns: dict[str, str] = {str(k): str(v) for k, v in conn.execute(_TABLE_COLUMNS).fetchall()}
        wrong = [f"{name} {kind}" for name, kind in _COLUMNS.items() if columns.get(name) != kind]
        if wrong:
            raise self._error(
                f"{self._where()}: the table {schema}.{TABLE} is not a membership table of this version (it "
                f"lacks {', '.join(wrong)}, or has them with other types); drop it if no node uses it, or put "
                "the cluster in another schema (search_path in the URL)"
            )
        return schema

    def _upsert(self, conn: _Conn, after: int) -> int:
        """Put this node's row up with an incarnation above ``after`` and the row's; ClusterError if a live
        node holds the id."""
        params = {
            "node": self.node_id, "address": self.address, "after": after, "ttl": self.ttl,
            "load": self._load, "meta": Jsonb(self._meta),
        }
        row = conn.execute(_JOIN, params).fetchone()
        if row is not None:
            return int(row[0])
        holder = conn.execute(_HOLDER, params).fetchone()
        if holder is None:  # pragma: no cover - deleted between the two statements
            raise self._error(f"{self._where()}: the join was refused; retry")
        address, _status, incarnation, age, ttl = holder
        raise self._error(
            f"node id {self.node_id!r} is taken by a live node in the cluster database {self.location} "
            f"(address {address}, incarnation {incarnation}, heartbeat {max(0.0, age):.1f} s ago, ttl {ttl:g} s): "
            f"stop that node or choose another node_id; if it has crashed, its row is declared down "
            f"{max(0.0, ttl - age):.1f} s from now"
        )

    # ------------------------------------------------------------------ the membership thread
    def _run(self) -> None:
        next_beat = time.monotonic()  # the first cycle at once: the first scan
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat
                self._guarded(True)
            elif self._wait(next_beat - now):
                self._guarded(False)

    def _guarded(self, full: bool) -> None:
        try:
            self._cycle(full)
        except Exception as exc:  # a bug: say it, keep the membership going
            self._report("the membership thread failed", exc)

    def _cycle(self, full: bool) -> None:
        """Heartbeat (or reconnect, or rejoin), declare the stale down, scan; then the events. A scan-only
        cycle (``full`` false) follows a notification."""
        events: list[MemberEvent] = []
        try:
            if self._main is None:
                if not full:
                    return
                self._main = self._connect(statement_timeout=True)
                self._main_pid = self._main.info.backend_pid
            main = self._main
            if self._listen is None:
                listen = self._connect()
                try:
                    listen.execute(_LISTEN)
                except BaseException:
                    listen.close()
                    raise
                self._listen, self._listen_fd = listen, listen.fileno()
            if full:
                params = {"node": self.node_id, "inc": self._incarnation, "load": self._load}
                if main.execute(_BEAT, params).rowcount != 1:
                    # this incarnation was declared down (or its row changed by hand): down is final
                    old = self._incarnation
                    if self._connected:
                        self._connected = False
                        events.append(MemberEvent("disconnected", self.node_id, old, self.address))
                    self._last_error = (
                        f"the row of incarnation {old} was no longer up (declared down after missing its ttl, "
                        "or changed by hand); rejoining with the next incarnation"
                    )
                    try:
                        self._incarnation = self._upsert(main, old)
                    except ClusterError as exc:  # a live node holds the id now: retried every heartbeat
                        self._report("cannot rejoin", exc, key=f"rejoin refused at incarnation {old}")
                        raise
                main.execute(_DOWN, params).fetchall()
            rows = main.execute(_SCAN).fetchall()
        except (psycopg.Error, ClusterError) as exc:
            self._last_error = _text(exc)
            self._drop_connections()
            if self._connected:
                self._connected = False
                events.append(MemberEvent("disconnected", self.node_id, self._incarnation, self.address))
            self._emit(events)
            return
        if not self._connected:
            self._connected = True
            events.append(MemberEvent("reconnected", self.node_id, self._incarnation, self.address))
        infos = [self._info(r) for r in rows]
        events.extend(self._diff(infos))
        with self._cond:
            self._view = {n.node_id: n for n in infos if n.live}
            self._cond.notify_all()
        self._emit(events)

    def _diff(self, infos: list[NodeInfo]) -> list[MemberEvent]:
        """The events between the previous scan and this one (other nodes only)."""
        events: list[MemberEvent] = []
        seen: dict[str, tuple[int, str, str]] = {}
        for n in infos:
            if n.node_id == self.node_id:
                continue
            seen[n.node_id] = (n.incarnation, n.status, n.address)
            old = self._seen.get(n.node_id)
            if old is None:
                if n.status == "up":
                    events.append(MemberEvent("joined", n.node_id, n.incarnation, n.address))
            elif n.incarnation != old[0]:
                if old[1] == "up":
                    events.append(MemberEvent("down", n.node_id, old[0], old[2]))
                if n.status == "up":
                    events.append(MemberEvent("joined", n.node_id, n.incarnation, n.address))
            elif old[1] == "up" and n.status in ("down", "left"):
                events.append(MemberEvent(n.status, n.node_id, n.incarnation, n.address))
        for node_id, (incarnation, status, address) in self._seen.items():
            if node_id not in seen and status == "up":  # its row was deleted by hand
                events.append(MemberEvent("down", node_id, incarnation, address))
        self._seen = seen
        return events

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a notification (True: one that calls for a scan) or a wake-up."""
        wake = self._wake
        if wake is None:
            return False
        listen, fd = self._listen, self._listen_fd
        fds = [wake[0].fileno()] + ([fd] if listen is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except (OSError, ValueError):
            self._drop_listen()
            return False
        if fds[0] in ready:
            try:
                wake[0].recv(4096)
            except OSError:
                pass
        if listen is None or fd not in ready:
            return False
        try:
            notes = list(listen.notifies(timeout=0))
        except psycopg.Error as exc:
            self._last_error = _text(exc)
            self._drop_listen()  # the next heartbeat connects again (and scans)
            return False
        if listen.broken:
            self._drop_listen()
            return False
        return any(n.pid != self._main_pid and self._relevant(n.payload) for n in notes)

    def _relevant(self, payload: str) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return True  # someone else's NOTIFY on the channel: a scan is cheap
        return not isinstance(data, dict) or data.get("schema") == self._schema

    def _poke(self) -> None:
        if self._wake is not None:
            try:
                self._wake[1].send(b"x")
            except OSError:
                pass

    def _drop_listen(self) -> None:
        listen, self._listen, self._listen_fd = self._listen, None, -1
        if listen is not None:
            listen.close()

    def _drop_connections(self) -> None:
        main, self._main = self._main, None
        if main is not None:
            main.close()
        self._drop_listen()

    def _emit(self, events: list[MemberEvent]) -> None:
        if self._on_event is None:
            return
        for event in events:
            if self._stop.is_set():
                return
            try:
                self._on_event(event)
            except Exception as exc:
                self._report(f"on_event raised for {event}", exc)

    def _report(self, context: str, exc: BaseException, key: str | None = None) -> None:
        """Print ``exc`` with its traceback to stderr, once per distinct message (or ``key``)."""
        key = key or f"{type(exc).__name__}: {exc}"
        if key in self._reported:
            return
        self._reported.add(key)
        print(f"wippy cluster, node {self.node_id!r}: {context}:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
