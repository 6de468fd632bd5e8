"""Agents (``node.agents``): models, the agent loop, sessions you can replay and fork, breakpoints.

API.md "Agents". The pieces:

* **Models.** ``llm.model`` entries name an OpenAI-compatible server (``base_url``, ``provider_model``,
  ``api_key_env``: the key is read from the environment at call time, never stored); ``local`` is the
  node's own small model (runtime/llm_local.py), unless an entry takes that name. A model without the
  ``tool_use`` capability (``local`` has ``generate`` and ``structured_output``) gets tools through
  schema-constrained output: a JSON schema whose ``oneOf`` is each tool with its argument schema, or a
  final answer, so every reply parses (``constrained_tools``).
* **The loop** (:meth:`Agents.run`): resolve the agent (runtime/agent_spec.py) at every step, so an
  entry edited while an agent runs takes effect at its next step; ask the model; run each tool call
  as ``funcs.call`` in the caller's actor and scope, in a short-lived process of its own (a crash is an
  error result the model sees, and the loop goes on); a delegate is another agent's run; stop at an
  answer or after ``max_steps`` (a clear result, ``stopped = "max_steps"``).
* **Sessions** (runtime/agent_sessions.py): every step journaled. :meth:`replay` runs the loop again
  with the recorded model answers and tool results (no model, no tool runs) and compares the steps;
  :meth:`fork` copies a session up to a step, applies one edit (a user message, a model answer or a
  tool result) and goes on live.
* **Breakpoints**: ``set_break(agent, "model" | "tool" | "off")`` pauses every run of that agent before
  each model or tool call until :meth:`resume`; :meth:`paused` shows what is about to be sent.

Threads: the loop runs on the caller's thread (Python) or on this part's worker pool (a Lua process's
``agent.run`` parks its process meanwhile); tools run on a host through the owner's port. Everything
here is thread-safe.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .agent_sessions import SessionStep, SessionStore
from .agent_spec import (
    AGENT_TYPE,
    BUILTIN_TOOLS,
    LOCAL_MODEL,
    AgentSpec,
    ToolSpec,
    check_agents,
    find_model,
    model_names,
    resolve_agent,
    tool_spec,
)
from .entries import Entry
from .errors import EntryError, LuaError, SecurityError, WippyError
from .llm_client import ERROR_TYPE, FINISH_REASON, ChatClient, Generation, LLMError, ModelEndpoint, ToolCall
from .llm_local import LocalModel
from .registry import ChangeSet

__all__ = ["AgentError", "AgentResult", "Agents", "AgentsOwner", "Paused", "ReplayResult", "constrained_tools"]

WORKERS = 8
DEFAULT_MAX_STEPS = 8
_CAPS_DEFAULT = ("generate", "tool_use", "structured_output")
_LOCAL_CAPS = ("generate", "structured_output")


class AgentError(WippyError):
    """An agent call that cannot go on: an unknown agent or model, a refused call, a model error."""


class AgentsOwner(Protocol):
    """What the agents need from the node (implemented by the node's parts adapter)."""

    @property
    def data_dir(self) -> Path | None: ...

    def entry(self, entry_id: str) -> Entry | None: ...

    def all_entries(self) -> list[Entry]: ...

    def require_as(self, ctx: int, action: str, resource: str, pid: str | None) -> None:
        """Raise SecurityError when ``ctx`` may not do ``action`` on ``resource`` (nothing when open)."""
        ...

    def actor_name(self, ctx: int) -> str: ...

    def caller_context(self) -> int:
        """The notebook's context (calls from Python)."""
        ...

    def call_tool(self, ctx: int, entry_id: str, args: dict[str, Any], timeout: float) -> Any:
        """Run the function entry in a short-lived process with ``ctx``; LuaError if it raised."""
        ...

    def apply_as(self, ctx: int, entries: list[Entry], message: str) -> int:
        """Commit ``entries`` as ``ctx`` (``registry.apply`` checked per entry); the new version."""
        ...

    def reply(self, pid: str, token: int, value: Any) -> None: ...

    def deliver(self, pid: str, topic: str, payload: Any) -> None:
        """A message from the runtime to a process (stream chunks); a send to an ended process is dropped."""
        ...


@dataclass(frozen=True)
class AgentResult:
    """What ``agent.run`` returns: the answer (None when stopped), steps taken, tokens, the session."""

    result: str | None
    steps: int
    tokens: dict[str, int]
    session: str
    stopped: str | None = None  # "max_steps" when the loop hit its limit
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "result": self.result,
            "steps": self.steps,
            "tokens": dict(self.tokens),
            "session": self.session,
        }
        if self.stopped:
            d["stopped"] = self.stopped
        if self.error:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class ReplayResult:
    session: str
    identical: bool
    steps: list[dict[str, Any]]  # the steps the replay made (kind, step, summary fields)
    recorded: list[dict[str, Any]]  # the session's steps, same shape
    result: str | None
    elapsed_ms: float
    difference: str | None = None


