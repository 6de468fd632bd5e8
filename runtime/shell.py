"""The notebook's shell process: a Lua process that runs cells and keeps its globals between them.

Threads: :meth:`Shell.run` is called from the thread that runs a cell (the kernel's main thread, or a
subshell thread); it hands the cell to the shell's host and waits, calling ``on_output`` on the *calling*
thread with each line the cell prints, so output lands in the cell that caused it. The host thread runs
the Lua; callbacks named ``_something`` run on the host thread.

Interrupts: :meth:`Shell.interrupt` (any thread) stops the running cell. A cell that waits (receive, sleep,
select) is woken with an error; a cell that loops is stopped by its count hook, which polls a flag set
here. The shell process survives either way, with its PID, globals and inbox.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .errors import LuaError, ProcessError, TeachError, Timeout
from .luaconv import lua_pair as _pair
from .luaconv import lua_text as _text
from .payload import from_lua

if TYPE_CHECKING:
    from .host import Host

__all__ = ["CellResult", "Shell", "ShellOwner"]


class ShellOwner(Protocol):
    """What the shell needs from its node (the node implements it): the running host it lives on."""

    def host(self, name: str | None = None) -> Host: ...

INTERRUPT_GRACE = 5.0  # seconds a stopped cell has to unwind before run() gives up waiting


@dataclass(frozen=True)
class CellResult:
    """What a cell returned."""

    has_value: bool   #: the chunk returned at least one value
    text: str         #: the values as Lua prints them ("42", '"hi"', "{1, 2, x = true}"); "" if none
    value: Any        #: the first value as plain Python data (None if it cannot be copied)


_SCHEDULER_FRAME = re.compile(r"^\s*(\[C\]: in function 'xpcall'|scheduler\.lua:\d+:.*|\(\.\.\.tail calls\.\.\.\))$")


def _clean_traceback(message: str) -> str:
    """Drop the scheduler's own frames (the cell runner) from a Lua traceback."""
    lines = message.split("\n")
    return "\n".join(line for line in lines if not _SCHEDULER_FRAME.match(line))


