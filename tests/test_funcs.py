"""funcs.call: function.lua entries called from processes that were granted the module, and from cells."""

from __future__ import annotations

import pytest
from wippy.runtime import EntryError, LuaError, Node


def test_funcs_call_from_a_granted_process(node: Node) -> None:
    """A process with `modules: [funcs]` calls a function.lua entry and gets its results."""
    node.define("app:add", "function.lua", source="return { handle = function(a, b) return a + b, 'sum' end }",
                method="handle")
    node.define("app:user", "process.lua", modules=["funcs"], source="""
      return { main = function()
        local v, tag = funcs.call("app:add", 40, 2)
        return {v, tag}
      end }""")
    assert node.exec("app:user", timeout=5) == [42, "sum"]


def test_funcs_is_absent_unless_granted(node: Node) -> None:
    """An entry without the grant has no `funcs` global (API.md: modules are granted)."""
    node.define("app:plain", "process.lua", source="return { main = function() return funcs == nil end }")
    assert node.exec("app:plain", timeout=5) is True


def test_funcs_call_errors_are_nil_err(node: Node) -> None:
    """Unknown entry, wrong kind and a raising function are nil, err; the caller goes on."""
    node.define("app:boom", "function.lua", source="return { main = function() error('card declined') end }")
    node.define("app:proc", "process.lua", source="return { main = function() end }")
    shell = node.shell()
    out = shell.run("""
      local a, e1 = funcs.call("app:none")
      local b, e2 = funcs.call("app:proc")
      local c, e3 = funcs.call("app:boom")
      return {e1, e2, e3, a == nil and b == nil and c == nil}
    """).value
    assert "unknown entry 'app:none'" in out[0]
    assert "is a process.lua entry; funcs.call needs a function.lua entry" in out[1]
    assert "card declined" in out[2] and out[3] is True


def test_a_function_may_wait_like_its_caller(node: Node) -> None:
    """The function runs in the caller's process: it may receive from the caller's inbox."""
    node.define("app:waiter", "function.lua",
                source="return { main = function() return process.inbox():receive():topic() end }")
    shell = node.shell()
    node.send(shell.pid, "hello")
    assert shell.run("return funcs.call('app:waiter')").value == "hello"


def test_call_function_from_python(node: Node) -> None:
    """node.call_function runs a function.lua entry and returns its result (several as a list)."""
    node.define("app:mul", "function.lua", source="return { main = function(a, b) return a * b end }")
    node.define("app:two", "function.lua", source="return { main = function() return 1, 'x' end }")
    node.define("app:fails", "function.lua", source="return { main = function() error('no stock') end }")
    node.define("app:proc2", "process.lua", source="return { main = function() end }")
    assert node.call_function("app:mul", 6, 7) == 42
    assert node.call_function("app:two") == [1, "x"]
    with pytest.raises(LuaError, match="no stock"):
        node.call_function("app:fails")
    with pytest.raises(EntryError, match=r"needs a function\.lua entry"):
        node.call_function("app:proc2")
    with pytest.raises(EntryError, match="unknown entry 'app:nothing'"):
        node.call_function("app:nothing")
