"""The scheduler's Lua modules: each says what it owns, they load in one fixed order, none is near Lua's
limits on locals.

Lua 5.4 refuses a function with more than 200 active local variables ("too many local variables") or
255 upvalues; the scheduler used to be one chunk at that limit. No ``luac`` is assumed here, so the
check is static and conservative: a small Lua tokenizer (comments and strings skipped) finds every
function body and counts every local it declares (``local`` names, ``local function``, parameters,
loop variables plus the three hidden slots of a loop), whether or not they are alive at the same time:
an upper bound on its active locals. Its upvalues are bounded by the locals of all the functions
around it. Both bounds must stay at or below 150. Beside it, each main chunk is compiled with 50 extra
locals in front, which Lua itself refuses if the chunk has more than 150 active locals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from lupa import lua54
from wippy.runtime import Node, lua_modules

LIMIT = 150
SCHEDULER_DIR = Path(lua_modules.__file__).parent / "lua" / "scheduler"

EXPECTED_ORDER = (
    "core", "wire", "xnode", "channels", "copy", "timers", "time", "limits", "sandbox", "security", "tracing", "names",
    "messages", "links", "env", "entries", "spawn", "process", "run", "registry", "funcs", "supervisor", "agents",
    "shell", "introspection", "teach",
)

_TOKEN = re.compile(
    r"""--\[(?P<lc>=*)\[.*?\](?P=lc)\]      # long comment
      | --[^\n]*                           # line comment
      | \[(?P<ls>=*)\[.*?\](?P=ls)\]       # long string
      | "(?:\\.|[^"\\\n])*"                # strings
      | '(?:\\.|[^'\\\n])*'
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | 0[xX][0-9a-fA-F.]+ | \d+\.?\d*(?:[eE][+-]?\d+)?
      | \.\.\.|\.\.|::|<=|>=|==|~=|//|<<|>>|\S""",
    re.S | re.X,
)


def tokens(src: str) -> list[str]:
    """The code tokens of a Lua source: names, numbers, strings (as "s"), operators; no comments."""
    out = []
    for m in _TOKEN.finditer(src):
        t = m.group(0)
        if t.startswith("--"):
            continue
        out.append("s" if t[0] in "\"'[" and len(t) > 1 else t)
    return out


@dataclass
class Fn:
    name: str
    declared: int = 0    # locals declared in its body (parameters, loop slots included)
    enclosing: int = 0   # locals declared by the functions around it


def function_bounds(src: str) -> list[tuple[str, int, int]]:
    """(description, locals declared, locals of the enclosing functions) of every function in ``src``."""
    toks = tokens(src)
    funcs = [Fn("main chunk")]
    stack: list[str] = []          # open blocks: "f" (a function) or "b"
    fstack = [0]                   # indexes into funcs of the open functions
    i = 0
    while i < len(toks):
        t = toks[i]
        here = funcs[fstack[-1]]
        if t == "function":
            j = i + 1
            name = []
            while toks[j] != "(":
                name.append(toks[j])
                j += 1
            fn = Fn("".join(name) or "(anonymous)", enclosing=sum(funcs[k].declared for k in fstack))
            j += 1
            while toks[j] != ")":
                if re.fullmatch(r"[A-Za-z_]\w*|\.\.\.", toks[j]):
                    fn.declared += 1
                j += 1
            funcs.append(fn)
            fstack.append(len(funcs) - 1)
            stack.append("f")
            i = j
        elif t in ("do", "if", "repeat"):
            stack.append("b")
        elif t in ("end", "until"):
            if stack.pop() == "f":
                fstack.pop()
        elif t == "local":
            if toks[i + 1] == "function":
                here.declared += 1
            else:
                j = i + 1
                while True:
                    here.declared += 1
                    j += 1
                    if toks[j] == "<":   # <const> / <close>
                        j += 3
                    if toks[j] != ",":
                        break
                    j += 1
        elif t == "for":
            j = i + 1
            while toks[j] not in ("=", "in"):
                if toks[j] != ",":
                    here.declared += 1
                j += 1
            here.declared += 3   # the loop's hidden control slots
        i += 1
    assert not stack, "unbalanced blocks: the tokenizer lost its place"
    return [(f.name, f.declared, f.enclosing) for f in funcs]


