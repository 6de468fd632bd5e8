"""An OpenAI-compatible chat-completions client: one model call, with retries, streaming and clear errors.

::

    client = ChatClient()
    ep = ModelEndpoint(name="gpt", base_url="https://api.openai.com/v1", provider_model="gpt-4o-mini",
                       api_key_env="OPENAI_API_KEY")
    gen = client.chat(ep, [{"role": "user", "content": "hello"}])
    gen.result, gen.tool_calls, gen.total_tokens, gen.finish_reason

:meth:`ChatClient.chat` POSTs to ``base_url + '/chat/completions'`` (any server that speaks OpenAI's
chat format: OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, ...) and returns a :class:`Generation`. Tools go
out in OpenAI's ``{"type": "function", "function": {...}}`` form and come back as :class:`ToolCall`
with parsed arguments; ``on_chunk`` streams the reply (SSE) and still returns the whole Generation.

Every failure is one :class:`LLMError` whose ``kind`` is a value of :data:`ERROR_TYPE`; its message
names the model and the URL (never the API key) and says what to do. Rate limits, server errors and
unreachable servers are retried (``endpoint.max_retries`` times, 0.5 s, 1 s, 2 s, ... or the server's
``Retry-After``, at most 30 s); a timeout is not, since the next attempt would most likely wait as long.

The API key is read from ``os.environ[endpoint.api_key_env]`` at each call and never stored.

Threads: a call runs, and blocks, on whatever thread calls it (the agents' thread pool), never on a
host thread. One :class:`ChatClient` (one httpx connection pool) may be shared by many threads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .errors import WippyError

__all__ = [
    "ERROR_TYPE", "FINISH_REASON", "ChatClient", "Generation", "LLMError", "ModelEndpoint", "ToolCall", "request_body",
]

ERROR_TYPE: dict[str, str] = {
    "INVALID_REQUEST": "invalid_request",
    "AUTHENTICATION": "authentication_error",
    "RATE_LIMIT": "rate_limit_exceeded",
    "SERVER_ERROR": "server_error",
    "CONTEXT_LENGTH": "context_length_exceeded",
    "CONTENT_FILTER": "content_filter",
    "TIMEOUT": "timeout_error",
    "MODEL_ERROR": "model_error",
    "NETWORK_ERROR": "network_error",
}

FINISH_REASON: dict[str, str] = {
    "STOP": "stop",
    "LENGTH": "length",
    "CONTENT_FILTER": "filtered",
    "TOOL_CALL": "tool_call",
    "ERROR": "error",
}

RETRYABLE: frozenset[str] = frozenset(
    {ERROR_TYPE["RATE_LIMIT"], ERROR_TYPE["SERVER_ERROR"], ERROR_TYPE["NETWORK_ERROR"]})
"""The kinds :meth:`ChatClient.chat` retries."""

MAX_RETRY_AFTER = 30.0
"""The longest wait (seconds) a server's ``Retry-After`` header can ask for."""

_OPENAI_FINISH = {
    "stop": FINISH_REASON["STOP"],
    "length": FINISH_REASON["LENGTH"],
    "tool_calls": FINISH_REASON["TOOL_CALL"],
    "function_call": FINISH_REASON["TOOL_CALL"],
    "content_filter": FINISH_REASON["CONTENT_FILTER"],
}
_CONTEXT_PHRASES = ("context length", "context_length", "maximum context", "context window", "too many tokens")
_NO_KEY = ("", "none")


class LLMError(WippyError):
    """A model call failed. ``kind`` is one of :data:`ERROR_TYPE`'s values; ``str(e)`` is ``"kind: message"``.

    ``status`` is the HTTP status when the server answered, else None; ``retryable`` says whether the
    same call may succeed later (rate limit, server error, network error); ``attempts`` is how many
    requests were made (set on the error :meth:`ChatClient.chat` raises); ``retry_after`` the wait the
    server asked for (seconds), if any.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, attempts: int = 1) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.retryable = kind in RETRYABLE
        self.retry_after = retry_after
        self.attempts = attempts


@dataclass(frozen=True)
class ModelEndpoint:
    """Where and how to call one model. Holds the *name* of the key's environment variable, never the key."""

    name: str
    """The model's name in the registry (``meta.name``), used in messages."""
    base_url: str
    """E.g. ``http://127.0.0.1:8080/v1``; requests go to ``base_url.rstrip('/') + '/chat/completions'``."""
    provider_model: str
    """Sent as ``model`` in the request body."""
    api_key_env: str | None = None
    """An environment variable holding the key, read at call time; None, ``"none"`` or ``""``: no key."""
    timeout: float = 600.0
    """Seconds, per attempt."""
    max_retries: int = 2
    """Retries after the first attempt, for rate_limit / server_error / network_error."""

    @property
    def url(self) -> str:
        """The chat-completions URL."""
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for; ``arguments`` parsed from the JSON string it sent."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Generation:
    """One model answer."""

    result: str | None
    """The assistant's text (None when it only called tools)."""
    tool_calls: list[ToolCall]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    finish_reason: str
    """One of :data:`FINISH_REASON`'s values."""
    latency_ms: float
    """Wall time of the successful attempt."""
    attempts: int
    """1 + the retries made."""

    def to_dict(self) -> dict[str, Any]:
        """The answer as plain data (what the agents' journal stores)."""
        return {
            "result": self.result,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls],
            "tokens": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                       "total_tokens": self.total_tokens},
            "finish_reason": self.finish_reason,
        }


