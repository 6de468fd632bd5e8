"""Sandbox escape attempts: each fails in a way a user can see, and a neighbour on the same host counts on.

Every test starts a counting neighbour on the attacked host before the attempt and checks afterwards that
it counted on, still answers, and still sees the original shared library. Tests marked xfail(strict=True)
are real escapes found in the runtime: they say what should happen and fail until the runtime is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest_sandbox_helpers import (
    Neighbour,
    define_body,
    run,
    run_exit,
    spawn_body,
    where_stripped,
)
from wippy.runtime import HostOptions, Node, ProcessExited, Timeout

HOST = "app:sbx"
GRANTED = "modules here: channel, ctx, json, logger, process, time"
# the start of a Lua 5.4 binary chunk (signature, version, format, LUAC_DATA)
BINARY = r'"\27LuaT\0\25\147\r\n\26\n\4\8\8xV\0\0\0\0\0\0\0\0\0\0\0"'
READ_ONLY = "attempt to modify a read-only table"
PROTECTED_MT = "cannot change a protected metatable"


def _node() -> Node:
    node = Node(output=None).start()
    node.add_host(HOST, HostOptions(instruction_budget=5_000_000, heap_limit=64 * 1024 * 1024))
    return node


@pytest.fixture(scope="module")
def sandbox_node() -> Iterator[Node]:
    """One node for the module, with a small-budget host that the attempts and neighbours share."""
    node = _node()
    yield node
    node.stop(grace=0.5)


@pytest.fixture
def fresh_node() -> Iterator[Node]:
    """A node of its own, for attempts that really escape and would poison the shared one."""
    node = _node()
    yield node
    node.stop(grace=0.5)


@pytest.fixture
def nb(sandbox_node: Node) -> Iterator[Neighbour]:
    """A counting neighbour on the attacked host, stopped (and checked to end normally) afterwards."""
    n = Neighbour(sandbox_node, HOST)
    yield n
    n.stop()


class Attack:
    """Run an attempt on the shared host between two looks at the neighbour."""

    def __init__(self, node: Node, nb: Neighbour) -> None:
        self.node, self.nb = node, nb

    def run(self, body: str, *args: Any) -> Any:
        """Run `body` on the host; return its result; then check the neighbour."""
        before = self.nb.count()
        try:
            return run(self.node, body, *args, host=HOST)
        finally:
            self.nb.check(before)


@pytest.fixture
def attack(sandbox_node: Node, nb: Neighbour) -> Attack:
    """An attack runner on the shared host, watched by a fresh neighbour."""
    return Attack(sandbox_node, nb)


# ------------------------------------------------------------------------------- the string metatable
def test_string_metatable_is_only_a_name(attack: Attack) -> None:
    """getmetatable("") gives the name "string", whose __index is nothing."""
    out = attack.run('return { getmetatable(""), type(getmetatable("").__index), getmetatable("x") }')
    assert out == ["string", "nil", "string"]


def test_replacing_string_rep_through_the_metatable_fails(attack: Attack) -> None:
    """Writing __index or rep through the string metatable raises, and ("ab"):rep still works."""
    out = attack.run("""
      local ok1, e1 = pcall(function() local mt = getmetatable(""); mt.__index = { rep = print } end)
      local ok2, e2 = pcall(function() getmetatable("").__index.rep = print end)
      local ok3, e3 = pcall(function() ("").rep = function() return "pwned" end end)
      return { ok1, e1, ok2, e2, ok3, e3, ("ab"):rep(2) }
    """)
    assert out[0] is False and where_stripped(out[1]) == "attempt to index a string value (local 'mt')"
    assert out[2] is False and where_stripped(out[3]) == "attempt to index a nil value (field '__index')"
    assert out[4] is False and where_stripped(out[5]) == "attempt to index a string value (constant '')"
    assert out[6] == "abab"


def test_rawset_and_setmetatable_on_the_string_metatable_fail(attack: Attack) -> None:
    """rawset(getmetatable(""), ...) and setmetatable("", ...) are type errors."""
    out = attack.run("""
      local ok1, e1 = pcall(rawset, getmetatable(""), "__index", {})
      local ok2, e2 = pcall(setmetatable, "", {})
      return { ok1, e1, ok2, e2 }
    """)
    assert out[0] is False and out[1].endswith("bad argument #1 to 'rawset' (table expected, got string)")
    assert out[2] is False and out[3].endswith("bad argument #1 to 'setmetatable' (table expected, got string)")


# ------------------------------------------------------------------------------- shared library tables
LIBS = ["string", "table", "math", "utf8", "coroutine", "os", "process", "process.event", "process.registry",
        "channel", "time", "json", "logger", "ctx"]


@pytest.mark.parametrize("lib", LIBS)
def test_shared_library_tables_are_read_only(attack: Attack, lib: str) -> None:
    """Assignment, rawset, getmetatable and setmetatable on a library table all fail."""
    out = attack.run(f"""
      local lib = {lib}
      local ok1, e1 = pcall(function() lib.injected = 1 end)
      local ok2, e2 = pcall(rawset, lib, "injected", 1)
      local ok3, e3 = pcall(setmetatable, lib, {{}})
      return {{ ok1, e1, ok2, e2, ok3, e3, getmetatable(lib), tostring(lib.injected) }}
    """)
    assert out[0] is False and where_stripped(out[1]) == (
        f"attempt to modify read-only table '{lib}' (field 'injected')"
    )
    assert out[2:6] == [False, READ_ONLY, False, READ_ONLY]
    assert out[6] is False        # the metatable is hidden
    assert out[7] == "nil"


def test_replacing_string_rep_does_not_reach_another_process(attack: Attack) -> None:
    """After every write route to string.rep fails, a process spawned next still sees the original."""
    attack.node.define("sbx:rep_reader", "process.lua",
                       source='return { main = function() return string.rep("ab", 2) .. ("cd"):rep(2) end }')
    out = attack.run("""
      local fake = function() return "pwned" end
      local tries = {
        function() string.rep = fake end,
        function() rawset(string, "rep", fake) end,
        function() _G.string.rep = fake end,
        function() rawset(getmetatable(""), "rep", fake) end,
        function() setmetatable(string, { __index = { rep = fake } }) end,
      }
      local failed = 0
      for _, f in ipairs(tries) do if not pcall(f) then failed = failed + 1 end end
      string = { rep = fake }      -- a global of this process only
      local other = process.exec("sbx:rep_reader")
      return { failed, string.rep(), other }
    """)
    assert out == [5, "pwned", "ababcdcd"]


def test_globals_table_metatable_is_protected(attack: Attack) -> None:
    """getmetatable(_G) is false and setmetatable on _G or _ENV raises."""
    out = attack.run("""
      local ok1, e1 = pcall(setmetatable, _G, {})
      local ok2, e2 = pcall(setmetatable, _ENV, nil)
      return { getmetatable(_G), ok1, e1, ok2, e2, rawequal(_G, _ENV) }
    """)
    assert out[0] is False
    assert out[1] is False and out[2].endswith(PROTECTED_MT)
    assert out[3] is False and out[4].endswith(PROTECTED_MT)
    assert out[5] is True


def test_raw_access_to_proxies_sees_nothing(attack: Attack) -> None:
    """next, rawget, rawlen and # on a library view see an empty table, not the library."""
    out = attack.run("""
      return { tostring(next(string)), tostring(next(process)), select("#", next(string)),
               tostring(rawget(string, "rep")), rawlen(string), #table, tostring(rawget(process, "send")) }
    """)
    assert out == ["nil", "nil", 1, "nil", 0, 0, "nil"]