def test_the_order_is_fixed_and_lists_every_module() -> None:
    """The load order is the documented one, and every .lua file in scheduler/ is in it."""
    assert lua_modules.SCHEDULER_MODULES == EXPECTED_ORDER
    on_disk = sorted(p.stem for p in SCHEDULER_DIR.glob("*.lua"))
    assert on_disk == sorted(EXPECTED_ORDER)


@pytest.mark.parametrize("name", EXPECTED_ORDER)
def test_each_module_has_its_header(name: str) -> None:
    """A module starts with a comment naming it, what it owns and what it uses, before any code."""
    src = lua_modules.lua_source(f"scheduler/{name}.lua").decode()
    head = []
    for line in src.splitlines():
        if not line.startswith("--"):
            break
        head.append(line)
    text = "\n".join(head)
    assert head and head[0].startswith(f"-- scheduler/{name}.lua: "), head[:1]
    assert "\n-- Owns: " in text, f"{name}: the header says what the module owns"
    assert "\n-- Uses" in text, f"{name}: the header says what it uses from the modules before it"


@pytest.mark.parametrize("name", EXPECTED_ORDER)
def test_no_function_is_near_the_locals_limit(name: str) -> None:
    """Static upper bounds on each function's locals and upvalues stay at or below 150."""
    src = lua_modules.lua_source(f"scheduler/{name}.lua").decode()
    bounds = function_bounds(src)
    assert len(bounds) > 1
    for fname, declared, enclosing in bounds:
        assert declared <= LIMIT, f"{name}: {fname} declares {declared} locals"
        assert enclosing + 1 <= LIMIT, f"{name}: {fname} could capture {enclosing + 1} upvalues"
    # Lua's own count: the main chunk still compiles with 50 more locals in front of it
    lua = lua54.LuaRuntime()
    pad = "local " + ", ".join(f"_pad{i}" for i in range(200 - LIMIT)) + "\n"
    ok, err = lua.eval("function(src, name) local f, e = load(src, name, 't'); return f ~= nil, e or '' end")(
        pad + src, f"={name}.lua")
    assert ok, err


def test_the_counter_sees_a_crowded_function() -> None:
    """The static count is not vacuous: a function with 160 locals is reported."""
    body = "\n".join(f"  local v{i} = {i}" for i in range(160))
    src = f"local function crowded()\n{body}\nend\nlocal x = function(a, b) for i = 1, 2 do end end\n"
    bounds = {n: (d, e) for n, d, e in function_bounds(src)}
    assert bounds["crowded"] == (160, 1)
    assert bounds["(anonymous)"] == (2 + 1 + 3, 2)


def minimal_callbacks(lua: lua54.LuaRuntime) -> tuple[object, object]:
    py = lua.table_from({b"monotonic": lambda: 0.0, b"now_ns": lambda: 0})
    config = lua.table_from({b"host": b"t:host", b"instruction_budget": 0, b"heap_limit": 0})
    return py, config


def test_the_modules_load_in_order_and_a_wrong_order_fails_at_boot() -> None:
    """In the fixed order the modules load; a module placed before one it uses fails, naming the name."""
    lua = lua54.LuaRuntime(encoding=None)
    py, config = minimal_callbacks(lua)
    s = lua_modules.load_scheduler(lua, py, config)
    assert s.count() == 0
    chunks = lua_modules.scheduler_chunks()
    names = [name for name, _ in chunks]
    ch, cp = names.index("scheduler/channels.lua"), names.index("scheduler/copy.lua")
    assert cp == ch + 1
    swapped = [*chunks[:ch], chunks[cp], chunks[ch], *chunks[cp + 1:]]   # copy before channels
    lua2 = lua54.LuaRuntime(encoding=None)
    py, config = minimal_callbacks(lua2)
    with pytest.raises(lua54.LuaError, match=r"scheduler/copy\.lua:\d+: .*K\.CHAN_MT is read before any module set it"):
        lua_modules.load_scheduler(lua2, py, config, swapped)


def test_a_host_boots_from_the_modules(node: Node) -> None:
    """A node's host runs the modules: a process spawned from an entry runs and returns."""
    node.define("t:hello", "process.lua", source="return { main = function(x) return x + 1 end }")
    assert node.exec("t:hello", 41) == 42
