"""%%agent and %agent (magics/agent.py) through IPython's InteractiveShell, against a scripted
OpenAI-compatible server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import wippy.magics
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import InteractiveShell
from llm_server import ScriptedLLM, text, tool_call
from wippy.magics.agent_session import SessionPicture
from wippy.runtime import Node

TREE = """\
namespace: app
entries:
  - name: gpt
    kind: registry.entry
    meta: {type: llm.model, name: gpt}
    base_url: {url}
    provider_model: gpt-x
    max_retries: 0
  - name: add
    kind: function.lua
    meta:
      type: tool
      llm_description: adds a and b
      input_schema: {{type: object, properties: {{a: {{type: number}}, b: {{type: number}}}}, required: [a, b]}}
    source: "return {{ main = function(args) return args.a + args.b end }}"
  - name: calc
    kind: registry.entry
    meta: {{type: agent.gen1, name: calc}}
    prompt: You add numbers.
    model: gpt
    tools: [app:add]
"""


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as s:
        yield s


@pytest.fixture
def node(ip: InteractiveShell, llm: ScriptedLLM) -> Iterator[Node]:
    n = wippy.magics.node()
    n.registry.reset()
    ok(ip, "%%registry\n" + TREE.replace("{url}", llm.url).replace("{{", "{").replace("}}", "}"))
    yield n
    n.agents.set_break("app:calc", "off")
    n.registry.reset()


def ok(ip: InteractiveShell, cell: str) -> object:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec
    return res.result


def test_agent_cell_runs_and_shows_the_session(ip: InteractiveShell, node: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("It is 5."))
    pic = ok(ip, "%%agent app:calc --static\nWhat is 2+3?")
    assert isinstance(pic, SessionPicture)
    lines = pic.text().splitlines()
    assert lines[0].startswith(f"session {pic.record.id} · agent app:calc · answered · 2 steps · 30 tokens")
    assert [ln.split()[1] for ln in lines[1:]] == ["user:", "model", "tool", "model", "answer:"]
    assert "tool add({\"a\": 2, \"b\": 3}) = 5" in pic.text() and lines[-1].endswith("answer: It is 5.")
    page = pic._repr_html_()
    assert "system message" in page and "You add numbers." in page and 'data-kind="tool"' in page
    table = repr(ok(ip, "%agent list"))
    assert pic.record.id in table and "answered" in table


def test_replay_and_fork_from_cells(ip: InteractiveShell, node: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("It is 5."))
    sid = ok(ip, "%%agent app:calc --static\n2+3?").record.id
    rp = ok(ip, f"%agent replay {sid}")
    assert rp.text().startswith("replay: identical (4 steps, no model ran")
    llm.push(text("It is 50."))
    fork = ok(ip, f"%agent fork {sid} 1 --result 50")
    assert fork.record.parent == sid and "fork of " + sid + " at step 1" in fork.text()
    assert fork.text().splitlines()[-1].endswith("answer: It is 50.")
    assert f"forks: {fork.record.id} (at step 1)" in ok(ip, f"%agent show {sid}").text()


def test_break_pauses_and_continue_resumes(ip: InteractiveShell, node: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 1, "b": 1}), text("two"))
    assert str(ok(ip, "%agent break app:calc before=tool")) == "break app:calc before=tool"
    pic = ok(ip, "%%agent app:calc --static\n1+1?")
    assert "paused before tool (step 1)" in pic.text() and '"tool": "add"' in pic.text()
    assert "paused: app:calc session" in str(ok(ip, "%agent break"))
    ok(ip, "%agent break app:calc before=off")
    deadline = time.monotonic() + 20
    while node.agents.sessions.get(pic.record.id).status != "answered" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.agents.sessions.get(pic.record.id).status == "answered"
    assert str(ok(ip, "%agent continue")) == "resumed 0 paused runs"


def test_wrong_use_is_one_clear_line(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    def err(cell: str) -> str:
        return shared_usage_error(ip, cell, capsys, one_line=True)

    assert err("%%agent app:nobody\nhi").startswith("%%agent: unknown agent 'app:nobody' (agents: app:calc")
    assert err("%agent show nope").startswith("%agent show: unknown agent session 'nope'")
    assert err("%agent bogus").startswith("%agent: unknown subcommand 'bogus'")
    assert "before= must be model, tool or off" in err("%agent break app:calc before=lunch")
    assert err("%agent fork x").startswith("%agent fork: usage:")
    assert err("%agent fork x 1 --bogus y").startswith("%agent fork: usage:")
