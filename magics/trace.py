"""``%%trace`` (a cell's message sequence diagram) and ``%trace on|off`` (the node's traffic, live).

``%%trace`` runs the cell (Python; with ``--lua``, Lua in the shell process as ``%%lua`` does), then
waits up to ``--wait`` seconds for what it set off to go quiet, and shows a
:class:`~wippy.magics.views.TraceView`: sends (labelled by topic), spawns and exits among the processes
involved, in order. A value the cell ends with is shown first; an error of the cell is raised after the
trace is shown (so the diagram of what happened before the error is there).

``%trace on`` shows a live diagram of every send, spawn and exit of the node (the last ``--limit``);
``%trace off`` stops it and leaves its last state in the output.

Threads: the magics run on the cell's thread; the trace's pump drains the event bus meanwhile, so a long
cell does not overflow the subscription's buffer. Wrong use raises a one-line UsageError.
"""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from wippy.runtime import WippyError

from .current import node
from .usage import parse

__all__ = ["TraceMagics"]

#: the live traces started by ``%trace on`` (``%trace off`` closes them)
LIVE: list[Any] = []


@magics_class
class TraceMagics(Magics):
    """Sequence diagrams of the node's messages."""

    @magic_arguments()
    @argument("--lua", action="store_true", help="the cell is Lua, run in the shell process (as %%lua)")
    @argument("--all", action="store_true", help="show all of the node's traffic meanwhile, not only the cell's")
    @argument("--limit", type=int, default=200, metavar="N", help="draw at most N steps (default 200)")
    @argument("--wait", type=float, default=1.0, metavar="S",
              help="after the cell, wait up to S seconds for what it set off to go quiet (default 1)")
    @argument("mode", nargs="?", default=None, metavar="on|off", help="%%trace on|off: the live trace")
    @line_cell_magic
    def trace(self, line: str, cell: str | None = None) -> Any:
        """``%%trace [--lua]``: run the cell and draw what it set off; ``%trace on|off``: live traffic."""
        name = "%%trace" if cell is not None else "%trace"
        args = parse(self.trace, line, name)
        if args.limit < 1:
            raise UsageError(f"{name}: --limit must be at least 1, not {args.limit}")
        if args.wait < 0:
            raise UsageError(f"{name}: --wait must be 0 or more seconds, not {args.wait:g}")
        if cell is None:
            return self._live(args)
        if args.mode is not None:
            raise UsageError(f"%%trace: unexpected {args.mode!r}; %%trace takes options only "
                             "(%trace on|off is the line magic)")
        return self._cell(args, cell)

    @staticmethod
    def _live(args: Any) -> Any:
        from .views import TraceView

        if args.mode == "on":
            try:
                view = TraceView(node(), limit=args.limit)
            except WippyError as exc:
                raise UsageError(f"%trace on: {exc}") from None
            LIVE.append(view)
            return view
        if args.mode == "off":
            if not LIVE:
                print("no live trace is on (%trace on starts one)")
            while LIVE:
                LIVE.pop().close()
            return None
        raise UsageError("%trace: say on or off (%trace on, %trace off), or trace a cell with %%trace")

    def _cell(self, args: Any, cell: str) -> Any:
        from .views import TraceView

        n = node()
        seeds = [n.shell().pid] if args.lua else []
        try:
            view = TraceView(n, seeds=None if args.all else seeds, limit=args.limit, newest=False)
        except WippyError as exc:
            raise UsageError(f"%%trace: {exc}") from None
        try:
            value = self._run_lua(cell) if args.lua else self._run_python(cell)
        except BaseException:
            view.settle(wait=min(args.wait, 0.2))
            view.stop()
            display(view)
            raise
        view.settle(wait=args.wait)
        view.stop()
        if value is not None:
            display(value)
        return view

    @staticmethod
    def _run_lua(cell: str) -> Any:
        from .lua import run_in_shell

        return run_in_shell(cell)

    def _run_python(self, cell: str) -> Any:
        """Run ``cell`` in the user namespace as IPython's ``%%time`` does; the last expression's value."""
        shell = self.shell
        assert shell is not None
        tree = shell.transform_ast(shell.compile.ast_parse(shell.transform_cell(cell)))
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        ns = shell.user_ns
        # the user's own cell, run as a cell is (this is the magic's purpose)
        exec(shell.compile(tree, "<trace>", "exec"), ns)  # noqa: S102
        if last is None:
            return None
        return eval(shell.compile(last, "<trace>", "eval"), ns)  # noqa: S307
