"""Registry versions as diffs: :func:`registry_diff` (a :class:`RegistryDiff` of the entries' YAML) and
:data:`OPS` (the one-character marks of a change), shared by ``%registry`` (:mod:`wippy.magics.registry`)
and the live :class:`~wippy.magics.views.RegistryHistoryView`. No IPython, no widgets.
"""

from __future__ import annotations

import difflib
import html
from typing import Any

from wippy.runtime import Registry
from wippy.runtime.entries import Entry
from wippy.runtime.tree import dump_yaml

__all__ = ["OPS", "RegistryDiff", "entry_yaml", "registry_diff"]

GREEN, RED, CYAN, BOLD, RESET = "\x1b[32m", "\x1b[31m", "\x1b[36m", "\x1b[1m", "\x1b[0m"
OPS = {"create": "+", "update": "~", "delete": "-"}


class RegistryDiff:
    """A unified diff of the entries' YAML between two versions: ANSI colours in text, spans in HTML."""

    def __init__(self, v1: int, v2: int, lines: list[str]) -> None:
        self.v1, self.v2, self.lines = v1, v2, lines

    @property
    def text(self) -> str:
        """The diff without colours."""
        return "\n".join(self.lines) if self.lines else f"no changes between version {self.v1} and {self.v2}"

    @staticmethod
    def _colour(line: str) -> str:
        if line.startswith(("---", "+++")):
            return f"{BOLD}{line}{RESET}"
        if line.startswith("@@"):
            return f"{CYAN}{line}{RESET}"
        if line.startswith("+"):
            return f"{GREEN}{line}{RESET}"
        if line.startswith("-"):
            return f"{RED}{line}{RESET}"
        return line

    def __repr__(self) -> str:
        if not self.lines:
            return self.text
        return "\n".join(self._colour(line) for line in self.lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        colours = {"+": "#1a7f37", "-": "#cf222e", "@": "#0969da"}
        out = []
        for line in self.lines or [self.text]:
            style = "font-weight:bold" if line.startswith(("---", "+++")) else (
                f"color:{colours[line[0]]}" if line[:1] in colours else "")
            text = html.escape(line)
            out.append(f'<span style="{style}">{text}</span>' if style else text)
        return '<pre class="wippy-registry-diff">' + "\n".join(out) + "</pre>"


def entry_yaml(entry: Entry | None) -> str:
    """An entry as YAML (id, kind, meta, data; multi-line strings such as Lua sources as ``|`` blocks)."""
    if entry is None:
        return ""
    return dump_yaml({"id": entry.id, "kind": entry.kind, "meta": dict(entry.meta), "data": dict(entry.data)})


def registry_diff(reg: Registry, v1: int, v2: int) -> RegistryDiff:
    """The unified diff of the entries' YAML between versions ``v1`` and ``v2`` (``%registry diff``)."""
    lines: list[str] = []
    for c in reg.diff(v1, v2):
        lines += difflib.unified_diff(
            entry_yaml(c.before).splitlines(), entry_yaml(c.after).splitlines(),
            fromfile=f"v{v1} {c.id}" if c.before is not None else f"v{v1} (no {c.id})",
            tofile=f"v{v2} {c.id}" if c.after is not None else f"v{v2} (no {c.id})",
            lineterm="",
        )
    return RegistryDiff(v1, v2, lines)
