"""The node's event bus: spawns, exits, sends, supervision-tree changes and registry commits.

Live views and traces subscribe (``node.events.subscribe(...)``) and drain their own bounded buffer from
any thread. The runtime never waits for a subscriber: an event that finds a subscriber's buffer full is
dropped and counted on that subscription (:attr:`Subscription.dropped`).

Threads: :meth:`EventBus.publish` is called from hosts (exits; spawns and sends drained from the Lua
side once per run batch), the supervision thread (tree changes), the committing thread (registry) and
any thread that sends from Python. Every method here is thread-safe. Publication is serialized by one
lock, so ``seq`` is also the order in which events enter every buffer.

What it costs (docs/architecture.md, "Events"): with no subscriber, nothing but a set membership test at
each instrumented point; spawns and sends are recorded inside Lua only while some subscription wants
them (the hosts' trace switch), and exits, tree changes and commits are published only while some
subscription wants their kind.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["KINDS", "EventBus", "RuntimeEvent", "Subscription", "payload_size", "preview"]

#: every kind of event, in the order the docs list them
KINDS: frozenset[str] = frozenset({"spawn", "exit", "send", "tree", "registry", "security.denied", "teach.step"})
#: kinds recorded inside Lua, which need the hosts' trace switch on
TRACED: frozenset[str] = frozenset({"spawn", "send", "teach.step"})
PREVIEW_CHARS = 80        #: a preview is at most this long (Lua's side cuts the same way)
SIZE_ITEMS = 10_000       #: table entries counted by :func:`payload_size` before it stops (approximate)


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    """One thing that happened in the node, in publication order (``seq``)."""

    seq: int                    #: global order of publication (node-wide, increasing)
    kind: str                   #: spawn | exit | send | tree | registry | security.denied | teach.step
    time: float                 #: unix seconds (node.clock.now_ns()) when it was published
    pid: str | None = None      #: spawn/exit: the process; send: the receiver; tree: the tree node's PID
    peer: str | None = None     #: send: the sender (None from Python without a mailbox); spawn: the parent
    topic: str | None = None    #: send: the topic; teach.step: the step's line (``3 deliver ping A -> B``)
    size: int | None = None     #: send: approximate payload size in bytes (see :func:`payload_size`)
    preview: str | None = None  #: send: the payload as short Lua-like text (at most 80 characters)
    entry: str | None = None    #: spawn: the entry ID; tree: the tree node's id
    host: str | None = None     #: spawn/exit/send: the host of ``pid``; teach.step: the stepped host
    reason: str | None = None   #: exit: the exit reason; tree: the node's new status; registry: "v<N>";
    #: security.denied: "denied by policy <id>" or "no policy allows it"
    error: str | None = None    #: exit: first line of the error; tree: the last exit text
    name: str | None = None     #: spawn: a registered name given at spawn
    change: str | None = None   #: tree: what changed (added | status | restart | removed)
    actor: str | None = None    #: security.denied: the actor refused (``pid``: its process, if any)
    action: str | None = None   #: security.denied: the action (``process.send``, ``registry.apply``...)
    resource: str | None = None  #: security.denied: the resource
    policy: str | None = None   #: security.denied: the deny that refused it (None: no policy allowed it)


class Subscription:
    """The bounded buffer of one subscriber. Create with :meth:`EventBus.subscribe`; close when done.

    Any thread may drain or wait; the bus fills the buffer from the publishing threads and never waits:
    when ``maxlen`` events are buffered, a new one is dropped and counted in :attr:`dropped`.
    """

    def __init__(self, bus: EventBus, kinds: frozenset[str], pids: frozenset[str] | None, maxlen: int) -> None:
        self.kinds = kinds
        self.pids = pids
        self.maxlen = maxlen
        self.dropped = 0            #: events lost because the buffer was full (or recorded past Lua's cap)
        self.received = 0           #: events that entered the buffer
        self.closed = False
        self._bus: EventBus | None = bus
        # only the publisher (serialized by the bus lock) appends and only drains pop: no lock needed
        # around the deque; the condition is for wait(), and is touched only when someone waits
        self._buf: collections.deque[RuntimeEvent] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._buf)} buffered"
        return f"<Subscription {sorted(self.kinds)} {state}, {self.dropped} dropped>"

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Events buffered now."""
        return len(self._buf)

    def wants(self, ev: RuntimeEvent) -> bool:
        """Whether ``ev`` passes this subscription's filters (kind, and pid or peer)."""
        if ev.kind not in self.kinds:
            return False
        pids = self.pids
        return pids is None or ev.pid in pids or ev.peer in pids

    def drain(self, limit: int | None = None) -> list[RuntimeEvent]:
        """Take what is buffered (at most ``limit`` events), oldest first; never waits."""
        buf = self._buf
        out: list[RuntimeEvent] = []
        take = out.append
        pop = buf.popleft
        n = len(buf) if limit is None else min(limit, len(buf))
        for _ in range(n):
            take(pop())
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is buffered (True), the subscription is closed or ``timeout`` passes
        (False unless events are buffered)."""
        if self._buf:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1   # before the check: a publisher that appends after it will notify
            try:
                while not self._buf and not self.closed:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        return bool(self._buf)

    def __iter__(self) -> Iterator[RuntimeEvent]:
        """Yield events as they come until the subscription is closed (blocks between events)."""
        while True:
            if not self.wait(0.5):
                if self.closed:
                    return
                continue
            yield from self.drain()

    def close(self) -> None:
        """Unsubscribe (idempotent): the bus drops its reference; what is buffered can still be drained."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus._remove(self)
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # the bus calls this under its lock
    def _offer(self, ev: RuntimeEvent) -> bool:
        if len(self._buf) >= self.maxlen:
            self.dropped += 1
            return False
        self._buf.append(ev)
        self.received += 1
        if self._waiting:
            with self._cond:
                self._cond.notify_all()
        return True