def test_string_format_on_proxies_shows_an_address_only(attack: Attack) -> None:
    """string.format('%s') of a library view is 'table: 0x…'; '%q' of one is refused."""
    out = attack.run("""
      local ok, e = pcall(string.format, "%q", string)
      return { string.format("%s", string), string.format("%s|%s", process, _G), ok, e }
    """)
    assert out[0].startswith("table: 0x")
    assert all(part.startswith("table: 0x") for part in out[1].split("|"))
    assert out[2] is False and out[3] == "bad argument #2 to 'string.format' (value has no literal form)"


def test_pairs_over_a_library_view_cannot_write_it(attack: Attack) -> None:
    """pairs(string) lists the functions, and writing through the view while iterating fails."""
    out = attack.run("""
      local names = {}
      for k in pairs(string) do names[#names + 1] = k end
      local ok, e = pcall(function() for k in pairs(string) do string[k] = nil end end)
      return { #names >= 16, ok, e, string.upper("x") }
    """)
    assert out[0] is True
    assert out[1] is False
    assert where_stripped(out[2]).startswith("attempt to modify read-only table 'string' (field '")
    assert out[3] == "X"


def test_pairs_does_not_hand_out_the_real_string_table(fresh_node: Node) -> None:
    """The state value pairs(string) returns is not a writable string library shared with others."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    out = run(fresh_node, """
      local _, state = pairs(string)
      local ok = pcall(function() state.rep = function() return "pwned" end end)
      return { ok and rawequal(state.rep, string.rep) or false }
    """, host=HOST)
    assert out == [False]
    nb.check(before)


def test_pairs_does_not_hand_out_the_real_process_module(fresh_node: Node) -> None:
    """Replacing process.pid through pairs(process)'s state does not change another process's process.pid."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    run(fresh_node, """
      local _, state = pairs(process)
      pcall(function() state.pid = function() return "{app:sbx|0xfake}" end end)
    """, host=HOST)
    nb.check(before)


# ----------------------------------------------------------------------------------------------- load
def test_load_refuses_mode_b(attack: Attack) -> None:
    """load(chunk, name, "b") returns nil and says only text chunks are allowed."""
    out = attack.run(f'return {{ load({BINARY}, "x", "b") }}')
    assert out == {2: "load: only text chunks are allowed (mode 't'), binary chunks are refused"}


def test_load_refuses_mode_bt_even_for_text(attack: Attack) -> None:
    """load with mode "bt" is refused even when the chunk is text."""
    out = attack.run('return { load("return 1", "x", "bt") }')
    assert out == {2: "load: only text chunks are allowed (mode 't'), binary chunks are refused"}


def test_load_refuses_a_binary_string(attack: Attack) -> None:
    """A string starting with "\\27Lua" is refused with the default mode."""
    out = attack.run(f"return {{ load({BINARY}) }}")
    assert out == {2: "load: binary chunks are refused"}


def test_load_refuses_a_binary_chunk_from_a_reader(attack: Attack) -> None:
    """A reader function that returns a binary chunk in pieces is refused."""
    out = attack.run(f"""
      local bin = {BINARY}
      local pieces, i = {{ bin:sub(1, 1), bin:sub(2, 5), bin:sub(6) }}, 0
      return {{ load(function() i = i + 1; return pieces[i] end, "x") }}
    """)
    assert out == {2: "load: binary chunks are refused"}


def test_load_refuses_a_reader_returning_non_strings(attack: Attack) -> None:
    """A reader returning a table is refused."""
    out = attack.run("return { load(function() return {} end) }")
    assert out == {2: "load: reader function must return strings"}


def test_loaded_text_chunks_see_only_the_process_environment(attack: Attack) -> None:
    """A loaded chunk gets the process's globals (no debug, io, python, package) or the env it is given."""
    out = attack.run("""
      local f = load("return debug, io, python, package, _G, require ~= nil")
      local d, i, p, pk, g, req = f()
      local g2 = load("return string, print", "x", "t", {})
      local s, pr = g2()
      return { tostring(d), tostring(i), tostring(p), tostring(pk), rawequal(g, _G), req,
               tostring(s), tostring(pr) }
    """)
    assert out == ["nil", "nil", "nil", "nil", True, True, "nil", "nil"]


