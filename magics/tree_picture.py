"""The supervision tree as a picture: :func:`tree_svg` (an inline SVG) and :func:`tree_links` (the links
drawn between processes), shared by ``%tree`` (:mod:`wippy.magics.supervision`) and the live
:class:`~wippy.magics.views.TreeView`. No IPython, no widgets.
"""

from __future__ import annotations

import html
from collections.abc import Collection
from typing import Any

from wippy.runtime.supervisor_tree import TreeNode

__all__ = ["FLASH_STYLE", "STATUS_COLOURS", "tree_links", "tree_svg"]

#: fill colours of the statuses (the live view uses the same)
STATUS_COLOURS = {
    "running": "#2e7d32",
    "starting": "#1565c0",
    "restarting": "#ef6c00",
    "stopping": "#6d4c41",
    "stopped": "#9e9e9e",
    "failed": "#c62828",
}


#: how a crash flashes in the live view (TreeView): nodes restarted or failed since the last frame
FLASH_STYLE = ("<style>.wippy-flash rect{animation:wippy-flash .5s ease-in-out 4}"
               "@keyframes wippy-flash{50%{fill-opacity:.85;stroke-width:5}}</style>")


def tree_svg(tree: TreeNode, flash: Collection[str] = (), links: Collection[tuple[str, str]] = ()) -> str:
    """Draw a snapshot as an SVG tree (top-down): one box a node, coloured by status, restart counts and
    the last exit reason beside it (and in the hover title).

    ``flash`` names nodes (by id) that just crashed or restarted: they get the class ``wippy-flash``
    (a short CSS animation) and their last exit written under the box. ``links`` are pairs of PIDs
    linked to each other (:func:`tree_links`): drawn dotted between the boxes of the two processes.
    """
    box_w, box_h, gap_x, gap_y = 150, 46, 18, 40
    # leaves get consecutive columns; a parent sits above the middle of its children
    pos: dict[int, tuple[float, int]] = {}
    column = [0]

    def place(n: TreeNode, depth: int) -> float:
        if not n.children:
            x = column[0]
            column[0] += 1
        else:
            xs = [place(c, depth + 1) for c in n.children]
            x = (xs[0] + xs[-1]) / 2
        pos[id(n)] = (x, depth)
        return x

    place(tree, 0)
    depth = max(d for _, d in pos.values())
    width = max(1, column[0]) * (box_w + gap_x) + gap_x
    height = (depth + 1) * (box_h + gap_y) + gap_y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-tree" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">']
    if flash:
        parts.append(FLASH_STYLE)

    def xy(n: TreeNode) -> tuple[float, float]:
        x, d = pos[id(n)]
        return gap_x + x * (box_w + gap_x), gap_y + d * (box_h + gap_y)

    def edges(n: TreeNode) -> None:
        x, y = xy(n)
        for c in n.children:
            cx, cy = xy(c)
            parts.append(f'<line x1="{x + box_w / 2}" y1="{y + box_h}" x2="{cx + box_w / 2}" y2="{cy}" '
                         'stroke="#888" stroke-width="1.2"/>')
            edges(c)

    def boxes(n: TreeNode) -> None:
        x, y = xy(n)
        colour = STATUS_COLOURS.get(n.status, "#607d8b")
        title = f"{n.id} ({n.kind}) {n.status}"
        if n.pid:
            title += f" {n.pid}"
        if n.last_exit:
            title += f"\nlast exit: {n.last_exit}"
        rx = 10 if n.kind in ("supervisor", "root") else 3
        flashing = n.id in flash
        css = f"wippy-node wippy-{html.escape(n.status)}" + (" wippy-flash" if flashing else "")
        parts.append(f'<g class="{css}" data-id="{html.escape(n.id)}">'
                     f"<title>{html.escape(title)}</title>"
                     f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="{rx}" fill="{colour}" '
                     'fill-opacity="0.15" stroke="' + colour + '" stroke-width="2"/>')
        name = n.name if n.kind != "root" else n.id   # "node"; in a cluster "cluster" and "node NAME"
        parts.append(f'<text x="{x + 6}" y="{y + 15}" font-weight="bold">{html.escape(name[:22])}</text>')
        sub = n.kind + (f" · {n.strategy}" if n.strategy else "") + (f" · {n.restart}" if n.restart else "")
        parts.append(f'<text x="{x + 6}" y="{y + 28}" fill="#444">{html.escape(sub[:26])}</text>')
        line3 = n.status + (f" · restarts {n.restarts}" if n.restarts else "")
        parts.append(f'<text x="{x + 6}" y="{y + 40}" fill="{colour}">{html.escape(line3)}</text>')
        if n.last_exit and (flashing or n.status in ("failed", "restarting")):
            parts.append(f'<text x="{x}" y="{y + box_h + 12}" fill="#c62828" font-size="9">'
                         f"{html.escape(n.last_exit[:34])}</text>")
        parts.append("</g>")
        for c in n.children:
            boxes(c)

    edges(tree)
    by_pid = {n.pid: n for n in tree.walk() if n.pid}
    for a, b in links:
        na, nb = by_pid.get(a), by_pid.get(b)
        if na is None or nb is None or na is nb:
            continue
        (ax, ay), (bx, by) = xy(na), xy(nb)
        parts.append(f'<path class="wippy-link" d="M {ax + box_w / 2} {ay + box_h} C {ax + box_w / 2} '
                     f'{ay + box_h + gap_y * 0.8}, {bx + box_w / 2} {by + box_h + gap_y * 0.8}, '
                     f'{bx + box_w / 2} {by + box_h}" fill="none" stroke="#7b1fa2" stroke-width="1.2" '
                     f'stroke-dasharray="3 3"><title>linked: {html.escape(a)} - {html.escape(b)}</title></path>')
    boxes(tree)
    parts.append("</svg>")
    return "".join(parts)


def tree_links(node: Any, tree: TreeNode) -> list[tuple[str, str]]:
    """The links between processes of ``tree`` (each pair once), from the node's process statistics.
    Any thread but a host's."""
    pids = {n.pid for n in tree.walk() if n.pid and not n.pid.startswith("{python|")}
    if len(pids) < 2:
        return []
    pairs: set[tuple[str, str]] = set()
    for p in node.statistics(memory=False).processes:
        if p.pid in pids:
            for other in p.links:
                if other in pids:
                    pairs.add((min(p.pid, other), max(p.pid, other)))
    return sorted(pairs)
