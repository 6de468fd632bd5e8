"""Agents against a scripted OpenAI-compatible server on loopback (exact cases: tool-call shapes,
errors, edits while running, policies, sessions replayed and forked). The real local model is
tests/test_local_model.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import ScriptedLLM, status, text, tool_call, tool_calls
from wippy.runtime import EntryError, Node
from wippy.runtime.agent_spec import ToolSpec
from wippy.runtime.agents import AgentError, check_arguments, constrained_tools
from wippy.runtime.entries import Entry

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as s:
        yield s


def model(url: str, name: str = "gpt", **data: Any) -> Entry:
    return Entry(
        f"app:{name}",
        "registry.entry",
        {"type": "llm.model", "name": name},
        {"base_url": url, "provider_model": "gpt-x", "max_retries": 0, **data},
    )


def tool(entry_id: str, source: str, schema: dict[str, Any] | None = None, **meta: Any) -> Entry:
    return Entry(
        entry_id,
        "function.lua",
        {"type": "tool", "input_schema": schema or ADD_SCHEMA, **meta},
        {"source": source, "method": "main"},
    )


def agent(entry_id: str, **data: Any) -> Entry:
    return Entry(
        entry_id, "registry.entry", {"type": "agent.gen1", "name": entry_id.split(":")[1]}, {"model": "gpt", **data}
    )


ADD = "return { main = function(args) return args.a + args.b end }"


@pytest.fixture
def calc(node: Node, llm: ScriptedLLM) -> Node:
    node.apply(
        [
            model(llm.url),
            tool("app.tools:add", ADD),
            agent("app:calc", prompt="You add numbers.", tools=["app.tools:*"]),
        ]
    )
    return node


def kinds(node: Node, session: str) -> list[str]:
    return [s.kind for s in node.agents.sessions.steps(session)]


def test_a_tool_call_runs_and_the_answer_comes_back(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("The sum is 5."))
    r = calc.agents.run("app:calc", "What is 2+3?")
    assert (r.result, r.steps, r.stopped) == ("The sum is 5.", 2, None)
    assert r.tokens == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    assert kinds(calc, r.session) == ["user", "model", "tool", "model", "answer"]
    step = calc.agents.sessions.steps(r.session)[2].data
    assert (step["name"], step["entry"], step["arguments"], step["result"]) == (
        "add",
        "app.tools:add",
        {"a": 2, "b": 3},
        5,
    )
    first, second = llm.requests[0]["body"], llm.requests[1]["body"]
    assert first["messages"][0] == {"role": "system", "content": "You add numbers."}
    assert first["tools"][0]["function"]["name"] == "add"
    assert first["tools"][0]["function"]["parameters"] == ADD_SCHEMA
    # the model sees its own call and the result
    assert second["messages"][2]["tool_calls"][0]["function"]["name"] == "add"
    assert second["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "name": "add", "content": "5"}


def test_agent_run_from_lua_in_a_process(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 1, "b": 1}), text("2"))
    calc.define(
        "app:worker",
        "process.lua",
        modules=["agent"],
        source="""return { main = function()
      local r, err = agent.run("app:calc", "1+1?", {max_steps = 4})
      if not r then return "error: " .. err end
      return r.result .. " in " .. r.steps .. " steps, session " .. type(r.session)
    end }""",
    )
    assert calc.exec("app:worker", timeout=20) == "2 in 2 steps, session string"


def test_a_crashing_tool_is_an_error_result_and_the_agent_goes_on(node: Node, llm: ScriptedLLM) -> None:
    node.apply(
        [
            model(llm.url),
            tool("app.tools:boom", 'return { main = function(args) error("disk on fire") end }'),
            agent("app:a", tools=["app.tools:boom"]),
        ]
    )
    llm.push(tool_call("boom", {"a": 1, "b": 2}), text("The tool failed, sorry."))
    r = node.agents.run("app:a", "go")
    assert r.result == "The tool failed, sorry."
    sent = llm.requests[1]["body"]["messages"][-1]
    assert sent["role"] == "tool" and "disk on fire" in sent["content"] and sent["content"].startswith("error: ")
    assert "disk on fire" in node.agents.sessions.steps(r.session)[2].data["error"]


def test_an_unknown_tool_and_bad_arguments_are_errors_the_model_sees(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(
        tool_calls([("mul", {"a": 1}, "c1"), ("add", {"a": "x", "b": 1}, "c2"), ("add", {"a": 1}, "c3")]), text("ok")
    )
    r = calc.agents.run("app:calc", "go")
    assert r.result == "ok"
    msgs = llm.requests[1]["body"]["messages"][-3:]
    assert msgs[0]["content"] == "error: unknown tool 'mul' (tools: add)"
    assert "arguments.a: expected number, got str" in msgs[1]["content"]
    assert "missing required field 'b'" in msgs[2]["content"]


def test_the_step_limit_ends_the_loop_with_a_clear_result(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(*[tool_call("add", {"a": i, "b": 1}) for i in range(3)])
    r = calc.agents.run("app:calc", "loop", max_steps=3)
    assert r.result is None and r.stopped == "max_steps" and r.steps == 3
    assert "stopped after 3 steps without an answer" in (r.error or "")
    assert calc.agents.sessions.get(r.session).status == "stopped"
    with pytest.raises(AgentError, match="max_steps must be a positive integer"):
        calc.agents.run("app:calc", "x", max_steps=0)


def test_a_tool_edited_while_the_agent_runs_takes_effect_at_its_next_step(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("done"))
    calc.agents.set_break("app:calc", "tool")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(calc.agents.run("app:calc", "2+3")))
    t.start()
    deadline = time.monotonic() + 20
    while not calc.agents.paused() and time.monotonic() < deadline:
        time.sleep(0.01)
    [p] = calc.agents.paused()
    assert (p.before, p.step, p.about["tool"], p.about["arguments"]) == ("tool", 1, "add", {"a": 2, "b": 3})
    calc.apply([tool("app.tools:add", "return { main = function(args) return args.a * args.b end }")])
    calc.agents.set_break("app:calc", "off")  # also resumes
    t.join(20)
    assert out[0].result == "done"
    assert llm.requests[1]["body"]["messages"][-1]["content"] == "6"  # the new code ran


def test_a_prompt_edited_between_steps_is_the_next_system_message(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("done"))
    calc.agents.set_break("app:calc", "model")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(calc.agents.run("app:calc", "2+3")))
    t.start()
    for want_step in (1, 2):
        deadline = time.monotonic() + 20
        while not calc.agents.paused() and time.monotonic() < deadline:
            time.sleep(0.01)
        [p] = calc.agents.paused()
        assert p.step == want_step and p.before == "model"
        if want_step == 2:
            calc.apply([agent("app:calc", prompt="You multiply now.", tools=["app.tools:*"])])
        calc.agents.resume("app:calc")
    t.join(20)
    assert out[0].result == "done"
    assert llm.requests[0]["body"]["messages"][0]["content"] == "You add numbers."
    assert llm.requests[1]["body"]["messages"][0]["content"] == "You multiply now."


def test_the_system_message_is_prompt_traits_memory_delegates_in_order(node: Node, llm: ScriptedLLM) -> None:
    node.apply(
        [
            model(llm.url),
            Entry("app:polite", "registry.entry", {"type": "agent.trait", "name": "polite"}, {"prompt": "Be polite."}),
            agent("app:helper", prompt="You help."),
            agent("app:base", prompt="Base rules.", memory=["the sky is blue"]),
            agent(
                "app:main",
                prompt="You are main.",
                inherit=["app:base"],
                traits=["polite"],
                memory=["user likes tea"],
                delegate={"app:helper": {"name": "ask_helper", "rule": "for help"}},
            ),
        ]
    )
    llm.push(text("hi"))
    node.agents.run("app:main", "hello")
    system = llm.requests[0]["body"]["messages"][0]["content"]
    assert system == (
        "You are main.\n\nBase rules.\n\nBe polite.\n\n## Your memory contains:\n- user likes tea\n"
        "- the sky is blue\n\n## You can delegate:\n- ask_helper: for help"
    )
    assert [t["function"]["name"] for t in llm.requests[0]["body"]["tools"]] == ["ask_helper"]


def test_a_delegate_is_another_agents_run(node: Node, llm: ScriptedLLM) -> None:
    node.apply(
        [
            model(llm.url),
            agent("app:helper", prompt="You help."),
            agent("app:main", prompt="Main.", delegate={"app:helper": {"name": "ask_helper", "rule": "r"}}),
        ]
    )
    llm.push(tool_call("ask_helper", {"message": "what is up?"}), text("helper says: up"), text("It is up."))
    r = node.agents.run("app:main", "q")
    assert r.result == "It is up."
    assert llm.requests[1]["body"]["messages"] == [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "what is up?"},
    ]
    assert llm.requests[2]["body"]["messages"][-1]["content"] == "helper says: up"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (agent("app:x", model="nope"), "entry 'app:x': model: unknown model 'nope' (models: gpt, local"),
        (agent("app:x", tools=["app.tools:missing"]), "entry 'app:x': tools: unknown tool 'app.tools:missing'"),
        (agent("app:x", traits=["grumpy"]), "entry 'app:x': traits: unknown trait 'grumpy'"),
        (
            agent("app:x", delegate={"app:ghost": {"name": "g", "rule": "r"}}),
            "entry 'app:x': delegate: unknown agent 'app:ghost'",
        ),
    ],
)
def test_a_broken_agent_is_refused_at_commit(node: Node, llm: ScriptedLLM, entry: Entry, message: str) -> None:
    node.apply([model(llm.url)])
    v = node.entries.version
    with pytest.raises(EntryError) as e:
        node.apply([entry])
    assert message in str(e.value)
    assert node.entries.version == v and node.entries.get("app:x") is None


def test_an_inherit_cycle_is_refused_at_commit(node: Node, llm: ScriptedLLM) -> None:
    node.apply([model(llm.url), agent("app:a", inherit=["app:b"]), agent("app:b")])
    with pytest.raises(
        EntryError,
        match=r"inherit: cycle app:(a -> app:b -> app:a|b -> app:a -> app:b) \(an agent cannot inherit itself\)",
    ):
        node.apply([agent("app:b", inherit=["app:a"])])
    assert "inherit" not in node.entries.get("app:b").data


def test_a_deleted_tool_that_an_agent_needs_is_refused(calc: Node) -> None:
    calc.apply([agent("app:calc", prompt="You add numbers.", tools=["app.tools:add"])])
    with pytest.raises(EntryError, match="entry 'app:calc'"):
        calc.apply([], delete=["app.tools:add"])
    assert calc.entries.get("app.tools:add") is not None


def test_a_missing_api_key_is_a_clear_error_and_is_read_at_call_time(
    node: Node, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WIPPY_TEST_KEY", raising=False)
    node.apply([model(llm.url, api_key_env="WIPPY_TEST_KEY"), agent("app:a")])
    r = node.agents.run("app:a", "hi")
    assert r.result is None and "authentication_error" in (r.error or "") and "WIPPY_TEST_KEY" in (r.error or "")
    assert kinds(node, r.session) == ["user"]  # the conversation is kept
    monkeypatch.setenv("WIPPY_TEST_KEY", "sk-secret-123")
    llm.push(text("hello"))
    r2 = node.agents.run("app:a", None, session=r.session)
    assert r2.result == "hello" and r2.session == r.session
    assert llm.requests[-1]["headers"]["authorization"] == "Bearer sk-secret-123"
    stored = repr(node.entries.get("app:gpt")) + repr(node.agents.sessions.steps(r.session))
    assert "sk-secret" not in stored


def test_a_server_that_is_down_keeps_the_conversation(node: Node) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node.apply([model(f"http://127.0.0.1:{port}/v1"), agent("app:a")])
    r = node.agents.run("app:a", "hi")
    assert "network_error" in (r.error or "") and "is not reachable" in (r.error or "")
    assert node.agents.sessions.get(r.session).status == "failed"
    assert node.agents.sessions.steps(r.session)[0].data == {"text": "hi"}


def test_server_errors_name_their_kind(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(status(401, "bad key"))
    r = calc.agents.run("app:calc", "x")
    assert (r.error or "").startswith("step 1: authentication_error: ")
    with pytest.raises(AgentError, match="unknown agent 'app:nobody'"):
        calc.agents.run("app:nobody", "x")


def test_replay_gives_the_same_steps_without_the_model(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("5"))
    r = calc.agents.run("app:calc", "2+3")
    asked = len(llm.requests)
    calc.apply([tool("app.tools:add", 'return { main = function() error("must not run") end }')])
    rp = calc.agents.replay(r.session)
    assert rp.identical and rp.difference is None and rp.result == "5"
    assert [s["kind"] for s in rp.steps] == ["model", "tool", "model", "answer"]
    assert len(llm.requests) == asked  # no model ran
    assert kinds(calc, r.session) == ["user", "model", "tool", "model", "answer"]  # nothing appended


def test_fork_with_an_edited_tool_result_goes_on_live(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 2, "b": 3}), text("5"))
    r = calc.agents.run("app:calc", "2+3")
    llm.push(text("it is 50"))
    f = calc.agents.fork(r.session, 1, tool_result=50)
    assert f.result == "it is 50" and f.session != r.session
    assert llm.requests[-1]["body"]["messages"][-1]["content"] == "50"
    rec = calc.agents.sessions.get(f.session)
    assert (rec.parent, rec.fork_step) == (r.session, 1)
    assert [c.id for c in calc.agents.sessions.children(r.session)] == [f.session]


def test_fork_with_an_edited_message_and_an_edited_answer(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(text("first"))
    r = calc.agents.run("app:calc", "hello")
    llm.push(text("second"))
    f = calc.agents.fork(r.session, 1, message="hello again")
    assert f.result == "second"
    assert llm.requests[-1]["body"]["messages"][1] == {"role": "user", "content": "hello again"}
    g = calc.agents.fork(r.session, 1, answer="edited answer")
    assert g.result == "edited answer" and kinds(calc, g.session) == ["user", "model", "answer"]
    with pytest.raises(AgentError, match="at most one edit"):
        calc.agents.fork(r.session, 1, message="a", answer="b")
    llm.push(text("asked again"))
    h = calc.agents.fork(r.session, 1)   # no edit: the model is asked again at step 1
    assert h.result == "asked again" and llm.requests[-1]["body"]["messages"][1]["content"] == "hello"
    with pytest.raises(AgentError, match="made no tool call"):
        calc.agents.fork(r.session, 1, tool_result=1)


def test_llm_generate_and_the_prompt_builder_from_lua(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(tool_call("add", {"a": 4, "b": 5}), text("nine"))
    calc.define(
        "app:ask",
        "process.lua",
        modules=["llm", "prompt"],
        source="""return { main = function()
      local p = prompt.new():add_system("sys"):add_user("4+5?")
      local r, err = llm.generate(p, {model = "gpt", tool_ids = {"app.tools:add"}, tool_call = "any"})
      if not r then return "error: " .. err end
      local c = r.tool_calls[1]
      p:add_function_call(c.name, c.arguments, c.id):add_function_result(c.name, "9", c.id)
      local r2 = llm.generate(p, {model = "gpt"})
      return table.concat({c.name, c.arguments.a, r.finish_reason, r2.result, r2.tokens.total_tokens}, ":")
    end }""",
    )
    assert calc.exec("app:ask", timeout=20) == "add:4:tool_call:nine:15"
    first, second = llm.requests[0]["body"], llm.requests[1]["body"]
    assert first["tool_choice"] == "required" and first["tools"][0]["function"]["name"] == "add"
    assert second["messages"][2]["tool_calls"][0]["function"]["name"] == "add"
    assert second["messages"][3]["role"] == "tool" and second["messages"][3]["content"] == "9"


def test_llm_errors_from_lua_are_nil_err_with_the_error_type(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(status(429, "slow down"))
    calc.define(
        "app:ask",
        "process.lua",
        modules=["llm"],
        source="""return { main = function()
      local r, err = llm.generate("hi", {model = "gpt"})
      local r2, err2 = llm.generate("hi", {model = "nope"})
      return tostring(r) .. "|" .. tostring(err:find(llm.ERROR_TYPE.RATE_LIMIT, 1, true) ~= nil) .. "|" .. err2
    end }""",
    )
    out = calc.exec("app:ask", timeout=20)
    assert out.startswith("nil|true|model_error: unknown model 'nope' (models: gpt, local")


def test_an_agent_process_keeps_its_conversation(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(text("Hi Ann."), text("Your name is Ann."))
    calc.define(
        "app:chat",
        "process.lua",
        modules=["agent"],
        source="""return { main = function()
      local a = agent.spawn("app:calc")
      local me = process.pid()
      local out = {}
      for _, t in ipairs({"I am Ann.", "Who am I?"}) do
        process.send(a, "message", {text = t, reply_to = me})
        local m = process.inbox():receive()
        local d = m:payload():data()
        out[#out + 1] = m:topic() .. "=" .. d.text .. "@" .. d.step
      end
      process.send(a, "stop")
      return table.concat(out, "; ")
    end }""",
    )
    assert calc.exec("app:chat", timeout=20) == "answer=Hi Ann.@1; answer=Your name is Ann.@1"
    msgs = llm.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "Hi Ann."


def _policy(name: str, actions: list[str], resources: list[str], effect: str = "allow") -> Entry:
    return Entry(
        f"app.sec:{name}",
        "security.policy",
        {},
        {"groups": ["agents"], "policy": {"actions": actions, "resources": resources, "effect": effect}},
    )


def test_self_defined_tool_refused_then_allowed_by_a_policy(node: Node, llm: ScriptedLLM) -> None:
    node.apply(
        [
            model(llm.url),
            agent("app:builder", prompt="Build tools.", tools=["wippy.agents:define_tool", "app.tools:*"]),
            _policy("run", ["agent.run", "llm.generate", "funcs.call", "registry.*"], ["*"]),
            _policy("no_apply", ["registry.apply"], ["*"], "deny"),
        ]
    )
    node.whoami(actor="alice", groups=["agents"])
    src = "function main(args) return args.a * 2 end"
    define = tool_call(
        "define_tool",
        {
            "id": "app.tools:double",
            "description": "doubles a",
            "source": src,
            "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}},
        },
    )
    llm.push(define, text("I could not."))
    r = node.agents.run("app:builder", "make a doubler")
    assert r.result == "I could not."
    refused = node.agents.sessions.steps(r.session)[2].data["error"]
    assert "permission denied: registry.apply on app.tools:double" in refused and "app.sec:no_apply" in refused
    assert node.entries.get("app.tools:double") is None
    node.whoami(reset=True)
    node.apply(
        [
            _policy("no_apply", ["registry.apply"], ["app.other:*"], "deny"),
            _policy("tools", ["registry.apply"], ["app.tools:*"]),
        ]
    )
    node.whoami(actor="alice", groups=["agents"])
    llm.push(define, tool_call("double", {"a": 21}), text("42"))
    r = node.agents.run("app:builder", "make a doubler")
    node.whoami(reset=True)
    steps = node.agents.sessions.steps(r.session)
    assert r.result == "42", [s.data for s in steps]
    assert node.entries.get("app.tools:double").meta["type"] == "tool"
    reg = next(s for s in steps if s.kind == "registry").data
    version = reg["version"]
    assert reg["author"] == "app:builder" and reg["entries"] == ["app.tools:double"]
    hist = {h.version: h for h in node.entries.history()}
    assert "agent app:builder" in (hist[version].message or "")
    node.apply_version(version - 1)  # %registry rollback
    assert node.entries.get("app.tools:double") is None


def test_agent_run_is_checked_as_the_caller(calc: Node, llm: ScriptedLLM) -> None:
    calc.apply([_policy("gen", ["llm.generate"], ["*"])])
    calc.whoami(actor="bob", groups=["agents"])
    try:
        with pytest.raises(Exception, match=r"permission denied: agent\.run on app:calc for actor bob"):
            calc.agents.run("app:calc", "x")
    finally:
        calc.whoami(reset=True)
    assert llm.requests == []


def test_argument_checks_and_the_constrained_schema() -> None:
    assert check_arguments(ADD_SCHEMA, {"a": 1, "b": 2.5}) is None
    assert check_arguments(ADD_SCHEMA, {"a": True, "b": 1}) == "arguments.a: expected number, got bool true"
    t = ToolSpec("app.tools:add", "add", "adds", ADD_SCHEMA)
    fmt = constrained_tools([t])
    options = fmt["json_schema"]["schema"]["oneOf"]
    assert options[0]["properties"]["tool"] == {"const": "add"} and options[0]["properties"]["arguments"] == ADD_SCHEMA
    assert options[1]["required"] == ["answer"]
    assert len(constrained_tools([t], "any")["json_schema"]["schema"]["oneOf"]) == 1


def test_llm_generate_streams_chunks_to_a_process(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(text("Hello streaming world"))
    calc.define(
        "app:streamer",
        "process.lua",
        modules=["llm"],
        source="""return { main = function()
      local ch = process.listen("llm_stream")
      -- the chunks wait in the listen channel while the call parks; read them after it returns
      local r, err = llm.generate("hi", {model = "gpt", stream = {reply_to = process.pid(), topic = "llm_stream"}})
      local parts, kinds = {}, {}
      while true do
        local c = ch:receive()
        kinds[#kinds + 1] = c.type
        if c.type == "chunk" then parts[#parts + 1] = c.content end
        if c.type == "done" or c.type == "error" then break end
      end
      return table.concat({table.concat(parts), r and r.result or err, kinds[#kinds], tostring(#parts > 1)}, "|")
    end }""",
    )
    assert calc.exec("app:streamer", timeout=20) == "Hello streaming world|Hello streaming world|done|true"
    assert llm.requests[0]["body"]["stream"] is True


def test_an_agent_process_streams_chunks_when_asked(calc: Node, llm: ScriptedLLM) -> None:
    llm.push(text("one two three four"))
    calc.define(
        "app:chat",
        "process.lua",
        modules=["agent"],
        source="""return { main = function()
      local a = agent.spawn("app:calc", {stream = true})
      process.send(a, "message", {text = "count", reply_to = process.pid()})
      local chunks, answer = {}, nil
      while not answer do
        local m = process.inbox():receive()
        if m:topic() == "chunk" then chunks[#chunks + 1] = m:payload():data().text
        elseif m:topic() == "answer" then answer = m:payload():data().text end
      end
      process.send(a, "stop")
      return table.concat(chunks) .. "|" .. answer .. "|" .. tostring(#chunks > 1)
    end }""",
    )
    assert calc.exec("app:chat", timeout=20) == "one two three four|one two three four|true"


def test_a_slow_model_times_out_by_the_entrys_timeout(node: Node, llm: ScriptedLLM) -> None:
    from llm_server import delay

    node.apply([model(llm.url, timeout=0.2), agent("app:a")])
    llm.push(delay(2.0, text("too late")))
    r = node.agents.run("app:a", "hi")
    assert (r.error or "").startswith("step 1: timeout_error: model 'gpt': no answer from ")
    assert kinds(node, r.session) == ["user"]


def test_a_model_without_tool_use_gets_tools_through_a_schema(node: Node, llm: ScriptedLLM) -> None:
    from llm_server import json_reply, raw

    node.apply([model(llm.url, name="small"), tool("app.tools:add", ADD),
                agent("app:a", model="small", prompt="Add.", tools=["app.tools:add"])])
    small = node.entries.get("app:small")
    node.apply([Entry(small.id, small.kind, {**small.meta, "capabilities": ["generate", "structured_output"]},
                      small.data)])
    llm.push(json_reply({"tool": "add", "arguments": {"a": 1, "b": 2}}), json_reply({"answer": "3"}))
    r = node.agents.run("app:a", "1+2")
    assert r.result == "3"
    first = llm.requests[0]["body"]
    assert "tools" not in first and first["response_format"]["type"] == "json_schema"
    assert "You can call these tools:" in first["messages"][0]["content"]
    assert llm.requests[1]["body"]["messages"][-1] == {"role": "user", "content": "Result of add: 3"}
    llm.push(raw('{"choices": [{"message": {"role": "assistant", "content": "not json"}, "finish_reason": "stop"}]}'))
    r = node.agents.run("app:a", "again")
    assert "model_error: model 'small': the reply is not the JSON asked for: 'not json'" in (r.error or "")