def test_bytecode_cannot_be_loaded_back(attack: Attack) -> None:
    """Whatever string.dump produces (or a forged header), load refuses it in every mode."""
    out = attack.run(f"""
      local bc = (string.dump and string.dump(function() return 1 end)) or {BINARY}
      local f1, e1 = load(bc)
      local f2, e2 = load(bc, "x", "b")
      local f3, e3 = load(bc, "x", "t")
      return {{ f1 == nil, e1, f2 == nil, f3 == nil, e3 }}
    """)
    assert out == [True, "load: binary chunks are refused", True, True, "load: binary chunks are refused"]


def test_string_dump_is_absent(attack: Attack) -> None:
    """string.dump and ("").dump are nil."""
    out = attack.run('return { type(string.dump), type(("").dump) }')
    assert out == ["nil", "nil"]


# -------------------------------------------------------------------------------------- collectgarbage
@pytest.mark.parametrize("opt", ["stop", "restart", "generational", "incremental", "setpause", "setstepmul",
                                 "isrunning"])
def test_collectgarbage_control_options_are_refused(attack: Attack, opt: str) -> None:
    """collectgarbage with a control option raises naming it, and the host's collector keeps running."""
    out = attack.run(f'return {{ pcall(collectgarbage, "{opt}") }}')
    assert out == [False, f"collectgarbage('{opt}') is not available in a process"]
    running = attack.node.call(lambda ctx: ctx.lua.eval("collectgarbage('isrunning')"), host=HOST)
    assert running is True


