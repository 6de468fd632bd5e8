"""Supervision magics: ``%tree`` (the supervision tree).

``%tree --text [ROOT]`` prints the tree as text; bare ``%tree [ROOT]`` is the live view
(:class:`~wippy.magics.views.TreeView`: the SVG picture, redrawn as the tree changes, with the picture and
the text as its static forms, so a saved notebook, GitHub and nbval read it); ``%tree --no-pids`` is a
snapshot without PIDs (picture and text), which reads the same every run.

Threads: the magic runs on the cell's thread and reads a snapshot (``node.supervision.tree``), which
any thread may take. Wrong input raises :class:`~IPython.core.error.UsageError` (one line, no traceback).
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from wippy.runtime import WippyError
from wippy.runtime.supervisor_tree import TreeNode, render_text

from .current import node
from .format import strip_pids
from .tree_picture import FLASH_STYLE, STATUS_COLOURS, tree_links, tree_svg
from .usage import parse

__all__ = ["FLASH_STYLE", "STATUS_COLOURS", "SupervisionMagics", "TreeText", "tree_links", "tree_svg"]

class TreeText:
    """A tree snapshot shown as text (text/plain) and as a picture (text/html, an inline SVG)."""

    def __init__(self, tree: TreeNode, pids: bool = True, picture: bool = True) -> None:
        self.tree = tree if pids else strip_pids(tree)
        self.picture = picture

    def __repr__(self) -> str:
        return render_text(self.tree)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str | None:
        if not self.picture:
            return None
        return tree_svg(self.tree)


@magics_class
class SupervisionMagics(Magics):
    """The supervision tree from cells."""

    @magic_arguments()
    @argument("--text", action="store_true", help="plain text only (no picture)")
    @argument("--no-pids", action="store_true", help="leave PIDs out (output that reads the same every run)")
    @argument("root", metavar="ROOT", nargs="?", default=None,
              help="a supervisor, service or child: its id or PID (default: the whole tree)")
    @line_magic
    def tree(self, line: str) -> Any:
        """The supervision tree: every supervisor, service and worker with status, restarts, last exit.

        Bare ``%tree [ROOT]`` is the live view (a picture that follows crashes and restarts);
        ``--text`` and ``--no-pids`` show a snapshot (text, or the picture without PIDs).
        """
        args = parse(self.tree, line, "%tree")
        try:
            if not args.text and not args.no_pids:
                from .views import TreeView

                return TreeView(node(), args.root)
            n = node()
            # in a cluster, the snapshot (like the live view) shows every node's tree
            snap = n.cluster_tree() if n.cluster is not None and args.root is None else n.supervision.tree(args.root)
        except WippyError as exc:
            raise UsageError(f"%tree: {exc}") from None
        return TreeText(snap, pids=not args.no_pids, picture=not args.text)
