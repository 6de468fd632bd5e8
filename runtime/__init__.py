"""wippy.runtime: the actor runtime (node, hosts, Lua processes, channels, entries, CLI).

Imports no IPython, ipykernel or ipywidgets: it runs headless from ``wippy run`` and in plain pytest.
Everything public is listed in ``__all__`` (checked by ``tests/test_exports.py``).
"""

from __future__ import annotations

from .clock import Clock, FakeClock
from .entries import Entry
from .errors import (
    EntryError,
    HostError,
    LuaError,
    PayloadError,
    ProcessError,
    ProcessExited,
    RegistryStoreError,
    Timeout,
    TreeError,
    WippyError,
)
from .host import Host, HostContext, HostOptions
from .mailbox import Event, Mailbox, Message
from .node import DEFAULT_HOST, HostStatistics, Node, NodeStatistics, ProcessStatistics, parse_pid
from .registry import Change, Registry, Version
from .shell import CellResult, Shell
from .tree import load_tree

__all__ = [
    "DEFAULT_HOST",
    "CellResult",
    "Change",
    "Clock",
    "Entry",
    "EntryError",
    "Event",
    "FakeClock",
    "Host",
    "HostContext",
    "HostError",
    "HostOptions",
    "HostStatistics",
    "LuaError",
    "Mailbox",
    "Message",
    "Node",
    "NodeStatistics",
    "PayloadError",
    "ProcessError",
    "ProcessExited",
    "ProcessStatistics",
    "Registry",
    "RegistryStoreError",
    "Shell",
    "Timeout",
    "TreeError",
    "Version",
    "WippyError",
    "load_tree",
    "parse_pid",
]
