"""The %workflow magics through IPython's InteractiveShell: start, signal, status, result, cancel, list and
history (the table, the SVG timeline, the live view), and every refusal as a one-line UsageError."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import magics_shell
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from wippy.magics.registry import Table
from wippy.magics.workflow import TimelineStep, WorkflowHistory, WorkflowText, _ticks, history_svg
from wippy.runtime import Node

FLOWS = """\
namespace: wf.test
entries:
  - name: flow
    kind: workflow.lua
    modules: [funcs]
    source: |
      return { main = function(order)
        local charged = funcs.call("wf.test:charge", order.id, order.amount)
        local approval = process.listen("approval"):receive()
        return { order = order.id, charged = charged, approved_by = approval.by }
      end }
  - name: pair
    kind: workflow.lua
    source: |
      return { main = function(a, b) return a .. "+" .. b end }
  - name: boom
    kind: workflow.lua
    source: |
      return { main = function() error("boom on purpose") end }
  - name: flaky
    kind: workflow.lua
    modules: [funcs]
    source: |
      return { main = function(key)
        local v = funcs.call("wf.test:flaky_act", key)
        time.sleep("50ms")
        return v
      end }
  - name: proc
    kind: process.lua
    source: |
      return { main = function() end }
"""

_ids = itertools.count(1)


def new_id(prefix: str = "w") -> str:
    return f"{prefix}-{next(_ids)}"


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """A shell with the magics, the test workflows and their Python activities."""
    with magics_shell(tmp_path_factory.mktemp("wippy-data")) as shell:
        res = shell.run_cell("%%registry\n" + FLOWS, store_history=False)
        assert res.success, res.error_in_exec
        node: Node = shell.user_ns["node"]
        attempts: dict[str, int] = {}
        lock = threading.Lock()

        @node.workflows.activity("wf.test:charge")
        def charge(order_id: str, amount: float, *, idempotency_key: str) -> dict[str, Any]:
            return {"amount": amount, "key": idempotency_key}

        @node.workflows.activity("wf.test:flaky_act", retry={"max_attempts": 4, "initial_interval": 0.01})
        def flaky(key: str) -> str:
            with lock:
                attempts[key] = attempts.get(key, 0) + 1
                n = attempts[key]
            if n < 3:
                raise RuntimeError(f"attempt {n} fails")
            return f"ok after {n}"

        yield shell


@pytest.fixture
def node(ip: InteractiveShell) -> Node:
    n: Node = ip.user_ns["node"]
    return n


def run(ip: InteractiveShell, cell: str) -> ExecutionResult:
    return ip.run_cell(cell, store_history=False)


def ok(ip: InteractiveShell, cell: str) -> Any:
    res = run(ip, cell)
    assert res.success, res.error_in_exec
    return res.result


def usage_error(ip: InteractiveShell, cell: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A UsageError cell whose message is one line (see conftest.usage_error)."""
    return shared_usage_error(ip, cell, capsys, one_line=True)


def wait_steps(node: Node, wid: str, n: int, timeout: float = 10.0) -> None:
    """Wait until the workflow's journal holds ``n`` steps (a start returns once its process runs)."""
    deadline = time.monotonic() + timeout
    while node.workflows.get(wid).steps < n:
        assert time.monotonic() < deadline, f"workflow {wid} did not reach step {n}"
        time.sleep(0.01)


def start_order(ip: InteractiveShell, amount: float = 12.5) -> str:
    """Start wf.test:flow; return its ID once the charge is journaled (it then waits for `approval`)."""
    wid = new_id("order")
    got = ok(ip, f'%workflow start wf.test:flow --id {wid} {{"id": "{wid}", "amount": {amount}}}')
    assert isinstance(got, WorkflowText) and got == wid
    wait_steps(ip.user_ns["node"], wid, 1)
    return wid


# ---------------------------------------------------------------- the life of a workflow


