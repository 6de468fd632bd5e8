"""%runtime (magics/teach.py) through IPython's InteractiveShell; a cell refused while its host is paused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wippy.magics
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import InteractiveShell
from wippy.runtime import Node


@pytest.fixture
def node(ip: InteractiveShell) -> Iterator[Node]:
    n = wippy.magics.node()
    yield n
    n.teach.resume()


def ok(ip: InteractiveShell, cell: str) -> str:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec
    return str(res.result)


def test_pause_status_step_resume(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, "%%lua --entry t.teach:echo\nreturn { main = function() local m = process.inbox():receive() "
           "print('got ' .. m:payload():data()) end }")
    pid = node.spawn("t.teach:echo")
    assert ok(ip, "%runtime pause").startswith("paused app:processes: ")
    node.send(pid, "hi", "there")
    status = ok(ip, "%runtime status")
    assert f"next: deliver hi python -> {pid}" in status and "app:processes: paused after " in status
    msg = shared_usage_error(ip, "%lua 1 + 1", capsys, one_line=True)
    assert msg.startswith("the host app:processes is paused (%runtime pause)") and "%runtime resume" in msg
    lines = ok(ip, "%runtime step").splitlines()
    assert lines[-1].endswith(f"deliver hi python -> {pid}")
    assert node.logs(pid) == ["got there"]
    assert ok(ip, "%runtime resume").startswith("resumed: ")
    assert ok(ip, "%lua 1 + 1") == "2"
    assert "app:processes: running" in ok(ip, "%runtime status")


def test_wrong_use(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    def err(cell: str) -> str:
        return shared_usage_error(ip, cell, capsys, one_line=True)

    assert err("%runtime step").startswith("%runtime step: step: no host is paused")
    assert err("%runtime").startswith("%runtime: missing subcommand")
    assert err("%runtime jump").startswith("%runtime: unknown subcommand 'jump'")
    ok(ip, "%runtime pause")
    assert "N must be a positive integer, got 'x'" in err("%runtime step x")
    assert "N must be a positive integer, got -2" in err("%runtime step -2")
    assert "S must be an integer, got 'abc'" in err("%runtime seed abc")
    assert "S must be an integer, got '1.5'" in err("%runtime seed 1.5")
    assert "usage: %runtime seed S" in err("%runtime seed")
    assert "N must be a positive integer, got 'x'" in err("%runtime log x")
    assert "takes no N" in err("%runtime step 3 --widget")
    assert "%runtime status: takes no arguments" in err("%runtime status now")


PONG = """return { main = function()
  while true do
    local m = process.inbox():receive()
    process.send(m:from(), "pong", m:payload():data())
  end end }"""
PING = """return { main = function(peer)
  for i = 1, 2 do
    process.send(peer, "ping", i)
    process.inbox():receive()
  end
end }"""


def test_the_stepper_widget_steps_and_shows_the_next_event(ip: InteractiveShell, node: Node) -> None:
    from wippy.magics.views.stepper import StepperView

    node.define("t.teach:pong", "process.lua", source=PONG)
    node.define("t.teach:ping", "process.lua", source=PING)
    pong = node.spawn("t.teach:pong")
    view = ip.run_line_magic("runtime", "step --widget")
    try:
        assert isinstance(view, StepperView)
        assert view.text() == "running (pause to step)" and view.b_step.disabled and not view.b_pause.disabled
        view.b_pause.click()
        ping = node.spawn("t.teach:ping", pong)
        view.refresh()
        assert view.text() == f"next: spawn t.teach:ping {ping}"
        assert not view.b_step.disabled and view.b_pause.disabled
        view.b_step.click()
        view.refresh()
        assert view.text().splitlines() == [f"next: deliver ping {ping} -> {pong}",
                                            f"{view.lines[0].split()[0]} spawn t.teach:ping {ping}"]
        view.b_ten.click()
        view.refresh()
        assert view.text().splitlines()[0] == "next: nothing (no event waits and no timer is set)"
        assert [ln.split()[1] for ln in view.lines] == ["spawn", "deliver", "deliver", "deliver", "deliver"]
        assert "wippy-stepper" in view.static_html()
        view.b_resume.click()
        view.refresh()
        assert not node.teach.paused() and view.text().startswith("running")
    finally:
        view.close()


def test_the_trace_view_marks_the_steps(ip: InteractiveShell, node: Node) -> None:
    from wippy.magics.views.trace import TraceView

    node.define("t.teach:pong", "process.lua", source=PONG)
    node.define("t.teach:ping", "process.lua", source=PING)
    pong = node.spawn("t.teach:pong")
    view = TraceView(node, live=False)
    try:
        ok(ip, "%runtime pause")
        ping = node.spawn("t.teach:ping", pong)
        ok(ip, "%runtime step 2")
        view.refresh()
        text = view.text().splitlines()
        marks = [i for i, ln in enumerate(text) if ln.startswith("-- step ")]
        assert len(marks) == 2 and text[marks[0]].endswith(f"spawn t.teach:ping {ping} --")
        assert "ping" in text[marks[0] + 1] and text[marks[1]].endswith(f"deliver ping {ping} -> {pong} --")
        svg = view.static_html()
        assert svg.count("wippy-mark") == 3 and svg.count("wippy-mark-last") == 1   # the newest stands out
    finally:
        view.close()


def test_a_cell_whose_host_is_paused_while_it_waits_gets_a_clear_error(
        ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    """Someone pauses the host (another thread, a subshell) while a cell waits on a message: the cell
    is stopped with a one-line error instead of waiting for ever, and the kernel goes on."""
    import threading

    timer = threading.Timer(0.3, node.teach.pause)
    timer.start()
    msg = shared_usage_error(ip, "%%lua\nprint(process.inbox():receive():payload():data())", capsys,
                             one_line=True)
    timer.join()
    assert msg.startswith("the host app:processes was paused (%runtime pause) while this cell waited: "
                          "the cell was stopped"), msg
    assert "%runtime resume" in msg
    ok(ip, "%runtime resume")
    assert ok(ip, "%lua 40 + 2") == "42"
