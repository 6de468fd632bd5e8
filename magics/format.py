"""Shared formatting of the magics and their live views: sizes, durations, PID-free tree snapshots.

Plain functions of plain values (no IPython, no widgets): :mod:`wippy.magics.process`,
:mod:`wippy.magics.supervision` and the views in :mod:`wippy.magics.views` all import them from here, so
the views never import a magic module (which imports the views).
"""

from __future__ import annotations

from dataclasses import replace

from wippy.runtime.supervisor_tree import TreeNode

__all__ = ["duration", "size", "strip_pids"]


def size(n: int | None) -> str:
    """Bytes as ``512 B``, ``1.5 KB``, ``2.0 MB``; ``-`` when unknown."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def duration(seconds: float) -> str:
    """Seconds as ``4.2s``, ``3m07s``, ``2h05m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def strip_pids(n: TreeNode) -> TreeNode:
    """``n`` and its children without PIDs (a snapshot that reads the same every run)."""
    return replace(n, pid=None, children=tuple(strip_pids(c) for c in n.children))