@dataclass
class Paused:
    """A run waiting at a breakpoint: before its ``before`` (model | tool) call of ``step``."""

    agent: str
    session: str
    step: int
    before: str
    about: dict[str, Any]
    event: threading.Event = field(default_factory=threading.Event, repr=False)


# ---------------------------------------------------------------------------------------------- messages
def to_openai(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the ``prompt`` module builds them (function_call / function_result roles) in
    OpenAI's chat format (assistant ``tool_calls`` and ``tool`` messages)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = str(m.get("role", "user"))
        if role == "function_call":
            args = m.get("arguments")
            call = {
                "id": str(m.get("id") or f"call_{len(out)}"),
                "type": "function",
                "function": {
                    "name": str(m.get("name")),
                    "arguments": args if isinstance(args, str) else json.dumps(args or {}),
                },
            }
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None:
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif role == "function_result":
            content = m.get("content", m.get("result"))
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(m.get("id") or ""),
                    "name": str(m.get("name") or ""),
                    "content": content if isinstance(content, str) else json.dumps(content),
                }
            )
        else:
            if role == "developer":
                role = "system"
            out.append({"role": role, "content": "" if m.get("content") is None else str(m.get("content"))})
    return out


def _constrained_messages(
    messages: list[dict[str, Any]], tools: list[ToolSpec], choice: str | None
) -> list[dict[str, Any]]:
    """For a model answering in JSON: tool calls and results as plain turns it can read."""
    lines = [f"- {t.name}: {t.description} Arguments (JSON schema): {json.dumps(t.schema)}" for t in tools]
    how = (
        'Reply with one JSON object: {"tool": NAME, "arguments": {...}} to call a tool, or {"answer": TEXT} to answer.'
    )
    if choice == "any":
        how = 'Reply with one JSON object: {"tool": NAME, "arguments": {...}} to call a tool.'
    guide = "You can call these tools:\n" + "\n".join(lines) + "\n" + how
    out: list[dict[str, Any]] = []
    placed = False
    for m in messages:
        if m["role"] == "system" and not placed:
            out.append({"role": "system", "content": (m.get("content") or "") + "\n\n" + guide})
            placed = True
        elif m["role"] == "assistant" and m.get("tool_calls"):
            for c in m["tool_calls"]:
                out.append(
                    {
                        "role": "assistant",
                        "content": json.dumps(
                            {"tool": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"] or "{}")}
                        ),
                    }
                )
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"Result of {m.get('name') or 'the tool'}: {m.get('content')}"})
        else:
            out.append(dict(m))
    if not placed:
        out.insert(0, {"role": "system", "content": guide})
    return out


def constrained_tools(tools: list[ToolSpec], choice: str | None = None) -> dict[str, Any]:
    """The ``response_format`` offering each tool with its arguments (``oneOf``), or an answer."""
    options: list[dict[str, Any]] = []
    for t in tools:
        if choice not in (None, "auto", "any") and t.name != choice:
            continue
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": dict(t.schema)},
                "required": ["tool", "arguments"],
            }
        )
    if choice in (None, "auto") or not options:
        options.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
    return {"type": "json_schema", "json_schema": {"name": "step", "schema": {"oneOf": options}}}