class Shell:
    """The shell process of a node (``node.shell()``). One cell runs at a time; others queue."""

    def __init__(self, node: ShellOwner, host: str) -> None:
        self.node = node
        self.host = node.host(host)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, Future[tuple[Any, ...]]] = {}
        self._outputs: dict[int, queue.SimpleQueue[str | None]] = {}
        self._current: int | None = None
        self._interrupt = threading.Event()
        self._run_lock = threading.Lock()

        def start(ctx: Any) -> str:
            pid, err = _pair(ctx.scheduler.shell_start())
            if pid is None:
                raise ProcessError(f"the shell process could not start: {_text(err)}")
            return _text(pid)

        self.pid: str = self.host.call(start)

    def __repr__(self) -> str:
        return f"<Shell {self.pid}>"

    # ---------------------------------------------------------------- any thread
    def run(
        self,
        code: str,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
    ) -> CellResult:
        """Run ``code`` as a Lua chunk (named ``cell``) in the shell process and return its result.

        Raises :class:`LuaError` (``cell:LINE: message`` and the Lua traceback), :class:`Timeout` after
        ``timeout`` seconds (the cell is stopped first), or re-raises ``KeyboardInterrupt`` once the
        interrupted cell has stopped. Cells run one at a time; a second caller waits its turn.
        """
        with self._run_lock:
            return self._run(code, timeout, on_output)

    def _run(self, code: str, timeout: float | None, on_output: Callable[[str], None] | None) -> CellResult:
        cell = next(self._ids)
        fut: Future[tuple[Any, ...]] = Future()
        out: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        with self._lock:
            self._pending[cell] = fut
            self._outputs[cell] = out
        self._interrupt.clear()
        encoded = code.encode("utf-8", "surrogateescape")
        pid = self.pid.encode()
        self.host.post("call", lambda ctx: ctx.scheduler.shell_exec(pid, encoded, cell), Future())
        deadline = None if timeout is None else time.monotonic() + timeout
        stopped: str | None = None  # "timeout" or "interrupt" once we asked the cell to stop
        stop_deadline = 0.0
        try:
            while True:
                # block on the cell's queue: lines as they come, then None when the cell is done
                wait = 0.1 if deadline is None or stopped else max(0.0, min(0.1, deadline - time.monotonic()))
                try:
                    line = out.get(timeout=wait)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line and on_output is not None:
                    on_output(line)
                if fut.done() and line == "":
                    break
                now = time.monotonic()
                if stopped is None and self.host.paused:
                    # teaching mode: someone paused the host this cell runs on (another thread, a
                    # subshell): its process would wait for a step no one can take from here
                    stopped, stop_deadline = "paused", now + INTERRUPT_GRACE
                    self.interrupt()
                if stopped is None and deadline is not None and now >= deadline:
                    stopped, stop_deadline = "timeout", now + INTERRUPT_GRACE
                    self.interrupt()
                if stopped is not None and now >= stop_deadline:
                    raise Timeout(f"the cell did not stop within {INTERRUPT_GRACE:g}s of being interrupted")
        except KeyboardInterrupt:
            self.interrupt()
            self._finish(fut, out, on_output)
            raise
        finally:
            with self._lock:
                self._pending.pop(cell, None)
                self._outputs.pop(cell, None)
        self._drain(out, on_output)
        ok, kind, text, value = fut.result()
        if ok:
            return CellResult(has_value=int(kind) > 0, text=text if int(kind) > 0 else "", value=value)
        if kind == "interrupted" and stopped == "paused":
            raise TeachError(f"the host {self.host.name} was paused (%runtime pause) while this cell waited: "
                             "the cell was stopped rather than left waiting for ever; %runtime resume (or "
                             "step), then run it again")
        if kind == "interrupted" and stopped == "timeout":
            raise Timeout(f"the cell was stopped after {timeout:g}s (--timeout)")
        if kind == "interrupted":
            raise KeyboardInterrupt
        raise LuaError(_clean_traceback(text))

    def _finish(self, fut: Future[tuple[Any, ...]], out: queue.SimpleQueue[str | None],
                on_output: Callable[[str], None] | None) -> None:
        """After an interrupt: wait (bounded) for the cell to unwind, keeping its output."""
        futures.wait([fut], timeout=INTERRUPT_GRACE)  # the cell's own outcome does not matter here
        self._drain(out, on_output)

    @staticmethod
    def _drain(out: queue.SimpleQueue[str | None], on_output: Callable[[str], None] | None) -> None:
        while True:
            try:
                line = out.get_nowait()
            except queue.Empty:
                return
            if line is not None and on_output is not None:
                on_output(line)

    def interrupt(self) -> None:
        """Stop the running cell (a waiting one at once, a looping one within its next 1000 instructions)."""
        self._interrupt.set()
        pid = self.pid.encode()
        self.host.post("call", lambda ctx: ctx.scheduler.shell_interrupt(pid), Future())

    def globals(self) -> list[str]:
        """Names of the globals the cells have defined."""
        pid = self.pid.encode()
        names = self.host.call(lambda ctx: from_lua(ctx.scheduler.shell_globals(pid)))
        return list(names) if isinstance(names, list) else []

    def fields(self, path: str) -> list[str]:
        """String keys of the table at a dotted path of the globals (``"config.db"``), for completion."""
        pid = self.pid.encode()
        encoded = path.encode()
        names = self.host.call(lambda ctx: from_lua(ctx.scheduler.shell_fields(pid, encoded)))
        return list(names) if isinstance(names, list) else []

    # ---------------------------------------------------------------- host thread
    def _output(self, text: str) -> bool:
        """A line the shell printed: to the running cell's queue. False when no cell runs."""
        cell = self._current
        if cell is None:
            return False
        with self._lock:
            out = self._outputs.get(cell)
        if out is None:
            return False
        out.put(text)
        return True

    def _cell_begin(self, cell: int) -> None:
        self._current = cell

    def _cell_done(self, cell: int, ok: bool, kind: Any, text: Any, value: Any) -> None:
        self._current = None
        with self._lock:
            fut = self._pending.get(cell)
            out = self._outputs.get(cell)
        if fut is not None and not fut.done():
            fut.set_result((bool(ok), _text(kind) if isinstance(kind, bytes) else kind, _text(text),
                            from_lua(value)))
        if out is not None:
            out.put(None)  # wakes run() at once

    def _poll(self) -> bool:
        return self._interrupt.is_set()
