"""The Lua source of a host and the fixed order it is loaded in.

The scheduler is a set of Lua modules under ``lua/scheduler/``, one concept each (see each file's header
comment, and "The run loop lives in Lua" in docs/architecture.md). They are loaded into the host's Lua
state one after another, in :data:`SCHEDULER_MODULES` order, as chunks named ``scheduler/NAME.lua``; each
chunk is called with ``(S, K)``: ``S`` is the interface Python calls, ``K`` the table through which the
modules share their state and functions (a module takes what it needs from ``K`` into locals when it
loads, and puts what it owns there). While the modules load, reading a name of ``K`` that no earlier
module set is an error, so a wrong order fails at boot. The durable-workflow layer (``lua/workflow.lua``)
loads last and takes the scheduler's internals from ``S.internals``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: The scheduler's modules, in load order: each may use what the modules before it own.
SCHEDULER_MODULES: tuple[str, ...] = (
    "core",           # process table, run queue, the running process, constants
    "wire",           # runtime/wire.py's encoding, in Lua
    "xnode",          # messages to other nodes, batched (wraps the `py` callbacks: loads early)
    "channels",       # channels, waiters, select, the `channel` module
    "copy",           # payload copies
    "timers",         # the timer heap
    "time",           # durations, Time values, the `time` module
    "limits",         # the instruction budget's count hook
    "sandbox",        # sandboxed pcall/load/coroutine..., read-only views
    "security",       # identities of processes, checks of privileged calls, the `security` module
    "tracing",        # spawn and send records for the event bus
    "names",          # registered names, process.registry
    "messages",       # delivery, process.send, inbox, listeners
    "links",          # exits, monitors, links, terminate, cancel
    "env",            # a process's environment: modules and base globals
    "entries",        # entries compiled into factories
    "spawn",          # spawn_local, process.spawn*, spawners, exec, upgrade
    "process",        # the rest of the `process` module
    "run",            # the run loop (S.run)
    "registry",       # the `registry` module
    "funcs",          # the `funcs` module
    "supervisor",     # the `supervisor` module
    "agents",         # the `llm`, `prompt` and `agent` modules
    "shell",          # the notebook's shell process
    "introspection",  # statistics for Python, internals for workflow.lua
    "teach",          # teaching mode: pause, step, resume (held events)
)

_LOADER = b"""
function(py, config, json_src, ...)
  local S = {}
  local K = { py = py, config = config, json_src = json_src }
  setmetatable(K, { __index = function(_, k)
    error("scheduler modules: K." .. tostring(k) .. " is read before any module set it", 2)
  end })
  for i = 1, select("#", ...), 2 do
    local name, src = select(i, ...)
    assert(load(src, "=" .. name, "t"))(S, K)
  end
  setmetatable(K, nil)
  return S
end
"""


def lua_source(name: str) -> bytes:
    """The bytes of a Lua file of the runtime, by its path under ``lua/`` (``"scheduler/core.lua"``)."""
    return resources.files("wippy.runtime").joinpath("lua", *name.split("/")).read_bytes()


def scheduler_chunks() -> list[tuple[str, bytes]]:
    """``(chunk name, source)`` of each scheduler module, in load order."""
    return [(f"scheduler/{m}.lua", lua_source(f"scheduler/{m}.lua")) for m in SCHEDULER_MODULES]


def load_scheduler(lua: Any, py: Any, config: Any, chunks: list[tuple[str, bytes]] | None = None) -> Any:
    """Load the scheduler's modules (``chunks``: :func:`scheduler_chunks` by default) into ``lua``; return ``S``.

    ``py`` is the Lua table of the host's Python callbacks, ``config`` the table of its settings. A module
    that reads a name of the shared table no earlier module set fails the load (a Lua error).
    """
    args: list[Any] = []
    for name, src in scheduler_chunks() if chunks is None else chunks:
        args += [name.encode(), src]
    return lua.eval(_LOADER)(py, config, lua_source("json.lua"), *args)


def load_runtime(lua: Any, py: Any, config: Any) -> Any:
    """Load the scheduler's modules, then workflow.lua, into the Lua state ``lua``; return ``S``."""
    s = load_scheduler(lua, py, config)
    # the durable-workflow layer, with the scheduler's internals (S.internals, removed once taken)
    lua.eval(b"function(src, ...) return assert(load(src, '=workflow.lua', 't'))(...) end")(
        lua_source("workflow.lua"), s, py, config)
    return s
