"""The kernels over the real Jupyter protocol (ZeroMQ, through jupyter_client): cells, errors, interrupts,
restart, shutdown, and both kernelspecs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import find_kernel_specs
from jupyter_client.manager import KernelManager, start_new_kernel

Kernel = tuple[KernelManager, BlockingKernelClient]


@pytest.fixture(scope="session")
def kernelspecs() -> None:
    """Both kernelspecs, installed into this environment if they are not there yet (make does it too)."""
    if not {"wippy", "wippy-lua"} <= set(find_kernel_specs()):
        subprocess.run([sys.executable, "-m", "wippy.kernel", "install", "--sys-prefix"], check=True,
                       capture_output=True)
    assert {"wippy", "wippy-lua"} <= set(find_kernel_specs())


def _start(name: str, workdir: Path) -> Kernel:
    # warnings are errors in the kernel too: a deprecation on shutdown must fail here, not in a user's lab
    env = {**os.environ, "WIPPY_DATA_DIR": str(workdir / "data"), "PYTHONWARNINGS": "error"}
    km, kc = start_new_kernel(kernel_name=name, startup_timeout=30, cwd=str(workdir), env=env)
    return km, kc


def _stop(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)
    else:  # it shut down on its own request: release the connection file, sockets and zmq context
        km.cleanup_resources()


@pytest.fixture(scope="module")
def kernel(kernelspecs: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    km, kc = _start("wippy", tmp_path_factory.mktemp("kernel"))
    yield km, kc
    _stop(km, kc)


def execute(kc: BlockingKernelClient, code: str, timeout: float = 20) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a cell; return the execute_reply's content and the cell's iopub messages (stream, result, displays
    and their updates, error)."""
    outputs: list[dict[str, Any]] = []

    def keep(msg: dict[str, Any]) -> None:
        if msg["msg_type"] in ("stream", "execute_result", "display_data", "update_display_data", "error"):
            outputs.append(msg)

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=keep)
    return reply["content"], outputs


def stdout(outputs: list[dict[str, Any]]) -> str:
    streams = [m["content"] for m in outputs if m["msg_type"] == "stream"]
    return "".join(c["text"] for c in streams if c["name"] == "stdout")


