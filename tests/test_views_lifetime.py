"""A view ends when no front end shows it any more (its output was cleared), and only then.

JupyterLab removes the widget's views from a cleared output but keeps its model: the kernel hears only
what the view's :class:`~wippy.magics.views.pump.Presence` (an anywidget in the view's box) reports. These
tests play the front end: they hand the presence the messages its JavaScript sends ("view-added" when
rendered, "view-removed" from the cleanup anywidget calls on removal, "here" in answer to the kernel's
"census"), with a short grace. tests/browser/test_views_in_browser.py does it in a real JupyterLab.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ipywidgets.widgets.widget import _instances
from wippy.magics.views import MailboxView, TreeView, View, pump
from wippy.magics.views.pump import Presence, live_views
from wippy.runtime import Node

GRACE = 0.05  # s: the tests' grace (1.5 s in a notebook)

WORKER = "return { main = function() local inbox = process.inbox() while true do inbox:receive() end end }"


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "the view") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.01)


def front_end(view: View, *events: str) -> None:
    """Deliver the front end's messages to the view's presence, as ipywidgets does (custom messages)."""
    for event in events:
        view.presence._handle_custom_msg({"event": event}, [])


@pytest.fixture
def views() -> Iterator[list[View]]:
    opened: list[View] = []
    yield opened
    for v in opened:
        v.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What presences send to the front ends."""
    out: list[dict[str, Any]] = []
    monkeypatch.setattr(Presence, "send", lambda self, content, buffers=None: out.append(content))
    return out


def test_a_view_whose_last_front_end_view_is_removed_closes_and_frees_everything(
        node: Node, views: list[View], sent: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    node.define("demo:w", "process.lua", source=WORKER)
    pid = node.spawn("demo:w")
    TreeView(node).close()  # warm up (imports)
    widgets_before, subs_before = len(_instances), node.events.subscribers
    updates: list[Any] = []  # a cleared output must not get the static form back
    monkeypatch.setattr(pump, "_ipython_kernel_shell", lambda: object())
    monkeypatch.setattr("IPython.display.update_display", lambda *a, **k: updates.append((a, k)))
    box = MailboxView(node, pid)
    box.presence.grace = GRACE
    views.append(box)
    box._display_ids.append("shown-once")
    subs = [box._sub, box._exits]
    assert box in live_views() and node.events.subscribers == subs_before + 2

    front_end(box, "view-added", "view-removed")  # Clear Outputs
    assert sent == [{"event": "census"}]  # the kernel asks whether another front end still shows it
    wait_until(lambda: box.closed, what="closing after the clear")
    assert not box.pump.running
    assert all(s is not None and s.closed for s in subs) and node.events.subscribers == subs_before
    assert len(_instances) == widgets_before and box.presence.comm is None
    assert box not in live_views()
    assert updates == []


def test_a_view_shown_again_within_the_grace_stays_open(node: Node, views: list[View],
                                                        sent: list[dict[str, Any]]) -> None:
    view = TreeView(node)
    view.presence.grace = GRACE
    views.append(view)
    front_end(view, "view-added", "view-removed", "view-added")  # a re-render
    time.sleep(GRACE * 4)
    assert not view.closed and view.pump.running and view in live_views()
    front_end(view, "view-removed")  # and now it is gone for good
    wait_until(lambda: view.closed, what="closing after the last removal")


def test_a_view_another_front_end_still_shows_stays_open(node: Node, views: list[View],
                                                         sent: list[dict[str, Any]]) -> None:
    view = TreeView(node)
    view.presence.grace = GRACE
    views.append(view)
    front_end(view, "view-added", "view-added", "view-removed", "here")  # two pages; one clears, one answers
    time.sleep(GRACE * 4)
    assert not view.closed
    front_end(view, "view-removed")  # the other page clears too: nobody answers the census
    assert sent == [{"event": "census"}] * 2
    wait_until(lambda: view.closed, what="closing once no front end answers")


def test_a_page_that_went_away_without_a_word_does_not_keep_a_cleared_view(node: Node, views: list[View],
                                                                           sent: list[dict[str, Any]]) -> None:
    # the notebook's tab was closed (its removals never reached the kernel), then opened again and cleared
    view = TreeView(node)
    view.presence.grace = GRACE
    views.append(view)
    front_end(view, "view-added", "view-added", "view-removed")
    wait_until(lambda: view.closed, what="closing although a stale view was counted")


def test_a_view_no_front_end_rendered_never_closes(node: Node, views: list[View], sent: list[dict[str, Any]]) -> None:
    view = TreeView(node)  # nbval, a plain kernel, a script: no front end renders widgets
    view.presence.grace = GRACE
    views.append(view)
    front_end(view, "here", "something-else")  # stray messages change nothing
    time.sleep(GRACE * 4)
    assert not view.closed and view.pump.running and sent == []
    assert view.presence.added == 0


def test_a_view_closed_meanwhile_is_not_closed_twice(node: Node, views: list[View],
                                                     sent: list[dict[str, Any]]) -> None:
    view = TreeView(node)
    view.presence.grace = GRACE
    front_end(view, "view-added", "view-removed")
    view.close()  # before the grace ran out
    time.sleep(GRACE * 3)  # the timer finds the view closed: nothing happens, nothing raises
    assert view.closed


def test_live_views_lists_the_open_views(node: Node, views: list[View]) -> None:
    a, b = TreeView(node), TreeView(node)
    views += [a, b]
    assert {a, b} <= set(live_views())
    a.close()
    assert a not in live_views() and b in live_views()
