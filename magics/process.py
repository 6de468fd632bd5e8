"""Process magics: ``%ps`` (``--live``), ``%mailbox``, ``%spawn``, ``%send``, ``%kill``, ``%cancel``, ``%logs``.

Threads: each magic runs on the thread that runs the cell and calls the node's thread-safe public API.
Wrong input (options, IDs, PIDs, JSON) raises :class:`~IPython.core.error.UsageError`, which IPython shows
as its message alone: one line naming the thing and the fix, no Python traceback; node and kernel stay up.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from wippy.runtime import EntryError, Node, ProcessStatistics, Timeout, WippyError, parse_pid
from wippy.runtime.entries import validate_id

from .current import node
from .format import duration, size
from .usage import parse, parse_json, split_json

__all__ = ["ProcessMagics", "ProcessTable"]

COLUMNS = ("PID", "NAME", "ENTRY", "ACTOR", "HOST", "STATUS", "MAILBOX", "IN", "OUT", "MEMORY", "UPTIME")
EXIT_WAIT = 5.0  # seconds %kill waits to report the exit


class ProcessTable:
    """A snapshot of the node's processes, shown as a text table (text/plain) and an HTML table."""

    def __init__(self, processes: Sequence[ProcessStatistics], nodes: Sequence[str] | None = None) -> None:
        self.processes = list(processes)
        self.rows = [
            (p.pid, ", ".join(p.names) or "-", p.entry, p.actor or "-", p.host, p.status, str(p.mailbox),
             str(p.messages_in), str(p.messages_out), size(p.memory), duration(p.uptime))
            for p in self.processes
        ]
        self.columns: tuple[str, ...] = COLUMNS
        self._right = {6, 7, 8, 9, 10}   # numbers read best right-aligned
        if nodes is not None:   # a cluster: which node each process is on, first
            self.columns = ("NODE", *COLUMNS)
            self.rows = [(n, *r) for n, r in zip(nodes, self.rows, strict=True)]
            self._right = {i + 1 for i in self._right}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        if not self.rows:
            return "no processes are running"
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        right = self._right

        def fmt(row: Sequence[str]) -> str:
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            return "  ".join(cells).rstrip()

        return "\n".join([fmt(self.columns), *(fmt(r) for r in self.rows)])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>no processes are running</p>"
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f'<table class="wippy-ps"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Pid(str):
    """A PID returned by ``%spawn``: a plain string, shown bare (not quoted) as a cell's result."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _running_pid(n: Node, dest: str, magic: str) -> str:
    """The PID of ``dest`` (a PID or a registered name) if that process runs; else a UsageError."""
    try:
        pid = n.resolve(dest)
        host, _ = parse_pid(pid)
        if host != "python":  # Python mailboxes live on this pseudo-host; any other must exist
            n.host(host)
        alive = n.alive(pid)
    except WippyError as exc:
        raise UsageError(f"%{magic}: {exc}; %ps lists the running processes") from None
    if not alive:
        ended = n.exit_reason(pid)
        if ended is not None:
            reason, error = ended
            why = reason if error is None or error == reason else f"{reason}: {error.splitlines()[0]}"
            raise UsageError(f"%{magic}: process {pid} is not running (it exited: {why})")
        raise UsageError(f"%{magic}: no process {pid} is running; %ps lists the running processes")
    return pid


@magics_class
class ProcessMagics(Magics):
    """Look at and steer the node's processes from cells."""

    @magic_arguments()
    @argument("--live", action="store_true",
              help="a live table (sortable, filterable; pick a PID to see its mailbox) instead of a snapshot")
    @line_magic
    def ps(self, line: str) -> Any:
        """The node's processes: PID, names, entry, host, status, mailbox, messages in/out, memory, uptime."""
        args = parse(self.ps, line, "%ps")
        if args.live:
            from .views import ProcessTableView

            return ProcessTableView(node())
        n = node()
        if n.cluster is not None:   # every node of the cluster, with a node column
            both = n.cluster_processes(memory=True)
            return ProcessTable([p for _, p in both], [name for name, _ in both])
        return ProcessTable(n.statistics(memory=True).processes)

    @magic_arguments()
    @argument("pid", metavar="PID", help="a PID or a registered name")
    @line_magic
    def mailbox(self, line: str) -> Any:
        """A live view of one process's mailbox: queue length over time, the latest messages, exits and
        restarts (a supervised child is followed to its new PID)."""
        args = parse(self.mailbox, line, "%mailbox")
        from .views import MailboxView

        n = node()
        return MailboxView(n, _running_pid(n, args.pid, "mailbox"))

    @magic_arguments()
    @argument("--name", metavar="NAME", help="register the new process under NAME")
    @argument("id", metavar="ID", help="the process.lua entry to start, e.g. app.workers:handler")
    @argument("host", metavar="HOST", nargs="?", default=None, help="the host to start it on (default app:processes)")
    @line_magic
    def spawn(self, line: str) -> str:
        """Start a process: ``%spawn ID [HOST] [JSON]``; returns its PID (shown once, as the result).

        JSON is the argument list of the entry function (a JSON array), or its one argument (any other
        JSON value): ``%spawn app:worker [1, "two"]``, ``%spawn app:worker {"n": 3}``.
        """
        head, raw = split_json(line, 1, 1, valued=("--name",))
        args = parse(self.spawn, head, "%spawn")
        try:
            validate_id(args.id)
        except EntryError as exc:
            raise UsageError(f"%spawn: {exc}") from None
        values: list[Any] = []
        if raw:
            parsed = parse_json(raw, "%spawn", "argument list")
            values = parsed if isinstance(parsed, list) else [parsed]
        n = node()
        try:
            pid = n.spawn(args.id, *values, host=args.host, name=args.name)
        except EntryError as exc:
            raise UsageError(f"%spawn: {exc} (define it with %%lua --entry {args.id})") from None
        except WippyError as exc:
            raise UsageError(f"%spawn: {exc}") from None
        return Pid(pid)

    @magic_arguments()
    @argument("dest", metavar="DEST", help="a PID or a registered name")
    @argument("topic", metavar="TOPIC", help="the message topic")
    @line_magic
    def send(self, line: str) -> None:
        """Send a message: ``%send DEST TOPIC [JSON]`` (no JSON sends nil), e.g. ``%send worker job {"n": 1}``."""
        head, raw = split_json(line, 2)
        args = parse(self.send, head, "%send")
        payload = parse_json(raw, "%send", "payload") if raw else None
        n = node()
        pid = _running_pid(n, args.dest, "send")
        try:
            n.send(pid, args.topic, payload)
        except WippyError as exc:
            raise UsageError(f"%send: {exc}") from None

    @magic_arguments()
    @argument("pid", metavar="PID", help="a PID or a registered name")
    @line_magic
    def kill(self, line: str) -> None:
        """Terminate a process at once (an abnormal exit: linked processes fail too)."""
        args = parse(self.kill, line, "%kill")
        n = node()
        pid = _running_pid(n, args.pid, "kill")
        with n.mailbox() as mb:
            mb.monitor(pid)
            n.terminate(pid)
            try:
                ev = mb.wait_exit(pid, EXIT_WAIT)
            except Timeout:
                print(f"{pid} was told to terminate but has not exited within {EXIT_WAIT:g}s")
                return
        if ev.reason == "noproc":
            print(f"{pid} had already exited")
        else:
            print(f"{pid} {ev.reason or 'exited'}")

    @magic_arguments()
    @argument("pid", metavar="PID", help="a PID or a registered name")
    @argument("reason", metavar="REASON", nargs="*", help="why (given to the process with its CANCEL event)")
    @line_magic
    def cancel(self, line: str) -> None:
        """Ask a process to stop: it gets a CANCEL event and its grace period (else it is terminated)."""
        args = parse(self.cancel, line, "%cancel")
        n = node()
        pid = _running_pid(n, args.pid, "cancel")
        n.cancel(pid, " ".join(args.reason) or None)
        print(f"cancel sent to {pid}")

    @magic_arguments()
    @argument("--tail", type=int, metavar="N", help="only the last N lines")
    @argument("pid", metavar="PID", nargs="?", default=None, help="a PID or a registered name (default: all)")
    @line_magic
    def logs(self, line: str) -> None:
        """What processes printed or logged: one process's lines, or every process's prefixed by its PID."""
        args = parse(self.logs, line, "%logs")
        n = node()
        if args.pid is None:
            lines = n.logs()
        else:
            try:
                pid = n.resolve(args.pid)
                lines = n.logs(pid)
                known = bool(lines) or n.exit_reason(pid) is not None or n.alive(pid)
            except WippyError as exc:
                raise UsageError(f"%logs: {exc}; %ps lists the running processes") from None
            if not known:
                raise UsageError(f"%logs: no process {pid} is known; %ps lists the running processes")
        # (a name is released when its process ends: %logs NAME then fails; its PID still works)
        if args.tail is not None:
            lines = lines[-args.tail:] if args.tail > 0 else []
        if lines:
            print("\n".join(lines))
        else:
            print("(no log lines)")