def test_collectgarbage_collect_and_count_are_harmless(attack: Attack) -> None:
    """collect and step return 0 (no full collection on demand), count and no option give a number."""
    out = attack.run("""
      return { collectgarbage("collect"), collectgarbage("step"), math.type(collectgarbage("count")),
               math.type(collectgarbage()) }
    """)
    assert out == [0, 0, "float", "float"]


# ----------------------------------------------------------------------------- absent modules and globals
def test_debug_is_absent(attack: Attack) -> None:
    """debug is nil: debug.getregistry() and debug.sethook raise on indexing nil."""
    out = attack.run("""
      local ok1, e1 = pcall(function() return debug.getregistry() end)
      local ok2, e2 = pcall(function() return debug.sethook() end)
      return { type(debug), ok1, e1, ok2, e2 }
    """)
    assert out[0] == "nil"
    assert out[1] is False and where_stripped(out[2]) == "attempt to index a nil value (global 'debug')"
    assert out[3] is False and where_stripped(out[4]) == "attempt to index a nil value (global 'debug')"


@pytest.mark.parametrize("name", [
    "debug", "io", "os", "package", "string", "python", "lupa", "ffi", "socket.core",
    "/usr/lib/x86_64-linux-gnu/lua/5.4/socket/core.so", "./?.so",
])
def test_require_grants_only_the_process_modules(attack: Attack, name: str) -> None:
    """require of a standard library, the host language or a C module path is 'not found'."""
    out = attack.run("return { pcall(require, ...) }", name)
    assert out == [False, f"module '{name}' not found ({GRANTED})"]


def test_require_returns_the_granted_modules(attack: Attack) -> None:
    """require("time") and friends give the same read-only views as the globals."""
    out = attack.run("""
      return { rawequal(require("time"), time), rawequal(require("process"), process),
               rawequal(require("json"), json), (pcall(function() require("time").x = 1 end)) }
    """)
    assert out == [True, True, True, False]


@pytest.mark.parametrize("expr", ["package.loadlib('libc.so.6', 'system')", "package.cpath",
                                  "package.loaded.python", "package.searchers[3]"])
def test_package_is_absent(attack: Attack, expr: str) -> None:
    """package is nil, so loadlib, cpath and loaded.python raise on indexing nil."""
    out = attack.run(f"return {{ type(package), pcall(function() return {expr} end) }}")
    assert out[0:2] == ["nil", False]
    assert where_stripped(out[2]) == "attempt to index a nil value (global 'package')"


def test_io_is_absent(attack: Attack) -> None:
    """io.open raises on indexing nil."""
    out = attack.run("return { type(io), pcall(function() return io.open('/etc/passwd') end) }")
    assert out[0:2] == ["nil", False]
    assert where_stripped(out[2]) == "attempt to index a nil value (global 'io')"


@pytest.mark.parametrize("fn", ["execute", "exit", "remove", "rename", "getenv", "tmpname", "setlocale"])
def test_os_keeps_only_time_functions(attack: Attack, fn: str) -> None:
    """os.<fn> is nil (calling it raises), and os holds exactly clock, date, difftime and time."""
    out = attack.run(f"""
      local names = {{}}
      for k in pairs(os) do names[#names + 1] = k end
      table.sort(names)
      return {{ type(os.{fn}), table.concat(names, ","), pcall(function() return os.{fn}("x") end) }}
    """)
    assert out[0:3] == ["nil", "clock,date,difftime,time", False]
    assert where_stripped(out[3]) == f"attempt to call a nil value (field '{fn}')"


def test_file_and_legacy_loaders_are_absent(attack: Attack) -> None:
    """dofile, loadfile, loadstring, setfenv, getfenv, newproxy and module are nil."""
    out = attack.run("""
      return { type(dofile), type(loadfile), type(loadstring), type(setfenv), type(getfenv),
               type(newproxy), type(module), _VERSION }
    """)
    assert out == ["nil"] * 7 + ["Lua 5.4"]


