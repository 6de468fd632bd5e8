"""Durable workflows: ``workflow.lua`` entries run as processes whose every effect is journaled.

This is the Python half of the engine (``lua/workflow.lua`` is the Lua half; docs/architecture.md,
"Durable workflows", is the design): ``node.workflows``, a :class:`Workflows`. It owns

- the **store** (:mod:`.workflow_store`): ``data_dir/workflows.sqlite`` by default, or a path or a
  ``postgresql://`` URL given as ``Node(workflow_store=...)`` or ``$WIPPY_WORKFLOW_STORE``. It is opened at
  node start when it was configured or already exists, else on first use (a node without a data
  directory then keeps its workflows in a temporary store, removed when the node stops: they run, but do
  not survive the process);
- the **node ID** (``data_dir/node_id``, created once), under which this node holds its leases, so a
  restarted kernel on the same data directory resumes its own running workflows at once;
- the **lease thread** (``wippy-workflows``): a heartbeat every ``ttl/3`` (``Node(workflow_ttl=...)``,
  ``$WIPPY_WORKFLOW_TTL``, default 15 s) that also claims the workflows of dead nodes and resumes them,
  and a poll (every ``poll`` seconds) for signals written into the store by other processes and for the
  results that Lua processes wait for when another node runs the workflow;
- **Python activities** (:meth:`Workflows.activity`), run on a thread pool when a workflow calls them.

Threads: the public methods are thread-safe and may be called from any thread, but those that wait
(:meth:`start`, :meth:`result`) must not be called on a host thread. :meth:`lua_callback` gives each host
the ``py.wf`` function its Lua half calls (host thread); it never waits for a host.

Fault injection for tests only: ``$WIPPY_TEST_KILL_AFTER_STEP=N`` makes the process SIGKILL itself right
after a journal write that made step N of any workflow durable (tests/test_workflow_recovery.py).
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import itertools
import os
import shutil
import signal as _signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .entries import validate_id
from .errors import (
    CorruptJournal,
    EntryError,
    HostError,
    LeaseLost,
    PayloadError,
    StoreError,
    Timeout,
    UnknownWorkflow,
    WippyError,
    WorkflowFailed,
    WorkflowFinished,
)
from .host import DEFAULT_HOST
from .luaconv import lua_bytes as _b
from .luaconv import lua_pair as _pair
from .luaconv import lua_str as _s
from .payload import check_plain, from_lua, to_lua
from .retry import RetryPolicy
from .workflow_store import JournalRecord, SignalRecord, Step, WorkflowRecord, WorkflowStore, open_store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .host import Host, HostContext
    from .registry import Registry

__all__ = ["DEFAULT_TTL", "HistoryStep", "RetryPolicy", "Workflows", "WorkflowsOwner"]

DEFAULT_TTL = 15.0            #: seconds without a heartbeat after which a node's workflows are claimed
STORE_FILE = "workflows.sqlite"
NODE_ID_FILE = "node_id"
ACTIVITY_THREADS = 16
OPEN_RETRY = 5.0              #: seconds before a store that failed to open is tried again
F = TypeVar("F", bound=Callable[..., Any])


class WorkflowsOwner(Protocol):
    """What the durable workflows need from their node (the node implements it). Any thread."""

    @property
    def entries(self) -> Registry: ...

    @property
    def hosts(self) -> Mapping[str, Host]: ...

    @property
    def data_dir(self) -> Path | None: ...

    @property
    def started(self) -> bool: ...

    def host(self, name: str | None = None) -> Host:
        """The running host ``name``, or :class:`HostError`."""
        ...

    def route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Carry an operation to whoever owns ``dest`` (see ``Node._route``)."""
        ...

    def reply(self, pid: str, token: int, value: Any) -> None:
        """Answer a Lua call of ``pid`` that returned ``token``."""
        ...

    def require(self, action: str, resource: str) -> None:
        """Check a call from Python as the notebook's identity; raises SecurityError when refused."""
        ...

    def fault(self, where: str, message: str) -> None:
        """Record a failure outside any process (``node.faults``, stderr). Never raises."""
        ...

    def on_exit(self, listener: Callable[[str, str, str | None], None]) -> None:
        """Call ``listener(pid, reason, error)`` on every exit (on the exiting process's host thread)."""
        ...


@dataclass(frozen=True)
class HistoryStep:
    """One journaled step of a workflow, as a history view draws it (:meth:`Workflows.history`)."""

    seq: int
    """1, 2, 3, ...: the step's number."""
    op: str
    """``now``, ``random``, ``uuid``, ``sleep``, ``timer``, ``receive``, ``select``, ``call`` (an activity),
    ``wf.signal``/``wf.status``/``wf.result``/... (the workflow module inside a workflow)."""
    args: Any
    """What was asked: ``[activity_id, *args]`` for a call, the seconds of a sleep or timer, the channel of
    a receive, ``[m, n]`` of a random; None when there was nothing."""
    result: Any
    """What replay returns: the value (a call's first result, or a list of several), the nanosecond time
    of ``now``, the deadline of a sleep, ``{seq, topic, payload}`` of the signal a receive took."""
    error: str | None
    """A call that failed after its retries: its last error."""
    at: float
    """Unix seconds when the step was written."""
    retries: int = 0
    """Attempts beyond the first (calls)."""
    duration: float | None = None
    """Seconds a call took, retries and backoff included."""
    key: str | None = None
    """A call's idempotency key, ``{workflow_id}:{seq}``."""


