"""scheduler/wire.lua and scheduler/xnode.lua: the wire encoding written and read in Lua, and the batches
of messages to other nodes a host hands to Python.

What a user would see: a message a Lua process sends to another node arrives as it was sent, whether it
went in a batch (the encoding written in Lua) or the way Python carries it (runtime/wire.py): the two
encodings are the same bytes, and what Python writes Lua reads back equal. A batch that cannot be read
says where; a batch for a process that has ended is dropped and counted, as a message to it would be.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wippy.runtime import Node, wire
from wippy.runtime.payload import from_lua, to_lua

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    n = Node(output=None).start()
    try:
        yield n
    finally:
        n.stop()


def lua_encode(node: Node, values: list[Any]) -> list[tuple[bytes | None, bytes | str]]:
    """Each value converted to Lua (payload.to_lua), then (wire.lua's bytes, wire.py's bytes of the same
    Lua value as from_lua gives it, or the error wire.py/payload.py raise)."""
    def run(ctx: Any) -> list[tuple[bytes | None, bytes | str]]:
        out: list[tuple[bytes | None, bytes | str]] = []
        for v in values:
            lv = to_lua(ctx.lua, v)
            try:
                ref: bytes | str = wire.encode(from_lua(lv))
            except Exception as exc:
                ref = str(exc)
            out.append((ctx.scheduler.wire_encode(lv), ref))
        return out
    return node.host().call(run)


def lua_eval_encode(node: Node, sources: list[str]) -> list[tuple[bytes | None, bytes | str]]:
    """Like lua_encode, for values made by Lua expressions (what to_lua cannot make: metatables, ...)."""
    def run(ctx: Any) -> list[tuple[bytes | None, bytes | str]]:
        out: list[tuple[bytes | None, bytes | str]] = []
        for src in sources:
            lv = ctx.lua.eval(f"function() return {src} end".encode())()
            try:
                ref: bytes | str = wire.encode(from_lua(lv))
            except Exception as exc:
                ref = str(exc)
            out.append((ctx.scheduler.wire_encode(lv), ref))
        return out
    return node.host().call(run)


def lua_decode(node: Node, data: bytes) -> list[Any]:
    """wire.lua's reading of ``data`` (a string of wire values), as Python values (payload.from_lua)."""
    def run(ctx: Any) -> list[Any]:
        t = ctx.scheduler.wire_decode(data)
        return [from_lua(t[i]) for i in range(1, t[b"n"] + 1)]
    return node.host().call(run)


# ------------------------------------------------------------------------------------ the same bytes

EXPRESSIONS = [
    "1", "0", "127", "128", "-1", "-16", "-17", "200", "-300", "math.maxinteger", "math.mininteger",
    "1.5", "-0.0", "0/0", "math.huge", "-math.huge", "1e300",
    "''", "'ping'", "string.rep('x', 63)", "string.rep('x', 64)", "string.rep('y', 100000)",
    "'\\0a\\0'", "'h\\xc3\\xa9llo'", "'\\xff\\xfe'", "'\\xed\\xa0\\x80'", "'\\xf4\\x90\\x80\\x80'", "'\\xc0\\x80'",
    "true", "false", "{}", "{1, 2, 3}", "{1, nil, 3}", "{[0] = 1}", "{[2] = 1}", "{n = 1}",
    "{a = {b = {c = {1, 'x', {}}}}, [1.5] = 2, [-3] = 4}",
    "(function() local t = {} for i = 1, 20 do t[i] = i * 1000 end return t end)()",
    "(function() local t = {} for i = 1, 20 do t['k' .. i] = i end return t end)()",
    "{string.rep('y', 70), [string.rep('k', 80)] = 1, ['\\xff'] = 2}",
]


def test_lua_writes_the_bytes_python_writes(node: Node) -> None:
    for src, (got, ref) in zip(EXPRESSIONS, lua_eval_encode(node, EXPRESSIONS), strict=True):
        assert isinstance(ref, bytes), (src, ref)
        assert got == ref, (src, got, ref)


def test_what_python_refuses_lua_leaves_to_python(node: Node) -> None:
    # a boolean key (payload.py refuses it), a function, a table with a metatable (a Time value: Python
    # converts it), a table nested deeper than 64: wire.lua writes nothing, the message goes through Python
    deep = "(function() local t = {} for _ = 1, 70 do t = {t} end return t end)()"
    out = lua_eval_encode(node, ["{[true] = 1}", "print", "setmetatable({}, {})", "{x = setmetatable({}, {})}",
                                 deep])
    assert [got for got, _ in out] == [None] * 5
    assert "bool key" in str(out[0][1])
    assert "function" in str(out[1][1])


plain_keys = st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1))
leaves = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=70),
    st.binary(max_size=70),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=20), st.dictionaries(plain_keys, inner, max_size=20)),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v=values)