# --------------------------------------------------------------------------------------------- python
@pytest.mark.parametrize("expr", ["python.eval('1')", "python.builtins", "python.as_attrgetter",
                                  "python.none"])
def test_python_global_is_absent(attack: Attack, expr: str) -> None:
    """The lupa `python` module is gone: every use raises on indexing nil."""
    out = attack.run(f"return {{ pcall(function() return {expr} end) }}")
    assert out[0] is False
    assert where_stripped(out[1]) == "attempt to index a nil value (global 'python')"


def test_python_is_not_reachable_through_the_environment(attack: Attack) -> None:
    """_G.python, rawget(_G, "python"), _ENV.python and a loaded chunk's python are all nil."""
    out = attack.run("""
      return { type(_G.python), type(rawget(_G, "python")), type(_ENV.python),
               type(load("return python")()), type(require ~= nil and _G["python"]) }
    """)
    assert out == ["nil", "nil", "nil", "nil", "nil"]


def test_setting_python_and_injected_globals_stays_local(attack: Attack) -> None:
    """A process that sets _G.python and _G.injected changes only its own globals (the neighbour sees nil)."""
    out = attack.run("""
      _G.python = { eval = function() return "fake" end }
      rawset(_G, "injected", "yes")
      return { python.eval(), injected }
    """)
    assert out == ["fake", "yes"]   # and Attack.run checked the neighbour still sees python == nil


# ----------------------------------------------------------------------------------------------- _ENV
def test_empty_env_leaves_nothing_to_call(attack: Attack) -> None:
    """With `local _ENV = {}` print is nil; with `_ENV = nil` every global access raises."""
    out = attack.run("""
      local ok1, e1 = pcall(function() local _ENV = {}; print("x") end)
      local ok2, e2 = pcall(function() local _ENV = nil; return print end)
      local ok3, r3 = pcall(function() local _ENV = {}; return tostring end)
      return { ok1, e1, ok2, e2, ok3, tostring(r3) }
    """)
    assert out[0] is False and where_stripped(out[1]) == "attempt to call a nil value (global 'print')"
    assert out[2] is False and where_stripped(out[3]) == "attempt to index a nil value (local '_ENV')"
    assert out[4:] == [True, "nil"]


def test_env_inheriting_from_globals_adds_nothing(attack: Attack) -> None:
    """An _ENV that falls back to _G sees no more than _G: no io, debug, python, package."""
    out = attack.run("""
      local _ENV = setmetatable({}, { __index = _G })
      return { type(io), type(debug), type(python), type(package), type(string.rep) }
    """)
    assert out == ["nil", "nil", "nil", "nil", "function"]


# ------------------------------------------------------------------------------------------ coroutines
def test_coroutine_wrap_over_library_functions_is_harmless(attack: Attack) -> None:
    """coroutine.wrap over process.pid, string.rep, time.sleep, print and error behaves as a plain call."""
    out = attack.run("""
      local ok, e = pcall(coroutine.wrap(error), "boom", 0)
      return { coroutine.wrap(process.pid)() == process.pid(), coroutine.wrap(string.rep)("a", 3),
               coroutine.wrap(time.sleep)("1ms"), tostring(coroutine.wrap(print)("hi")), ok, e }
    """)
    assert out == [True, "aaa", True, "nil", False, "boom"]


def test_the_main_coroutine_cannot_be_closed_resumed_or_yielded(attack: Attack) -> None:
    """coroutine.running()'s thread cannot be closed, resumed or yielded out of, from inside or outside."""
    out = attack.run("""
      local main, ismain = coroutine.running()
      local ok1, e1 = pcall(coroutine.close, main)
      local ok2, e2 = coroutine.wrap(function() return coroutine.resume(main) end)()
      local ok3, e3 = coroutine.wrap(function() return pcall(coroutine.close, main) end)()
      local ok4, e4 = pcall(coroutine.yield, "escape")
      local ok5, e5 = pcall(string.gsub, "a", "a", coroutine.yield)
      return { ismain, ok1, e1, ok2, e2, ok3, e3, ok4, e4, ok5, e5, coroutine.status(main) }
    """)
    assert out == [
        False,
        False, "cannot close a running coroutine",
        False, "cannot resume non-suspended coroutine",
        False, "cannot close a normal coroutine",
        False, "attempt to yield from outside a coroutine",
        False, "attempt to yield from outside a coroutine",
        "running",
    ]


