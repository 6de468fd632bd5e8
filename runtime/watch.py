"""Watching a YAML source tree: every edit of a file under it becomes one registry transaction.

:class:`TreeWatcher` watches a directory (``load_tree``'s root) with a watchdog observer. Any change of an
``_index.yaml`` or a ``.lua`` file under it (editor temporaries such as ``.swp``, ``x~`` and ``.#x`` are
ignored) arms a debounce; after ``debounce`` seconds without further changes the whole tree is loaded
again with :func:`~.tree.load_tree` and the difference against the entries this tree produced before is
applied as ONE transaction (``registry.changes()`` ... ``.apply(message="watch DIR")``): created and
changed entries are written, entries gone from the tree are deleted. One edit is one version; a reload
that changes nothing makes no version. New ``process.host`` entries become hosts, as :meth:`Node.apply`
does.

A tree that does not load (malformed YAML, a Lua syntax error, an unknown kind...) or a transaction the
registry refuses changes nothing: the running version stays, and the error, naming file and line, is
reported.

Threads: watchdog's observer thread only records that something changed; the watcher's own debounce
thread (``wippy-watch``) waits for quiet, reloads and commits, and calls ``on_event(kind, message)``
(``kind`` is ``"applied"`` or ``"error"``). :meth:`reload`, :meth:`start` and :meth:`stop` may be called
from any thread; reloads never overlap.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .entries import Entry
from .errors import WippyError
from .host import HostOptions
from .tree import INDEX, load_tree

if TYPE_CHECKING:
    from collections.abc import Mapping

    from watchdog.observers.api import BaseObserver

    from .registry import Registry

__all__ = ["TreeWatcher", "WatchedNode", "relevant_path"]

EventSink = Callable[[str, str], None]
KEPT = 100  # messages kept per watcher
_IGNORED_TYPES = frozenset({"opened", "closed_no_write"})


def relevant_path(path: str | bytes) -> bool:
    """Is ``path`` a file whose change may change the tree (an ``_index.yaml`` or a ``.lua`` source)?"""
    name = Path(path.decode() if isinstance(path, bytes) else path).name
    if name.startswith((".#", "#")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
        return False
    return name == INDEX or name.endswith(".lua")


class WatchedNode(Protocol):
    """What a watcher needs of the node whose registry it keeps (a :class:`~.node.Node` is one).

    A node that also keeps log lines (``_keep(name, line)``, as :class:`~.node.Node` does) gets the
    watcher's messages in its logs; that hook is optional and looked up by name.
    """

    @property
    def registry(self) -> Registry: ...

    @property
    def hosts(self) -> Mapping[str, Any]: ...

    def add_host(self, name: str, options: HostOptions | None = None) -> Any: ...


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's observer thread: tells the watcher that a relevant file changed."""

    def __init__(self, watcher: TreeWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_TYPES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if event.is_directory:
            # a folder moved or deleted takes its _index.yaml with it; created/modified folders do not count
            if event.event_type in ("deleted", "moved"):
                self._watcher.touch()
            return
        if any(p and relevant_path(p) for p in paths):
            self._watcher.touch()


class TreeWatcher:
    """Keep the node's registry equal to a tree on disk while the tree is edited.

    ``node``: the :class:`~.node.Node` whose registry changes. ``directory``: the tree (a directory of
    ``_index.yaml`` files, or one ``_index.yaml``). ``debounce``: seconds of quiet after a change before
    the tree is reloaded. ``on_event(kind, message)``: called on the watcher's debounce thread after each
    reload that did something, ``kind`` ``"applied"`` (``"version V: +a ~b -c"``) or ``"error"`` (the
    reason, with file and line); exceptions it raises are kept as messages and otherwise ignored.

    Every message is also kept: :attr:`messages` (the last 100), :attr:`last_result`, :attr:`last_error`
    (None after a success) and the node's logs under ``"watch:" + directory`` (``node.logs(...)``).
    """

    def __init__(self, node: WatchedNode, directory: str | Path, debounce: float = 0.1,
                 on_event: EventSink | None = None) -> None:
        self.node = node
        self.directory = Path(directory)
        self.debounce = float(debounce)
        self.on_event = on_event
        self.last_error: str | None = None
        self.last_result: str | None = None
        self.messages: collections.deque[str] = collections.deque(maxlen=KEPT)
        self.reloads = 0  # reloads done (successful or not), for tests and tools
        self._ids: set[str] = set()  # the IDs the tree produced at its last successful reload
        self._reload_lock = threading.Lock()
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time of the next reload, None when nothing is pending
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    @property
    def log_name(self) -> str:
        """The name the node keeps this watcher's messages under: ``node.logs(watcher.log_name)``."""
        return f"watch:{self.directory}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ids(self) -> frozenset[str]:
        """The IDs the tree produced at its last successful reload."""
        with self._reload_lock:
            return frozenset(self._ids)

    # ------------------------------------------------------------------ lifecycle (any thread)
    def start(self) -> int:
        """Apply the tree now (calling thread), then watch it; returns the registry's version.

        Raises :class:`~.errors.TreeError` (or the registry's refusal) when the tree cannot be applied
        now; then nothing is watched and nothing changed. Entries of the tree already in the registry with
        the same content (``wippy run`` loaded them) make no new version.
        """
        if self._thread is not None:
            raise RuntimeError(f"the watcher of {self.directory} is already started")
        version, _ = self._reload()
        watched = self.directory if self.directory.is_dir() else self.directory.parent
        observer = Observer()
        observer.schedule(_Handler(self), str(watched), recursive=self.directory.is_dir())
        self._stopping = False
        thread = threading.Thread(target=self._run, name=f"wippy-watch {self.directory}", daemon=True)
        self._thread = thread
        thread.start()
        observer.start()
        self._observer = observer
        self._report("started", f"watching {self.directory} (version {version})")
        return version

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and join watchdog's thread and the debounce thread (a pending change is dropped)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)
        with self._cond:
            self._stopping = True
            self._due = None
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> TreeWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ changes
    def touch(self) -> None:
        """Something under the tree changed (any thread): reload after ``debounce`` seconds of quiet."""
        with self._cond:
            if self._stopping:
                return
            self._due = time.monotonic() + self.debounce
            self._cond.notify_all()

    def _run(self) -> None:
        """The debounce thread: wait for a change, then for quiet, then reload; until stopped."""
        while True:
            with self._cond:
                while not self._stopping and self._due is None:
                    self._cond.wait()
                while not self._stopping and self._due is not None:
                    remaining = self._due - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                self._due = None
            self.reload()

    def reload(self) -> int | None:
        """Load the tree and apply its difference now (calling thread); returns the new version, or None
        when the tree was refused (then :attr:`last_error` says why). Reports through ``on_event``."""
        try:
            version, counts = self._reload()
        except (WippyError, ValueError, TypeError) as exc:
            self.last_error = str(exc)
            self._report("error", f"{exc} (nothing changed; the running version stays)")
            return None
        self.last_error = None
        if counts is not None:
            a, b, c = counts
            self.last_result = f"version {version}: +{a} ~{b} -{c}"
            self._report("applied", self.last_result)
        return version

    def _reload(self) -> tuple[int, tuple[int, int, int] | None]:
        """Load and apply; (version, (created, updated, deleted) or None when nothing changed). Raises."""
        with self._reload_lock:
            self.reloads += 1
            entries = load_tree(self.directory)
            reg = self.node.registry
            for e in entries:  # refuse bad host options before anything is written (as Node.apply)
                if e.kind == "process.host":
                    HostOptions.from_mapping(e.data.get("host"))
            tx = reg.changes()
            created = updated = deleted = 0
            new_ids = {e.id for e in entries}
            new_hosts: list[Entry] = []
            for e in entries:
                have = reg.get(e.id)
                if have is None:
                    tx.create(e)
                    created += 1
                elif have != e:
                    tx.update(e)
                    updated += 1
                if e.kind == "process.host" and e.id not in self.node.hosts:
                    new_hosts.append(e)
            for gone in sorted(self._ids - new_ids):
                if reg.get(gone) is not None:
                    tx.delete(gone)
                    deleted += 1
            version = tx.apply(message=f"watch {self.directory}") if len(tx) else reg.version
            self._ids = new_ids
            for e in new_hosts:
                if e.id not in self.node.hosts:
                    self.node.add_host(e.id, HostOptions.from_mapping(e.data.get("host")))
            return version, ((created, updated, deleted) if len(tx) else None)

    def _report(self, kind: str, message: str) -> None:
        line = f"[{kind}] {message}"
        self.messages.append(line)
        keep: Any = getattr(self.node, "_keep", None)
        if keep is not None:
            keep(self.log_name, line)
        if self.on_event is not None and kind in ("applied", "error"):
            try:
                self.on_event(kind, message)
            except Exception as exc:  # a callback's bug must not stop the watcher
                self.messages.append(f"[callback] on_event raised {exc!r}")
