"""Several nodes (``node.cluster``): membership in PostgreSQL, messages over direct ZeroMQ links (API.md
"Several nodes").

A node joins with a name and the database URL (``Node(node_name=...)`` then :meth:`Cluster.join`;
``wippy run DIR --cluster URL``; ``%cluster join URL``). Its PIDs are then ``{name@host|id}``. Two parts
do the work, each tested on its own:

- :mod:`.cluster_members` (:class:`~.cluster_members.Membership`): a row per node in
  ``wippy_cluster_nodes`` with a heartbeat; a node whose heartbeat is older than ``cluster_ttl``
  (default 5 s) is declared down by the others; LISTEN/NOTIFY wakes every node on a change.
- :mod:`.cluster_link` (:class:`~.cluster_link.Links`): one PULL socket per node on the address it
  registered, a PUSH socket per peer, frames batched per peer and encoded with :mod:`.wire`.

This module joins them to the node: every operation the node routes (:meth:`Node._route`: send, event,
monitor, demonitor, link, unlink, link_down, terminate, cancel) whose target is a PID of another node
goes to that node as one frame ``(op, sender, target, [a, b, c])``, and the frames that arrive are routed
on this node as if a local host had asked. Order: one sender's frames to one node go through one
outbox, one socket and one I/O thread, so they arrive in the order they were sent.

**noconnection.** The cluster remembers which local processes monitor or link to a process on each
other node (from the monitor / link operations that went out, and the link requests that came in).
When a node is declared down (or leaves), each such monitor fires with reason ``noconnection`` and each
link acts as a link failure with reason ``noconnection``; a monitor or link asked for a process of a
node that is not up answers ``noconnection`` at once. A send to a node that is not up fails (``nil,
err`` in Lua) naming the node.

Threads: :meth:`route` runs on whatever thread the node routes from (hosts, Python); the links' I/O
thread calls :meth:`_frames` (which only puts work on host queues); the membership thread calls
:meth:`_member`. The bookkeeping is under one lock.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from .cluster_link import Frame, Links
from .cluster_members import ClusterError, MemberEvent, Membership, NodeInfo
from .cluster_names import GlobalNames
from .cluster_registry import Applier, RegistryLog
from .errors import ProcessError, Timeout, WippyError

__all__ = ["DEFAULT_TTL", "Cluster", "ClusterError", "ClusterOwner", "ClusterStatus"]

DEFAULT_TTL = 5.0   #: seconds without a heartbeat after which a node is down (API.md: cluster_ttl)


class ClusterOwner(Protocol):
    """The node as the cluster sees it."""

    node_name: str | None

    def route_local(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Route an operation that arrived from another node to its local target (any thread)."""
        ...

    def fault(self, where: str, message: str) -> None:
        """Report a problem of the runtime (any thread)."""
        ...

    def apply_remote_commit(self, node: str, commit: dict[str, Any]) -> None:
        """Apply another node's registry commit here (the cluster registry's thread)."""
        ...

    def spawn_for(self, node: str, pid: str, host: str, entry_id: str, args: list[Any],
                  opts: dict[str, Any] | None) -> None:
        """Another node asked for a spawn on this node's ``host`` under ``pid`` (the links' thread)."""
        ...

    def deliver_many(self, sends: list[tuple[str, Any, Any, Any]]) -> None:
        """Messages ``(dest, sender, topic, payload)`` that arrived together, in order (the links' thread)."""
        ...

    def deliver_blob(self, host: str, blob: bytes, count: int) -> bool:
        """A batch of ``count`` messages another node's host encoded for ``host`` here (scheduler/xnode.lua),
        in order (the links' thread). False if there is no such host running: the batch is dropped."""
        ...

    def peers_changed(self, up: list[str]) -> None:
        """The other nodes up are now ``up`` (the membership's thread, join and leave)."""
        ...

    def answer(self, op: str, arg: Any) -> Any:
        """What another node asked this one (``processes``: its process table as plain data), on a thread
        of its own (it may wait for the hosts)."""
        ...


@dataclass(frozen=True)
class ClusterStatus:
    """``%cluster status``: this node, the nodes of the cluster as the database has them, the links."""

    node: str
    url: str
    address: str
    connected: bool
    accepting: bool
    nodes: list[NodeInfo]
    links: dict[str, int]


def _pid_node(pid: str) -> str | None:
    bar = pid.find("|")
    at = pid.find("@", 0, bar if bar >= 0 else len(pid))
    return pid[1:at] if at > 0 else None


