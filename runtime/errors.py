"""The errors the runtime raises in Python, as one small hierarchy.

::

    WippyError                     every error of this package
    ├── TreeError                  a YAML tree cannot be loaded (file, line, reason)
    ├── EntryError                 an entry is unknown, of the wrong kind, or invalid
    ├── RegistryStoreError         the registry's SQLite file cannot be read or written
    ├── HostError                  an unknown host, or a host that is not running
    ├── ProcessError               a process call failed (unknown PID, spawn refused, ...)
    │   └── ProcessExited          a process awaited by exec() ended abnormally
    ├── PayloadError               a value cannot be copied into a message
    ├── LuaError                   Lua source does not compile or raised while loading
    └── Timeout                    a wait on the runtime ran out of time

Messages name the thing, the likely cause and what to do instead, e.g.
``unknown host 'app:procs'; hosts: app:processes``.
"""

from __future__ import annotations

__all__ = [
    "EntryError",
    "HostError",
    "LuaError",
    "PayloadError",
    "ProcessError",
    "ProcessExited",
    "RegistryStoreError",
    "Timeout",
    "TreeError",
    "WippyError",
]


class WippyError(Exception):
    """Base class of every error raised by ``wippy.runtime``."""


class TreeError(WippyError):
    """A YAML source tree cannot be loaded.

    Raised by :func:`wippy.runtime.load_tree` (and ``wippy run``) before anything is applied, so a bad
    tree changes nothing. ``path`` and ``line`` locate the problem when known (line is 1-based).
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line
        self.reason = message


class EntryError(WippyError):
    """An entry is unknown, has the wrong kind for the call, or its fields are invalid."""


class RegistryStoreError(WippyError):
    """The registry's SQLite file cannot be read or written (corrupted row, not a database, a write failed).

    ``path`` is the file; ``version`` the version concerned, when one is. The file is never overwritten.
    """

    def __init__(self, message: str, path: str, version: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.version = version


class HostError(WippyError):
    """A host is unknown or not running."""


class ProcessError(WippyError):
    """A process operation failed: unknown PID, a refused spawn, a send that cannot be delivered."""


class ProcessExited(ProcessError):
    """A process that the caller waited for ended abnormally; ``reason`` and ``error`` say how."""

    def __init__(self, pid: str, reason: str, error: str | None) -> None:
        super().__init__(f"process {pid} ended with {reason}: {error}")
        self.pid = pid
        self.reason = reason
        self.error = error


class PayloadError(WippyError, TypeError):
    """A value cannot be copied into a message (a function, an object, a cycle, too deep)."""


class LuaError(WippyError):
    """Lua source failed to compile, or Lua code raised while the runtime ran it for Python."""


class Timeout(WippyError, TimeoutError):
    """A wait on the runtime (receive, exec, a host call) ran out of time."""
