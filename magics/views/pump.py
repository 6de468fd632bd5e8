"""What every live view shares: the coalescing pump, the base class, the event sources, widget closing.

A view keeps its state in synced traitlets of an ipywidget and draws in one place (its ``_frame``). One
:class:`Pump` per view, a daemon thread, wakes every ``interval`` seconds (0.1 s: at most 10 updates a
second), lets the view collect what changed since the last step (drained subscriptions, a snapshot) and,
only if a value differs, sets the widget's traitlets inside ``hold_sync()``: one comm message per widget
and step, however many events arrived meanwhile.

The runtime is never blocked by a view: runtime events reach a view through bounded buffers that drop
the oldest and count (``node.events`` subscriptions; the supervision subscriber here), and snapshots
(``node.statistics``, ``supervision.tree``) are taken on the pump's thread, at most once per step.

Threads: sources push from runtime threads (the supervision thread, hosts); widget callbacks (a sort
Dropdown, a filter Text) run on the kernel's shell thread or, in JupyterLab 4.4+, on a subshell thread;
they only mark the view dirty. The pump's thread is the only one that draws and writes model traitlets.
A step that raises is counted (``pump.errors``) and shown in the view's status line; the pump goes on.

Closing (:meth:`View.close`, ``view.widget.close()``, or the front end closing the model's comm) stops
the pump, closes the subscriptions and closes every widget of the view (children, layouts, styles), so
ipywidgets' registry does not grow. A view that was displayed in a kernel then replaces its output by the
static HTML of its last state (``update_display_data``).

Clearing an output closes the view too. JupyterLab removes the widget's views from a cleared output but
keeps its model, so the kernel would hear nothing: every view's box holds a :class:`Presence`, an
invisible anywidget whose front-end views say when they are rendered and removed (anywidget calls the
cleanup that ``render`` returns when a view is removed). After a removal the kernel asks the front ends
whether any of them still shows the view; if none answers within :attr:`View.GRACE` seconds, the view
closes as if ``close(freeze=False)`` were called: no static form is written, the output stays cleared.
A view that no front end ever rendered (nbval, a plain kernel, tests) is never closed this way.
"""

from __future__ import annotations

import collections
import contextlib
import html
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

import anywidget
import ipywidgets as widgets
import traitlets
from wippy.runtime import Node, NodeStatistics, WippyError

from ..current import cell

__all__ = [
    "GRACE",
    "INTERVAL",
    "EventSource",
    "Presence",
    "Pump",
    "RuntimeEventLike",
    "Subscription",
    "TreeBuffer",
    "View",
    "cell_runs_again",
    "close_widget",
    "events_of",
    "live_views",
    "refresh_views",
    "statistics",
    "timed_statistics",
]

INTERVAL = 0.1  # seconds between two steps of a pump: at most 10 updates a second
MAXLEN = 10_000  # events a subscription buffers before it drops (and counts)
GRACE = 1.5  # seconds a shown view may have no front-end view (a re-render) before it is closed


# ---------------------------------------------------------------------------------------------- sources
class RuntimeEventLike(Protocol):
    """The fields of ``wippy.runtime.events.RuntimeEvent`` the views read (see API.md, Views)."""

    seq: int
    kind: str
    time: float
    pid: str | None
    peer: str | None
    topic: str | None
    size: int | None
    preview: str | None
    entry: str | None
    host: str | None
    reason: str | None
    error: str | None
    name: str | None


class Subscription(Protocol):
    """A bounded buffer of runtime events (``node.events.subscribe(...)``)."""

    dropped: int

    def drain(self, limit: int | None = None) -> list[Any]: ...
    def wait(self, timeout: float | None) -> bool: ...
    def close(self) -> None: ...


class EventSource(Protocol):
    """``node.events``: the runtime's event bus."""

    def subscribe(self, kinds: Sequence[str] | None = ..., pids: Iterable[str] | None = ...,
                  maxlen: int = ...) -> Subscription: ...


def events_of(node: Node) -> EventSource | None:
    """The node's event bus (``node.events``), or None on a runtime without one."""
    return getattr(node, "events", None)