def _safe_url(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}" if user else f"{scheme}://{tail}"


class Cluster:
    """One node's membership and links. Create with the owner's name, then :meth:`join`."""

    def __init__(self, owner: ClusterOwner, url: str, *, ttl: float = DEFAULT_TTL, bind: str = "tcp://127.0.0.1:0",
                 heartbeat: float | None = None, meta: dict[str, Any] | None = None,
                 on_event: Callable[[MemberEvent], None] | None = None) -> None:
        if not owner.node_name:
            raise WippyError("a cluster member needs a node name (Node(node_name=...))")
        self.owner = owner
        self.name: str = owner.node_name
        self.url = url
        self.ttl = ttl
        self._lock = threading.Lock()
        self._up: dict[str, NodeInfo] = {}                       # peers known up, by name
        self._monitors: dict[str, dict[tuple[str, str], str]] = {}  # node -> (watcher, target) -> kind
        self._linked: dict[str, set[tuple[str, str]]] = {}        # node -> (local, remote) links
        self._on_event = on_event
        self.links = Links(self.name, self._frames, bind=bind, on_error=self._link_error)
        self.members: Membership | None = None
        self.names: GlobalNames | None = None
        self.registry_log: RegistryLog | None = None
        self._applier: Applier | None = None
        self._holders: dict[str, set[str]] = {}   # a local PID -> the global names it holds
        self._spawned = 0                          # spawns asked of other nodes (their PIDs' numbers)
        self._asked = 0                            # questions asked of other nodes (their tokens)
        self._answers: dict[int, Future[Any]] = {}
        self.incarnation = 0
        #: False while this node has lost the cluster's database: it takes no new work (spawns) then
        self.accepting = True
        self._heartbeat = heartbeat
        self._meta = meta or {}
        self.address = ""
        self._announce = False   # tell the owner of peers up and down (after announce(), until leave())
        #: messages of batches (scheduler/xnode.lua) dropped: their node had gone down before the batch left,
        #: or it came for a host that is not running here
        self.dropped_sends = 0

    # ------------------------------------------------------------------ life
    def join(self) -> int:
        """Bind the link, join the membership table, connect to every live node; this node's incarnation."""
        self.address = self.links.start()
        # a node restarted at once (kill -9, then the same data directory) finds its old row still up:
        # wait until the others declare that incarnation down (at most ttl), then take the name again
        give_up = time.monotonic() + self.ttl * 1.5 + 2.0
        while True:
            self.members = Membership(self.url, self.name, self.address, ttl=self.ttl,
                                      heartbeat=self._heartbeat, meta=self._meta, on_event=self._member)
            try:
                incarnation = self.members.join()
                self.incarnation = incarnation
                break
            except ClusterError as exc:
                if "is taken by a live node" in str(exc) and time.monotonic() < give_up:
                    time.sleep(min(0.25, self.ttl / 10))
                    continue
                self.links.close()
                raise
            except BaseException:
                self.links.close()
                raise
        self.names = GlobalNames(self.url, self.name, _safe_url(self.url))
        self.registry_log = RegistryLog(self.url, self.name, _safe_url(self.url))
        self._applier = Applier(self.owner.apply_remote_commit, self.owner.fault)
        try:
            self.names.load()
            self.registry_log.create()
        except BaseException:
            self.members.leave()
            self.links.close()
            raise
        for info in self.members.live().values():
            if info.node_id != self.name:
                self._peer_up(info)
        return incarnation

    def announce(self) -> None:
        """From now on (until :meth:`leave`), tell the owner whenever the set of peers up changes
        (``peers_changed``), starting with the set now. Called once the owner can route through this
        cluster (after :meth:`join`, once ``node.cluster`` is set)."""
        self._announce = True
        self._peers_changed()

    def _peers_changed(self) -> None:
        if self._announce:
            try:
                self.owner.peers_changed(self.up())
            except Exception as exc:  # a bug here must not stop the membership thread
                self.owner.fault("cluster", f"telling the hosts of the peers up: {exc!r}")

    def leave(self) -> None:
        """Leave the cluster (the others see ``left``: noconnection for their watchers; this node's global
        names are dropped) and close the link."""
        if self._announce:
            self._announce = False
            self.owner.peers_changed([])
        names = self.names
        if names is not None:
            try:
                for name in [n for n, p in names.names().items() if _pid_node(p) == self.name]:
                    self._broadcast("del", name, None)
                names.drop_node(self.name)
            except WippyError as exc:
                self.owner.fault("cluster", f"leaving: the global names of {self.name} stay until it is "
                                 f"declared gone ({exc})")
            names.close()
        if self.members is not None:
            self.members.leave()
        self.links.close()
        if self._applier is not None:
            self._applier.close()
        if self.registry_log is not None:
            self.registry_log.close()

    # ------------------------------------------------------------------ out
    def route(self, node: str, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Carry one routed operation to ``node`` (any thread). Raises ProcessError for a send to a node
        that is not up; a monitor or link of a process there answers noconnection at once."""
        if op == "send":   # the common case: no bookkeeping (a dict read is atomic)
            if node in self._up:
                self.links.send(node, "send", a if isinstance(a, str) else "", dest, [a, b, c])
            else:
                self._unreachable(node, op, dest, a, b)
            return
        with self._lock:
            up = node in self._up
            if up:
                if op == "monitor" and isinstance(a, str):
                    self._monitors.setdefault(node, {})[(a, dest)] = str(b or "monitor")
                elif op == "demonitor" and isinstance(a, str):
                    self._monitors.get(node, {}).pop((a, dest), None)
                elif op == "link" and isinstance(a, str):
                    self._linked.setdefault(node, set()).add((a, dest))
                elif op in ("unlink", "link_down") and isinstance(a, str):
                    self._linked.get(node, set()).discard((a, dest))
        if not up:
            self._unreachable(node, op, dest, a, b)
            return
        sender = a if isinstance(a, str) else ""
        self.links.send(node, op, sender, dest, [a, b, c])

    def send_blob(self, node: str, host: str, blob: bytes, count: int) -> None:
        """Carry a batch of ``count`` messages to host ``host`` of ``node``, encoded by a host here
        (scheduler/xnode.lua: wire values, four per message), as one link frame (any thread). A node not up
        (it went down since the host last heard) drops the batch: counted in ``dropped_sends``."""
        if node in self._up:
            try:
                self.links.send(node, "sends", "", host, [count, blob])
                return
            except WippyError:
                pass   # forgotten meanwhile: it is down
        with self._lock:
            self.dropped_sends += count

    def _unreachable(self, node: str, op: str, dest: str, a: Any, b: Any) -> None:
        why = f"node '{node}' is not up in the cluster"
        if op == "monitor" and isinstance(a, str):
            ev: dict[str, Any] = {"kind": "pid.exit", "from": dest, "reason": "noconnection",
                                  "result": {"error": f"noconnection: {why}"}}
            if b == "exec":
                ev["exec"] = True
            self.owner.route_local("event", a, ev, None, None)
        elif op == "link" and isinstance(a, str):
            self.owner.route_local("link_down", a, dest, {"error": f"noconnection: {why}"}, "noconnection")
        elif op == "send":
            known = ", ".join(sorted(self._up)) or "none"
            raise ProcessError(f"{why} (up: {known}); the message to {dest} was not sent")
        # demonitor / unlink / events / signals to a node that is gone: nothing left to tell

    # ------------------------------------------------------------------ spawns on other nodes
    def spawn_remote(self, node: str, host: str, entry_id: str, args: list[Any], opts: dict[str, Any] | None) -> str:
        """Spawn ``entry_id`` on ``host`` of ``node``; its PID at once (allocated here in a range of this
        node's own: ``{node@host|NAME.INCARNATION.N}``), the process starts when the frame arrives. A
        node that is not up: ProcessError naming it (any thread)."""
        with self._lock:
            if node not in self._up:
                known = ", ".join(sorted(self._up)) or "none"
                raise ProcessError(f"node '{node}' is not up in the cluster (up: {known}); nothing was spawned")
            self._spawned += 1
            pid = f"{{{node}@{host}|{self.name}.{self.incarnation}.{self._spawned:x}}}"
            o = opts or {}
            if isinstance(o.get("monitor"), str):
                how = "exec" if o.get("monitor_kind") == "exec" else "monitor"
                self._monitors.setdefault(node, {})[(o["monitor"], pid)] = how
            if isinstance(o.get("link"), str):
                self._linked.setdefault(node, set()).add((o["link"], pid))
        # the parent's security context and trace marks mean nothing over there: the child runs as that
        # node's processes do
        sent = {k: v for k, v in (opts or {}).items() if k not in ("sec", "traced", "parent")} or None
        self.links.send(node, "spawn", self.name, pid, [host, entry_id, args, sent])
        return pid

    # ------------------------------------------------------------------ questions to other nodes
    def ask(self, node: str, op: str, arg: Any = None, timeout: float = 5.0) -> Any:
        """Ask ``node`` something (``processes``) and wait for its answer; ProcessError if it is not up,
        Timeout if it does not answer within ``timeout`` seconds (any thread but the links')."""
        with self._lock:
            if node not in self._up:
                raise ProcessError(f"node '{node}' is not up in the cluster")
            self._asked += 1
            token = self._asked
            fut: Future[Any] = Future()
            self._answers[token] = fut
        try:
            self.links.send(node, "ask", self.name, "", [token, op, arg])
            return fut.result(timeout)
        except FutureTimeout:
            raise Timeout(f"node '{node}' did not answer '{op}' within {timeout:g}s") from None
        finally:
            with self._lock:
                self._answers.pop(token, None)

    def ask_each(self, nodes: Iterable[str], op: str, arg: Any = None,
                 timeout: float = 5.0) -> dict[str, Any]:
        """Ask every node of ``nodes`` the same question at once and wait for the answers, ``timeout``
        seconds in all (not per node): ``{node: answer}``, without the nodes that are not up, did not
        answer in time or failed to answer (any thread but the links'). A node that went down costs the
        whole wait once, not once per node."""
        asked: dict[str, tuple[int, Future[Any]]] = {}
        with self._lock:
            for node in nodes:
                if node in self._up and node not in asked:
                    self._asked += 1
                    fut: Future[Any] = Future()
                    self._answers[self._asked] = fut
                    asked[node] = (self._asked, fut)
        out: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            for node, (token, fut) in asked.items():
                try:
                    self.links.send(node, "ask", self.name, "", [token, op, arg])
                except WippyError as exc:   # it went down meanwhile
                    fut.set_exception(exc)
            for node, (_, fut) in asked.items():
                try:
                    out[node] = fut.result(max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    continue
                except WippyError:
                    continue
        finally:
            with self._lock:
                for token, _ in asked.values():
                    self._answers.pop(token, None)
        return out

    def _asked_of_me(self, peer: str, token: Any, op: str, arg: Any) -> None:
        def work() -> None:
            try:
                value, err = self.owner.answer(op, arg), None
            except Exception as exc:
                value, err = None, f"{type(exc).__name__}: {exc}"
            try:
                self.links.send(peer, "answer", self.name, "", [token, value, err])
            except WippyError:
                pass   # it went down meanwhile
        threading.Thread(target=work, name=f"wippy-cluster-ask-{peer}", daemon=True).start()

    # ------------------------------------------------------------------ global names
    def lookup_global(self, name: str) -> str | None:
        """The holder of a global name, if its node is up (no database access; any thread)."""
        names = self.names
        if names is None:
            return None
        pid = names.lookup(name)
        if pid is None:
            try:
                pid = names.fetch(name)
            except WippyError:
                return None
        if pid is None:
            return None
        node = _pid_node(pid)
        with self._lock:
            return pid if node == self.name or node in self._up else None

    def register_global(self, name: str, pid: str) -> str | None:
        """Make a process of this node the cluster's holder of ``name``; None, or why not (any thread)."""
        if self.names is None:
            return f"name '{name}': the node is not joined to its cluster yet"
        err = self.names.register(name, pid)
        if err is None:
            with self._lock:
                self._holders.setdefault(pid, set()).add(name)
            self._broadcast("set", name, pid)
        return err

    def unregister_global(self, name: str) -> bool:
        """Drop a global name a process of this node holds."""
        if self.names is None or not self.names.unregister(name):
            return False
        with self._lock:
            for held in self._holders.values():
                held.discard(name)
        self._broadcast("del", name, None)
        return True

    def holds_global(self, pid: str) -> bool:
        """Whether ``pid`` (a process of this node) holds a global name."""
        with self._lock:
            return bool(self._holders.get(pid))

    def release_global(self, pid: str) -> None:
        """A process of this node ended: its global names are free (on its host's thread)."""
        with self._lock:
            self._holders.pop(pid, None)
        if self.names is not None:
            for name in self.names.release(pid):
                self._broadcast("del", name, pid)

    # ------------------------------------------------------------------ the registry
    def publish_commit(self, message: str | None, commit: dict[str, Any]) -> None:
        """A commit made on this node (the committing thread): into the cluster's log, and to every node up."""
        if self.registry_log is not None:
            commit = dict(commit, cluster_version=self.registry_log.append(message, commit))
        for peer in self.up():
            try:
                self.links.send(peer, "registry", self.name, "", [message, commit])
            except WippyError:
                pass   # it went down meanwhile

    def _broadcast(self, op: str, name: str, pid: str | None) -> None:
        for peer in self.up():
            try:
                self.links.send(peer, "name", self.name, name, [op, name, pid])
            except WippyError:
                pass   # it went down meanwhile: it reloads the names when it comes back

    # ------------------------------------------------------------------ in (the links' I/O thread)
    def _frames(self, peer: str, frames: list[Frame]) -> None:
        sends: list[tuple[str, Any, Any, Any]] = []   # consecutive messages: handed over together
        applier = self._applier
        for op, _sender, dest, payload in frames:
            if op == "send" and isinstance(payload, list) and len(payload) == 3 and not (applier and applier.busy()):
                sends.append((dest, payload[0], payload[1], payload[2]))
                continue
            if sends:
                self._deliver_sends(peer, sends)
                sends = []
            if (op == "sends" and isinstance(payload, list) and len(payload) == 2 and type(payload[0]) is int
                    and isinstance(payload[1], bytes)):   # a host's batch (scheduler/xnode.lua): [count, blob]
                if applier is not None and applier.busy():   # behind a commit or a spawn: the link's order
                    applier.then(peer, functools.partial(self._deliver_blob, peer, dest, payload[1], payload[0]))
                else:
                    self._deliver_blob(peer, dest, payload[1], payload[0])
                continue
            if op == "name" and isinstance(payload, list) and len(payload) == 3 and self.names is not None:
                self.names.apply(str(payload[0]), str(payload[1]), payload[2])
                continue
            if op == "ask" and isinstance(payload, list) and len(payload) == 3:
                self._asked_of_me(peer, payload[0], str(payload[1]), payload[2])
                continue
            if op == "answer" and isinstance(payload, list) and len(payload) == 3:
                with self._lock:
                    fut = self._answers.get(payload[0]) if isinstance(payload[0], int) else None
                if fut is not None and not fut.done():
                    if payload[2] is None:
                        fut.set_result(payload[1])
                    else:
                        fut.set_exception(ProcessError(f"node '{peer}' could not answer: {payload[2]}"))
                continue
            if op == "spawn" and isinstance(payload, list) and len(payload) == 4:
                host, entry_id, args, opts = payload
                o = dict(opts) if isinstance(opts, dict) else None

                def spawn(peer: str = peer, dest: str = dest, host: Any = host, entry_id: Any = entry_id,
                          args: Any = args, o: dict[str, Any] | None = o) -> None:
                    if not self.accepting:   # without its database this node takes no new work
                        self.owner.spawn_for(peer, dest, "", str(entry_id), [], o)
                        return
                    self.owner.spawn_for(peer, dest, str(host), str(entry_id), list(args or []), o)

                if self._applier is not None:   # after the registry commits that came before it
                    self._applier.then(peer, spawn)
                else:
                    spawn()
                with self._lock:   # the child links back to its parent over there: noconnection if it goes
                    if isinstance(opts, dict) and isinstance(opts.get("link"), str):
                        self._linked.setdefault(peer, set()).add((dest, opts["link"]))
                continue
            if op == "registry" and isinstance(payload, list) and len(payload) == 2 and self._applier is not None:
                commit = dict(payload[1]) if isinstance(payload[1], dict) else {}
                commit["message"] = payload[0]
                self._applier.put(peer, commit)
                continue
            a, b, c = [*payload, None, None, None][:3] if isinstance(payload, list) else (None, None, None)
            with self._lock:
                if op == "link" and isinstance(a, str):       # a remote process linked to one of ours
                    self._linked.setdefault(peer, set()).add((dest, a))
                elif op in ("unlink", "link_down") and isinstance(a, str):
                    self._linked.get(peer, set()).discard((dest, a))
                elif op == "event" and isinstance(a, dict) and a.get("kind") == "pid.exit":
                    self._monitors.get(peer, {}).pop((dest, str(a.get("from"))), None)
            if applier is not None and applier.busy():   # behind a commit or a spawn: keep the link's order
                applier.then(peer, functools.partial(self._deliver, peer, op, dest, a, b, c))
            else:
                self._deliver(peer, op, dest, a, b, c)

        if sends:
            self._deliver_sends(peer, sends)

    def _deliver_sends(self, peer: str, sends: list[tuple[str, Any, Any, Any]]) -> None:
        try:
            self.owner.deliver_many(sends)
        except Exception as exc:  # a bug here must not stop the link
            self.owner.fault(f"cluster (from {peer})", f"{len(sends)} messages: {exc!r}")

    def _deliver_blob(self, peer: str, host: str, blob: bytes, count: int) -> None:
        try:
            if not self.owner.deliver_blob(host, blob, count):
                with self._lock:
                    self.dropped_sends += count
        except Exception as exc:  # a bug here must not stop the link
            self.owner.fault(f"cluster (from {peer})", f"a batch of messages to {host}: {exc!r}")

    def _deliver(self, peer: str, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        try:
            self.owner.route_local(op, dest, a, b, c)
        except WippyError:
            pass   # a process that has ended: as on one node, a send to it is dropped
        except Exception as exc:  # a bug here must not stop the link
            self.owner.fault(f"cluster (from {peer})", f"{op} to {dest}: {exc!r}")

    def _link_error(self, message: str) -> None:
        self.owner.fault("cluster link", message)

    # ------------------------------------------------------------------ membership (its thread)
    def _peer_up(self, info: NodeInfo) -> None:
        with self._lock:
            self._up[info.node_id] = info
            held = [(n, p) for p, ns in self._holders.items() for n in sorted(ns)]
        self.links.connect(info.node_id, info.address)
        self._peers_changed()
        for name, pid in held:   # it may have loaded the names before some of ours were registered
            try:
                self.links.send(info.node_id, "name", self.name, name, ["set", name, pid])
            except WippyError:
                break

    def _member(self, ev: MemberEvent) -> None:
        if ev.kind == "disconnected":   # this node's own database connection
            self.accepting = False
            self.owner.fault("cluster", f"node {self.name} lost the cluster database {_safe_url(self.url)}: it "
                             "takes no new work from the other nodes (spawns) until the database is back; "
                             "it retries every heartbeat")
        elif ev.kind == "reconnected":
            self.accepting = True
            self.owner.fault("cluster", f"node {self.name} is back in the cluster (incarnation {ev.incarnation}): "
                             "it takes new work again")
        elif ev.node_id != self.name:
            if ev.kind == "joined" and self.members is not None:
                info = self.members.live().get(ev.node_id)
                if info is not None:
                    self._peer_up(info)
            elif ev.kind in ("down", "left"):
                self._peer_down(ev.node_id, ev.kind)
        if self._on_event is not None:
            self._on_event(ev)

    def _peer_down(self, node: str, kind: str) -> None:
        with self._lock:
            self._up.pop(node, None)
            monitors = self._monitors.pop(node, {})
            linked = self._linked.pop(node, set())
        self.links.forget(node)
        self._peers_changed()
        if self.names is not None:
            try:
                self.names.drop_node(node)
            except WippyError as exc:
                self.owner.fault("cluster", f"the global names of node '{node}' stay for now: {exc}")
        why = f"noconnection: node '{node}' is {'down' if kind == 'down' else 'gone (it left the cluster)'}"
        for (watcher, target), how in sorted(monitors.items()):
            ev: dict[str, Any] = {"kind": "pid.exit", "from": target, "reason": "noconnection",
                                  "result": {"error": why}}
            if how == "exec":
                ev["exec"] = True
            self._tell("event", watcher, ev, None, None)
        for local, remote in sorted(linked):
            self._tell("link_down", local, remote, {"error": why}, "noconnection")

    def _tell(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        try:
            self.owner.route_local(op, dest, a, b, c)
        except WippyError:
            pass   # the local process has ended meanwhile
        except Exception as exc:
            self.owner.fault("cluster", f"telling of a node down: {exc!r}")

    # ------------------------------------------------------------------ looking
    def up(self) -> list[str]:
        """The other nodes known up, by name."""
        with self._lock:
            return sorted(self._up)

    def status(self) -> ClusterStatus:
        """This node and every node the database knows, with the links' counters."""
        members = self.members
        connected = bool(members and members.connected)
        try:
            nodes = members.nodes() if members and connected else []
        except ClusterError:
            nodes = []
        with self._lock:
            dropped = self.dropped_sends
        return ClusterStatus(self.name, _safe_url(self.url), self.address, connected, self.accepting, nodes,
                             {**self.links.stats(), "dropped_sends": dropped})