class EventBus:
    """Publishes :class:`RuntimeEvent` records to subscriptions (``node.events``). Thread-safe.

    ``now_ns`` gives the time stamped on events (the node's clock); ``on_change()`` is called (outside
    the lock, on the thread that subscribed or closed) whenever the set of subscriptions changes, so the
    node can switch the hosts' tracing on or off.
    """

    def __init__(self, now_ns: Callable[[], int] = time.time_ns,
                 on_change: Callable[[], None] | None = None) -> None:
        self._now_ns = now_ns
        self._on_change = on_change
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        self._seq = 0
        #: kinds at least one subscription wants (read without the lock: a stale answer only delays)
        self.wanted: frozenset[str] = frozenset()
        self.published = 0   #: events published while someone subscribed
        self.dropped = 0     #: events lost, over all subscriptions (full buffers, Lua's per-batch cap)

    def __repr__(self) -> str:
        return f"<EventBus {len(self._subs)} subscribers, {self.published} published, {self.dropped} dropped>"

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, kinds: Iterable[str] | None = ("spawn", "exit", "send", "tree", "registry"),
                  pids: Iterable[str] | None = None, maxlen: int = 10_000) -> Subscription:
        """A new subscription to ``kinds`` (None: all), optionally only events whose ``pid`` or ``peer``
        is in ``pids``, buffering at most ``maxlen`` events. Raises ValueError for an unknown kind.

        Close it when done: until then the bus keeps it (and, if it wants spawns or sends, every host
        keeps recording them in Lua).
        """
        if kinds is None:
            kinds = KINDS
        elif isinstance(kinds, str):
            kinds = (kinds,)
        ks = frozenset(kinds)
        unknown = ks - KINDS
        if unknown:
            raise ValueError(f"unknown event kind(s) {', '.join(sorted(unknown))} "
                             f"(kinds: spawn, exit, send, tree, registry, security.denied, teach.step)")
        if isinstance(pids, str):
            pids = (pids,)
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        sub = Subscription(self, ks, frozenset(pids) if pids is not None else None, int(maxlen))
        with self._lock:
            self._subs = (*self._subs, sub)
            self._recompute()
        self._changed()
        return sub

    def trace_filter(self) -> tuple[bool, frozenset[str] | None]:
        """What the hosts must record in Lua: (on, pids); pids None means every process."""
        with self._lock:
            subs = [s for s in self._subs if s.kinds & TRACED]
        if not subs:
            return False, None
        if any(s.pids is None for s in subs):
            return True, None
        return True, frozenset().union(*(s.pids for s in subs if s.pids is not None))

    def publish(self, ev: RuntimeEvent) -> None:
        """Hand ``ev`` to every subscription that wants it (its ``seq`` is set to the next number).

        Any thread; O(subscribers); never waits for a subscriber.
        """
        if not self._subs:
            return
        with self._lock:
            self._seq += 1
            if ev.seq != self._seq:
                ev = replace(ev, seq=self._seq)
            self._deliver(ev)

    def emit(self, kind: str, **fields: Any) -> None:
        """Build and publish one event stamped with the next ``seq`` and the clock's time."""
        if not self._subs:
            return
        t = self._now_ns() / 1e9
        with self._lock:
            self._seq += 1
            self._deliver(RuntimeEvent(self._seq, kind, t, **fields))

    def emit_many(self, rows: Iterable[tuple[Any, ...]], lost: int = 0, lost_kinds: frozenset[str] = TRACED) -> None:
        """Publish several events in a row (one lock). Each row is the fields after ``seq`` and ``time``
        in order: ``(kind, pid, peer, topic, size, preview, entry, host, ...)``. ``lost`` events that
        never reached Python (the Lua side's cap) are counted as dropped on the subscriptions that want
        ``lost_kinds``."""
        if not self._subs:
            return
        t = self._now_ns() / 1e9
        with self._lock:
            for row in rows:
                self._seq += 1
                self._deliver(RuntimeEvent(self._seq, row[0], t, *row[1:]))
            if lost:
                self.dropped += lost
                for sub in self._subs:
                    if sub.kinds & lost_kinds:
                        sub.dropped += lost

    # ---------------------------------------------------------------- internals (under the lock)
    def _deliver(self, ev: RuntimeEvent) -> None:
        self.published += 1
        kind, pid, peer = ev.kind, ev.pid, ev.peer
        for sub in self._subs:
            if kind in sub.kinds:
                pids = sub.pids
                if (pids is None or pid in pids or peer in pids) and not sub._offer(ev):
                    self.dropped += 1

    def _recompute(self) -> None:
        wanted: set[str] = set()
        for s in self._subs:
            wanted |= s.kinds
        self.wanted = frozenset(wanted)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._recompute()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