class TreeBuffer:
    """A bounded buffer of supervision :class:`~wippy.runtime.supervisor_tree.TreeEvent` s.

    ``node.supervision.subscribe`` calls :meth:`push` on the supervision thread: it appends and returns
    (the oldest event is dropped, and counted, when the buffer is full) and pokes the pump.
    """

    def __init__(self, node: Node, poke: Callable[[], None], maxlen: int = MAXLEN) -> None:
        self._events: collections.deque[Any] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._poke = poke
        self.dropped = 0
        self._unsubscribe: Callable[[], None] | None = node.supervision.subscribe(self.push)

    def push(self, event: Any) -> None:
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
        self._poke()

    def drain(self) -> list[Any]:
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    def close(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()


class _Sampler:
    """The node's statistics, shared by the views of one node: one snapshot serves every view that asks
    within ``max_age`` seconds. A snapshot pauses each host while it lists its processes (about 1 s per
    100 k processes), so snapshots are at least ten times their own cost apart: views take at most
    about a tenth of the hosts' time, however many processes there are."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.lock = threading.Lock()
        self.at = 0.0
        self.cost = 0.0  # seconds the last snapshot took
        self.memory = False
        self.value: NodeStatistics | None = None

    def get(self, max_age: float, memory: bool) -> tuple[NodeStatistics, float]:
        with self.lock:
            now = time.monotonic()
            max_age = max(max_age, 10 * self.cost)
            if self.value is None or now - self.at > max_age or (memory and not self.memory):
                self.value = self.node.statistics(memory=memory)
                self.at, self.memory = time.monotonic(), memory
                self.cost = self.at - now
            return self.value, self.at


_samplers: weakref.WeakKeyDictionary[Node, _Sampler] = weakref.WeakKeyDictionary()
_samplers_lock = threading.Lock()


def statistics(node: Node, max_age: float = INTERVAL, memory: bool = False) -> NodeStatistics:
    """``node.statistics(memory=...)``, or a snapshot another view took less than ``max_age`` s ago."""
    return timed_statistics(node, max_age, memory)[0]


def timed_statistics(node: Node, max_age: float = INTERVAL, memory: bool = False) -> tuple[NodeStatistics, float]:
    """:func:`statistics` and when that snapshot was taken (``time.monotonic()``)."""
    with _samplers_lock:
        sampler = _samplers.get(node)
        if sampler is None:
            sampler = _samplers[node] = _Sampler(node)
    return sampler.get(max_age, memory)


# ---------------------------------------------------------------------------------------------- the pump
class Pump:
    """A daemon thread that calls ``step()`` at most once per ``interval`` seconds until stopped.

    ``step`` returns True when it changed the widget (counted in :attr:`updates`). :meth:`poke` asks for
    a step as soon as the interval allows; pokes and events that arrive meanwhile are coalesced into that
    one step. The thread also steps every ``interval`` without pokes, to drain sources that cannot poke.
    """

    def __init__(self, step: Callable[[], bool], *, interval: float = INTERVAL, name: str = "wippy-view") -> None:
        self._step = step
        self.interval = interval
        self.name = name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.updates = 0
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self.error_count = 0

    def start(self) -> Pump:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def poke(self) -> None:
        """Ask for a step soon (any thread; never blocks)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; waits for a step in progress, unless called from the pump's own thread."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):  # too soon: what arrives meanwhile joins this step
                break
            if self._stop.is_set():
                break
            self._wake.clear()
            next_at = time.monotonic() + self.interval
            self.steps += 1
            try:
                if self._step():
                    self.updates += 1
            except Exception as exc:
                self.error_count += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")


def close_widget(w: widgets.Widget) -> None:
    """Close ``w`` and every widget it holds (children, layout, style), depth first."""
    # a widget closed already (view.widget.close()) still holds open ones: children, layout, style
    for name in w.keys:
        if name.startswith("_"):
            continue
        value = getattr(w, name, None)
        if isinstance(value, widgets.Widget):
            close_widget(value)
        elif isinstance(value, list | tuple):
            for v in value:
                if isinstance(v, widgets.Widget):
                    close_widget(v)
    w.close()


# ---------------------------------------------------------------------------------------------- presence
# A front-end view of a Presence says "view-added" when rendered and "view-removed" from the cleanup that
# anywidget calls when the view is removed; it answers the kernel's "census" with "here". Sends after the
# model was closed are ignored (the send throws or does nothing).
_PRESENCE_ESM = """
export default {
  render({ model, el }) {
    el.style.display = "none";
    const send = (event) => {
      try { model.send({ event }); } catch (e) { /* the model is closed */ }
    };
    const answer = (msg) => { if (msg && msg.event === "census") send("here"); };
    model.on("msg:custom", answer);
    send("view-added");
    return () => {
      model.off("msg:custom", answer);
      send("view-removed");
    };
  },
};
"""


class Presence(anywidget.AnyWidget):  # type: ignore[misc]
    """An invisible widget that notices when no front end shows it any more, and then calls ``on_gone``
    (on a timer thread).

    When one of its front-end views is removed, the kernel asks every front end (a "census" message:
    comm messages go to every page connected to the kernel) and waits ``grace`` seconds: if no view
    answered "here" and none was added meanwhile, nothing shows the widget. Asking, rather than
    counting adds and removes, keeps a page that went away without a word (reloaded, its tab closed:
    its views' removals never reach the kernel) from keeping a view alive after a later clear. Only a
    removal starts this: a presence that no front end ever rendered is never gone.
    """

    _esm = traitlets.Unicode(_PRESENCE_ESM).tag(sync=True)

    def __init__(self, on_gone: Callable[[], None], grace: float = GRACE) -> None:
        super().__init__()
        self.grace = grace
        self._on_gone = on_gone
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every removal: a timer of an older one does nothing
        self._answered = False  # a view was added, or answered, since the last removal
        self.added = self.removed = 0  # views rendered and removed so far, in all front ends
        self.on_msg(self._message)

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A front end's message (on the kernel's shell thread): never blocks."""
        event = content.get("event") if isinstance(content, dict) else None
        with self._lock:
            if event in ("view-added", "here"):
                self._answered = True
                self.added += event == "view-added"
                return
            if event != "view-removed":
                return
            self.removed += 1
            self._generation += 1
            self._answered = False
            generation = self._generation
        with contextlib.suppress(Exception):  # the comm may be closing
            self.send({"event": "census"})
        timer = threading.Timer(self.grace, self._expire, (generation,))
        timer.name, timer.daemon = "wippy-view-gone", True
        timer.start()

    def _expire(self, generation: int) -> None:
        with self._lock:
            if self._answered or generation != self._generation:
                return
        with contextlib.suppress(Exception):  # closing must not print into some cell's output
            self._on_gone()


# ---------------------------------------------------------------------------------------------- cells
_by_cell: dict[str, list[weakref.ref[View]]] = {}  # views shown by a notebook cell, by the cell's id
_by_cell_lock = threading.Lock()


def _remember_cell(view: View) -> None:
    """Note the cell running on this thread as the one that showed ``view`` (views made on other threads,
    such as the mailbox under a process table, belong to their parent view instead)."""
    cell_id = getattr(cell, "id", None)
    if cell_id:
        with _by_cell_lock:
            refs = [r for r in _by_cell.get(cell_id, []) if (v := r()) is not None and not v.closed]
            refs.append(weakref.ref(view))
            _by_cell[cell_id] = refs


def cell_runs_again(cell_id: str) -> None:
    """A cell runs again, so the front end cleared its output: close the views its last run showed.

    Called by the magics' pre_run_cell hook, on the cell's thread. (JupyterLab keeps the widget models of
    a cleared output alive, so their comms never close by themselves.)
    """
    with _by_cell_lock:
        refs = _by_cell.pop(cell_id, [])
    for ref in refs:
        view = ref()
        if view is not None:
            view.close(freeze=False)


# ---------------------------------------------------------------------------------------------- the base
_live: weakref.WeakSet[View] = weakref.WeakSet()  # views made and not closed yet
_live_lock = threading.Lock()


def _closer(ref: weakref.ref[View]) -> Callable[[], None]:
    """What a view's presence calls when the view's output was cleared: close it, leaving no output."""

    def close() -> None:
        view = ref()
        if view is not None:
            view.close(freeze=False)

    return close


def live_views() -> list[View]:
    """The views of this process that are not closed (child views, such as the mailbox under a process
    table, included)."""
    with _live_lock:
        return [v for v in _live if not v.closed]


def refresh_views(node: Node) -> None:
    """After a teaching-mode step (any thread): the next snapshot of ``node`` is taken afresh and every
    live view of it draws as soon as its pump allows, so each view follows each step."""
    with _samplers_lock:
        sampler = _samplers.get(node)
    if sampler is not None:
        with sampler.lock:
            sampler.value = None
    for v in live_views():
        if getattr(v, "node", None) is node:
            v.poke()


def _ipython_kernel_shell() -> Any:
    """The running ipykernel's shell, or None (a plain IPython shell, or no IPython at all)."""
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    if not InteractiveShell.initialized():
        return None
    shell = InteractiveShell.instance()
    return shell if getattr(shell, "kernel", None) is not None else None