# ------------------------------------------------------------------------------------------ finalizers
def test_gc_metamethods_are_refused(attack: Attack) -> None:
    """setmetatable with __gc is refused with a message that says why (a finalizer runs elsewhere)."""
    out = attack.run("""
      local ok, e = pcall(setmetatable, {}, { __gc = function() end })
      local ok2 = pcall(error, setmetatable({ tag = "obj" }, {}))
      return { ok, e, ok2 }
    """)
    assert out[0] is False and out[2] is False
    assert "__gc metamethods are not allowed in a process" in out[1]


def test_finalizers_do_not_run_as_another_process(fresh_node: Node) -> None:
    """No process can install a finalizer, so none runs with another process's identity."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    mb = fresh_node.mailbox()
    attacker = spawn_body(fresh_node, """
      for i = 1, 2000 do setmetatable({}, { __gc = function() print("gc-by-attacker") end }) end
      return process.inbox():receive():topic()
    """, host=HOST, monitor=mb)
    ev = mb.wait_exit(attacker, 5)
    assert ev.reason == "error" and "__gc metamethods are not allowed" in ev.result["error"]
    run(fresh_node, """
      for k = 1, 20 do for i = 1, 10000 do local t = { i } end time.sleep("0ms") end
    """, host=HOST)
    assert [line for line in fresh_node.logs() if "gc-by-attacker" in line] == []
    nb.check(before)


# ------------------------------------------------------------------------------- values handed to a process
def test_a_message_object_has_no_host_attributes(attack: Attack) -> None:
    """A message from Python is a Lua table: no __class__/__dict__, payload() is itself, data is plain."""
    mb = attack.node.mailbox()
    try:
        entry = define_body(attack.node, """
          local m = process.inbox():receive()
          local function plain(v, depth)
            local t = type(v)
            if t == "table" then
              for k, x in next, v do
                if not plain(k, depth + 1) or not plain(x, depth + 1) then return false end
              end
              return true
            end
            return t == "string" or t == "number" or t == "boolean"
          end
          local ok, e = pcall(setmetatable, m, {})
          return { tostring(m.__class__), tostring(m.__dict__), tostring(m.__init__), getmetatable(m),
                   rawequal(m:payload(), m), plain(m, 0), plain(m:payload():data(), 0), type(m:from()),
                   tostring(m:payload():data().__class__), ok, e, tostring(time.now().__class__) }
        """)
        before = attack.nb.count()
        pid = attack.node.spawn(entry, host=HOST, monitor=mb)
        mb.send(pid, "t", {"any": ["plain", "data"], "n": 1})
        ev = mb.wait_exit(pid, 5)
        attack.nb.check(before)
    finally:
        mb.close()
    out = ev.result["value"]
    assert out[:10] == ["nil", "nil", "nil", "message", True, True, True, "string", "nil", False]
    assert out[10].endswith(PROTECTED_MT)
    assert out[11] == "nil"


def test_a_channel_handle_cannot_be_modified(attack: Attack) -> None:
    """rawset and setmetatable on a channel handle (the inbox) are refused."""
    out = attack.run("""
      local ib = process.inbox()
      local ok1, e1 = pcall(rawset, ib, "receive", print)
      local ok2, e2 = pcall(setmetatable, ib, {})
      return { ok1, e1, ok2, e2, getmetatable(ib) }
    """)
    assert out[0:2] == [False, "attempt to modify a channel"]
    assert out[2] is False and out[3].endswith(PROTECTED_MT)
    assert out[4] == "channel"


# --------------------------------------------------------------------------------------------- sending
@pytest.mark.parametrize(("payload", "error"), [
    ("_G", "send: payload cannot be copied: $ contains a cycle (at $._G)"),
    ("_ENV", "send: payload cannot be copied: $ contains a cycle (at $._G)"),
    ("{ f = print }", "send: payload cannot be copied: $.f (a function)"),
    ("{ deep = { fn = string.rep } }", "send: payload cannot be copied: $.deep.fn (a function)"),
    ("print", "send: payload cannot be copied: $ is a function"),
    ("coroutine.create(print)", "send: payload cannot be copied: $ is a thread"),
    ("{ ch = process.inbox() }", "send: payload cannot be copied: $.ch (a channel)"),
    ("{ [print] = 1 }", "send: payload cannot be copied: $ (a function used as a key)"),
])
def test_send_refuses_globals_functions_and_handles(attack: Attack, payload: str, error: str) -> None:
    """process.send of _G, functions, threads or channels returns nil and an error naming the path."""
    out = attack.run(f'return {{ process.send(process.pid(), "t", {payload}) }}')
    assert out == {2: error}


def test_sending_a_library_view_sends_an_empty_table(attack: Attack) -> None:
    """process.send(self, "t", string) arrives as a plain empty table, not the library."""
    out = attack.run("""
      assert(process.send(process.pid(), "t", string))
      local d = process.inbox():receive():payload():data()
      return { type(d), next(d) == nil, getmetatable(d) == nil, rawequal(d, string) }
    """)
    assert out == ["table", True, True, False]


# ------------------------------------------------------------------------------ other processes' globals
def test_another_process_globals_are_out_of_reach(attack: Attack) -> None:
    """A process's globals are invisible to another: _G, rawget, load and pairs(_G) show only its own."""
    attack.node.define("sbx:secret_keeper", "process.lua", source="""
      return { main = function()
        secret = "s3cret"
        rawset(_G, "also_secret", 1)
        process.registry.register("sbx-keeper")
        return process.inbox():receive():topic()
      end }
    """)
    mb = attack.node.mailbox()
    try:
        keeper = attack.node.spawn("sbx:secret_keeper", host=HOST, monitor=mb)
        out = attack.run("""
          local keys = {}
          for k in pairs(_G) do keys[#keys + 1] = k end
          return { tostring(secret), tostring(_G.also_secret), tostring(rawget(_G, "secret")),
                   tostring(load("return secret")()), table.concat(keys, ","),
                   type(process.registry.lookup("sbx-keeper")) }
        """)
        mb.send(keeper, "done")
        assert mb.wait_exit(keeper, 5).result == {"value": "done"}
    finally:
        mb.close()
    assert out == ["nil", "nil", "nil", "nil", "_G", "string"]


