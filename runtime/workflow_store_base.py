"""The durable-workflow store: workflows, their journals, their signals and node leases, in SQLite or PostgreSQL.

A workflow is a Lua process whose every effect is journaled; after a crash a fresh node replays the
journal. This module is the storage under that engine: one interface, :class:`WorkflowStore`, with two
backends (``workflow_store_sqlite.py``, ``workflow_store_pg.py``), opened by :func:`open_store` of
``workflow_store.py``, which picks the backend (this module knows none of them)::

    open_store("data/workflows.sqlite")              # a path, or sqlite:///abs/path: SQLite (one machine)
    open_store("postgresql://user:pw@host/db")       # PostgreSQL (several nodes), runtime/workflow_store_pg.py

Both keep the same five tables (SQLite file or PostgreSQL schema: the first of ``search_path``, so
``?options=-csearch_path%3Dmine`` in the URL keeps several stores in one database)::

    wippy_store_meta(key PRIMARY KEY, value)                        -- 'schema' = '1'
    wippy_workflows(workflow_id PRIMARY KEY, entry_id, input, status, result, error, owner,
                    created_at, updated_at, steps, signals)
    wippy_journal(workflow_id, seq, op, args_hash, result, at, PRIMARY KEY (workflow_id, seq))
    wippy_signals(workflow_id, seq, topic, payload, at, PRIMARY KEY (workflow_id, seq))
    wippy_nodes(node_id PRIMARY KEY, heartbeat_at)

The contract (tests/test_workflow_store.py runs the same suite against both backends):

- **Workflows.** :meth:`~WorkflowStore.create` is idempotent: an ID that exists gives back the stored
  record with ``created=False`` (whatever its entry, input or status: the caller decides). A workflow is
  ``running`` until :meth:`~WorkflowStore.finish` makes it ``completed``, ``failed`` or ``cancelled``,
  once: finishing it again raises :class:`WorkflowFinished`.
- **Journal.** Steps are numbered from 1 and :meth:`~WorkflowStore.append` takes exactly the next one;
  a gap or a duplicate raises :class:`JournalConflict` and a stored row is never overwritten. The
  workflow's row carries the count (``steps``) and is the one point of serialization: an append is
  ``UPDATE wippy_workflows SET steps = seq WHERE steps = seq - 1 AND status = 'running'`` and, only if
  that matched, the insert of the row, in one transaction. Two nodes racing on one workflow: one wins,
  the other gets :class:`JournalConflict`. An append (or finish) that passes ``node_id=`` is also fenced
  by the lease: it is refused with :class:`LeaseLost` once another node has claimed the workflow, so a
  node that was only paused learns at its first write that it must stop.
- **Group commit.** :meth:`~WorkflowStore.append_many` writes the steps of several workflows in one
  transaction (one fsync). Each workflow's steps in the batch are all or nothing; a refused workflow does
  not hold back the others: its error is returned in a dict (empty when everything was written).
- **Signals.** :meth:`~WorkflowStore.signal` journals a message on arrival and numbers it per workflow
  from 1; an unknown ID raises :class:`UnknownWorkflow`, a finished workflow :class:`WorkflowFinished`.
- **Leases.** A node calls :meth:`~WorkflowStore.heartbeat` every few seconds. A workflow whose owner's
  heartbeat is older than the TTL (or whose owner released it or never beat) is an orphan;
  :meth:`~WorkflowStore.claim_orphans` takes them over atomically: two nodes claiming at once never both
  get the same workflow; a node never claims its own (it is running them), even after a late heartbeat.
  :meth:`~WorkflowStore.release` on clean shutdown hands a node's running workflows over at once.
  ``create``, ``claim`` and ``claim_orphans`` also count as a heartbeat of the node that calls them.
- **Values** (input, result, error, payloads, step results) are plain data as it comes from Lua: None,
  bool, int (64-bit), float (nan and infinities too), str, bytes, lists, and dicts whose keys are str,
  int, float or bytes. They round-trip exactly (int stays int, 1.0 stays float, bytes stay bytes, int
  keys stay int, order of keys kept). A tuple is stored as a list, as Lua sees it. Anything else
  (objects, sets, nesting deeper than 64) raises :class:`PayloadError` naming the path, and nothing is
  written.

Decisions:

- **Leases are rows with heartbeats, not advisory locks.** SQLite has no advisory locks, so only rows
  give both backends one behaviour. A PostgreSQL session lock lives and dies with one connection: a
  node with a connection per thread, or whose connection dropped and came back, would hold or lose
  locks silently, and a lock does not fence the writes of a node that lost it. A row says who owns
  what (inspectable with ``list()``), and the owner check inside ``append``/``finish`` is the fence. On
  PostgreSQL, claims additionally take a transaction-scoped advisory lock so that concurrent claimers
  run one after another (a claim is rare and short); plain ``UPDATE ... WHERE owner is dead`` would let
  READ COMMITTED's re-check pass the same row to two claimers.
- **Time** comes from ``now`` (a callable giving Unix seconds) when one is given, so tests move time
  without sleeping. Otherwise SQLite uses ``time.time()`` (one machine, one clock) and PostgreSQL the
  server's clock, so that nodes whose clocks disagree still agree on how old a heartbeat is.
- **Values are JSON text with tags** (``{"$t": "b", "v": base64}`` for bytes, ``{"$t": "map", "v":
  [[k, v], ...]}`` for a dict whose keys are not all strings or that has a ``"$t"`` key, ``{"$t": "s",
  "v": base64}`` for a str holding surrogate code points, which JSON would merge into one character),
  written with ``ensure_ascii`` so no NUL byte or lone surrogate reaches the database. The value
  columns are text, not JSONB: JSONB would refuse NaN and normalize numbers.
- **An ABC, not a Protocol**: the two backends share the codec, the records, the checks of arguments and
  the wording of every refusal, which live in the base class.

Threads: every method may be called from any thread. Each thread gets its own connection (opened on its
first call, closed by :meth:`~WorkflowStore.close`; those of threads that ended are closed when a new
thread connects). SQLite serializes writers with ``BEGIN IMMEDIATE`` and a busy timeout, so several
threads and several OS processes may share one file. Call ``close()`` once no other call is in flight.

Errors (``runtime/errors.py``): :class:`StoreError` and its subclasses; the message says what was
refused, where (the file, or the URL without its password; the workflow ID; the step) and what to do.

Speed on this machine (2 cores, a virtual disk whose fdatasync takes 0.1-0.15 ms; ``bench/bench_store.py``,
2026-11): a single append on SQLite costs 0.12-0.16 ms per step (one fsync; as much as a bare sqlite3
INSERT + COMMIT with FULL: the store's own work is ~17 us, measured on tmpfs), so no group commit is
needed to reach 0.3 ms; :meth:`~WorkflowStore.append_many` brings it to 0.03 ms per step in batches of
10 and 0.008 ms in batches of 100. PostgreSQL on a local server with fsync on: 0.18-0.26 ms single,
0.11-0.25 ms per step with 4 threads appending at once (the server can share WAL flushes), 0.08-0.12
and 0.016-0.021 ms in batches of 10 and 100. For comparison, DBOS 3.x took 2.3 ms per step on this
machine. (Under load from other work on the 2 cores, PostgreSQL figures rose to ~1 ms.)
"""

