"""The versioned, transactional registry (it replaced the first, unversioned entry table).

Every committed transaction makes one new version that records its delta (a list of :class:`Change`),
its time and an optional message. Any version's entries can be rebuilt (:meth:`Registry.version_entries`),
compared with any other (:meth:`Registry.diff`) and made current again as a new version
(:meth:`Registry.apply_version`: rollback and roll-forward are the same operation).

A transaction is all or nothing: every entry is checked with :func:`~.entries.check_entry`, every
validator registered with :meth:`Registry.add_validator` may refuse it, and only then is it written, to
SQLite first (when the registry has a file) and to memory second. A refused or failed transaction changes
neither.

Threads: every public method may be called from any thread; one re-entrant lock guards the entries, the
history and the SQLite connection (opened with ``check_same_thread=False`` and used only under the lock).
Validators run under that lock on the committing thread; subscribers run after the lock is released, on
the committing thread.

Storage (with a path): one SQLite file in WAL mode with ``synchronous=FULL``::

    registry_meta(key TEXT PRIMARY KEY, value TEXT)        -- 'schema' = '1'
    versions(version INTEGER PRIMARY KEY, time REAL, message TEXT, changes TEXT)

``changes`` is the version's delta as JSON: ``[{"op", "id", "kind", "before", "after"}, ...]`` where
``before``/``after`` are entries ``{"id", "kind", "meta", "data"}`` or null. Values JSON has no form for
(dates, datetimes, bytes, tuples, mappings with non-string keys) are written as ``{"$t": tag, "v": ...}``
so a restored entry equals the stored one. A new :class:`Registry` on the same file replays the deltas to
restore the latest version and the whole history; in memory a snapshot is kept every
:data:`SNAPSHOT_EVERY` versions so rebuilding an old version replays at most that many deltas.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .entries import Entry, check_entry
from .errors import EntryError, RegistryStoreError

__all__ = [
    "SNAPSHOT_EVERY",
    "Change",
    "ChangeSet",
    "Changes",
    "Registry",
    "RegistryStoreError",
    "Version",
]

#: an in-memory snapshot of the entries is kept every this many versions
SNAPSHOT_EVERY = 64
_SCHEMA = "1"

Op = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class Change:
    """One entry's change within a version: ``before`` is None for a create, ``after`` for a delete."""

    op: Op
    id: str
    kind: str
    before: Entry | None
    after: Entry | None


@dataclass(frozen=True)
class Version:
    """One version of the history: its number, when (``time.time()`` seconds), message, and changes."""

    version: int
    time: float
    message: str | None
    changes: tuple[tuple[str, str, str], ...]  # (op, id, kind)


@dataclass(frozen=True)
class ChangeSet:
    """What a validator sees: the changes a transaction would make, the entries before and after it.

    ``version`` is the version it would become. ``before`` and ``after`` are read-only mappings.
    """

    version: int
    changes: tuple[Change, ...]
    before: Mapping[str, Entry]
    after: Mapping[str, Entry]
    message: str | None


Validator = Callable[[ChangeSet], None]
Subscriber = Callable[[frozenset[str]], None]
# a staged operation: ("create" | "update" | "put", entry) or ("delete", id)
_Op = tuple[str, Entry | str]


