"""Entries and their validation.

An entry is ``{id, kind, meta, data}`` (API.md "Registry entries"). :func:`check_entry` validates one
entry's kind fields and names the field at fault; :class:`~.registry.Registry` holds them, versioned.
Pure functions: any thread.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import EntryError
from .retry import RetryPolicy
from .security_policy import POLICY_KIND, parse_policy

__all__ = ["KINDS", "LUA_KINDS", "Entry", "check_entry", "validate_id"]

LUA_KINDS = frozenset({"process.lua", "function.lua", "library.lua", "workflow.lua"})
KINDS = LUA_KINDS | frozenset(
    {"process.host", "process.service", "process.supervisor", "registry.entry", POLICY_KIND}
)
MODULES = frozenset(
    {"process", "channel", "time", "json", "logger", "ctx", "registry", "funcs", "supervisor", "workflow", "uuid",
     "security", "llm", "prompt", "agent"}
)

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
    if entry.kind == "function.lua" and entry.data.get("retry") is not None:
        RetryPolicy.from_mapping(entry.data["retry"], f"entry '{entry.id}': retry")
    if entry.kind == POLICY_KIND:
        parse_policy(entry.id, entry.data)   # the field path of the first fault (security_policy.py)
    if entry.kind == "process.host":
        host = entry.data.get("host", {})
        if host is not None and not isinstance(host, dict):
            raise EntryError(f"entry '{entry.id}': `host:` must be a mapping (workers, instruction_budget, ...)")
