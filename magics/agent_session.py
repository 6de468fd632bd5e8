"""An agent session drawn: turns, the system message as composed, tool calls with arguments and results,
tokens and latency per step, the registry diffs the agent made, where it is paused, its fork tree.

:class:`SessionPicture` reads a session once from ``node.agents`` and renders text/plain and text/html
(``%agent show``, ``%agent replay``, the static form of the live session view). Shared by the magics
and magics/views/session.py, so no view imports a magic module. Any thread.
"""

from __future__ import annotations

import html
import json
from typing import Any

from wippy.runtime import Node

from .registry_diff import registry_diff

__all__ = ["SessionPicture", "short"]

KIND_COLOURS = {"user": "#1565c0", "model": "#6a1b9a", "tool": "#2e7d32", "registry": "#ef6c00", "answer": "#37474f"}


def short(value: Any, width: int = 80) -> str:
    """A value as one line of JSON (strings bare), cut with ... past ``width``."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


class SessionPicture:
    """Session ``session_id`` of ``node`` as it is now. ``steps`` overrides the stored rows (a replay's)."""

    def __init__(self, node: Node, session_id: str, *, title: str | None = None,
                 steps: list[dict[str, Any]] | None = None, show_timing: bool = True) -> None:
        agents = node.agents
        self.record = agents.sessions.get(session_id)
        self.title = title
        self.show_timing = show_timing
        if steps is None:
            steps = [{"kind": s.kind, "step": s.step, **s.data} for s in agents.sessions.steps(session_id)]
        self.rows = steps
        self.children = [(c.id, c.fork_step) for c in agents.sessions.children(session_id)]
        self.paused = [p for p in agents.paused() if p.session == session_id]
        self.diffs: dict[int, str] = {}
        for r in self.rows:
            if r["kind"] == "registry" and isinstance(r.get("version"), int):
                v = r["version"]
                try:
                    self.diffs[v] = registry_diff(node.registry, v - 1, v).text
                except Exception as exc:   # a reset history: say so rather than fail the picture
                    self.diffs[v] = f"(diff not available: {exc})"

    # ------------------------------------------------------------------ what it shows
    @property
    def system(self) -> str | None:
        for r in self.rows:
            if r["kind"] == "model":
                req = r.get("request") or {}
                if req.get("system") is not None:
                    return str(req["system"])
        return None

    def header(self) -> str:
        rec = self.record
        tokens = sum(int(((r.get("response") or {}).get("tokens") or {}).get("total_tokens", 0))
                     for r in self.rows if r["kind"] == "model")
        parts = [f"session {rec.id}", f"agent {rec.agent}", rec.status,
                 f"{max((r['step'] for r in self.rows), default=0)} steps", f"{tokens} tokens"]
        if rec.actor:
            parts.append(f"actor {rec.actor}")
        if rec.parent:
            parts.append(f"fork of {rec.parent} at step {rec.fork_step}")
        return (self.title + ": " if self.title else "") + " · ".join(parts)

    def lines(self) -> list[tuple[str, int, str]]:
        """(kind, step, one line) per row, in order."""
        out: list[tuple[str, int, str]] = []
        for r in self.rows:
            k, n = r["kind"], int(r["step"])
            if k == "user":
                out.append((k, n, f"user: {short(r.get('text'), 100)}" + (" (edited)" if r.get("edited") else "")))
            elif k == "model":
                resp = r.get("response") or {}
                tok = (resp.get("tokens") or {}).get("total_tokens", 0)
                timing = f" · {r.get('latency_ms', 0):.0f} ms" if self.show_timing else ""
                calls = resp.get("tool_calls") or []
                what = (", ".join(f"{c['name']}({short(c.get('arguments'), 60)})" for c in calls) if calls
                        else f"says {short(resp.get('result'), 80)}")
                out.append((k, n, f"model [{tok} tokens{timing}]: {what}" + (" (edited)" if r.get("edited") else "")))
            elif k == "tool":
                timing = f" · {r.get('ms', 0):.1f} ms" if self.show_timing and "ms" in r else ""
                if r.get("error") is not None:
                    first = str(r["error"]).splitlines()[0]
                    out.append((k, n, f"tool {r.get('name')}({short(r.get('arguments'), 50)}) failed{timing}: "
                                      f"{short(first, 100)}"))
                else:
                    edited = " (edited)" if r.get("edited") else ""
                    out.append((k, n, f"tool {r.get('name')}({short(r.get('arguments'), 50)}) = "
                                      f"{short(r.get('result'), 60)}{timing}{edited}"))
            elif k == "registry":
                out.append((k, n, f"registry v{r.get('version')}: {', '.join(r.get('entries') or [])} "
                                  f"by {r.get('author')} ({r.get('op')})"))
            elif k == "answer":
                if r.get("stopped"):
                    out.append((k, n, f"stopped: {r.get('note')}"))
                else:
                    out.append((k, n, f"answer: {short(r.get('text'), 100)}"))
        return out

    # ------------------------------------------------------------------ renderings
    def text(self) -> str:
        out = [self.header()]
        for _, n, line in self.lines():
            out.append(f"  {n:>3}  {line}")
        for p in self.paused:
            out.append(f"  paused before {p.before} (step {p.step}): {short(p.about, 100)}")
        if self.children:
            out.append("  forks: " + ", ".join(f"{c} (at step {s})" for c, s in self.children))
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _repr_html_(self) -> str:
        e = html.escape
        parts = [f'<div class="wippy-agent-session" data-session="{e(self.record.id)}" '
                 f'data-status="{e(self.record.status)}">',
                 f"<p><b>{e(self.header())}</b></p>"]
        if self.system is not None:
            parts.append(f"<details><summary>system message</summary><pre>{e(self.system)}</pre></details>")
        parts.append('<table class="wippy-agent-steps" style="border-collapse:collapse;font-family:monospace">')
        for kind, n, line in self.lines():
            colour = KIND_COLOURS.get(kind, "#555")
            cell = "text-align:left;vertical-align:top;padding:1px 8px 1px 0"
            parts.append(f'<tr data-kind="{kind}" data-step="{n}"><td style="color:#888;{cell}">{n}</td>'
                         f'<td style="color:{colour};{cell}">{kind}</td><td style="{cell}">{e(line)}</td></tr>')
        parts.append("</table>")
        for v, diff in self.diffs.items():
            parts.append(f"<details><summary>registry diff v{v - 1} → v{v}</summary><pre>{e(diff)}</pre></details>")
        for p in self.paused:
            parts.append(f'<p class="wippy-agent-paused" style="color:#ef6c00">⏸ paused before {e(p.before)} '
                         f"(step {p.step}): <code>{e(short(p.about, 200))}</code> · %agent continue</p>")
        if self.children or self.record.parent:
            parts.append(self._tree_svg())
        parts.append("</div>")
        return "".join(parts)

    def _tree_svg(self) -> str:
        """The fork tree around this session: its parent, itself, its forks (a small SVG)."""
        e = html.escape
        nodes: list[tuple[str, str]] = []
        if self.record.parent:
            nodes.append((self.record.parent, "parent"))
        nodes.append((self.record.id, "this"))
        nodes.extend((c, f"fork at step {s}") for c, s in self.children)
        h = 30 * len(nodes) + 10
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="wippy-fork-tree" width="360" height="{h}" '
                 f'font-family="monospace" font-size="11">']
        for i, (sid, label) in enumerate(nodes):
            x = 10 if label in ("parent",) or (label == "this" and not self.record.parent) else 40
            if label.startswith("fork"):
                x = 70 if self.record.parent else 40
            y = 20 + 30 * i
            fill = "#6a1b9a" if label == "this" else "#90a4ae"
            parts.append(f'<circle cx="{x}" cy="{y - 4}" r="5" fill="{fill}"/>'
                         f'<text x="{x + 10}" y="{y}">{e(sid)} ({e(label)})</text>')
        parts.append("</svg>")
        return "".join(parts)