# ---------------------------------------------------------------------------------------------- encoding
def _encode(value: Any, where: str) -> Any:
    """A JSON-ready form of ``value``; :class:`EntryError` naming ``where`` for a value with no form."""
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and "$t" not in value:
            return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
        return {"$t": "map", "v": [[_encode(k, where), _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"$t": "tuple", "v": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, _dt.datetime):
        return {"$t": "datetime", "v": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"$t": "date", "v": value.isoformat()}
    if isinstance(value, bytes):
        return {"$t": "bytes", "v": base64.b64encode(value).decode("ascii")}
    raise EntryError(
        f"{where} holds a {type(value).__name__} value, which the registry cannot store; "
        "use YAML data: strings, numbers, booleans, null, dates, lists and mappings"
    )


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`; raises ValueError/TypeError/KeyError on a malformed value."""
    if isinstance(value, dict):
        tag = value.get("$t")
        if tag is None:
            return {k: _decode(v) for k, v in value.items()}
        v = value["v"]
        if tag == "map":
            return {_decode(k): _decode(x) for k, x in v}
        if tag == "tuple":
            return tuple(_decode(x) for x in v)
        if tag == "datetime":
            return _dt.datetime.fromisoformat(v)
        if tag == "date":
            return _dt.date.fromisoformat(v)
        if tag == "bytes":
            return base64.b64decode(v.encode("ascii"), validate=True)
        raise ValueError(f"unknown value tag {tag!r}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _entry_to_json(entry: Entry | None) -> Any:
    if entry is None:
        return None
    return {
        "id": entry.id,
        "kind": entry.kind,
        "meta": _encode(entry.meta, f"entry '{entry.id}': meta"),
        "data": _encode(entry.data, f"entry '{entry.id}': data"),
    }


def _entry_from_json(obj: Any) -> Entry | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise TypeError(f"an entry must be an object, not {type(obj).__name__}")
    entry_id, kind, meta, data = obj["id"], obj["kind"], _decode(obj["meta"]), _decode(obj["data"])
    if not (isinstance(entry_id, str) and isinstance(kind, str) and isinstance(meta, dict) and isinstance(data, dict)):
        raise TypeError("an entry needs string id and kind, and mapping meta and data")
    return Entry(entry_id, kind, meta, data)


def _changes_to_json(changes: Iterable[Change]) -> str:
    return json.dumps(
        [
            {
                "op": c.op,
                "id": c.id,
                "kind": c.kind,
                "before": _entry_to_json(c.before),
                "after": _entry_to_json(c.after),
            }
            for c in changes
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _changes_from_json(text: str) -> tuple[Change, ...]:
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise TypeError("the changes must be a JSON list")
    out: list[Change] = []
    for row in rows:
        op = row["op"]
        before, after = _entry_from_json(row["before"]), _entry_from_json(row["after"])
        if op not in ("create", "update", "delete") or (op == "create") != (before is None) or (
            op == "delete"
        ) != (after is None):
            raise ValueError(f"change {row.get('id')!r}: op {op!r} does not match its before/after")
        out.append(Change(op, row["id"], row["kind"], before, after))
    return tuple(out)


def _copy(entry: Entry) -> Entry:
    """A private deep copy (through the storage form): validates storability, detaches caller's dicts."""
    copied = _entry_from_json(json.loads(json.dumps(_entry_to_json(entry))))
    assert copied is not None
    return copied


def _change(before: Entry | None, after: Entry | None) -> Change | None:
    """The change from ``before`` to ``after`` of one ID, or None when they are the same."""
    if before is None and after is None:
        return None
    if before is None:
        assert after is not None
        return Change("create", after.id, after.kind, None, after)
    if after is None:
        return Change("delete", before.id, before.kind, before, None)
    if before == after:
        return None
    return Change("update", after.id, after.kind, before, after)


# ---------------------------------------------------------------------------------------------- changes
class Changes:
    """A transaction being built: ``create``, ``update``, ``delete``, then ``apply`` (all or nothing).

    Get one from :meth:`Registry.changes`. Each call checks against the registry's current entries and the
    operations staged before it, so mistakes fail early; :meth:`apply` checks again under the registry's
    lock, since another thread may have committed in between. Not meant to be shared between threads.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._ops: list[_Op] = []
        self._staged: dict[str, Entry | None] = {}
        self._applied = False

    def _exists(self, entry_id: str) -> bool:
        if entry_id in self._staged:
            return self._staged[entry_id] is not None
        return self._registry.get(entry_id) is not None

    def _check_open(self) -> None:
        if self._applied:
            raise EntryError("this transaction was already applied; start a new one with registry.changes()")

    def create(self, entry: Entry) -> Changes:
        """Stage a new entry; :class:`EntryError` if it is invalid or its ID exists (use ``update``)."""
        self._check_open()
        check_entry(entry)
        if self._exists(entry.id):
            raise EntryError(f"cannot create '{entry.id}': the entry exists (use update to replace it)")
        self._ops.append(("create", entry))
        self._staged[entry.id] = entry
        return self

    def update(self, entry: Entry) -> Changes:
        """Stage a replacement; :class:`EntryError` if it is invalid or no entry has its ID (use ``create``)."""
        self._check_open()
        check_entry(entry)
        if not self._exists(entry.id):
            raise EntryError(f"cannot update '{entry.id}': no such entry (use create to add it)")
        self._ops.append(("update", entry))
        self._staged[entry.id] = entry
        return self

    def delete(self, entry_id: str) -> Changes:
        """Stage a removal; :class:`EntryError` if no entry has that ID."""
        self._check_open()
        if not self._exists(entry_id):
            raise EntryError(f"cannot delete '{entry_id}': no such entry")
        self._ops.append(("delete", entry_id))
        self._staged[entry_id] = None
        return self

    def apply(self, message: str | None = None) -> int:
        """Commit on the calling thread; returns the new version (the current one if nothing changes).

        Raises :class:`EntryError` when an entry is invalid, an operation no longer fits the entries, or
        a validator refuses; then nothing changes and the transaction may be fixed and applied again.
        """
        self._check_open()
        version = self._registry._commit(self._ops, message)
        self._applied = True
        return version

    def __len__(self) -> int:
        return len(self._ops)


def _field_matches(value: Any, wanted: Any) -> bool:
    """API.md's filter values: ``~`` regex, ``*`` contains, ``^`` prefix, ``$`` suffix, else equality."""
    if isinstance(wanted, str) and wanted[:1] in ("~", "*", "^", "$") and len(wanted) > 1:
        if value is None:
            return False
        text, op, arg = str(value), wanted[0], wanted[1:]
        if op == "~":
            try:
                return re.search(arg, text) is not None
            except re.error as exc:
                raise EntryError(f"find: bad regular expression {arg!r}: {exc}") from None
        return {"*": arg in text, "^": text.startswith(arg), "$": text.endswith(arg)}[op]
    return bool(value == wanted)


def matches(e: Entry, flt: Mapping[str, Any]) -> bool:
    """Does entry ``e`` match a find filter (API.md: ``{".kind": ..., "meta.type": "~tool"}``)?"""
    roots = {".kind": e.kind, ".ns": e.namespace, ".name": e.name, ".id": e.id}
    for key, wanted in flt.items():
        value: Any
        if key in roots:
            value = roots[key]
        elif isinstance(key, str) and key.startswith("meta."):
            value = e.meta.get(key[5:])
        else:
            raise EntryError(f"find: unknown filter key {key!r} (keys: .kind .ns .name .id meta.<field>)")
        if not _field_matches(value, wanted):
            return False
    return True



# ---------------------------------------------------------------------------------------------- registry
class Registry:
    """The node's entries, versioned; in memory, or persisted in SQLite at ``path``. Thread-safe.

    The calls the node uses are ``get``, ``require``, ``unknown_message``, ``entries``, ``ids``,
    ``apply``, ``subscribe`` and ``version``; a batch that changes nothing makes no version. Opening a
    file restores its latest version and history; a corrupted file
    raises :class:`RegistryStoreError` and is left as it is. Call :meth:`close` when done (any thread).
    """

    def __init__(self, path: str | Path | None = None, *, now: Callable[[], float] = time.time) -> None:
        self._lock = threading.RLock()
        self._now = now
        self._entries: dict[str, Entry] = {}
        self._history: list[Version] = []  # index i is version i + 1
        self._deltas: list[tuple[Change, ...]] = []  # parallel to _history
        self._snapshots: dict[int, dict[str, Entry]] = {0: {}}
        self._subscribers: list[Subscriber] = []
        self._validators: list[Validator] = []
        self.path: Path | None = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._open(self.path)

    # ------------------------------------------------------------------ storage
    def _store_error(self, what: str, exc: BaseException, version: int | None = None) -> RegistryStoreError:
        where = f"registry file {self.path}" + (f", version {version}" if version is not None else "")
        return RegistryStoreError(f"{where}: {what}: {exc}", str(self.path), version)

    def _open(self, path: Path) -> None:
        """Open or create the file and replay its versions (constructor's thread)."""
        try:
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._store_error("cannot open it (check the path and its permissions)", exc) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS registry_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS versions("
                "version INTEGER PRIMARY KEY, time REAL NOT NULL, message TEXT, changes TEXT NOT NULL)"
            )
            db.execute("INSERT OR IGNORE INTO registry_meta(key, value) VALUES ('schema', ?)", (_SCHEMA,))
            schema = db.execute("SELECT value FROM registry_meta WHERE key = 'schema'").fetchone()[0]
            rows = db.execute("SELECT version, time, message, changes FROM versions ORDER BY version").fetchall()
        except sqlite3.Error as exc:
            db.close()
            raise self._store_error(
                "cannot read it as a registry store (is it an SQLite file written by wippy?); "
                "move it away to start an empty registry", exc
            ) from exc
        if schema != _SCHEMA:
            db.close()
            raise RegistryStoreError(
                f"registry file {path}: schema {schema!r} is not the one this runtime reads ({_SCHEMA!r}); "
                "open it with the wippy version that wrote it, or move it away",
                str(path),
            )
        try:
            for expected, (number, when, message, text) in enumerate(rows, start=1):
                if number != expected:
                    raise RegistryStoreError(
                        f"registry file {path}: version {expected} is missing (found {number} after it); "
                        "the file was left as it is: restore it from a backup or move it away",
                        str(path),
                        expected,
                    )
                try:
                    if not isinstance(text, str):
                        raise TypeError(f"changes is a {type(text).__name__}, not JSON text")
                    changes = _changes_from_json(text)
                    self._replay_one(changes, number)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise RegistryStoreError(
                        f"registry file {path}: version {number} is corrupted ({type(exc).__name__}: {exc}); "
                        "the file was left as it is: restore it from a backup or move it away",
                        str(path),
                        number,
                    ) from exc
                self._record(number, float(when), message, changes)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _replay_one(self, changes: tuple[Change, ...], number: int) -> None:
        """Apply a stored delta to the current entries, checking it fits (opening thread)."""
        for c in changes:
            have = self._entries.get(c.id)
            if have != c.before:
                raise ValueError(f"change of '{c.id}' does not start from the entry of version {number - 1}")
            if c.after is None:
                del self._entries[c.id]
            else:
                self._entries[c.id] = c.after

    def _record(self, number: int, when: float, message: str | None, changes: tuple[Change, ...]) -> None:
        self._history.append(Version(number, when, message, tuple((c.op, c.id, c.kind) for c in changes)))
        self._deltas.append(changes)
        if number % SNAPSHOT_EVERY == 0:
            self._snapshots[number] = dict(self._entries)

    def close(self) -> None:
        """Close the SQLite file (any thread); the registry stays readable but refuses further commits."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the node's calls
    @property
    def version(self) -> int:
        """The current version: 0 when empty, one more with every transaction that changed something."""
        with self._lock:
            return len(self._history)

    def get(self, entry_id: str) -> Entry | None:
        """The current entry with that ID, or None (any thread)."""
        with self._lock:
            return self._entries.get(entry_id)

    def require(self, entry_id: str) -> Entry:
        """The entry, or :class:`EntryError` naming similar IDs (any thread)."""
        entry = self.get(entry_id)
        if entry is None:
            raise EntryError(self.unknown_message(entry_id))
        return entry

    def unknown_message(self, entry_id: str) -> str:
        """The message for an unknown ID: the entries of its namespace, else all of them (any thread)."""
        with self._lock:
            ids = sorted(self._entries)
        ns = entry_id.split(":", 1)[0]
        near = [i for i in ids if i.startswith(ns + ":")] or ids
        shown = ", ".join(near[:8]) + (" ..." if len(near) > 8 else "")
        return f"unknown entry '{entry_id}'" + (f"; entries: {shown}" if shown else "; no entries are loaded")

    def entries(self) -> list[Entry]:
        """The current entries (any thread)."""
        with self._lock:
            return list(self._entries.values())

    def ids(self) -> list[str]:
        """The current IDs, sorted (any thread)."""
        with self._lock:
            return sorted(self._entries)

    def apply(self, upsert: Iterable[Entry] = (), delete: Iterable[str] = (), message: str | None = None) -> int:
        """Create or update ``upsert``, then delete ``delete``, as one transaction; returns the version.

        Runs on the calling thread. Every entry is checked first.
        """
        new = list(upsert)
        for e in new:
            check_entry(e)
        ops: list[_Op] = [("put", e) for e in new]
        ops += [("delete", d) for d in delete]
        return self._commit(ops, message)

    def subscribe(self, notify: Subscriber) -> None:
        """Call ``notify(changed_ids)`` after each commit (and reset), on the committing thread."""
        with self._lock:
            self._subscribers.append(notify)

    # ------------------------------------------------------------------ transactions
    def find(self, flt: Mapping[str, Any] | None = None) -> list[Entry]:
        """Entries matching a filter with API.md's syntax (root keys ``.kind .ns .name .id``, ``meta.x``;
        values with ``~`` regex, ``*`` contains, ``^`` prefix, ``$`` suffix), sorted by ID. Any thread."""
        return [e for e in sorted(self.entries(), key=lambda e: e.id) if matches(e, flt or {})]

    def changes(self) -> Changes:
        """A new transaction builder (any thread; use it from one thread)."""
        return Changes(self)

    def add_validator(self, fn: Validator) -> None:
        """Run ``fn(changeset)`` before every commit; it raises :class:`EntryError` to refuse.

        Validators run on the committing thread, under the registry's lock: they may read the registry
        but must not commit to it. A refusal leaves everything as it was.
        """
        with self._lock:
            self._validators.append(fn)

    def _resolve(self, ops: list[_Op]) -> tuple[dict[str, Entry], list[Change]]:
        """The entries after ``ops`` and the changes, checked against the current entries (under lock)."""
        after = dict(self._entries)
        touched: list[str] = []
        for op, arg in ops:
            entry_id = arg if isinstance(arg, str) else arg.id
            if entry_id not in touched:
                touched.append(entry_id)
            if op == "delete":
                if entry_id not in after:
                    raise EntryError(f"cannot delete '{entry_id}': no such entry")
                del after[entry_id]
                continue
            assert isinstance(arg, Entry)
            if op == "create" and entry_id in after:
                raise EntryError(f"cannot create '{entry_id}': the entry exists (another transaction made it?)")
            if op == "update" and entry_id not in after:
                raise EntryError(f"cannot update '{entry_id}': no such entry (another transaction deleted it?)")
            after[entry_id] = arg
        changes = [c for i in touched if (c := _change(self._entries.get(i), after.get(i))) is not None]
        return after, changes

    def _commit(self, ops: list[_Op], message: str | None, precomputed: list[Change] | None = None) -> int:
        """Check, validate, write (SQLite, then memory), then notify; runs on the committing thread."""
        with self._lock:
            if precomputed is None:
                after, changes = self._resolve(ops)
            else:
                changes = precomputed
                after = dict(self._entries)
                for c in changes:
                    if c.after is None:
                        del after[c.id]
                    else:
                        after[c.id] = c.after
            if not changes:
                return len(self._history)
            stored: list[Change] = []
            for c in changes:
                if c.after is not None:
                    check_entry(c.after)
                    copied = _copy(c.after)
                    after[c.id] = copied
                    c = Change(c.op, c.id, c.kind, c.before, copied)
                stored.append(c)
            number = len(self._history) + 1
            changeset = ChangeSet(
                number, tuple(stored), MappingProxyType(dict(self._entries)), MappingProxyType(after), message
            )
            for validate in list(self._validators):
                validate(changeset)
            when = self._now()
            if self.path is not None:
                self._write(number, when, message, stored)
            self._entries = after
            self._record(number, when, message, tuple(stored))
            subscribers = list(self._subscribers)
        changed = frozenset(c.id for c in stored)
        for notify in subscribers:
            notify(changed)
        return number

    def _write(self, number: int, when: float, message: str | None, changes: list[Change]) -> None:
        """Write one version in one SQLite transaction (under the lock)."""
        if self._db is None:
            raise RegistryStoreError(
                f"registry file {self.path} is closed; open a new Registry on it to change it", str(self.path)
            )
        text = _changes_to_json(changes)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO versions(version, time, message, changes) VALUES (?, ?, ?, ?)",
                    (number, when, message, text),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._store_error(
                "cannot write it (another process writing the same file? a full disk?); nothing changed",
                exc,
                number,
            ) from exc

    # ------------------------------------------------------------------ versions
    def history(self) -> list[Version]:
        """Every version, oldest first (any thread)."""
        with self._lock:
            return list(self._history)

    def version_changes(self, v: int) -> list[Change]:
        """The delta that made version ``v`` (any thread); version 0 has none."""
        with self._lock:
            self._check_version(v)
            return list(self._deltas[v - 1]) if v > 0 else []

    def _check_version(self, v: int) -> None:
        current = len(self._history)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= current:
            known = f"known versions are 0 (empty) to {current}" if current else "only version 0 (empty) exists"
            raise EntryError(f"unknown registry version {v!r}: {known}; see registry.history()")

    def version_entries(self, v: int) -> dict[str, Entry]:
        """The entries at version ``v`` (any thread); :class:`EntryError` for an unknown version."""
        with self._lock:
            self._check_version(v)
            base = v - v % SNAPSHOT_EVERY
            entries = dict(self._snapshots[base])
            for changes in self._deltas[base:v]:
                for c in changes:
                    if c.after is None:
                        del entries[c.id]
                    else:
                        entries[c.id] = c.after
            return entries

    def diff(self, v1: int, v2: int) -> list[Change]:
        """The changes that turn version ``v1``'s entries into ``v2``'s, by ID (any thread; any order)."""
        with self._lock:
            a, b = self.version_entries(v1), self.version_entries(v2)
        return [c for i in sorted(a.keys() | b.keys()) if (c := _change(a.get(i), b.get(i))) is not None]

    def apply_version(self, v: int, message: str | None = None) -> int:
        """Make the entries equal to version ``v``'s as a new version (rollback or roll-forward).

        Runs on the calling thread, validated like any transaction; returns the current version unchanged
        when the entries already equal version ``v``'s. :class:`EntryError` for an unknown version.
        """
        with self._lock:
            changes = self.diff(len(self._history), v)
            return self._commit([], message if message is not None else f"apply version {v}", changes)

    def reset(self) -> None:
        """Empty the registry and its history, in memory and in the file (calling thread).

        The version goes back to 0; subscribers are told the IDs that were removed.
        """
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("DELETE FROM versions")
                except sqlite3.Error as exc:
                    raise self._store_error("cannot reset it; nothing changed", exc) from exc
            elif self.path is not None:
                raise RegistryStoreError(
                    f"registry file {self.path} is closed; open a new Registry on it to reset it", str(self.path)
                )
            removed = frozenset(self._entries)
            self._entries = {}
            self._history = []
            self._deltas = []
            self._snapshots = {0: {}}
            subscribers = list(self._subscribers)
        if removed:
            for notify in subscribers:
                notify(removed)
