"""Supervision: Wippy's services and OTP's supervisors, as one tree under the node.

- A **service** (``process.service``) keeps one process running: started after the services it
  ``requires``, restarted after any exit with a growing delay (``lifecycle.restart``), given up after
  ``max_attempts`` restarts in a row (a run longer than ``stable_threshold`` resets the count).
- A **supervisor** (``process.supervisor``, or a spec from Lua or Python) starts ordered children
  (workers, services, supervisors) and restarts them as OTP's ``supervisor`` does: ``one_for_one``,
  ``one_for_all``, ``rest_for_one``; ``permanent``, ``transient``, ``temporary``; at most
  ``max_restarts`` restarts within ``period`` seconds, past which it stops its children in reverse
  order and fails, and its parent handles that as the failure of one of its children.

Threads: one supervision thread per node (``wippy-supervision``) starts, stops and restarts everything,
one step at a time, so no two decisions race. It never waits for a host that could be waiting for it:
children are spawned asynchronously (their PIDs are allocated at once) and monitored by the
supervision's own Python mailbox, whose EXIT events reach the thread through its queue. Timers (restart
delays, shutdown timeouts) follow ``node.clock``, so a :class:`~.clock.FakeClock` drives them in tests.
Other threads submit commands and wait for their futures; Lua calls (on host threads) get their answer
as a message to the calling process instead of waiting. Snapshots (:meth:`Supervision.tree`) are taken
under a lock on any thread.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .entries import Entry
from .errors import EntryError, ProcessError, SupervisionError, Timeout, WippyError
from .mailbox import Event, Mailbox, MailboxOwner
from .payload import check_plain
from .supervisor_spec import (
    DEFAULT_HOST,
    ChildSpec,
    ServiceSpec,
    SupervisorSpec,
    check_supervision,
    parse_service,
    parse_supervisor,
    parse_supervisor_entry,
)
from .supervisor_tree import TreeEvent, TreeNode, render_text
from .wait_queue import WaitQueue

if TYPE_CHECKING:
    from .clock import Clock
    from .host import Host
    from .registry import ChangeSet, Registry

__all__ = ["Supervision", "SupervisionOwner"]


class SupervisionOwner(MailboxOwner, Protocol):
    """What supervision needs from its node (the node implements it; see "Layers" in
    docs/architecture.md). Any thread unless a method says otherwise."""

    @property
    def clock(self) -> Clock: ...

    @property
    def entries(self) -> Registry: ...

    @property
    def hosts(self) -> Mapping[str, Host]: ...

    def fault(self, where: str, message: str) -> None:
        """Record a failure outside any process (``node.faults``, stderr). Never raises."""
        ...

    def keep_log(self, pid: str, line: str) -> None:
        """Keep a line in the logs of ``pid`` (``node.logs(pid)``)."""
        ...

    def new_python_pid(self) -> str:
        """A PID for something that lives in Python (a supervisor)."""
        ...

    def attach_mailbox(self, mb: Mailbox) -> None:
        """Make ``mb`` reachable at its PID."""
        ...

    def on_host_thread(self) -> bool:
        """Whether the calling thread is one of the node's hosts (which must never wait on them)."""
        ...

    def spawn_elsewhere(self, entry_id: str, host: str, args: list[Any], opts: dict[str, Any] | None) -> str:
        """Spawn without waiting: the PID is allocated at once, the process starts on its host."""
        ...

    def route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Carry an operation to whoever owns ``dest`` (see ``Node._route``)."""
        ...

    def reply(self, pid: str, token: int, value: Any) -> None:
        """Answer a Lua call of ``pid`` that returned ``token``."""
        ...

    def terminate(self, pid: str) -> None: ...

    def cancel(self, pid: str, reason: str | None = None) -> None: ...

T = TypeVar("T")
_INF = float("inf")
_CENTURY = 100 * 365 * 86400.0
ROOT_ID = "node"


def _first_line(text: str | None) -> str:
    return (text or "").split("\n", 1)[0]


def _exit_text(reason: str, error: str | None) -> str:
    if error and reason not in ("normal", "cancelled"):
        first = _first_line(error)
        if reason != "error" and (first == reason or first.startswith((reason + ":", reason + " "))):
            return first   # "terminated: did not stop ...", not "terminated: terminated: did not stop ..."
        return f"{reason}: {first}"
    return reason


class _Item:
    """A node of the live tree. Mutated on the supervision thread only, under ``Supervision._lock``."""

    kind = "worker"

    def __init__(self, item_id: str, parent: _Sup | None, child: ChildSpec | None) -> None:
        self.id = item_id
        self.parent = parent
        self.child = child            # how the parent supervisor treats it (None at the root)
        self.status = "stopped"
        self.pid: str | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.started_at: float | None = None
        self.started_mono = 0.0

    @property
    def entry(self) -> str | None:
        return self.child.target if self.child else None

    def snapshot(self) -> TreeNode:
        return TreeNode(id=self.id, kind=self.kind, status=self.status, pid=self.pid, entry=self.entry,
                        restarts=self.restarts, last_exit=self.last_exit, started_at=self.started_at,
                        restart=self.child.restart if self.child else None)


class _Worker(_Item):
    kind = "worker"


class _Service(_Item):
    kind = "service"

    def __init__(self, item_id: str, parent: _Sup | None, child: ChildSpec | None, spec: ServiceSpec,
                 entry: Entry | None) -> None:
        super().__init__(item_id, parent, child)
        self.spec = spec
        self.source = entry           # the registry entry it was started from (to notice changes)
        self.attempts = 0             # restarts in a row since the last stable run
        self.timer: object | None = None
        self.delays: list[float] = []  # every backoff delay used, in order (tests and views read it)

    @property
    def entry(self) -> str | None:
        return self.spec.id


class _Sup(_Item):
    kind = "supervisor"

    def __init__(self, item_id: str, parent: _Sup | None, child: ChildSpec | None, spec: SupervisorSpec,
                 entry: Entry | None) -> None:
        super().__init__(item_id, parent, child)
        self.spec = spec
        self.source = entry
        self.children: list[_Item] = [_make_child(self, c) for c in spec.children]
        self.restart_times: collections.deque[float] = collections.deque()
        self.watchers: dict[str, str] = {}   # monitoring PID -> kind
        self.links: set[str] = set()

    @property
    def entry(self) -> str | None:
        if self.source is not None:
            return self.source.id
        return self.child.target if self.child else None

    def snapshot(self) -> TreeNode:
        base = super().snapshot()
        return TreeNode(**{**base.__dict__, "strategy": self.spec.strategy,
                           "children": tuple(c.snapshot() for c in self.children)})


def _make_child(sup: _Sup, c: ChildSpec) -> _Item:
    cid = f"{sup.id}/{c.id}"
    if c.kind == "worker":
        return _Worker(cid, sup, c)
    if c.kind == "service":
        # the spec is read from the registry when the child starts (a placeholder until then)
        return _Service(cid, sup, c, ServiceSpec(id=c.target or "", process=""), None)
    nested = c.nested or SupervisorSpec(id=c.target or c.id)
    return _Sup(cid, sup, c, nested, None)


class _Mailbox(Mailbox):
    """The supervision's own Python process: it monitors every child; EXIT events go to the queue."""

    def __init__(self, node: MailboxOwner, pid: str, sink: WaitQueue[tuple[Any, ...]]) -> None:
        super().__init__(node, pid)
        self._sink = sink

    def _put_event(self, ev: Event) -> None:  # on the exiting process's host thread
        self._sink.put(("exit", ev))


