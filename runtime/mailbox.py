"""Python-side processes: a :class:`Mailbox` has a PID that Lua processes can send to and monitor from.

Threads: hosts put messages and events into a mailbox from their own threads; any thread may receive.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ProcessError, Timeout

__all__ = ["Event", "Mailbox", "MailboxOwner", "Message"]


class MailboxOwner(Protocol):
    """What a mailbox needs from the node that made it (the node implements it). Any thread."""

    def send(self, dest: str, topic: str, payload: Any = None, *, sender: str | None = None) -> None: ...

    def spawn(self, entry_id: str, *args: Any, host: str | None = None, **kw: Any) -> str: ...

    def resolve(self, dest: str) -> str: ...

    def monitor_from(self, watcher: str, pid: str, kind: str = "monitor") -> None:
        """``watcher`` gets the EXIT event of ``pid``."""
        ...

    def demonitor_from(self, watcher: str, pid: str) -> None: ...

    def mailbox_closed(self, pid: str) -> None:
        """The mailbox ``pid`` closed: its PID becomes unknown and its names are released."""
        ...


@dataclass(frozen=True)
class Message:
    """A message received by a Python mailbox."""

    topic: str
    sender: str | None   #: the sender's PID (None when sent from Python without one)
    payload: Any         #: plain data, copied


@dataclass(frozen=True)
class Event:
    """An event received by a Python mailbox: ``pid.exit`` for a monitored process, ``pid.link.down``."""

    kind: str
    sender: str | None                                  #: the PID the event is about
    result: dict[str, Any] = field(default_factory=dict)  #: ``{"value": ...}`` or ``{"error": "..."}``
    reason: str | None = None                           #: normal, error, terminated, cancelled, ...


class Mailbox:
    """A process living in Python: create with :meth:`Node.mailbox`, close when done (or ``with``)."""

    def __init__(self, node: MailboxOwner, pid: str) -> None:
        self.node = node
        self.pid = pid
        self._messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._held: list[Event] = []
        self._lock = threading.Lock()
        self.closed = False

    def __repr__(self) -> str:
        return f"<Mailbox {self.pid}>"

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # hosts call these, on their threads
    def _put(self, msg: Message) -> None:
        if not self.closed:
            self._messages.put(msg)

    def _put_event(self, ev: Event) -> None:
        if not self.closed:
            self._events.put(ev)

    # any thread
    def send(self, dest: str, topic: str, payload: Any = None) -> None:
        """Send from this mailbox's PID (the receiver's ``msg:from()``)."""
        self.node.send(dest, topic, payload, sender=self.pid)

    def receive(self, timeout: float | None = None) -> Message:
        """The next message; :class:`Timeout` if none arrives within ``timeout`` seconds."""
        try:
            return self._messages.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"no message for {self.pid} within {timeout}s") from None

    def receive_nowait(self) -> Message | None:
        try:
            return self._messages.get_nowait()
        except queue.Empty:
            return None

    def receive_event(self, timeout: float | None = None) -> Event:
        """The next event (EXIT of a monitored process, LINK_DOWN); :class:`Timeout` otherwise."""
        with self._lock:
            if self._held:
                return self._held.pop(0)
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"no event for {self.pid} within {timeout}s") from None

    def wait_exit(self, pid: str, timeout: float | None = None) -> Event:
        """Wait for the EXIT event of ``pid`` (which this mailbox monitors); other events are kept."""
        with self._lock:
            for i, ev in enumerate(self._held):
                if ev.sender == pid and ev.kind == "pid.exit":
                    return self._held.pop(i)
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ev = self._events.get(timeout=remaining)
            except queue.Empty:
                raise Timeout(f"process {pid} did not exit within {timeout}s") from None
            if ev.sender == pid and ev.kind == "pid.exit":
                return ev
            with self._lock:
                self._held.append(ev)

    def spawn(self, entry_id: str, *args: Any, host: str | None = None, **kw: Any) -> str:
        return self.node.spawn(entry_id, *args, host=host, **kw)

    def spawn_monitored(self, entry_id: str, *args: Any, host: str | None = None, **kw: Any) -> str:
        """Spawn and monitor atomically: this mailbox gets the EXIT event."""
        return self.node.spawn(entry_id, *args, host=host, monitor=self, **kw)

    def spawn_linked(self, entry_id: str, *args: Any, host: str | None = None, **kw: Any) -> str:
        """Spawn linked: an abnormal end arrives here as a ``pid.link.down`` event."""
        return self.node.spawn(entry_id, *args, host=host, link=self, **kw)

    def monitor(self, pid: str) -> None:
        """Receive an EXIT event when ``pid`` ends (``reason='noproc'`` if it already has)."""
        if self.closed:
            raise ProcessError(f"mailbox {self.pid} is closed")
        self.node.monitor_from(self.pid, self.node.resolve(pid))

    def unmonitor(self, pid: str) -> None:
        self.node.demonitor_from(self.pid, self.node.resolve(pid))

    def close(self) -> None:
        """Stop receiving; the PID becomes unknown and its names are released."""
        if not self.closed:
            self.closed = True
            self.node.mailbox_closed(self.pid)
