"""The node/host boundary: what a host needs from the node that owns it, as one typed interface.

A :class:`~.host.Host` is one thread with one Lua state. Everything else a process can reach (names,
the registry, Python mailboxes, other hosts, supervision, durable workflows, the shell, the event bus)
belongs to the node. The host is given a :class:`HostPort` when it is created and calls only that; it
never sees :class:`~.node.Node`. ``node.py`` implements the port (the node's ``_Parts`` adapter), so the
import arrows point one way: node -> host -> host_port (see "Layers" in docs/architecture.md).

Threads: every method here is called on the calling host's own thread, between two run steps or from
inside a Lua callback. A method that raises is turned into ``nil, err`` for Lua by the host (the message
is the exception's text), except where a method says it never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .clock import Clock

__all__ = ["HostPort"]


class HostPort(Protocol):
    """What a host calls on its node. PIDs, names, entry IDs and topics are ``str`` (already decoded)."""

    @property
    def clock(self) -> Clock:
        """The node's clock: timers, ``time.now`` and the deadlines of the run loop follow it."""
        ...

    # -- output
    def output(self, pid: str, text: str) -> None:
        """A line a process printed (``print``): kept for ``node.logs`` and shown."""
        ...

    def log(self, pid: str, level: str, msg: str, fields: Any) -> None:
        """A ``logger`` call of a process (``fields``: plain data or None)."""
        ...

    # -- names (one table for the whole node)
    def lookup_name(self, name: str) -> str | None:
        """The PID registered as ``name``, or None."""
        ...

    def register_name(self, name: str, pid: str, global_: bool = False) -> str | None:
        """Register ``name`` for ``pid`` (``global_``: in the whole cluster); None when done, else the
        refusal to give Lua."""
        ...

    def unregister_name(self, name: str) -> bool:
        """Drop ``name``; False when no process held it."""
        ...

    def release_names(self, pid: str) -> None:
        """Drop every name ``pid`` holds (it ended, or never started)."""
        ...

    # -- entries, processes elsewhere, the registry and supervision
    def entry_for_lua(self, lua: Any, entry_id: str) -> Any:
        """The Lua entry ``entry_id`` as the scheduler's loader wants it (a Lua table of ``lua``)."""
        ...

    def spawn_elsewhere(self, entry_id: str, host: str, args: list[Any], opts: dict[str, Any] | None) -> str:
        """A spawn on another host (or a durable workflow): the new PID, allocated at once."""
        ...

    def route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Carry an operation (send, event, monitor, link, cancel, ...) to whoever owns ``dest``."""
        ...

    def send_blob(self, node: str, host: str, blob: bytes, count: int) -> None:
        """A batch of ``count`` messages to processes of host ``host`` on the other node ``node``, already
        wire-encoded by the host (scheduler/xnode.lua): carried as it is. Never raises: a batch for a node
        that has gone down meanwhile is dropped (and counted)."""
        ...

    def cluster_peers(self) -> list[str]:
        """The other nodes of this node's cluster that are up (empty outside a cluster)."""
        ...

    def registry_call(self, op: str, arg: Any) -> Any:
        """A call of the Lua ``registry`` module: plain data back."""
        ...

    def security_call(self, host: str, op: str, args: list[Any]) -> tuple[Any, ...]:
        """A call of scheduler/security.lua: ``(value,)`` or ``(None, error)`` (node_security.py)."""
        ...

    def supervisor_call(self, op: str, caller: str, arg: Any) -> Any:
        """A call of the Lua ``supervisor`` module by process ``caller``: plain data back."""
        ...

    def agents_call(self, op: str, pid: str, ctx: int, args: list[Any]) -> Any:
        """A call of the Lua ``llm`` / ``agent`` modules by ``pid`` (context ``ctx``): a reply token."""
        ...

    def workflow_callback(self, host: str, lua: Any, room: Callable[[int], None]) -> Callable[..., Any]:
        """The ``py.wf`` function of this host's durable-workflow layer (``lua/workflow.lua``).

        ``room(extra)`` makes room for ``extra`` bytes of pushes from Python (see ``Host._room``).
        """
        ...

    # -- exits and faults
    def process_exited(self, pid: str, reason: str, error: str | None) -> None:
        """A process of this host ended (monitors and links were told in Lua already)."""
        ...

    def publish_exit(self, pid: str, reason: str, error: str | None) -> None:
        """Publish the end of a process that never ran here (an asynchronous spawn that failed)."""
        ...

    def dropped(self, dest: str) -> None:
        """A message from Python found no process ``dest`` here."""
        ...

    def fault(self, where: str, message: str) -> None:
        """Something broke outside any process (a scheduler bug, a failing callback). Never raises."""
        ...

    # -- tracing (node.events)
    def traced(self, lost: int, values: list[Any]) -> None:
        """Records of spawns and sends this host's Lua side made in one step (``kind, pid, peer, a, b, c``
        each, flat); ``lost`` records were dropped for want of room."""
        ...

    # -- the shell process (runtime/shell.py)
    def cell_begin(self, cell: int) -> None:
        """The shell started running cell ``cell``."""
        ...

    def cell_done(self, cell: int, ok: Any, kind: Any, text: Any, value: Any = None) -> None:
        """Cell ``cell`` ended: ``ok``, and the kind, text and value of its result or error (Lua values)."""
        ...

    def shell_poll(self) -> bool:
        """Whether the running cell was interrupted (polled by the shell's count hook)."""
        ...

    def pid_prefix(self, host: str) -> str:
        """How this node's PIDs on ``host`` begin: ``{host|``, or ``{node@host|`` in a cluster."""
        ...

    def python_quiet(self) -> bool:
        """Teaching mode, seeded: whether the node's Python actors (the supervision) have acted on
        everything they were told and wait for input (polled by a host thread)."""
        ...
