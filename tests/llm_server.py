"""A scripted OpenAI-compatible chat-completions server for the tests (``import llm_server``).

::

    with ScriptedLLM() as llm:
        llm.push(text("hello"), tool_call("add", {"a": 1}), status(429, headers={"Retry-After": "2"}))
        ep = ModelEndpoint(name="m", base_url=llm.url, provider_model="p")
        ...
        llm.requests[0]["body"]["messages"]

Each ``POST /v1/chat/completions`` takes the next queued reply (an empty queue answers 500 "ScriptedLLM:
no reply queued"); ``GET /v1/models`` lists one model. A request with ``"stream": true`` gets a text or
tool-call reply as Server-Sent Events: the content in a few deltas, tool-call arguments in pieces, a
usage chunk, then ``data: [DONE]``. Every request is recorded in ``requests`` (path, lower-case headers,
parsed JSON body).

Threads: a ThreadingHTTPServer on 127.0.0.1 (a free port) in a daemon thread; ``push`` and
``requests`` are guarded by a lock, so tests read them from their own thread.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "ScriptedLLM", "delay", "json_reply", "raw", "status", "text", "tool_call", "tool_calls"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``kind``: "text", "tools", "status" or "raw"."""

    kind: str
    content: str | None = None
    calls: tuple[tuple[str, str, str], ...] = ()    # (name, arguments as a JSON string, id)
    code: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"
    delay: float = 0.0


def text(content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5, finish_reason: str = "stop") -> Reply:
    """An assistant message with ``content``."""
    return Reply("text", content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 finish_reason=finish_reason)


def tool_calls(calls: list[tuple[str, dict[str, Any] | str, str]]) -> Reply:
    """Several tool calls ``(name, arguments, id)``; a str argument is sent as is (e.g. broken JSON)."""
    return Reply("tools", calls=tuple((n, a if isinstance(a, str) else json.dumps(a), i) for n, a, i in calls),
                 finish_reason="tool_calls")


def tool_call(name: str, arguments: dict[str, Any] | str, *, id: str = "call_1") -> Reply:
    """One tool call."""
    return tool_calls([(name, arguments, id)])


def status(code: int, message: str = "boom", headers: dict[str, str] | None = None) -> Reply:
    """An HTTP error with an OpenAI-style body ``{"error": {"message", "type"}}``."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error"}.get(code, "server_error")
    body = json.dumps({"error": {"message": message, "type": kind, "code": None}})
    return Reply("status", code=code, headers=dict(headers or {}), body=body)


def raw(body: str, code: int = 200) -> Reply:
    """``body`` as is (e.g. not JSON), with ``code``."""
    return Reply("raw", code=code, body=body)


def delay(seconds: float, reply: Reply) -> Reply:
    """``reply`` after waiting ``seconds``."""
    return Reply(reply.kind, reply.content, reply.calls, reply.code, reply.headers, reply.body, reply.prompt_tokens,
                 reply.completion_tokens, reply.finish_reason, seconds)


def json_reply(obj: dict[str, Any]) -> Reply:
    """A text reply whose content is ``json.dumps(obj)`` (structured output)."""
    return text(json.dumps(obj))


def _pieces(s: str, n: int = 3) -> list[str]:
    """``s`` in up to ``n`` non-empty pieces."""
    if not s:
        return []
    size = max(1, -(-len(s) // n))
    return [s[i:i + size] for i in range(0, len(s), size)]


def _usage(r: Reply) -> dict[str, int]:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


def _completion(r: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.content}
    if r.calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                 for n, a, i in r.calls]
    return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": r.finish_reason}], "usage": _usage(r)}


def _chunks(r: Reply, model: str) -> list[dict[str, Any]]:
    base = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in _pieces(r.content or "")]
    for idx, (name, args, cid) in enumerate(r.calls):
        out.append(chunk({"tool_calls": [{"index": idx, "id": cid, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": idx, "function": {"arguments": p}}]}) for p in _pieces(args)]
    out.append(chunk({}, r.finish_reason))
    out.append({**base, "choices": [], "usage": _usage(r)})
    return out


class ScriptedLLM:
    """The server; a context manager. ``url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [
                        {"id": "scripted", "object": "model", "owned_by": "tests"}]}))
                else:
                    self._send(404, json.dumps({"error": {"message": f"no route GET {self.path}"}}))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(data) if data else None
                except ValueError:
                    body = data.decode("utf-8", "replace")
                with owner._lock:
                    owner.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                                          self.headers.items()}, "body": body})
                    reply = owner._queue.popleft() if owner._queue else None
                if self.path.rstrip("/") != "/v1/chat/completions":
                    if reply is not None:   # not consumed: a wrong URL answers 404
                        with owner._lock:
                            owner._queue.appendleft(reply)
                    self._send(404, json.dumps({"error": {"message": f"no route POST {self.path}"}}))
                    return
                if reply is None:
                    self._send(500, json.dumps({"error": {"message": "ScriptedLLM: no reply queued",
                                                          "type": "server_error"}}))
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                model = str(body.get("model", "scripted")) if isinstance(body, dict) else "scripted"
                stream = isinstance(body, dict) and body.get("stream") is True
                try:
                    if reply.kind in ("status", "raw"):
                        ctype = "application/json" if reply.kind == "status" else "text/plain"
                        self._send(reply.code, reply.body, ctype, reply.headers)
                    elif stream:
                        events = "".join(f"data: {json.dumps(c)}\n\n" for c in _chunks(reply, model))
                        self._send(200, events + "data: [DONE]\n\n", "text/event-stream")
                    else:
                        self._send(200, json.dumps(_completion(reply, model)))
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up (a timeout test)

            def _send(self, code: int, body: str, ctype: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-llm", daemon=True)
        self._thread.start()

    def push(self, *replies: Reply) -> None:
        """Queue replies, served in order, one per chat-completions request."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Replies queued and not yet served."""
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