class Supervision:
    """Every service and supervisor of one node. Create through ``node.supervision``.

    Public calls may come from any thread except a host's (Lua reaches it through the ``supervisor``
    module, which does not wait on this thread); they return once the supervision thread has done the
    work and the hosts have run the new processes' first steps.
    """

    def __init__(self, node: SupervisionOwner, seed: int | None = None) -> None:
        self.node = node
        #: the source of backoff jitter; tests seed it (``Supervision.rng.seed(1)``)
        self.rng = random.Random(seed)  # noqa: S311 -- jitter, not secrets
        self._q: WaitQueue[tuple[Any, ...]] = WaitQueue()
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._lock = threading.RLock()
        self._root: list[_Item] = []                 # top-level supervisors and services, in start order
        self._by_pid: dict[str, _Item] = {}          # a child process's PID -> its item
        self._sup_pids: dict[str, _Sup] = {}         # a supervisor's PID -> the supervisor
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._subscribers: list[Callable[[TreeEvent], None]] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._version = 0
        self._changed = threading.Condition(self._lock)
        self.problems: list[str] = []               # start failures of required services, newest last
        self._problem_ids: set[str] = set()          # entries with a recorded problem (once each)
        pid = node.new_python_pid()
        self._mailbox = _Mailbox(node, pid, self._q)
        node.attach_mailbox(self._mailbox)
        node.clock.subscribe(lambda: self._q.put(("wake",)))

    # ------------------------------------------------------------------ thread
    def start_thread(self) -> None:
        """Start the supervision thread (the node does it when it starts). Any thread."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._main, name="wippy-supervision", daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every service and supervisor (reverse start order), then the thread. Any thread."""
        thread = self._thread
        if thread is None:
            return
        if thread is not threading.current_thread():
            try:
                self._submit(self._stop_all).result(timeout)
            except Exception:  # noqa: S110 -- the node stops its hosts next, which ends every process
                pass
        self._stopping = True
        self._q.put(("wake",))
        thread.join(timeout)
        self._thread = None

    def quiet(self) -> bool:
        """Whether the supervision thread waits for input with nothing queued: it has acted on every
        exit it was told of (teaching mode asks before the next event; any thread). True when the
        thread is not running."""
        return self._thread is None or self._q.idle()

    @property
    def pid(self) -> str:
        """The PID of the supervision's own mailbox (the monitor of every supervised process)."""
        return self._mailbox.pid

    def _main(self) -> None:
        while not self._stopping:
            item = self._next(self._until_timer())
            if item is not None:
                self._handle(item)
            self._fire_timers()

    def _next(self, timeout: float | None) -> tuple[Any, ...] | None:
        if self._pending:
            return self._pending.popleft()
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _until_timer(self) -> float | None:
        if not self._timers:
            return None if not self.node.clock.fake else 1.0
        wait = self._timers[0][0] - self.node.clock.monotonic()
        if self.node.clock.fake:    # a fake clock wakes the queue when it moves
            return 1.0 if wait > 0 else 0.0
        return max(0.0, wait)

    def _fire_timers(self) -> None:
        now = self.node.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self._guard("timer", fn)

    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on this thread ``delay`` seconds of the node's clock from now (callers that may be
        called off check their own token when it fires, as a service's restart does)."""
        heapq.heappush(self._timers, (self.node.clock.monotonic() + delay, next(self._timer_seq), fn))

    def _handle(self, item: tuple[Any, ...]) -> None:
        op = item[0]
        if op == "exit":
            ev: Event = item[1]
            if ev.sender is not None:
                self._guard("exit", lambda: self._exited(ev.sender or "", ev.reason or "error",
                                                         ev.result.get("error")))
        elif op == "call":
            _, fn, fut = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)
        elif op == "crash":   # a child that could not even be spawned: handled as its exit
            _, child, text = item
            self._guard("crash", lambda: self._child_down(child, "error", text))
        elif op == "control":
            _, cop, dest, a, b, c = item
            self._guard("control", lambda: self._control(cop, dest, a, b, c))

    def _guard(self, where: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a bug here must not end supervision of everything else
            import traceback

            self.node.fault(f"supervision ({where})", f"{exc!r}\n{traceback.format_exc()}")

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        if threading.current_thread() is self._thread:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        if self._thread is None:
            raise SupervisionError("the node is not running: start it first (node.start())")
        self._q.put(("call", fn, fut))
        return fut

    def _call(self, fn: Callable[[], T], timeout: float | None) -> T:
        fut = self._submit(fn)
        try:
            return fut.result(timeout)
        except TimeoutError:
            raise Timeout(f"supervision did not finish within {timeout}s (a child may be slow to stop: "
                          "see %tree --text)") from None

    # ------------------------------------------------------------------ events and snapshots
    def subscribe(self, fn: Callable[[TreeEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` on every change, on the supervision thread; returns the unsubscribe call.

        ``fn`` must be quick and must not call back into supervision and wait (hand the event to a
        buffer); an exception in it is recorded in ``node.faults`` and does not stop supervision.
        """
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def _set(self, item: _Item, status: str, kind: str = "status", reason: str | None = None,
             **fields: Any) -> None:
        with self._lock:
            item.status = status
            delay = fields.pop("_delay", None)
            for k, v in fields.items():
                setattr(item, k, v)
            ev = TreeEvent(kind=kind, id=item.id, status=status, pid=item.pid, reason=reason,
                           restarts=item.restarts, delay=delay)
            self._version += 1
            subs = list(self._subscribers)
            self._changed.notify_all()
        for fn in subs:
            try:
                fn(ev)
            except Exception as exc:
                self.node.fault("supervision subscriber", repr(exc))

    @property
    def version(self) -> int:
        """A counter that moves with every change of the tree (views compare it)."""
        with self._lock:
            return self._version

    def tree(self, root: str | None = None) -> TreeNode:
        """A snapshot: the node's root with every top-level service and supervisor, or the subtree
        whose id, child id or PID is ``root`` (:class:`SupervisionError` if there is none). Any thread."""
        with self._lock:
            top = TreeNode(id=ROOT_ID, kind="root", status="running" if self._thread else "stopped",
                           pid=self.pid, children=tuple(i.snapshot() for i in self._root))
        if root is None or root in ("", ROOT_ID):
            return top
        found = top.find(root)
        if found is None:
            names = [n.id for n in top.walk() if n.kind != "root"]
            raise SupervisionError(f"no supervisor, service or child '{root}' in the tree; "
                                   f"known: {', '.join(names[:20]) or '(none: start one first)'}")
        return found

    def text(self, root: str | None = None) -> str:
        """The tree drawn as text (``%tree --text``). Any thread."""
        return render_text(self.tree(root))

    def wait_for(self, predicate: Callable[[TreeNode], bool], timeout: float = 10.0) -> TreeNode:
        """Wait until ``predicate(tree())`` holds; returns that snapshot, or raises :class:`Timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                snap = self.tree()
                if predicate(snap):
                    return snap
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"the supervision tree did not reach the awaited state within {timeout}s:\n"
                                  + render_text(snap))
                self._changed.wait(min(left, 0.1))

    def wait_status(self, node_id: str, status: str, timeout: float = 10.0) -> TreeNode:
        """Wait until the node ``node_id`` has ``status``; returns it. Any thread but the supervision's."""
        def ok(t: TreeNode) -> bool:
            n = t.find(node_id)
            return n is not None and n.status == status
        found = self.wait_for(ok, timeout).find(node_id)
        assert found is not None
        return found

    def sync(self, timeout: float = 10.0) -> None:
        """Return once everything queued before this call is handled (a barrier for tests)."""
        self._call(lambda: None, timeout)

    def delays(self, service_id: str) -> list[float]:
        """Every backoff delay a service has waited, in order (tests and views)."""
        with self._lock:
            for item in self._items():
                if isinstance(item, _Service) and item.id == service_id:
                    return list(item.delays)
        raise SupervisionError(f"no service '{service_id}' in the tree")

    def _items(self) -> Iterable[_Item]:
        stack = list(self._root)
        while stack:
            it = stack.pop()
            yield it
            if isinstance(it, _Sup):
                stack.extend(it.children)

    # ------------------------------------------------------------------ public commands (any thread)
    def start(self, spec: str | Mapping[str, Any], *, timeout: float = 60.0) -> str:
        """Start a supervisor or a service at the top of the tree; returns the supervisor's PID
        (for a service, its process's PID) once its children run.

        ``spec`` is a ``process.supervisor`` or ``process.service`` entry ID, or a supervisor spec
        mapping (``{"id": "workers", "strategy": "one_for_all", "children": [...]}``). Raises
        :class:`~.errors.EntryError` for a bad spec (naming the field), :class:`SupervisionError` if
        it is already running or cannot start.
        """
        prepared = self._prepare(spec)
        pid = self._call(lambda: self._start_top(prepared), timeout)
        self._settle()
        return pid

    def stop(self, key: str, *, timeout: float = 60.0) -> None:
        """Stop a top-level supervisor or service (its children in reverse order) and remove it from
        the tree. ``key`` is its id or PID."""
        self._call(lambda: self._stop_top(key), timeout)

    def _prepare(self, spec: str | Mapping[str, Any]) -> _Item:
        if isinstance(spec, str):
            entry = self.node.entries.get(spec)
            if entry is None:
                raise EntryError(self.node.entries.unknown_message(spec))
            if entry.kind == "process.supervisor":
                item: _Item = _Sup(entry.id, None, None, parse_supervisor_entry(entry), entry)
            elif entry.kind == "process.service":
                item = _Service(entry.id, None, None, parse_service(entry), entry)
            else:
                raise EntryError(f"entry '{spec}' is a {entry.kind} entry; supervision starts "
                                 "process.supervisor and process.service entries")
            self._check_refs(item)
            return item
        if not isinstance(spec, Mapping):
            raise EntryError(f"a supervisor spec is a mapping or an entry ID, got {type(spec).__name__}")
        sup_id = spec.get("id")
        if not isinstance(sup_id, str) or not sup_id or "/" in sup_id:
            raise EntryError(f"supervisor spec: id: is required, a name without '/' (got {sup_id!r})")
        parsed = parse_supervisor(f"supervisor spec '{sup_id}'", "", sup_id, spec)
        item = _Sup(sup_id, None, None, parsed, None)
        self._check_refs(item)
        return item

    def _check_refs(self, item: _Item) -> None:
        """References of a spec that did not come through a registry commit (Lua, Python)."""
        def walk(sup: _Sup, path: str) -> None:
            for i, c in enumerate(sup.children):
                spec = c.child
                assert spec is not None
                where = f"{path}children[{i}]"
                if spec.kind == "worker":
                    e = self.node.entries.get(spec.target or "")
                    if e is None or e.kind != "process.lua":
                        raise EntryError(f"{item.id}: {where}.process: '{spec.target}' is not a process.lua entry"
                                         + ("" if e is not None else " (it does not exist)"))
                    if not self._host_exists(spec.host):
                        raise EntryError(f"{item.id}: {where}.host: unknown host '{spec.host}'")
                    for a in spec.input:
                        check_plain(a)
                elif spec.target is not None:
                    e = self.node.entries.get(spec.target)
                    want = "process.service" if spec.kind == "service" else "process.supervisor"
                    if e is None or e.kind != want:
                        raise EntryError(f"{item.id}: {where}.{spec.kind}: '{spec.target}' is not a {want} entry")
                if isinstance(c, _Sup) and spec.nested is not None:
                    walk(c, f"{where}.supervisor.")
        if isinstance(item, _Sup):
            walk(item, "")

    def _settle(self) -> None:
        """Let the hosts run what was just spawned (their queues are FIFO): a barrier on each."""
        # the first call returns once the host took the spawns off its queue, the second once it ran
        # a batch of steps after them
        for _ in range(2):
            for h in list(self.node.hosts.values()):
                if h.running and not h.on_thread():
                    try:
                        h.call(lambda ctx: None, timeout=10.0)
                    except WippyError:
                        pass

    # ------------------------------------------------------------------ registry (supervision thread)
    def _host_exists(self, host: str) -> bool:
        """A host outside the registry: the node's own (``app:processes`` always exists, also before the
        node starts: ``wippy run`` loads its tree first) or one added with ``Node.add_host``."""
        return host == DEFAULT_HOST or host in self.node.hosts

    def validator(self, cs: ChangeSet) -> None:
        """Registry validator: refuse bad service and supervisor specs (any committing thread)."""
        if any(c.kind in ("process.service", "process.supervisor", "process.lua", "process.host")
               for c in cs.changes):
            check_supervision(cs.after, self._host_exists)

    def on_commit(self, ids: frozenset[str]) -> None:
        """After a commit (on the committing thread): start, restart and stop what the change asks.

        A commit from Python (a cell, the watcher) returns once the new supervisors' children run; one
        from Lua (a host thread) does not wait, as the supervision may need that host.
        """
        if self._thread is None:
            return
        if not any(self._relevant(i) for i in ids):
            return
        with self._lock:
            known = len(self.problems)
        fut = self._submit(lambda: self._reconcile(ids))
        if self.node.on_host_thread():
            return
        try:
            fut.result(120.0)
        except Exception as exc:
            self.node.fault("supervision", f"after the registry commit: {exc}")
            return
        self._settle()
        with self._lock:
            new = self.problems[known:]
        for text in new:   # on the committing thread: in a notebook, under the cell that committed
            sys.stderr.write(f"wippy: supervision: {text}\n")

    def _relevant(self, entry_id: str) -> bool:
        e = self.node.entries.get(entry_id)
        if e is not None and e.kind in ("process.service", "process.supervisor"):
            return True
        with self._lock:
            return any(i.id == entry_id for i in self._root)

    def boot(self) -> None:
        """Start what auto-starts in the current registry (the node calls it once it runs)."""
        self._call(lambda: self._reconcile(None), 120.0)
        self._settle()

    def _claimed(self) -> set[str]:
        """Entries that some supervisor entry runs as its child: they do not start at the top."""
        out: set[str] = set()
        for e in self.node.entries.entries():
            if e.kind != "process.supervisor":
                continue
            try:
                spec = parse_supervisor_entry(e)
            except EntryError:
                continue
            stack = list(spec.children)
            while stack:
                c = stack.pop()
                if c.target:
                    out.add(c.target)
                if c.nested:
                    stack.extend(c.nested.children)
        return out

    def _reconcile(self, ids: frozenset[str] | None) -> None:
        reg = self.node.entries
        # 1. what runs from an entry that is gone or changed stops (dependents before what they need)
        with self._lock:
            root = list(self._root)
        for item in self._stop_order(root):
            source = getattr(item, "source", None)
            if source is None:
                continue
            now = reg.get(item.id)
            if now is None or now.kind != source.kind or now.data != source.data:
                self._stop_item(item, "cancelled")
                with self._lock:
                    self._root.remove(item)
                self._set(item, "stopped", kind="removed", reason="entry removed" if now is None else "entry changed")
                if now is not None and (ids is None or item.id in ids):
                    # a changed entry that ran (auto-started or started by hand) runs again as it now reads
                    try:
                        self._start_top(self._prepare(now.id))
                    except WippyError as exc:
                        self._problem(now.id, f"{now.id}: {exc}")
        # 2. what should auto-start and does not run yet, services in dependency order
        claimed = self._claimed()
        running = {i.id for i in self._root}
        wanted: list[Entry] = []
        for e in reg.entries():
            if e.id in running or e.id in claimed or e.kind not in ("process.service", "process.supervisor"):
                continue
            lc = e.data.get("lifecycle") or {}
            if isinstance(lc, Mapping) and lc.get("auto_start") is True:
                wanted.append(e)
        for e in self._dependency_order([w for w in wanted if w.kind == "process.service"]):
            if e.id not in {i.id for i in self._root}:
                try:
                    self._start_top(self._prepare(e.id))
                except WippyError as exc:
                    self._problem(e.id, f"{e.id}: {exc}")
        for e in wanted:
            if e.kind == "process.supervisor":
                try:
                    self._start_top(self._prepare(e.id))
                except WippyError as exc:
                    self._problem(e.id, f"{e.id}: {exc}")

    def _problem(self, entry_id: str, text: str) -> None:
        """Record that ``entry_id`` could not start (once, until it starts again): in ``problems`` and the
        supervision's log. The caller says it where a person reads it (the CLI at boot, a cell's commit)."""
        with self._lock:
            if entry_id in self._problem_ids:
                return
            self._problem_ids.add(entry_id)
            self.problems.append(text)
        self.node.keep_log(self.pid, f"[error] supervision: {text}")

    def _dependency_order(self, entries: list[Entry]) -> list[Entry]:
        """Services with their requirements first (requirements not asked for are pulled in)."""
        reg = self.node.entries
        out: list[Entry] = []
        seen: set[str] = set()

        def visit(e: Entry) -> None:
            if e.id in seen:
                return
            seen.add(e.id)
            for r in parse_service(e).requires:
                dep = reg.get(r)
                if dep is not None:
                    visit(dep)
            out.append(e)

        for e in entries:
            visit(e)
        return out

    # ------------------------------------------------------------------ top level (supervision thread)
    def _start_top(self, item: _Item) -> str:
        with self._lock:
            old = next((i for i in self._root if i.id == item.id), None)
            if old is not None and old.status in ("stopped", "failed"):
                self._root.remove(old)   # it ended: starting it again replaces it
                old = None
            if old is not None:
                raise SupervisionError(f"'{item.id}' is already running in the tree (stop it first, or "
                                       "commit a change to its entry to restart it)")
        # a service's requirements start first, and come before it in the root (the stop order reverses it)
        missing = self._start_requirements(item) if isinstance(item, _Service) else None
        with self._lock:
            self._root.append(item)
        self._set(item, "starting", kind="added")
        if isinstance(item, _Service):
            ok = self._start_service_top(item, missing)
        else:
            assert isinstance(item, _Sup)
            ok = self._start_sup(item, initial=True)
        if not ok:
            raise SupervisionError(f"'{item.id}' could not start: {item.last_exit}")
        return item.pid or ""

    def _stop_top(self, key: str) -> None:
        with self._lock:
            item = next((i for i in self._root if key in (i.id, i.pid)), None)
        if item is None:
            raise SupervisionError(f"no top-level supervisor or service '{key}' (see %tree --text)")
        # services that require this one, directly or through others, stop first
        needed = {item.id}
        with self._lock:
            root = list(self._root)
        grew = isinstance(item, _Service)
        while grew:
            grew = False
            for other in root:
                if isinstance(other, _Service) and other.id not in needed and needed & set(other.spec.requires):
                    needed.add(other.id)
                    grew = True
        for other in self._stop_order([i for i in root if i.id in needed]):
            self._stop_item(other, "cancelled")
        with self._lock:
            if item in self._root:
                self._root.remove(item)
        self._set(item, "stopped", kind="removed")

    def _stop_all(self) -> None:
        with self._lock:
            root = list(self._root)
        for item in self._stop_order(root):
            self._stop_item(item, "cancelled")

    @staticmethod
    def _stop_order(items: list[_Item]) -> list[_Item]:
        """The order to stop top-level items in: the reverse of their start order, except that a service
        always stops before those it requires (a restarted requirement may have started after it)."""
        out: list[_Item] = []
        done: set[str] = set()

        def visit(it: _Item) -> None:
            if it.id in done:
                return
            done.add(it.id)
            for other in reversed(items):
                if isinstance(other, _Service) and it.id in other.spec.requires:
                    visit(other)
            out.append(it)

        for it in reversed(items):
            visit(it)
        return out

    # ------------------------------------------------------------------ services
    def _start_requirements(self, svc: _Service) -> str | None:
        """Start what a top-level service requires, if it does not run (an ended one starts again);
        returns the first required service that is not running, or None."""
        for r in svc.spec.requires:
            with self._lock:
                dep = next((i for i in self._root if i.id == r), None)
            if dep is None or dep.status in ("stopped", "failed"):
                try:
                    self._start_top(self._prepare(r))
                except WippyError as exc:
                    self._problem(r, f"{r} (required by {svc.id}): {exc}")
                with self._lock:
                    dep = next((i for i in self._root if i.id == r), None)
            if dep is None or dep.status not in ("running", "restarting"):
                required = dep is None or (isinstance(dep, _Service) and dep.spec.startup == "required")
                if required:
                    return r
        return None

    def _start_service_top(self, svc: _Service, missing: str | None) -> bool:
        """Start a top-level service whose requirements were started (``missing``: one that is not)."""
        if missing is not None:
            text = f"required service {missing} is not running"
            self._set(svc, "failed", reason=text, last_exit=text)
            if svc.spec.startup == "required":
                self._problem(svc.id, f"{svc.id}: {text}")
            return False
        return self._start_service(svc, first=True)

    def _start_service(self, svc: _Service, first: bool) -> bool:
        spec = svc.spec
        self._set(svc, "starting")
        try:
            pid = self._spawn(spec.process, spec.host, spec.input, spec.name, spec.stop_timeout)
        except WippyError as exc:
            text = f"error: {exc}"
            if first:
                self._set(svc, "failed", reason=text, last_exit=text)
                if spec.startup == "required":
                    self._problem(svc.id, f"{svc.id}: {exc}")
                return False
            self._pending.append(("crash", svc, text))
            return True
        with self._lock:
            self._by_pid[pid] = svc
        now = self.node.clock.now_ns() / 1e9
        self._set(svc, "running", pid=pid, started_at=now, started_mono=self.node.clock.monotonic())
        if first and spec.startup == "required":
            # a required service must survive its first steps (a compile error fails its start)
            self._settle_host(spec.host, spec.start_timeout)
            early = self._take_exit(pid)
            if early is not None:
                reason, error = early
                text = _exit_text(reason, error)
                with self._lock:
                    self._by_pid.pop(pid, None)
                self._set(svc, "failed", reason=text, last_exit=text, pid=None)
                self._problem(svc.id, f"{svc.id} failed to start: {text}")
                return False
        with self._lock:
            self._problem_ids.discard(svc.id)   # it runs: a later failure to start is news again
        return True

    def _service_down(self, svc: _Service, reason: str, text: str) -> None:
        """A service's process ended (any reason but our own stop): restart it after its backoff."""
        policy = svc.spec.restart
        if self.node.clock.monotonic() - svc.started_mono >= svc.spec.stable_threshold:
            svc.attempts = 0
        if policy.max_attempts and svc.attempts >= policy.max_attempts:
            self._set(svc, "failed", reason=text, last_exit=text, pid=None)
            if svc.parent is not None:
                self._child_down(svc, "error", f"gave up after {svc.attempts} restarts: {text}", own=False)
            return
        svc.attempts += 1
        delay = policy.delay(svc.attempts, self.rng.uniform)
        svc.delays.append(delay)
        token = object()
        svc.timer = token
        self._set(svc, "restarting", kind="status", reason=text, last_exit=text, pid=None, _delay=delay)

        def fire() -> None:
            if svc.timer is token and svc.status == "restarting":
                svc.timer = None
                svc.restarts += 1
                self._start_service(svc, first=False)

        self._after(delay, fire)

    # ------------------------------------------------------------------ supervisors
    def _start_sup(self, sup: _Sup, initial: bool) -> bool:
        """Start a supervisor and its children in order. ``initial``: a child that cannot be spawned
        fails the start (the started ones are stopped); later, it counts as a crash."""
        if sup.child is not None and sup.child.target is not None and sup.spec.children == () and sup.source is None:
            entry = self.node.entries.get(sup.child.target)
            if entry is None or entry.kind != "process.supervisor":
                text = f"error: entry '{sup.child.target}' is not a process.supervisor entry any more"
                self._set(sup, "failed", reason=text, last_exit=text)
                return False
            sup.spec = parse_supervisor_entry(entry)
            sup.source = entry
            with self._lock:
                sup.children = [_make_child(sup, c) for c in sup.spec.children]
        pid = self.node.new_python_pid()
        with self._lock:
            if sup.pid:
                self._sup_pids.pop(sup.pid, None)
            self._sup_pids[pid] = sup
            sup.restart_times.clear()
        self._set(sup, "starting", pid=pid, started_at=self.node.clock.now_ns() / 1e9,
                  started_mono=self.node.clock.monotonic())
        for c in sup.children:
            if not self._start_child(c, initial):
                text = f"error: child {c.id.rsplit('/', 1)[-1]} could not start: {c.last_exit}"
                for started in reversed(sup.children[:sup.children.index(c)]):
                    self._stop_item(started, "cancelled")
                self._set(sup, "failed", reason=text, last_exit=text)
                self._sup_ended(sup, "error", text)
                return False
        self._set(sup, "running")
        return True

    def _start_child(self, c: _Item, initial: bool) -> bool:
        if isinstance(c, _Sup):
            return self._start_sup(c, initial)
        if isinstance(c, _Service):
            entry = self.node.entries.get((c.child.target if c.child else None) or "")
            if entry is None or entry.kind != "process.service":
                text = f"error: '{c.entry}' is not a process.service entry"
                self._set(c, "failed", reason=text, last_exit=text)
                return False
            c.spec = parse_service(entry)
            c.source = entry
            c.attempts = 0
            return self._start_service(c, first=initial)
        spec = c.child
        assert spec is not None
        self._set(c, "starting")
        try:
            pid = self._spawn(spec.target or "", spec.host, spec.input, spec.name, spec.shutdown)
        except WippyError as exc:
            text = f"error: {exc}"
            if initial:
                self._set(c, "failed", reason=text, last_exit=text)
                return False
            self._pending.append(("crash", c, text))
            return True
        with self._lock:
            self._by_pid[pid] = c
        self._set(c, "running", pid=pid, started_at=self.node.clock.now_ns() / 1e9,
                  started_mono=self.node.clock.monotonic())
        return True

    def _spawn(self, entry_id: str, host: str, args: tuple[Any, ...], name: str | None, shutdown: float) -> str:
        opts: dict[str, Any] = {"monitor": self._mailbox.pid}
        if name is not None:
            opts["name"] = name
        if shutdown > 0:
            # the host's own grace after a CANCEL (5s by default) must not cut the shutdown timeout
            # short: it is the child's (nanoseconds; "infinity" as a century)
            opts["cancel_grace"] = int(min(shutdown, _CENTURY) * 1e9)
        return self.node.spawn_elsewhere(entry_id, host, list(args), opts)

    def _exited(self, pid: str, reason: str, error: str | None) -> None:
        with self._lock:
            item = self._by_pid.pop(pid, None)
        if item is None:
            return   # stopped by us, or an exit already handled
        text = _exit_text(reason, error)
        if isinstance(item, _Service):
            # a service restarts itself with backoff, at the top or under a supervisor
            with self._lock:
                item.pid = None
            self._service_down(item, reason, text)
            return
        self._child_down(item, reason, text)

    def _child_down(self, child: _Item, reason: str, text: str, own: bool = True) -> None:
        """A supervisor's child ended on its own (``reason``): restart per strategy and intensity."""
        sup = child.parent
        if sup is None or sup.status not in ("running", "starting"):
            if own:
                self._set(child, "stopped" if reason in ("normal", "cancelled") else "failed",
                          reason=text, last_exit=text, pid=None)
            return
        spec = child.child
        assert spec is not None
        abnormal = reason not in ("normal", "cancelled", "shutdown")
        restart = spec.restart == "permanent" or (spec.restart == "transient" and abnormal)
        if not restart:
            if own:
                self._set(child, "failed" if abnormal else "stopped", reason=text, last_exit=text, pid=None)
            return
        if not self._add_restart(sup):
            if own:
                self._set(child, "failed", reason=text, last_exit=text, pid=None)
            self._sup_fail(sup, f"shutdown: reached max restart intensity ({sup.spec.max_restarts} in "
                                f"{sup.spec.period:g}s) after {child.id.rsplit('/', 1)[-1]}: {text}")
            return
        if own:
            self._set(child, "restarting", reason=text, last_exit=text, pid=None)
        else:
            self._set(child, "restarting")
        strategy = sup.spec.strategy
        i = sup.children.index(child)
        if strategy == "one_for_one":
            group = [child]
        elif strategy == "one_for_all":
            group = list(sup.children)
        else:
            group = sup.children[i:]
        # the others of the group stop, last first; temporary ones stay stopped (as in OTP)
        for other in reversed(group):
            if other is child:
                continue
            if other.status in ("running", "starting", "restarting"):
                self._stop_item(other, "cancelled")
                if other.child and other.child.restart == "temporary":
                    self._set(other, "stopped", reason="stopped by its supervisor")
                else:
                    self._set(other, "restarting", reason="restarting with " + child.id.rsplit("/", 1)[-1])
        for member in group:
            if member is not child:
                if member.child and member.child.restart == "temporary":
                    continue   # a temporary child is never restarted, not even with its siblings
                if member.status not in ("restarting", "stopped", "failed"):
                    continue
                # siblings that had ended (a transient after a normal exit) start again too, as in OTP
            with self._lock:
                member.restarts += 1
            self._start_child(member, initial=False)

    def _add_restart(self, sup: _Sup) -> bool:
        """Record one restart; False when it is one too many within the period (OTP's intensity)."""
        now = self.node.clock.monotonic()
        times = sup.restart_times
        times.append(now)
        while times and times[0] < now - sup.spec.period:
            times.popleft()
        return len(times) <= sup.spec.max_restarts

    def _sup_fail(self, sup: _Sup, text: str) -> None:
        """Past its intensity: stop the children in reverse order, fail, tell the parent."""
        self._set(sup, "stopping", reason=text)
        for c in reversed(sup.children):
            self._stop_item(c, "cancelled")
        pid = sup.pid
        self._set(sup, "failed", reason=text, last_exit=text)
        self._sup_ended(sup, "error", text, pid)
        if sup.parent is not None:
            self._child_down(sup, "shutdown", text, own=False)

    def _sup_ended(self, sup: _Sup, reason: str, text: str | None, pid: str | None = None) -> None:
        """Tell the supervisor's monitors and links that it ended."""
        pid = pid or sup.pid
        if pid is None:
            return
        with self._lock:
            self._sup_pids.pop(pid, None)
            watchers = dict(sup.watchers)
            links = set(sup.links)
            sup.watchers.clear()
            sup.links.clear()
        abnormal = reason not in ("normal", "cancelled")
        result: dict[str, Any] = {"error": text or reason} if abnormal else {"value": None}
        for w, kind in watchers.items():
            ev: dict[str, Any] = {"kind": "pid.exit", "from": pid, "result": result, "reason": reason}
            if kind == "exec":
                ev["exec"] = True
            self._route("event", w, ev, None, None)
        if abnormal:
            for other in links:
                self._route("link_down", other, pid, result, reason)

    def _route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        try:
            self.node.route(op, dest, a, b, c)
        except WippyError:
            pass   # the watcher is gone

    # ------------------------------------------------------------------ stopping (supervision thread)
    def _stop_item(self, item: _Item, reason: str) -> None:
        """Stop one node (a supervisor: its children last first). Waits for the exits."""
        if isinstance(item, _Sup):
            if item.status in ("stopped", "failed"):
                return   # it ended already (its children with it): a failed one stays failed
            self._set(item, "stopping")
            for c in reversed(item.children):
                self._stop_item(c, reason)
            pid = item.pid
            self._set(item, "stopped")
            self._sup_ended(item, reason, None, pid)
            return
        if isinstance(item, _Service):
            item.timer = None   # a pending restart is off
        pid = item.pid
        if pid is None:
            if item.status in ("restarting", "starting", "running"):
                self._set(item, "stopped")
            return
        with self._lock:
            self._by_pid.pop(pid, None)
        self._set(item, "stopping")
        # a service: cancel, wait stop_timeout, then terminate; a worker: its child spec's shutdown
        shutdown = (item.spec.stop_timeout if isinstance(item, _Service)
                    else item.child.shutdown if item.child else 5.0)
        result = None
        try:
            if shutdown <= 0:
                self.node.terminate(pid)
            else:
                self.node.cancel(pid, "shutdown")
                result = self._await_exit(pid, None if shutdown == _INF else shutdown)
                if result is None:
                    self.node.terminate(pid)
            if result is None:
                result = self._await_exit(pid, 30.0, real=True)
        except WippyError:
            result = result or ("noproc", None)
        reason_text = _exit_text(*result) if result else "terminated"
        self._set(item, "stopped", reason=reason_text, last_exit=reason_text, pid=None)

    def _take_exit(self, pid: str) -> tuple[str, str | None] | None:
        """An exit of ``pid`` already queued, taken out of the queue (others are kept in order)."""
        while True:
            try:
                self._pending.append(self._q.get_nowait())
            except queue.Empty:
                break
        for i, it in enumerate(self._pending):
            if it[0] == "exit" and it[1].sender == pid:
                del self._pending[i]
                ev: Event = it[1]
                return ev.reason or "error", ev.result.get("error")
        return None

    def _await_exit(self, pid: str, seconds: float | None, real: bool = False) -> tuple[str, str | None] | None:
        """Wait for ``pid``'s EXIT (``seconds`` of the node's clock, or of real time with ``real``);
        everything else that arrives meanwhile is kept, in order, for later."""
        found = self._take_exit(pid)
        if found is not None:
            return found
        clock = self.node.clock
        use_real = real or not clock.fake
        start = time.monotonic() if use_real else clock.monotonic()
        while True:
            now = time.monotonic() if use_real else clock.monotonic()
            if seconds is not None and now - start >= seconds:
                return None
            wait = 0.5 if seconds is None or not use_real else max(0.0, seconds - (now - start))
            try:
                it = self._q.get(timeout=min(wait, 0.5))
            except queue.Empty:
                continue
            if it[0] == "exit" and it[1].sender == pid:
                ev: Event = it[1]
                return ev.reason or "error", ev.result.get("error")
            if it[0] != "wake":
                self._pending.append(it)

    def _settle_host(self, host: str, timeout: float) -> None:
        h = self.node.hosts.get(host)
        if h is not None and h.running:
            # the first call returns once the host took the spawn off its queue, the second once it ran
            # the new process's first steps
            for _ in range(2):
                try:
                    h.call(lambda ctx: None, timeout=max(timeout, 0.1))
                except WippyError:
                    return

    # ------------------------------------------------------------------ a supervisor's PID (any thread)
    def owns(self, pid: str) -> bool:
        """Whether ``pid`` is a supervisor's."""
        return pid in self._sup_pids

    def control(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """An operation addressed to a supervisor's PID (from ``node._route``): queued."""
        if op == "send":
            raise ProcessError(f"{dest} is a supervisor; it takes no messages (use the supervisor module: "
                               "supervisor.tree, supervisor.stop)")
        self._q.put(("control", op, dest, a, b, c))

    def _control(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        sup = self._sup_pids.get(dest)
        if op == "monitor":
            if sup is None:
                ev = {"kind": "pid.exit", "from": dest, "result": {"error": "noproc"}, "reason": "noproc"}
                self._route("event", a, ev, None, None)
            else:
                with self._lock:
                    sup.watchers[a] = b or "monitor"
            return
        if sup is None:
            return
        if op == "demonitor":
            with self._lock:
                sup.watchers.pop(a, None)
        elif op == "link":
            with self._lock:
                sup.links.add(a)
        elif op == "unlink":
            with self._lock:
                sup.links.discard(a)
        elif op in ("cancel", "terminate", "link_down"):
            reason = {"cancel": "cancelled", "terminate": "terminated", "link_down": "link_down"}[op]
            self._stop_sup_by_signal(sup, reason)

    def _stop_sup_by_signal(self, sup: _Sup, reason: str) -> None:
        """A supervisor was cancelled, terminated or lost a link: it stops its children and ends; its
        parent (if any) restarts it as its restart type says."""
        self._stop_item(sup, reason)
        if reason != "cancelled":
            self._set(sup, "failed", reason=reason, last_exit=reason)
        if sup.parent is not None:
            self._child_down(sup, reason, reason, own=False)
        else:
            with self._lock:
                if sup in self._root and sup.source is None:
                    self._root.remove(sup)

    # ------------------------------------------------------------------ Lua (host threads)
    def lua_call(self, op: str, caller: str, arg: Any) -> Any:
        """The ``supervisor`` module's calls, on the caller's host thread. ``start`` and ``stop`` return a
        token at once and answer later with a reply message (``node._reply``); the others answer now."""
        if op == "tree":
            return self.tree(arg if isinstance(arg, str) and arg else None).to_dict()
        if op == "children":
            node = self.tree(str(arg))
            return [c.to_dict() for c in node.children]
        if op in ("start", "stop"):
            if op == "start":
                prepared = self._prepare(arg)   # spec errors answer at once
            token = next(self._timer_seq)

            def work() -> None:
                try:
                    if op == "start":
                        value: dict[str, Any] = {"pid": self._start_top(prepared)}
                    else:
                        self._stop_top(str(arg))
                        value = {"ok": True}
                except WippyError as exc:
                    value = {"error": str(exc)}
                self.node.reply(caller, token, value)

            self._q.put(("call", work, Future()))
            return token
        raise SupervisionError(f"supervisor.{op}: unknown call")

