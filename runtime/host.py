"""A host: one scheduler thread owning one Lua state, running many processes.

Threads: everything in this module that touches ``self._lua`` or ``self._s`` runs on the host's own
thread (``wippy-host-<name>``). Other threads talk to a host only through :meth:`Host.post` and
:meth:`Host.call`, which put work on a thread-safe queue that the host drains between two run steps, and
(for :meth:`Host.call`) wait on a :class:`concurrent.futures.Future`.

The run loop itself is Lua (the modules ``lua/scheduler/*.lua``, loaded by :mod:`.lua_modules`): Python
enters it with ``S.run(now, budget)`` and gets control back when the run queue is empty or after ``budget``
resumes, drains the queue again, and sleeps on the queue until the next timer deadline when there is
nothing to do.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from lupa import lua54

from .errors import HostError, LuaError, ProcessError, Timeout
from .host_port import HostPort
from .lua_modules import load_runtime
from .luaconv import lua_bytes as _b
from .luaconv import lua_pair as _pair
from .luaconv import lua_str as _s
from .payload import from_lua, to_lua

__all__ = ["DEFAULT_HEAP_LIMIT", "DEFAULT_HOST", "DEFAULT_INSTRUCTION_BUDGET", "Host", "HostContext", "HostOptions"]

T = TypeVar("T")

DEFAULT_HOST = "app:processes"   # the host every node has (re-exported by node.py)
DEFAULT_INSTRUCTION_BUDGET = 100_000_000
DEFAULT_HEAP_LIMIT = 256 * 1024 * 1024
HEADROOM = 4 * 1024 * 1024  # bytes above the heap limit kept free for pushes from Python
RUN_BATCH = 20_000          # resumes per run step before Python looks at its queue again
_REMOTE_PID_BASE = 1 << 40  # PIDs allocated from outside the host (Python, other hosts) start here
# what changes the world (a seeded host settles before taking one from outside)
_INPUTS = frozenset({"spawn", "deliver", "deliver_many", "deliver_blob", "event", "control", "registry_event"})
# threads that must never wait for a seeded world to settle: its own, and the cluster's (a link's I/O
# thread waiting would hold up every node's messages)
_WORLD_THREADS = ("wippy-host-", "wippy-supervision", "wippy-link-", "wippy-cluster")
_SEEDED_BATCH = 1000        # seeded (teaching mode): events per S.teach_run
_PY_POLL = 0.002            # seeded: how often a host waiting for the supervision to act looks again
_PY_WAIT_MAX = 10.0         # seeded: at most this long (real seconds) before it goes on regardless


def _deny_attributes(obj: object, name: object, is_setting: bool) -> object:
    raise AttributeError("Lua code has no access to Python objects")


def _size(value: Any, depth: int = 0) -> int:
    """A rough upper bound of the bytes a Python value takes once pushed into Lua."""
    if isinstance(value, (str, bytes)):
        return 32 + len(value) * (4 if isinstance(value, str) else 1)
    if depth > 64:
        return 64
    if isinstance(value, dict):
        return 64 + sum(48 + _size(k, depth + 1) + _size(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 64 + sum(24 + _size(v, depth + 1) for v in value)
    return 16


@dataclass(frozen=True)
class HostOptions:
    """Settings of a host (``process.host`` entry, ``host:`` mapping).

    ``instruction_budget``: instructions a process may run between two parks (0 turns the budget and
    its count hook off, for speed). ``heap_limit``: bytes of the host's Lua state; the process whose
    allocation fails is killed. ``cancel_grace``: seconds a cancelled process listening for events has
    before it is terminated.
    """

    instruction_budget: int = DEFAULT_INSTRUCTION_BUDGET
    heap_limit: int = DEFAULT_HEAP_LIMIT
    cancel_grace: float = 5.0

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> HostOptions:
        """Read a ``host:`` mapping (YAML); unknown keys are refused naming the known ones."""
        from .tree import parse_bytes, parse_seconds

        m = dict(m or {})
        # default_scope is read by the node's security (node_security.py), not by the host itself
        known = {"instruction_budget", "heap_limit", "cancel_grace", "workers", "max_memory", "default_scope"}
        unknown = set(m) - known
        if unknown:
            raise HostError(
                f"unknown host option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
            )
        heap = m.get("heap_limit", m.get("max_memory"))
        return cls(
            instruction_budget=int(m.get("instruction_budget", DEFAULT_INSTRUCTION_BUDGET)),
            heap_limit=parse_bytes(heap) if heap is not None else DEFAULT_HEAP_LIMIT,
            cancel_grace=parse_seconds(m.get("cancel_grace", 5.0)),
        )


class HostContext:
    """What a function passed to :meth:`Host.call` receives: the host's Lua state and scheduler.

    Valid only on the host thread, during that call.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.lua: Any = host._lua
        self.scheduler: Any = host._s

    def to_lua(self, value: Any) -> Any:
        self.host._room(_size(value))
        return to_lua(self.lua, value)

    def room(self, extra: int) -> None:
        """Make room for ``extra`` bytes of Lua allocations caused from Python (see Host._room)."""
        self.host._room(extra)

    def from_lua(self, value: Any) -> Any:
        return from_lua(value)


