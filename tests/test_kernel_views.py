"""A live view over the real Jupyter protocol: ``%tree`` opens widget comms, and a crash in the node reaches
the front end as a ``comm_msg`` update of the picture, sent by the view's pump with no cell running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from test_kernel import Kernel, _start, _stop, execute, kernelspecs, stdout  # noqa: F401  (kernelspecs: a fixture)

SUPERVISOR = """%%registry
namespace: demo
entries:
  - name: worker
    kind: process.lua
    source: |
      return { main = function(name)
        local inbox = process.inbox()
        while true do
          local msg = inbox:receive()
          if msg:topic() == "crash" then error("crashed on purpose: " .. name) end
        end
      end }
  - name: sup
    kind: process.supervisor
    strategy: one_for_one
    max_restarts: 3
    period: 60s
    lifecycle: {auto_start: true}
    children:
      - {id: a, process: demo:worker, input: [a], name: t-a}
      - {id: b, process: demo:worker, input: [b], name: t-b}
"""


@pytest.fixture(scope="module")
def kernel(kernelspecs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:  # noqa: F811
    km, kc = _start("wippy", tmp_path_factory.mktemp("kernel-views"))
    yield km, kc
    _stop(km, kc)


def run_cell(kc: BlockingKernelClient, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a cell; return its reply and every iopub message it caused (comms included)."""
    msgs: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=30, output_hook=msgs.append)
    return reply["content"], msgs


def iopub_until(kc: BlockingKernelClient, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except Exception:  # queue.Empty
            continue
        if predicate(msg):
            return msg
    raise AssertionError(f"no such iopub message within {timeout}s")


def test_tree_widget_updates_over_the_comm_after_a_crash(kernel: Kernel) -> None:
    _, kc = kernel
    reply, _ = run_cell(kc, SUPERVISOR)
    assert reply["status"] == "ok"
    reply, msgs = run_cell(kc, "%tree demo:sup")
    assert reply["status"] == "ok"
    opened = {m["content"]["comm_id"]: m["content"]["data"]["state"] for m in msgs if m["msg_type"] == "comm_open"}
    assert opened and all(m["content"]["target_name"] == "jupyter.widget"
                          for m in msgs if m["msg_type"] == "comm_open")
    html_models = {cid for cid, state in opened.items() if state.get("_model_name") == "HTMLModel"}
    # the first frame: the picture, sent to the HTML model that shows it
    pictures = {m["content"]["comm_id"]: m["content"]["data"]["state"]["value"] for m in msgs
                if m["msg_type"] == "comm_msg" and "value" in m["content"]["data"].get("state", {})}
    svg_model = next(cid for cid, value in pictures.items() if value.startswith('<svg class="wippy-tree"')
                     or 'class="wippy-tree"' in value[:120])
    assert svg_model in html_models
    assert "restarts" not in pictures[svg_model]
    shown = [m["content"] for m in msgs if m["msg_type"] == "display_data"]
    assert len(shown) == 1
    data = shown[0]["data"]
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] in opened
    assert data["text/html"].startswith("<svg") and data["text/plain"].startswith("demo:sup  supervisor one_for_one")
    assert shown[0]["transient"]["display_id"]

    reply, _ = run_cell(kc, "node.send('t-b', 'crash')")
    assert reply["status"] == "ok"

    def the_update(msg: dict[str, Any]) -> bool:
        if msg["msg_type"] != "comm_msg" or msg["content"]["comm_id"] != svg_model:
            return False
        value = msg["content"]["data"].get("state", {}).get("value", "")
        return "restarts 1" in value

    update = iopub_until(kc, the_update)
    value = update["content"]["data"]["state"]["value"]
    assert update["content"]["data"]["method"] == "update"
    assert 'class="wippy-node wippy-running wippy-flash" data-id="demo:sup/b"' in value
    assert "crashed on purpose: b" in value

    # closing the view closes its comms and leaves the last state in the output, as static HTML
    reply, msgs = run_cell(kc, "_.close()")
    assert reply["status"] == "ok"
    closed = {m["content"]["comm_id"] for m in msgs if m["msg_type"] == "comm_close"}
    assert svg_model in closed and closed <= set(opened)
    updates = [m["content"] for m in msgs if m["msg_type"] == "update_display_data"]
    assert len(updates) == 1 and updates[0]["transient"] == shown[0]["transient"]
    assert "restarts 1" in updates[0]["data"]["text/html"]
    assert "application/vnd.jupyter.widget-view+json" not in updates[0]["data"]


def run_in_cell(kc: BlockingKernelClient, code: str, cell_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``code`` as the notebook cell ``cell_id`` (as JupyterLab sends it: metadata.cellId)."""
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                         metadata={"cellId": cell_id})
    kc.shell_channel.send(msg)
    msgs: list[dict[str, Any]] = []
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
        msgs.append(m)
    reply = kc.get_shell_msg(timeout=30)
    return reply["content"], msgs


def test_running_a_cell_again_closes_the_view_it_showed(kernel: Kernel) -> None:
    _, kc = kernel
    reply, first = run_in_cell(kc, "%ps --live", "cell-a")
    assert reply["status"] == "ok"
    opened = {m["content"]["comm_id"] for m in first if m["msg_type"] == "comm_open"}
    reply, again = run_in_cell(kc, "%ps --live", "cell-a")
    assert reply["status"] == "ok"
    closed = {m["content"]["comm_id"] for m in again if m["msg_type"] == "comm_close"}
    assert opened and opened <= closed  # every widget of the first run's view, closed by the second run
    assert not [m for m in again if m["msg_type"] == "update_display_data"]  # its output is gone: no freeze


def test_live_table_and_trace_in_the_kernel(kernel: Kernel) -> None:
    _, kc = kernel
    reply, msgs = run_cell(kc, "%ps --live")
    assert reply["status"] == "ok"
    assert any(m["msg_type"] == "comm_open" for m in msgs)
    reply, msgs = run_cell(kc, "%%trace --lua\nprocess.send(process.pid(), 'note', 1)\nprocess.inbox():receive()")
    assert reply["status"] == "ok"
    shown = [m["content"]["data"] for m in msgs if m["msg_type"] == "display_data"]
    assert shown and 'data-topic="note"' in shown[-1]["text/html"]
    reply, outputs = execute(kc, "print(_.text())")
    assert reply["status"] == "ok"
    assert stdout(outputs).endswith(": note\n")
