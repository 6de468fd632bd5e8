"""Opening a workflow store: :func:`open_store` picks the backend for a path or a URL.

The store's contract, records and codec are in ``workflow_store_base.py`` (which knows no backend); the
backends are ``workflow_store_sqlite.py`` and ``workflow_store_pg.py`` (imported only for a
``postgresql://`` URL: psycopg is needed only then). The names of the base module are re-exported here,
where callers have always imported them from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from .errors import StoreOpenError
from .workflow_store_base import (
    FINISHED,
    MAX_DEPTH,
    SCHEMA_VERSION,
    STATUSES,
    JournalRecord,
    SignalRecord,
    Step,
    Value,
    WorkflowRecord,
    WorkflowStatus,
    WorkflowStore,
    decode_value,
    encode_value,
    redact_url,
)
from .workflow_store_sqlite import SQLiteWorkflowStore

__all__ = [
    "FINISHED",
    "MAX_DEPTH",
    "SCHEMA_VERSION",
    "STATUSES",
    "JournalRecord",
    "SQLiteWorkflowStore",
    "SignalRecord",
    "Step",
    "Value",
    "WorkflowRecord",
    "WorkflowStatus",
    "WorkflowStore",
    "decode_value",
    "encode_value",
    "open_store",
    "redact_url",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(
    target: str | os.PathLike[str],
    *,
    now: Callable[[], float] | None = None,
    busy_timeout: float = 10.0,
    connect_timeout: float = 10.0,
) -> WorkflowStore:
    """Open (creating it if needed) the workflow store at ``target``. Any thread.

    ``target`` is a filesystem path or ``sqlite:///path`` (``sqlite:///tmp/w.db`` is ``/tmp/w.db``, as in
    a file URL) for SQLite, or ``postgresql://...`` / ``postgres://...`` (libpq's URL, psycopg 3) for
    PostgreSQL. ``now`` replaces the clock (Unix seconds; tests). ``busy_timeout`` (SQLite) is how long a
    write waits for another process's; ``connect_timeout`` (PostgreSQL) how long a connection may take
    unless the URL says.

    Raises :class:`StoreOpenError` naming the path or the URL (without its password) for an unknown
    scheme, a missing directory, a file that is not a store, a server that cannot be reached or refuses,
    a store of another schema version.
    """
    text = os.fspath(target)
    m = _SCHEME.match(text)
    if m is None:
        if not text or text == ":memory:":
            raise StoreOpenError(
                f"workflow store {text!r}: give the path of a file (an in-memory store cannot be shared between "
                "threads or processes, nor survive a crash)",
                text,
            )
        return SQLiteWorkflowStore(Path(text), now=now, busy_timeout=busy_timeout)
    scheme = m.group(1).lower()
    if scheme == "sqlite":
        path = text[m.end() :]
        if not path:
            raise StoreOpenError(f"workflow store {text}: the URL names no file; write sqlite:///path/to/file", text)
        return SQLiteWorkflowStore(Path(path), now=now, busy_timeout=busy_timeout)
    if scheme in ("postgresql", "postgres"):
        try:
            from .workflow_store_pg import PostgresWorkflowStore
        except ImportError as exc:
            raise StoreOpenError(
                f"workflow store {redact_url(text)}: PostgreSQL needs psycopg 3, which is not installed ({exc}); "
                "install it with: pip install 'psycopg[binary]>=3.2'",
                redact_url(text),
            ) from exc
        return PostgresWorkflowStore(text, now=now, connect_timeout=connect_timeout)
    raise StoreOpenError(
        f"workflow store {redact_url(text)}: unknown scheme {scheme!r}; use a file path, sqlite:///path, or "
        "postgresql://user@host/db",
        redact_url(text),
    )