class View:
    """The base of the live views: a widget, a pump that redraws it, a static form, and ``close``.

    Subclasses build ``self.widget`` in :meth:`_build`, gather news in :meth:`_collect` (on the pump's
    thread), and return the traitlet values of the next frame from :meth:`_frame`, plus the static forms
    :meth:`static_html` and :meth:`text`. The first frame is drawn at once, on the caller's thread, so
    what is displayed right after construction (and saved) is the current state.
    """

    title: ClassVar[str] = "view"
    GRACE: ClassVar[float] = GRACE
    """Seconds a view that was shown may have no front-end view before it closes (see :class:`Presence`)."""

    def __init__(self, node: Node, *, interval: float = INTERVAL, live: bool = True) -> None:
        self.node = node
        self.closed = False
        self._closing = False
        self._close_lock = threading.Lock()
        self._draw_lock = threading.RLock()
        self._drawing_thread: threading.Thread | None = None
        self._display_ids: list[str] = []
        self._close_hooks: list[Callable[[], None]] = []
        self.status = widgets.HTML(value="")
        try:
            self.widget: widgets.Box = self._build()
        except BaseException:  # undo what _build subscribed to before it failed
            for hook in reversed(self._close_hooks):
                with contextlib.suppress(Exception):
                    hook()
            close_widget(self.status)
            raise
        self.pump = Pump(self._tick, interval=interval, name=f"wippy-{self.title}")
        self.presence = Presence(_closer(weakref.ref(self)), grace=self.GRACE)
        self.widget.children = (*self.widget.children, self.presence)
        with _live_lock:
            _live.add(self)
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise
        comm = self.widget.comm
        if comm is not None:  # the front end closed the model: stop too
            comm.on_close(lambda _msg: self._close_soon())
        _remember_cell(self)
        if live:
            self.pump.start()

    # ------------------------------------------------------------------ subclass hooks
    def _build(self) -> widgets.Box:
        raise NotImplementedError

    def _collect(self) -> None:
        """Drain sources and take snapshots (pump thread, or the constructor's)."""

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        """The traitlet values of the next frame, by widget."""
        raise NotImplementedError

    def static_html(self) -> str:
        """The current state as static HTML/SVG (saved notebooks, GitHub, nbval)."""
        raise NotImplementedError

    def text(self) -> str:
        """The current state as text (text/plain)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ drawing
    def poke(self) -> None:
        """Ask for a step soon (any thread, never blocks: sources call this when news arrive)."""
        pump = getattr(self, "pump", None)
        if pump is not None:
            pump.poke()

    def mark_dirty(self, *_: Any) -> None:
        """Ask for a redraw at the next step (any thread: widget callbacks call this)."""
        if self.closed or self.drawing:
            return
        pump = getattr(self, "pump", None)
        if pump is not None and not pump.running:  # a still view (stopped, or not live): draw here
            self.refresh()
        else:
            self.poke()

    def _status_html(self) -> str:
        return ""

    def refresh(self) -> bool:
        """Collect and draw now (any thread); True if a traitlet changed."""
        with self._draw_lock:
            if self.closed:
                return False
            self._collect()
            frame = self._frame()
            status = self._status_html()
            if self.pump.error_count:
                status += (f' <span style="color:#c62828">{self.pump.error_count} failed updates, last: '
                           f"{html.escape(self.pump.errors[-1])}</span>")
            frame.setdefault(self.status, {})["value"] = status
            changes = [(w, {k: v for k, v in values.items() if getattr(w, k) != v}) for w, values in frame.items()]
            changes = [(w, values) for w, values in changes if values]
            if not changes:
                return False
            self._drawing_thread = threading.current_thread()
            try:
                with contextlib.ExitStack() as stack:
                    for w, _ in changes:
                        stack.enter_context(w.hold_sync())
                    for w, values in changes:
                        for k, v in values.items():
                            setattr(w, k, v)
            finally:
                self._drawing_thread = None
            return True

    @property
    def drawing(self) -> bool:
        """True on the thread that is setting the widget's traitlets (observers ignore those changes)."""
        return self._drawing_thread is threading.current_thread()

    def _tick(self) -> bool:
        if self.widget.comm is None:  # somebody called view.widget.close()
            self.close()
            return False
        return self.refresh()

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget's bundle plus the static forms: text/html (the drawing) and text/plain."""
        data: dict[str, Any] = {}
        if not self.closed and self.widget.comm is not None:
            data.update(self.widget._repr_mimebundle_() or {})
        data["text/html"] = self.static_html()
        data["text/plain"] = self.text()
        return data

    def _ipython_display_(self) -> None:
        """Display with a display id, so that closing the view can leave its last state in the output."""
        from IPython.display import display

        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(self._repr_mimebundle_(), raw=True, display_id=display_id)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live" if self.pump.running else "still"
        return f"<{type(self).__name__} {state}>"

    # ------------------------------------------------------------------ closing
    def _close_soon(self) -> None:
        # the comm's close handler runs on the kernel's shell thread: do not wait for the pump there
        threading.Thread(target=self.close, kwargs={"freeze": False}, name="wippy-view-close", daemon=True).start()

    def stop(self) -> None:
        """Stop updating (pump and subscriptions) but keep the widget showing the last frame."""
        self.pump.stop()
        for hook in reversed(self._close_hooks):
            with contextlib.suppress(Exception):
                hook()
        self._close_hooks.clear()

    def close(self, freeze: bool = True) -> None:
        """Stop the pump, close the subscriptions and the widgets. With ``freeze``, the outputs that show
        the view are replaced by its static form, drawn from the last state (in a kernel). Idempotent;
        any thread.
        """
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        self.pump.stop()  # outside the lock: a step in progress holds it, and stop() waits for that step
        if freeze:
            with contextlib.suppress(Exception):  # the last state, for the static form left in the output
                self.refresh()
        self.stop()
        final: dict[str, str] | None = None
        with self._draw_lock:
            if freeze:
                try:
                    final = {"text/html": self.static_html(), "text/plain": self.text()}
                except Exception:  # the node may be gone: leave the output as it was
                    final = None
            self.closed = True
        with _live_lock:
            _live.discard(self)
        close_widget(self.widget)
        shell = _ipython_kernel_shell()
        if shell is not None and final is not None:
            from IPython.display import update_display

            for display_id in self._display_ids:
                with contextlib.suppress(Exception):
                    update_display(final, raw=True, display_id=display_id)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the view stops (unsubscribe a source)."""
        self._close_hooks.append(hook)

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- helpers
def short_pid(pid: str | None) -> str:
    """``{app:processes|0x0001a}`` -> ``0x0001a``; None -> ``python``."""
    if not pid:
        return "python"
    return pid.rsplit("|", 1)[-1].rstrip("}")


def clock(t: float) -> str:
    """Wall time as ``HH:MM:SS.mmm``."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"


