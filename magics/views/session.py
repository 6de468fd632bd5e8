"""SessionView: an agent session as it runs (``%%agent ID``, ``%agent show SESSION --live``).

Source: ``node.agents.subscribe`` (a callback per journaled step, and when a run pauses at a
breakpoint), which only pokes the pump; the pump's thread reads the session from the store and draws
:class:`~..agent_session.SessionPicture` (turns, the system message, tool calls with arguments and
results, tokens and latency, registry diffs, where it is paused and what it is about to send, the
fork tree). The static form is the same picture, so a saved notebook shows the last state.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from wippy.runtime import Node

from ..agent_session import SessionPicture
from .pump import INTERVAL, View

__all__ = ["SessionView"]


class SessionView(View):
    """Session ``session_id`` of ``node``, redrawn after each of its steps."""

    title = "agent-session"

    def __init__(self, node: Node, session_id: str, *, interval: float = INTERVAL, live: bool = True,
                 show_timing: bool = True) -> None:
        self.session_id = session_id
        self.show_timing = show_timing
        self.picture: SessionPicture | None = None
        super().__init__(node, interval=interval, live=live)

    def _build(self) -> widgets.Box:
        def news(session: str, _row: dict[str, Any]) -> None:
            if session == self.session_id:
                self.poke()

        self.on_close(self.node.agents.subscribe(news))
        self.body = widgets.HTML(value="")
        return widgets.VBox([self.body, self.status])

    def _collect(self) -> None:
        self.picture = SessionPicture(self.node, self.session_id, show_timing=self.show_timing)

    def _frame(self) -> dict[widgets.Widget, dict[str, Any]]:
        return {self.body: {"value": self.static_html()}}

    def static_html(self) -> str:
        return self.picture._repr_html_() if self.picture is not None else ""

    def text(self) -> str:
        return self.picture.text() if self.picture is not None else ""