def test_any_plain_value_encodes_the_same_and_reads_back(node: Node, v: Any) -> None:
    [(got, ref)] = lua_encode(node, [v])
    assert isinstance(ref, bytes)
    assert got == ref
    # what Python writes, Lua reads back equal (as from_lua sees the Lua value)
    [back] = lua_decode(node, wire.encode(v))
    assert back == wire.decode(ref)


def test_lua_reads_the_long_forms_and_several_values(node: Node) -> None:
    # the decoder also reads the forms the encoder never writes for short values
    long_str = bytes([0xE5, 2]) + b"hi"
    long_list = bytes([0xE7, 2, 1, 2])
    long_dict = bytes([0xE8, 1, 0x81]) + b"k" + bytes([5])
    big = wire.encode(2**63 - 1) + wire.encode(-(2**63)) + wire.encode(math.pi) + wire.encode(None)
    assert lua_decode(node, long_str + long_list + long_dict + big) == [
        "hi", [1, 2], {"k": 5}, 2**63 - 1, -(2**63), math.pi, None]


@pytest.mark.parametrize(("data", "what"), [
    (b"\x85ab", "truncated str"),
    (bytes([0xE9]), "unknown tag 0xe9"),
    (bytes([0xE3, 0x80]), "truncated varint"),
    (bytes([0xE3]) + b"\xff" * 11, "longer than 10 bytes"),
    (bytes([0xE4, 1, 2]), "truncated float"),
    (bytes([0xC2, 1]), "truncated value"),
    (bytes([0xD1, 0xE0, 1]), "dict key"),
])
def test_a_damaged_buffer_is_an_error_naming_the_byte(node: Node, data: bytes, what: str) -> None:
    with pytest.raises(Exception, match="wire: .*" + what + ".* at byte"):
        lua_decode(node, data)


# ------------------------------------------------------------------------------------ batches in

RECEIVER = """return { main = function(n, notify)
  local inbox = process.inbox()
  process.send(notify, "ready", true)
  local got = {}
  for i = 1, n do
    local m = inbox:receive()
    got[i] = { m:topic(), m:from() or false, m:payload():data() }
  end
  return got
end }"""


def blob(*messages: tuple[str, str | None, str, Any]) -> bytes:
    return b"".join(wire.encode(x) for m in messages for x in m)


def test_a_batch_from_another_node_is_delivered_in_order(node: Node) -> None:
    node.define("w:receiver", "process.lua", source=RECEIVER)
    with node.mailbox() as mb:
        pid = node.spawn("w:receiver", 4, mb.pid, monitor=mb)
        assert mb.receive(timeout=30).topic == "ready"
        sender = "{n9@app:processes|0x7}"
        dropped = node.statistics().hosts["app:processes"].dropped
        node.host().post("deliver_blob", blob(
            (pid, sender, "a", 1),
            ("{app:processes|0xdead}", sender, "lost", 2),   # no such process here: dropped, counted
            (pid, None, "b", {"x": [1, 2.5, "s"], "y": b"\xff"}),
            (pid, sender, "c", None),
        ))
        node.host().post("deliver_blob", blob((pid, sender, "d", "last")))
        ev = mb.wait_exit(pid, timeout=30)
    assert ev.result["value"] == [
        ["a", sender, 1], ["b", False, {"x": [1, 2.5, "s"], "y": b"\xff"}], ["c", sender], ["d", sender, "last"]]
    assert node.statistics().hosts["app:processes"].dropped == dropped + 1


def test_a_damaged_batch_is_reported_and_the_host_goes_on(node: Node) -> None:
    node.define("w:receiver", "process.lua", source=RECEIVER)
    before = len(node.faults)
    with node.mailbox() as mb:
        pid = node.spawn("w:receiver", 1, mb.pid, monitor=mb)
        assert mb.receive(timeout=30).topic == "ready"
        node.host().post("deliver_blob", wire.encode(pid) + bytes([0xE9]))   # its sender: an unknown tag
        node.host().post("deliver_blob", blob((pid, None, "after", 1)))
        ev = mb.wait_exit(pid, timeout=30)
    assert ev.result["value"] == [["after", False, 1]]
    new = node.faults[before:]
    assert any("deliver_blob" in f and "unknown tag 0xe9" in f for f in new), new
    # the host still runs processes
    node.define("w:one", "process.lua", source="return { main = function() return 1 end }")
    assert node.exec("w:one", timeout=30) == 1


def test_without_a_cluster_nothing_is_batched(node: Node) -> None:
    # a PID of a node that is not known up (no cluster at all here): the send goes through Python, which
    # says why it cannot be delivered
    node.define("w:send", "process.lua", source="""return { main = function(dest)
      local ok, err = process.send(dest, "ping", 1)
      return tostring(ok) .. " " .. tostring(err)
    end }""")
    out = node.exec("w:send", "{n1@app:processes|0x1}", timeout=30)
    assert out.startswith("nil send: ") and "no cluster" in out, out
    batches, messages, _ = node.host().call(lambda ctx: ctx.scheduler.xnode_stats())
    assert (batches, messages) == (0, 0)
