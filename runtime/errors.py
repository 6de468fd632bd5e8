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
    ├── SupervisionError           a supervisor or service cannot start, or is unknown to the tree
    ├── SecurityError              a security value misused (unknown policy or group, a widened scope)
    ├── TeachError                 teaching mode misused (a step with nothing paused, a bad N or seed),
    │                              or a cell that waited on a host someone paused
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
    "SecurityError",
    "SupervisionError",
    "TeachError",
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


class SupervisionError(WippyError):
    """A supervisor or service cannot start (a child or a required service failed to), is already
    running, or is not in the tree. Bad specs are :class:`EntryError` instead, naming the field."""


class Timeout(WippyError, TimeoutError):
    """A wait on the runtime (receive, exec, a host call) ran out of time."""


# ------------------------------------------------------------------------------------- workflow store
# Added with runtime/workflow_store.py. Their branch of the tree above (to fold into it):
#
#     └── StoreError                 the workflow store failed (disk, connection, ...)
#         ├── StoreOpenError         it cannot be opened: bad path, not a store, unreachable server, scheme
#         ├── UnknownWorkflow        no workflow has this ID (also a LookupError)
#         ├── WorkflowFinished       the workflow has finished: no more steps, signals or finish
#         ├── JournalConflict        a step is not exactly the next one: a gap, or a duplicate (a race)
#         │   └── LeaseLost          another node owns the workflow now (its lease was claimed)
#         └── CorruptJournal         a stored row cannot be read back; it is left as it is
#     └── WorkflowFailed             a workflow awaited by result() failed or was cancelled (runtime/workflow.py)

__all__ += [
    "CorruptJournal",
    "JournalConflict",
    "LeaseLost",
    "StoreError",
    "StoreOpenError",
    "UnknownWorkflow",
    "WorkflowFailed",
    "WorkflowFinished",
]


class StoreError(WippyError):
    """The durable-workflow store failed: a write or read did not go through (disk full, connection lost,
    locked for longer than the busy timeout). Its subclasses are the failures a caller can act on.

    ``location`` is the store's file, or its URL without the password; ``workflow_id`` and ``seq`` locate
    the workflow and the journal step (or signal) concerned, when there is one.
    """

    def __init__(
        self, message: str, location: str | None = None, workflow_id: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(message)
        self.location = location
        self.workflow_id = workflow_id
        self.seq = seq


class StoreOpenError(StoreError):
    """The store cannot be opened: a path whose directory is missing or is a directory, a file that is not
    a store, a server that cannot be reached or refuses the login, an unknown URL scheme, a store written
    by another schema version. Raised by ``open_store`` only; nothing is created or changed."""


class UnknownWorkflow(StoreError, LookupError):
    """No workflow has this ID in the store (a signal, a journal read, a finish or a claim named it)."""


class WorkflowFinished(StoreError):
    """The workflow has already finished (``status`` is completed, failed or cancelled): it takes no more
    journal steps, signals, claims, and cannot finish twice."""

    def __init__(self, message: str, location: str | None, workflow_id: str, status: str) -> None:
        super().__init__(message, location, workflow_id)
        self.status = status


class JournalConflict(StoreError):
    """An appended step is not exactly the next one: ``seq`` would leave a gap, or a step with that
    ``seq`` is already in the journal, which means another node or process is running the same workflow.
    The journal is never overwritten; ``steps`` is how many steps it held when the append was refused."""

    def __init__(
        self, message: str, location: str | None, workflow_id: str, seq: int | None, steps: int | None
    ) -> None:
        super().__init__(message, location, workflow_id, seq)
        self.steps = steps


class LeaseLost(JournalConflict):
    """A write that named its node (``node_id=``) was refused because the workflow is owned by another
    node now (``owner``; None once released): this node's lease expired and was claimed. Stop running the
    workflow here."""

    def __init__(
        self, message: str, location: str | None, workflow_id: str, seq: int | None, owner: str | None
    ) -> None:
        super().__init__(message, location, workflow_id, seq, None)
        self.owner = owner


class CorruptJournal(StoreError):
    """A stored row cannot be read back (a value that does not decode, a missing step, a field of the wrong
    type), e.g. after an edit by hand. ``workflow_id`` and ``seq`` name the row (``seq`` is None for the
    workflow's own record); the row is left as it is: nothing is overwritten or skipped."""


class WorkflowFailed(WippyError):
    """A workflow that the caller waited for (``node.workflows.result``) ended without a result: it
    ``failed`` (its error, a non-determinism report, an activity's error it did not handle) or was
    ``cancelled``. ``workflow_id``, ``status`` (failed or cancelled) and ``error`` say which and why. Unlike
    the store's errors, nothing went wrong in the runtime: the workflow itself ended this way."""

    def __init__(self, workflow_id: str, status: str, error: str | None) -> None:
        super().__init__(f"workflow {workflow_id!r} {status}: {error or status}")
        self.workflow_id = workflow_id
        self.status = status
        self.error = error


class SecurityError(WippyError):
    """A security value is misused: an unknown policy ID or group, an unknown action, a widened scope.

    Not a refusal: a refused call is a :class:`~wippy.runtime.security.Decision` with ``allowed`` false
    (the caller turns it into ``nil, "permission denied: ..."``). A policy *entry* that does not parse is
    an :class:`EntryError`.
    """


class TeachError(WippyError):
    """Teaching mode misused: a step with nothing paused, a bad N or seed, an unknown host; or a cell
    whose host was paused while it waited (the cell is stopped rather than left waiting for ever)."""
