"""The magics, driven in-process through IPython's InteractiveShell: every magic and each kind of bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wippy.magics
from conftest import magics_shell, usage_error
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from wippy.magics.lua import LuaValue
from wippy.magics.process import ProcessTable
from wippy.runtime import LuaError, Mailbox, Node, Timeout

PID = re.compile(r"^\{app:processes\|0x[0-9a-f]+\}$")

# an entry that reports what it gets (arguments, messages, a CANCEL) to the Python mailbox named "probe"
REPORTER = """
return { main = function(...)
  process.send("probe", "started", {...})
  local events = process.events()
  while true do
    local r = channel.select{process.inbox():case_receive(), events:case_receive()}
    if r.channel == events then
      process.send("probe", "cancel", r.value.reason)
      return "cancelled"
    end
    process.send("probe", r.value:topic(), r.value:payload():data())
  end
end }
"""


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """An InteractiveShell with `%load_ext wippy.magics`, which starts a node of its own."""
    with magics_shell(tmp_path_factory.mktemp("wippy-data")) as shell:
        n = wippy.magics.node()
        n.define("test.magics:reporter", "process.lua", source=REPORTER)
        yield shell
    assert not n.started  # the extension started it, so unloading stopped it


@pytest.fixture
def node(ip: InteractiveShell) -> Node:
    return wippy.magics.node()


@pytest.fixture
def probe(node: Node) -> Iterator[Mailbox]:
    mb = node.mailbox("probe")
    yield mb
    mb.close()


def run(ip: InteractiveShell, cell: str) -> ExecutionResult:
    return ip.run_cell(cell, store_history=False)




def spawn_reporter(ip: InteractiveShell, probe: Mailbox, args: str = "") -> str:
    res = run(ip, f"%spawn test.magics:reporter {args}")
    assert res.success, res.error_in_exec
    pid = res.result
    assert isinstance(pid, str) and PID.match(pid)
    assert probe.receive(timeout=5).topic == "started"
    return pid


# ---------------------------------------------------------------- the extension and the node


def test_node_is_in_the_namespace_and_has_its_data_dir(ip: InteractiveShell, node: Node) -> None:
    """`node` in cells is the node of the magics; its data directory is WIPPY_DATA_DIR, created."""
    assert ip.user_ns["node"] is node
    assert node.started
    assert node.data_dir is not None
    data_dir = Path(node.data_dir)
    assert data_dir.is_dir() and data_dir.name.startswith("wippy-data")


def test_python_cells_reach_the_same_node(ip: InteractiveShell, probe: Mailbox) -> None:
    """Python in a cell spawns and receives with the node's own API."""
    res = run(ip, "pid = node.spawn('test.magics:reporter', 7)\nnode.send(pid, 'ping', {'n': 1})")
    assert res.success, res.error_in_exec
    assert probe.receive(timeout=5).payload == [7]
    msg = probe.receive(timeout=5)
    assert (msg.topic, msg.payload) == ("ping", {"n": 1})
    node = ip.user_ns["node"]
    node.terminate(ip.user_ns["pid"])


# ---------------------------------------------------------------- %%lua and %lua