class Host:
    """A scheduler thread with its own Lua state. Create through :meth:`Node.add_host`.

    ``port`` is all the host knows of its node (:class:`~.host_port.HostPort`, runtime/host_port.py).
    """

    def __init__(self, port: HostPort, name: str, options: HostOptions | None = None) -> None:
        self.port = port
        self.name = name
        self.options = options or HostOptions()
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._start_error: BaseException | None = None
        self._ids = itertools.count(_REMOTE_PID_BASE)
        self._pid_prefix = port.pid_prefix(name)   # "{host|", or "{node@host|" in a cluster
        self._lua: Any = None
        self._cap = self.options.heap_limit
        self._s: Any = None
        self._stopping = False
        self._paused = False   # teaching mode: S.run is not called; events wait in K.held (teach.lua)
        self._seeded = False   # teaching mode with a seed: S.teach_run instead of S.run
        self._py_wait = 0.0    # seeded: since when the host waits for Python to act on an exit (0: not)
        self.crashes = 0
        self._reported: set[str] = set()
        self._tracing = False   # spawns and sends recorded in Lua for node.events (host thread sets it)

    # ---------------------------------------------------------------- any thread
    @property
    def running(self) -> bool:
        return self._ready.is_set() and not self._stopped.is_set() and self._start_error is None

    @property
    def tracing(self) -> bool:
        """Whether this host records spawns and sends for ``node.events`` (switched by the node)."""
        return self._tracing

    def start(self) -> None:
        """Start the thread and wait until its Lua state is ready (raises if it could not start)."""
        self._thread = threading.Thread(target=self._main, name=f"wippy-host-{self.name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise HostError(f"host '{self.name}' failed to start: {self._start_error}") from self._start_error
        self.port.clock.subscribe(self.wake)

    def on_thread(self) -> bool:
        """Whether the calling thread is this host's own."""
        return self._thread is not None and threading.current_thread() is self._thread

    def allocate_pid(self) -> str:
        """A PID for a process this host will create on a request from outside it."""
        return f"{self._pid_prefix}0x{next(self._ids):x}}}"

    def post(self, *item: Any) -> None:
        """Queue work for the host thread; returns at once (seeded, an input from outside the world
        first waits for the world to settle: :meth:`settle`)."""
        if self._seeded and item[0] in _INPUTS and not self._paused:
            t = threading.current_thread()
            if t is not self._thread and not t.name.startswith(_WORLD_THREADS):
                self.settle()
        self._queue.put(item)

    def settle(self, timeout: float = 30.0) -> bool:
        """Seeded and running: wait until this host has nothing to do before real time moves and the
        node's Python actors (the supervision) wait for input (any thread but the host's). So an
        input from Python (a spawn, a send from a cell) always meets the world in the same state, and
        the same seed and inputs give the same events. False after ``timeout`` seconds; True at once
        when not seeded or paused."""
        end = time.monotonic() + timeout
        while self._seeded and not self._paused and self.running:
            if self.port.python_quiet() and self.teach("quiet") and self.port.python_quiet():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.001)
        return True

    def wake(self) -> None:
        self._queue.put(("wake",))

    def call(self, fn: Callable[[HostContext], T], timeout: float | None = 30.0) -> T:
        """Run ``fn(ctx)`` on the host thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            self._room(0)
            return fn(HostContext(self))
        if not self.running:
            raise HostError(f"host '{self.name}' is not running")
        fut: Future[T] = Future()
        self._queue.put(("call", fn, fut))
        try:
            return fut.result(timeout)
        except TimeoutError:
            raise Timeout(f"host '{self.name}' did not answer within {timeout}s") from None

    @property
    def paused(self) -> bool:
        """True while teaching mode holds this host (``Teach.pause``)."""
        return self._paused

    @property
    def seeded(self) -> bool:
        """True while teaching mode runs this host from a seed (``Teach.seed``)."""
        return self._seeded

    def teach(self, op: str, n: int | None = 1) -> Any:
        """Teaching mode on this host (any thread; runs on the host thread, scheduler/teach.lua):
        ``pause`` (True if it was running), ``resume`` (how many held events there were), ``step``
        (the lines of up to ``n`` events, and whether the last one told a Python watcher of an exit),
        ``seed`` (``n`` an integer, or None to drop the seed), ``status`` (paused, held lines, steps,
        seeded, the next event's line), ``quiet`` (seeded: nothing to do before real time moves),
        ``log`` (the last ``n`` event lines)."""

        def run(ctx: HostContext) -> Any:
            s = self._s
            now = self.port.clock.monotonic()
            if op == "pause":
                was = bool(s.teach_pause())
                self._paused = True
                return was
            if op == "resume":
                self._paused = False
                return int(s.teach_resume(now))
            if op == "step":
                lines, touched = _pair(s.teach_step(n))
                if lines is None:
                    raise HostError(f"host '{self.name}' is not paused: %runtime pause first ({_s(touched)})")
                return [_s(v) for v in lines.values()], bool(touched)
            if op == "seed":
                s.teach_seed(False if n is None else n, now)
                self._seeded = n is not None
                self._py_wait = 0.0
                return None
            if op == "status":
                paused, held, steps, seeded, nxt = s.teach_status()
                return (bool(paused), [_s(v) for v in held.values()], int(steps), bool(seeded),
                        None if nxt is None else _s(nxt))
            if op == "quiet":
                return bool(s.teach_quiet(now)) and not self._py_wait
            if op == "log":
                return [_s(v) for v in s.teach_log(n or 0).values()]
            raise ValueError(f"teach: unknown operation {op!r}")

        return self.call(run)

    def submit(self, fn: Callable[[HostContext], T]) -> Future[T]:
        """Like :meth:`call` without waiting: the future completes on the host thread."""
        fut: Future[T] = Future()
        self._queue.put(("call", fn, fut))
        return fut

    def stop(self, grace: float = 5.0, timeout: float = 30.0) -> None:
        """Cancel every process, wait up to ``grace`` seconds, terminate the rest, end the thread."""
        if self._thread is None or self._stopped.is_set():
            return
        self._queue.put(("stop", grace))
        self._thread.join(timeout)

    # ---------------------------------------------------------------- host thread
    def _callbacks(self) -> dict[bytes, Any]:
        port = self.port
        clock = port.clock
        lua = self._lua

        def print_(pid: bytes, text: bytes) -> None:
            port.output(_s(pid), _s(text))

        def log(pid: bytes, level: bytes, msg: bytes, fields: Any) -> None:
            port.log(_s(pid), _s(level), _s(msg), from_lua(fields) if fields is not None else None)

        def lookup(name: bytes) -> bytes | None:
            pid = port.lookup_name(_s(name))
            return _b(pid) if pid is not None else None

        def register_name(name: bytes, pid: bytes, global_: Any = None) -> tuple[bool | None, bytes | None]:
            err = port.register_name(_s(name), _s(pid), bool(global_))
            return (True, None) if err is None else (None, _b(err))

        def unregister_name(name: bytes) -> tuple[bool | None, bytes | None]:
            ok = port.unregister_name(_s(name))
            return (True, None) if ok else (None, _b(f"no process is registered as '{_s(name)}'"))

        def release_names(pid: bytes) -> None:
            port.release_names(_s(pid))

        def get_entry(entry_id: bytes) -> tuple[Any, bytes | None]:
            try:
                return port.entry_for_lua(lua, _s(entry_id)), None
            except Exception as exc:  # refused entry: an error value for Lua, not a crash
                return None, _b(str(exc))

        def spawn_remote(host: bytes, entry_id: bytes, opts: Any, args: Any) -> tuple[Any, Any]:
            try:
                raw = from_lua(args) if args is not None else {}   # table.pack(...): 1..n and n
                n = int(raw.pop("n", 0))
                arglist = [raw.get(i) for i in range(1, n + 1)]
                pid = port.spawn_elsewhere(
                    _s(entry_id), _s(host), arglist, from_lua(opts) if opts is not None else None
                )
                return _b(pid), None
            except Exception as exc:
                return None, _b(f"spawn: {exc}")

        def remote(op: bytes, dest: bytes, a: Any = None, b: Any = None, c: Any = None) -> tuple[Any, Any]:
            try:
                port.route(_s(op), _s(dest), from_lua(a), from_lua(b), from_lua(c))
                return True, None
            except Exception as exc:
                return None, _b(f"{_s(op)}: {exc}")

        def sends(node: bytes, host: bytes, blob: bytes, count: int) -> None:
            # a batch of messages to another node (scheduler/xnode.lua): never raises into Lua
            try:
                port.send_blob(_s(node), _s(host), blob, int(count))
            except Exception:
                port.fault(self.name, f"messages to node {_s(node)}:\n{traceback.format_exc()}")

        def registry(op: bytes, arg: Any) -> tuple[Any, bytes | None]:
            try:
                return to_lua(lua, port.registry_call(_s(op), from_lua(arg))), None
            except Exception as exc:  # a refusal is an error value for Lua, not a crash
                return None, _b(f"registry.{_s(op)}: {exc}")

        name = self.name

        def security(op: bytes, *args: Any) -> Any:
            # identities and checks (scheduler/security.lua); strings back as bytes, tables as tables
            try:
                out = port.security_call(name, _s(op), [from_lua(a) for a in args])
            except Exception as exc:   # never raise into Lua: a refusal is a value
                return None, _b(f"security: {exc}")
            return tuple(_b(v) if isinstance(v, str) else to_lua(lua, v) if isinstance(v, (list, dict)) else v
                         for v in out)

        def supervisor(op: bytes, caller: bytes, arg: Any) -> tuple[Any, bytes | None]:
            try:
                return to_lua(lua, port.supervisor_call(_s(op), _s(caller), from_lua(arg))), None
            except Exception as exc:  # a refused spec is an error value for Lua, not a crash
                return None, _b(f"supervisor.{_s(op)}: {exc}")

        def agents(op: bytes, pid: bytes, ctx: Any, *args: Any) -> tuple[Any, bytes | None]:
            # llm.generate / structured_output / agent.run: the work runs on the agents' pool and
            # answers through S.reply; this returns its token at once (never raises into Lua)
            try:
                out = port.agents_call(_s(op), _s(pid), int(ctx), [from_lua(a) for a in args])
                return (_b(out) if isinstance(out, str) else out), None
            except Exception as exc:
                return None, _b(f"{_s(op)}: {exc}")

        def exited(pid: bytes, reason: bytes, error: Any) -> None:
            port.process_exited(_s(pid), _s(reason), _s(error) if error is not None else None)

        pending: list[Any] = []

        def trace(lost: int, *values: Any) -> None:
            # records of spawns and sends, flat and a few at a time (see scheduler/tracing.lua); a
            # call without values ends a flush. Never raises into Lua.
            if values:
                pending.extend(values)
                return
            try:
                port.traced(lost, pending)
            except Exception:
                port.fault(self.name, f"event bus:\n{traceback.format_exc()}")
            finally:
                pending.clear()

        room = self._room

        def roomy(fn: Callable[..., Any]) -> Callable[..., Any]:
            # lupa pushes a callback's results outside any protected call: make room first
            def call(*args: Any) -> Any:
                room(0)
                return fn(*args)

            return call

        return {
            b"monotonic": clock.monotonic,   # numbers: pushing them allocates nothing
            b"now_ns": clock.now_ns,
            b"print": print_,
            b"log": log,
            b"lookup": roomy(lookup),
            b"register_name": roomy(register_name),
            b"unregister_name": roomy(unregister_name),
            b"release_names": release_names,
            b"get_entry": roomy(get_entry),
            b"spawn_remote": roomy(spawn_remote),
            b"remote": roomy(remote),
            b"sends": sends,
            b"exited": exited,
            b"trace": trace,
            b"headroom": lambda: room(0),
            b"registry": roomy(registry),
            b"supervisor": roomy(supervisor),
            b"agents": roomy(agents),
            b"security": roomy(security),
            b"cell_begin": port.cell_begin,
            b"cell_done": port.cell_done,
            b"shell_poll": port.shell_poll,
            b"wf": roomy(port.workflow_callback(self.name, lua, self._room)),   # durable workflows
        }

    def _room(self, extra: int) -> None:
        """Raise the Lua allocation cap so that lupa can push ``extra`` bytes and some more.

        lupa pushes arguments and results outside any protected call: an allocation failing there
        aborts the whole Python process ("PANIC: unprotected error"). The heap limit applies to
        processes; Python's own pushes get headroom above it, taken back before the next run step.
        Host thread only.
        """
        lua = self._lua
        need = lua.get_memory_used() + extra + HEADROOM
        if need > self._cap:
            lua.set_max_memory(need)
            self._cap = need

    def _tighten(self) -> None:
        if self._cap != self.options.heap_limit:
            self._lua.set_max_memory(self.options.heap_limit)
            self._cap = self.options.heap_limit

    def _boot(self) -> None:
        lua = lua54.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            encoding=None,
            attribute_filter=_deny_attributes,
            max_memory=self.options.heap_limit,
        )
        self._lua = lua
        # lupa keeps a `python` module even without eval/builtins: no route to Python may remain
        lua.execute(b"python = nil; package.loaded.python = nil")
        config = lua.table_from(
            {
                b"host": _b(self.name),
                b"pid_prefix": _b(self._pid_prefix),
                b"instruction_budget": self.options.instruction_budget,
                b"cancel_grace": float(self.options.cancel_grace),
                b"heap_limit": self.options.heap_limit,
            }
        )
        py = lua.table_from(self._callbacks())
        self._s = load_runtime(lua, py, config)   # the scheduler's modules, then workflow.lua
        peers = self.port.cluster_peers()   # later changes come as "peers" items
        if peers:
            self._s.xnode_peers(lua.table_from([_b(n) for n in peers]))

    def _main(self) -> None:
        try:
            self._boot()
        except BaseException as exc:  # reported to start()'s caller
            self._start_error = exc
            self._ready.set()
            self._stopped.set()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self._stopped.set()

    def _loop(self) -> None:
        s_run = self._s.run
        clock = self.port.clock
        q = self._queue
        stop_at: float | None = None
        while True:
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                grace = self._handle(item)
                if grace is not None and stop_at is None:
                    stop_at = self._begin_stop(grace)
            self._tighten()
            try:
                deadline: float
                if self._paused:
                    more, deadline = False, -1.0
                elif self._seeded:
                    more, deadline = self._seeded_run(clock.monotonic())
                else:
                    more, deadline = s_run(clock.monotonic(), RUN_BATCH)
            except lua54.LuaMemoryError:
                # the heap limit hit the scheduler itself between two processes: free and go on
                self.crashes += 1
                self._lua.gccollect()
                self._room(0)
                continue
            except lua54.LuaError as exc:
                # a bug of the scheduler itself: report it (once per message) and keep the host alive
                self.crashes += 1
                message = f"scheduler error: {exc}"
                if message not in self._reported:
                    self._reported.add(message)
                    self.port.fault(self.name, message)
                continue
            if stop_at is not None:
                if self._s.count() == 0:
                    return
                if time.monotonic() >= stop_at and not more:
                    self._s.terminate_all(b"terminated: host stopping")
                    return
            if more:
                continue
            timeout: float | None = None
            if deadline >= 0:
                timeout = max(0.0, deadline - clock.monotonic())
                if clock.fake:
                    timeout = None if timeout > 0 else 0.0
            if self._py_wait:   # seeded: look again soon whether the supervision has acted
                timeout = _PY_POLL if timeout is None else min(timeout, _PY_POLL)
            if stop_at is not None:
                remaining = max(0.0, stop_at - time.monotonic())
                timeout = remaining if timeout is None else min(timeout, remaining)
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                continue
            grace = self._handle(item)
            if grace is not None and stop_at is None:
                stop_at = self._begin_stop(grace)

    def _seeded_run(self, now: float) -> tuple[bool, float]:
        """Seeded and running (host thread): the next events in the seeded order (S.teach_run). After
        an event that told a Python watcher (the supervision) of an exit, the next events wait until
        it has acted (its spawns and signals then come first, in its order), at most _PY_WAIT_MAX s;
        meanwhile the host still serves its queue."""
        if self._py_wait:
            if not self.port.python_quiet() and time.monotonic() - self._py_wait < _PY_WAIT_MAX:
                return False, -1
            self._py_wait = 0.0
        more, deadline, touched = self._s.teach_run(now, _SEEDED_BATCH)
        if touched:
            self._py_wait = time.monotonic()
            return False, -1
        return bool(more), float(deadline)

    def _begin_stop(self, grace: float) -> float:
        # the grace period of a stop is real time, also under a FakeClock: a stop must end
        self._stopping = True
        if self._paused or self._seeded:   # a held host stops like a running one: what was held happens first
            now = self.port.clock.monotonic()
            self._s.teach_seed(False, now)
            self._paused = self._seeded = False
            self._py_wait = 0.0
            self._s.teach_resume(now)
        self._s.cancel_all(b"node stopping")
        return time.monotonic() + grace

    def _handle(self, item: tuple[Any, ...]) -> float | None:
        """Apply one queued item on the host thread. Returns a grace period for a stop request."""
        op = item[0]
        s = self._s
        lua = self._lua
        try:
            self._room(_size(item[4]) if op == "deliver" else _size(item[1]) if op == "deliver_many"
                       else 4 * len(item[1]) if op == "deliver_blob"
                       else _size(item[2:]) if op in ("event", "spawn") else 0)
            if op == "deliver":
                _, dest, sender, topic, payload = item
                if not s.deliver(_b(dest), _b(sender) if sender else None, _b(topic), to_lua(lua, payload)):
                    self.port.dropped(dest)
            elif op == "deliver_many":   # messages that arrived together from another node, in order
                deliver = s.deliver
                for dest, sender, topic, payload in item[1]:
                    if not deliver(_b(dest), _b(sender) if sender else None, _b(topic), to_lua(lua, payload)):
                        self.port.dropped(dest)
            elif op == "deliver_blob":   # a batch another node's host encoded (scheduler/xnode.lua)
                gone = s.deliver_blob(item[1])
                if gone is not None:
                    for dest in gone.values():
                        self.port.dropped(_s(dest))
            elif op == "peers":   # the other nodes up changed (scheduler/xnode.lua batches to those)
                s.xnode_peers(lua.table_from([_b(n) for n in item[1]]))
            elif op == "event":
                _, dest, ev = item
                s.event(_b(dest), to_lua(lua, ev))
            elif op == "control":
                _, cop, target, sender, a, b = item
                s.control(_b(cop), _b(target), _b(sender) if sender else None, to_lua(lua, a), to_lua(lua, b))
            elif op == "spawn":
                _, pid, entry_id, opts, args, fut = item
                self._spawn(pid, entry_id, opts, args, fut)
            elif op == "call":
                _, fn, fut = item
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(HostContext(self)))
                    except BaseException as exc:
                        fut.set_exception(exc)
            elif op == "registry_event":
                _, dest, sub_id, ev = item
                s.registry_event(_b(dest), sub_id, to_lua(lua, ev))
            elif op == "reply":
                _, dest, token, value = item
                s.reply(_b(dest), token, to_lua(lua, value))
            elif op == "invalidate":
                for entry_id in item[1]:
                    s.invalidate(_b(entry_id))
            elif op == "trace":
                _, on, pids = item
                self._room(64 * len(pids) if pids else 0)
                s.trace(bool(on), to_lua(lua, [_b(p) for p in sorted(pids)]) if on and pids is not None else None)
                self._tracing = bool(on)
            elif op == "security":
                _, strict, notebook, generation = item
                s.security_set(bool(strict), notebook, generation)
            elif op == "stop":
                return float(item[1])
        except lua54.LuaMemoryError:
            self._lua.gccollect()
            self.port.fault(self.name, f"out of memory while handling '{op}'")
        except Exception:
            self.port.fault(self.name, f"error while handling '{op}':\n{traceback.format_exc()}")
        return None

    def _spawn(self, pid: str | None, entry_id: str, opts: Any, args: list[Any], fut: Future[str] | None) -> None:
        lua = self._lua
        lopts = to_lua(lua, opts) if opts else None
        largs = to_lua(lua, list(args))
        res, err = _pair(self._s.spawn(_b(pid) if pid else None, _b(entry_id), lopts, largs, len(args)))
        if self._tracing and fut is not None:
            self._s.trace_flush()   # the spawn is published before its PID reaches the caller
        if res is not None:
            if fut is not None:
                fut.set_result(_s(res))
            return
        message = _s(err)
        if fut is not None:
            fut.set_exception(ProcessError(message) if "compile" not in message else LuaError(message))
            return
        # an asynchronous spawn (from another host) failed: tell whoever watches or links
        assert pid is not None
        self.port.release_names(pid)
        self.port.publish_exit(pid, "error", message)   # its spawn was published; it ends here
        opts = opts or {}
        result = {"error": message}
        if opts.get("monitor"):
            kind = "exec" if opts.get("monitor_kind") == "exec" else "monitor"
            ev: dict[str, Any] = {"kind": "pid.exit", "from": pid, "result": result, "reason": "error"}
            if kind == "exec":
                ev["exec"] = True
            self.port.route("event", opts["monitor"], ev, None, None)
        if opts.get("link"):
            self.port.route("link_down", opts["link"], pid, result, "error")
