"""The wire encoding of payloads (runtime/wire.py): exact round trips, refusals naming the path, and a
decoder that raises nothing but WireError whatever bytes it is given.

"Exact" means equal *and* of the same types all the way down (``same`` below): a str stays a str and
bytes stay bytes, 1 stays an int and 1.0 a float, -0.0 keeps its sign, NaN comes back as NaN, and dict
order is kept. The random cases are seeded, so a failure repeats.
"""

from __future__ import annotations

import collections
import enum
import math
import random
import struct
from typing import Any, NamedTuple

import pytest
from wippy.runtime import PayloadError, WippyError
from wippy.runtime.payload import MAX_DEPTH
from wippy.runtime.wire import FORMAT_VERSION, WireError, decode, decode_batch, encode, encode_batch

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def same(a: Any, b: Any) -> bool:
    """Equal with exactly the same types, NaN equal to NaN, the sign of zeros kept, dict order kept."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


def roundtrip(value: Any) -> Any:
    data = encode(value)
    assert type(data) is bytes
    return decode(data)


def nested_lists(levels: int) -> Any:
    v: Any = []
    for _ in range(levels - 1):
        v = [v]
    return v


def nested_dicts(levels: int) -> Any:
    v: Any = {}
    for _ in range(levels - 1):
        v = {"a": v}
    return v


SCALARS = [
    None, True, False,
    0, 1, -1, 15, 16, -16, -17, 47, 48, 63, 64, 127, 128, 255, 256, 1000, -1000, 2**31 - 1, -(2**31),
    2**32, 2**53 + 1, I64_MAX, I64_MIN, I64_MAX - 1, I64_MIN + 1, 2**62, -(2**62),
    0.0, -0.0, 1.0, -1.0, 1.5, 0.1, 1e300, 5e-324, -2.5e-308, math.inf, -math.inf, math.nan, float(2**63),
    "", "a", "ping", "x" * 63, "x" * 64, "x" * 127, "x" * 128, "y" * 100_000, "héllo wörld", "☃ snow",
    "𝄞 astral \U0010ffff", "a\x00b", "\x00", "\x00" * 70, "\udc80", "lone \ud800 surrogate", "\ufeff",
    b"", b"a", b"\x00", b"\x00" * 5, bytes(range(256)), b"\xff\xfe", "é".encode(), b"x" * 65536,
]

CONTAINERS = [
    [], {}, [None], [[]], [{}], {"": ""}, {"a": []},
    [1, "a", b"b", None, True, 1.0, [2], {"k": 3}],
    list(range(15)), list(range(16)), list(range(-20, 200)), list(range(1000)),
    {f"k{i}": i for i in range(15)}, {f"k{i}": i for i in range(16)}, {f"k{i}": [i] for i in range(1000)},
    {b"bytes key": 1, 7: "int key", -3: None, 2**40: 1, 1.5: "float key", True: "bool key", "s": b"v"},
    {math.inf: 1, -0.0: 2, I64_MIN: 3, I64_MAX: 4},
    {"k" * 64: "a key of 64 bytes", "k" * 63: "63", "é" * 40: "80 bytes of UTF-8", "\udc80": "surrogate"},
    {"nested": {"deeper": {"list": [[1, 2], [3, [4, {"x": None}]]]}}},
    [[[[[[["deep"]]]]]]],
    {"None value": None, "float": 3.0, "int": 3, "str": "3", "bytes": b"3"},
]


@pytest.mark.parametrize("value", SCALARS + CONTAINERS, ids=lambda v: repr(v)[:40])
def test_round_trip_is_exact(value: Any) -> None:
    assert same(roundtrip(value), value)


def test_the_documented_encodings() -> None:
    """The examples of the module docstring, byte for byte (the format is a contract between nodes)."""
    assert encode(1) == bytes.fromhex("01")
    assert encode(-1) == bytes.fromhex("ff")
    assert encode(200) == bytes.fromhex("e3 90 03")
    assert encode("ping") == bytes.fromhex("84 70 69 6e 67")
    assert encode({"n": 1}) == bytes.fromhex("d1 81 6e 01")
    assert encode([]) == bytes.fromhex("c0")
    assert encode(1.5) == bytes.fromhex("e4 00 00 00 00 00 00 f8 3f")
    assert encode(None) == b"\xe0" and encode(False) == b"\xe1" and encode(True) == b"\xe2"
    assert encode(-16) == b"\xf0" and encode(127) == b"\x7f"
    assert encode(-17) == bytes.fromhex("e3 21")                  # zigzag(-17) = 33
    assert encode(b"ab") == bytes.fromhex("e6 02 61 62")
    assert encode("x" * 64)[:2] == bytes.fromhex("e5 40")
    assert encode(list(range(16)))[:2] == bytes.fromhex("e7 10")
    assert encode(I64_MAX) == bytes.fromhex("e3 fe ff ff ff ff ff ff ff ff 01")
    assert encode(I64_MIN) == bytes.fromhex("e3 ff ff ff ff ff ff ff ff ff 01")


def test_long_forms_decode_too() -> None:
    """A decoder reads forms the encoder does not write (a small int as a varint, a short str long)."""
    assert same(decode(bytes.fromhex("e3 02")), 1)
    assert same(decode(bytes.fromhex("e5 01 61")), "a")
    assert same(decode(bytes.fromhex("e7 01 01")), [1])
    assert same(decode(bytes.fromhex("e8 01 81 61 01")), {"a": 1})
    assert same(decode(bytes.fromhex("e3 81 00")), -1)            # a non-minimal varint


@pytest.mark.parametrize(("a", "b"), [(1, 1.0), (0, 0.0), (True, 1), (False, 0), ("a", b"a"), ("", b""),
                                      ([], {}), (None, False)])
def test_kinds_that_compare_equal_stay_apart(a: Any, b: Any) -> None:
    assert encode(a) != encode(b)
    assert type(roundtrip(a)) is type(a) and type(roundtrip(b)) is type(b)


def test_signed_zero_nan_and_infinities() -> None:
    assert math.copysign(1.0, roundtrip(-0.0)) == -1.0
    assert math.isnan(roundtrip(math.nan))
    assert roundtrip([math.inf, -math.inf]) == [math.inf, -math.inf]
    nan_key = roundtrip({math.nan: 1})
    assert len(nan_key) == 1 and math.isnan(next(iter(nan_key)))


def test_tuples_encode_as_lists() -> None:
    assert encode((1, 2)) == encode([1, 2])
    assert same(roundtrip((1, ("a", ()), [(None,)])), [1, ["a", []], [[None]]])
    assert same(roundtrip({"t": (1.0,)}), {"t": [1.0]})


def test_dict_order_and_none_values_are_kept() -> None:
    d = {"z": 1, "a": None, "m": 2, 5: 3, "b": None}
    assert list(roundtrip(d).items()) == list(d.items())


def test_subclasses_of_plain_types_go_as_their_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Kind(str, enum.Enum):   # noqa: UP042 - str() of this one is "Kind.A": the str data must be sent
        A = "a"

    class Point(NamedTuple):
        x: int
        y: float

    class MyBytes(bytes):
        pass

    value = {
        "enum": Color.RED, "str enum": Kind.A, "point": Point(1, 2.0), "bytes": MyBytes(b"xy"),
        "ordered": collections.OrderedDict(b=1, a=2), "default": collections.defaultdict(list, k=[1]),
        Kind.A: "str-enum key", Color.RED: "int-enum key",
    }
    want = {
        "enum": 1, "str enum": "a", "point": [1, 2.0], "bytes": b"xy", "ordered": {"b": 1, "a": 2},
        "default": {"k": [1]}, "a": "str-enum key", 1: "int-enum key",
    }
    assert same(roundtrip(value), want)


def test_many_distinct_keys_past_the_key_memo() -> None:
    """More distinct str keys than the encoder memoizes (it clears its memo and goes on)."""
    d = {f"key-{i}": i for i in range(10_000)}
    assert same(roundtrip(d), d)
    assert same(roundtrip({"key-1": "again"}), {"key-1": "again"})


# --------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("value", [I64_MAX + 1, I64_MIN - 1, 2**64, -(2**64), 10**30])
def test_ints_outside_64_bits_are_refused(value: int) -> None:
    with pytest.raises(WireError, match=r"\$\.n\[2\]: the integer .* outside the signed 64-bit range"):
        encode({"n": [0, value]})


def test_a_huge_int_is_refused_without_printing_it() -> None:
    with pytest.raises(WireError, match="integer of 16610 bits") as e:
        encode(10**5000)
    assert len(str(e.value)) < 300
    with pytest.raises(WireError, match=r"\$: the integer key 18446744073709551616 is outside"):
        encode({2**64: 1})


def test_depth_64_is_the_limit_both_ways() -> None:
    for make in (nested_lists, nested_dicts):
        ok = make(MAX_DEPTH)
        assert same(roundtrip(ok), ok)
        with pytest.raises(WireError, match="nested deeper than 64"):
            encode(make(MAX_DEPTH + 1))
    with pytest.raises(WireError, match=r"cannot encode \$\.a\.a\.a.*: it is nested deeper than 64") as e:
        encode(nested_dicts(MAX_DEPTH + 1))
    assert e.value.path == "$" + ".a" * MAX_DEPTH
    assert decode(b"\xc1" * (MAX_DEPTH - 1) + b"\xc0") == nested_lists(MAX_DEPTH)
    with pytest.raises(WireError, match="nested deeper than 64 at byte 64"):
        decode(b"\xc1" * MAX_DEPTH + b"\xc0")
    with pytest.raises(WireError, match="nested deeper than 64"):
        decode(b"\xe7\x01" * 10_000 + b"\xc0")


def test_a_cycle_is_refused_as_too_deep() -> None:
    cyc: list[Any] = [1]
    cyc.append(cyc)
    with pytest.raises(WireError, match=r"\$\[2\]\[2\].*nested deeper than 64 .*contains itself"):
        encode(cyc)


@pytest.mark.parametrize(("value", "path", "kind"), [
    ({"a": [1, 2, lambda: 0]}, "$.a[3]", "a function"),
    (object(), "$", "an object"),
    ([{1, 2}], "$[1]", "a set"),
    ({"b": bytearray(b"x")}, "$.b", "a bytearray"),
    ({"a b": {7: [1, 1j]}}, "$['a b'][7][2]", "a complex"),
    ({b"k": {2.5: [None, None, ...]}}, "$[b'k'][2.5][3]", "an ellipsis"),
    ([1, 2**70], "$[2]", "the integer"),
])
def test_what_cannot_be_sent_is_named_by_its_path(value: Any, path: str, kind: str) -> None:
    with pytest.raises(WireError) as e:
        encode(value)
    msg = str(e.value)
    assert msg.startswith(f"wire: cannot encode {path}: {kind}"), msg
    assert e.value.path == path
    if kind != "the integer":
        assert "cannot be sent: send plain data (None, bool, int, float, str, bytes, list, dict)" in msg


@pytest.mark.parametrize("key", [(1, 2), None, frozenset(), 1j])
def test_dict_keys_of_other_types_are_refused(key: Any) -> None:
    with pytest.raises(WireError, match=rf"\$\.d: a key of type {type(key).__name__} cannot be sent: keys are str"):
        encode({"d": {"ok": 1, key: 2}})


def test_wire_error_is_a_payload_error() -> None:
    assert issubclass(WireError, PayloadError) and issubclass(WireError, WippyError)
    with pytest.raises(PayloadError):
        encode(print)
    with pytest.raises(PayloadError):
        decode(b"\xe9")


# --------------------------------------------------------------------------------------- batches


def test_batch_round_trip_keeps_order() -> None:
    frames = [(f"{{app|{i}}}", "topic" if i % 2 else "", {"i": i, "v": [i * 0.5, str(i)], "b": b"\x00"})
              for i in range(300)]
    frames.append(("é-pid", "\udc80target", None))
    data = encode_batch(frames)
    assert data[:2] == bytes((0x57, FORMAT_VERSION))
    got = decode_batch(data)
    assert len(got) == len(frames)
    for (s1, t1, p1), (s2, t2, p2) in zip(frames, got, strict=True):
        assert type(s2) is str and type(t2) is str
        assert s1 == s2 and t1 == t2 and same(p1, p2)
    assert decode_batch(encode_batch([])) == []
    assert decode_batch(bytearray(data)) == got and decode_batch(memoryview(data)) == got


def test_batch_refusals_name_the_frame() -> None:
    with pytest.raises(WireError, match=r"items\[1\] \(to 't'\) payload \$\.x\[1\]: a function cannot be sent"):
        encode_batch([("p", "t", 1), ("p", "t", {"x": [len]})])
    with pytest.raises(WireError, match=r"items\[0\]: the sender_pid is an int, not a str"):
        encode_batch([(1, "t", None)])  # type: ignore[list-item]
    with pytest.raises(WireError, match=r"items\[0\]: the target is a bytes, not a str"):
        encode_batch([("p", b"t", None)])  # type: ignore[list-item]
    with pytest.raises(WireError, match=r"items\[0\]: a frame is a \(sender_pid, target, payload\) tuple"):
        encode_batch([("p", "t")])  # type: ignore[list-item]


def test_batch_decode_refuses_another_format() -> None:
    good = encode_batch([("p", "t", 1)])
    with pytest.raises(WireError, match=r"not a wippy batch \(first byte 0x01, expected 0x57\) at byte 0"):
        decode_batch(encode(1) + b"\x00\x00")
    with pytest.raises(WireError, match="batch format version 2, this node reads version 1 at byte 1: "
                                        r"the sender and receiver disagree on the format \(same wippy version"):
        decode_batch(good[:1] + b"\x02" + good[2:])
    with pytest.raises(WireError, match="left over after the last frame"):
        decode_batch(good + b"\x00")
    with pytest.raises(WireError, match="truncated"):
        decode_batch(b"W\x01\xff\xff\xff\x7f")           # 268 million frames announced, none there


# --------------------------------------------------------------------------------------- decode errors

RICH = {
    "topic": "ping", "n": 1, "neg": -5, "big": I64_MIN, "mid": 1000, "f": 2.5, "nan": math.nan,
    "s": "héllo 𝄞 \x00", "long": "L" * 70, "b": b"\x00\xff", "blob": b"z" * 200, "none": None, "t": True,
    "f0": False, "list": [1, "two", 3.0, [4, [5]], {"six": 6}, b"", None, False, True, -1, 2**40],
    "long list": list(range(20)), "dict": {f"k{i}": {"v": i} for i in range(17)},
    7: "int key", b"bk": "bytes key", 1.25: "float key", "sur\udc80": "lone surrogate key",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [RICH, [RICH, RICH], "x" * 300, b"y" * 300, 2**40, -(2**62), 1.5],
                         ids=["rich", "rich x2", "str", "bytes", "int", "negint", "float"])
def test_every_truncation_raises_wire_error(value: Any) -> None:
    data = encode(value)
    for i in range(len(data)):
        with pytest.raises(WireError, match=r"^wire: truncated frame at byte \d+") as e:
            decode(data[:i])
        assert e.value.offset is not None and e.value.offset <= i
        assert "same wippy version on both nodes?" in str(e.value)
    assert same(decode(memoryview(data)), value) and same(decode(bytearray(data)), value)


@pytest.mark.timeout(60)
def test_every_truncation_of_a_batch_raises_wire_error() -> None:
    data = encode_batch([("{a|1}", "ping", RICH), ("{a|2}", "pong", [1, 2.0, "3"])])
    for i in range(len(data)):
        with pytest.raises(WireError, match=r"^wire: truncated frame at byte \d+"):
            decode_batch(data[:i])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(WireError, match=r"^wire: 2 bytes left over after the value at byte 1: "):
        decode(b"\x01\x02\x03")


@pytest.mark.parametrize(("data", "message"), [
    (b"\xe9", "unknown tag 0xe9 at byte 0"),
    (b"\xc2\x01\xef", "unknown tag 0xef at byte 2"),
    (b"\x82\xc3\x28", "invalid UTF-8 in a str at byte 1"),
    (b"\xd1\x81a\x83ab\xff", "invalid UTF-8 in a str at byte 6"),
    (b"\xe3" + b"\xff" * 10 + b"\x01", "a varint longer than 10 bytes at byte 1"),
    (b"\xe3" + b"\xff" * 9 + b"\x02", "an integer outside 64 bits at byte 0"),
    (b"\xd1\xc0\x01", "a dict key of type list at byte 1"),
    (b"\xd1\xe0\x01", "a dict key of type NoneType at byte 1"),
    (b"\xd1\xd0\x01", "a dict key of type dict at byte 1"),
    (b"\xe7\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "truncated frame at byte 10 (a list of"),
    (b"\xe8\xff\xff\xff\xff\x0f", "truncated frame at byte 6 (a dict of"),
    (b"\xe5\xff\xff\xff\xff\x0f", "truncated frame at byte 6 (a str of 4294967295 bytes at byte 0)"),
    (b"\xe6\x05abc", "truncated frame at byte 5 (a bytes value of 5 bytes at byte 0)"),
    (b"\xe4\x00\x00", "truncated frame at byte 3"),
    (b"", "truncated frame at byte 0"),
])
def test_garbage_is_named_with_its_offset(data: bytes, message: str) -> None:
    with pytest.raises(WireError) as e:
        decode(data)
    assert message in str(e.value), str(e.value)
    assert "the sender and receiver disagree on the format (same wippy version on both nodes?)" in str(e.value)


@pytest.mark.parametrize("data", ["text", 5, None, [1]])
def test_decode_takes_only_byte_buffers(data: Any) -> None:
    with pytest.raises(WireError, match="decode takes bytes, bytearray or memoryview"):
        decode(data)
    with pytest.raises(WireError, match="decode takes bytes, bytearray or memoryview"):
        decode_batch(data)


def _decodes_or_wire_error(data: bytes) -> None:
    """decode (and decode_batch) of ``data`` gives plain data or raises WireError, nothing else."""
    for fn in (decode, decode_batch):
        try:
            value = fn(data)
        except WireError as e:
            assert str(e).startswith("wire: ")
        else:
            encode(value if fn is decode else [list(f) for f in value])   # what decodes is plain data


@pytest.mark.timeout(60)
def test_random_garbage_raises_only_wire_error() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        _decodes_or_wire_error(rng.randbytes(rng.randrange(0, 40)))
    for _ in range(1000):   # biased to the tags that go deeper
        _decodes_or_wire_error(bytes(rng.choice([0xC3, 0xD2, 0xE7, 0xE8, 0xE5, 0x83, 0xE3, 0xE4, 0x41, 0xFF, 0x80])
                                     for _ in range(rng.randrange(1, 30))))


@pytest.mark.timeout(60)
def test_mutated_encodings_raise_only_wire_error() -> None:
    rng = random.Random(7)
    seeds = [encode(RICH), encode([1, [2, [3]], {"a": b"b"}]),
             encode_batch([("p", "t", RICH), ("q", "u", None)])]
    for _ in range(2000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            i = rng.randrange(len(data))
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
        _decodes_or_wire_error(bytes(data))


# --------------------------------------------------------------------------------------- random payloads


def _rand_str(rng: random.Random) -> str:
    pools = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x7FF), (0x800, 0xD7FF), (0xD800, 0xDFFF), (0xE000, 0xFFFF),
             (0x10000, 0x10FFFF)]
    n = rng.choice([0, 1, 3, 8, 30, 63, 64, 65, 200])
    out = []
    for _ in range(n):
        lo, hi = pools[0] if rng.random() < 0.7 else rng.choice(pools)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def _rand_int(rng: random.Random) -> int:
    return rng.choice([
        lambda: rng.randint(-20, 130), lambda: rng.randint(-(2**15), 2**15), lambda: rng.randint(I64_MIN, I64_MAX),
        lambda: rng.choice([I64_MIN, I64_MAX, 0, -1, -16, -17, 127, 128]),
        lambda: rng.randint(-(2**40), 2**40),
    ])()


def _rand_float(rng: random.Random) -> float:
    return rng.choice([
        lambda: rng.uniform(-1e6, 1e6), lambda: float(rng.randint(-100, 100)),
        lambda: struct.unpack("<d", rng.randbytes(8))[0],   # any bit pattern: NaNs, subnormals, infinities
        lambda: rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan]),
    ])()


def _rand_key(rng: random.Random) -> Any:
    return rng.choice([lambda: _rand_str(rng), lambda: _rand_str(rng), lambda: rng.randbytes(rng.randrange(5)),
                       lambda: _rand_int(rng), lambda: _rand_float(rng), lambda: rng.random() < 0.5])()


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 5 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return _rand_int(rng)
    if kind == 2:
        return _rand_float(rng)
    if kind in (3, 4):
        return _rand_str(rng)
    if kind == 5:
        return rng.randbytes(rng.choice([0, 1, 10, 63, 64, 300]))
    if kind == 6:
        return rng.choice([[], {}, "", b""])
    n = rng.choice([0, 1, 2, 5, 15, 16, 17, 40] if depth == 0 else [0, 1, 2, 3, 16] if depth < 3 else [0, 1, 2])
    if kind in (7, 8):
        items = [rand_value(rng, depth + 1) for _ in range(n)]
        return tuple(items) if rng.random() < 0.1 else items
    return {_rand_key(rng): rand_value(rng, depth + 1) for _ in range(n)}


def _as_decoded(v: Any) -> Any:
    """What decode gives back for ``v``: tuples become lists."""
    if isinstance(v, (list, tuple)):
        return [_as_decoded(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_decoded(x) for k, x in v.items()}
    return v


@pytest.mark.timeout(60)
def test_random_payloads_round_trip_exactly() -> None:
    rng = random.Random(12345)
    for i in range(1500):
        value = rand_value(rng)
        got = roundtrip(value)
        assert same(got, _as_decoded(value)), f"case {i}: {value!r:.300} -> {got!r:.300}"
        assert encode(got) == encode(value)     # the encoding is canonical: same value, same bytes


@pytest.mark.timeout(60)
def test_random_batches_round_trip_exactly() -> None:
    rng = random.Random(99)
    for _ in range(60):
        frames = [(_rand_str(rng), _rand_str(rng), rand_value(rng)) for _ in range(rng.randrange(0, 20))]
        got = decode_batch(encode_batch(frames))
        assert len(got) == len(frames)
        for (s, t, p), (s2, t2, p2) in zip(frames, got, strict=True):
            assert same(s2, s) and same(t2, t) and same(p2, _as_decoded(p))
