"""The node: hosts, names, Python mailboxes and the entry table of one Python process.

Threads: a :class:`Node` is used from any thread (a CLI's main thread, a notebook cell, a widget callback);
its public methods are thread-safe. Work on processes is handed to the owning host's thread
(:meth:`Host.post` / :meth:`Host.call`); methods that must report an outcome wait on a future with a
timeout. Callbacks named ``_something`` below are called by hosts, on their own threads, and by the
node's other parts, always through :class:`_Parts` (the ports those parts declare; see "Layers" in
docs/architecture.md).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agents import Agents
from .clock import Clock
from .entries import LUA_KINDS, Entry
from .errors import (
    EntryError,
    HostError,
    LuaError,
    ProcessError,
    ProcessExited,
    SecurityError,
    Timeout,
    TreeError,
    WippyError,
)
from .events import EventBus, payload_size, preview
from .host import DEFAULT_HOST, Host, HostContext, HostOptions
from .luaconv import lua_pair as _pair
from .luaconv import lua_str as _s
from .luaconv import lua_text as _text
from .mailbox import Event, Mailbox, Message
from .node_security import NodeSecurity
from .payload import check_plain, from_lua, to_lua
from .registry import ChangeSet, Registry, matches
from .shell import Shell
from .supervisor import Supervision
from .supervisor_tree import TreeEvent, TreeNode
from .teach import Teach
from .workflow import Workflows

__all__ = ["DEFAULT_HOST", "HostStatistics", "Node", "NodeStatistics", "ProcessStatistics", "parse_pid"]

PYTHON_HOST = "python"
REGISTRY_FILE = "registry.sqlite"
LOG_LINES = 1000      # lines kept per process
MAX_LINE = 64 * 1024  # characters kept per line
PAGE = 5000  # process snapshots converted per step of statistics()


def parse_pid(pid: str) -> tuple[str, str]:
    """Split ``{host|id}`` (or a cluster's ``{node@host|id}``) into ``(host, id)``; raise
    :class:`ProcessError` if it is not a PID."""
    if not isinstance(pid, str) or not pid.startswith("{") or not pid.endswith("}") or "|" not in pid:
        raise ProcessError(f"{pid!r} is not a PID (PIDs look like {{app:processes|0x0001a}})")
    host, _, ident = pid[1:-1].partition("|")
    at = host.find("@")
    return (host[at + 1:] if at >= 0 else host), ident


def pid_node(pid: str) -> str | None:
    """The node part of a cluster PID ``{node@host|id}``, or None for a PID of a node outside any
    cluster (``{host|id}``). No checks: callers have parsed it."""
    bar = pid.find("|")
    at = pid.find("@", 0, bar if bar >= 0 else len(pid))
    return pid[1:at] if at > 0 else None


NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_node_name(name: str) -> str:
    """A cluster node's name: letters, digits, ``_ . -``, at most 63 characters; raise ProcessError."""
    if not isinstance(name, str) or not NODE_NAME.match(name):
        raise ProcessError(f"node name {name!r}: use letters, digits, '_', '.' and '-' (at most 63, "
                           "starting with a letter or digit), e.g. 'n1' or 'worker-2'")
    return name


@dataclass(frozen=True)
class ProcessStatistics:
    """A snapshot of one process, taken on its host's thread."""

    pid: str
    entry: str
    host: str
    status: str            #: running, runnable or waiting (parked)
    mailbox: int           #: messages waiting in the inbox
    messages_in: int
    messages_out: int
    instructions: int      #: counted by the budget hook (0 when the host runs without a budget)
    resumes: int           #: times the scheduler resumed it (reductions)
    memory: int | None     #: estimated bytes held (environment, inbox), when asked for
    uptime: float          #: seconds since spawn
    names: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  #: PIDs it is linked to (process.link, spawn_linked), sorted
    actor: str = ""        #: the actor it acts as (security: its own, its entry's ID, or ``notebook``)


@dataclass(frozen=True)
class HostStatistics:
    """A snapshot of one host's counters."""

    name: str
    processes: int
    runnable: int
    timers: int
    spawned: int
    exited: int
    delivered: int
    dropped: int
    resumes: int
    heap_kills: int
    budget_kills: int
    lua_memory: int        #: bytes in use by the host's Lua state
    instruction_budget: int
    heap_limit: int
    tracing: bool = False  #: recording spawns and sends for node.events (someone subscribed to them)


@dataclass(frozen=True)
class NodeStatistics:
    hosts: dict[str, HostStatistics] = field(default_factory=dict)
    processes: list[ProcessStatistics] = field(default_factory=list)


def _host_of(pid: str) -> str:
    """The host part of a PID, without a cluster's node part (no checks: PIDs here come from the runtime)."""
    bar = pid.find("|")
    return pid[max(1, pid.find("@", 0, bar) + 1):bar]


def _check_imports(cs: ChangeSet) -> None:
    """Refuse a transaction after which an import names no entry, a non-library, or closes a cycle."""
    after = cs.after
    graph: dict[str, list[str]] = {}
    for e in after.values():
        imports = e.data.get("imports") if e.kind in LUA_KINDS else None
        if not isinstance(imports, dict):
            continue
        for alias, target in imports.items():
            t = after.get(target)
            if t is None:
                raise EntryError(f"entry '{e.id}': import '{alias}' names '{target}', which does not exist "
                                 "(define it in the same change, or fix the ID)")
            if t.kind != "library.lua":
                raise EntryError(f"entry '{e.id}': import '{alias}' names '{target}', a {t.kind} entry; "
                                 "imports must be library.lua entries")
            graph.setdefault(e.id, []).append(target)
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
                raise EntryError(f"entry '{nxt}': import cycle {' -> '.join(cycle)} (libraries cannot import "
                                 "each other in a circle)")
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in graph:
        if state.get(start) is None:
            visit(start, [start])


def _entry_data(e: Entry) -> dict[str, Any]:
    """An entry as the Lua registry module hands it out: {id, kind, meta, data}."""
    return {"id": e.id, "kind": e.kind, "meta": dict(e.meta), "data": dict(e.data)}


def _default_output(pid: str, text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Node:
    """One runtime: hosts (each a thread with a Lua state), the entry table and the name table.

    ``output(pid, text)`` receives every Lua ``print`` (on the printing host's thread); the default
    writes to ``sys.stdout`` at once. Every line is also kept per process for :meth:`logs`.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        output: Callable[[str, str], None] | None = _default_output,
        host_options: HostOptions | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        workflow_store: str | os.PathLike[str] | None = None,
        workflow_ttl: float | None = None,
        node_name: str | None = None,
    ) -> None:
        self.clock = clock or Clock()
        #: the node's name in a cluster (its PIDs are then {name@host|id}); None outside any cluster
        self.node_name: str | None = check_node_name(node_name) if node_name is not None else None
        # what the node's parts (hosts, mailboxes, supervision, workflows) may call: their ports
        self._parts = _Parts(self)
        #: spawns, exits, sends, tree changes and commits, for live views and traces (runtime/events.py)
        self.events: EventBus = EventBus(self.clock.now_ns, self._events_changed)
        self._trace_lock = threading.Lock()
        self._trace_state: tuple[bool, frozenset[str] | None] = (False, None)   # what the hosts were told
        #: where the node keeps its store (registry versions, journals: later issues); None = nowhere
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        # versioned and transactional (history, diff, apply_version); with a data directory its versions
        # persist there (registry.sqlite) and a new node on the same directory restores them
        store = None
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            store = self.data_dir / REGISTRY_FILE
        self.entries: Registry = Registry(store)
        self.entries.subscribe(self._entries_changed)
        self.entries.add_validator(_check_imports)
        self.hosts: dict[str, Host] = {}
        self._output_sink = output
        self._host_options = host_options or HostOptions()
        self._lock = threading.RLock()
        self._names: dict[str, str] = {}
        self._names_by_pid: dict[str, set[str]] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        self._mailbox_ids = itertools.count(1)
        self._logs: dict[str, collections.deque[str]] = {}
        self._exits: dict[str, tuple[str, str | None]] = {}
        self._exit_order: collections.deque[str] = collections.deque()
        self._exit_listeners: list[Callable[[str, str, str | None], None]] = []
        self.faults: list[str] = []
        self.started = False
        self._shell: Shell | None = None
        self._reg_subs: dict[int, tuple[str, dict[str, Any]]] = {}  # registry.changes() subscriptions
        self._reg_sub_ids = itertools.count(1)
        self._reg_notified = self.entries.version
        for e in self.entries.entries():   # restored host entries become hosts (started with the node)
            if e.kind == "process.host" and e.id not in self.hosts:
                self.hosts[e.id] = Host(self._parts, e.id, HostOptions.from_mapping(e.data.get("host")))
        self._shell_lock = threading.Lock()
        #: policies, identities, checks and refusals (runtime/node_security.py); the notebook user is
        #: the actor ``notebook`` with every right (``security.caller``) until ``whoami`` narrows it
        self._security_lock = threading.Lock()
        self.security: NodeSecurity = NodeSecurity(self.entries.entries, self.entries.get, self.events,
                                                   self._security_note)
        self.entries.add_validator(self.security.validator)
        self.security.on_change(self._security_changed)
        self._security_changed()   # hosts restored above learn the mode when they start
        # services and supervisors (one thread, started with the node); a bad spec refuses its commit
        self.supervision: Supervision = Supervision(self._parts)
        self.entries.add_validator(self.supervision.validator)
        self.supervision.subscribe(self._tree_event)
        #: durable workflows (runtime/workflow.py): their store (data_dir/workflows.sqlite unless
        #: ``workflow_store`` or $WIPPY_WORKFLOW_STORE names one), leases (``workflow_ttl``), the API
        self.workflows: Workflows = Workflows(self._parts, workflow_store, workflow_ttl)
        #: agents (runtime/agents.py): models, the agent loop, sessions (data_dir/agents.sqlite), breakpoints
        self.agents: Agents = Agents(self._parts)
        #: the cluster this node is a member of (runtime/cluster.py), None outside any
        self.cluster: Any = None
        self._remote_commit = threading.local()   # .active while a commit of another node is applied
        #: teaching mode (runtime/teach.py): pause, step and resume hosts
        self.teach: Teach = Teach(lambda: dict(self.hosts), lambda: self.supervision.quiet())
        self.entries.add_validator(self.agents.validator)

    # ------------------------------------------------------------------ lifecycle (any thread)
    def start(self) -> Node:
        """Start the default host ``app:processes`` (and any added before). Returns self."""
        with self._lock:
            if self.started:
                return self
            self.started = True
            if DEFAULT_HOST not in self.hosts:
                self.hosts[DEFAULT_HOST] = self._traced_host(Host(self._parts, DEFAULT_HOST, self._host_options))
            hosts = list(self.hosts.values())
        for h in hosts:
            if not h.running:
                h.start()
        # what auto-starts in the (restored or loaded) registry starts now, services in dependency order
        self.supervision.start_thread()
        self.supervision.boot()
        self.workflows._node_started()   # resumes this node's workflows when its store exists
        return self

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)

    def add_host(self, name: str, options: HostOptions | None = None, **kw: Any) -> Host:
        """Add (and, if the node runs, start) a host. ``kw`` are :class:`HostOptions` fields."""
        if options is None:
            options = HostOptions(**kw) if kw else self._host_options
        with self._lock:
            if name in self.hosts:
                raise HostError(f"host '{name}' already exists")
            host = self._traced_host(Host(self._parts, name, options))
            self.hosts[name] = host
            started = self.started
        if started:
            host.start()
        return host

    def stop(self, grace: float = 5.0) -> None:
        """Cancel every process, give them ``grace`` seconds, terminate the rest, stop the hosts."""
        self.workflows._node_stopping()   # workflows whose processes stop now stay running in the store
        # supervisors and services first (children in reverse order), so nothing restarts what stops
        self.supervision.shutdown(timeout=grace + 30.0)
        with self._lock:
            hosts = list(self.hosts.values())
            self.started = False
        for h in hosts:
            h.post("stop", grace)
        for h in hosts:
            h.stop(grace, timeout=grace + 30.0)
        for mb in list(self._mailboxes.values()):
            mb.close()
        self.workflows._node_stopped()   # leases released, store closed
        self.agents.close()               # the local model stops, paused runs go on (and end)
        try:
            self.leave_cluster()
        except WippyError as exc:   # a stop goes on: the others declare this node down within its ttl
            self._host_fault("cluster", f"leaving: {exc}")
        if self.data_dir is not None:
            self.entries.close()   # the file is whole after every commit; closing releases it

    # ------------------------------------------------------------------ several nodes
    def cluster_tree(self, timeout: float = 5.0) -> TreeNode:
        """The supervision trees of every node of the cluster under one root (``cluster``), one child per
        node (``node NAME``), this node's first; the nodes are asked at once and one that does not
        answer within ``timeout`` seconds (in all) is left out. Outside a cluster: this node's tree."""
        mine = self.supervision.tree()
        cluster = self.cluster
        if cluster is None:
            return mine
        roots = [dataclasses.replace(mine, id=f"node {self.node_name}")]
        answers = cluster.ask_each(cluster.up(), "tree", None, timeout=timeout)
        for peer, raw in answers.items():
            roots.append(dataclasses.replace(_tree_from(raw), id=f"node {peer}"))
        return TreeNode(id="cluster", kind="root", status="running", children=tuple(roots))

    def cluster_processes(self, memory: bool = False, timeout: float = 5.0) -> list[tuple[str, ProcessStatistics]]:
        """Every process of the cluster as ``(node, statistics)``: this node's, then each node up's (by
        name); the nodes are asked at once, and one that does not answer within ``timeout`` seconds (in all)
        is left out. Outside a cluster, this node's, under its name or ``""``."""
        out = [(self.node_name or "", p) for p in self.statistics(memory=memory).processes]
        cluster = self.cluster
        if cluster is None:
            return out
        answers = cluster.ask_each(cluster.up(), "processes", memory, timeout=timeout)
        for peer, rows in answers.items():
            for r in rows or []:
                r = dict(r)
                r["names"] = tuple(r.get("names") or ())
                r["links"] = tuple(r.get("links") or ())
                out.append((peer, ProcessStatistics(**r)))
        return out

    def join_cluster(self, url: str, *, ttl: float | None = None, bind: str = "tcp://127.0.0.1:0",
                     heartbeat: float | None = None) -> Any:
        """Join the cluster whose membership lives in the PostgreSQL database at ``url`` (the node needs a
        ``node_name``; its PIDs are ``{name@host|id}``); returns ``node.cluster``. ``ttl``: seconds without a
        heartbeat after which a node is down (default 5). Any thread."""
        from .cluster import DEFAULT_TTL, Cluster

        if self.node_name is None:
            raise ProcessError("this node has no name: create it with Node(node_name='n1') to join a cluster "
                               "(its PIDs become {n1@host|id}); %cluster join restarts the kernel's node so")
        if self.cluster is not None:
            raise ProcessError(f"node '{self.node_name}' is already in a cluster ({self.cluster.status().url}); "
                               "leave it first (node.leave_cluster())")
        cluster = Cluster(_ClusterPort(self), url, ttl=DEFAULT_TTL if ttl is None else ttl, bind=bind,
                          heartbeat=heartbeat)
        cluster.join()
        self.cluster = cluster
        cluster.announce()   # the hosts batch their messages to the peers up from now on (xnode.lua)
        return cluster

    def leave_cluster(self) -> None:
        """Leave the cluster (the other nodes' watchers of this node's processes hear noconnection)."""
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.leave()

    def host(self, name: str | None = None) -> Host:
        """The host called ``name`` (default ``app:processes``), or :class:`HostError` listing hosts."""
        name = name or DEFAULT_HOST
        h = self.hosts.get(name)
        if h is None:
            raise HostError(f"unknown host '{name}'; hosts: {', '.join(sorted(self.hosts)) or '(none)'}")
        if not h.running:
            raise HostError(f"host '{name}' is not running (start the node first: node.start())")
        return h

    # ------------------------------------------------------------------ entries
    def load(self, path: str | os.PathLike[str], replace: bool = False) -> list[Entry]:
        """Load a YAML tree (``_index.yaml`` files) into the registry as one transaction, all or nothing.

        With ``replace`` the tree becomes the whole registry: entries it does not hold are deleted (what
        ``wippy run DIR`` does, so a stored registry follows the tree). ``process.host`` entries become
        hosts (started if the node runs). Raises :class:`TreeError`; a bad tree changes nothing.
        """
        from .tree import load_tree_located

        located = load_tree_located(Path(path))
        loaded = [e for e, _ in located]
        keep = {e.id for e in loaded}
        gone = [i for i in self.entries.ids() if i not in keep] if replace else []
        try:
            self.apply(loaded, gone)
        except EntryError as exc:  # refused as a whole (an import, say): point at the entry's line
            where = {e.id: w for e, w in located}
            named = re.search(r"entry '([^']+)'", str(exc))
            if named and named.group(1) in where:
                path_, line = where[named.group(1)]
                raise TreeError(str(exc), path_, line) from None
            raise TreeError(str(exc), str(path)) from None
        return loaded

    def apply(self, entries: Iterable[Entry], delete: Iterable[str] = (), message: str | None = None) -> int:
        """Add or replace entries and delete IDs (validated first; all or nothing) as one version with
        ``message``; returns the version. Checked as ``registry.apply`` on each ID (SecurityError)."""
        entries = list(entries)
        delete = list(delete)
        if not self.security.open:   # registry.apply on every entry the transaction changes
            for entry_id in [*(e.id for e in entries), *delete]:
                self._require("registry.apply", entry_id)
        for e in entries:
            if e.kind == "process.host":
                HostOptions.from_mapping(e.data.get("host"))
        version = self.entries.apply(entries, delete, message=message)
        for e in entries:
            if e.kind == "process.host" and e.id not in self.hosts:
                self.add_host(e.id, HostOptions.from_mapping(e.data.get("host")))
        return version

    def apply_version(self, v: int, message: str | None = None) -> int:
        """Make the entries those of version ``v`` again, as a new version (``%registry rollback V``);
        returns the version. Checked as ``registry.apply_version`` on ``str(v)`` (SecurityError), an
        unknown version is an EntryError. Calling thread."""
        self._require("registry.apply_version", str(v))
        return self.entries.apply_version(v, message if message is not None else f"rollback to version {v}")

    def reset_registry(self) -> None:
        """Empty the registry and its history (``%registry reset``); checked as ``registry.apply`` on
        every entry (SecurityError, nothing removed). Calling thread."""
        if not self.security.open:
            for entry_id in self.entries.ids():
                self._require("registry.apply", entry_id)
        self.entries.reset()

    def define(self, entry_id: str, kind: str, source: str | None = None, **data: Any) -> Entry:
        """Define one entry from Python, e.g. ``node.define("app:echo", "process.lua", source=...)``."""
        fields = dict(data)
        meta = fields.pop("meta", {}) or {}
        if source is not None:
            fields["source"] = source
        entry = Entry(entry_id, kind, meta, fields)
        self.apply([entry])
        return entry

    @property
    def registry(self) -> Registry:
        """The node's entries under API.md's name (``node.registry.get("app:x")``)."""
        return self.entries

    def _registry_call(self, op: str, arg: Any) -> Any:
        """The Lua ``registry`` module's read calls (host threads): plain data, or raises EntryError."""
        reg = self.entries
        if op == "get":
            return _entry_data(reg.require(str(arg)))
        if op == "find":
            where: dict[str, Any] = arg if isinstance(arg, dict) else {}
            return [_entry_data(e) for e in reg.find(where)]
        if op == "subscribe":
            pid, raw = [*arg, None][:2] if isinstance(arg, list) else (None, None)
            flt: dict[str, Any] = raw if isinstance(raw, dict) else {}
            for key in flt:  # refuse a bad filter now, not at the first commit
                if key not in (".kind", ".ns", ".name", ".id") and not str(key).startswith("meta."):
                    raise EntryError(f"unknown filter key {key!r} (keys: .kind .ns .name .id meta.<field>)")
            with self._lock:
                sub_id = next(self._reg_sub_ids)
                self._reg_subs[sub_id] = (str(pid), flt)
            return sub_id
        if op == "current_version":
            return reg.version
        if op == "history":
            return [{"version": v.version, "time": v.time, "message": v.message,
                     "changes": [{"op": o, "id": i, "kind": k} for o, i, k in v.changes]}
                    for v in reg.history()]
        if op == "snapshot":
            return reg.version
        if op == "entries_at":
            args = arg if isinstance(arg, list) else [arg]
            entries = reg.version_entries(int(args[0])).values()
            flt = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
            return [_entry_data(e) for e in sorted(entries, key=lambda e: e.id) if matches(e, flt)]
        if op == "apply":
            return self._apply_from_lua(arg)
        if op == "apply_version":
            if isinstance(arg, bool) or not isinstance(arg, int):
                raise EntryError(f"apply_version: a version number is needed, got {arg!r}")
            return reg.apply_version(arg)
        raise EntryError(f"unknown registry call {op!r}")

    def _apply_from_lua(self, ops: Any) -> int:
        """One transaction from a Lua changes object: a list of {op, entry | id}; all or nothing."""
        if not isinstance(ops, list) or not ops:
            raise EntryError("apply: no changes (use changes:create(e), :update(e), :delete(id) first)")
        tx = self.entries.changes()
        for i, change in enumerate(ops, 1):
            op = change.get("op") if isinstance(change, dict) else None
            if op == "delete":
                tx.delete(str(change.get("id")))
                continue
            raw = change.get("entry") if isinstance(change, dict) else None
            if op not in ("create", "update") or not isinstance(raw, dict):
                raise EntryError(f"apply: change {i} is not a create/update with an entry table")
            entry = Entry(str(raw.get("id")), str(raw.get("kind")), dict(raw.get("meta") or {}),
                          dict(raw.get("data") or {}))
            (tx.create if op == "create" else tx.update)(entry)
        return tx.apply()

    def _apply_remote_commit(self, node: str, commit: dict[str, Any]) -> None:
        """Another node's registry commit, applied here as one version (the cluster registry's thread);
        not sent on again."""
        upsert = [Entry(str(i), str(k), dict(m or {}), dict(d or {})) for i, k, m, d in commit.get("set") or []]
        delete = [str(i) for i in commit.get("del") or [] if self.entries.get(str(i)) is not None]
        upsert = [e for e in upsert if self.entries.get(e.id) != e]
        if not upsert and not delete:
            return
        msg = commit.get("message")
        self._remote_commit.active = True
        try:
            self.entries.apply(upsert, delete, message=f"{msg or 'a commit'} (from node {node})")
        finally:
            self._remote_commit.active = False

    def _publish_commit(self) -> None:
        """A commit made here, in a cluster: to the cluster's log and the other nodes (committing thread)."""
        cluster = self.cluster
        if cluster is None or getattr(self._remote_commit, "active", False):
            return
        v = self.entries.version
        hist = self.entries.history()
        message = hist[-1].message if hist and hist[-1].version == v else None
        sets, dels = [], []
        for ch in self.entries.version_changes(v):
            if ch.after is not None:
                sets.append([ch.after.id, ch.after.kind, dict(ch.after.meta), dict(ch.after.data)])
            else:
                dels.append(ch.id)
        try:
            cluster.publish_commit(message, {"set": sets, "del": dels})
        except WippyError as exc:
            self._host_fault("cluster", f"registry version {v} did not reach the other nodes: {exc}")

    def _entries_changed(self, ids: frozenset[str]) -> None:
        """After each commit (on the committing thread): hosts drop compiled code, subscribers hear."""
        if self.cluster is not None:
            self._publish_commit()
        self.security.refresh()   # a new policy set (or host default scopes) reaches the hosts first
        for h in list(self.hosts.values()):
            if h.running:
                h.post("invalidate", tuple(ids))
        # hosts the commit defined exist before supervision starts children on them (same transaction)
        for entry_id in ids:
            e = self.entries.get(entry_id)
            if e is not None and e.kind == "process.host" and entry_id not in self.hosts:
                try:
                    self.add_host(e.id, HostOptions.from_mapping(e.data.get("host")))
                except HostError:
                    pass   # added meanwhile by another thread
        with self._lock:
            current = self.entries.version
            first = self._reg_notified + 1 if current >= self._reg_notified else current + 1
            self._reg_notified = current
            subs = list(self._reg_subs.items())
        if "registry" in self.events.wanted:
            self.events.emit("registry", reason=f"v{current}")
        if subs:
            self._notify_registry_subscribers(first, current, subs)
        self.supervision.on_commit(ids)

    def _notify_registry_subscribers(self, first: int, current: int,
                                     subs: list[tuple[int, tuple[str, dict[str, Any]]]]) -> None:
        for v in range(first, current + 1):  # every version once, in order
            changes = self.entries.version_changes(v)
            for sub_id, (pid, flt) in subs:
                matched = [{"op": c.op, "id": c.id, "kind": c.kind} for c in changes
                           if matches(c.after or c.before, flt)]  # type: ignore[arg-type]  # one is set
                target = self.hosts.get(parse_pid(pid)[0]) if matched else None
                if target is not None and target.running:
                    target.post("registry_event", pid, sub_id, {"version": v, "changes": matched})

    def _entry_for_lua(self, lua: Any, entry_id: str) -> Any:
        """Called on a host thread: the entry as the scheduler's loader wants it."""
        entry = self.entries.get(entry_id)
        if entry is None:
            raise EntryError(self.entries.unknown_message(entry_id))
        if "source" not in entry.data:
            raise EntryError(f"entry '{entry_id}' is a {entry.kind} entry, not Lua code")
        path = entry.meta.get("source_path")
        chunkname = f"@{path}" if path else f"={entry_id}"
        info: dict[str, Any] = {
            "kind": entry.kind,
            "source": entry.data["source"],
            "chunkname": chunkname,
            "method": entry.data.get("method", "main"),
            "modules": list(entry.data.get("modules", [])),
        }
        imports = entry.data.get("imports")
        if imports:
            info["imports"] = dict(imports)
        return to_lua(lua, info)

    # ------------------------------------------------------------------ processes (any thread)
    def spawn(
        self,
        entry_id: str,
        *args: Any,
        host: str | None = None,
        name: str | None = None,
        monitor: Mailbox | None = None,
        link: Mailbox | None = None,
        options: dict[str, Any] | None = None,
        timeout: float = 30.0,
        as_tree: bool = False,
    ) -> str:
        """Start the ``process.lua`` entry ``entry_id`` on ``host``; returns its PID once it exists.

        Raises :class:`EntryError` (unknown entry, wrong kind), :class:`HostError` (unknown host),
        :class:`ProcessError` (a taken name, a compile error), :class:`PayloadError` (arguments),
        :class:`SecurityError` (the notebook's scope does not allow ``process.spawn`` of it).

        The process runs as the notebook's actor in its scope (``node.security.caller``), or with
        ``as_tree`` as a process of the tree (its entry's ID as actor, its host's default scope).
        """
        h = self.host(host)
        entry = self._check_spawnable(entry_id)
        for a in args:
            check_plain(a)
        opts = {k: v for k, v in (options or {}).items() if k != "sec"}
        if not as_tree:   # a tree process (wippy run's entry) runs in its host's default scope
            if not self.security.open:   # a workflow.lua entry: starting a workflow
                if entry.kind == "workflow.lua":
                    self.security.require(self.security.caller, "workflow.start", entry_id)
                else:
                    self.security.require_spawn(self.security.caller, entry_id, h.name)
            opts["sec"] = self.security.caller
        if name is not None:
            opts["name"] = name
        if monitor is not None:
            opts["monitor"] = monitor.pid
        if link is not None:
            opts["link"] = link.pid
        fut: Any = __import__("concurrent.futures").futures.Future()
        h.post("spawn", None, entry_id, opts or None, list(args), fut)
        try:
            pid: str = fut.result(timeout)
        except TimeoutError:
            raise Timeout(f"host '{h.name}' did not spawn '{entry_id}' within {timeout}s") from None
        return pid

    def _check_spawnable(self, entry_id: str) -> Entry:
        entry = self.entries.require(entry_id)
        if entry.kind not in ("process.lua", "workflow.lua"):
            raise EntryError(
                f"entry '{entry_id}' is a {entry.kind} entry; only process.lua entries can be spawned"
            )
        return entry

    def _spawn_async(self, entry_id: str, host: str, args: list[Any], opts: dict[str, Any] | None) -> str:
        """Called on a host thread for a spawn on another host: allocate the PID, queue the spawn. A host
        written ``node@host`` is a host of that node of the cluster (this node's own name is stripped)."""
        at = host.find("@")
        if at >= 0:
            node, host = host[:at], host[at + 1:]
            if node != self.node_name:
                if self.cluster is None:
                    raise ProcessError(f"host '{node}@{host}' is on node '{node}', and this node is in no "
                                       "cluster (%cluster join URL, or wippy run --cluster URL)")
                pid: str = self.cluster.spawn_remote(node, host, entry_id, args, opts)
                return pid
        h = self.host(host)
        if self._check_spawnable(entry_id).kind == "workflow.lua":   # durable: runtime/workflow.py
            return self.workflows._spawn_elsewhere(entry_id, host, args, opts)
        return self._spawn_here(h, entry_id, args, opts)

    def _spawn_here(self, h: Host, entry_id: str, args: list[Any], opts: dict[str, Any] | None,
                    pid: str | None = None) -> str:
        """Queue a spawn on this node's host ``h`` under a PID allocated now (or ``pid``, one another node
        of the cluster allocated for it)."""
        host = h.name
        pid = pid or h.allocate_pid()
        name = (opts or {}).get("name")
        if name is not None:
            # register now, so the caller can look the name up as soon as spawn returns
            err = self._names_register(str(name), pid)
            if err is not None:
                raise ProcessError(err)
        if "spawn" in self.events.wanted:
            # published here, before the spawn reaches its host (which then records nothing): the
            # caller gets the PID now and may send to it at once
            parent = (opts or {}).get("parent")
            self.events.emit("spawn", pid=pid, peer=parent if isinstance(parent, str) else None, entry=entry_id,
                             host=host, name=str(name) if name is not None else None)
            opts = {**(opts or {}), "traced": True}
        h.post("spawn", pid, entry_id, opts, args, None)
        return pid

    def exec(self, entry_id: str, *args: Any, host: str | None = None, timeout: float | None = None) -> Any:
        """Spawn ``entry_id``, wait for it to end, and return its result value.

        Raises :class:`ProcessExited` if it ended abnormally, :class:`Timeout` after ``timeout`` seconds.
        """
        with self.mailbox() as mb:
            pid = self.spawn(entry_id, *args, host=host, monitor=mb)
            ev = mb.wait_exit(pid, timeout)
        if ev.result.get("error") is not None:
            raise ProcessExited(pid, ev.reason or "error", ev.result.get("error"))
        return ev.result.get("value")

    def call_function(self, entry_id: str, *args: Any, host: str | None = None, timeout: float | None = 30.0) -> Any:
        """Call the ``function.lua`` entry ``entry_id`` with ``args`` and return its result.

        It runs in a short-lived process on ``host`` (as ``funcs.call`` runs in its caller), so it may
        wait and send like any process. Several results come back as a list. Raises EntryError (unknown
        entry, wrong kind), LuaError (the function raised), Timeout.
        """
        entry = self.entries.require(entry_id)
        if entry.kind != "function.lua":
            raise EntryError(f"entry '{entry_id}' is a {entry.kind} entry; call_function needs a function.lua entry")
        for a in args:
            check_plain(a)
        self._require("funcs.call", entry_id)
        return self._call_as(self.security.caller, entry_id, list(args), host, timeout)

    def _call_as(self, caller: int, entry_id: str, args: list[Any], host: str | None, timeout: float | None) -> Any:
        """Run a function entry in a short-lived process with security context ``caller`` (any thread)."""
        h = self.host(host)
        with self.mailbox() as mb:
            def start(ctx: HostContext) -> str:
                pid, err = _pair(ctx.scheduler.call_function(mb.pid.encode(), entry_id.encode(),
                                                             ctx.to_lua(list(args)), len(args), caller))
                if pid is None:
                    raise ProcessError(_text(err))
                return _text(pid)

            pid = h.call(start)
            ev = mb.wait_exit(pid, timeout)
        error = ev.result.get("error")
        if error is not None:
            raise LuaError(f"{entry_id}: {error}")
        return ev.result.get("value")

    def send(self, dest: str, topic: str, payload: Any = None, *, sender: str | None = None) -> None:
        """Send a message to a PID or a registered name (copied; returns at once).

        Raises :class:`ProcessError` for an unknown name, host or a local process known to have ended.
        """
        if not isinstance(topic, str) or not topic:
            raise ProcessError("send: topic must be a non-empty string")
        if topic.startswith("@"):
            raise ProcessError(f"send: topic '{topic}' is reserved (topics starting with '@' belong to the runtime)")
        check_plain(payload)
        self._require("process.send", dest)
        pid = self.resolve(dest)
        if "send" in self.events.wanted:   # published before it is routed: before any answer to it
            self.events.emit("send", pid=pid, peer=sender, topic=topic, size=payload_size(payload),
                             preview=preview(payload), host=_host_of(pid))
        self._route("send", pid, sender, topic, payload)

    def resolve(self, dest: str) -> str:
        """A PID for a PID or a registered name; :class:`ProcessError` for an unknown name."""
        if isinstance(dest, str) and dest.startswith("{"):
            parse_pid(dest)
            return dest
        pid = self._names_lookup(dest)
        if pid is None:
            raise ProcessError(f"no process is registered as {dest!r}")
        return pid

    def lookup(self, name: str) -> str | None:
        """The PID registered as ``name``, or None."""
        return self._names_lookup(name)

    def register(self, name: str, pid: str) -> None:
        """Register ``name`` for ``pid`` (a Lua process or a Python mailbox)."""
        err = self._names_register(name, pid)
        if err is not None:
            raise ProcessError(err)

    def unregister(self, name: str) -> bool:
        return self._names_unregister(name)

    def terminate(self, pid: str) -> None:
        """Kill a process at once (abnormal exit ``terminated``)."""
        self._require("process.terminate", pid)
        self._route("terminate", self.resolve(pid), None, None, None)

    def cancel(self, pid: str, reason: str | None = None) -> None:
        """Ask a process to stop (CANCEL event, then its grace period, then terminate)."""
        self._require("process.cancel", pid)
        self._route("cancel", self.resolve(pid), None, reason, None)

    def mailbox(self, name: str | None = None) -> Mailbox:
        """A Python-side process: its own PID, an inbox, events; close it when done."""
        mb = Mailbox(self._parts, self._new_python_pid())
        self._attach_mailbox(mb)
        if name is not None:
            self.register(name, mb.pid)
        return mb

    def _new_python_pid(self) -> str:
        """A PID for something that lives in Python (a mailbox, a supervisor). Any thread."""
        return f"{self.pid_prefix(PYTHON_HOST)}0x{next(self._mailbox_ids):05x}}}"

    def _attach_mailbox(self, mb: Mailbox) -> None:
        with self._lock:
            self._mailboxes[mb.pid] = mb

    def _on_host_thread(self) -> bool:
        """Whether the calling thread is one of this node's hosts (which must never wait on them)."""
        return any(h.on_thread() for h in list(self.hosts.values()))

    def _reply(self, pid: str, token: int, value: Any) -> None:
        """Answer a Lua call that returned a token (``supervisor.start``): the process gets ``value``."""
        h = self.hosts.get(parse_pid(pid)[0])
        if h is not None and h.running:
            h.post("reply", pid, token, value)

    def _mailbox_closed(self, pid: str) -> None:
        with self._lock:
            self._mailboxes.pop(pid, None)
        self._names_release(pid)

    def alive(self, pid: str) -> bool:
        """True while the process runs (asks its host)."""
        host, _ = parse_pid(pid)
        if host == PYTHON_HOST:
            return pid in self._mailboxes or self.supervision.owns(pid)
        h = self.hosts.get(host)
        if h is None or not h.running:
            return False
        return bool(h.call(lambda ctx: ctx.scheduler.alive(pid.encode())))

    def exit_reason(self, pid: str) -> tuple[str, str | None] | None:
        """``(reason, error)`` of a recently ended process, else None."""
        with self._lock:
            return self._exits.get(pid)

    def on_exit(self, listener: Callable[[str, str, str | None], None]) -> None:
        """Call ``listener(pid, reason, error)`` on every exit, on the exiting process's host thread."""
        self._exit_listeners.append(listener)

    def call(self, fn: Callable[[HostContext], Any], host: str | None = None, timeout: float | None = 30.0) -> Any:
        """Run ``fn(ctx)`` on a host's thread (its Lua state in ``ctx.lua``) and return the result."""
        return self.host(host).call(fn, timeout)

    def shell(self, host: str | None = None) -> Shell:
        """The node's shell process (created on first use): runs Lua cells, keeps their globals."""
        # not under self._lock: starting the shell waits on the host, whose callbacks take that lock
        with self._shell_lock:
            if self._shell is None:
                self._shell = Shell(self, host or DEFAULT_HOST)
            return self._shell

    def _cell_begin(self, cell: int) -> None:
        if self._shell is not None:
            self._shell._cell_begin(int(cell))

    def _cell_done(self, cell: int, ok: Any, kind: Any, text: Any, value: Any = None) -> None:
        if self._shell is not None:
            self._shell._cell_done(int(cell), bool(ok), kind, text, value)

    def _shell_poll(self) -> bool:
        shell = self._shell
        return shell is not None and shell._poll()

    # ------------------------------------------------------------------ observing
    def statistics(self, memory: bool = False, processes: bool = True) -> NodeStatistics:
        """Counters per host and per process; ``memory=True`` also estimates bytes per process.

        Each host answers on its own thread, which pauses its processes meanwhile (about 1 s per 100 k
        processes); ``processes=False`` asks for the host counters only, which costs nothing.
        """
        hosts: dict[str, HostStatistics] = {}
        procs: list[ProcessStatistics] = []
        with self._lock:
            names = {pid: tuple(sorted(ns)) for pid, ns in self._names_by_pid.items()}
        for name, h in list(self.hosts.items()):
            if not h.running:
                continue

            def snap(ctx: HostContext, h: Host = h) -> tuple[dict[str, Any], list[dict[str, Any]]]:
                st = from_lua(ctx.scheduler.stats())
                st["lua_memory"] = ctx.lua.get_memory_used()
                ps: list[dict[str, Any]] = []
                after = None
                while processes:  # in pages, on this one host call: the table cannot change meanwhile
                    ctx.room(PAGE * 1024)
                    page, after = ctx.scheduler.processes(memory, after, PAGE)
                    converted = from_lua(page)
                    if isinstance(converted, list):
                        ps.extend(converted)
                    if after is None:
                        break
                return st, ps

            st, ps = h.call(snap)
            actors: dict[int, str] = {}
            hosts[name] = HostStatistics(
                name=name, processes=st["processes"], runnable=st["runnable"], timers=st["timers"],
                spawned=st["spawned"], exited=st["exited"], delivered=st["delivered"],
                dropped=st["dropped"], resumes=st["resumes"], heap_kills=st["heap_kills"],
                budget_kills=st["budget_kills"], lua_memory=st["lua_memory"],
                instruction_budget=h.options.instruction_budget, heap_limit=h.options.heap_limit,
                tracing=h.tracing,
            )
            for p in ps:
                procs.append(
                    ProcessStatistics(
                        pid=p["pid"], entry=p["entry"], host=name, status=p["status"],
                        mailbox=p["mailbox"], messages_in=p["messages_in"], messages_out=p["messages_out"],
                        instructions=p["instructions"], resumes=p["resumes"], memory=p.get("memory"),
                        uptime=max(0.0, float(p["uptime"])),
                        names=names.get(p["pid"], ()),
                        links=tuple(str(x) for x in (p.get("links") or ())),
                        actor=self._actor_name(p.get("sec"), actors),
                    )
                )
        procs.sort(key=lambda p: (p.host, p.pid))
        return NodeStatistics(hosts, procs)

    def _actor_name(self, ctx: Any, seen: dict[int, str]) -> str:
        """The actor ID of a security context key (cached in ``seen``); "" for none or an unknown key."""
        if not isinstance(ctx, int):
            return ""
        name = seen.get(ctx)
        if name is None:
            try:
                name = self.security.actor_of(ctx).id
            except SecurityError:
                name = ""
            seen[ctx] = name
        return name

    def logs(self, pid: str | None = None) -> list[str]:
        """Lines a process printed or logged (all processes, prefixed with the PID, when pid is None)."""
        with self._lock:
            if pid is not None:
                return list(self._logs.get(pid, ()))
            return [f"{p} {line}" for p, lines in self._logs.items() for line in lines]

    # ------------------------------------------------------------------ the event bus
    def _events_changed(self) -> None:
        """Subscriptions changed (any thread): tell every host what to record in Lua (spawns, sends)."""
        with self._trace_lock:   # states are computed and posted in one order: the last post is current
            state = self.events.trace_filter()
            if state == self._trace_state:
                return
            self._trace_state = state
            with self._lock:
                hosts = list(self.hosts.values())
            for h in hosts:
                h.post("trace", state[0], state[1])

    def _publish_exit(self, pid: str, reason: str, error: str | None) -> None:
        if "exit" in self.events.wanted:
            self.events.emit("exit", pid=pid, host=_host_of(pid), reason=reason,
                             error=error.split("\n", 1)[0] if error else None)

    def _traced_host(self, host: Host) -> Host:
        """A new host (under ``self._lock``) starts with the current trace switch and security mode."""
        on, pids = self._trace_state
        if on:
            host.post("trace", on, pids)
        sec = self.security
        host.post("security", not sec.open, sec.caller, sec.generation)
        return host

    # ------------------------------------------------------------------ security
    def _security_note(self, text: str) -> None:
        self._keep("security", f"[info] {text}")

    def _security_changed(self) -> None:
        """The policy set or the notebook's identity changed (any thread): tell every host."""
        sec = self.security
        with self._security_lock:   # posted in one order: the last post is current on every host
            with self._lock:
                hosts = list(self.hosts.values())
            for h in hosts:
                h.post("security", not sec.open, sec.caller, sec.generation)

    def _require(self, action: str, resource: str) -> None:
        """A privileged call from Python, made as :attr:`security` ``.caller``; raises SecurityError."""
        sec = self.security
        if not sec.open:
            sec.require(sec.caller, action, resource)

    def whoami(self, actor: str | None = None, groups: Iterable[str] | None = None,
               meta: dict[str, Any] | None = None, reset: bool = False) -> tuple[str, list[str]]:
        """Narrow (or with ``reset`` restore) the notebook's identity: the actor calls from Python and
        the shell process run as, and its scope (the policies of ``groups``; a widening is refused).
        Returns (actor id, policy IDs of the scope; ``["*"]`` for every right)."""
        sec = self.security
        ctx = sec.whoami(actor, meta, groups, reset)
        return sec.actor_of(ctx).id, sec.describe_scope(sec.parts(ctx)[1])

    def _traced(self, lost: int, values: list[Any]) -> None:
        """Records a host's Lua side made in one step (host thread): ``kind, pid, peer, a, b, c`` each,
        where a send has ``a, b, c = topic, size, preview`` and a spawn ``a, b = entry, name``."""
        rows: list[tuple[Any, ...]] = []
        add = rows.append
        text: dict[bytes, str] = {}     # PIDs, topics and entries repeat: decode each once per step
        hosts: dict[str, str] = {}
        for i in range(0, len(values) - 5, 6):
            kind, pid_b, peer_b, a, b, c = values[i:i + 6]
            if kind == b"teach.step":   # teaching mode: a step's line, before what it caused
                add(("teach.step", None, None, _s(a), None, None, None, _s(pid_b)))
                continue
            pid = text.get(pid_b)
            if pid is None:
                pid = text[pid_b] = _s(pid_b)
            host = hosts.get(pid)
            if host is None:
                host = hosts[pid] = _host_of(pid)
            peer = None
            if peer_b:
                peer = text.get(peer_b)
                if peer is None:
                    peer = text[peer_b] = _s(peer_b)
            aa = text.get(a)
            if aa is None:
                aa = text[a] = _s(a)
            if kind == b"send":
                add(("send", pid, peer, aa, b, c.decode("utf-8", "replace") if c else None, None, host))
            else:
                add(("spawn", pid, peer, None, None, None, aa, host, None, None, _s(b) if b else None))
        self.events.emit_many(rows, int(lost or 0))

    def _tree_event(self, ev: TreeEvent) -> None:
        """A change of the supervision tree (supervision thread)."""
        if "tree" in self.events.wanted:
            self.events.emit("tree", pid=ev.pid, entry=ev.id, reason=ev.status, error=ev.reason, change=ev.kind)

    # ------------------------------------------------------------------ host callbacks (host threads)
    def _keep(self, pid: str, line: str) -> None:
        if len(line) > MAX_LINE:  # logs live in Python, outside the host's heap limit: bound them
            line = line[:MAX_LINE] + f" ... ({len(line) - MAX_LINE} more characters)"
        with self._lock:
            buf = self._logs.get(pid)
            if buf is None:
                buf = self._logs[pid] = collections.deque(maxlen=LOG_LINES)
            buf.append(line)

    def _output(self, pid: str, text: str) -> None:
        self._keep(pid, text)
        shell = self._shell
        if shell is not None and pid == shell.pid and shell._output(text):
            return  # the shell's print belongs to the cell that runs
        if self._output_sink is not None:
            self._output_sink(pid, text)

    def _log(self, pid: str, level: str, msg: str, fields: Any) -> None:
        extra = ""
        if isinstance(fields, dict) and fields:
            extra = " " + " ".join(f"{k}={v!r}" for k, v in fields.items())
        line = f"[{level}] {msg}{extra}"
        self._keep(pid, line)
        if level in ("warn", "error") and self._output_sink is _default_output:
            sys.stderr.write(f"{pid} {line}\n")
            sys.stderr.flush()

    def _on_exit(self, pid: str, reason: str, error: str | None) -> None:
        with self._lock:
            for sub_id in [k for k, (p, _) in self._reg_subs.items() if p == pid]:
                del self._reg_subs[sub_id]
            self._exits[pid] = (reason, error)
            self._exit_order.append(pid)
            if len(self._exit_order) > 10_000:
                self._exits.pop(self._exit_order.popleft(), None)
        self._publish_exit(pid, reason, error)
        if error is not None and reason not in ("normal", "cancelled"):
            self._keep(pid, f"[exit] {reason}: {error}")
        for listener in list(self._exit_listeners):
            try:
                listener(pid, reason, error)
            except Exception as exc:  # a listener's bug must not hurt the host
                self._host_fault("exit listener", repr(exc))

    def _dropped(self, dest: str) -> None:
        pass

    def _host_fault(self, where: str, message: str) -> None:
        with self._lock:
            self.faults.append(f"{where}: {message}")
        sys.stderr.write(f"wippy: {where}: {message}\n")

    def _names_lookup(self, name: str) -> str | None:
        with self._lock:
            pid = self._names.get(name)
        cluster = self.cluster
        if pid is None and cluster is not None:   # a global name of the cluster
            pid = cluster.lookup_global(name)
        return pid

    def _names_register(self, name: str, pid: str, global_: bool = False) -> str | None:
        if global_:
            cluster = self.cluster
            if cluster is None:
                return (f"name '{name}': a global name needs a cluster (%cluster join URL, or wippy run "
                        "--cluster URL); without one, register it without {global = true}")
            if pid_node(pid) != self.node_name:
                return f"name '{name}': a global name is registered by a process of its own node, not {pid}"
            with self._lock:
                if name in self._names:
                    return f"name '{name}' is already registered by {self._names[name]} (a name of this node)"
            try:
                err: str | None = cluster.register_global(name, pid)
                return err
            except WippyError as exc:
                return str(exc)
        with self._lock:
            holder = self._names.get(name)
            if holder is not None and holder != pid:
                return f"name '{name}' is already registered by {holder}"
            self._names[name] = pid
            self._names_by_pid.setdefault(pid, set()).add(name)
        return None

    def _names_unregister(self, name: str) -> bool:
        with self._lock:
            pid = self._names.pop(name, None)
        if pid is None:
            cluster = self.cluster
            try:
                return bool(cluster is not None and cluster.unregister_global(name))
            except WippyError:
                return False
        with self._lock:
            names = self._names_by_pid.get(pid)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._names_by_pid[pid]
            return True

    def _names_release(self, pid: str) -> None:
        with self._lock:
            for name in self._names_by_pid.pop(pid, ()):
                if self._names.get(name) == pid:
                    del self._names[name]
        cluster = self.cluster
        if cluster is not None and cluster.holds_global(pid):
            try:
                cluster.release_global(pid)
            except WippyError as exc:
                self._host_fault("cluster", f"the global names of {pid} could not be released: {exc}")

    def pid_prefix(self, host: str) -> str:
        """How the PIDs of ``host`` on this node begin: ``{host|``, or ``{node@host|`` in a cluster."""
        return f"{{{self.node_name}@{host}|" if self.node_name else f"{{{host}|"

    def _route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """Carry an operation to the host (or Python mailbox) that owns ``dest``. Any thread.

        op: send(a=from, b=topic, c=payload) | event(a=event) | monitor(a=watcher, b=kind) |
        demonitor(a=watcher) | link(a=from) | unlink(a=from) | link_down(a=from, b=result, c=reason) |
        terminate(a=from) | cancel(a=from, b=reason).
        """
        node = pid_node(dest) if isinstance(dest, str) else None
        if node is not None and node != self.node_name:   # a process of another node: over its link
            cluster = self.cluster
            if cluster is None:
                raise ProcessError(f"{dest} is a PID of node '{node}', and this node is in no cluster "
                                   "(%cluster join URL, or wippy run --cluster URL)")
            cluster.route(node, op, dest, a, b, c)
            return
        host, _ = parse_pid(dest)
        if host == PYTHON_HOST:
            with self._lock:
                mb = self._mailboxes.get(dest)
            if mb is None and self.supervision.owns(dest):
                self.supervision.control(op, dest, a, b, c)
                return
            if mb is None:
                if op == "send":
                    raise ProcessError(f"mailbox {dest} is closed")
                if op == "monitor" and a:
                    # what has ended (a closed mailbox, a stopped supervisor) answers a monitor at once
                    self._route("event", a, {"kind": "pid.exit", "from": dest, "result": {"error": "noproc"},
                                             "reason": "noproc"}, None, None)
                return
            if op == "send":
                mb._put(Message(topic=b, sender=a, payload=c))
            elif op == "event":
                ev = a or {}
                mb._put_event(Event(kind=ev.get("kind", ""), sender=ev.get("from"),
                                    result=ev.get("result") or {}, reason=ev.get("reason")))
            elif op == "link_down":
                mb._put_event(Event(kind="pid.link.down", sender=a, result=b or {}, reason=c))
            return
        h = self.hosts.get(host)
        if h is None or not h.running:
            raise HostError(f"unknown host '{host}'; hosts: {', '.join(sorted(self.hosts)) or '(none)'}")
        if op == "send":
            h.post("deliver", dest, a, b, c)
        elif op == "event":
            h.post("event", dest, a)
        else:
            h.post("control", op, dest, a, b, c)

    # used by Mailbox
    def _monitor_from(self, watcher: str, pid: str, kind: str = "monitor") -> None:
        self._route("monitor", pid, watcher, kind, None)

    def _demonitor_from(self, watcher: str, pid: str) -> None:
        self._route("demonitor", pid, watcher, None, None)


def _tree_from(raw: Any) -> TreeNode:
    """A TreeNode from its plain-data form (another node's answer)."""
    d = dict(raw)
    d["children"] = tuple(_tree_from(c) for c in d.get("children") or ())
    return TreeNode(**d)


class _ClusterPort:
    """The node as its cluster sees it (runtime/cluster.py's ClusterOwner)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.node_name = node.node_name

    def route_local(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        """An operation from another node: to its target here (a frame for a PID of some other node is
        dropped, never forwarded again)."""
        if pid_node(dest) != self.node_name:
            return
        self._node._route(op, dest, a, b, c)

    def fault(self, where: str, message: str) -> None:
        self._node._host_fault(where, message)

    def apply_remote_commit(self, node: str, commit: dict[str, Any]) -> None:
        self._node._apply_remote_commit(node, commit)

    def deliver_many(self, sends: list[tuple[str, Any, Any, Any]]) -> None:
        """Messages from another node: one host queue item per host for the whole batch, order kept."""
        n = self._node
        me = self.node_name
        batch: list[tuple[str, Any, Any, Any]] = []
        host: Host | None = None
        for item in sends:
            dest = item[0]
            h = None
            if isinstance(dest, str) and pid_node(dest) == me:
                h = n.hosts.get(parse_pid(dest)[0])
            if h is None or not h.running:   # a Python mailbox, or no such host: one by one
                if batch and host is not None:
                    host.post("deliver_many", batch)
                    batch, host = [], None
                try:
                    self.route_local("send", dest, item[1], item[2], item[3])
                except WippyError:
                    pass   # as on one node: a message to a process that has ended is dropped
                continue
            if h is not host and batch and host is not None:
                host.post("deliver_many", batch)
                batch = []
            host = h
            batch.append(item)
        if batch and host is not None:
            host.post("deliver_many", batch)

    def deliver_blob(self, host: str, blob: bytes, count: int) -> bool:
        """A batch of messages another node's host encoded for host ``host`` here (scheduler/xnode.lua):
        one queue item, read on the host thread. False if there is no such host running (dropped)."""
        h = self._node.hosts.get(host)
        if h is None or not h.running:
            return False
        h.post("deliver_blob", blob)
        return True

    def peers_changed(self, up: list[str]) -> None:
        """The other nodes up are now ``up``: every host batches its messages to those (xnode.lua)."""
        for h in list(self._node.hosts.values()):
            if h.running:
                h.post("peers", list(up))

    def answer(self, op: str, arg: Any) -> Any:
        if op == "processes":
            return [dataclasses.asdict(p) for p in self._node.statistics(memory=bool(arg)).processes]
        if op == "tree":
            return dataclasses.asdict(self._node.supervision.tree())
        raise ProcessError(f"unknown question '{op}'")

    def spawn_for(self, node: str, pid: str, host: str, entry_id: str, args: list[Any],
                  opts: dict[str, Any] | None) -> None:
        """Another node asked for a spawn here under ``pid`` (the links' thread; never blocks on it)."""
        n = self._node
        try:
            if not host:
                raise ProcessError(f"node {n.node_name} has lost the cluster's database and takes no new work "
                                   "until it is back; spawn elsewhere or retry")
            h = n.host(host)
            n._check_spawnable(entry_id)
            n._spawn_here(h, entry_id, args, opts, pid=pid)
        except WippyError as exc:   # it cannot start: whoever watches or links hears it ended
            message = f"spawn on node {n.node_name}: {exc}"
            n._host_fault(f"cluster (a spawn for node {node})", message)
            o = opts or {}
            result = {"error": message}
            if o.get("monitor"):
                ev: dict[str, Any] = {"kind": "pid.exit", "from": pid, "result": result, "reason": "error"}
                if o.get("monitor_kind") == "exec":
                    ev["exec"] = True
                n._route("event", str(o["monitor"]), ev, None, None)
            if o.get("link"):
                n._route("link_down", str(o["link"]), pid, result, "error")


class _Parts:
    """The node as its parts see it: the ports of runtime/host_port.py (:class:`~.host_port.HostPort`),
    mailbox.py (``MailboxOwner``), supervisor.py (``SupervisionOwner``) and workflow.py
    (``WorkflowsOwner``), implemented by calling the node. The parts are given this object, never the
    :class:`Node`, so they import nothing of node.py (see "Layers" in docs/architecture.md).
    """

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    # ---- the node's state the parts read
    @property
    def clock(self) -> Clock:
        return self._node.clock

    @property
    def entries(self) -> Registry:
        return self._node.entries

    @property
    def hosts(self) -> dict[str, Host]:
        return self._node.hosts

    @property
    def data_dir(self) -> Path | None:
        return self._node.data_dir

    @property
    def started(self) -> bool:
        return self._node.started

    def host(self, name: str | None = None) -> Host:
        return self._node.host(name)

    # ---- AgentsOwner (agents.py: any thread)
    def entry(self, entry_id: str) -> Entry | None:
        return self._node.entries.get(entry_id)

    def all_entries(self) -> list[Entry]:
        return list(self._node.entries.entries())

    def require_as(self, ctx: int, action: str, resource: str, pid: str | None) -> None:
        sec = self._node.security
        if not sec.open:
            sec.require(ctx, action, resource, pid)

    def actor_name(self, ctx: int) -> str:
        return self._node.security.actor_of(ctx).id

    def caller_context(self) -> int:
        return self._node.security.caller

    def call_tool(self, ctx: int, entry_id: str, args: dict[str, Any], timeout: float) -> Any:
        return self._node._call_as(ctx, entry_id, [args], None, timeout)

    def apply_as(self, ctx: int, entries: list[Entry], message: str) -> int:
        sec = self._node.security
        if not sec.open:
            for e in entries:
                sec.require(ctx, "registry.apply", e.id, None)
        return self._node.entries.apply(entries, message=message)

    def deliver(self, pid: str, topic: str, payload: Any) -> None:
        with contextlib.suppress(ProcessError):   # the listener may have gone meanwhile
            self._node._route("send", self._node.resolve(pid), None, topic, payload)

    def agents_call(self, op: str, pid: str, ctx: int, args: list[Any]) -> Any:
        return self._node.agents.lua_call(op, pid, ctx, args)

    # ---- HostPort (host threads)
    def output(self, pid: str, text: str) -> None:
        self._node._output(pid, text)

    def log(self, pid: str, level: str, msg: str, fields: Any) -> None:
        self._node._log(pid, level, msg, fields)

    def lookup_name(self, name: str) -> str | None:
        return self._node._names_lookup(name)

    def register_name(self, name: str, pid: str, global_: bool = False) -> str | None:
        return self._node._names_register(name, pid, global_)

    def unregister_name(self, name: str) -> bool:
        return self._node._names_unregister(name)

    def release_names(self, pid: str) -> None:
        self._node._names_release(pid)

    def entry_for_lua(self, lua: Any, entry_id: str) -> Any:
        return self._node._entry_for_lua(lua, entry_id)

    def spawn_elsewhere(self, entry_id: str, host: str, args: list[Any], opts: dict[str, Any] | None) -> str:
        return self._node._spawn_async(entry_id, host, args, opts)

    def route(self, op: str, dest: str, a: Any, b: Any, c: Any) -> None:
        self._node._route(op, dest, a, b, c)

    def send_blob(self, node: str, host: str, blob: bytes, count: int) -> None:
        cluster = self._node.cluster
        if cluster is not None:
            cluster.send_blob(node, host, blob, count)

    def cluster_peers(self) -> list[str]:
        cluster = self._node.cluster
        return cluster.up() if cluster is not None else []

    def security_call(self, host: str, op: str, args: list[Any]) -> tuple[Any, ...]:
        return self._node.security.lua_call(host, op, args)

    def registry_call(self, op: str, arg: Any) -> Any:
        return self._node._registry_call(op, arg)

    def supervisor_call(self, op: str, caller: str, arg: Any) -> Any:
        return self._node.supervision.lua_call(op, caller, arg)

    def workflow_callback(self, host: str, lua: Any, room: Callable[[int], None]) -> Callable[..., Any]:
        return self._node.workflows.lua_callback(host, lua, room)

    def process_exited(self, pid: str, reason: str, error: str | None) -> None:
        self._node._on_exit(pid, reason, error)

    def publish_exit(self, pid: str, reason: str, error: str | None) -> None:
        self._node._publish_exit(pid, reason, error)

    def dropped(self, dest: str) -> None:
        self._node._dropped(dest)

    def fault(self, where: str, message: str) -> None:
        self._node._host_fault(where, message)

    def traced(self, lost: int, values: list[Any]) -> None:
        self._node._traced(lost, values)

    def cell_begin(self, cell: int) -> None:
        self._node._cell_begin(cell)

    def cell_done(self, cell: int, ok: Any, kind: Any, text: Any, value: Any = None) -> None:
        self._node._cell_done(cell, ok, kind, text, value)

    def shell_poll(self) -> bool:
        return self._node._shell_poll()

    def python_quiet(self) -> bool:
        return self._node.supervision.quiet()

    def pid_prefix(self, host: str) -> str:
        return self._node.pid_prefix(host)

    # ---- MailboxOwner (any thread)
    def send(self, dest: str, topic: str, payload: Any = None, *, sender: str | None = None) -> None:
        self._node.send(dest, topic, payload, sender=sender)

    def spawn(self, entry_id: str, *args: Any, host: str | None = None, **kw: Any) -> str:
        return self._node.spawn(entry_id, *args, host=host, **kw)

    def resolve(self, dest: str) -> str:
        return self._node.resolve(dest)

    def monitor_from(self, watcher: str, pid: str, kind: str = "monitor") -> None:
        self._node._monitor_from(watcher, pid, kind)

    def demonitor_from(self, watcher: str, pid: str) -> None:
        self._node._demonitor_from(watcher, pid)

    def mailbox_closed(self, pid: str) -> None:
        self._node._mailbox_closed(pid)

    # ---- SupervisionOwner and WorkflowsOwner (any thread)
    def keep_log(self, pid: str, line: str) -> None:
        self._node._keep(pid, line)

    def new_python_pid(self) -> str:
        return self._node._new_python_pid()

    def attach_mailbox(self, mb: Mailbox) -> None:
        self._node._attach_mailbox(mb)

    def on_host_thread(self) -> bool:
        return self._node._on_host_thread()

    def reply(self, pid: str, token: int, value: Any) -> None:
        self._node._reply(pid, token, value)

    def terminate(self, pid: str) -> None:
        # the node's own parts (supervisors shutting children down) are not the notebook's calls
        self._node._route("terminate", self._node.resolve(pid), None, None, None)

    def cancel(self, pid: str, reason: str | None = None) -> None:
        self._node._route("cancel", self._node.resolve(pid), None, reason, None)

    def require(self, action: str, resource: str) -> None:
        self._node._require(action, resource)

    def on_exit(self, listener: Callable[[str, str, str | None], None]) -> None:
        self._node.on_exit(listener)