@dataclass
class _Partial:
    """A reply being assembled (from one JSON body or from stream chunks)."""

    content: list[str] = field(default_factory=list)
    has_content: bool = False
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    chunks_sent: bool = False


class ChatClient:
    """Calls OpenAI-compatible chat-completions endpoints (thread-safe; one connection pool).

    ``sleep`` is how retries wait (tests pass one that records the waits); ``transport`` an httpx
    transport to use instead of the network.
    """

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._sleep = sleep
        self._http = httpx.Client(transport=transport, follow_redirects=False)

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (calls made afterwards fail)."""
        self._http.close()

    def chat(self, endpoint: ModelEndpoint, messages: list[dict[str, Any]], *,
             tools: list[dict[str, Any]] | None = None,
             tool_choice: str | None = None,
             response_format: dict[str, Any] | None = None,
             temperature: float | None = None, max_tokens: int | None = None,
             timeout: float | None = None,
             on_chunk: Callable[[str], None] | None = None) -> Generation:
        """One chat completion; :class:`LLMError` when it fails after the retries.

        ``messages`` are OpenAI-format dicts, sent as given. ``tools``: ``{"name", "description",
        "parameters"}`` each. ``tool_choice``: ``"auto"``, ``"none"``, ``"any"`` (must call a tool) or a
        tool's name. ``response_format`` is passed through (e.g. ``{"type": "json_schema", ...}``).
        ``timeout`` overrides ``endpoint.timeout``. With ``on_chunk`` the reply is streamed and
        ``on_chunk(text)`` is called for each piece of content, on the calling thread.
        """
        body = request_body(endpoint, messages, tools, tool_choice, response_format, temperature, max_tokens,
                             stream=on_chunk is not None)
        headers = {"Accept": "text/event-stream" if on_chunk is not None else "application/json"}
        key = _api_key(endpoint)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        limit = endpoint.timeout if timeout is None else timeout
        attempt = 0
        while True:
            attempt += 1
            start = time.perf_counter()
            partial = _Partial()
            try:
                self._attempt(endpoint, body, headers, limit, key, partial, on_chunk)
                gen = _generation(endpoint, partial, (time.perf_counter() - start) * 1000, attempt)
            except LLMError as e:
                # a stream that already delivered chunks is not repeated: on_chunk would see them twice
                if not e.retryable or attempt > endpoint.max_retries or partial.chunks_sent:
                    if attempt > 1:
                        raise LLMError(e.kind, f"{e.message} (after {attempt} attempts)", status=e.status,
                                       retry_after=e.retry_after, attempts=attempt) from None
                    raise
                wait = e.retry_after if e.retry_after is not None else 0.5 * 2 ** (attempt - 1)
                self._sleep(wait)
                continue
            return gen

    def _attempt(self, ep: ModelEndpoint, body: dict[str, Any], headers: dict[str, str], limit: float,
                 key: str | None, partial: _Partial, on_chunk: Callable[[str], None] | None) -> None:
        url = ep.url
        try:
            with self._http.stream("POST", url, json=body, headers=headers, timeout=httpx.Timeout(limit)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _status_error(ep, r, key)
                ctype = r.headers.get("content-type", "")
                if on_chunk is not None and "text/event-stream" in ctype:
                    _read_stream(ep, r.iter_lines(), partial, on_chunk)
                    return
                r.read()
                _read_body(ep, r, partial)
                if on_chunk is not None and partial.content:
                    # the server ignored "stream": the whole text is one chunk
                    partial.chunks_sent = True
                    on_chunk("".join(partial.content))
        except httpx.TimeoutException:
            raise LLMError(ERROR_TYPE["TIMEOUT"],
                           f"model '{ep.name}': no answer from {url} within {limit:g} s; raise the timeout "
                           "(the call's timeout or the model entry's) or check that the server is not overloaded",
                           ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise LLMError(ERROR_TYPE["INVALID_REQUEST"],
                           f"model '{ep.name}': base_url {ep.base_url!r} is not a usable http(s) URL ({exc}); "
                           "fix the model entry's base_url") from None
        except httpx.TransportError as exc:
            detail = _scrub(str(exc) or type(exc).__name__, key)
            raise LLMError(ERROR_TYPE["NETWORK_ERROR"],
                           f"model '{ep.name}': the model server at {url} is not reachable ({detail}); "
                           "is it running?") from None


def _api_key(ep: ModelEndpoint) -> str | None:
    env = ep.api_key_env
    if env is None or env.strip().lower() in _NO_KEY:
        return None
    key = os.environ.get(env)
    if not key:
        raise LLMError(ERROR_TYPE["AUTHENTICATION"],
                       f"model '{ep.name}': environment variable {env} is not set; export it before the call "
                       "(the key is read at call time, never stored)")
    return key


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def request_body(ep: ModelEndpoint, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  tool_choice: str | None, response_format: dict[str, Any] | None, temperature: float | None,
                  max_tokens: int | None, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a chat-completions request (what :meth:`ChatClient.chat` sends)."""
    body: dict[str, Any] = {"model": ep.provider_model, "messages": messages}
    if tools:
        body["tools"] = [_openai_tool(t) for t in tools]
    if tool_choice is not None:
        if tool_choice in ("auto", "none", "required"):
            body["tool_choice"] = tool_choice
        elif tool_choice == "any":
            body["tool_choice"] = "required"
        else:
            body["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
    if response_format is not None:
        body["response_format"] = response_format
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _openai_tool(t: dict[str, Any]) -> dict[str, Any]:
    if t.get("type") == "function" and isinstance(t.get("function"), dict):
        return t   # already in OpenAI's form
    fn: dict[str, Any] = {"name": t["name"]}
    if t.get("description"):
        fn["description"] = t["description"]
    fn["parameters"] = t.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def _server_message(r: httpx.Response) -> tuple[str, str]:
    """The server's error message and code (``error.message`` / ``error.code`` if JSON, else the text)."""
    text = r.text
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200] or "(empty body)", ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or json.dumps(err)[:200]
            return str(msg), str(err.get("code") or err.get("type") or "")
        if isinstance(err, str):
            return err, ""
    return text.strip()[:200], ""


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after")
    if value is None:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None   # an HTTP date: use the usual backoff
    if wait != wait:   # NaN
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


