"""StepperView: teaching mode's control for a class (``%runtime step --widget``).

Buttons: **step** (one event), **step 10**, **pause** and **resume**; below them the event the next
step takes and the last lines stepped, newest last. Clicking steps through ``node.teach`` (so every
other live view of the node follows, and the trace view marks the step). The pump polls
``node.teach.status()`` so the "next" line follows what other cells do meanwhile.

Threads: button callbacks run on the kernel's shell thread (or a subshell thread); they step and
mark the view dirty. The pump's thread draws.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node, WippyError

from .pump import View, refresh_views

__all__ = ["StepperView"]

SHOWN = 12   # stepped lines kept on screen


class StepperView(View):
    """Step, step 10, pause, resume; the next event and the last lines stepped."""

    title = "stepper"

    def __init__(self, node: Node, host: str | None = None, **kw: Any) -> None:
        self.host = host
        self.lines: list[str] = []
        self.error = ""
        super().__init__(node, **kw)

    def _build(self) -> widgets.Box:
        self.b_step = widgets.Button(description="step", tooltip="make the next event happen",
                                     layout=widgets.Layout(width="90px"))
        self.b_ten = widgets.Button(description="step 10", tooltip="the next 10 events",
                                    layout=widgets.Layout(width="90px"))
        self.b_pause = widgets.Button(description="pause", layout=widgets.Layout(width="90px"))
        self.b_resume = widgets.Button(description="resume", layout=widgets.Layout(width="90px"))
        self.b_step.on_click(lambda _b: self.step(1))
        self.b_ten.on_click(lambda _b: self.step(10))
        self.b_pause.on_click(lambda _b: self._do(lambda: self.node.teach.pause(self.host)))
        self.b_resume.on_click(lambda _b: self._do(lambda: self.node.teach.resume(self.host)))
        self.next = widgets.HTML(value="")
        self.log = widgets.HTML(value="")
        buttons = widgets.HBox([self.b_step, self.b_ten, self.b_pause, self.b_resume])
        box = widgets.VBox([buttons, self.next, self.log, self.status])
        box.add_class("wippy-stepper")
        return box

    # ------------------------------------------------------------------ actions (shell thread)
    def _do(self, fn: Any) -> None:
        try:
            fn()
            self.error = ""
        except WippyError as exc:
            self.error = str(exc)
        refresh_views(self.node)
        self.mark_dirty()

    def step(self, n: int = 1) -> list[str]:
        """Step ``n`` events (what the buttons do); the lines, also shown in the view."""
        got: list[str] = []

        def run() -> None:
            got.extend(self.node.teach.step(n, self.host))
            self.lines = (self.lines + got)[-SHOWN:]

        self._do(run)
        return got

    # ------------------------------------------------------------------ the pump's thread
    def _state(self) -> tuple[bool, str | None, int]:
        try:
            states = self.node.teach.status()
        except WippyError:
            return False, None, 0
        mine = [s for s in states if self.host is None or s.host == self.host]
        paused = any(s.paused for s in mine)
        nxt = next((s.next for s in mine if s.paused and s.next), None)
        return paused, nxt, sum(s.steps for s in mine)

    def _collect(self) -> None:
        self._paused, self._next, self._steps = self._state()

    def _next_text(self) -> str:
        if not self._paused:
            return "running (pause to step)"
        return f"next: {self._next}" if self._next else "next: nothing (no event waits and no timer is set)"

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        err = f'<div style="color:#c62828">{html.escape(self.error)}</div>' if self.error else ""
        return {
            self.next: {"value": f'<code class="wippy-stepper-next">{html.escape(self._next_text())}</code>{err}'},
            self.log: {"value": self._log_html()},
            self.b_step: {"disabled": not self._paused},
            self.b_ten: {"disabled": not self._paused},
            self.b_pause: {"disabled": self._paused},
            self.b_resume: {"disabled": not self._paused},
        }

    def _log_html(self) -> str:
        if not self.lines:
            return ""
        rows = "<br>".join(html.escape(line) for line in self.lines)
        return (f'<div class="wippy-stepper-log" style="font-family:monospace;font-size:12px;line-height:1.4">'
                f"{rows}</div>")

    def static_html(self) -> str:
        return (f'<div class="wippy-stepper"><code>{html.escape(self._next_text())}</code>'
                f"{self._log_html()}</div>")

    def text(self) -> str:
        return "\n".join([self._next_text(), *self.lines])
