"""``%%lua`` and ``%lua``: Lua cells run in the notebook's shell process, or define an entry.

Threads: the magics run on the thread that runs the cell (the kernel's main thread, or a subshell thread).
:meth:`wippy.runtime.Shell.run` calls the output callback on that same thread, so the shell's ``print``
lands in the cell that caused it, as it happens. An interrupt (SIGINT on the main thread) is handled by
``Shell.run`` itself: it stops the cell and re-raises ``KeyboardInterrupt``.

Errors: a Lua error is raised as :class:`wippy.runtime.LuaError`, so the execute reply's ``ename`` is
``LuaError``; :func:`install_error_display` makes IPython show its Lua message and traceback instead of a
Python traceback. Wrong use of the magic (options, IDs) is a :class:`~IPython.core.error.UsageError`.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from wippy.runtime import EntryError, LuaError, SecurityError, TeachError, Timeout
from wippy.runtime.entries import validate_id
from wippy.runtime.tree import compile_check

from .current import node
from .usage import parse

__all__ = ["ENTRY_KINDS", "LuaMagics", "LuaValue", "install_error_display"]

ENTRY_KINDS = ("process.lua", "function.lua", "library.lua", "workflow.lua")

# Set on exceptions that a Lua cell raised: their message is the whole story (the Lua error and its
# traceback), so the display shows it without the Python frames of the magic.
_FROM_CELL = "_wippy_from_cell"


class LuaValue:
    """What a Lua cell returned: shown exactly as Lua prints it; ``value`` is plain Python data."""

    def __init__(self, text: str, value: Any) -> None:
        self.text = text
        self.value = value

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)


def _write_line(line: str) -> None:
    # the cell's thread; ipykernel's OutStream sends the buffer on its own schedule (and before the reply)
    sys.stdout.write(line + "\n")


def run_in_shell(code: str, timeout: float | None = None) -> LuaValue | None:
    """Run Lua ``code`` in the node's shell process; the cell's output goes to stdout as it comes.

    Returns a :class:`LuaValue`, or None when the chunk returned nothing (then there is no result).
    Raises LuaError, Timeout (the cell was stopped) or KeyboardInterrupt, marked as coming from a cell.
    """
    n = node()
    if n.shell().host.paused:
        raise UsageError(f"the host {n.shell().host.name} is paused (%runtime pause): a cell's Lua runs there and "
                         "would wait for ever; %runtime step N or %runtime resume first")
    shell = n.shell()
    seeded = n.teach.current_seed is not None
    if seeded:   # teaching mode with a seed: the cell starts from a settled world, the same every run
        n.teach.settle()
    try:
        res = shell.run(code, timeout=timeout, on_output=_write_line)
        if seeded:   # and ends once what it set off has settled (its output then belongs to it)
            n.teach.settle()
    except (LuaError, Timeout, KeyboardInterrupt) as exc:
        setattr(exc, _FROM_CELL, True)
        raise
    except TeachError as exc:   # its host was paused while it waited: one line, no traceback
        raise UsageError(str(exc)) from None
    finally:
        sys.stdout.flush()
    return LuaValue(res.text, res.value) if res.has_value else None


@magics_class
class LuaMagics(Magics):
    """``%%lua`` cells and ``%lua`` lines."""

    @magic_arguments()
    @argument("--timeout", type=float, metavar="SECONDS",
              help="stop the cell after SECONDS (no timeout by default)")
    @argument("--entry", metavar="ID",
              help="define (or replace) the entry ID from the cell instead of running it, e.g. app.workers:handler")
    @argument("--kind", choices=ENTRY_KINDS, default=None, help="the entry's kind (with --entry; default process.lua)")
    @argument("--method", metavar="NAME", help="the entry function (with --entry; default main)")
    @line_cell_magic
    def lua(self, line: str, cell: str | None = None) -> LuaValue | None:
        """Run Lua in the notebook's shell process, whose globals persist across cells.

        ``%lua EXPR`` shows the value of one Lua expression (a statement, ``%lua x = 1``, just runs).
        ``%%lua`` runs the cell as a Lua chunk: its ``print`` goes to the cell's output, a returned value
        is the cell's result (as Lua prints it), an error ends only this cell. Line numbers in errors
        count the cell's Lua lines (the ``%%lua`` line is not one of them). With ``--entry ID`` the cell
        is not run: it defines or replaces that entry.
        """
        if cell is None:
            if not line.strip():
                raise UsageError("%lua needs a Lua expression, e.g. %lua 40 + 2 (use %%lua for a whole cell)")
            code = "return " + line
            if compile_check(code, "=cell") is not None and compile_check(line, "=cell") is None:
                code = line  # a statement (%lua x = 1) rather than an expression
            return run_in_shell(code)
        args = parse(self.lua, line, "%%lua")
        if args.entry is None:
            for option in ("kind", "method"):
                if getattr(args, option) is not None:
                    raise UsageError(f"%%lua: --{option} applies only with --entry ID (defining an entry)")
            if args.timeout is not None and args.timeout <= 0:
                raise UsageError(f"%%lua: --timeout must be a positive number of seconds, not {args.timeout:g}")
            return run_in_shell(cell, timeout=args.timeout)
        if args.timeout is not None:
            raise UsageError("%%lua: --timeout applies to cells that run, not to --entry (which only defines)")
        self._define(args.entry, args.kind or "process.lua", args.method, cell)
        return None

    @staticmethod
    def _define(entry_id: str, kind: str, method: str | None, source: str) -> None:
        try:
            validate_id(entry_id)
        except EntryError as exc:
            raise UsageError(f"%%lua --entry: {exc}") from None
        if not source.strip():
            raise UsageError(f"%%lua --entry {entry_id}: the cell is empty; write the entry's Lua source in it")
        err = compile_check(source, "=" + entry_id)
        if err is not None:
            refused = LuaError(f"{err}\n(entry {entry_id} was not defined; the previous version, if any, stays)")
            setattr(refused, _FROM_CELL, True)
            raise refused
        n = node()
        previous = n.entries.get(entry_id)
        # entries defined from cells get the modules the shell has (registry, funcs, security): what
        # runs in a cell runs the same as an entry; what it may do is its scope's business
        data: dict[str, Any] = {"modules": ["registry", "funcs", "security"]}
        if method:
            data["method"] = method
        try:
            n.define(entry_id, kind, source=source, **data)
        except (EntryError, SecurityError) as exc:
            raise UsageError(f"%%lua --entry: {exc} (nothing changed)") from None
        verb = "defined" if previous is None else "replaced"
        print(f"{verb} {entry_id} ({kind})")


def _show_error(shell: Any, etype: type[BaseException], value: BaseException, tb: Any,
                tb_offset: int | None = None) -> list[str] | None:
    """IPython's custom exception handler (run on the cell's thread): Lua errors without Python frames.

    Errors a Lua cell raised are shown as their message (the Lua error and its Lua traceback); the same
    exception classes raised by Python code in a cell get IPython's usual traceback.
    """
    if not getattr(value, _FROM_CELL, False):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    text = str(value)
    if isinstance(value, KeyboardInterrupt):
        text = "the cell was interrupted"
    lines = text.split("\n")
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {lines[0]}", *lines[1:]]
    # _showtraceback is where ipykernel builds the error message (ename, evalue, traceback)
    shell._showtraceback(etype, value, stb)
    return stb


def install_error_display(ipython: Any) -> None:
    """Show Lua errors, cell timeouts and interrupts of Lua cells as Lua text in the cell."""
    ipython.set_custom_exc((LuaError, Timeout, KeyboardInterrupt), _show_error)
