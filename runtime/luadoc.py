"""What the kernel knows about Lua code: the API's signatures and docs, completion, is_complete.

Pure functions (any thread; the compile check uses a private Lua state per thread). The kernel's
``do_complete``, ``do_inspect`` and ``do_is_complete`` call these for ``%%lua`` cells.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .tree import compile_check

__all__ = ["API", "complete", "inspect", "is_complete"]

# module -> member -> (signature, one-line doc), after API.md
API: dict[str, dict[str, tuple[str, str]]] = {
    "process": {
        "pid": ("process.pid() -> pid", "The PID of the calling process."),
        "spawn": ("process.spawn(id, host?, ...) -> pid | nil, err",
                  "Start the process.lua entry `id` on `host` (default: the caller's); extra args go to its "
                  "entry function."),
        "spawn_monitored": ("process.spawn_monitored(id, host?, ...) -> pid | nil, err",
                            "Spawn and monitor atomically: an EXIT event arrives when it ends."),
        "spawn_linked": ("process.spawn_linked(id, host?, ...) -> pid | nil, err",
                         "Spawn and link atomically: an abnormal end of either kills the other."),
        "spawn_linked_monitored": ("process.spawn_linked_monitored(id, host?, ...) -> pid | nil, err",
                                   "Spawn, link and monitor atomically."),
        "send": ("process.send(dest, topic, payload) -> true | nil, err",
                 "Send a copy of `payload` to a PID or registered name; order is kept per sender and receiver."),
        "monitor": ("process.monitor(dest) -> true | nil, err", "Receive an EXIT event when `dest` ends."),
        "unmonitor": ("process.unmonitor(dest) -> true | nil, err", "Stop monitoring `dest`."),
        "link": ("process.link(dest) -> true | nil, err",
                 "Link: an abnormal end of either kills the other, unless it traps links."),
        "unlink": ("process.unlink(dest) -> true | nil, err", "Remove a link."),
        "terminate": ("process.terminate(dest) -> true | nil, err", "Kill `dest` at once (abnormal exit)."),
        "cancel": ("process.cancel(dest, reason?) -> true | nil, err",
                   "Ask `dest` to stop: a CANCEL event and a grace period, or at once if it never listens."),
        "set_options": ("process.set_options{trap_links=bool, upgradable=bool} -> true | false, err",
                        "Trap links (LINK_DOWN events instead of dying); receive OUTDATED on code changes."),
        "get_options": ("process.get_options() -> {trap_links, upgradable}", "The process's options."),
        "inbox": ("process.inbox() -> channel", "Every message not taken by a listen, as Message objects."),
        "events": ("process.events() -> channel", "EXIT, LINK_DOWN, CANCEL and OUTDATED events."),
        "listen": ("process.listen(topic_or_glob, {message=bool}?) -> channel",
                   "Messages of one topic (or glob) as payloads, or Message objects."),
        "unlisten": ("process.unlisten(ch) -> bool", "Stop a listen; its channel closes."),
        "exec": ("process.exec(id, host?, ...) -> result | nil, err", "Spawn, wait for the end, return its result."),
        "upgrade": ("process.upgrade(id?, ...)", "Continue as new code with the same PID (comes with the registry)."),
        "with_options": ("process.with_options(t) -> spawner",
                         "An immutable builder: :with_name, :with_message, :with_options, then :spawn*/:exec."),
        "with_context": ("process.with_context(t) -> spawner",
                         "A builder whose children read `ctx.get(key)`; :with_actor(a), :with_scope(s) narrow them."),
        "registry": ("process.registry", "Local names: register(name, pid?), lookup(name), unregister(name)."),
        "event": ("process.event", "Event kinds: EXIT, CANCEL, LINK_DOWN, OUTDATED."),
    },
    "channel": {
        "new": ("channel.new(size?) -> channel", "A channel; size 0 (the default) is unbuffered."),
        "select": ("channel.select{case, ..., default=true?} -> {channel, value, ok} | {default=true}",
                   "Wait on several cases (ch:case_receive(), ch:case_send(v)); a ready one is taken at random."),
    },
    "time": {
        "sleep": ("time.sleep(d)", "Park for a duration ('150ms', '2s', nanoseconds, a Duration)."),
        "after": ("time.after(d) -> channel", "A channel that receives the time once, after `d`."),
        "timer": ("time.timer(d) -> timer", "A timer: :channel(), :stop(), :reset(d)."),
        "ticker": ("time.ticker(d) -> ticker", "A ticker: :channel() receives every `d`; :stop()."),
        "now": ("time.now() -> Time", "Now: :unix(), :unix_nano(), :sub(t) -> Duration, :format(fmt?)."),
        "parse_duration": ("time.parse_duration(s) -> Duration | nil, err", "Parse '1h30m', '150ms'..."),
    },
    "json": {
        "encode": ("json.encode(v) -> string | nil, err", "Encode plain data as JSON (keys sorted)."),
        "decode": ("json.decode(s) -> value | nil, err", "Decode JSON; errors name the line and column."),
    },
    "logger": {
        "debug": ("logger:debug(msg, fields?)", "Log at debug level (kept per process, see %logs)."),
        "info": ("logger:info(msg, fields?)", "Log at info level."),
        "warn": ("logger:warn(msg, fields?)", "Log at warn level."),
        "error": ("logger:error(msg, fields?)", "Log at error level."),
        "with": ("logger:with(fields) -> logger", "A logger that adds these fields to every line."),
        "named": ("logger:named(name) -> logger", "A logger with a `logger` field."),
    },
    "ctx": {
        "get": ("ctx.get(key) -> value", "A value of the context the spawner gave (with_context)."),
        "all": ("ctx.all() -> table", "The whole context."),
    },
    "registry": {
        "get": ("registry.get(id) -> entry | nil, err", "An entry {id, kind, meta, data}."),
        "find": ("registry.find(filter) -> {entry...}", "Entries matching {[\".kind\"]=..., [\"meta.x\"]=...}."),
        "snapshot": ("registry.snapshot() -> snapshot", "A consistent view: :entries(), :get(id), :changes()."),
        "current_version": ("registry.current_version() -> version", "The registry's version."),
        "history": ("registry.history() -> {version...}", "Past versions."),
        "apply_version": ("registry.apply_version(v)", "Roll back or forward to version `v`."),
    },
    "funcs": {
        "call": ("funcs.call(id, ...) -> results | nil, err",
                 "Call a function.lua entry (inside a workflow: an activity, journaled, run once)."),
        "idempotency_key": ("funcs.idempotency_key() -> key | nil",
                            "Inside an activity called from a workflow: its key '{workflow_id}:{seq}'."),
    },
    "workflow": {
        "signal": ("workflow.signal(id, topic, payload) -> seq | nil, err",
                   "Send a journaled message to a workflow (read from its inbox or listen)."),
        "status": ("workflow.status(id) -> status | nil, err", "running, completed, failed or cancelled."),
        "result": ("workflow.result(id, timeout?) -> value | nil, err", "Wait for a workflow's result."),
        "cancel": ("workflow.cancel(id, reason?) -> true | nil, err", "Cancel a workflow."),
        "list": ("workflow.list(status?) -> {record...}", "The workflows of the store."),
        "history": ("workflow.history(id) -> {step...}", "A workflow's journal: op, args, result, time."),
        "id": ("workflow.id() -> id", "Inside a workflow: its own ID."),
    },
    "security": {
        "actor": ("security.actor() -> actor", "The calling process's actor (actor:id(), actor:meta())."),
        "scope": ("security.scope() -> scope", "The calling process's scope (scope:policies())."),
        "can": ("security.can(action, resource, meta?) -> bool",
                "Whether this process may do `action` on `resource` now (nothing is recorded)."),
        "new_actor": ("security.new_actor(id, meta?) -> actor", "An actor for process.with_context{}:with_actor(a)."),
        "new_scope": ("security.new_scope(policies?) -> scope",
                      "A scope of existing policy IDs, for :with_scope(s) (only a narrowing is accepted)."),
        "policy": ("security.policy(id) -> policy", "A policy (policy:id(), :effect(), :actions(), :resources())."),
        "named_scope": ("security.named_scope(group) -> scope", "The scope of every policy in `group`."),
    },
    "uuid": {
        "v4": ("uuid.v4() -> string", "A random UUID (journaled inside a workflow)."),
    },
    "llm": {
        "generate": ("llm.generate(prompt | builder | messages, {model=, temperature=, max_tokens=, tool_ids=, "
                     "tool_schemas=, tool_call=, stream=, timeout=}?) -> {result, tool_calls, tokens, "
                     "finish_reason} | nil, err",
                     "Ask a model (an llm.model entry's meta.name; default `local`, the node's own small model)."),
        "structured_output": ("llm.structured_output(schema, prompt, options?) -> {result, tokens} | nil, err",
                              "A reply that is a table matching the JSON schema."),
        "ERROR_TYPE": ("llm.ERROR_TYPE", "Error kinds: INVALID_REQUEST, AUTHENTICATION, RATE_LIMIT, SERVER_ERROR, "
                       "CONTEXT_LENGTH, CONTENT_FILTER, TIMEOUT, MODEL_ERROR, NETWORK_ERROR (err starts with one)."),
        "FINISH_REASON": ("llm.FINISH_REASON", "STOP, LENGTH, CONTENT_FILTER, TOOL_CALL, ERROR."),
    },
    "prompt": {
        "new": ("prompt.new() -> builder", "A conversation: :add_system, :add_user, :add_assistant, "
                ":add_function_call(name, args, id), :add_function_result(name, result, id), :get_messages()."),
        "with_system": ("prompt.with_system(text) -> builder", "A builder starting with a system message."),
    },
    "agent": {
        "run": ("agent.run(id, input, {max_steps = 8, session = id?}?) -> {result, steps, tokens, session} | nil, err",
                "Run an agent.gen1 entry until it answers (tools run as funcs.call in this process's identity)."),
        "spawn": ("agent.spawn(id, {session?, max_steps?, stream?}?) -> pid | nil, err",
                  "An agent process: send it topic `message` {text, reply_to?}; it answers on topic `answer`."),
    },
    "supervisor": {
        "start": ("supervisor.start(spec | id) -> pid | nil, err",
                  "Start a supervisor {id=, strategy=, max_restarts=, period=, children={...}} or a "
                  "process.supervisor/process.service entry; returns once its children run."),
        "stop": ("supervisor.stop(id | pid) -> true | nil, err", "Stop a top-level supervisor or service."),
        "tree": ("supervisor.tree(root?) -> node", "The supervision tree {id, kind, status, pid, restarts, "
                 "last_exit, children}."),
        "children": ("supervisor.children(id | pid) -> {node...}", "A supervisor's children, in order."),
    },
}

METHODS: dict[str, tuple[str, str]] = {
    "receive": ("ch:receive() -> value, ok", "Wait for a value; nil, false once the channel is closed."),
    "send": ("ch:send(v)", "Send (waits while the channel is full or, unbuffered, has no receiver)."),
    "close": ("ch:close()", "Close: receivers get nil, false after the buffered values."),
    "case_receive": ("ch:case_receive() -> case", "A receive case for channel.select."),
    "case_send": ("ch:case_send(v) -> case", "A send case for channel.select."),
    "topic": ("msg:topic() -> string", "The message's topic."),
    "from": ("msg:from() -> pid | nil", "The sender's PID."),
    "payload": ("msg:payload():data() -> value", "The message's payload (a copy)."),
}

KEYWORDS = ["and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
            "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"]
BUILTINS = ["assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawlen",
            "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "xpcall",
            "load", "require", "string", "table", "math", "utf8", "coroutine", "os", *API]

_DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)([.:])(\w*)$")
_WORD = re.compile(r"[A-Za-z_]\w*$")
_METHOD = re.compile(r"[\w)\]]:(\w*)$")
_STRING_ARG = re.compile(r"""(\w+(?:[.:]\w+)*)\s*\(\s*(?:[^()"']*,\s*)?["']([^"']*)$""")
_ID_CALLS = {"spawn", "spawn_monitored", "spawn_linked", "spawn_linked_monitored", "exec", "get", "call"}
_DEST_CALLS = {"send", "monitor", "unmonitor", "link", "unlink", "terminate", "cancel", "lookup"}


def complete(
    code: str,
    cursor: int,
    globals_: Iterable[str] = (),
    entry_ids: Iterable[str] = (),
    pids: Iterable[str] = (),
    fields: Callable[[str], Iterable[str]] | None = None,
) -> tuple[list[str], int, int]:
    """Completions at ``cursor``: ``(matches, start, end)`` as Jupyter's complete_reply wants them.

    Knows module members (``process.``), globals, fields of global tables (through ``fields(path)``),
    registry IDs inside the string argument of
    ``spawn``/``exec``/``get``/``call``, and PIDs and names inside ``send``/``monitor``/... strings.
    """
    before = code[:cursor]
    m = _STRING_ARG.search(before)
    if m:
        func = re.split(r"[.:]", m.group(1))[-1]
        typed = m.group(2)
        pool: Iterable[str] = ()
        if func in _ID_CALLS:
            pool = entry_ids
        elif func in _DEST_CALLS:
            pool = pids
        matches = sorted(x for x in set(pool) if x.startswith(typed))
        return matches, cursor - len(typed), cursor
    m = _METHOD.search(before)
    if m and not _DOTTED.search(before):
        typed = m.group(1)
        matches = sorted(n for n in METHODS if n.startswith(typed))
        return matches, cursor - len(typed), cursor
    m = _DOTTED.search(before)
    if m:
        base, sep, typed = m.group(1), m.group(2), m.group(3)
        names: Iterable[str]
        if sep == "." and base in API:
            names = API[base]
        elif sep == "." and base == "process.registry":
            names = ["register", "lookup", "unregister"]
        elif sep == "." and base == "process.event":
            names = ["EXIT", "CANCEL", "LINK_DOWN", "OUTDATED"]
        elif sep == ":":
            names = list(METHODS) + (list(API["logger"]) if base == "logger" else [])
        elif fields is not None:
            names = fields(base)   # a table among the shell's globals: its fields
        else:
            names = []
        matches = sorted(n for n in set(names) if n.startswith(typed))
        return matches, cursor - len(typed), cursor
    m = _WORD.search(before)
    typed = m.group(0) if m else ""
    pool = set(globals_) | set(KEYWORDS) | set(BUILTINS)
    matches = sorted(n for n in pool if (n.startswith(typed) and not n.startswith("_")) or n == typed)
    return matches, cursor - len(typed), cursor


def inspect(code: str, cursor: int) -> tuple[str, str] | None:
    """Signature and one-line doc of the API name under (or just before) ``cursor``, else None."""
    start = cursor
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "_.:"):
        start -= 1
    end = cursor
    while end < len(code) and (code[end].isalnum() or code[end] == "_"):
        end += 1
    name = code[start:end].strip(".:")
    if ":" in name:
        method = name.rsplit(":", 1)[1]
        return METHODS.get(method) or API["logger"].get(method)
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = parts[0]
        if i >= 2 and mod in API and parts[1] in API[mod]:
            return API[mod][parts[1]]
        if i == 1 and mod in API:
            members = ", ".join(sorted(API[mod]))
            return (f"{mod}", f"Module {mod}: {members}.")
    return None


def is_complete(code: str) -> str:
    """``"complete"``, ``"incomplete"`` (an unfinished chunk: more lines would help) or ``"invalid"``."""
    if not code.strip():
        return "complete"
    err = compile_check(code, "=cell")
    if err is None:
        return "complete"
    if "<eof>" in err or "unfinished" in err:
        return "incomplete"
    return "invalid"