@dataclass
class _Run:
    """A workflow that runs (or is about to run) on this node."""

    workflow_id: str
    entry_id: str
    host: str
    pid: str
    sig_pushed: int = 0          # the last signal handed to the process
    finalized: bool = False      # finished in the store by this node (its exit changes nothing)
    abandoned: bool = False      # stopped without finishing (lease lost, store failure)


@dataclass
class _Plan:
    kind: str                    # run | existing | finished | elsewhere
    workflow_id: str
    run: _Run | None = None
    record: WorkflowRecord | None = None
    input: builtins.list[Any] = field(default_factory=list)
    journal: builtins.list[list[Any]] = field(default_factory=list)
    signals: builtins.list[list[Any]] = field(default_factory=list)
    created: bool = False


@dataclass(frozen=True)
class _Activity:
    fn: Callable[..., Any]
    policy: RetryPolicy
    wants_key: bool


def _args_of(raw: Any, n: int) -> builtins.list[Any]:
    """A Lua argument table (``{...}`` with ``n``) as a list of ``n`` values (holes as None)."""
    if isinstance(raw, list):
        return (raw + [None] * n)[:n] if len(raw) < n else raw[:n] if n else raw
    if isinstance(raw, dict):
        return [raw.get(i) for i in range(1, n + 1)]
    return []


def _nth(d: Any, i: int) -> Any:
    """Item ``i`` (1-based, Lua's) of a value that came from a Lua table: a list or an int-keyed dict."""
    if isinstance(d, list):
        return d[i - 1] if 0 < i <= len(d) else None
    if isinstance(d, dict):
        return d.get(i)
    return None


def _values(d: Any) -> builtins.list[Any]:
    """The values ``1..n`` of a stored ``{n = n, ...}`` (or a plain list)."""
    if isinstance(d, list):
        return d
    if isinstance(d, dict):
        n = d.get("n")
        if not isinstance(n, int):
            n = max((k for k in d if isinstance(k, int)), default=0)
        return [d.get(i) for i in range(1, n + 1)]
    return []


def _one_or_many(vals: builtins.list[Any]) -> Any:
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else vals