def sparkline(values: Sequence[float], width: int = 240, height: int = 36, colour: str = "#1565c0") -> str:
    """A small SVG line of ``values`` (scaled to the maximum), with the last value written beside."""
    peak = max(values, default=0)
    top = max(peak, 1)
    n = len(values)
    if n < 2:
        points = f"0,{height} {width},{height}"
    else:
        step = width / (n - 1)
        points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))
    last = values[-1] if values else 0
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-sparkline" width="{width + 70}" '
            f'height="{height}" viewBox="0 0 {width + 70} {height}" font-family="sans-serif" font-size="11">'
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            f'<text x="{width + 6}" y="{height / 2 + 4}">{last:g} (max {peak:g})</text></svg>')


def table_html(columns: Sequence[str], rows: Iterable[Sequence[str]], css: str,
               row_css: Callable[[int], str] | None = None) -> str:
    """An HTML table (the values escaped here)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = row_css(i) if row_css else ""
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    style = f"<style>.{css} td,.{css} th{{padding:0 .6em;text-align:left}}</style>"
    return f'{style}<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Rows under column titles as aligned text."""
    right = set(right)
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]

    def fmt(row: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(columns), *(fmt(r) for r in rows)])


@contextlib.contextmanager
def suppressed(*errors: type[BaseException]) -> Iterator[None]:
    """Ignore runtime errors of a stopped node while drawing (a view can outlive its node)."""
    try:
        yield
    except (WippyError, *errors):
        pass
