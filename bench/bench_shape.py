"""Process shape: a Lua state per process against one shared state per host (docs/architecture.md).

Prints memory and creation rate of bare lua54 states (the floor of a state-per-process design, before
any runtime code is loaded into them) beside the chosen shape: processes in one host's state.
Run: .venv/bin/python bench/bench_shape.py
"""

from __future__ import annotations

import time

from lupa import lua54
from wippy.runtime import HostOptions, Node


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def states(n: int) -> tuple[float, float]:
    r0, t = rss(), time.perf_counter()
    keep = []
    for _ in range(n):
        lua = lua54.LuaRuntime(register_eval=False, register_builtins=False, encoding=None,
                               max_memory=256 * 1024 * 1024)
        lua.execute(b"python = nil; package.loaded.python = nil")
        co = lua.eval(b"function() local co = coroutine.create(function() coroutine.yield() end)"
                      b" coroutine.resume(co) return co end")()
        keep.append((lua, co))
    el = time.perf_counter() - t
    return n / el, (rss() - r0) / n


def shared(n: int) -> tuple[float, float, int]:
    node = Node(output=None, host_options=HostOptions(instruction_budget=0)).start()
    try:
        node.define("b:idle", "process.lua", source="return { main = function() process.inbox():receive() end }")
        node.define("b:spawner", "process.lua",
                    source="return { main = function(n) for i = 1, n do process.spawn('b:idle') end end }")
        boot = node.statistics().hosts["app:processes"].lua_memory
        r0, t = rss(), time.perf_counter()
        node.exec("b:spawner", n, timeout=300)
        # wait until every process has run to its park (a host answers a call between two batches)
        while node.statistics(processes=False).hosts["app:processes"].runnable > 0:
            time.sleep(0.01)
        el = time.perf_counter() - t
        return n / el, (rss() - r0) / n, boot
    finally:
        node.stop(grace=1)


def main() -> None:
    n = 300
    rate, per = states(n)
    print(f"state per process: {n} bare lua54 states: {rate:,.0f}/s, {per / 1024:,.1f} KB RSS each")
    rate2, per2, boot = shared(100_000)
    print(f"shared state:      100000 processes in one host: {rate2:,.0f}/s, {per2:,.0f} B RSS each "
          f"(the host's own state with the runtime loaded: {boot / 1024:,.0f} KB of Lua heap)")


if __name__ == "__main__":
    main()
