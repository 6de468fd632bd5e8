"""The OpenAI-compatible chat client (runtime/llm_client.py) against a real loopback server (tests/llm_server.py).

What a user sees: the Generation (text, tool calls, tokens, finish reason), the request the server got,
and for each failure the LLMError's kind and a phrase of its message.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from llm_server import ScriptedLLM, delay, json_reply, raw, status, text, tool_call, tool_calls
from wippy.runtime.errors import WippyError
from wippy.runtime.llm_client import ERROR_TYPE, FINISH_REASON, ChatClient, Generation, LLMError, ModelEndpoint

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def client(waits: list[float]) -> Iterator[ChatClient]:
    with ChatClient(sleep=waits.append) as c:
        yield c


def endpoint(llm: ScriptedLLM, **kw: object) -> ModelEndpoint:
    fields: dict[str, object] = {"name": "m1", "base_url": llm.url, "provider_model": "prov-model", **kw}
    return ModelEndpoint(**fields)  # type: ignore[arg-type]


def failure(client: ChatClient, ep: ModelEndpoint, **kw: object) -> LLMError:
    with pytest.raises(LLMError) as info:
        client.chat(ep, USER, **kw)  # type: ignore[arg-type]
    return info.value


# -- answers -------------------------------------------------------------------------------------------------


def test_text_reply_tokens_and_finish_reason(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(text("hello there", prompt_tokens=7, completion_tokens=3))
    gen = client.chat(endpoint(llm), USER)
    assert gen.result == "hello there"
    assert gen.tool_calls == []
    assert (gen.prompt_tokens, gen.completion_tokens, gen.total_tokens) == (7, 3, 10)
    assert gen.finish_reason == FINISH_REASON["STOP"] == "stop"
    assert gen.attempts == 1 and gen.latency_ms > 0
    assert gen.to_dict() == {"result": "hello there", "tool_calls": [],
                             "tokens": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                             "finish_reason": "stop"}
    assert llm.requests[0]["path"] == "/v1/chat/completions"


def test_finish_reasons_mapped(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(text("cut", finish_reason="length"), text("", finish_reason="content_filter"),
             text("x", finish_reason="eos"))
    ep = endpoint(llm)
    assert client.chat(ep, USER).finish_reason == "length"
    filtered = client.chat(ep, USER)   # not an error
    assert filtered.finish_reason == "filtered" and filtered.result == ""
    assert client.chat(ep, USER).finish_reason == "stop"


def test_missing_usage_is_zeros(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(raw(json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"},
                                          "finish_reason": "stop"}]})))
    gen = client.chat(endpoint(llm), USER)
    assert gen.result == "ok" and (gen.prompt_tokens, gen.completion_tokens, gen.total_tokens) == (0, 0, 0)


def test_request_body_shape(llm: ScriptedLLM, client: ChatClient) -> None:
    tools = [{"name": "add", "description": "add two numbers",
              "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "2"}]
    llm.push(text("a"), text("b"), text("c"), json_reply({"x": 1}))
    ep = endpoint(llm, base_url=llm.url + "/")   # a trailing slash is fine
    client.chat(ep, messages, tools=tools, tool_choice="auto", temperature=0.2, max_tokens=50)
    client.chat(ep, USER, tools=tools, tool_choice="any")
    client.chat(ep, USER, tools=tools, tool_choice="add")
    gen = client.chat(ep, USER, response_format=fmt)
    assert json.loads(gen.result or "") == {"x": 1}

    first, second, third, fourth = (r["body"] for r in llm.requests)
    assert first["model"] == "prov-model"
    assert first["messages"] == messages   # as given
    assert first["tools"] == [{"type": "function", "function": tools[0]}]
    assert first["tool_choice"] == "auto"
    assert first["temperature"] == 0.2 and first["max_tokens"] == 50
    assert "stream" not in first and "response_format" not in first
    assert second["tool_choice"] == "required"
    assert third["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert fourth["response_format"] == fmt
    assert "tools" not in fourth and "tool_choice" not in fourth and "temperature" not in fourth
    assert "authorization" not in llm.requests[0]["headers"]


def test_one_tool_call(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(tool_call("add", {"a": 1, "b": 2}, id="call_9"))
    gen = client.chat(endpoint(llm), USER, tools=[{"name": "add", "parameters": {"type": "object"}}])
    assert gen.result is None
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [("call_9", "add", {"a": 1, "b": 2})]
    assert gen.finish_reason == "tool_call"
    assert gen.to_dict()["tool_calls"] == [{"id": "call_9", "name": "add", "arguments": {"a": 1, "b": 2}}]


def test_several_tool_calls(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(tool_calls([("add", {"a": 1}, "c1"), ("mul", '{"x": [1, 2]}', "c2"), ("now", "", "c3")]))
    gen = client.chat(endpoint(llm), USER)
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("c1", "add", {"a": 1}), ("c2", "mul", {"x": [1, 2]}), ("c3", "now", {})]


# -- streaming -----------------------------------------------------------------------------------------------


def test_streaming_text(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(text("the quick brown fox jumps", prompt_tokens=4, completion_tokens=6))
    chunks: list[str] = []
    gen = client.chat(endpoint(llm), USER, on_chunk=chunks.append)
    assert len(chunks) > 1 and "".join(chunks) == gen.result == "the quick brown fox jumps"
    assert (gen.prompt_tokens, gen.completion_tokens, gen.total_tokens) == (4, 6, 10)
    assert gen.finish_reason == "stop"
    body = llm.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streaming_tool_calls(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(tool_calls([("search", {"query": "wippy actors", "limit": 10}, "c1"), ("add", {"a": 2}, "c2")]))
    chunks: list[str] = []
    gen = client.chat(endpoint(llm), USER, on_chunk=chunks.append)
    assert chunks == [] and gen.result is None
    assert [(c.id, c.name, c.arguments) for c in gen.tool_calls] == [
        ("c1", "search", {"query": "wippy actors", "limit": 10}), ("c2", "add", {"a": 2})]
    assert gen.finish_reason == "tool_call" and gen.total_tokens == 15


def test_streaming_request_answered_without_stream(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(raw(json.dumps({"choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}]})))
    chunks: list[str] = []
    gen = client.chat(endpoint(llm), USER, on_chunk=chunks.append)
    assert chunks == ["whole"] and gen.result == "whole"


# -- errors --------------------------------------------------------------------------------------------------


def test_401_is_authentication_error(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(status(401, "Invalid API key"))
    e = failure(client, endpoint(llm))
    assert e.kind == ERROR_TYPE["AUTHENTICATION"] == "authentication_error"
    assert e.status == 401 and not e.retryable and isinstance(e, WippyError)
    assert str(e).startswith("authentication_error: model 'm1': ")
    assert "Invalid API key" in str(e) and llm.url in str(e)
    assert len(llm.requests) == 1   # not retried


def test_404_is_model_error(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(status(404, "model 'prov-model' not found"))
    e = failure(client, endpoint(llm))
    assert e.kind == "model_error" and e.status == 404
    assert "not found" in str(e) and "provider_model 'prov-model'" in str(e)


def test_400_invalid_request(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(status(400, "temperature must be <= 2"))
    e = failure(client, endpoint(llm))
    assert e.kind == "invalid_request" and "temperature must be <= 2" in str(e) and not e.retryable


def test_400_context_length(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(status(400, "This model's maximum context length is 4096 tokens, you requested 5000"))
    e = failure(client, endpoint(llm))
    assert e.kind == "context_length_exceeded"
    assert "maximum context length is 4096" in str(e) and "shorten the messages" in str(e)


def test_429_retried_with_retry_after(llm: ScriptedLLM, client: ChatClient, waits: list[float]) -> None:
    llm.push(status(429, "slow down", headers={"Retry-After": "3"}), status(429, "slow down",
             headers={"Retry-After": "120"}), text("finally"))
    gen = client.chat(endpoint(llm), USER)
    assert gen.result == "finally" and gen.attempts == 3
    assert waits == [3.0, 30.0]   # the header's wait, capped at 30 s
    assert len(llm.requests) == 3


def test_500_retried_then_server_error(llm: ScriptedLLM, client: ChatClient, waits: list[float]) -> None:
    llm.push(*[status(500, "kaboom")] * 4)
    e = failure(client, endpoint(llm, max_retries=2))
    assert e.kind == "server_error" and e.retryable and e.status == 500
    assert e.attempts == 3 and "after 3 attempts" in str(e) and "kaboom" in str(e)
    assert waits == [0.5, 1.0] and len(llm.requests) == 3 and llm.pending == 1


def test_empty_queue_is_server_error(llm: ScriptedLLM, client: ChatClient) -> None:
    e = failure(client, endpoint(llm, max_retries=0))
    assert e.kind == "server_error" and "ScriptedLLM: no reply queued" in str(e)


def test_connection_refused_is_network_error(client: ChatClient, waits: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    e = failure(client, ModelEndpoint(name="m1", base_url=url, provider_model="p", max_retries=1))
    assert e.kind == "network_error" and e.retryable and e.status is None
    assert f"the model server at {url}/chat/completions is not reachable" in str(e) and "is it running?" in str(e)
    assert waits == [0.5] and e.attempts == 2


def test_timeout_is_timeout_error(llm: ScriptedLLM, client: ChatClient, waits: list[float]) -> None:
    llm.push(delay(1.0, text("late")))
    e = failure(client, endpoint(llm, timeout=30.0), timeout=0.2)   # the call's timeout wins
    assert e.kind == "timeout_error" and not e.retryable
    assert "no answer from" in str(e) and "within 0.2 s" in str(e)
    assert waits == [] and len(llm.requests) == 1


def test_non_json_body_is_server_error(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(raw("<html>gateway</html>"), raw(json.dumps({"object": "list", "data": []})))
    ep = endpoint(llm, max_retries=0)
    e = failure(client, ep)
    assert e.kind == "server_error" and "the reply is not a chat completion" in str(e) and "<html>" in str(e)
    assert "no choices" in str(failure(client, ep))


def test_bad_tool_call_json_is_model_error(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(tool_call("add", '{"a": 1,'))
    e = failure(client, endpoint(llm))
    assert e.kind == "model_error" and not e.retryable
    assert "tool call 'add'" in str(e) and "not JSON" in str(e) and '{"a": 1,' in str(e)
    assert len(llm.requests) == 1


# -- the API key ---------------------------------------------------------------------------------------------


def test_missing_key_env(llm: ScriptedLLM, client: ChatClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIPPY_TEST_LLM_KEY", raising=False)
    e = failure(client, endpoint(llm, api_key_env="WIPPY_TEST_LLM_KEY"))
    assert e.kind == "authentication_error"
    assert "environment variable WIPPY_TEST_LLM_KEY is not set" in str(e) and "export it" in str(e)
    assert llm.requests == []   # nothing sent


def test_key_read_at_call_time_and_sent(llm: ScriptedLLM, client: ChatClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = endpoint(llm, api_key_env="WIPPY_TEST_LLM_KEY")
    monkeypatch.setenv("WIPPY_TEST_LLM_KEY", "sk-secret-123")   # after the client and endpoint exist
    llm.push(text("ok"), status(401, "Incorrect API key provided: sk-secret-123"))
    assert client.chat(ep, USER).result == "ok"
    assert llm.requests[0]["headers"]["authorization"] == "Bearer sk-secret-123"
    e = failure(client, ep)
    assert e.kind == "authentication_error" and "$WIPPY_TEST_LLM_KEY" in str(e)
    assert "sk-secret-123" not in str(e) and "sk-secret-123" not in repr(e) and "sk-secret-123" not in repr(ep)


def test_no_key_values(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(text("a"), text("b"))
    for env in ("none", ""):
        client.chat(endpoint(llm, api_key_env=env), USER)
    assert all("authorization" not in r["headers"] for r in llm.requests)


def test_models_listing(llm: ScriptedLLM) -> None:
    import httpx

    with httpx.Client() as c:
        data = c.get(llm.url + "/models").json()
    assert data["data"][0]["id"] == "scripted"


def test_generation_is_frozen(llm: ScriptedLLM, client: ChatClient) -> None:
    llm.push(text("x"))
    gen = client.chat(endpoint(llm), USER)
    assert isinstance(gen, Generation)
    with pytest.raises(AttributeError):
        gen.result = "y"  # type: ignore[misc]


def test_streaming_retried_before_any_chunk(llm: ScriptedLLM, client: ChatClient, waits: list[float]) -> None:
    llm.push(status(503, "warming up"), text("hello world"))
    chunks: list[str] = []
    gen = client.chat(endpoint(llm), USER, on_chunk=chunks.append)
    assert "".join(chunks) == gen.result == "hello world" and gen.attempts == 2 and waits == [0.5]


def test_concurrent_calls_share_one_client(llm: ScriptedLLM, client: ChatClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    llm.push(*[text("same") for _ in range(8)])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.chat(endpoint(llm), USER).result, range(8)))
    assert results == ["same"] * 8 and len(llm.requests) == 8


def test_llm_error_shape() -> None:
    e = LLMError(ERROR_TYPE["RATE_LIMIT"], "model 'm': slow down", status=429)
    assert str(e) == "rate_limit_exceeded: model 'm': slow down"
    assert (e.kind, e.status, e.retryable) == ("rate_limit_exceeded", 429, True)
    assert not LLMError(ERROR_TYPE["TIMEOUT"], "x").retryable