def test_lua_cell_prints_and_returns(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    """print goes to the cell's stdout; the returned value reads as Lua prints it."""
    capsys.readouterr()
    res = ip.run_cell_magic("lua", "", "print('hello', 1)\nanswer = 40 + 2\nreturn answer, {1, x = 'y'}")
    assert isinstance(res, LuaValue)
    assert repr(res) == '42, {1, x = "y"}'
    assert res.value == 42
    assert capsys.readouterr().out == "hello\t1\n"


def test_globals_persist_and_lua_line_magic(ip: InteractiveShell) -> None:
    """Globals of one cell are there in the next; %lua EXPR shows one expression."""
    assert ip.run_cell_magic("lua", "", "counter = 41") is None
    assert repr(ip.run_line_magic("lua", "counter + 1")) == "42"
    res = run(ip, "%lua 'a' .. 'b'")
    assert res.success and repr(res.result) == '"ab"'
    assert ip.run_line_magic("lua", "from_a_line = counter * 2") is None  # a statement runs as one
    assert repr(ip.run_line_magic("lua", "from_a_line")) == "82"


def test_a_cell_without_return_has_no_result(ip: InteractiveShell) -> None:
    res = run(ip, "%%lua\nlocal x = 1")
    assert res.success and res.result is None


def test_lua_error_shows_the_lua_message_not_python(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    """A Lua error is a LuaError with the cell line and the Lua traceback, and no Python frames."""
    capsys.readouterr()
    res = run(ip, "%%lua\nlocal x = 1\nerror('boom')")
    assert isinstance(res.error_in_exec, LuaError)
    out = capsys.readouterr().out
    assert "LuaError" in out and "cell:2: boom" in out and "stack traceback:" in out
    assert "Traceback (most recent call last)" not in out and ".py" not in out
    assert repr(ip.run_line_magic("lua", "1")) == "1"  # the shell lives on


def test_timeout_stops_the_cell(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    res = run(ip, "%%lua --timeout 0.3\nwhile true do end")
    assert isinstance(res.error_in_exec, Timeout)
    out = capsys.readouterr().out
    assert "the cell was stopped after 0.3s" in out and "Traceback" not in out


def test_errors_raised_by_python_code_keep_their_traceback(ip: InteractiveShell,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The Lua display is only for Lua cells: a Timeout raised by Python code shows IPython's traceback."""
    capsys.readouterr()
    res = run(ip, "node.mailbox().receive(timeout=0.01)")
    assert isinstance(res.error_in_exec, Timeout)
    assert "Timeout" in capsys.readouterr().out
    assert res.error_in_exec.__traceback__ is not None


def test_entry_is_defined_then_replaced(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    """--entry defines (then replaces) the entry, with kind and method, and says so in one line."""
    capsys.readouterr()
    src = "function run(a, b) return a + b end"
    assert ip.run_cell_magic("lua", "--entry app.test:adder --kind function.lua --method run", src) is None
    assert capsys.readouterr().out == "defined app.test:adder (function.lua)\n"
    entry = node.entries.get("app.test:adder")
    assert entry is not None and entry.kind == "function.lua"
    assert entry.data["source"] == src and entry.data["method"] == "run"
    ip.run_cell_magic("lua", "--entry app.test:adder", "return { main = function() return 1 end }")
    assert capsys.readouterr().out == "replaced app.test:adder (process.lua)\n"
    assert node.exec("app.test:adder", timeout=5) == 1


def test_entry_with_a_syntax_error_is_refused(ip: InteractiveShell, node: Node,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    res = run(ip, "%%lua --entry app.test:broken\nlocal x =\n")
    assert isinstance(res.error_in_exec, LuaError)
    assert "app.test:broken:2:" in capsys.readouterr().out
    assert node.entries.get("app.test:broken") is None


@pytest.mark.parametrize(("cell", "message"), [
    ("%%lua --entry handler\nreturn 1", "invalid entry ID 'handler': IDs read 'namespace:name'"),
    ("%%lua --kind function.lua\nreturn 1", "--kind applies only with --entry ID"),
    ("%%lua --method run\nreturn 1", "--method applies only with --entry ID"),
    ("%%lua --entry app:x --kind thing.lua\nreturn 1", "argument --kind: invalid choice: 'thing.lua'"),
    ("%%lua --bogus\nreturn 1", "%%lua: unrecognized arguments: --bogus"),
    ("%%lua --timeout 0\nreturn 1", "--timeout must be a positive number of seconds"),
    ("%%lua --entry app:x --timeout 1\nreturn 1", "--timeout applies to cells that run"),
    ("%%lua --entry app:x\n  \n", "the cell is empty"),
    ("%lua", "%lua needs a Lua expression"),
])
def test_lua_magic_bad_input(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str, message: str) -> None:
    assert message in usage_error(ip, cell, capsys)


# ---------------------------------------------------------------- %ps


def test_ps_lists_processes_as_text_and_html(ip: InteractiveShell, node: Node, probe: Mailbox) -> None:
    shell_pid = node.shell().pid
    pid = spawn_reporter(ip, probe, "--name reporter-ps")
    table = run(ip, "%ps").result
    assert isinstance(table, ProcessTable)
    text = repr(table)
    header = text.splitlines()[0].split()
    assert header == ["PID", "NAME", "ENTRY", "ACTOR", "HOST", "STATUS", "MAILBOX", "IN", "OUT", "MEMORY", "UPTIME"]
    row = next(line for line in text.splitlines() if line.startswith(pid))
    assert "reporter-ps" in row and "test.magics:reporter" in row and "app:processes" in row
    assert re.search(r"\d+(\.\d)? (B|KB)", row)
    assert shell_pid in text
    html = table._repr_html_()
    assert html.startswith("<table") and "<th>PID</th>" in html and f"<td>{pid}</td>" in html
    node.terminate(pid)


def test_ps_refuses_options(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(ip, "%ps --bogus", capsys) == (
        "%ps: unrecognized arguments: --bogus (see %ps? for the usage)")


# ---------------------------------------------------------------- %spawn


def test_spawn_returns_the_pid_shown_once(ip: InteractiveShell, probe: Mailbox,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """%spawn returns the PID (usable as `pid = %spawn ...`), shown bare, printed nowhere else."""
    capsys.readouterr()
    pid = spawn_reporter(ip, probe)
    assert repr(pid) == str(pid)
    assert capsys.readouterr().out.count(str(pid)) <= 1
    ip.user_ns["node"].terminate(pid)


@pytest.mark.parametrize(("args", "received"), [
    ('[1, "two", {"three": 3}]', [1, "two", {"three": 3}]),
    ('{"n": 3}', [{"n": 3}]),
    ("42", [42]),
    ('"text"', ["text"]),
    ("app:processes [true]", [True]),
    ("--name reporter-args [[1, 2]]", [[1, 2]]),
])
def test_spawn_arguments(ip: InteractiveShell, node: Node, probe: Mailbox, args: str, received: list[Any]) -> None:
    """A JSON array is the argument list; any other JSON value is the one argument; HOST may come first."""
    res = run(ip, f"%spawn test.magics:reporter {args}")
    assert res.success, res.error_in_exec
    msg = probe.receive(timeout=5)
    assert msg.payload == received
    if "--name" in args:
        assert node.lookup("reporter-args") == res.result
    node.terminate(res.result)


@pytest.mark.parametrize(("cell", "message"), [
    ("%spawn reporter", "%spawn: invalid entry ID 'reporter': IDs read 'namespace:name'"),
    ("%spawn app.none:thing", "%spawn: unknown entry 'app.none:thing'"),
    ("%spawn app.none:thing", "define it with %%lua --entry app.none:thing"),
    ("%spawn test.magics:reporter app:nohost", "%spawn: unknown host 'app:nohost'; hosts: app:processes"),
    ("%spawn test.magics:reporter [1, two]", "%spawn: the argument list is not JSON (Expecting value at column 5"),
    ("%spawn test.magics:reporter {'a': 1}", 'strings in double quotes ("text")'),
    ("%spawn", "%spawn: the following arguments are required: ID"),
    ("%spawn --bogus test.magics:reporter", "%spawn: unrecognized arguments: --bogus"),
])
def test_spawn_bad_input(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str, message: str) -> None:
    assert message in usage_error(ip, cell, capsys)


def test_spawn_of_a_function_entry_names_the_kind(ip: InteractiveShell, node: Node,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    node.define("test.magics:fn", "function.lua", source="return { main = function() end }")
    assert "only process.lua entries can be spawned" in usage_error(ip, "%spawn test.magics:fn", capsys)


# ---------------------------------------------------------------- %send, %kill, %cancel


def test_send_delivers_json_payloads(ip: InteractiveShell, node: Node, probe: Mailbox) -> None:
    pid = spawn_reporter(ip, probe, "--name reporter-send")
    assert run(ip, f'%send {pid} job {{"items": [1, 2], "note": "a b"}}').success
    msg = probe.receive(timeout=5)
    assert (msg.topic, msg.payload) == ("job", {"items": [1, 2], "note": "a b"})
    assert run(ip, "%send reporter-send bare").success  # by name; no JSON sends nil
    msg = probe.receive(timeout=5)
    assert (msg.topic, msg.payload) == ("bare", None)
    node.terminate(pid)


def test_send_bad_input(ip: InteractiveShell, node: Node, probe: Mailbox, capsys: pytest.CaptureFixture[str]) -> None:
    pid = spawn_reporter(ip, probe)
    assert "%send: the payload is not JSON" in usage_error(ip, f"%send {pid} job {{bad", capsys)
    assert usage_error(ip, "%send nobody job", capsys) == (
        "%send: no process is registered as 'nobody'; %ps lists the running processes")
    assert "unknown host 'app:nohost'" in usage_error(ip, "%send {app:nohost|0x00001} job", capsys)
    assert "%send: no process {app:processes|0xfffff} is running" in usage_error(
        ip, "%send {app:processes|0xfffff} job", capsys)
    assert "the following arguments are required: TOPIC" in usage_error(ip, f"%send {pid}", capsys)
    assert "topic '@x' is reserved" in usage_error(ip, f"%send {pid} @x", capsys)
    node.terminate(pid)


def test_kill_terminates(ip: InteractiveShell, node: Node, probe: Mailbox, capsys: pytest.CaptureFixture[str]) -> None:
    pid = spawn_reporter(ip, probe)
    capsys.readouterr()
    assert run(ip, f"%kill {pid}").success
    assert capsys.readouterr().out == f"{pid} terminated\n"
    assert not node.alive(pid)
    assert usage_error(ip, f"%kill {pid}", capsys).startswith(
        f"%kill: process {pid} is not running (it exited: terminated")
    assert "'not-a-pid'" in usage_error(ip, "%kill not-a-pid", capsys)


def test_cancel_passes_the_reason(ip: InteractiveShell, node: Node, probe: Mailbox,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    pid = spawn_reporter(ip, probe)
    capsys.readouterr()
    assert run(ip, f"%cancel {pid} time to go").success
    assert capsys.readouterr().out == f"cancel sent to {pid}\n"
    msg = probe.receive(timeout=5)
    assert (msg.topic, msg.payload) == ("cancel", "time to go")
    assert "%cancel: no process is registered as 'ghost'" in usage_error(ip, "%cancel ghost", capsys)


# ---------------------------------------------------------------- %logs


def test_logs_of_one_process_and_of_all(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    node.define("test.magics:talker", "process.lua",
                source="return { main = function(n) for i = 1, n do print('line', i) end end }")
    pid = node.spawn("test.magics:talker", 3)
    with node.mailbox() as mb:
        mb.monitor(pid)
        mb.wait_exit(pid, 5)
    capsys.readouterr()
    assert run(ip, f"%logs {pid}").success
    assert capsys.readouterr().out == "line\t1\nline\t2\nline\t3\n"
    assert run(ip, f"%logs --tail 1 {pid}").success
    assert capsys.readouterr().out == "line\t3\n"
    assert run(ip, "%logs").success
    assert f"{pid} line\t2\n" in capsys.readouterr().out


def test_logs_bad_input(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(ip, "%logs {app:processes|0xffffe}", capsys) == (
        "%logs: no process {app:processes|0xffffe} is known; %ps lists the running processes")
    assert "no process is registered as 'ghost'" in usage_error(ip, "%logs ghost", capsys)
    assert "argument --tail: invalid int value: 'x'" in usage_error(ip, "%logs --tail x", capsys)


def test_data_dir_follows_api_md(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """WIPPY_DATA_DIR wins; else one directory per notebook (JPY_SESSION_NAME); else .wippy/."""
    from wippy.magics.current import data_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WIPPY_DATA_DIR", str(tmp_path / "explicit"))
    assert data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("WIPPY_DATA_DIR")
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/01-actors.ipynb")
    assert data_dir() == tmp_path / ".wippy" / "01-actors"
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert data_dir() == tmp_path / ".wippy"


def test_entries_from_cells_get_every_module(ip: InteractiveShell, node: Node) -> None:
    """An entry defined with %%lua --entry has registry and funcs, as API.md says for cells."""
    run(ip, "%%lua --entry test.magics:modules\n"
            "return { main = function() return registry ~= nil and funcs ~= nil end }")
    assert node.exec("test.magics:modules", timeout=5) is True