class Workflows:
    """The node's durable workflows (``node.workflows``). See the module docstring."""

    def __init__(
        self,
        node: WorkflowsOwner,
        store: str | os.PathLike[str] | None = None,
        ttl: float | None = None,
    ) -> None:
        self.node = node
        env_store = os.environ.get("WIPPY_WORKFLOW_STORE") or None
        self._target: str | None = os.fspath(store) if store is not None else env_store
        if ttl is None:
            ttl = float(os.environ.get("WIPPY_WORKFLOW_TTL", "") or DEFAULT_TTL)
        if not ttl > 0:
            raise ValueError(f"workflow_ttl must be a positive number of seconds, not {ttl!r}")
        #: seconds without a heartbeat after which another node claims this node's workflows
        self.ttl = float(ttl)
        #: seconds between two looks at the store for signals and results from other processes
        self.poll = min(0.5, self.ttl / 3)
        self._store: WorkflowStore | None = None
        self._open_lock = threading.Lock()
        self._open_error: tuple[float, StoreError] | None = None
        self._tmp: str | None = None
        self._node_id: str | None = None
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._by_pid: dict[str, _Run] = {}
        self._activities: dict[str, _Activity] = {}
        self._waiters: dict[str, dict[int, Callable[[WorkflowRecord], None]]] = {}
        self._lua_waiters: set[str] = set()
        self._tokens = itertools.count(1 << 40)
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False
        self._stopping = False
        self._next_beat = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._reported: set[str] = set()
        self._kill_after = int(os.environ.get("WIPPY_TEST_KILL_AFTER_STEP", "") or 0)
        node.on_exit(self._on_exit)

    # ------------------------------------------------------------------ the store and the node ID
    @property
    def node_id(self) -> str:
        """This node's ID in the store: kept in ``data_dir/node_id`` (made once), else new per node."""
        with self._open_lock:
            if self._node_id is None:
                self._node_id = self._load_node_id()
            return self._node_id

    def _load_node_id(self) -> str:
        fresh = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
        data = self.node.data_dir
        if data is None:
            return fresh
        path = data / NODE_ID_FILE
        try:
            text = path.read_text().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        data.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(fresh + "\n")
        os.replace(tmp, path)
        return fresh

    @property
    def store(self) -> WorkflowStore:
        """The workflow store (opened on first use). Raises :class:`StoreOpenError` when it cannot be."""
        return self._open()

    @property
    def location(self) -> str:
        """Where the store is (a file or a URL without password); opens nothing."""
        if self._store is not None:
            return self._store.location
        return self._target or str(self._default_path() or "(a temporary store)")

    def _default_path(self) -> Path | None:
        data = self.node.data_dir
        return data / STORE_FILE if data is not None else None

    def _open(self) -> WorkflowStore:
        store = self._store
        if store is not None:
            return store
        with self._open_lock:
            if self._store is not None:
                return self._store
            if self._closing:
                raise StoreError("the node has stopped: its workflow store is closed", self.location)
            failed = self._open_error
            if failed is not None and time.monotonic() - failed[0] < OPEN_RETRY:
                raise failed[1]
            target = self._target
            if target is None:
                path = self._default_path()
                if path is None:
                    self._tmp = tempfile.mkdtemp(prefix="wippy-workflows-")
                    path = Path(self._tmp) / STORE_FILE
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                target = str(path)
            try:
                store = open_store(target)
            except StoreError as exc:
                self._open_error = (time.monotonic(), exc)
                self._report(f"open:{exc}", f"workflow store: {exc}")
                raise
            self._open_error = None
            if self._node_id is None:
                self._node_id = self._load_node_id()
            self._store = store
        self._tick()   # at once: resume this node's own running workflows, claim orphans
        self._thread = threading.Thread(target=self._lease_loop, name="wippy-workflows", daemon=True)
        self._thread.start()
        return store

    # ------------------------------------------------------------------ lifecycle (called by the node)
    def _node_started(self) -> None:
        """At node start: open the store now if it was configured or already exists (resuming this node's
        workflows and claiming orphans); a failure is reported, and raised again at each use."""
        if self._store is not None:   # opened before the node started: resume now
            self._next_beat = 0.0
            self._tick()
            return
        path = self._default_path()
        if self._target is not None or (path is not None and path.exists()):
            try:
                self._open()
            except StoreError:
                pass

    def _node_stopping(self) -> None:
        """The node begins to stop: exits of workflow processes from now on leave them running in the
        store (another node, or this one restarted, resumes them)."""
        self._stopping = True

    def _node_stopped(self) -> None:
        """After the hosts stopped: stop the lease thread, hand this node's running workflows over
        (release), close the store, remove a temporary one."""
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(10.0)
        with self._open_lock:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.release(self.node_id)
            except StoreError as exc:
                self._report(f"release:{exc}", f"workflow store: release at stop: {exc}")
            store.close()
        pool = self._pool
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        with self._lock:
            self._runs.clear()
            self._by_pid.clear()

    def _report(self, key: str, message: str) -> None:
        """A fault of the workflow layer, reported once per key (node.faults and stderr)."""
        if key in self._reported:
            return
        self._reported.add(key)
        self.node.fault("workflows", message)

    # ------------------------------------------------------------------ the public API (any thread)
    def start(self, entry_id: str, *args: Any, workflow_id: str | None = None, host: str | None = None,
              timeout: float = 30.0) -> str:
        """Start the ``workflow.lua`` entry ``entry_id`` with ``args`` as a durable workflow; return its ID.

        Idempotent by ID: when ``workflow_id`` exists, nothing new starts and its ID is returned, whatever
        its status (:meth:`status` and :meth:`result` tell how it is). Without ``workflow_id`` a new ID (a
        UUID) is made. Raises EntryError (unknown entry, wrong kind), PayloadError, StoreError. Not from a
        host thread.
        """
        self.node.require("workflow.start", entry_id)
        plan = self._begin(entry_id, list(args), workflow_id, host or self._default_host())
        if plan.kind == "run":
            self._launch(plan, timeout=timeout)
        return plan.workflow_id

    def activity(
        self,
        activity_id: str,
        fn: Callable[..., Any] | None = None,
        *,
        retry: RetryPolicy | dict[str, Any] | None = None,
    ) -> Any:
        """Register a Python function as the activity ``activity_id``, which ``funcs.call`` reaches::

            @node.workflows.activity("app.pay:charge", retry={"max_attempts": 5})
            def charge(order, amount, *, idempotency_key):
                ...

        It runs on a thread pool (never on a host thread) with the call's arguments; if it takes a keyword
        ``idempotency_key`` (or ``**kwargs``), it gets the call's key ``{workflow_id}:{seq}`` (None when a
        plain process calls it). Its return value is the call's result (plain data); an exception is a
        failure, retried as ``retry`` says (:class:`RetryPolicy`, default 3 attempts). Returns ``fn``.
        """
        validate_id(activity_id)
        policy = RetryPolicy.from_mapping(retry, f"activity '{activity_id}': retry")

        def register(f: F) -> F:
            if not callable(f):
                raise TypeError(f"activity '{activity_id}': {f!r} is not callable")
            try:
                params = inspect.signature(f).parameters.values()
            except (TypeError, ValueError):
                params = []  # type: ignore[assignment]
            wants = any(p.name == "idempotency_key" or p.kind is p.VAR_KEYWORD for p in params)
            with self._lock:
                self._activities[activity_id] = _Activity(f, policy, wants)
            return f

        if fn is not None:
            return register(fn)
        return register

    def signal(self, workflow_id: str, topic: str, payload: Any = None) -> int:
        """Send a journaled message to a running workflow (it reads it from its inbox, or ``listen``);
        return its number. Raises :class:`UnknownWorkflow`, :class:`WorkflowFinished`, PayloadError."""
        self.node.require("workflow.signal", workflow_id)
        return self._signal(workflow_id, topic, payload)

    def _signal(self, workflow_id: str, topic: str, payload: Any) -> int:
        """:meth:`signal` once allowed (a Lua caller was checked in its process, workflow.lua)."""
        check_plain(payload)
        seq = self._open().signal(workflow_id, topic, payload)
        self._push(workflow_id)
        return seq

    def status(self, workflow_id: str) -> str:
        """``running``, ``completed``, ``failed`` or ``cancelled``; :class:`UnknownWorkflow` otherwise."""
        return self.get(workflow_id).status

    def get(self, workflow_id: str) -> WorkflowRecord:
        """The workflow's record (entry, input, status, result, error, owner, steps, ...)."""
        rec = self._open().get(workflow_id)
        if rec is None:
            raise self._unknown(workflow_id)
        return rec

    def list(self, status: str | None = None) -> builtins.list[WorkflowRecord]:
        """Every workflow of the store (of ``status``, when given), oldest first."""
        return self._open().list(status)  # type: ignore[arg-type]

    def pid(self, workflow_id: str) -> str | None:
        """The PID of the workflow's process when it runs on this node, else None."""
        with self._lock:
            run = self._runs.get(workflow_id)
            return run.pid if run is not None else None

    def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the workflow to finish and return its result.

        Raises :class:`WorkflowFailed` when it failed or was cancelled, :class:`Timeout` after
        ``timeout`` seconds, :class:`UnknownWorkflow`. Any thread but a host's.
        """
        store = self._open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = threading.Event()
            token = self._wait_for(workflow_id, _setter(done))
            try:
                rec = store.get(workflow_id)
                if rec is None:
                    raise self._unknown(workflow_id)
                if rec.finished:
                    return self._outcome(rec)
                wait = self.poll
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Timeout(f"workflow {workflow_id!r} did not finish within {timeout}s "
                                      f"(it is {rec.status}; status() and history() show where it is)")
                    wait = min(wait, left)
                done.wait(wait)
            finally:
                self._unwait(workflow_id, token)

    def cancel(self, workflow_id: str, reason: str | None = None) -> None:
        """Cancel a running workflow, wherever it runs: it becomes ``cancelled`` now (its process on this
        node is terminated; another node's stops at its next journal write). Raises
        :class:`UnknownWorkflow`, :class:`WorkflowFinished` when it has already finished."""
        self.node.require("workflow.cancel", workflow_id)
        self._cancel(workflow_id, reason)

    def _cancel(self, workflow_id: str, reason: str | None) -> None:
        """:meth:`cancel` once allowed (a Lua caller was checked in its process, workflow.lua)."""
        error = f"cancelled: {reason}" if reason else "cancelled"
        store = self._open()
        with self._lock:
            rec = store.finish(workflow_id, "cancelled", None, error)
            run = self._runs.get(workflow_id)
            if run is not None:
                run.finalized = True
        self._finished(rec)
        if run is not None:
            with contextlib.suppress(WippyError):
                self.node.route("terminate", run.pid, None, None, None)

    def history(self, workflow_id: str) -> builtins.list[HistoryStep]:
        """The workflow's journal as steps (op, args, result, time, retries, duration, key), in order.

        Raises :class:`UnknownWorkflow`, :class:`CorruptJournal`."""
        store = self._open()
        steps = store.journal(workflow_id)
        needs_signals = any(r.op in ("receive", "select") for r in steps)
        signals = {s.seq: s for s in store.signals(workflow_id)} if needs_signals else {}
        return [self._history_step(r, signals) for r in steps]

    # ------------------------------------------------------------------ helpers of the API
    def _unknown(self, workflow_id: str) -> UnknownWorkflow:
        store = self._store
        where = store.location if store is not None else self.location
        return UnknownWorkflow(
            f"workflow store {where}: no workflow has the ID {workflow_id!r}; check the ID "
            "(node.workflows.list() or workflow.list() shows the workflows the store holds)",
            where, workflow_id,
        )

    @staticmethod
    def _outcome(rec: WorkflowRecord) -> Any:
        if rec.status == "completed":
            return rec.result
        raise WorkflowFailed(rec.workflow_id, rec.status, None if rec.error is None else str(rec.error))

    @staticmethod
    def _lua_outcome(rec: WorkflowRecord) -> dict[str, Any]:
        error = None
        if rec.status != "completed":
            error = str(rec.error) if rec.error is not None else rec.status
            if rec.status == "failed":
                error = f"workflow '{rec.workflow_id}' failed: {error}"
        return {"done": True, "status": rec.status, "value": rec.result, "error": error}

    def _wait_for(self, workflow_id: str, fn: Callable[[WorkflowRecord], None]) -> int:
        token = next(self._tokens)
        with self._lock:
            self._waiters.setdefault(workflow_id, {})[token] = fn
        return token

    def _unwait(self, workflow_id: str, token: int) -> None:
        with self._lock:
            ws = self._waiters.get(workflow_id)
            if ws is not None:
                ws.pop(token, None)
                if not ws:
                    del self._waiters[workflow_id]
                    self._lua_waiters.discard(workflow_id)

    def _finished(self, rec: WorkflowRecord) -> None:
        """A workflow finished (here, or seen in the store): wake whoever waits for it."""
        with self._lock:
            ws = self._waiters.pop(rec.workflow_id, {})
            self._lua_waiters.discard(rec.workflow_id)
        for fn in ws.values():
            try:
                fn(rec)
            except Exception:
                self._report(f"waiter:{traceback.format_exc()}", f"a result waiter failed:\n{traceback.format_exc()}")

    def _history_step(self, r: JournalRecord, signals: dict[int, SignalRecord]) -> HistoryStep:
        stored = r.result if isinstance(r.result, dict) else {"v": r.result}
        v, a = stored.get("v"), stored.get("a")
        op = r.op
        args: Any = a
        result: Any = v
        error = None
        if op == "call":
            if isinstance(a, dict):   # {activity_id, args..., n = #args}
                n = a.get("n")
                args = [a.get(i) for i in range(1, (n if isinstance(n, int) else 0) + 2)]
            if isinstance(v, dict) and v.get("ok"):
                n = v.get("n")
                result = _one_or_many([_nth(v.get("r"), i) for i in range(1, (n if isinstance(n, int) else 0) + 1)])
            elif isinstance(v, dict):
                result, error = None, v.get("e")
        elif op in ("sleep", "timer") and isinstance(a, int | float):
            args = a / 1e9
        elif op in ("receive", "select") and isinstance(v, dict):
            seq = v.get("s")
            sig = signals.get(seq) if isinstance(seq, int) else None
            if op == "receive" or seq is not None:
                result = {"seq": seq, "topic": sig.topic if sig else v.get("t"),
                          "payload": sig.payload if sig else None}
                if op == "select":
                    result["case"] = v.get("c")
            else:
                result = {"case": v.get("c")}
        elif op.startswith("wf."):
            args = _values(a) if a is not None else []
            result = _one_or_many(_values(v))
        retries = stored.get("r", 0)
        ms = stored.get("ms")
        return HistoryStep(
            seq=r.seq, op=op, args=args, result=result, error=error, at=r.at,
            retries=retries if isinstance(retries, int) else 0,
            duration=ms / 1000.0 if isinstance(ms, int | float) else None,
            key=stored.get("k") if isinstance(stored.get("k"), str) else None,
        )

    # ------------------------------------------------------------------ starting and resuming
    def _check_entry(self, entry_id: str) -> None:
        entry = self.node.entries.require(entry_id)
        if entry.kind != "workflow.lua":
            raise EntryError(f"entry '{entry_id}' is a {entry.kind} entry; a workflow needs a workflow.lua entry")

    def _begin(self, entry_id: str, args: builtins.list[Any], workflow_id: str | None, host: str,
               pid: str | None = None) -> _Plan:
        """Create the workflow (or find the existing one) and decide what to do; reserves the run. Any
        thread; never waits for a host."""
        store = self._open()
        self._check_entry(entry_id)
        self.node.host(host)   # a host that does not run: refused before anything is created
        check_plain(args)
        if workflow_id is None:
            workflow_id = str(uuid.uuid4())
        elif not isinstance(workflow_id, str) or not workflow_id:
            raise WippyError(f"workflow_id must be a non-empty string, not {workflow_id!r}")
        with self._lock:
            run = self._runs.get(workflow_id)
            if run is not None:
                return _Plan("existing", workflow_id, run=run)
            created, rec = store.create(workflow_id, entry_id, list(args), self.node_id)
            if created:
                run = self._reserve(workflow_id, entry_id, host, pid)
                return _Plan("run", workflow_id, run=run, input=list(args), created=True)
            if rec.finished:
                return _Plan("finished", workflow_id, record=rec)
            if rec.owner != self.node_id and not store.claim(workflow_id, self.node_id, self.ttl):
                return _Plan("elsewhere", workflow_id, record=rec)
            return self._prepare(rec, host, pid)

    def _prepare(self, rec: WorkflowRecord, host: str, pid: str | None) -> _Plan:
        """Under the lock: read the journal and signals of a workflow this node owns, reserve its run."""
        store = self._open()
        wid = rec.workflow_id
        try:
            journal = store.journal(wid)
            signals = store.signals(wid)
        except CorruptJournal as exc:
            try:
                done = store.finish(wid, "failed", None, f"its journal cannot be read: {exc}", node_id=self.node_id)
                self._finished(done)
            except StoreError:
                pass
            self._report(f"corrupt:{wid}", str(exc))
            return _Plan("finished", wid, record=store.get(wid))
        run = self._reserve(wid, rec.entry_id, host, pid)
        run.sig_pushed = signals[-1].seq if signals else 0
        inp = rec.input if isinstance(rec.input, list) else [rec.input]
        return _Plan(
            "run", wid, run=run, input=inp,
            journal=[[j.op, j.args_hash, j.result] for j in journal],
            signals=[[s.seq, s.topic, s.payload] for s in signals],
        )

    def _reserve(self, wid: str, entry_id: str, host_name: str, pid: str | None) -> _Run:
        host = self.node.host(host_name)
        run = _Run(wid, entry_id, host_name, pid or host.allocate_pid())
        self._runs[wid] = run
        self._by_pid[run.pid] = run
        return run

    def _refusal(self, plan: _Plan) -> WippyError:
        rec = plan.record
        if plan.kind == "finished" and rec is not None:
            return WorkflowFinished(
                f"workflow '{plan.workflow_id}' has already {rec.status}: a finished workflow is not run again "
                f"(its result: workflow.result('{plan.workflow_id}'); start a new one under another ID)",
                self.location, plan.workflow_id, rec.status,
            )
        owner = rec.owner if rec is not None else None
        return WippyError(
            f"workflow '{plan.workflow_id}' runs on node '{owner}', which holds its lease; steer it by its ID "
            "(workflow.signal, status, result, cancel)"
        )

    def _spawn_rows(self, ctx: HostContext, plan: _Plan, opts: dict[str, Any] | None) -> Any:
        run = plan.run
        assert run is not None
        return _pair(ctx.scheduler.wf_run(
            _b(run.pid), _b(run.entry_id), _b(run.workflow_id), ctx.to_lua(plan.input), len(plan.input),
            ctx.to_lua(plan.journal), ctx.to_lua(plan.signals), ctx.to_lua(opts) if opts else None,
        ))

    def _launch(self, plan: _Plan, opts: dict[str, Any] | None = None, wait: bool = True,
                timeout: float = 30.0) -> str:
        """Spawn a planned run on its host (from a thread that is not that host's)."""
        run = plan.run
        assert run is not None
        host = self.node.host(run.host)

        def spawn(ctx: HostContext) -> str:
            pid, err = self._spawn_rows(ctx, plan, opts)
            if pid is None:
                self._spawn_failed(run.workflow_id, _s(err), plan.created)
                raise EntryError(f"workflow '{run.workflow_id}': {_s(err)}")
            return _s(pid)

        if wait:
            return host.call(spawn, timeout)
        host.submit(spawn)
        return run.pid

    def _spawn_failed(self, wid: str, message: str, created: bool) -> None:
        """Its process could not start (unknown entry, a compile error). A new workflow fails; one being
        resumed stays running in the store and is tried again at the next heartbeat."""
        with self._lock:
            run = self._runs.pop(wid, None)
            if run is not None:
                self._by_pid.pop(run.pid, None)
            if not created:
                self._report(f"spawn:{wid}:{message}",
                             f"workflow '{wid}' cannot be resumed yet: {message} (tried again at each heartbeat)")
                return
            self._finish_locked(wid, "failed", None, f"its code could not be started: {message}")

    def _resume(self, wid: str) -> None:
        """Run a workflow that this node owns and does not run (lease thread, start)."""
        store = self._open()
        with self._lock:
            if wid in self._runs:
                return
            rec = store.get(wid)   # again, under the lock: it may have finished meanwhile
            if rec is None or rec.finished or rec.owner != self.node_id:
                return
            try:
                self._check_entry(rec.entry_id)
            except EntryError as exc:
                self._report(f"spawn:{wid}:{exc}",
                             f"workflow '{wid}' cannot be resumed yet: {exc} (tried again at each heartbeat)")
                return
            plan = self._prepare(rec, self._default_host(), None)
        if plan.kind == "run":
            try:
                self._launch(plan, wait=False)
            except HostError as exc:
                self._spawn_failed(wid, str(exc), False)

    def _default_host(self) -> str:
        return DEFAULT_HOST

    def _spawn_elsewhere(self, entry_id: str, host: str, args: builtins.list[Any], opts: dict[str, Any] | None) -> str:
        """``process.spawn`` of a workflow.lua entry on another host (Node._spawn_async, a host thread):
        the PID of the run (new, resumed or existing) at once."""
        opts = dict(opts or {})
        plan = self._begin(entry_id, args, opts.pop("workflow_id", None), host)
        if plan.kind in ("finished", "elsewhere"):
            raise self._refusal(plan)
        assert plan.run is not None
        if plan.kind == "existing":
            self._watch_existing(plan.run, opts)
            return plan.run.pid
        if not plan.created:
            opts.pop("messages", None)
        return self._launch(plan, opts or None, wait=False)

    def _watch_existing(self, run: _Run, opts: dict[str, Any]) -> None:
        """A spawn that found the workflow running: monitors and links of the spawn apply to it."""
        with contextlib.suppress(WippyError):
            if opts.get("monitor"):
                self.node.route("monitor", run.pid, opts["monitor"], opts.get("monitor_kind") or "monitor", None)
            if opts.get("link"):
                self.node.route("link", run.pid, opts["link"], None, None)

    # ------------------------------------------------------------------ finishing
    def _finish_locked(self, wid: str, status: str, result: Any, error: Any) -> None:
        """Finish a workflow this node runs (under the lock); store refusals end it quietly."""
        store = self._open()
        run = self._runs.get(wid)
        try:
            rec = store.finish(wid, status, result, error, node_id=self.node_id)  # type: ignore[arg-type]
        except LeaseLost:
            if run is not None:
                run.abandoned = True
            return
        except WorkflowFinished:
            if run is not None:
                run.finalized = True
            return
        except PayloadError as exc:
            rec = store.finish(wid, "failed", None, f"its result cannot be stored: {exc}", node_id=self.node_id)
        except StoreError as exc:
            # left running: this node resumes it at a later heartbeat, and it finishes again
            self._report(f"finish:{exc}", f"workflow '{wid}' could not be finished now: {exc}")
            if run is not None:
                run.abandoned = True
            return
        if run is not None:
            run.finalized = True
        self._finished(rec)

    def _on_exit(self, pid: str, reason: str, error: str | None) -> None:
        """Every process exit of the node (host thread): a workflow's process that ended without
        finishing its workflow (killed, terminated, cancelled as a process) finishes it here."""
        run = self._by_pid.get(pid)
        if run is None:
            return
        with self._lock:
            if self._by_pid.get(pid) is not run:
                return
            try:
                if not (run.finalized or run.abandoned or self._stopping or reason == "normal"):
                    status = "cancelled" if reason in ("cancelled", "terminated") else "failed"
                    self._finish_locked(run.workflow_id, status, None, error or reason)
            except StoreError as exc:
                self._report(f"exit:{exc}", f"workflow '{run.workflow_id}': {exc}")
            finally:
                del self._by_pid[pid]
                if self._runs.get(run.workflow_id) is run:
                    del self._runs[run.workflow_id]

    # ------------------------------------------------------------------ signals
    def _push(self, wid: str) -> None:
        """Hand the workflow's new signals in the store to its process, when it runs here."""
        with self._lock:
            run = self._runs.get(wid)
            if run is None:
                return
            sigs = self._open().signals(wid, after_seq=run.sig_pushed)
            if not sigs:
                return
            run.sig_pushed = sigs[-1].seq
            pid = run.pid
            rows = [[s.seq, s.topic, s.payload] for s in sigs]
            host = self.node.hosts.get(run.host)
        if host is None or not host.running:
            return
        host.post("call", lambda ctx: ctx.scheduler.wf_signals(_b(pid), ctx.to_lua(rows)), Future())

    # ------------------------------------------------------------------ the lease thread
    def _lease_loop(self) -> None:
        while not self._closing:
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._closing:
                return
            try:
                self._tick()
            except StoreError as exc:
                self._report(f"tick:{exc}", f"workflow store: {exc} (retrying)")
            except Exception:
                self._report(f"tick:{traceback.format_exc()}", f"lease thread:\n{traceback.format_exc()}")

    def _tick(self) -> None:
        """One round: heartbeat and claims (every ttl/3), new signals and finished results (every poll)."""
        store = self._store
        if store is None or self._stopping or not self.node.started:
            return
        now = time.monotonic()
        beat = now >= self._next_beat
        if beat:
            self._next_beat = now + self.ttl / 3
            store.claim_orphans(self.node_id, self.ttl)   # also this node's heartbeat
        with self._lock:
            busy = bool(self._runs) or bool(self._lua_waiters)
            waited = [w for w in self._lua_waiters if w not in self._runs]
        if not (beat or busy):
            return
        running = store.list("running")
        for rec in running:
            wid = rec.workflow_id
            with self._lock:
                run = self._runs.get(wid)
            if run is None:
                if beat and rec.owner == self.node_id:
                    self._resume(wid)
            elif rec.signals > run.sig_pushed:
                self._push(wid)
        still = {r.workflow_id for r in running}
        for wid in waited:
            if wid not in still:
                found = store.get(wid)
                if found is not None and found.finished:
                    self._finished(found)

    # ------------------------------------------------------------------ activities
    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(ACTIVITY_THREADS, thread_name_prefix="wippy-activity")
            return self._pool

    @staticmethod
    def _call_activity(act: _Activity, args: builtins.list[Any], key: str | None) -> dict[str, Any]:
        try:
            value = act.fn(*args, idempotency_key=key) if act.wants_key else act.fn(*args)
            check_plain(value)
        except PayloadError as exc:
            return {"ok": False, "e": f"the activity returned a value that cannot be journaled: {exc}"}
        except Exception as exc:
            return {"ok": False, "e": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "v": value}

    # ------------------------------------------------------------------ the Lua half (host threads)
    def lua_callback(self, host_name: str, lua: Any, room: Callable[[int], None]) -> Callable[..., Any]:
        """The ``py.wf(op, ...)`` function of the Lua half of host ``host_name`` (Lua state ``lua``), called
        on that host's thread; ``room(extra)`` makes room for pushes from Python (``Host._room``)."""

        def to(value: Any) -> Any:
            return to_lua(lua, value)

        def text(b: Any) -> str:
            return _s(b)

        def start(pid: Any, entry_id: Any, opts: Any, args: Any, n: int) -> Any:
            o = from_lua(opts) if opts is not None else {}
            o = o if isinstance(o, dict) else {}
            plan = self._begin(text(entry_id), _args_of(from_lua(args) if args is not None else [], int(n)),
                               o.get("workflow_id"), host_name, text(pid) if pid else None)
            if plan.kind in ("finished", "elsewhere"):
                raise self._refusal(plan)
            run = plan.run
            assert run is not None
            if plan.kind == "existing":
                self._watch_existing(run, o)
                return to({"pid": run.pid})
            if run.host != host_name:   # (cannot happen: a plan made here runs here)
                return to({"pid": self._launch(plan, o, wait=False)})
            room(len(plan.journal) * 256 + len(plan.signals) * 256)
            return to({"run_pid": run.pid, "entry": run.entry_id, "wid": run.workflow_id, "input": plan.input,
                       "n": len(plan.input), "journal": plan.journal, "signals": plan.signals,
                       "created": plan.created})

        def spawn_failed(wid: Any, message: Any) -> None:
            self._spawn_failed(text(wid), text(message), True)

        def write(batch: Any) -> Any:
            rows = from_lua(batch)
            refused = self._write(rows if isinstance(rows, list) else [])
            return to(refused) if refused else None

        def done(wid: Any, status: Any, value: Any) -> None:
            w, st = text(wid), text(status)
            v = from_lua(value)
            with self._lock:
                if st == "completed":
                    self._finish_locked(w, "completed", v, None)
                else:
                    self._finish_locked(w, "failed", None, v)

        def fail(wid: Any, message: Any) -> None:
            with self._lock:
                self._finish_locked(text(wid), "failed", None, text(message))

        def message(wid: Any, topic: Any, data: Any, after: int) -> Any:
            w = text(wid)
            store = self._open()
            try:
                store.signal(w, text(topic), from_lua(data))
            except StoreError as exc:   # the sender was told "sent": say here that it was not kept
                if not isinstance(exc, WorkflowFinished):
                    self._report(f"message:{w}:{exc}", f"a message to workflow '{w}' was dropped: {exc}")
                raise
            sigs = store.signals(w, after_seq=int(after))
            with self._lock:
                run = self._runs.get(w)
                if run is not None and sigs:
                    run.sig_pushed = max(run.sig_pushed, sigs[-1].seq)
            return to([[s.seq, s.topic, s.payload] for s in sigs])

        def activity(pid: Any, act_id: Any, args: Any, n: int, key: Any) -> Any:
            act = self._activities.get(text(act_id))
            if act is None:
                return None, _b(f"funcs.call: no Python activity '{text(act_id)}'")
            arglist = _args_of(from_lua(args) if args is not None else [], int(n))
            token = next(self._tokens)
            p = text(pid)
            fut = self._executor().submit(self._call_activity, act, arglist, text(key) if key else None)
            fut.add_done_callback(lambda f: self.node.reply(p, token, f.result()))
            return token

        def is_activity(act_id: Any) -> bool:
            return text(act_id) in self._activities

        def policy(act_id: Any) -> Any:
            aid = text(act_id)
            act = self._activities.get(aid)
            if act is not None:
                return to({**act.policy.to_lua(), "python": True})
            entry = self.node.entries.get(aid)
            if entry is None:
                return None, _b(f"funcs.call: {self.node.entries.unknown_message(aid)}")
            if entry.kind != "function.lua":
                return None, _b(f"funcs.call: entry '{aid}' is a {entry.kind} entry; funcs.call needs a "
                                "function.lua entry or a Python activity")
            pol = RetryPolicy.from_mapping(entry.data.get("retry"), f"entry '{aid}': retry")
            return to({**pol.to_lua(), "python": False})

        def signal(wid: Any, topic: Any, payload: Any) -> Any:
            self._signal(text(wid), text(topic), from_lua(payload))
            return True

        def status(wid: Any) -> Any:
            return _b(self.status(text(wid)))

        def cancel(wid: Any, reason: Any) -> Any:
            self._cancel(text(wid), text(reason) if reason is not None else None)
            return True

        def list_(status: Any = None) -> Any:
            recs = self.list(text(status) if status is not None else None)
            return to([{"id": r.workflow_id, "entry": r.entry_id, "status": r.status, "owner": r.owner,
                        "steps": r.steps, "signals": r.signals, "created_at": r.created_at,
                        "updated_at": r.updated_at, "result": r.result, "error": r.error} for r in recs])

        def history(wid: Any) -> Any:
            return to([{"seq": h.seq, "op": h.op, "args": h.args, "result": h.result, "error": h.error,
                        "at": h.at, "retries": h.retries, "duration": h.duration, "key": h.key}
                       for h in self.history(text(wid))])

        def result(wid: Any, pid: Any) -> Any:
            w, p = text(wid), text(pid)
            store = self._open()
            token = next(self._tokens)

            def reply(rec: WorkflowRecord) -> None:
                self.node.reply(p, token, self._lua_outcome(rec))

            with self._lock:
                self._waiters.setdefault(w, {})[token] = reply
                self._lua_waiters.add(w)
            rec = store.get(w)
            if rec is None or rec.finished:
                self._unwait(w, token)
                if rec is None:
                    raise self._unknown(w)
                return to(self._lua_outcome(rec))
            return to({"token": token})

        def unwait(wid: Any, token: int) -> None:
            self._unwait(text(wid), int(token))

        ops: dict[str, Callable[..., Any]] = {
            "start": start, "spawn_failed": spawn_failed, "write": write, "done": done, "fail": fail,
            "message": message, "activity": activity, "is_activity": is_activity, "policy": policy,
            "signal": signal, "status": status, "cancel": cancel, "list": list_, "history": history,
            "result": result, "unwait": unwait,
        }

        def call(op: bytes, *args: Any) -> Any:
            name = op.decode()
            try:
                return ops[name](*args)
            except WippyError as exc:
                return None, _b(str(exc))
            except Exception as exc:   # a bug here must not crash the host: an error value for Lua
                self._report(f"lua:{name}:{exc}", f"py.wf({name}):\n{traceback.format_exc()}")
                return None, _b(f"workflow engine error in {name}: {type(exc).__name__}: {exc}")

        return call

    def _write(self, rows: builtins.list[Any]) -> dict[str, str]:
        """Journal the steps of one run step (host thread): one transaction for every workflow in it.
        Returns the refused workflows and why; those stop running here without finishing."""
        steps = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 5:
                continue
            wid, seq, op, h, stored = row
            steps.append(Step(str(wid), int(seq), str(op), str(h), stored))
        if not steps:
            return {}
        store = self._open()
        errors: dict[str, WippyError]
        try:
            errors = store.append_many(steps, node_id=self.node_id)
        except StoreError as failed:
            errors = {s.workflow_id: failed for s in steps}
        refused: dict[str, str] = {}
        with self._lock:
            for wid, err in errors.items():
                run = self._runs.get(wid)
                if run is not None:
                    run.abandoned = True
                refused[wid] = str(err)
                if not isinstance(err, LeaseLost | WorkflowFinished):
                    self._report(f"write:{wid}:{type(err).__name__}",
                                 f"workflow '{wid}' stopped on this node: {err}")
        if self._kill_after and any(s.seq == self._kill_after and s.workflow_id not in errors for s in steps):
            sys.stdout.flush()
            os.kill(os.getpid(), _signal.SIGKILL)   # test-only fault injection (module docstring)
        return refused


def _setter(event: threading.Event) -> Callable[[WorkflowRecord], None]:
    """A waiter that sets ``event`` (whatever the record)."""

    def fire(rec: WorkflowRecord) -> None:
        event.set()

    return fire