def _status_error(ep: ModelEndpoint, r: httpx.Response, key: str | None) -> LLMError:
    code = r.status_code
    msg, err_code = _server_message(r)
    msg = _scrub(msg, key)
    where = f"model '{ep.name}': {ep.url} answered HTTP {code} ({msg})"
    low = f"{msg} {err_code}".lower()
    if 400 <= code < 500 and code not in (401, 403, 404, 429) and any(p in low for p in _CONTEXT_PHRASES):
        return LLMError(ERROR_TYPE["CONTEXT_LENGTH"],
                        f"{where}: the conversation does not fit the model's context; shorten the messages "
                        "or lower max_tokens", status=code)
    if code in (401, 403):
        fix = (f"check the key in ${ep.api_key_env}" if ep.api_key_env and ep.api_key_env.lower() not in _NO_KEY
               else "the server wants an API key: set the model entry's api_key_env")
        return LLMError(ERROR_TYPE["AUTHENTICATION"], f"{where}: the key was refused; {fix}", status=code)
    if code == 404:
        return LLMError(ERROR_TYPE["MODEL_ERROR"],
                        f"{where}: check base_url (it usually ends in /v1) and provider_model "
                        f"'{ep.provider_model}'", status=code)
    if code == 429:
        return LLMError(ERROR_TYPE["RATE_LIMIT"], f"{where}: rate limited; wait and retry, or lower the call rate",
                        status=code, retry_after=_retry_after(r))
    if code >= 500:
        return LLMError(ERROR_TYPE["SERVER_ERROR"], f"{where}: the model server failed; retry later or check "
                        "its log", status=code, retry_after=_retry_after(r))
    return LLMError(ERROR_TYPE["INVALID_REQUEST"], f"{where}: the request was rejected; check the messages, "
                    "tools and parameters", status=code)


def _not_completion(ep: ModelEndpoint, detail: str) -> LLMError:
    return LLMError(ERROR_TYPE["SERVER_ERROR"],
                    f"model '{ep.name}': the reply is not a chat completion ({detail}); is {ep.url} an "
                    "OpenAI-compatible endpoint?")


