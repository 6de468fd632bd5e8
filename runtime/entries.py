"""The entry table: the minimal seam where the versioned registry will plug in.

An entry is ``{id, kind, meta, data}`` (API.md "Registry entries"). This table holds the current entries,
applies a batch all or nothing, and tells its subscribers (the hosts) which IDs changed so they drop
compiled code. Versions, history and transactions come with the registry issue; they will replace this
class behind the same three calls: :meth:`EntryTable.get`, :meth:`EntryTable.apply`,
:meth:`EntryTable.subscribe`. Thread-safe: any thread may read or apply.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import EntryError

__all__ = ["KINDS", "LUA_KINDS", "Entry", "EntryTable", "validate_id"]

LUA_KINDS = frozenset({"process.lua", "function.lua", "library.lua", "workflow.lua"})
KINDS = LUA_KINDS | frozenset(
    {"process.host", "process.service", "process.supervisor", "registry.entry"}
)
MODULES = frozenset({"process", "channel", "time", "json", "logger", "ctx", "registry", "funcs"})

_ID = re.compile(r"^[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*:[A-Za-z_][\w\-.]*$")


def validate_id(entry_id: str) -> str:
    """Return ``entry_id`` if it reads ``namespace:name``, else raise :class:`EntryError`."""
    if not isinstance(entry_id, str) or not _ID.match(entry_id):
        raise EntryError(
            f"invalid entry ID {entry_id!r}: IDs read 'namespace:name' (for example 'app.workers:handler')"
        )
    return entry_id


@dataclass(frozen=True)
class Entry:
    """One registry entry.

    ``data`` holds the kind's fields (every YAML key but ``name``, ``kind`` and ``meta``); for Lua kinds
    ``data["source"]`` is the Lua text itself (a ``file://`` source has been read), ``data["method"]``
    the entry function, and ``meta["source_path"]`` the file it came from, when it came from one.
    """

    id: str
    kind: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split(":", 1)[1]


def check_entry(entry: Entry) -> None:
    """Validate one entry's kind fields; raise :class:`EntryError` naming the entry and the field."""
    validate_id(entry.id)
    if entry.kind not in KINDS:
        raise EntryError(
            f"entry '{entry.id}': unknown kind '{entry.kind}' (kinds: {', '.join(sorted(KINDS))})"
        )
    if entry.kind in LUA_KINDS:
        source = entry.data.get("source")
        if not isinstance(source, str) or not source.strip():
            raise EntryError(
                f"entry '{entry.id}': a {entry.kind} entry needs `source:` (inline Lua or file://path)"
            )
        method = entry.data.get("method", "main")
        if not isinstance(method, str) or not method:
            raise EntryError(f"entry '{entry.id}': `method:` must be a function name")
        modules = entry.data.get("modules", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise EntryError(f"entry '{entry.id}': `modules:` must be a list of module names")
        for m in modules:
            if m not in MODULES:
                raise EntryError(
                    f"entry '{entry.id}': unknown module '{m}' in `modules:` "
                    f"(modules: {', '.join(sorted(MODULES))})"
                )
        imports = entry.data.get("imports", {})
        if not isinstance(imports, dict):
            raise EntryError(f"entry '{entry.id}': `imports:` must map an alias to a library entry ID")
        for alias, target in imports.items():
            if not isinstance(alias, str) or not alias.isidentifier():
                raise EntryError(f"entry '{entry.id}': import alias {alias!r} is not a Lua name")
            validate_id(target)
    if entry.kind == "process.host":
        host = entry.data.get("host", {})
        if host is not None and not isinstance(host, dict):
            raise EntryError(f"entry '{entry.id}': `host:` must be a mapping (workers, instruction_budget, ...)")


class EntryTable:
    """The current entries of a node, keyed by ID. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._version = 0
        self._subscribers: list[Callable[[frozenset[str]], None]] = []

    @property
    def version(self) -> int:
        """Increases by one with every applied batch."""
        return self._version

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            return self._entries.get(entry_id)

    def require(self, entry_id: str) -> Entry:
        """The entry, or :class:`EntryError` naming similar IDs."""
        entry = self.get(entry_id)
        if entry is None:
            raise EntryError(self.unknown_message(entry_id))
        return entry

    def unknown_message(self, entry_id: str) -> str:
        with self._lock:
            ids = sorted(self._entries)
        ns = entry_id.split(":", 1)[0]
        near = [i for i in ids if i.startswith(ns + ":")] or ids
        shown = ", ".join(near[:8]) + (" ..." if len(near) > 8 else "")
        return f"unknown entry '{entry_id}'" + (f"; entries: {shown}" if shown else "; no entries are loaded")

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def apply(self, upsert: Iterable[Entry] = (), delete: Iterable[str] = ()) -> int:
        """Apply a batch all or nothing; returns the new version. Validates every entry first."""
        new = list(upsert)
        gone = list(delete)
        for e in new:
            check_entry(e)
        with self._lock:
            for d in gone:
                if d not in self._entries:
                    raise EntryError(f"cannot delete '{d}': no such entry")
            for e in new:
                self._entries[e.id] = e
            for d in gone:
                del self._entries[d]
            self._version += 1
            version = self._version
            subscribers = list(self._subscribers)
        changed = frozenset([e.id for e in new] + gone)
        for notify in subscribers:
            notify(changed)
        return version

    def subscribe(self, notify: Callable[[frozenset[str]], None]) -> None:
        """Call ``notify(changed_ids)`` after each batch, on the applying thread."""
        with self._lock:
            self._subscribers.append(notify)
