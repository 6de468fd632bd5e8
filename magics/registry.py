"""Registry magics: ``%registry SUBCOMMAND ...`` and the ``%%registry`` cell (one ``_index.yaml`` document).

Subcommands: ``list [NS]``, ``get ID``, ``set ID key=value ...``, ``apply PATH``, ``diff [V1 [V2]]``,
``history``, ``rollback V``, ``reset``, ``export DIR [NS ...]``, ``watch [DIR]``, ``unwatch [DIR]``. Every
change is one registry transaction.

``watch DIR`` starts a :class:`~wippy.runtime.watch.TreeWatcher`: each edit of the tree is applied (or
refused) on the watcher's own threads, which cannot print into a cell; their messages are kept on the
watcher and in the node's logs (``%logs watch:DIR``), and ``%registry watch`` lists the watchers with their
last result or error.

Threads: each magic runs on the thread that runs the cell and calls the registry's thread-safe methods.
Wrong input raises :class:`~IPython.core.error.UsageError` (one line naming the thing and the fix, no
Python traceback); the node stays up and, for a refused transaction, the registry is unchanged.
"""

from __future__ import annotations

import html
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from wippy.runtime import EntryError, Registry, WippyError
from wippy.runtime.entries import Entry, validate_id
from wippy.runtime.tree import export_tree, load_text, load_tree
from wippy.runtime.watch import TreeWatcher

from .current import node
from .registry_diff import OPS, RegistryDiff, entry_yaml, registry_diff

__all__ = ["EntryText", "RegistryDiff", "RegistryMagics", "Table", "registry_diff"]

SUBCOMMANDS = ("list", "get", "set", "apply", "diff", "history", "rollback", "reset", "export", "watch", "unwatch")
USAGE = {
    "list": "%registry list [NS]",
    "get": "%registry get ID",
    "set": "%registry set ID key=value ...",
    "apply": "%registry apply PATH",
    "diff": "%registry diff [V1 [V2]]",
    "history": "%registry history [--view]",
    "rollback": "%registry rollback V",
    "reset": "%registry reset",
    "export": "%registry export DIR [NS ...]",
    "watch": "%registry watch [DIR]",
    "unwatch": "%registry unwatch [DIR]",
}
SUMMARY_WIDTH = 60
#: the running watchers, by the directory as given (the magics' node's; stopped by `%registry unwatch`)
WATCHERS: dict[str, TreeWatcher] = {}