def _parse_constrained(gen: Generation, model: str) -> Generation:
    text = (gen.result or "").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        if gen.finish_reason == FINISH_REASON["LENGTH"]:
            raise LLMError(
                ERROR_TYPE["MODEL_ERROR"],
                f"model '{model}': the reply was cut at max_tokens ({gen.completion_tokens} tokens) before its "
                f"JSON ended: raise the agent's max_tokens (it began {text[:120]!r})",
            ) from None
        raise LLMError(
            ERROR_TYPE["MODEL_ERROR"], f"model '{model}': the reply is not the JSON asked for: {text[:200]!r}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("tool"), str):
        args = obj.get("arguments")
        call = ToolCall(
            id=f"call_{zlib.crc32(text.encode()):08x}",
            name=obj["tool"],
            arguments=args if isinstance(args, dict) else {},
        )
        return replace(gen, result=None, tool_calls=[call], finish_reason=FINISH_REASON["TOOL_CALL"])
    if isinstance(obj, dict) and "answer" in obj:
        return replace(gen, result=str(obj["answer"]), tool_calls=[], finish_reason=FINISH_REASON["STOP"])
    raise LLMError(
        ERROR_TYPE["MODEL_ERROR"], f"model '{model}': the reply is neither a tool call nor an answer: {text[:200]!r}"
    )


# ---------------------------------------------------------------------------------------------- schemas
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def check_arguments(schema: Mapping[str, Any], value: Any, path: str = "arguments") -> str | None:
    """The first way ``value`` fails ``schema`` (type, required, properties, items, enum), or None."""
    typ = schema.get("type")
    if isinstance(typ, str) and typ in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
        if typ == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            return f"{path}: expected {typ}, got {type(value).__name__} {json.dumps(value)[:60]}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: must be one of {schema['enum']}"
    if isinstance(value, dict):
        for req in schema.get("required", []) or []:
            if req not in value:
                return f"{path}: missing required field '{req}'"
        props = schema.get("properties") or {}
        for k, v in value.items():
            sub = props.get(k)
            if isinstance(sub, Mapping):
                err = check_arguments(sub, v, f"{path}.{k}")
                if err:
                    return err
            elif schema.get("additionalProperties") is False:
                return f"{path}: unexpected field '{k}'"
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, v in enumerate(value):
            err = check_arguments(schema["items"], v, f"{path}[{i}]")
            if err:
                return err
    return None


# ---------------------------------------------------------------------------------------------- the part
class _Recorded:
    """The answers of a recorded session, handed out in order during a replay."""

    def __init__(self, steps: list[SessionStep]) -> None:
        self.models = [s for s in steps if s.kind == "model"]
        self.tools = [s for s in steps if s.kind == "tool"]

    def model(self, step: int) -> Generation:
        if not self.models:
            raise AgentError(f"replay: the session has no recorded model answer for step {step}")
        d = self.models.pop(0).data["response"]
        calls = [
            ToolCall(str(c["id"]), str(c["name"]), dict(c.get("arguments") or {})) for c in d.get("tool_calls") or []
        ]
        tok = d.get("tokens") or {}
        return Generation(
            result=d.get("result"),
            tool_calls=calls,
            prompt_tokens=int(tok.get("prompt_tokens", 0)),
            completion_tokens=int(tok.get("completion_tokens", 0)),
            total_tokens=int(tok.get("total_tokens", 0)),
            finish_reason=str(d.get("finish_reason")),
            latency_ms=0.0,
            attempts=0,
        )

    def tool(self, name: str) -> dict[str, Any]:
        if not self.tools:
            raise AgentError(f"replay: the session has no recorded result for the tool call '{name}'")
        return dict(self.tools.pop(0).data)


class Agents:
    """The node's agents (``node.agents``). Thread-safe."""

    def __init__(self, owner: AgentsOwner, *, client: ChatClient | None = None) -> None:
        self._owner = owner
        self.client = client or ChatClient()
        self.local = LocalModel()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._sessions: SessionStore | None = None
        self._breaks: dict[str, str] = {}
        self._paused: dict[int, Paused] = {}
        self._pause_ids = itertools.count(1)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._tokens = itertools.count(1)

    # ------------------------------------------------------------------ store and listeners
    @property
    def sessions(self) -> SessionStore:
        with self._lock:
            if self._sessions is None:
                d = self._owner.data_dir
                self._sessions = SessionStore(d / "agents.sqlite" if d is not None else None)
            return self._sessions

    def subscribe(self, fn: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(session, row)`` for each journaled step (any thread); returns the unsubscribe."""
        with self._lock:
            self._listeners.append(fn)

        def off() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return off

    def _journal(self, session: str, step: int, kind: str, data: dict[str, Any], replaying: bool) -> None:
        if not replaying:
            self.sessions.append(session, step, kind, data)
        row = {"step": step, "kind": kind, **data}
        for fn in list(self._listeners):
            with contextlib.suppress(Exception):  # a view's fault never stops an agent
                fn(session, row)

    def validator(self, cs: ChangeSet) -> None:
        """Commit-time check of agent entries (unknown model, tool, trait, delegate; inherit cycles)."""
        check_agents(cs.after, [c.id for c in cs.changes])

    def close(self) -> None:
        """The node's stop: the local model ends, the pool and the store close."""
        for p in list(self._paused.values()):
            p.event.set()
        self.local.stop()
        with self._lock:
            pool, self._pool = self._pool, None
            store, self._sessions = self._sessions, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if store is not None:
            store.close()
        self.client.close()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="wippy-agent")
            return self._pool

    # ------------------------------------------------------------------ models
    def models(self) -> list[str]:
        return model_names(self._owner.all_entries())

    def endpoint(self, model: str) -> tuple[ModelEndpoint, tuple[str, ...]]:
        """Where ``model`` answers and its capabilities; LLMError (model_error) for an unknown one."""
        e = find_model(model, self._owner.all_entries())
        if e is None:
            if model == LOCAL_MODEL:
                return self.local.endpoint(), _LOCAL_CAPS
            raise LLMError(
                ERROR_TYPE["MODEL_ERROR"],
                f"unknown model '{model}' (models: {', '.join(self.models())}; "
                "define a registry.entry with meta.type: llm.model, meta.name, base_url, provider_model)",
            )
        base = e.data.get("base_url")
        if not isinstance(base, str) or not base:
            raise LLMError(ERROR_TYPE["MODEL_ERROR"], f"model '{model}' (entry '{e.id}'): base_url is missing")
        caps = e.meta.get("capabilities") or _CAPS_DEFAULT
        key_env = e.data.get("api_key_env")
        ep = ModelEndpoint(
            name=model,
            base_url=base,
            provider_model=str(e.data.get("provider_model") or model),
            api_key_env=str(key_env) if key_env else None,
            timeout=float(e.data.get("timeout", 600.0)),
            max_retries=int(e.data.get("max_retries", 2)),
        )
        return ep, tuple(str(c) for c in caps)

    def generate(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[ToolSpec] | None = None,
        tool_choice: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        on_chunk: Callable[[str], None] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Generation:
        """One model call with OpenAI-format ``messages``; tools natively or schema-constrained."""
        ep, caps = self.endpoint(model)
        if tools and "tool_use" not in caps:
            if "structured_output" not in caps:
                raise LLMError(
                    ERROR_TYPE["MODEL_ERROR"],
                    f"model '{model}' cannot use tools (capabilities: "
                    f"{', '.join(caps)}); give it tool_use or structured_output",
                )
            msgs = _constrained_messages(messages, tools, tool_choice)
            gen = self.client.chat(
                ep,
                msgs,
                response_format=constrained_tools(tools, tool_choice),
                temperature=temperature,
                max_tokens=max_tokens or 256,
                timeout=timeout,
            )
            return _parse_constrained(gen, model)
        return self.client.chat(
            ep,
            messages,
            tools=[t.to_openai() for t in tools] if tools else None,
            tool_choice=tool_choice,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            on_chunk=on_chunk,
            response_format=response_format,
        )

    def structured_output(
        self,
        model: str,
        schema: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, Generation]:
        fmt = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
        gen = self.generate(
            model, messages, temperature=temperature, max_tokens=max_tokens or 512, timeout=timeout, response_format=fmt
        )
        try:
            return json.loads(gen.result or ""), gen
        except ValueError:
            raise LLMError(
                ERROR_TYPE["MODEL_ERROR"],
                f"model '{model}': the structured reply is not JSON: {(gen.result or '')[:200]!r}",
            ) from None

    # ------------------------------------------------------------------ breakpoints
    def set_break(self, agent_id: str, before: str) -> None:
        """Pause runs of ``agent_id`` before each ``model`` or ``tool`` call; ``off`` clears it."""
        if before not in ("model", "tool", "off"):
            raise AgentError(f"break: before= must be model, tool or off, got {before!r}")
        with self._lock:
            if before == "off":
                self._breaks.pop(agent_id, None)
            else:
                self._breaks[agent_id] = before
        if before == "off":
            self.resume(agent_id)

    def breaks(self) -> dict[str, str]:
        with self._lock:
            return dict(self._breaks)

    def paused(self) -> list[Paused]:
        with self._lock:
            return list(self._paused.values())

    def resume(self, agent_id: str | None = None) -> int:
        """Let the paused runs (of ``agent_id``, or all) go on; how many were waiting."""
        with self._lock:
            chosen = [(k, p) for k, p in self._paused.items() if agent_id is None or p.agent == agent_id]
            for k, _ in chosen:
                del self._paused[k]
        for _, p in chosen:
            p.event.set()
        return len(chosen)

    def _maybe_pause(self, agent_id: str, session: str, step: int, before: str, about: dict[str, Any]) -> bool:
        with self._lock:
            if self._breaks.get(agent_id) != before:
                return False
            p = Paused(agent_id, session, step, before, about)
            self._paused[next(self._pause_ids)] = p
        for fn in list(self._listeners):
            with contextlib.suppress(Exception):
                fn(session, {"step": step, "kind": "paused", "before": before, **about})
        p.event.wait()
        return True

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        agent_id: str,
        input: str | None,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        session: str | None = None,
        ctx: int | None = None,
        pid: str | None = None,
        on_chunk: Callable[[str], None] | None = None,
    ) -> AgentResult:
        """Run ``agent_id`` on ``input`` until an answer or ``max_steps`` model steps (any thread).

        ``session`` continues an earlier session (its conversation; a new one is made otherwise).
        ``ctx`` is the caller's security context (the notebook's by default): ``agent.run`` on the agent,
        ``llm.generate`` on the model and ``funcs.call`` on each tool are checked as it.
        """
        if not isinstance(max_steps, int) or max_steps < 1:
            raise AgentError(f"agent.run: max_steps must be a positive integer, got {max_steps!r}")
        ctx = self._owner.caller_context() if ctx is None else ctx
        self._owner.require_as(ctx, "agent.run", agent_id, pid)
        spec = self._resolve(agent_id)
        store = self.sessions
        history: list[dict[str, Any]] = []
        first_step = 1
        if session is not None and store.exists(session):
            rec = store.get(session)
            if rec.agent != agent_id:
                raise AgentError(f"agent.run: session '{session}' belongs to agent '{rec.agent}', not '{agent_id}'")
            history = self._conversation(store.steps(session))
            first_step = rec.steps + 1
            store.set_status(session, "running")
        else:
            session = store.create(agent_id, session_id=session, actor=self._owner.actor_name(ctx))
        if input is not None:
            history.append({"role": "user", "content": str(input)})
            self._journal(session, first_step, "user", {"text": str(input)}, False)
        del spec
        return self._loop(agent_id, session, history, first_step, max_steps, ctx, pid, on_chunk, None)

    def _resolve(self, agent_id: str) -> AgentSpec:
        try:
            return resolve_agent(agent_id, self._owner.entry, self._owner.all_entries())
        except EntryError as exc:
            raise AgentError(str(exc)) from None

    @staticmethod
    def _conversation(steps: list[SessionStep]) -> list[dict[str, Any]]:
        """The conversation (without the system message) that a session's steps make."""
        out: list[dict[str, Any]] = []
        for s in steps:
            if s.kind == "user":
                out.append({"role": "user", "content": s.data.get("text", "")})
            elif s.kind == "model":
                r = s.data.get("response") or {}
                calls = r.get("tool_calls") or []
                if calls:
                    out.append(
                        {
                            "role": "assistant",
                            "content": r.get("result"),
                            "tool_calls": [
                                {
                                    "id": c["id"],
                                    "type": "function",
                                    "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})},
                                }
                                for c in calls
                            ],
                        }
                    )
                elif r.get("result") is not None:
                    out.append({"role": "assistant", "content": r.get("result")})
            elif s.kind == "tool":
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": s.data.get("id", ""),
                        "name": s.data.get("name", ""),
                        "content": _tool_text(s.data),
                    }
                )
        return out

    def _loop(
        self,
        agent_id: str,
        session: str,
        history: list[dict[str, Any]],
        first_step: int,
        max_steps: int,
        ctx: int,
        pid: str | None,
        on_chunk: Callable[[str], None] | None,
        recorded: _Recorded | None,
    ) -> AgentResult:
        store = self.sessions
        replaying = recorded is not None
        tokens = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        step = first_step
        taken = 0
        while taken < max_steps:
            taken += 1
            try:
                spec = self._resolve(agent_id)  # edits take effect at the next step
                messages, request = self._request(spec, history)
                if not replaying and self._maybe_pause(agent_id, session, step, "model", {"request": request}):
                    spec = self._resolve(agent_id)  # edited while paused: what is sent is the latest
                    messages, request = self._request(spec, history)
            except AgentError as exc:
                return self._fail(session, taken, tokens, str(exc), replaying)
            t0 = time.perf_counter()
            try:
                if recorded is not None:
                    gen = recorded.model(step)
                else:
                    self._owner.require_as(ctx, "llm.generate", spec.model, pid)
                    gen = self.generate(
                        spec.model,
                        messages,
                        tools=list(spec.tools),
                        temperature=spec.temperature,
                        max_tokens=spec.max_tokens,
                        on_chunk=on_chunk,
                    )
            except (LLMError, SecurityError, AgentError) as exc:
                return self._fail(session, taken, tokens, f"step {step}: {exc}", replaying)
            latency = gen.latency_ms if not replaying else (time.perf_counter() - t0) * 1000
            for k in tokens:
                tokens[k] += int(getattr(gen, k))
            self._journal(
                session,
                step,
                "model",
                {"request": request, "response": gen.to_dict(), "latency_ms": round(latency, 3)},
                replaying,
            )
            if not gen.tool_calls:
                answer = gen.result or ""
                history.append({"role": "assistant", "content": answer})
                self._journal(session, step, "answer", {"text": answer}, replaying)
                if not replaying:
                    store.set_status(session, "answered")
                return AgentResult(answer, taken, tokens, session)
            history.append(
                {
                    "role": "assistant",
                    "content": gen.result,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in gen.tool_calls
                    ],
                }
            )
            for call in gen.tool_calls:
                if recorded is not None:
                    out = recorded.tool(call.name)
                else:
                    out = self._tool(spec, call, session, step, ctx, pid)
                self._journal(session, step, "tool", out, replaying)
                history.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": _tool_text(out)})
            step += 1
        msg = (
            f"stopped after {max_steps} steps without an answer "
            f"(max_steps = {max_steps}; raise it or simplify the task)"
        )
        if not replaying:
            store.set_status(session, "stopped")
        self._journal(session, step - 1, "answer", {"text": None, "stopped": "max_steps", "note": msg}, replaying)
        return AgentResult(None, taken, tokens, session, stopped="max_steps", error=msg)

    @staticmethod
    def _request(spec: AgentSpec, history: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        messages = [{"role": "system", "content": spec.system}, *history]
        request = {
            "model": spec.model,
            "messages": len(messages),
            "system": spec.system,
            "last": _short(history[-1]) if history else None,
            "tools": [t.name for t in spec.tools],
        }
        return messages, request

    def _fail(self, session: str, taken: int, tokens: dict[str, int], msg: str, replaying: bool) -> AgentResult:
        if not replaying:
            self.sessions.set_status(session, "failed")
        return AgentResult(None, taken, tokens, session, error=msg)

    def _tool(
        self, spec: AgentSpec, call: ToolCall, session: str, step: int, ctx: int, pid: str | None
    ) -> dict[str, Any]:
        base = {"id": call.id, "name": call.name, "arguments": call.arguments}
        tool = spec.tool(call.name)
        if tool is None:
            names = ", ".join(t.name for t in spec.tools) or "(none)"
            return {**base, "error": f"unknown tool '{call.name}' (tools: {names})"}
        base["entry"] = tool.id
        bad = check_arguments(tool.schema, call.arguments)
        if bad:
            return {**base, "error": f"tool '{call.name}': {bad} (input schema of {tool.id})"}
        self._maybe_pause(
            spec.id, session, step, "tool", {"tool": call.name, "entry": tool.id, "arguments": call.arguments}
        )
        t0 = time.perf_counter()
        try:
            if tool.delegate:
                sub = self.run(tool.id, str(call.arguments.get("message", "")), ctx=ctx, pid=pid)
                value: Any = sub.result if sub.error is None else None
                if sub.error is not None:
                    return {**base, "error": f"delegate {tool.id}: {sub.error}", "ms": _ms(t0), "session": sub.session}
                return {**base, "result": value, "ms": _ms(t0), "session": sub.session}
            if tool.id in BUILTIN_TOOLS:
                value = self._builtin(tool.id, call.arguments, spec, session, step, ctx)
            else:
                self._owner.require_as(ctx, "funcs.call", tool.id, pid)
                value = self._owner.call_tool(ctx, tool.id, dict(call.arguments), 60.0)
        except (LuaError, SecurityError, EntryError, WippyError) as exc:
            return {**base, "error": f"tool '{call.name}' failed: {exc}", "ms": _ms(t0)}
        return {**base, "result": value, "ms": _ms(t0)}

    def _builtin(
        self, tool_id: str, args: Mapping[str, Any], spec: AgentSpec, session: str, step: int, ctx: int
    ) -> Any:
        if tool_id == "wippy.agents:define_tool":
            eid = str(args.get("id", ""))
            schema = args.get("input_schema") or {"type": "object", "properties": {}}
            entry = Entry(
                eid,
                "function.lua",
                {"type": "tool", "input_schema": schema, "llm_description": str(args.get("description", ""))},
                {"source": _tool_source(str(args.get("source", ""))), "method": "main"},
            )
            version = self._owner.apply_as(
                ctx, [entry], f"agent {spec.id} (session {session}, step {step}): define tool {eid}"
            )
            self._journal(
                session,
                step,
                "registry",
                {"version": version, "entries": [eid], "author": spec.id, "op": "define_tool"},
                False,
            )
            return {"defined": eid, "version": version}
        raise AgentError(f"unknown built-in tool '{tool_id}'")

    # ------------------------------------------------------------------ replay and fork
    def replay(self, session: str) -> ReplayResult:
        """Run ``session`` again with its recorded answers (no model, no tool runs); compare the steps."""
        store = self.sessions
        rec = store.get(session)
        steps = store.steps(session)
        made: list[dict[str, Any]] = []

        def listen(sid: str, row: dict[str, Any]) -> None:
            if sid == session and row["kind"] in ("model", "tool", "answer"):
                made.append(_summary(row["kind"], row["step"], row))

        users = [s for s in steps if s.kind == "user"]
        t0 = time.perf_counter()
        off = self.subscribe(listen)
        result: str | None = None
        failed: str | None = None
        try:
            recorded = _Recorded(steps)
            history: list[dict[str, Any]] = []
            for i, u in enumerate(users):
                history.append({"role": "user", "content": u.data.get("text", "")})
                nxt = users[i + 1].step if i + 1 < len(users) else None
                budget = (nxt - u.step) if nxt is not None else max(1, rec.steps - u.step + 1)
                r = self._loop(rec.agent, session, history, u.step, budget, 0, None, None, recorded)
                result = r.result
                if r.error is not None and r.stopped is None:
                    failed = r.error
        finally:
            off()
        elapsed = (time.perf_counter() - t0) * 1000
        want = [_summary(s.kind, s.step, s.data) for s in steps if s.kind in ("model", "tool", "answer")]
        diff = f"the replay stopped: {failed}" if failed else None
        for i, (a, b) in enumerate(zip(made, want, strict=False)):
            if diff:
                break
            if a != b:
                diff = f"step row {i + 1}: replay {a} != recorded {b}"
                break
        if diff is None and len(made) != len(want):
            diff = f"the replay made {len(made)} step rows, the session has {len(want)}"
        return ReplayResult(session, diff is None, made, want, result, elapsed, diff)

    def fork(
        self,
        session: str,
        step: int,
        *,
        message: str | None = None,
        answer: str | None = None,
        tool_result: Any = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        ctx: int | None = None,
    ) -> AgentResult:
        """A new session: ``session``'s steps before ``step``, then one edit, then live.

        ``message``: a new user message at ``step``; ``answer``: the model's answer at ``step`` replaced
        (the session ends with it); ``tool_result``: the result of the tool calls of ``step`` replaced
        (the model's step kept), then the loop goes on from ``step + 1``. At most one edit; with none,
        the model is asked again at ``step`` (live) on the same conversation.
        """
        edits = [x is not None for x in (message, answer, tool_result)]
        if sum(edits) > 1:
            raise AgentError("fork: give at most one edit: message=, answer= or tool_result=")
        store = self.sessions
        rec = store.get(session)
        if not isinstance(step, int) or step < 1 or step > max(rec.steps, 1) + (1 if message is not None else 0):
            raise AgentError(f"fork: session '{session}' has steps 1..{rec.steps}; got {step!r}")
        ctx = self._owner.caller_context() if ctx is None else ctx
        self._owner.require_as(ctx, "agent.run", rec.agent, None)
        steps = store.steps(session)
        new = store.create(rec.agent, parent=session, fork_step=step, actor=self._owner.actor_name(ctx))
        keep = [s for s in steps if s.step < step]
        at = [s for s in steps if s.step == step]
        for s in keep:
            store.append(new, s.step, s.kind, {**s.data, "copied_from": session} if s.kind == "user" else s.data)
        history = self._conversation(keep)
        if not any(edits):
            for s in at:
                if s.kind == "user":
                    store.append(new, s.step, s.kind, s.data)
                    history.append({"role": "user", "content": s.data.get("text", "")})
            return self._loop(rec.agent, new, history, step, max_steps, ctx, None, None, None)
        if message is not None:
            history.append({"role": "user", "content": message})
            self._journal(new, step, "user", {"text": message, "edited": True}, False)
            return self._loop(rec.agent, new, history, step, max_steps, ctx, None, None, None)
        if answer is not None:
            for s in at:
                if s.kind == "user":
                    store.append(new, s.step, s.kind, s.data)
                    history.append({"role": "user", "content": s.data.get("text", "")})
            model = next((s for s in at if s.kind == "model"), None)
            req = model.data.get("request") if model else {}
            gen = {
                "result": answer,
                "tool_calls": [],
                "tokens": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "finish_reason": "stop",
            }
            self._journal(
                new, step, "model", {"request": req, "response": gen, "latency_ms": 0.0, "edited": True}, False
            )
            self._journal(new, step, "answer", {"text": answer, "edited": True}, False)
            store.set_status(new, "answered")
            return AgentResult(answer, 0, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, new)
        model = next((s for s in at if s.kind == "model"), None)
        calls = [s for s in at if s.kind == "tool"]
        if model is None or not calls:
            raise AgentError(f"fork: step {step} of session '{session}' made no tool call to edit")
        for s in at:
            if s.kind in ("user", "model"):
                store.append(new, s.step, s.kind, s.data)
        for c in calls:
            d = {k: v for k, v in c.data.items() if k != "error"}
            d.update(result=tool_result, edited=True)
            store.append(new, step, "tool", d)
        history = self._conversation(store.steps(new))
        return self._loop(rec.agent, new, history, step + 1, max_steps, ctx, None, None, None)

    # ------------------------------------------------------------------ from Lua (py.agents)
    def lua_call(self, op: str, pid: str, ctx: int, args: list[Any]) -> Any:
        """A call of the Lua ``llm`` / ``agent`` modules by process ``pid`` (host thread): the work goes to
        the pool and the answer comes back as ``owner.reply(pid, token, value)``; returns the token."""
        if op == "new_session":  # agent.spawn: answered at once
            agent_id = str(args[0])
            self._owner.require_as(ctx, "agent.run", agent_id, pid)
            self._resolve(agent_id)
            return self.sessions.create(agent_id, actor=self._owner.actor_name(ctx))
        token = next(self._tokens)

        def work() -> Any:
            try:
                if op == "generate":
                    opts = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
                    return self._lua_generate(pid, ctx, args[0], opts)
                if op == "structured":
                    opts = args[2] if len(args) > 2 and isinstance(args[2], dict) else {}
                    return self._lua_structured(pid, ctx, args[0], args[1], opts)
                if op == "run":
                    opts = args[2] if len(args) > 2 and isinstance(args[2], dict) else {}
                    chunk_to = opts.get("chunk_to")   # an agent process asked to stream: topic `chunk`
                    on_chunk = None
                    if chunk_to:
                        target, sid = str(chunk_to), opts.get("session")

                        def on_chunk(text: str) -> None:
                            self._owner.deliver(target, "chunk", {"text": text, "session": sid})

                    r = self.run(
                        str(args[0]),
                        None if args[1] is None else str(args[1]),
                        max_steps=int(opts.get("max_steps", DEFAULT_MAX_STEPS)),
                        session=opts.get("session"),
                        ctx=ctx,
                        pid=pid,
                        on_chunk=on_chunk,
                    )
                    if r.error is not None and r.stopped is None:
                        return {"error": r.error, "session": r.session}
                    return r.to_dict()
                return {"error": f"agents: unknown operation {op!r}"}
            except (WippyError, ValueError, TypeError) as exc:
                return {"error": str(exc)}

        def done(fut: Any) -> None:
            try:
                value = fut.result()
            except Exception as exc:  # never lose the parked process
                value = {"error": f"agents: {exc}"}
            self._owner.reply(pid, token, value)

        self._executor().submit(work).add_done_callback(done)
        return token

    def _lua_messages(self, prompt: Any) -> list[dict[str, Any]]:
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        if isinstance(prompt, dict) and isinstance(prompt.get("messages"), list):
            prompt = prompt["messages"]
        if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
            return to_openai(prompt)
        raise AgentError("llm.generate: the prompt is a string, a prompt builder (prompt.new()) or a list of messages")

    def _lua_tools(self, opts: Mapping[str, Any]) -> list[ToolSpec]:
        out: list[ToolSpec] = []
        for tid in opts.get("tool_ids") or []:
            out.append(tool_spec(str(tid), self._owner.entry))
        for s in opts.get("tool_schemas") or opts.get("tools") or []:
            if isinstance(s, dict) and s.get("name"):
                out.append(
                    ToolSpec(
                        str(s.get("id") or s["name"]),
                        str(s["name"]),
                        str(s.get("description") or ""),
                        s.get("schema") or s.get("parameters") or {"type": "object", "properties": {}},
                    )
                )
        return out

    def _lua_generate(self, pid: str, ctx: int, prompt: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
        model = str(opts.get("model") or LOCAL_MODEL)
        self._owner.require_as(ctx, "llm.generate", model, pid)
        messages = self._lua_messages(prompt)
        tools = self._lua_tools(opts)
        stream = opts.get("stream")
        on_chunk: Callable[[str], None] | None = None
        reply_to, topic = None, "llm_stream"
        if isinstance(stream, dict) and stream.get("reply_to"):
            reply_to, topic = str(stream["reply_to"]), str(stream.get("topic") or topic)
            self._owner.require_as(ctx, "process.send", reply_to, pid)

            def on_chunk(text: str) -> None:
                self._owner.deliver(reply_to, topic, {"type": "chunk", "content": text})

        try:
            gen = self.generate(
                model,
                messages,
                tools=tools or None,
                tool_choice=opts.get("tool_call") or opts.get("tool_choice"),
                temperature=opts.get("temperature"),
                max_tokens=opts.get("max_tokens"),
                timeout=opts.get("timeout"),
                on_chunk=on_chunk,
            )
        except LLMError as exc:
            if reply_to is not None:
                self._owner.deliver(
                    reply_to, topic, {"type": "error", "error": {"message": str(exc), "type": exc.kind}}
                )
            raise
        if reply_to is not None:
            self._owner.deliver(reply_to, topic, {"type": "done", "meta": {"finish_reason": gen.finish_reason}})
        return gen.to_dict()

    def _lua_structured(self, pid: str, ctx: int, schema: Any, prompt: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
        model = str(opts.get("model") or LOCAL_MODEL)
        self._owner.require_as(ctx, "llm.generate", model, pid)
        if not isinstance(schema, dict):
            raise AgentError("llm.structured_output: the schema is a table (a JSON schema)")
        value, gen = self.structured_output(
            model,
            schema,
            self._lua_messages(prompt),
            temperature=opts.get("temperature"),
            max_tokens=opts.get("max_tokens"),
            timeout=opts.get("timeout"),
        )
        return {"result": value, "tokens": gen.to_dict()["tokens"], "finish_reason": gen.finish_reason}

    def is_agent(self, entry_id: str) -> bool:
        e = self._owner.entry(entry_id)
        return e is not None and e.kind == "registry.entry" and e.meta.get("type") == AGENT_TYPE


def _tool_source(src: str) -> str:
    """A defined tool's source as an entry wants it: code that defines ``main`` gets its ``return``."""
    if "return" in src and ("return {" in src or "return main" in src or src.lstrip().startswith("return")):
        return src
    return src + "\nreturn { main = main }"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _tool_text(d: Mapping[str, Any]) -> str:
    if d.get("error") is not None:
        return f"error: {d['error']}"
    v = d.get("result")
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _short(m: Mapping[str, Any]) -> str:
    c = m.get("content")
    if c is None and m.get("tool_calls"):
        return "tool calls: " + ", ".join(t["function"]["name"] for t in m["tool_calls"])
    return str(c)[:200]


def _summary(kind: str, step: int, d: Mapping[str, Any]) -> dict[str, Any]:
    """A step as replay compares it: what the model said and which tools ran with what."""
    if kind == "model":
        r = d.get("response") or {}
        return {
            "kind": "model",
            "step": step,
            "result": r.get("result"),
            "tool_calls": [
                (c["name"], json.dumps(c.get("arguments") or {}, sort_keys=True)) for c in r.get("tool_calls") or []
            ],
        }
    if kind == "tool":
        return {"kind": "tool", "step": step, "name": d.get("name"), "result": _tool_text(d)}
    return {"kind": "answer", "step": step, "text": d.get("text")}
