"""The notebook's shell process: cells, their output, results, errors, interrupts and timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from wippy.runtime import LuaError, Node, Shell, Timeout


@pytest.fixture
def shell() -> Iterator[Shell]:
    node = Node(output=None).start()
    yield node.shell()
    node.stop(grace=0.5)


def run(shell: Shell, code: str, **kw: object) -> tuple[str, list[str]]:
    lines: list[str] = []
    res = shell.run(code, on_output=lines.append, **kw)  # type: ignore[arg-type]
    return res.text, lines


def test_globals_persist_and_the_pid_stays(shell: Shell) -> None:
    """A global set in one cell is there in the next; the shell is one process with one PID."""
    assert run(shell, "counter = 40") == ("", [])
    assert run(shell, "counter = counter + 2\nreturn counter") == ("42", [])
    assert shell.run("return process.pid()").value == shell.pid
    assert shell.node.shell() is shell
    assert "counter" in shell.globals()


def test_fields_of_globals_for_completion(shell: Shell) -> None:
    """Shell.fields gives the string keys of a global table at a dotted path; views stay closed."""
    shell.run("config = {db = {host = 'x', port = 1}, debug = true, [1] = 'skip'}")
    assert shell.fields("config") == ["db", "debug"]
    assert shell.fields("config.db") == ["host", "port"]
    assert shell.fields("missing.x") == [] and shell.fields("string") == []


@pytest.mark.parametrize(("code", "text"), [
    ("return 40 + 2", "42"),
    ("return 1.5", "1.5"),
    ("return 2.0", "2.0"),
    ("return 'hi\\n'", '"hi\\n"'),
    ("return true, nil, false", "true, nil, false"),
    ("return {1, 2, {a = 'b'}, k = true, ['x y'] = 3}", '{1, 2, {a = "b"}, k = true, ["x y"] = 3}'),
    ("return {}", "{}"),
    ("local t = {} t.self = t return t", "{self = {<cycle>}}"),
    ("return channel.new()", "channel"),
    ("return string", "{...}"),
])
def test_results_read_as_lua_prints_them(shell: Shell, code: str, text: str) -> None:
    """Returned values are shown as Lua would write them, nested, cycles and views marked."""
    assert shell.run(code).text == text


def test_long_tables_are_capped(shell: Shell) -> None:
    """A long table shows its first 100 items and says how many more there are."""
    text = shell.run("local t = {} for i = 1, 250 do t[i] = i end return t").text
    assert text.startswith("{1, 2, 3") and text.endswith(", ... (150 more)}")


def test_value_reaches_python_as_plain_data(shell: Shell) -> None:
    """CellResult.value is the first value as plain Python data."""
    res = shell.run("return {a = {1, 2}}, 'second'")
    assert res.has_value and res.value == {"a": [1, 2]}


def test_print_goes_to_the_cell_in_order(shell: Shell) -> None:
    """print lines arrive on the caller's thread, in order, while the cell runs."""
    seen: list[tuple[str, str]] = []
    caller = threading.current_thread().name
    shell.run("for i = 1, 3 do print('line', i) time.sleep('5ms') end",
              on_output=lambda line: seen.append((threading.current_thread().name, line)))
    assert seen == [(caller, "line\t1"), (caller, "line\t2"), (caller, "line\t3")]


def test_background_output_stays_out_of_the_cell(shell: Shell) -> None:
    """A process spawned by a cell prints into its own log, not into the cell."""
    node = shell.node
    node.define("t:talker", "process.lua", source="return { main = function() print('from background') end }")
    text, lines = run(shell, "local pid = process.spawn_monitored('t:talker')\n"
                             "process.events():receive()\nreturn pid")
    assert lines == []
    assert node.logs(text.strip('"')) == ["from background"]


def test_runtime_error_names_the_cell_line(shell: Shell) -> None:
    """A runtime error is a LuaError with cell:LINE and the Lua traceback; the shell goes on."""
    shell.run("kept = 'yes'")
    with pytest.raises(LuaError) as exc:
        shell.run("local a = 1\nlocal b = nil\nreturn b.c")
    message = str(exc.value)
    assert message.startswith("cell:3: attempt to index a nil value (local 'b')")
    assert "stack traceback:" in message and "scheduler.lua" not in message
    assert shell.run("return kept").value == "yes"


def test_syntax_error_names_the_cell_line(shell: Shell) -> None:
    """A syntax error is a LuaError naming the line."""
    with pytest.raises(LuaError, match=r"^cell:2: unexpected symbol near '='"):
        shell.run("local ok = 1\nreturn = 2")


def test_error_objects_and_yield_at_top_level(shell: Shell) -> None:
    """error() with a table and a top-level coroutine.yield are clear errors."""
    with pytest.raises(LuaError, match="boom"):
        shell.run("error({message = 'boom'})")
    with pytest.raises(LuaError, match="yield from outside a coroutine"):
        shell.run("coroutine.yield(1)")


def test_shell_receives_messages(shell: Shell) -> None:
    """The shell has an inbox: a message sent to its PID is received in a later cell."""
    shell.node.send(shell.pid, "hello", {"n": 1})
    assert shell.run("local m = process.inbox():receive()\nreturn m:topic(), m:payload():data().n").text == \
        '"hello", 1'


@pytest.mark.parametrize("code", [
    "process.inbox():receive()",
    "time.sleep('1h')",
    "channel.select{process.inbox():case_receive(), time.after('1h'):case_receive()}",
    "local n = 0 while true do n = n + 1 end",
    "while true do pcall(function() while true do end end) end",
    "local co = coroutine.wrap(function() while true do end end) co()",
])
def test_interrupt_stops_a_waiting_or_looping_cell(shell: Shell, code: str) -> None:
    """interrupt() ends a cell that waits or loops within a second; globals and inbox survive."""
    shell.run("kept = 7")
    timer = threading.Timer(0.2, shell.interrupt)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        shell.run(code)
    assert time.monotonic() - t0 < 1.2
    assert shell.run("return kept").value == 7
    shell.node.send(shell.pid, "after", 1)
    assert shell.run("return process.inbox():receive():topic()").value == "after"


def test_timeout_stops_the_cell(shell: Shell) -> None:
    """--timeout: the cell is stopped and Timeout says after how long."""
    with pytest.raises(Timeout, match=r"stopped after 0\.3s"):
        shell.run("while true do end", timeout=0.3)
    assert shell.run("return 1").value == 1


def test_a_cell_longer_than_the_host_budget_runs(shell: Shell) -> None:
    """Cells have no instruction budget (only interrupts and --timeout stop them)."""
    assert shell.run("local n = 0 for i = 1, 3e7 do n = n + 1 end return n").value == 30_000_000