# ---------------------------------------------------------------------------------------------- display
class Table:
    """Rows under column titles, shown as a text table (text/plain) and an HTML table."""

    def __init__(self, columns: Sequence[str], rows: Iterable[Sequence[str]], empty: str, css: str) -> None:
        self.columns = tuple(columns)
        self.rows = [tuple(r) for r in rows]
        self.empty = empty
        self.css = css

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return self.empty
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]

        def fmt(row: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

        return "\n".join([fmt(self.columns), *(fmt(r) for r in self.rows)])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f'<table class="{self.css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class EntryText(str):
    """An entry as YAML: a plain string, shown bare (not quoted) as a cell's result."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _summary(meta: Any) -> str:
    if not meta:
        return "-"
    text = ", ".join(f"{k}={v}" for k, v in meta.items())
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 3] + "..."


def _in_namespace(entry_id: str, ns: str) -> bool:
    entry_ns = entry_id.split(":", 1)[0]
    return entry_ns == ns or entry_ns.startswith(ns + ".")


# ---------------------------------------------------------------------------------------------- helpers
def _fail(sub: str, message: str) -> UsageError:
    return UsageError(f"%registry {sub}: {message}")


def _args(sub: str, args: list[str], least: int, most: int | None) -> None:
    if len(args) < least:
        raise _fail(sub, f"missing arguments; usage: {USAGE[sub]}")
    if most is not None and len(args) > most:
        extra = " ".join(args[most:])
        raise _fail(sub, f"unexpected arguments {extra!r}; usage: {USAGE[sub]}")


def _version(sub: str, word: str, registry: Registry) -> int:
    try:
        v = int(word)
    except ValueError:
        raise _fail(sub, f"version {word!r} is not a number; %registry history lists the versions") from None
    current = registry.version
    if not 0 <= v <= current:
        known = f"known versions are 0 (empty) to {current}" if current else "only version 0 (empty) exists"
        raise _fail(sub, f"unknown version {v}: {known}; %registry history lists them")
    return v


def _entry(sub: str, entry_id: str, registry: Registry) -> Entry:
    try:
        validate_id(entry_id)
    except EntryError as exc:
        raise _fail(sub, str(exc)) from None
    entry = registry.get(entry_id)
    if entry is None:
        raise _fail(sub, registry.unknown_message(entry_id) + "; %registry list shows them")
    return entry


def _commit(name: str, entries: list[Entry], message: str) -> tuple[int, int, int, int]:
    """Create or update ``entries`` as one transaction; returns (version, created, updated, unchanged).

    Made through :meth:`Node.apply`, so it is checked as the notebook (``registry.apply`` on each entry)
    and hosts of new ``process.host`` entries are added.
    """
    n = node()
    reg = n.registry
    try:
        before = {e.id: reg.get(e.id) for e in entries}
        version = n.apply(entries, message=message)
    except (WippyError, ValueError, TypeError) as exc:
        raise UsageError(f"{name}: {exc} (nothing changed)") from None
    created = sum(1 for e in entries if before[e.id] is None)
    unchanged = sum(1 for e in entries if before[e.id] == e)
    return version, created, len(entries) - created - unchanged, unchanged


def _counts(version: int, created: int, updated: int, unchanged: int) -> str:
    return f"{created} created, {updated} updated, {unchanged} unchanged (version {version})"


# ---------------------------------------------------------------------------------------------- magics
@magics_class
class RegistryMagics(Magics):
    """Look at, change, version and export the node's registry from cells."""

    @line_cell_magic
    def registry(self, line: str, cell: str | None = None) -> Any:
        """``%registry list|get|set|apply|diff|history|rollback|reset|export ...``; ``%%registry`` applies a cell.

        %registry list [NS]                entries (ID, kind, meta), NS filters by namespace
        %registry get ID                   one entry as YAML
        %registry set ID key=value ...     set data.key (the value read as a YAML scalar), one transaction
        %registry apply PATH               load a file or directory tree, apply it as one transaction
        %registry diff [V1 [V2]]           a coloured diff (default: the previous version against the current)
        %registry history [--view]         versions: time, message, changes (--view: a live timeline
                                           with each version's diff)
        %registry rollback V               make version V's entries current, as a new version
        %registry reset                    empty the registry and its history
        %registry export DIR [NS ...]      write the entries as a tree `wippy run DIR` runs
        %registry watch [DIR]              apply DIR now and each edit of it (one version per edit);
                                           without DIR: the watchers and their last result or error
        %registry unwatch [DIR]            stop watching DIR (without DIR: every watched tree)
        %%registry [--message TEXT]        the cell is one _index.yaml document: one transaction
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%registry: cannot split the line ({exc}); close the quotes") from None
        if cell is not None:
            return self._cell(words, cell)
        if not words:
            raise UsageError(f"%registry: missing subcommand; subcommands: {', '.join(SUBCOMMANDS)}")
        sub, args = words[0], words[1:]
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_{sub}", None) if sub in SUBCOMMANDS else None
        if handler is None:
            raise UsageError(f"%registry: unknown subcommand {sub!r}; subcommands: {', '.join(SUBCOMMANDS)}")
        return handler(args)

    # ------------------------------------------------------------------ the cell
    @staticmethod
    def _cell(words: list[str], cell: str) -> None:
        message = "%%registry"
        rest = list(words)
        if rest[:1] == ["--message"]:
            if len(rest) < 2:
                raise UsageError("%%registry: --message needs a text, e.g. --message 'add the workers'")
            message, rest = rest[1], rest[2:]
        if rest:
            raise UsageError(f"%%registry: unexpected arguments {' '.join(rest)!r}; usage: %%registry [--message TEXT]")
        if not cell.strip():
            raise UsageError("%%registry: the cell is empty; write one _index.yaml document (namespace:, entries:)")
        try:
            entries = load_text(cell, "cell")
        except WippyError as exc:
            raise UsageError(f"%%registry: {exc} (nothing changed)") from None
        if not entries:
            raise UsageError("%%registry: the cell has no entries; list them under `entries:`")
        version, created, updated, unchanged = _commit("%%registry", entries, message)
        print(_counts(version, created, updated, unchanged))

    # ------------------------------------------------------------------ subcommands
    @staticmethod
    def _list(args: list[str]) -> Table:
        _args("list", args, 0, 1)
        entries = sorted(node().registry.entries(), key=lambda e: e.id)
        if args:
            entries = [e for e in entries if _in_namespace(e.id, args[0])]
        empty = f"no entries in namespace {args[0]}" if args else "no entries"
        return Table(("ID", "KIND", "META"), ((e.id, e.kind, _summary(e.meta)) for e in entries),
                     empty, "wippy-registry")

    @staticmethod
    def _get(args: list[str]) -> EntryText:
        _args("get", args, 1, 1)
        return EntryText(entry_yaml(_entry("get", args[0], node().registry)).rstrip("\n"))

    @staticmethod
    def _set(args: list[str]) -> None:
        _args("set", args, 2, None)
        reg = node().registry
        entry = _entry("set", args[0], reg)
        values: dict[str, Any] = {}
        for pair in args[1:]:
            key, eq, raw = pair.partition("=")
            if not eq or not key:
                raise _fail("set", f"{pair!r} is not key=value; write e.g. greeting=hi or n=3")
            try:
                values[key] = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise _fail("set", f"the value of {key!r} is not a YAML scalar ({problem}); "
                                   f"quote it: {key}='...'") from None
            if isinstance(values[key], dict | list):
                raise _fail("set", f"the value of {key!r} is not a scalar; set one value per key (text, number, "
                                   "true/false, null)")
        updated = Entry(entry.id, entry.kind, dict(entry.meta), {**entry.data, **values})
        shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        try:
            version = node().apply([updated], message=f"set {entry.id} {', '.join(values)}")
        except WippyError as exc:
            raise _fail("set", f"{exc} (nothing changed)") from None
        print(f"{entry.id}: {shown} (version {version})")

    @staticmethod
    def _apply(args: list[str]) -> None:
        _args("apply", args, 1, 1)
        try:
            entries = load_tree(Path(args[0]))
        except WippyError as exc:
            raise _fail("apply", f"{exc} (nothing changed)") from None
        version, created, updated, unchanged = _commit("%registry apply", entries, f"apply {args[0]}")
        print(f"applied {args[0]}: {_counts(version, created, updated, unchanged)}")

    @staticmethod
    def _diff(args: list[str]) -> RegistryDiff:
        _args("diff", args, 0, 2)
        reg = node().registry
        current = reg.version
        if not args:
            if current == 0:
                raise _fail("diff", "the registry has no versions yet; apply entries first")
            v1, v2 = current - 1, current
        else:
            v1 = _version("diff", args[0], reg)
            v2 = _version("diff", args[1], reg) if len(args) > 1 else current
        return registry_diff(reg, v1, v2)

    @staticmethod
    def _history(args: list[str]) -> Any:
        if args == ["--view"]:
            from .views import RegistryHistoryView

            return RegistryHistoryView(node())
        _args("history", args, 0, 0)
        rows = [
            (str(v.version), time.strftime("%H:%M:%S", time.localtime(v.time)), v.message or "",
             " ".join(f"{OPS.get(op, op)}{entry_id}" for op, entry_id, _ in v.changes))
            for v in node().registry.history()
        ]
        return Table(("VERSION", "TIME", "MESSAGE", "CHANGES"), rows, "no versions yet", "wippy-registry-history")

    @staticmethod
    def _rollback(args: list[str]) -> None:
        _args("rollback", args, 1, 1)
        reg = node().registry
        v = _version("rollback", args[0], reg)
        before = reg.version
        try:
            version = node().apply_version(v, f"rollback to version {v}")
        except WippyError as exc:
            raise _fail("rollback", f"{exc} (nothing changed)") from None
        if version == before:
            print(f"the entries already equal version {v}'s (version {version})")
        else:
            print(f"version {version} (the entries of version {v})")

    @staticmethod
    def _reset(args: list[str]) -> None:
        _args("reset", args, 0, 0)
        reg = node().registry
        count = len(reg.ids())
        try:
            node().reset_registry()
        except WippyError as exc:
            raise _fail("reset", str(exc)) from None
        print(f"registry emptied ({count} entries removed; version 0)")

    @staticmethod
    def _export(args: list[str]) -> None:
        _args("export", args, 1, None)
        directory, namespaces = args[0], args[1:] or None
        entries = node().registry.entries()
        if namespaces and not any(_in_namespace(e.id, ns) for e in entries for ns in namespaces):
            raise _fail("export", f"no entries in namespace {', '.join(namespaces)}; %registry list shows them")
        try:
            files = export_tree(entries, directory, namespaces)
        except WippyError as exc:
            raise _fail("export", str(exc)) from None
        except OSError as exc:
            raise _fail("export", f"cannot write {directory}: {exc.strerror or exc}") from None
        count = sum(1 for e in entries if namespaces is None or any(_in_namespace(e.id, ns) for ns in namespaces))
        print(f"exported {count} entries to {directory} ({len(files)} files)")

    @staticmethod
    def _watch(args: list[str]) -> Table | None:
        _args("watch", args, 0, 1)
        if not args:
            rows = [(d, "error" if w.last_error else "ok",
                     w.last_error or w.last_result or "no edits yet", str(w.reloads))
                    for d, w in sorted(WATCHERS.items())]
            return Table(("DIRECTORY", "STATE", "LAST", "RELOADS"), rows,
                         "no watched trees; %registry watch DIR starts one", "wippy-registry-watch")
        directory = args[0]
        if directory in WATCHERS:
            raise _fail("watch", f"{directory} is already watched; %registry unwatch {directory} first")
        if not Path(directory).exists():
            raise _fail("watch", f"{directory}: no such file or directory")
        watcher = TreeWatcher(node(), directory)
        try:
            version = watcher.start()
        except (WippyError, ValueError, TypeError) as exc:
            raise _fail("watch", f"{exc} (nothing changed, not watching)") from None
        except OSError as exc:
            raise _fail("watch", f"cannot watch {directory}: {exc.strerror or exc}") from None
        WATCHERS[directory] = watcher
        _shown[directory] = len([m for m in watcher.messages if m.startswith(("[applied]", "[error]"))])
        print(f"watching {directory} (version {version})")
        return None

    @staticmethod
    def _unwatch(args: list[str]) -> None:
        _args("unwatch", args, 0, 1)
        if args and args[0] not in WATCHERS:
            shown = ", ".join(sorted(WATCHERS)) or "none"
            raise _fail("unwatch", f"{args[0]} is not watched (watched: {shown})")
        chosen = args or sorted(WATCHERS)
        for directory in chosen:
            WATCHERS.pop(directory).stop()
            print(f"stopped watching {directory}")
        if not chosen:
            print("no watched trees")


_shown: dict[str, int] = {}  # directory -> how many of its watcher's reports cells have shown


def show_watch_reports() -> None:
    """Print what the watchers applied or refused since the last cell (an IPython pre_run_cell hook).

    A watcher works on its own threads, which cannot print into a cell; so the next cell the user runs
    starts with the news: ``wippy watch DIR: refused: FILE:LINE: ...``. Runs on the cell's thread.
    """
    for directory, watcher in sorted(WATCHERS.items()):
        reports = [m for m in watcher.messages if m.startswith(("[applied]", "[error]"))]
        seen = _shown.get(directory, 0)
        if seen > len(reports):  # the deque dropped old lines: show the newest
            seen = 0
        for line in reports[seen:]:
            kind, _, message = line.partition("] ")
            word = "refused" if kind == "[error" else "applied"
            print(f"wippy watch {directory}: {word}: {message}")
        _shown[directory] = len(reports)


def stop_watchers() -> None:
    """Stop every watcher the magics started (unloading the extension; any thread)."""
    while WATCHERS:
        WATCHERS.popitem()[1].stop()
