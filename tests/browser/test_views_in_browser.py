"""The live views in a real JupyterLab: the supervision tree and a mailbox redraw after a crash, and the
sequence diagram of a traced cell is drawn. Screenshots go to build/screenshots/
(``make screenshots``: docs/screenshots/, for the README).

03-supervision shows `%tree demo:one` and `%mailbox one-b` (live widgets), then sends `hello` three
times to `one-b` and crashes it. After Run All, the widgets must show what happened after they were
displayed: the restart of `b` in the tree, the messages and the restart in the mailbox. Their saved
outputs are cleared before the run, so nothing here can come from the notebook file.
"""

from __future__ import annotations

import pytest

from .helpers import (
    clear_all_outputs,
    error_outputs,
    execute_new_cell,
    hide_left_sidebar,
    open_notebook,
    run_all,
    screenshot,
    wait_for_selector_in_output,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDGET = ".jupyter-widgets"


def _poll_text(locator, wanted: str, timeout_ms: int = 20_000) -> str:
    """Wait until the locator's text contains ``wanted`` (widgets redraw up to 10 times a second)."""
    locator.page.wait_for_function(
        "([el, w]) => el && el.textContent.includes(w)", arg=[locator.element_handle(), wanted], timeout=timeout_ms
    )
    return str(locator.text_content())


_SCROLL_TO_TOP = "e => e.scrollIntoView({block: 'start'})"


def _cell_with(page, css: str):
    """The first code cell whose output holds an element matching ``css``."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(f".jp-OutputArea-output {css}")).first


def test_03_tree_and_mailbox_views_follow_a_crash(page, lab):
    open_notebook(page, "03-supervision.ipynb")
    cells = run_all(page, timeout=120)
    assert not error_outputs(cells), f"error outputs in 03-supervision: {error_outputs(cells)}"

    # the live tree of demo:one: a widget (not the static HTML of --no-pids cells) that shows b restarted
    wait_for_selector_in_output(page, f'{WIDGET} svg.wippy-tree g.wippy-node[data-id="demo:one/b"]', timeout=60)
    b_node = page.locator(f'{WIDGET} svg.wippy-tree g.wippy-node[data-id="demo:one/b"]').first
    text = _poll_text(b_node, "restarts 1")
    assert "running" in text, f"b should be running again after its restart, the live tree shows: {text!r}"
    a_node = page.locator(f'{WIDGET} svg.wippy-tree g.wippy-node[data-id="demo:one/a"]').first
    assert "restarts" not in str(a_node.text_content()), "one_for_one: a must not have restarted"

    # the live mailbox of one-b: the three messages sent after it was shown, then the restart
    box = wait_for_selector_in_output(page, f"{WIDGET} .wippy-mailbox", timeout=60).first
    text = _poll_text(box, "restarted as")
    assert text.count("hello") >= 3, f"the mailbox view should list the three hello messages: {text!r}"
    assert "crash" in text, f"the mailbox view should list the crash message: {text!r}"

    hide_left_sidebar(page)
    # scroll the code cells, which stay put: the drawings inside are replaced as the widgets redraw, and a
    # replaced element has no .jp-CodeCell around it any more
    _cell_with(page, f"{WIDGET} svg.wippy-tree").evaluate(_SCROLL_TO_TOP)
    screenshot(page, "03-supervision-live-tree")
    _cell_with(page, f"{WIDGET} .wippy-mailbox").evaluate(_SCROLL_TO_TOP)
    screenshot(page, "03-supervision-mailbox")


def test_04_observing_draws_a_sequence_diagram(page, lab):
    open_notebook(page, "04-observing.ipynb")
    cells = run_all(page, timeout=120)
    assert not error_outputs(cells), f"error outputs in 04-observing: {error_outputs(cells)}"
    # a traced cell's view freezes into its static picture once the cell's trace is complete
    trace = wait_for_selector_in_output(page, "svg.wippy-trace", timeout=60).first
    steps = trace.locator("g.wippy-step")
    assert steps.count() > 0, "the traced cell's sequence diagram has no steps"
    assert trace.locator("g.wippy-lifeline").count() >= 2, "a sequence diagram needs at least two lifelines"
    hide_left_sidebar(page)
    trace.evaluate("e => e.closest('.jp-CodeCell').scrollIntoView({block: 'start'})")
    screenshot(page, "04-observing-trace")


# Prints how many views are live, then waits (at most 10 s) until none is and prints how long that took.
# The front end's removal messages were queued before this cell's execute request, so they are handled
# first; the views close on their grace timers while the cell waits.
_LIVE_AFTER_CLEAR = """\
import time
from wippy.magics.views.pump import live_views
t0 = time.monotonic()
while live_views() and time.monotonic() - t0 < 10:
    time.sleep(0.05)
print(f"live views: {len(live_views())} after {time.monotonic() - t0:.2f} s")
"""


def test_clearing_the_outputs_ends_the_live_views(page, lab):
    open_notebook(page, "03-supervision.ipynb")
    cells = run_all(page, timeout=120)
    assert not error_outputs(cells), f"error outputs in 03-supervision: {error_outputs(cells)}"
    wait_for_selector_in_output(page, f'{WIDGET} svg.wippy-tree g.wippy-node[data-id="demo:one/b"]', timeout=60)
    shown = execute_new_cell(page, "from wippy.magics.views.pump import live_views\nprint(len(live_views()))")
    assert int(shown.strip()) >= 2, f"the live tree and mailbox of 03 should be live views, the kernel has {shown!r}"

    clear_all_outputs(page)  # Edit > Clear Outputs of All Cells: Lab removes the widgets' views, keeps models
    said = execute_new_cell(page, _LIVE_AFTER_CLEAR)
    assert said.startswith("live views: 0 "), f"the views outlived the clear: {said!r}"


def test_07_agents_sessions_are_drawn_and_a_live_session_view_freezes(page, lab):
    """07-agents on the local model in JupyterLab: every session picture is drawn (steps with their kinds),
    and a %%agent cell without --static shows the live view, which leaves the answered session's picture."""
    open_notebook(page, "07-agents.ipynb")
    cells = run_all(page, timeout=240)
    assert not error_outputs(cells), f"error outputs in 07-agents: {error_outputs(cells)}"
    pictures = wait_for_selector_in_output(page, ".wippy-agent-session", timeout=60)
    assert pictures.count() >= 4, "07 shows a session picture per %%agent cell"
    assert page.locator('.wippy-agent-session tr[data-kind="tool"]').count() > 0
    execute_new_cell(page, "%%agent app:helper --max-steps 2\nShout the word hello.", timeout=120)
    done = wait_for_selector_in_output(page, '.wippy-agent-session[data-status="answered"], '
                                             '.wippy-agent-session[data-status="stopped"]', timeout=60)
    assert done.last.locator('tr[data-kind="model"]').count() >= 1
    hide_left_sidebar(page)
    done.last.evaluate("e => e.closest('.jp-CodeCell').scrollIntoView({block: 'start'})")
    screenshot(page, "07-agents-session")


_PAUSE_AND_SPAWN = """\
node.teach.pause()
extra = node.spawn("teach:producer", consumer)
print(extra)
"""


def test_08_teaching_the_stepper_steps_and_the_views_follow(page, lab):
    """08-teaching in JupyterLab: after Run All, pause and spawn a producer from a new cell; the stepper's
    buttons (a live widget) then step the paused world, its "next" line follows, and the live mailbox of
    the consumer shows the jobs the steps delivered (nothing else runs while paused)."""
    open_notebook(page, "08-teaching.ipynb")
    cells = run_all(page, timeout=120)
    assert not error_outputs(cells), f"error outputs in 08-teaching: {error_outputs(cells)}"
    stepper = wait_for_selector_in_output(page, f"{WIDGET}.wippy-stepper", timeout=60).first
    box = wait_for_selector_in_output(page, f"{WIDGET} .wippy-mailbox", timeout=60).first
    extra = execute_new_cell(page, _PAUSE_AND_SPAWN).strip()
    assert extra.startswith("{app:processes|"), extra
    # (the box is polled: a widget's HTML replaces its inner elements at each redraw)
    _poll_text(stepper, f"next: spawn teach:producer {extra}")
    before = str(box.text_content())
    stepper.locator("button", has_text="step 10").click()
    log = _poll_text(stepper, "deliver job")
    assert f"spawn teach:producer {extra}" in log, log
    stepper.locator("button", has_text="step 10").click()
    _poll_text(stepper, "timer")
    page.wait_for_function("([el, b]) => el && el.textContent !== b", arg=[box.element_handle(), before],
                           timeout=20_000)   # the mailbox view redrew after the steps
    assert "job" in str(box.text_content())
    hide_left_sidebar(page)
    stepper.evaluate("e => e.closest('.jp-CodeCell').scrollIntoView({block: 'start'})")
    screenshot(page, "08-teaching-stepper")
    stepper.locator("button", has_text="resume").click()
    _poll_text(stepper, "running (pause to step)")