def test_start_signal_result(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    wid = start_order(ip)
    assert repr(ok(ip, f"%workflow status {wid}")) == "running"
    capsys.readouterr()
    ok(ip, f'%workflow signal {wid} approval {{"by": "ada"}}')
    assert capsys.readouterr().out == f"'approval' sent to workflow {wid} (signal 1)\n"
    result = ok(ip, f"%workflow result {wid} --timeout 10")
    assert result == {"approved_by": "ada", "charged": {"amount": 12.5, "key": f"{wid}:1"}, "order": wid}
    assert list(result) == ["approved_by", "charged", "order"]   # sorted: a Lua table has no order
    assert list(result["charged"]) == ["amount", "key"]
    assert ok(ip, f"%workflow status {wid}") == "completed"
    assert node.workflows.status(wid) == "completed"


def test_start_without_id_makes_one_and_takes_an_argument_list(ip: InteractiveShell, node: Node) -> None:
    wid = ok(ip, '%workflow start wf.test:pair ["left", "right"]')
    assert re.fullmatch(r"[0-9a-f-]{36}", wid), wid
    assert ok(ip, f"%workflow result {wid} --timeout 10") == "left+right"


def test_starting_an_existing_id_gives_it_back(ip: InteractiveShell, node: Node,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    wid = start_order(ip)
    before = len(node.workflows.list())
    capsys.readouterr()
    assert ok(ip, f'%workflow start wf.test:flow --id {wid} {{"id": "other", "amount": 1}}') == wid
    said = capsys.readouterr().out.splitlines()[0]   # then the result, the ID
    assert said == f"workflow {wid} exists already (running, wf.test:flow): nothing new started"
    assert len(node.workflows.list()) == before
    ok(ip, f'%workflow signal {wid} approval {{"by": "bob"}}')
    assert ok(ip, f"%workflow result {wid} --timeout 10")["order"] == wid   # the first input, not "other"


def test_cancel(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    wid = start_order(ip)
    capsys.readouterr()
    ok(ip, f"%workflow cancel {wid} changed my mind")
    assert capsys.readouterr().out == f"workflow {wid} cancelled (changed my mind)\n"
    assert ok(ip, f"%workflow status {wid}") == "cancelled"
    message = usage_error(ip, f"%workflow result {wid}", capsys)
    assert message == (f"%workflow result: workflow '{wid}' cancelled: changed my mind; "
                       f"%workflow history {wid} shows its steps")


def test_a_failed_workflow_result_names_its_error(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    wid = ok(ip, f"%workflow start wf.test:boom --id {new_id('boom')}")
    message = usage_error(ip, f"%workflow result {wid} --timeout 10", capsys)
    assert message.startswith(f"%workflow result: workflow '{wid}' failed: "), message
    assert "boom on purpose" in message and message.endswith(f"%workflow history {wid} shows its steps")
    assert ok(ip, f"%workflow status {wid}") == "failed"


def test_result_timeout(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    wid = start_order(ip)
    message = usage_error(ip, f"%workflow result {wid} --timeout 0.2", capsys)
    assert message == (f"%workflow result: workflow '{wid}' has not finished within 0.2s (it is running); "
                       f"%workflow history {wid} shows where it is")
    ok(ip, f"%workflow cancel {wid}")


# ---------------------------------------------------------------- list


def test_list_is_a_table_with_status_colours(ip: InteractiveShell, node: Node) -> None:
    wid = start_order(ip)
    table = ok(ip, "%workflow list")
    assert isinstance(table, Table)
    lines = repr(table).splitlines()
    assert lines[0].split() == ["ID", "ENTRY", "STATUS", "STEPS", "SIGNALS", "OWNER", "UPDATED"]
    row = next(line for line in lines if line.startswith(wid + " "))
    assert row.split()[:6] == [wid, "wf.test:flow", "running", "1", "0", node.workflows.node_id]
    page = table._repr_html_()
    assert page.startswith('<table class="wippy-workflows">')
    assert f"<td>{wid}</td>" in page and 'color:#1565c0;font-weight:bold">running</td>' in page
    running = ok(ip, "%workflow list running")
    assert all(r[2] == "running" for r in running.rows) and any(r[0] == wid for r in running.rows)
    ok(ip, f"%workflow cancel {wid}")
    assert all(r[0] != wid for r in ok(ip, "%workflow list running").rows)


def test_list_filter_empty_and_bad(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    for status in ("running", "completed", "failed", "cancelled"):
        table = ok(ip, f"%workflow list {status}")
        if not table.rows:
            assert repr(table) == f"no {status} workflows"
    message = usage_error(ip, "%workflow list done", capsys)
    assert message.startswith("%workflow list: argument STATUS: invalid choice: 'done'"), message
    assert "running" in message and "(see %workflow list? for the usage)" in message


# ---------------------------------------------------------------- history


def test_history_table_and_timeline(ip: InteractiveShell, node: Node) -> None:
    wid = ok(ip, f'%workflow start wf.test:flaky --id {new_id("flaky")} "k1"')
    assert ok(ip, f"%workflow result {wid} --timeout 10") == "ok after 3"
    h = ok(ip, f"%workflow history {wid}")
    assert isinstance(h, WorkflowHistory)
    assert [(s.seq, s.op, s.retries) for s in h.steps] == [(1, "call", 2), (2, "sleep", 0)]
    text = repr(h).splitlines()
    assert text[0] == f"workflow {wid} (completed): 2 steps, 2 retries"
    assert text[1].split() == ["SEQ", "OP", "DETAIL", "AT", "DURATION", "RETRIES"]
    call = text[2].split()
    assert call[:3] == ["1", "call", 'wf.test:flaky_act("k1")'] and call[-1] == "2"
    assert '→ "ok after 3"' in text[2]
    sleep = text[3].split()
    assert sleep[:3] == ["2", "sleep", "50ms"] and sleep[-2:] == ["50ms", "-"]
    assert h.steps[0].duration >= 0.02   # two backoffs of 0.01 s and more
    page = h._repr_html_()
    assert page.count('<g class="wippy-step"') == 2
    assert 'data-seq="1" data-op="call"' in page and "↻2" in page and "<svg" in page
    assert f"workflow {wid} (completed): 2 steps, 2 retries" in page


def test_history_of_a_signal_wait(ip: InteractiveShell) -> None:
    wid = start_order(ip)
    running = ok(ip, f"%workflow history {wid}")
    assert [s.op for s in running.steps] == ["call"]
    assert repr(running).startswith(f"workflow {wid} (running): 1 step\n")
    ok(ip, f'%workflow signal {wid} approval {{"by": "cy"}}')
    ok(ip, f"%workflow result {wid} --timeout 10")
    h = ok(ip, f"%workflow history {wid}")
    receive = h.steps[1]
    assert receive.op == "receive" and receive.waited
    assert receive.detail == "signal 'approval' {\"by\": \"cy\"}"
    assert "waited " in repr(h).splitlines()[3]
    assert 'stroke-dasharray="4 3"' in h._repr_html_()


def test_history_live_view(ip: InteractiveShell) -> None:
    wid = start_order(ip)
    view = ok(ip, f"%workflow history --live {wid}")
    try:
        assert view.text().startswith(f"workflow {wid} (running): 1 step")
        bundle = view._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert '<g class="wippy-step"' in bundle["text/html"]
        ok(ip, f'%workflow signal {wid} approval {{"by": "di"}}')
        ok(ip, f"%workflow result {wid} --timeout 10")
        deadline = time.monotonic() + 10
        while not view.text().startswith(f"workflow {wid} (completed): 2 steps"):   # the pump redraws
            assert time.monotonic() < deadline, view.text()
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while view.pump.running:   # and stops: a finished workflow changes no more
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ">finished<" in view.status.value
    finally:
        view.close()
    assert view.closed


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("sub", ["status", "result", "history", "cancel", "signal"])
def test_unknown_workflow(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], sub: str) -> None:
    line = f"%workflow {sub} no-such-id" + (" approval" if sub == "signal" else "")
    assert usage_error(ip, line, capsys) == (
        f"%workflow {sub}: unknown workflow 'no-such-id'; %workflow list shows the workflows")


def test_signal_to_a_finished_workflow(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    wid = ok(ip, '%workflow start wf.test:pair ["a", "b"]')
    ok(ip, f"%workflow result {wid} --timeout 10")
    assert usage_error(ip, f'%workflow signal {wid} approval {{"by": "x"}}', capsys) == (
        f"%workflow signal: workflow '{wid}' has already completed and takes no more signals; "
        "%workflow start a new one (under another ID) to run it again")
    assert usage_error(ip, f"%workflow cancel {wid}", capsys) == (
        f"%workflow cancel: workflow '{wid}' has already completed; %workflow result {wid} shows how it ended")


@pytest.mark.parametrize(("cell", "expected"), [
    ("%workflow start wf.test:nope", "%workflow start: unknown entry 'wf.test:nope'"),
    ("%workflow start wf.test:proc", "%workflow start: wf.test:proc is a process.lua entry, not a workflow.lua one; "
                                     "%spawn starts a process, or give the entry kind: workflow.lua"),
    ("%workflow start nocolon", "%workflow start: "),
    ('%workflow start wf.test:flow {"id": 1,}', "%workflow start: the input is not JSON (Expecting property name"),
    ('%workflow start wf.test:flow {"id": "x"} --id late',
     "%workflow start: options go before the JSON: move --id before '{\"id\":'"),
    ("%workflow signal some-id approval [1, 2", "%workflow signal: the payload is not JSON"),
    ("%workflow signal some-id", "%workflow signal: the following arguments are required: TOPIC"),
    ("%workflow start", "%workflow start: the following arguments are required: ENTRY"),
    ("%workflow result some-id --timeout soon", "%workflow result: argument --timeout: invalid float value: 'soon'"),
    ("%workflow", "%workflow: missing subcommand; subcommands: start, signal, status, result, cancel, list, history"),
    ("%workflow stop x", "%workflow: unknown subcommand 'stop'; subcommands: start, signal, status"),
    ("%workflow status a b", "%workflow status: unrecognized arguments: b"),
])
def test_bad_input_is_one_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str,
                               expected: str) -> None:
    message = usage_error(ip, cell, capsys)
    assert message.startswith(expected), message


def test_unknown_entry_names_the_fix(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    message = usage_error(ip, "%workflow start wf.test:nope", capsys)
    assert "define it in a %%registry cell (kind: workflow.lua), or %registry apply its tree" in message


def test_negative_timeout(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    wid = start_order(ip)
    assert usage_error(ip, f"%workflow result {wid} --timeout -1", capsys) == (
        "%workflow result: --timeout -1 is negative; give seconds, e.g. --timeout 5")
    ok(ip, f"%workflow cancel {wid}")


# ---------------------------------------------------------------- drawing, without a node


def test_history_from_plain_records() -> None:
    steps = [
        {"seq": 1, "op": "now", "args": None, "result": 1_700_000_000_000_000_000, "error": None, "at": 100.0},
        {"seq": 2, "op": "call", "args": ["app:pay", 5], "result": None, "error": "declined", "at": 101.0,
         "retries": 1, "duration": 0.5},
        {"seq": 3, "op": "receive", "args": "inbox", "result": {"seq": 1, "topic": "go", "payload": None},
         "error": None, "at": 104.0},
        {"seq": 4, "op": "timer", "args": 2.0, "result": 0, "error": None, "at": 104.0},
    ]
    h = WorkflowHistory("w", steps, "failed", created=100.0, finished=106.0, error="declined")
    assert [(s.start, s.end, s.duration) for s in h.steps] == [
        (100.0, 100.0, 0.0), (100.5, 101.0, 0.5), (101.0, 104.0, 3.0), (104.0, 106.0, 2.0)]
    assert [s.detail for s in h.steps] == ['', 'app:pay(5) error: declined', "signal 'go' null", "2.00s"]
    text = repr(h).splitlines()
    assert text[:2] == ["workflow w (failed): 4 steps, 1 retries", "error: declined"]
    assert [row[3] for row in h.rows()] == ["+0.000s", "+0.500s", "+1.000s", "+4.000s"]
    assert [row[4] for row in h.rows()] == ["-", "500ms", "waited 3.00s", "2.00s"]
    assert text[3].split() == ["1", "now", "+0.000s", "-", "-"]
    svg = history_svg(h)
    assert 'fill="#c62828"' in svg   # the failed call is red
    assert svg.count("<g class=\"wippy-step\"") == 4
    assert ">0s<" in svg and ">6s<" in svg   # the axis spans creation to finish


def test_empty_history_and_ticks() -> None:
    h = WorkflowHistory("w", [], "running", created=1.0)
    assert repr(h) == "workflow w (running): 0 steps (nothing journaled yet)"
    assert "nothing journaled yet" in h._repr_html_()
    assert _ticks(20.1) == [0, 10, 20]
    assert _ticks(0.003) == pytest.approx([0, 0.001, 0.002, 0.003])
    step = TimelineStep({"op": "uuid", "at": 5.0}, 0, None)
    assert (step.seq, step.start, step.end, step.detail) == (1, 5.0, 5.0, "")


def test_a_long_journal_shows_its_last_steps() -> None:
    steps = [{"seq": i, "op": "now", "at": 10.0 + i} for i in range(1, 301)]
    h = WorkflowHistory("long", steps, "running", created=10.0, limit=50)
    text = repr(h).splitlines()
    assert text[:2] == ["workflow long (running): 300 steps", "(250 earlier steps not shown)"]
    assert len(text) == 3 + 50 and text[3].split()[0] == "251" and text[-1].split()[0] == "300"
    page = h._repr_html_()
    assert page.count('<g class="wippy-step"') == 50 and "(250 earlier steps not shown)" in page
    assert 'data-seq="251"' in page and 'data-seq="250"' not in page


def test_the_error_of_a_failed_workflow_is_drawn_too() -> None:
    h = WorkflowHistory("w", [{"seq": 1, "op": "now", "at": 1.0}], "failed", created=1.0, finished=2.0,
                        error="flow.lua:3: boom\nstack traceback: ...")
    assert repr(h).splitlines()[1] == "error: flow.lua:3: boom"
    assert "<code>error: flow.lua:3: boom</code>" in h._repr_html_()
