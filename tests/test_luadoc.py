"""Completion, inspection and is_complete for Lua cells (runtime/luadoc.py)."""

from __future__ import annotations

import pytest
from wippy.runtime.luadoc import API, complete, inspect, is_complete


def at_end(code: str, **kw: object) -> tuple[list[str], int, int]:
    return complete(code, len(code), **kw)  # type: ignore[arg-type]


def test_module_members() -> None:
    """`process.sp` completes to the spawn family; the span covers what was typed."""
    matches, start, end = at_end("local p = process.sp")
    assert matches == ["spawn", "spawn_linked", "spawn_linked_monitored", "spawn_monitored"]
    assert (start, end) == (len("local p = process."), len("local p = process.sp"))
    assert "select" in at_end("channel.")[0] and "ticker" in at_end("time.t")[0]


def test_globals_keywords_and_modules() -> None:
    """A bare word completes from the shell's globals, keywords and modules."""
    assert at_end("co", globals_=["counter", "other"])[0] == ["coroutine", "counter"]
    assert "process" in at_end("proc")[0]
    assert "return" in at_end("ret")[0]


def test_registry_ids_inside_spawn_strings() -> None:
    """Inside the string argument of spawn/exec, registry IDs complete."""
    ids = ["app:ping", "app:pong", "lib:x"]
    matches, start, _ = at_end('process.spawn("app:p', entry_ids=ids)
    assert matches == ["app:ping", "app:pong"] and start == len('process.spawn("')
    assert at_end("process.exec('li", entry_ids=ids)[0] == ["lib:x"]


def test_pids_and_names_inside_send_strings() -> None:
    """Inside the destination string of send/monitor, PIDs and names complete."""
    pool = ["{app:processes|0x00001}", "worker"]
    assert at_end('process.send("wo', pids=pool)[0] == ["worker"]
    assert at_end("process.monitor('{app", pids=pool)[0] == ["{app:processes|0x00001}"]


def test_fields_of_global_tables() -> None:
    """`config.` completes the fields of a global table of the shell."""
    tables = {"config": ["db", "debug", "port"]}
    assert at_end("config.d", fields=lambda path: tables.get(path, []))[0] == ["db", "debug"]


def test_method_completion() -> None:
    """After a colon, channel and message methods complete."""
    assert "receive" in at_end("process.inbox():rec")[0]


@pytest.mark.parametrize(("code", "sig"), [
    ("process.spawn", "process.spawn(id, host?, ...) -> pid | nil, err"),
    ("time.sleep('1s')", "time.sleep(d)"),
    ("ch:receive", "ch:receive() -> value, ok"),
])
def test_inspect_gives_signature_and_doc(code: str, sig: str) -> None:
    """Shift-Tab on an API name shows its signature and a one-line doc."""
    found = inspect(code, code.index("(") if "(" in code else len(code))
    assert found is not None and found[0] == sig and found[1]


def test_every_api_function_has_a_doc() -> None:
    """Every documented member has a signature and a sentence."""
    for mod, members in API.items():
        for name, (sig, doc) in members.items():
            assert sig.startswith(f"{mod}") or sig.startswith("logger:"), (mod, name)
            assert doc.endswith("."), (mod, name)


@pytest.mark.parametrize(("code", "status"), [
    ("return 1", "complete"),
    ("", "complete"),
    ("for i = 1, 3 do", "incomplete"),
    ("local t = {", "incomplete"),
    ("x = 'unfinished", "incomplete"),
    ("return = 1", "invalid"),
])
def test_is_complete(code: str, status: str) -> None:
    """An unfinished chunk is incomplete; a wrong one invalid."""
    assert is_complete(code) == status


def test_the_agent_modules_complete_and_inspect() -> None:
    from wippy.runtime import luadoc

    assert luadoc.complete("agent.r", 7)[0] == ["run"]
    assert luadoc.complete("llm.", 4)[0] == ["ERROR_TYPE", "FINISH_REASON", "generate", "structured_output"]
    sig, _ = luadoc.inspect("prompt.new(", 10) or ("", "")
    assert sig.startswith("prompt.new() -> builder")