def test_redefining_print_and_tostring_stays_local(attack: Attack) -> None:
    """A process that replaces print, tostring, type and pairs changes only itself; its log still works."""
    mb = attack.node.mailbox()
    try:
        entry = define_body(attack.node, """
          local real_print = print
          tostring = function() return "hijacked" end
          type = function() return "hijacked" end
          pairs = function() error("hijacked") end
          real_print(12, "x")
          print = function() error("hijacked") end
          _G.string = { rep = function() return "hijacked" end }
          return tostring(1)
        """)
        before = attack.nb.count()
        pid = attack.node.spawn(entry, host=HOST, monitor=mb)
        ev = mb.wait_exit(pid, 5)
        attack.nb.check(before)
    finally:
        mb.close()
    assert ev.result == {"value": "hijacked"}
    assert attack.node.logs(pid) == ["12\tx"]


# ------------------------------------------------------------------------ real escapes (strict xfails)
def test_timer_callback_cannot_be_replaced(fresh_node: Node) -> None:
    """Replacing a timer's internal callback never runs user code outside the process (print shows where)."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    run(fresh_node, """
      local tm = time.timer("1ms")
      pcall(function() rawget(tm, "e").fire = function() print("hijacked timer callback") end end)
      time.sleep("20ms")
    """, host=HOST)
    assert [line for line in fresh_node.logs() if "hijacked" in line] == []
    nb.check(before)


def test_a_process_cannot_lift_its_own_instruction_budget(fresh_node: Node) -> None:
    """Reaching the process record through a stale select waiter does not lift the budget."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    exited = run_exit(fresh_node, """
      local function record(v, depth, seen)    -- a table with a pid and a coroutine: a process record
        if type(v) ~= "table" or seen[v] or depth > 4 then return nil end
        seen[v] = true
        if type(rawget(v, "pid")) == "string" and type(rawget(v, "co")) == "thread" then return v end
        for _, x in next, v do
          local r = record(x, depth + 1, seen)
          if r then return r end
        end
      end
      local ch = channel.new()
      local case = ch:case_receive()
      channel.select{ case, time.after("1ms"):case_receive() }   -- leaves a stale waiter on ch
      local p = record(case, 0, {})
      if p then p.budget = math.huge end
      local n = 0
      for i = 1, 2e7 do n = n + 1 end
      return n
    """, host=HOST)
    assert exited.reason == "instruction_budget"
    nb.check(before)


def test_select_refuses_forged_cases(fresh_node: Node) -> None:
    """A hand-made {op="r", st=...} case is refused, and cannot make the host drop the neighbour."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    out = run(fresh_node, """
      local victim = ...
      local co = coroutine.create(function() return "forged" end)
      local fake = { pid = victim, co = co, status = "running", queued = false, calls = 0, used = 0,
                     instr = 0, resumes = 0, n_in = 0, n_out = 0 }
      local waiter = { p = fake, sel = { done = false }, val = "v" }
      local st = { n = 0, bh = 1, bt = 0, cap = 0, closed = false, handle = "h",
                   sw = waiter, sendq = { h = 1, t = 1, waiter } }   -- a blocked sender, in either layout
      local ok, e = pcall(channel.select, { { op = "r", st = st }, default = true })
      time.sleep("5ms")
      return { ok, tostring(type(e) == "table" and e.value or e) }
    """, nb.pid, host=HOST)
    assert out[0] is False and "is not a case" in out[1]
    assert fresh_node.alive(nb.pid)
    nb.check(before)


def test_a_forged_duration_cannot_freeze_the_host_timers(fresh_node: Node) -> None:
    """time.after with a forged NaN Duration does not stop the neighbour's sleeps from waking."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    run(fresh_node, """
      local fake = setmetatable({ ns = 0/0 }, { __metatable = "duration" })
      pcall(time.after, fake)
    """, host=HOST)
    nb.check(before, timeout=2.0)


def test_an_error_objects_tostring_runs_within_the_budget(fresh_node: Node) -> None:
    """The __tostring of a thrown table runs as the failing process (or not at all), never unbudgeted."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    exited = run_exit(fresh_node, """
      error(setmetatable({}, { __tostring = function()
        print("tostring ran")
        local n = 0
        for i = 1, 2e7 do n = n + 1 end    -- 4x the host's budget
        return "rendered after " .. n
      end }))
    """, host=HOST)
    assert not (exited.error or "").startswith("rendered after")
    assert [line for line in fresh_node.logs() if "tostring ran" in line and not line.startswith(exited.pid)] == []
    nb.check(before)


def test_spawner_messages_and_context_are_copied(fresh_node: Node) -> None:
    """A spawner exposes no options table; with_message copies, so nothing is shared with the child."""
    nb = Neighbour(fresh_node, HOST)
    before = nb.count()
    fresh_node.define("sbx:child", "process.lua", source="""
      return { main = function()
        local d = process.inbox():receive():payload():data()
        d.shared.n = 99
        return d.shared.n
      end }
    """)
    out = run(fresh_node, """
      local shared = { n = 1 }
      local sp = process.with_options({})
      local hidden = rawget(sp, "o") == nil and next(sp) == nil
      local r = sp:with_message("t", { shared = shared }):exec("sbx:child")
      local _, err = pcall(function() return sp:with_message("t", { f = function() end }) end)
      return { hidden, r, shared.n, err }
    """, host=HOST)
    assert out[:3] == [True, 99, 1]
    assert "cannot be copied" in out[3] and "$.f" in out[3]
    nb.check(before)


def test_a_returned_function_does_not_reach_the_watcher(attack: Attack) -> None:
    """process.exec of a child that returns a closure does not hand the closure to the parent."""
    attack.node.define("sbx:closure_child", "process.lua", source="""
      local secret = { "child state" }
      return { main = function() return function() return secret[1] end end }
    """)
    out = attack.run("""
      local r, err = process.exec("sbx:closure_child")
      return { type(r), tostring(err) }
    """)
    assert out[0] != "function"


def test_a_python_watcher_hears_of_a_process_returning_a_function(sandbox_node: Node, nb: Neighbour) -> None:
    """node.exec of a process that returns a function ends (with a value or an error), within its timeout."""
    entry = define_body(sandbox_node, "return print")
    before = nb.count()
    try:
        sandbox_node.exec(entry, host=HOST, timeout=2)
    except ProcessExited:
        pass
    except Timeout:
        pytest.fail("the exit of a process that returned a function never reached Python")
    finally:
        nb.check(before)