from __future__ import annotations

import base64
import builtins
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeAlias

from .errors import (
    CorruptJournal,
    JournalConflict,
    LeaseLost,
    PayloadError,
    StoreError,
    UnknownWorkflow,
    WippyError,
    WorkflowFinished,
)

__all__ = [
    "FINISHED",
    "MAX_DEPTH",
    "SCHEMA_VERSION",
    "STATUSES",
    "WF_COLUMNS",
    "JournalRecord",
    "SignalRecord",
    "Step",
    "Value",
    "WorkflowRecord",
    "WorkflowStatus",
    "WorkflowStore",
    "check_id",
    "decode_value",
    "encode_value",
    "redact_url",
]

#: Plain data as it comes from Lua (see the module docstring); ``Any`` because it is recursive.
Value: TypeAlias = Any
WorkflowStatus = Literal["running", "completed", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")
FINISHED: tuple[str, ...] = ("completed", "failed", "cancelled")
#: the schema this module reads and writes (``wippy_store_meta``); another one is refused at open
SCHEMA_VERSION = "1"
#: the deepest nesting of a value (the same bound as a message payload, ``payload.MAX_DEPTH``)
MAX_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """One workflow as stored when it was read (a snapshot: read again to see changes)."""

    workflow_id: str
    """The workflow's ID, unique in the store."""
    entry_id: str
    """The ``workflow.lua`` entry it runs."""
    input: Value
    """What it was started with."""
    status: WorkflowStatus
    """``running`` until finished; then ``completed``, ``failed`` or ``cancelled``."""
    result: Value
    """What it returned (None until it completes)."""
    error: Value
    """Why it failed or was cancelled (None otherwise)."""
    owner: str | None
    """The node that runs it (the last one, once finished); None once that node released it."""
    created_at: float
    """Unix seconds of its creation."""
    updated_at: float
    """Unix seconds of its last step, signal, claim or finish."""
    steps: int
    """How many steps its journal holds (the last ``seq``)."""
    signals: int
    """How many signals it has received (the last signal ``seq``)."""

    @property
    def finished(self) -> bool:
        """True once completed, failed or cancelled."""
        return self.status != "running"


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journaled step of a workflow."""

    workflow_id: str
    seq: int
    """1, 2, 3, ... without gaps."""
    op: str
    """What the step was (the engine's name for it: ``call``, ``now``, ``receive``, ...)."""
    args_hash: str
    """A hash of the step's arguments, so a replay that would call something else is detected."""
    result: Value
    """What the step gave back, as replay must give it again."""
    at: float
    """Unix seconds when it was written."""


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One signal (a message sent to a workflow by its ID), journaled when it arrived."""

    workflow_id: str
    seq: int
    """1, 2, 3, ... per workflow, in arrival order."""
    topic: str
    payload: Value
    at: float
    """Unix seconds of its arrival."""


@dataclass(frozen=True, slots=True)
class Step:
    """A step to append, for :meth:`WorkflowStore.append_many`."""

    workflow_id: str
    seq: int
    op: str
    args_hash: str
    result: Value = None


# ---------------------------------------------------------------------------------------------- values
class _Unstorable(Exception):
    """Raised inside the encoder; carries the path (built as the recursion unwinds) and the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.parts: list[str] = []


def _key_part(key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f".{key}"
    return f"[{key!r}]"


def _b64(b: bytes) -> dict[str, Any]:
    return {"$t": "b", "v": base64.b64encode(b).decode("ascii")}


# JSON would turn a high and a low surrogate that stand side by side into one character on the way back,
# so a str that holds any surrogate is stored as its code points (UTF-8 with surrogatepass, base64)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain_str(s: str) -> bool:
    return s.isascii() or _SURROGATE.search(s) is None


def _enc_str(s: str) -> Any:
    if s.isascii() or _SURROGATE.search(s) is None:
        return s
    return {"$t": "s", "v": base64.b64encode(s.encode("utf-8", "surrogatepass")).decode("ascii")}


def _enc_key(k: object) -> Any:
    t = type(k)
    if t is str:
        return _enc_str(k)  # type: ignore[arg-type]
    if t is float or t is bool:
        return k
    if t is int:
        if not _INT64[0] <= k <= _INT64[1]:  # type: ignore[operator]
            raise _Unstorable(f"has the key {k}, an integer outside Lua's 64-bit range")
        return k
    if t is bytes:
        return _b64(k)  # type: ignore[arg-type]
    raise _Unstorable(f"has a key of type {t.__name__} (keys are str, int, float or bytes)")


def _enc(v: Any, depth: int) -> Any:
    t = type(v)
    if t is str:
        return _enc_str(v)
    if t is float or t is bool or v is None:
        return v
    if t is int:
        if not _INT64[0] <= v <= _INT64[1]:
            raise _Unstorable(f"is an integer outside Lua's 64-bit range ({v})")
        return v
    if t is bytes:
        return _b64(v)
    if depth >= MAX_DEPTH:
        raise _Unstorable(f"is nested deeper than {MAX_DEPTH}")
    if t is list or t is tuple:
        out_list = []
        for i, x in enumerate(v):
            try:
                out_list.append(_enc(x, depth + 1))
            except _Unstorable as e:
                e.parts.append(f"[{i + 1}]")
                raise
        return out_list
    if t is dict:
        if "$t" not in v and all(type(k) is str and _plain_str(k) for k in v):
            out_obj = {}
            for k, x in v.items():
                try:
                    out_obj[k] = _enc(x, depth + 1)
                except _Unstorable as e:
                    e.parts.append(_key_part(k))
                    raise
            return out_obj
        pairs = []
        for k, x in v.items():
            key = _enc_key(k)
            try:
                pairs.append([key, _enc(x, depth + 1)])
            except _Unstorable as e:
                e.parts.append(_key_part(k))
                raise
        return {"$t": "map", "v": pairs}
    # subclasses of the plain types (an IntEnum, a str subclass, a bytearray) are stored as their base
    for base in (bool, int, float, str):
        if isinstance(v, base):
            return _enc(base(v), depth)
    if isinstance(v, bytes | bytearray | memoryview):
        return _b64(bytes(v))
    if isinstance(v, list | tuple):
        return _enc(builtins.list(v), depth)
    if isinstance(v, dict):
        return _enc(dict(v), depth)
    raise _Unstorable(
        f"is a {t.__name__}, which the store cannot keep "
        "(store plain data: None, bool, int, float, str, bytes, list, dict)"
    )


_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=True, check_circular=False).encode
_KEY_TYPES = (str, int, float, bool, bytes)


def _object_hook(d: dict[str, Any]) -> Any:
    if "$t" not in d:
        return d
    tag = d["$t"]
    if len(d) != 2 or "v" not in d:
        raise ValueError(f"a tagged value has the fields {sorted(d)}, not exactly $t and v")
    v = d["v"]
    if tag == "b":
        if not isinstance(v, str):
            raise TypeError(f"bytes are stored as base64 text, not as {type(v).__name__}")
        return base64.b64decode(v.encode("ascii"), validate=True)
    if tag == "s":
        if not isinstance(v, str):
            raise TypeError(f"a string with surrogates is stored as base64 text, not as {type(v).__name__}")
        return base64.b64decode(v.encode("ascii"), validate=True).decode("utf-8", "surrogatepass")
    if tag == "map":
        if not isinstance(v, list):
            raise TypeError(f"a map is stored as a list of pairs, not as {type(v).__name__}")
        out: dict[Any, Any] = {}
        for pair in v:
            if not isinstance(pair, list) or len(pair) != 2:
                raise TypeError(f"a map holds a {type(pair).__name__} where a [key, value] pair belongs")
            k, x = pair
            if not isinstance(k, _KEY_TYPES):
                raise TypeError(f"a map has a key of type {type(k).__name__}")
            out[k] = x
        return out
    raise ValueError(f"unknown value tag {tag!r}")


_loads = json.JSONDecoder(object_hook=_object_hook).decode


def encode_value(value: Value, where: str = "value") -> str:
    """The stored text of ``value``; raises :class:`PayloadError` naming ``where`` and the path for a value
    that is not plain data. Any thread."""
    t = type(value)
    if (t is str and value.isascii()) or t is float or t is bool or value is None:  # common scalars: no walk
        return _dumps(value)
    try:
        return _dumps(_enc(value, 0))
    except _Unstorable as e:
        path = "$" + "".join(reversed(e.parts))
        raise PayloadError(f"{where}: {path} {e.reason}") from None


def decode_value(text: str) -> Value:
    """The value stored as ``text``; raises ValueError or TypeError for text that :func:`encode_value` did not
    write (the store turns those into :class:`CorruptJournal`). Any thread."""
    if not isinstance(text, str):
        raise TypeError(f"a stored value is text, not {type(text).__name__}")
    try:
        return _loads(text)
    except RecursionError:
        raise ValueError("a stored value is nested too deeply to read") from None


# ---------------------------------------------------------------------------------------------- the interface
def check_id(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _check_seq(seq: object) -> int:
    if type(seq) is not int:
        raise ValueError(f"seq must be an int, not {seq!r}")
    return seq


class WorkflowStore(ABC):
    """The store of durable workflows (the module docstring has the contract). Open one with
    :func:`open_store`; close it with :meth:`close` or a ``with`` block. Any thread may call any method.
    """

    #: where the store is: its file, or its URL without the password (used in every error message)
    location: str

    def __init__(self, location: str, now: Callable[[], float] | None) -> None:
        self.location = location
        self._now_fn = now
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}{' (closed)' if self._closed else ''}>"

    # ------------------------------------------------------------------ workflows
    def create(self, workflow_id: str, entry_id: str, input: Value, node_id: str) -> tuple[bool, WorkflowRecord]:
        """Create a running workflow owned by ``node_id`` (which counts as its heartbeat); idempotent.

        Returns ``(True, record)`` when it was created, ``(False, stored record)`` when the ID exists (the
        stored one is returned as it is, whatever its entry, input or status). PayloadError for an input
        that is not plain data.
        """
        check_id("workflow_id", workflow_id)
        check_id("entry_id", entry_id)
        check_id("node_id", node_id)
        return self._create(workflow_id, entry_id, self._encode(input, "input", workflow_id), node_id)

    @abstractmethod
    def _create(self, workflow_id: str, entry_id: str, input_text: str, node_id: str) -> tuple[bool, WorkflowRecord]:
        """The backend's :meth:`create`, its arguments checked and its input encoded."""

    @abstractmethod
    def get(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow's record, or None when no workflow has that ID."""

    @abstractmethod
    def list(self, status: WorkflowStatus | None = None) -> builtins.list[WorkflowRecord]:
        """Every workflow (of ``status``, when given), oldest first."""

    def finish(
        self,
        workflow_id: str,
        status: WorkflowStatus,
        result: Value = None,
        error: Value = None,
        *,
        node_id: str | None = None,
    ) -> WorkflowRecord:
        """Mark a running workflow ``completed``, ``failed`` or ``cancelled`` with its result or error; return
        the finished record.

        Raises :class:`UnknownWorkflow`, :class:`WorkflowFinished` when it has already finished (once is
        the rule), :class:`LeaseLost` when ``node_id`` is given and another node owns it, ValueError for
        another status.
        """
        self._check_status(status, finished=True)
        result_text = None if result is None else self._encode(result, "result", workflow_id)
        error_text = None if error is None else self._encode(error, "error", workflow_id)
        return self._finish(workflow_id, status, result_text, error_text, node_id)

    @abstractmethod
    def _finish(self, workflow_id: str, status: WorkflowStatus, result_text: str | None, error_text: str | None,
                node_id: str | None) -> WorkflowRecord:
        """The backend's :meth:`finish`, its status checked and its result and error encoded."""

    # ------------------------------------------------------------------ journal
    def append(
        self,
        workflow_id: str,
        seq: int,
        op: str,
        args_hash: str,
        result: Value = None,
        *,
        node_id: str | None = None,
    ) -> None:
        """Journal step ``seq`` of a running workflow; ``seq`` must be exactly the last one plus 1 (1 first).

        Durable when it returns (one transaction, one fsync). Raises :class:`JournalConflict` for a gap
        or a duplicate (nothing is overwritten), :class:`LeaseLost` when ``node_id`` is given and another
        node owns the workflow, :class:`WorkflowFinished`, :class:`UnknownWorkflow`, PayloadError for a
        result that is not plain data.
        """
        _check_seq(seq)
        check_id("op", op)
        if not isinstance(args_hash, str):
            raise ValueError(f"args_hash must be a string, not {args_hash!r}")
        self._append(workflow_id, seq, op, args_hash, self._encode(result, "result", workflow_id, seq), node_id)

    @abstractmethod
    def _append(self, workflow_id: str, seq: int, op: str, args_hash: str, result_text: str,
                node_id: str | None) -> None:
        """The backend's :meth:`append`, its arguments checked and its result encoded."""

    @abstractmethod
    def append_many(self, steps: Iterable[Step], *, node_id: str | None = None) -> dict[str, WippyError]:
        """Journal the steps of one or several workflows in one transaction (group commit).

        The steps of each workflow must be consecutive and in order within the batch. Each workflow's
        steps are written all or nothing, and a refused workflow does not hold back the others: returns,
        per refused workflow ID, the error :meth:`append` would have raised for its first step
        (:class:`JournalConflict`, :class:`LeaseLost`, :class:`WorkflowFinished`,
        :class:`UnknownWorkflow`, PayloadError, :class:`CorruptJournal`); an empty dict when everything
        was written. Raises :class:`StoreError` only when the transaction itself fails.
        """

    @abstractmethod
    def journal(self, workflow_id: str, after_seq: int = 0) -> builtins.list[JournalRecord]:
        """The workflow's steps after ``after_seq`` (all by default), in order.

        Raises :class:`UnknownWorkflow`, and :class:`CorruptJournal` naming the step when a row cannot be
        read back or a step is missing (the rows are left as they are).
        """

    # ------------------------------------------------------------------ signals
    def signal(self, workflow_id: str, topic: str, payload: Value = None) -> int:
        """Journal a signal for a running workflow; return its number (1, 2, ... per workflow).

        Raises :class:`UnknownWorkflow`, :class:`WorkflowFinished`, PayloadError.
        """
        check_id("topic", topic)
        return self._signal(workflow_id, topic, self._encode(payload, f"signal {topic!r} payload", workflow_id))

    @abstractmethod
    def _signal(self, workflow_id: str, topic: str, payload_text: str) -> int:
        """The backend's :meth:`signal`, its topic checked and its payload encoded."""

    @abstractmethod
    def signals(self, workflow_id: str, after_seq: int = 0) -> builtins.list[SignalRecord]:
        """The workflow's signals after ``after_seq``, in arrival order (also once it has finished).

        Raises :class:`UnknownWorkflow`, :class:`CorruptJournal`.
        """

    # ------------------------------------------------------------------ leases
    @abstractmethod
    def heartbeat(self, node_id: str) -> None:
        """Record that ``node_id`` is alive now. Call it well within the TTL that claimers use."""

    @abstractmethod
    def claim_orphans(self, node_id: str, ttl_seconds: float, limit: int | None = None) -> builtins.list[str]:
        """Take over running workflows whose owner is dead (no heartbeat for ``ttl_seconds``, released, or
        never seen); return their IDs, oldest first (at most ``limit``). Counts as a heartbeat of
        ``node_id``. Atomic: two nodes claiming at once never both get the same workflow.
        """

    @abstractmethod
    def claim(self, workflow_id: str, node_id: str, ttl_seconds: float) -> bool:
        """Take over one running workflow if its owner is dead (as :meth:`claim_orphans` judges) or is
        ``node_id`` already; True when ``node_id`` owns it now. Counts as a heartbeat of ``node_id``.

        Raises :class:`UnknownWorkflow`, :class:`WorkflowFinished`.
        """

    @abstractmethod
    def release(self, node_id: str) -> builtins.list[str]:
        """A clean shutdown of ``node_id``: forget its heartbeat and leave its running workflows without an
        owner, so another node may claim them at once; return their IDs."""

    @abstractmethod
    def nodes(self) -> dict[str, float]:
        """Every node with a heartbeat, and the Unix seconds of its last one."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection. Idempotent; call once no other call is in flight."""

    # ------------------------------------------------------------------ shared by the backends
    def _where(self) -> str:
        return f"workflow store {self.location}"

    def _closed_error(self) -> StoreError:
        return StoreError(f"{self._where()} is closed: open it again with open_store()", self.location)

    @staticmethod
    def _check_ttl(ttl_seconds: object) -> float:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float) or not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be a positive number of seconds, not {ttl_seconds!r}")
        return float(ttl_seconds)

    @staticmethod
    def _check_status(status: object, finished: bool) -> None:
        allowed = FINISHED if finished else STATUSES
        if status not in allowed:
            raise ValueError(f"status must be one of {', '.join(allowed)}, not {status!r}")

    def _encode(self, value: Value, what: str, workflow_id: str, seq: int | None = None) -> str:
        step = f", step {seq}" if seq is not None else ""
        return encode_value(value, f"workflow {workflow_id!r}{step}: {what}")

    def _refusal(
        self,
        workflow_id: str,
        row: tuple[Any, ...] | None,
        *,
        seq: int | None = None,
        node_id: str | None = None,
        action: str = "append",
    ) -> StoreError:
        """Why a guarded write matched no row: ``row`` is (status, steps, owner) as read just after."""
        where = self._where()
        if row is None:
            return UnknownWorkflow(
                f"{where}: no workflow has the ID {workflow_id!r} (cannot {action}); "
                "check the ID (list() shows the workflows the store holds)",
                self.location,
                workflow_id,
                seq,
            )
        status, steps, owner = row
        if status != "running":
            return WorkflowFinished(
                f"{where}: workflow {workflow_id!r} has already finished ({status}), so it cannot {action}; "
                "a finished workflow is final: start a new one under another ID to run it again",
                self.location,
                workflow_id,
                str(status),
            )
        if node_id is not None and owner != node_id:
            now_owned = f"is owned by node {owner!r}" if owner is not None else "was released by its owner"
            return LeaseLost(
                f"{where}: workflow {workflow_id!r} {now_owned}, not by node {node_id!r} (cannot {action}"
                f"{f' step {seq}' if seq is not None else ''}): this node's lease expired and another node "
                "claimed it; stop running it here",
                self.location,
                workflow_id,
                seq,
                owner,
            )
        if seq is not None:
            if seq <= steps:
                what = (
                    f"step {seq} is already in its journal ({steps} steps): another node or process is running "
                    "this workflow, or this one replayed too little; stop running it here and reload the journal"
                    if seq >= 1
                    else f"step {seq} does not exist: steps are numbered from 1"
                )
                return JournalConflict(
                    f"{where}: workflow {workflow_id!r}: {what}", self.location, workflow_id, seq, steps
                )
            if seq > steps + 1:
                return JournalConflict(
                    f"{where}: workflow {workflow_id!r}: step {seq} would leave a gap (its journal has {steps} "
                    f"steps, the next one is {steps + 1}); append steps in order, one at a time",
                    self.location,
                    workflow_id,
                    seq,
                    steps,
                )
        return JournalConflict(
            f"{where}: workflow {workflow_id!r} changed while this {action} was written (now {status}, "
            f"{steps} steps, owner {owner!r}); read it again and retry",
            self.location,
            workflow_id,
            seq,
            steps,
        )

    def _corrupt(
        self, workflow_id: str, seq: int | None, what: str, exc: BaseException | None = None
    ) -> CorruptJournal:
        reason = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        return CorruptJournal(
            f"{self._where()}: workflow {workflow_id!r}, {what}{reason}; the row was left as it is: restore "
            "the store from a backup, or cancel the workflow (finish) and start it again under a new ID",
            self.location,
            workflow_id,
            seq,
        )

    def _record(self, row: Sequence[Any]) -> WorkflowRecord:
        """A WorkflowRecord from the columns of ``_WF_COLUMNS``; CorruptJournal if it cannot be read."""
        wid = row[0]
        field = "input"
        try:
            inp = decode_value(row[2])
            field = "result"
            result = None if row[4] is None else decode_value(row[4])
            field = "error"
            error = None if row[5] is None else decode_value(row[5])
            field = "fields"
            status = row[3]
            if status not in STATUSES:
                raise ValueError(f"status {status!r}")
            if not (isinstance(row[1], str) and (row[6] is None or isinstance(row[6], str))):
                raise TypeError("entry_id or owner is not text")
            return WorkflowRecord(
                wid, row[1], inp, status, result, error, row[6], float(row[7]), float(row[8]), int(row[9]),
                int(row[10]),
            )
        except (ValueError, TypeError) as exc:
            raise self._corrupt(str(wid), None, f"its record ({field}) cannot be read", exc) from exc

    def _steps(self, workflow_id: str, after_seq: int, rows: Sequence[Sequence[Any]]) -> builtins.list[JournalRecord]:
        """Journal records from rows ``(steps, seq, op, args_hash, result, at)`` of the LEFT JOIN of the
        workflow with its journal; checks that no step is missing."""
        if not rows:
            raise self._refusal(workflow_id, None, action="read its journal")
        total = rows[0][0]
        out: builtins.list[JournalRecord] = []
        expect = after_seq + 1
        for _, seq, op, args_hash, text, at in rows:
            if seq is None:  # the LEFT JOIN's row of a workflow without (further) steps
                break
            if seq != expect:
                raise self._corrupt(workflow_id, expect, f"step {expect} is missing from its journal (found {seq})")
            try:
                if not (isinstance(op, str) and isinstance(args_hash, str)):
                    raise TypeError("op or args_hash is not text")
                out.append(JournalRecord(workflow_id, seq, op, args_hash, decode_value(text), float(at)))
            except (ValueError, TypeError) as exc:
                raise self._corrupt(workflow_id, seq, f"step {seq} cannot be read", exc) from exc
            expect += 1
        if expect <= total:
            raise self._corrupt(
                workflow_id, expect, f"step {expect} is missing from its journal (its record counts {total} steps)"
            )
        return out

    def _signal_records(
        self, workflow_id: str, after_seq: int, rows: Sequence[Sequence[Any]]
    ) -> builtins.list[SignalRecord]:
        """Signal records from rows ``(signals, seq, topic, payload, at)``; checks that none is missing."""
        if not rows:
            raise self._refusal(workflow_id, None, action="read its signals")
        total = rows[0][0]
        out: builtins.list[SignalRecord] = []
        expect = after_seq + 1
        for _, seq, topic, text, at in rows:
            if seq is None:
                break
            if seq != expect:
                raise self._corrupt(workflow_id, expect, f"signal {expect} is missing (found {seq})")
            try:
                if not isinstance(topic, str):
                    raise TypeError("topic is not text")
                out.append(SignalRecord(workflow_id, seq, topic, decode_value(text), float(at)))
            except (ValueError, TypeError) as exc:
                raise self._corrupt(workflow_id, seq, f"signal {seq} cannot be read", exc) from exc
            expect += 1
        if expect <= total:
            raise self._corrupt(workflow_id, expect, f"signal {expect} is missing (its record counts {total})")
        return out

    @staticmethod
    def _group(steps: Iterable[Step]) -> dict[str, builtins.list[Step]]:
        groups: dict[str, builtins.list[Step]] = {}
        for step in steps:
            if not isinstance(step, Step):
                raise TypeError(f"append_many takes Step records, not {type(step).__name__}")
            groups.setdefault(step.workflow_id, []).append(step)
        return groups

    def _batch_rows(
        self, workflow_id: str, group: Sequence[Step]
    ) -> builtins.list[tuple[int, str, str, str]] | WippyError:
        """The (seq, op, args_hash, encoded result) rows of one workflow's steps, or why they are refused."""
        rows = []
        prev: int | None = None
        for s in group:
            seq = _check_seq(s.seq)
            check_id("op", s.op)
            if not isinstance(s.args_hash, str):
                raise ValueError(f"args_hash must be a string, not {s.args_hash!r}")
            if prev is not None and seq != prev + 1:
                return JournalConflict(
                    f"{self._where()}: workflow {workflow_id!r}: the steps of one batch must be consecutive "
                    f"and in order (step {seq} follows step {prev})",
                    self.location,
                    workflow_id,
                    seq,
                    None,
                )
            prev = seq
            try:
                rows.append((seq, s.op, s.args_hash, self._encode(s.result, "result", workflow_id, seq)))
            except PayloadError as exc:
                return exc
        return rows


#: the columns of a workflow row, in the order ``WorkflowStore._record`` reads them
WF_COLUMNS = "workflow_id, entry_id, input, status, result, error, owner, created_at, updated_at, steps, signals"


# ---------------------------------------------------------------------------------------------- opening
def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in the authority and in a ``password=`` parameter)."""
    url = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)