def result(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    results = [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"]
    assert len(results) == 1, outputs
    return results[0]


def interrupted(km: KernelManager, kc: BlockingKernelClient, code: str) -> tuple[dict[str, Any], float]:
    """Start a cell, interrupt it once it runs; return its reply and the seconds from interrupt to reply."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + 10
    while True:  # wait until the cell is executing
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.3)
    t0 = time.monotonic()
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], time.monotonic() - t0


def execute_after_error(kc: BlockingKernelClient, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a cell right after one that ended in an error: ipykernel aborts the requests that reach it
    while it is still stopping on that error (``stop_on_error``; on a busy core that window can catch
    the next request), so an ``aborted`` reply is sent again, a bounded number of times."""
    for _ in range(20):
        reply, outputs = execute(kc, code)
        if reply["status"] != "aborted":
            return reply, outputs
    raise AssertionError(f"the kernel aborted {code!r} 20 times in a row")


# ---------------------------------------------------------------- the wippy kernel


def test_kernel_info(kernel: Kernel) -> None:
    _, kc = kernel
    info = kc.kernel_info(reply=True, timeout=10)["content"]
    assert info["implementation"] == "wippy"
    assert info["language_info"]["name"] == "python"


def test_python_cell_and_the_node(kernel: Kernel) -> None:
    """Python cells run as in IPython, and reach the kernel's node as `node`."""
    _, kc = kernel
    reply, outputs = execute(kc, "1 + 1")
    assert reply["status"] == "ok" and result(outputs)["text/plain"] == "2"
    reply, outputs = execute(kc, "mb = node.mailbox()\nnode.send(mb.pid, 'topic', {'a': [1]})\n"
                                 "mb.receive(timeout=5).payload")
    assert reply["status"] == "ok" and result(outputs)["text/plain"] == "{'a': [1]}"
    reply, outputs = execute(kc, "import os; os.path.isdir(node.data_dir), str(node.data_dir).endswith('data')")
    assert result(outputs)["text/plain"] == "(True, True)"


def test_lua_cell_prints_and_returns(kernel: Kernel) -> None:
    _, kc = kernel
    reply, outputs = execute(kc, "%%lua\nprint('hello from lua')\nreturn 40 + 2")
    assert reply["status"] == "ok"
    assert stdout(outputs) == "hello from lua\n"
    assert result(outputs) == {"text/plain": "42"}
    reply, outputs = execute(kc, "%%lua\nlocal t = {1, 2, x = {y = true}}")
    assert reply["status"] == "ok" and not [m for m in outputs if m["msg_type"] == "execute_result"]


def test_background_output_goes_to_logs(kernel: Kernel) -> None:
    """A process the cell spawns prints into its log (%logs), not into this cell or a later one."""
    _, kc = kernel
    execute(kc, "%%lua --entry app.kernel:talker\nreturn { main = function() print('from the background') end }")
    _, outputs = execute(kc, "%%lua\nlocal pid = process.spawn_monitored('app.kernel:talker')\n"
                                 "process.events():receive()\nprint('from the cell')\nreturn pid")
    assert stdout(outputs) == "from the cell\n"
    pid = result(outputs)["text/plain"].strip('"')
    _, outputs = execute(kc, f"%logs {pid}")
    assert stdout(outputs) == "from the background\n"


def test_lua_error_is_a_lua_error(kernel: Kernel) -> None:
    """A Lua error: ename LuaError, the cell line in the traceback, no Python frames; the shell lives on."""
    _, kc = kernel
    execute(kc, "%%lua\nsurvivor = 'still here'")
    reply, outputs = execute(kc, "%%lua\nlocal x = 1\nerror('boom')")
    assert reply["status"] == "error" and reply["ename"] == "LuaError"
    traceback = "\n".join(reply["traceback"])
    assert "cell:2: boom" in traceback and "stack traceback:" in traceback
    assert "Traceback (most recent call last)" not in traceback and ".py" not in traceback
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert errors and errors[0]["ename"] == "LuaError"
    reply, outputs = execute(kc, "%lua survivor")
    assert result(outputs)["text/plain"] == '"still here"'


def test_ps_and_bad_input(kernel: Kernel) -> None:
    """%ps gives text and HTML tables; wrong use is one message on stderr, no traceback."""
    _, kc = kernel
    reply, outputs = execute(kc, "%ps")
    data = result(outputs)
    assert data["text/plain"].startswith("PID") and "@shell" in data["text/plain"]
    assert data["text/html"].startswith("<table")
    reply, outputs = execute(kc, "%spawn handler")
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    assert [m["content"]["text"] for m in outputs] == [
        "UsageError: %spawn: invalid entry ID 'handler': IDs read 'namespace:name' "
        "(for example 'app.workers:handler')\n"]


def test_whoami_and_policy_through_the_kernel(kernel: Kernel) -> None:
    """%whoami and %policy over ZeroMQ: a policy makes the node strict, a narrowed notebook is refused
    with API.md's text in its %%lua cells, the log shows the refusal, --reset gives every right back."""
    _, kc = kernel
    reply, _ = execute(kc, "%%registry\nnamespace: k.sec\nentries:\n  - name: read\n    kind: security.policy\n"
                           "    groups: [readers]\n    policy: {actions: [registry.get], resources: ['k.cfg:*'], "
                           "effect: allow}\n  - name: other\n    kind: registry.entry\n")
    assert reply["status"] == "ok"
    _, outputs = execute(kc, "%whoami --as kim --scope readers")
    assert result(outputs)["text/plain"] == "actor  kim\nscope  k.sec:read\nmode   strict"
    _, outputs = execute(kc, "%%lua\nlocal e, err = registry.get('k.sec:other')\nreturn err")
    assert result(outputs)["text/plain"] == \
        '"permission denied: registry.get on k.sec:other for actor kim (no policy allows it)"'
    _, outputs = execute(kc, "%policy log")
    assert "kim" in result(outputs)["text/plain"] and "k.sec:other" in result(outputs)["text/plain"]
    _, outputs = execute(kc, "%policy check registry.get k.cfg:x")
    assert result(outputs)["text/plain"].startswith("permission granted")
    _, outputs = execute(kc, "%whoami --reset")
    assert result(outputs)["text/plain"].startswith("actor  notebook\nscope  * (every right)")
    reply, _ = execute(kc, "%registry reset")
    assert reply["status"] == "ok"


def test_an_agent_cell_through_the_kernel(kernel: Kernel) -> None:
    """%%agent over ZeroMQ against a scripted model server: the live view's static picture and text,
    a Lua agent.run from a %%lua cell, %agent list."""
    from llm_server import ScriptedLLM, text, tool_call

    _, kc = kernel
    with ScriptedLLM() as llm:
        tree = (f"%%registry\nnamespace: k.ag\nentries:\n  - name: gpt\n    kind: registry.entry\n"
                f"    meta: {{type: llm.model, name: kgpt}}\n    base_url: {llm.url}\n    provider_model: x\n"
                "  - name: add\n    kind: function.lua\n    meta: {type: tool, input_schema: {type: object}}\n"
                "    source: 'return { main = function(a) return 40 + 2 end }'\n"
                "  - name: bot\n    kind: registry.entry\n    meta: {type: agent.gen1, name: bot}\n"
                "    prompt: Be brief.\n    model: kgpt\n    tools: [k.ag:add]\n")
        reply, _ = execute(kc, tree)
        assert reply["status"] == "ok"
        llm.push(tool_call("add", {}), text("42."))
        reply, outputs = execute(kc, "%%agent k.ag:bot\nWhat is the answer?", timeout=60)
        assert reply["status"] == "ok"
        shown = [o for o in outputs if o["msg_type"] in ("display_data", "update_display_data")]
        assert shown and "text/html" in shown[-1]["content"]["data"]
        plain = shown[-1]["content"]["data"]["text/plain"]
        assert "agent k.ag:bot" in plain and "tool add({}) = 42" in plain and "answer: 42." in plain
        llm.push(text("hi from lua"))
        _, outputs = execute(kc, "%%lua\nlocal r, err = agent.run('k.ag:bot', 'hello')\nreturn r and r.result or err")
        assert result(outputs)["text/plain"] == '"hi from lua"'
        _, outputs = execute(kc, "%agent list k.ag:bot")
        assert result(outputs)["text/plain"].count("k.ag:bot") == 2
    reply, _ = execute(kc, "%registry reset")
    assert reply["status"] == "ok"


def test_interrupt_a_waiting_cell(kernel: Kernel) -> None:
    km, kc = kernel
    execute(kc, "%%lua\nkept = 7")
    reply, seconds = interrupted(km, kc, "%%lua\nprocess.inbox():receive()")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert seconds < 3
    reply, outputs = execute_after_error(kc, "%lua kept")
    assert result(outputs)["text/plain"] == "7"


def test_interrupt_a_looping_cell(kernel: Kernel) -> None:
    km, kc = kernel
    execute(kc, "%%lua\nkept_too = 'yes'")
    reply, seconds = interrupted(km, kc, "%%lua\nwhile true do end")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert seconds < 3
    reply, outputs = execute_after_error(kc, "%lua kept_too .. '!'")
    assert result(outputs)["text/plain"] == '"yes!"'
    reply, outputs = execute(kc, "2 * 21")  # Python cells too
    assert result(outputs)["text/plain"] == "42"


def test_restart_gives_a_fresh_node_and_shutdown_ends_the_process(kernelspecs: None, tmp_path: Path) -> None:
    km, kc = _start("wippy", tmp_path)
    try:
        execute(kc, "%%lua\nbefore_restart = 1")
        execute(kc, "%%lua --entry app:kept\nreturn { main = function() return 'still here' end }")
        reply, outputs = execute(kc, "first = id(node); import os; os.getpid()")
        old_pid = int(result(outputs)["text/plain"])
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=30)
        reply, outputs = execute(kc, "%lua before_restart")
        assert result(outputs)["text/plain"] == "nil"
        # the registry lives in the data directory: a restarted kernel restores it (API.md)
        reply, outputs = execute(kc, "%lua process.exec('app:kept')")
        assert result(outputs)["text/plain"] == '"still here"'
        reply, outputs = execute(kc, "'first' in dir(), os.getpid() if 'os' in dir() else None")
        assert result(outputs)["text/plain"] == "(False, None)"
        assert not Path(f"/proc/{old_pid}").exists() or _zombie(old_pid)
        reply, outputs = execute(kc, "import os; os.getpid()")
        pid = int(result(outputs)["text/plain"])
        kc.shutdown()  # what km.shutdown_kernel() sends first; the reply says do_shutdown went well
        reply = kc.control_channel.get_msg(timeout=10)
        assert reply["msg_type"] == "shutdown_reply" and reply["content"]["status"] == "ok", reply["content"]
        process = km.provisioner.process  # type: ignore[union-attr]
        assert process.wait(timeout=5) == 0  # it exited by itself, cleanly
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        assert children == ""
    finally:
        _stop(km, kc)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


# ---------------------------------------------------------------- the wippy-lua kernel


def test_lua_kernel(kernelspecs: None, tmp_path: Path) -> None:
    """Cells are Lua unless they start with %; the same %%lua path underneath."""
    km, kc = _start("wippy-lua", tmp_path)
    try:
        info = kc.kernel_info(reply=True, timeout=10)["content"]
        assert info["language_info"]["name"] == "lua"
        reply, outputs = execute(kc, "return 1 + 1")
        assert reply["status"] == "ok" and result(outputs)["text/plain"] == "2"
        reply, outputs = execute(kc, "print('x')\ny = 3")
        assert stdout(outputs) == "x\n"
        reply, outputs = execute(kc, "y = y + 1\nerror('bad')")
        assert reply["ename"] == "LuaError" and "cell:2: bad" in "\n".join(reply["traceback"])
        reply, outputs = execute(kc, "%lua y")
        assert result(outputs)["text/plain"] == "4"
        reply, outputs = execute(kc, "%ps")
        assert "@shell" in result(outputs)["text/plain"]
        assert "process" in complete(kc, "proc")["matches"]
        assert is_complete(kc, "if y then") == "incomplete"
    finally:
        _stop(km, kc)


# ---------------------------------------------------------------- completion, inspection, is_complete


def complete(kc: BlockingKernelClient, code: str, cursor: int | None = None) -> dict[str, Any]:
    reply = kc.complete(code, len(code) if cursor is None else cursor, reply=True, timeout=10)
    assert reply["content"]["status"] == "ok"
    return reply["content"]  # type: ignore[no-any-return]


def is_complete(kc: BlockingKernelClient, code: str) -> str:
    msg_id = kc.is_complete(code)
    reply = kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply["content"]["status"]  # type: ignore[no-any-return]


def test_completion_in_lua_cells(kernel: Kernel) -> None:
    """API members, the shell's globals and entry IDs in %%lua cells; IPython's completion elsewhere."""
    _, kc = kernel
    execute(kc, "%%lua\nmy_counter_total = 1")
    execute(kc, "%%lua --entry app.completion:worker\nreturn { main = function() end }")
    code = "%%lua\nlocal p = process.spaw"
    content = complete(kc, code)
    assert "spawn_monitored" in content["matches"]
    assert code[content["cursor_start"]:content["cursor_end"]] == "spaw"
    assert "my_counter_total" in complete(kc, "%%lua\nreturn my_counter_t")["matches"]
    assert complete(kc, "%%lua\nprocess.spawn('app.compl")["matches"] == ["app.completion:worker"]
    execute(kc, "%%lua\nsettings = {retries = 3, region = 'eu'}")
    assert complete(kc, "%%lua\nreturn settings.re")["matches"] == ["region", "retries"]
    assert "import" in complete(kc, "impo")["matches"]  # Python cells: IPython's completer


def test_inspection_and_is_complete(kernel: Kernel) -> None:
    _, kc = kernel
    code = "%%lua\nprocess.send(pid, 'x')"
    content = kc.inspect(code, code.index("send") + 2, reply=True, timeout=10)["content"]
    assert content["found"] and content["data"]["text/plain"].startswith("process.send(dest, topic")
    content = kc.inspect("len", 3, reply=True, timeout=10)["content"]
    assert content["found"]  # Python: IPython's inspector
    assert is_complete(kc, "%%lua\nfor i = 1, 3 do") == "incomplete"
    assert is_complete(kc, "%%lua\nx = 1") == "complete"
    assert is_complete(kc, "x = (1,") == "incomplete"


# teaching mode: a world of 26 processes (timers, links, a supervisor restarting crashed tickers)
SEEDED_CELLS = [
    """%%lua --entry t.seed:ticker
return { main = function(tag, sink, crash_at)
  for i = 1, 6 do
    time.sleep(math.random(5, 50) .. "ms")
    process.send(sink, "tick", tag .. ":" .. i)
    if i == crash_at and math.random(3) ~= 1 then error("ticker " .. tag .. " crashed") end
  end
  process.inbox():receive()
end }""",
    """%%lua --entry t.seed:links
return { main = function(depth, sink)
  if depth > 0 then process.spawn_linked("t.seed:links", "app:processes", depth - 1, sink) end
  time.sleep(math.random(20, 200) .. "ms")
  process.send(sink, "tick", "chain" .. depth)
  if depth == 0 then error("tail gives up") end
  process.inbox():receive()
end }""",
    """%%lua --entry t.seed:sink
return { main = function()
  local got = {}
  while true do got[#got + 1] = process.inbox():receive():payload():data() end
end }""",
    "%runtime seed 11",
    """%%lua
local sink = process.spawn("t.seed:sink", "app:processes")
local children = {}
for i = 0, 4 do
  children[#children + 1] = { id = "t" .. i, process = "t.seed:ticker",
                              input = { "t" .. i, sink, (i == 1 or i == 3) and 3 or 0 } }
end
assert(supervisor.start({ id = "tickers", strategy = "one_for_one", max_restarts = 50, period = 60,
                          children = children }))
for i = 1, 4 do process.spawn("t.seed:links", "app:processes", 3, sink) end
print("built")""",
    "%runtime log 10000",
]


def _seeded_log(kc: BlockingKernelClient) -> list[str]:
    for cell in SEEDED_CELLS[:-1]:
        reply, outputs = execute(kc, cell, timeout=60)
        assert reply["status"] == "ok", outputs
    reply, outputs = execute(kc, SEEDED_CELLS[-1], timeout=60)
    assert reply["status"] == "ok", outputs
    return str(result(outputs)["text/plain"]).splitlines()


def test_the_same_seed_and_cells_give_the_same_events_across_a_kernel_restart(kernelspecs: None,
                                                                              tmp_path: Path) -> None:
    km, kc = _start("wippy", tmp_path)
    try:
        first = _seeded_log(kc)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=30)
        second = _seeded_log(kc)
    finally:
        _stop(km, kc)
    spawned = {ln.split()[-1] for ln in first if " spawn " in ln}
    assert len(spawned) >= 20, first[:40]
    kinds = {ln.split()[1] for ln in first}
    assert {"spawn", "deliver", "timer", "link", "exit"} <= kinds, kinds
    assert first == second