# ------------------------------------------------------------------------------ payload text and size
def _quote(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 32 or o == 127:
            out.append(f"\\{o}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(v: int | float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan" if math.copysign(1.0, v) > 0 else "-nan"
    s = f"{v:.14g}"
    if all(c in "-0123456789" for c in s):
        s += ".0"   # Lua 5.4 writes floats with integral values as 1.0
    return s


def _key(k: Any) -> str:
    if isinstance(k, str) and k.isidentifier() and k.isascii():
        return k
    if isinstance(k, str):
        return f"[{_quote(k)}]"
    if isinstance(k, bytes):
        return f"[{_quote(k.decode('utf-8', 'replace'))}]"
    return f"[{_number(k)}]"


def _order(k: Any) -> tuple[int, Any]:
    return (0, k) if isinstance(k, (int, float)) else (1, str(k))


class _Full(Exception):
    pass


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``value`` as short Lua-like text (``{a = 1, b = "x"}``), cut to ``limit`` characters.

    The cost is bounded by ``limit``, not by the size of ``value``. Lists are Lua sequences; other keys
    come after them, numbers before strings, sorted when a table has at most 16 of them (as the Lua
    side writes previews of its own sends).
    """
    parts: list[str] = []
    used = 0

    def put(s: str) -> None:
        nonlocal used
        parts.append(s)
        used += len(s)
        if used > limit:
            raise _Full

    def walk(v: Any) -> None:
        if isinstance(v, str):
            put(_quote(v[: limit - used + 1]))
        elif isinstance(v, bytes):
            put(_quote(v[: limit - used + 1].decode("utf-8", "replace")))
        elif v is None:
            put("nil")
        elif isinstance(v, bool):
            put("true" if v else "false")
        elif isinstance(v, (int, float)):
            put(_number(v))
        elif isinstance(v, (list, tuple)):
            put("{")
            for i, x in enumerate(v):
                if i:
                    put(", ")
                walk(x)
            put("}")
        elif isinstance(v, dict):
            put("{")
            keys = list(v) if len(v) > 16 else sorted(v, key=_order)
            for i, k in enumerate(keys):
                if i:
                    put(", ")
                put(_key(k) + " = ")
                walk(v[k])
            put("}")
        else:
            put(f"<{type(v).__name__}>")

    try:
        walk(value)
    except _Full:
        return "".join(parts)[: limit - 3] + "..."
    return "".join(parts)


def payload_size(value: Any) -> int:
    """Approximate bytes of a payload: string lengths (UTF-8) + 8 per number (keys too) + 1 per boolean.

    Counts at most :data:`SIZE_ITEMS` table entries (a lower bound beyond that), as the Lua side does.
    """
    budget = SIZE_ITEMS

    def size(v: Any) -> int:
        nonlocal budget
        if isinstance(v, str):
            return len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
        if isinstance(v, bytes):
            return len(v)
        if isinstance(v, bool):
            return 1
        if isinstance(v, (int, float)):
            return 8
        total = 0
        if isinstance(v, (list, tuple)):
            for x in v:
                if budget <= 0:
                    break
                budget -= 1
                total += 8 + size(x)
        elif isinstance(v, dict):
            for k, x in v.items():
                if budget <= 0:
                    break
                budget -= 1
                total += size(k) + size(x)
        return total

    return size(value)