def _read_body(ep: ModelEndpoint, r: httpx.Response, partial: _Partial) -> None:
    text = r.text
    try:
        data = json.loads(text)
    except ValueError:
        raise _not_completion(ep, f"not JSON: {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise _not_completion(ep, f"not an object: {text[:200]!r}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if isinstance(data.get("error"), dict | str):
            raise LLMError(ERROR_TYPE["SERVER_ERROR"], f"model '{ep.name}': {ep.url} answered an error: "
                           f"{_server_message(r)[0]}; retry later or check the server's log", status=r.status_code)
        raise _not_completion(ep, f"no choices: {text[:200]!r}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _not_completion(ep, f"choice without a message: {text[:200]!r}")
    content = message.get("content")
    if isinstance(content, list):   # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if content is not None:
        partial.has_content = True
        partial.content.append(str(content))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for i, c in enumerate(calls):
            if isinstance(c, dict):
                fn = _obj(c.get("function"))
                partial.calls[i] = {"id": c.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}
    elif isinstance(message.get("function_call"), dict):
        fc = message["function_call"]
        partial.calls[0] = {"id": None, "name": fc.get("name"), "arguments": fc.get("arguments")}
    partial.finish = choice.get("finish_reason")
    if isinstance(data.get("usage"), dict):
        partial.usage = data["usage"]


def _read_stream(ep: ModelEndpoint, lines: Iterator[str], partial: _Partial, on_chunk: Callable[[str], None]) -> None:
    for line in lines:
        if not line.startswith("data:"):
            continue   # blank separators, comments (":"), event:/id: fields
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise _not_completion(ep, f"a stream event is not JSON: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise _not_completion(ep, f"a stream event is not an object: {payload[:200]!r}")
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise LLMError(ERROR_TYPE["SERVER_ERROR"], f"model '{ep.name}': {ep.url} failed while streaming "
                           f"({str(msg)[:200]}); retry later or check the server's log")
        if isinstance(chunk.get("usage"), dict):
            partial.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                partial.finish = choice["finish_reason"]
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str) and text:
                partial.has_content = True
                partial.content.append(text)
                partial.chunks_sent = True
                on_chunk(text)
            deltas = delta.get("tool_calls")
            if isinstance(delta.get("function_call"), dict):
                deltas = [{"index": 0, "function": delta["function_call"]}]
            for d in deltas or []:
                if not isinstance(d, dict):
                    continue
                slot = partial.calls.setdefault(int(d.get("index", 0)), {"id": None, "name": None, "arguments": ""})
                if d.get("id"):
                    slot["id"] = d["id"]
                fn = _obj(d.get("function"))
                if fn.get("name"):
                    slot["name"] = fn["name"]
                if fn.get("arguments"):
                    slot["arguments"] = (slot["arguments"] or "") + str(fn["arguments"])
    # the stream ended without [DONE]: keep what came (servers differ), unless nothing did
    if not partial.has_content and not partial.calls and partial.finish is None:
        raise _not_completion(ep, "the stream ended before any chunk")


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _tool_call(ep: ModelEndpoint, i: int, c: dict[str, Any]) -> ToolCall:
    name = str(c.get("name") or "")
    if not name:
        raise LLMError(ERROR_TYPE["MODEL_ERROR"], f"model '{ep.name}': tool call #{i + 1} has no function name; "
                       "retry, or use a model that supports tool calls")
    raw = c.get("arguments")
    if isinstance(raw, dict):
        args: Any = raw
    elif raw is None or (isinstance(raw, str) and not raw.strip()):
        args = {}
    else:
        try:
            args = json.loads(str(raw))
        except ValueError:
            raise LLMError(ERROR_TYPE["MODEL_ERROR"],
                           f"model '{ep.name}': the arguments of the tool call '{name}' are not JSON: "
                           f"{str(raw)[:200]!r}; retry, or use a model that calls tools reliably") from None
    if not isinstance(args, dict):
        raise LLMError(ERROR_TYPE["MODEL_ERROR"],
                       f"model '{ep.name}': the arguments of the tool call '{name}' are not a JSON object: "
                       f"{str(raw)[:200]!r}; retry, or use a model that calls tools reliably")
    return ToolCall(id=str(c.get("id") or f"call_{i + 1}"), name=name, arguments=args)


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def _generation(ep: ModelEndpoint, p: _Partial, latency_ms: float, attempts: int) -> Generation:
    calls = [_tool_call(ep, i, p.calls[k]) for i, k in enumerate(sorted(p.calls))]
    text = "".join(p.content) if p.has_content else None
    if calls and not text:
        text = None
    finish = _OPENAI_FINISH.get(str(p.finish), FINISH_REASON["STOP"])
    prompt, completion = _int(p.usage.get("prompt_tokens")), _int(p.usage.get("completion_tokens"))
    total = _int(p.usage.get("total_tokens")) or prompt + completion
    return Generation(result=text, tool_calls=calls, prompt_tokens=prompt, completion_tokens=completion,
                      total_tokens=total, finish_reason=finish, latency_ms=latency_ms, attempts=attempts)
