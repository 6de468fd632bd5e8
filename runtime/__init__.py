"""wippy.runtime: the actor runtime (node, hosts, Lua processes, channels, entries, CLI).

Imports no IPython, ipykernel or ipywidgets: it runs headless from ``wippy run`` and in plain pytest.
Everything public is listed in ``__all__`` (checked by ``tests/test_exports.py``).
"""

from __future__ import annotations

from .clock import Clock, FakeClock
from .entries import Entry
from .errors import (
    CorruptJournal,
    EntryError,
    HostError,
    JournalConflict,
    LeaseLost,
    LuaError,
    PayloadError,
    ProcessError,
    ProcessExited,
    RegistryStoreError,
    SecurityError,
    StoreError,
    StoreOpenError,
    TeachError,
    Timeout,
    TreeError,
    UnknownWorkflow,
    WippyError,
    WorkflowFailed,
    WorkflowFinished,
)
from .events import EventBus, RuntimeEvent, Subscription
from .host import Host, HostContext, HostOptions
from .mailbox import Event, Mailbox, Message
from .node import DEFAULT_HOST, HostStatistics, Node, NodeStatistics, ProcessStatistics, parse_pid
from .node_security import Denial
from .registry import Change, Registry, Version
from .shell import CellResult, Shell
from .tree import load_tree
from .workflow import HistoryStep, RetryPolicy, Workflows
from .workflow_store import WorkflowRecord, WorkflowStore, open_store

__all__ = [
    "DEFAULT_HOST",
    "CellResult",
    "Change",
    "Clock",
    "CorruptJournal",
    "Denial",
    "Entry",
    "EntryError",
    "Event",
    "EventBus",
    "FakeClock",
    "HistoryStep",
    "Host",
    "HostContext",
    "HostError",
    "HostOptions",
    "HostStatistics",
    "JournalConflict",
    "LeaseLost",
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
    "RetryPolicy",
    "RuntimeEvent",
    "SecurityError",
    "Shell",
    "StoreError",
    "StoreOpenError",
    "Subscription",
    "TeachError",
    "Timeout",
    "TreeError",
    "UnknownWorkflow",
    "Version",
    "WippyError",
    "WorkflowFailed",
    "WorkflowFinished",
    "WorkflowRecord",
    "WorkflowStore",
    "Workflows",
    "load_tree",
    "open_store",
    "parse_pid",
]
