"""Tests for runtime/lua/json.lua, the pure Lua 5.4 JSON module.

The module is loaded exactly as the runtime loads it: as a text chunk with
an environment holding only a fixed set of standard globals. Lua snippets
are run through lupa with ``encoding=None``, so Lua strings come back as
``bytes`` and Lua code / string arguments are passed as ``bytes``.
"""

import functools
import json
import pathlib

import lupa.lua54 as lupa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SRC = (
    pathlib.Path(__file__).resolve().parent.parent / "runtime" / "lua" / "json.lua"
).read_bytes()
GLOBALS = (
    b"string table math utf8 type tostring tonumber pairs ipairs next select error pcall "
    b"setmetatable getmetatable rawget rawequal rawlen"
)


def make_with_env():
    lua = lupa.LuaRuntime(
        register_eval=False,
        register_builtins=False,
        unpack_returned_tuples=True,
        encoding=None,
    )
    env = lua.eval(
        b"function(names) local e = {} for n in names:gmatch('%S+') do e[n] = _G[n] end return e end"
    )(GLOBALS)
    mod = lua.eval(
        b"function(src, env) return assert(load(src, '=json.lua', 't', env))() end"
    )(SRC, env)
    return lua, mod, env


def make():
    lua, mod, _ = make_with_env()
    return lua, mod


@functools.cache
def shared():
    """One runtime for the property tests (hypothesis dislikes function fixtures)."""
    return make()


@pytest.fixture
def lj():
    return make()


def run(lj, body, *args):
    """Run a Lua function body with `json` and `...` (args) in scope."""
    lua, mod = lj
    return lua.eval(b"function(json, ...) " + body + b" end")(mod, *args)


def enc(lj, expr):
    """Encode the Lua expression; always returns a (result, err) pair."""
    return run(lj, b"local s, e = json.encode(" + expr + b") return s, e")


def dec(lj, text, probe=b"v"):
    """Decode text and return (probe, err), where probe is a Lua expression over v."""
    return run(lj, b"local v, e = json.decode(...) return " + probe + b", e", text)


# Lua helpers shared by several snippets.
DEEP_EQ = rb"""
local function deq(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b and math.type(a) == math.type(b) end
  for k, v in pairs(a) do if not deq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
"""

NEST = rb"""
local function nest(n, key)
  local root = {}
  local cur = root
  for _ = 2, n do local t = {} cur[key] = t cur = t end
  return root
end
"""


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def test_module_table_has_exactly_encode_and_decode(lj):
    keys = run(
        lj,
        b"local ks = {} for k, v in pairs(json) do ks[#ks + 1] = k .. ':' .. type(v) end "
        b"table.sort(ks) return table.concat(ks, ',')",
    )
    assert keys == b"decode:function,encode:function"


def test_loading_defines_no_globals():
    lua, _, env = make_with_env()
    names = lua.eval(
        b"function(env) local ks = {} for k in pairs(env) do ks[#ks + 1] = k end "
        b"table.sort(ks) return table.concat(ks, ' ') end"
    )(env)
    assert names.split() == sorted(GLOBALS.split())


def test_module_is_immune_to_later_global_and_library_tampering():
    lua, mod, env = make_with_env()
    # Wipe the module's environment and sabotage the shared library tables,
    # as sandboxed user code might; the module must keep working.
    lua.eval(rb"""function(env)
      for k in pairs(env) do env[k] = nil end
      setmetatable(env, {__index = function(_, k) error('global access: ' .. tostring(k)) end})
      local boom = function() error('tampered') end
      for _, lib in ipairs({string, table, math, utf8}) do
        for k in pairs(lib) do lib[k] = boom end
      end
      getmetatable('').__index = {}
    end""")(env)
    assert lua.eval(
        b"function(json) return json.encode({b = {1, 2.5, 'x\\n'}, a = true}) end"
    )(mod) == (b'{"a":true,"b":[1,2.5,"x\\n"]}')
    assert lua.eval(rb"""function(json)
      local v = json.decode([[{"k": [1, "\u00e9\n", null, {"z": false}]}]])
      return v.k[1], v.k[2], v.k[3], v.k[4].z
    end""")(mod) == (1, "é\n".encode(), None, False)
    assert lua.eval(b"function(json) return json.decode('[1,') end")(mod) == (
        None,
        b"json: unexpected end of input at line 1 column 4",
    )
    assert lua.eval(b"function(json) return json.encode({f = json.encode}) end")(
        mod
    ) == (
        None,
        b"json: cannot encode function at path $.f",
    )


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (b"nil", b"null"),
        (b"", b"null"),
        (b"true", b"true"),
        (b"false", b"false"),
        (b"0", b"0"),
        (b"-7", b"-7"),
        (b"math.maxinteger", b"9223372036854775807"),
        (b"math.mininteger", b"-9223372036854775808"),
        (b"1.0", b"1"),
        (b"-2.0", b"-2"),
        (b"2^53", b"9007199254740992"),
        (b"-0.0", b"-0"),
        (b"0.5", b"0.5"),
        (b"0.1", b"0.10000000000000001"),
        (b"1e300", b"1.0000000000000001e+300"),
        (b"1e-7", b"9.9999999999999995e-08"),
        (b"5e-324", b"4.9406564584124654e-324"),
    ],
)
def test_encode_scalars(lj, expr, expected):
    assert enc(lj, expr) == (expected, None)


def test_encoded_floats_round_trip_exactly(lj):
    # %.17g is lossless: the text parses back to the very same double.
    out = run(
        lj,
        rb"""
      local vals = {0.1, 1/3, math.pi, 1e300, -2.5e-300, 5e-324, 123456789.125, 2^63}
      for _, x in ipairs(vals) do
        local back = json.decode((json.encode(x)))
        if back ~= x then return tostring(x) end
      end
      return 'ok'
    """,
    )
    assert out == b"ok"


def test_integer_and_float_types_are_kept_apart(lj):
    assert run(lj, b"return json.encode(3), json.encode(3.0), json.encode(3.5)") == (
        b"3",
        b"3",
        b"3.5",
    )
    # Integers are exact even beyond 2^53, where floats would lose digits.
    assert enc(lj, b"(1 << 53) + 1") == (b"9007199254740993", None)


@pytest.mark.parametrize("expr", [b"0/0", b"-(0/0)", b"math.huge", b"-math.huge"])
def test_encode_nan_and_inf_fail_at_root(lj, expr):
    assert enc(lj, expr) == (None, b"json: cannot encode NaN/inf at path $")


def test_encode_nan_inf_error_paths(lj):
    assert enc(lj, b"{a = {1, 0/0}}") == (
        None,
        b"json: cannot encode NaN/inf at path $.a[2]",
    )
    assert enc(lj, b"{{x = {y = math.huge}}}") == (
        None,
        b"json: cannot encode NaN/inf at path $[1].x.y",
    )
    # An infinite number used as a key is reported at the table holding it.
    assert enc(lj, b"{a = {[math.huge] = 1}}") == (
        None,
        b"json: cannot encode NaN/inf at path $.a",
    )


@pytest.mark.parametrize(
    ("lua_str", "expected"),
    [
        (rb"'plain'", rb'"plain"'),
        (rb"''", rb'""'),
        (rb"'say \"hi\"'", rb'"say \"hi\""'),
        (rb"'back\\slash'", rb'"back\\slash"'),
        (rb"'a/b'", rb'"a/b"'),
        (rb"'\n\t\r\b\f'", rb'"\n\t\r\b\f"'),
        (rb"'a\0b'", rb'"a\u0000b"'),
        (rb"'\0\0'", rb'"\u0000\u0000"'),
        (rb"'\1\31'", rb'"\u0001\u001f"'),
        (rb"'\11'", rb'"\u000b"'),
        (rb"'del\127'", rb'"del\u007f"'),
        (rb"' ~'", rb'" ~"'),
    ],
)
def test_encode_string_escapes(lj, lua_str, expected):
    assert enc(lj, lua_str) == (expected, None)


def test_encode_passes_utf8_and_invalid_utf8_through(lj):
    assert enc(lj, "'é€😀'".encode()) == ('"é€😀"'.encode(), None)
    # Bytes >= 0x80 are copied verbatim even when they are not valid UTF-8.
    assert enc(lj, rb"'\xff\xfe\x80 \xc3'") == (b'"\xff\xfe\x80 \xc3"', None)


def test_encode_all_bytes(lj):
    s, err = run(
        lj,
        b"local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end "
        b"local s, e = json.encode(table.concat(t)) return s, e",
    )
    assert err is None
    assert s[0:1] == s[-1:] == b'"'
    body = s[1:-1]
    # Every byte < 0x20 and 0x7f is escaped, everything >= 0x80 is raw.
    assert all(b >= 0x20 and b != 0x7F for b in body)
    assert body.endswith(bytes(range(0x80, 0x100)))
    assert json.loads(s[:-129] + b'"') == "".join(map(chr, range(0x80)))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (b"{}", b"{}"),
        (b"{1, 2, 3}", b"[1,2,3]"),
        (b"{'a', true, false}", b'["a",true,false]'),
        (b"{{}, {1}, {{}}}", b"[{},[1],[{}]]"),
        (b"{[2] = 'b', [1] = 'a'}", b'["a","b"]'),
        (b"{[1] = 1, [3] = 3}", b'{"1":1,"3":3}'),
        (b"{[0] = 'zero'}", b'{"0":"zero"}'),
        (b"{[-1] = 1}", b'{"-1":1}'),
        (b"{[1.5] = 1}", b'{"1.5":1}'),
        (
            b"{[2.0] = 'float key normalised by Lua'}",
            b'{"2":"float key normalised by Lua"}',
        ),
        (b"{1, 2, x = 3}", b'{"1":1,"2":2,"x":3}'),
        (b"{['1'] = 'string one'}", b'{"1":"string one"}'),
        (b"{a = {b = {c = {}}}}", b'{"a":{"b":{"c":{}}}}'),
        (b"{['a\"b'] = 1, ['\\n'] = 2}", b'{"\\n":2,"a\\"b":1}'),
    ],
)
def test_encode_tables(lj, expr, expected):
    assert enc(lj, expr) == (expected, None)


def test_encode_sorts_object_keys(lj):
    assert enc(lj, b"{b = 1, a = 2, c = {z = 1, y = 2}, B = 0}") == (
        b'{"B":0,"a":2,"b":1,"c":{"y":2,"z":1}}',
        None,
    )
    # Numeric keys are sorted as their string forms: "10" < "2" < "x".
    assert enc(lj, b"{[10] = 1, [2] = 2, x = 3}") == (b'{"10":1,"2":2,"x":3}', None)


def test_encode_is_deterministic_regardless_of_insertion_order(lj):
    out = run(
        lj,
        rb"""
      local keys = {}
      for i = 1, 200 do keys[i] = 'k' .. i end
      local a, b = {}, {}
      for i = 1, 200 do a[keys[i]] = i end
      for i = 200, 1, -1 do b[keys[i]] = i end
      b.extra = true b.extra = nil
      return json.encode(a), json.encode(b)
    """,
    )
    assert out[0] == out[1]
    assert list(json.loads(out[0])) == sorted(f"k{i}" for i in range(1, 201))


def test_encode_ignores_metatables(lj):
    assert enc(
        lj, b"setmetatable({a = 1}, {__tojson = function() return 'x' end})"
    ) == (b'{"a":1}', None)
    expr = (
        b"setmetatable({}, {__index = function() return 1 end, __len = function() return 3 end, "
        b"__pairs = function() error('no') end})"
    )
    assert enc(lj, expr) == (b"{}", None)
    assert enc(lj, b"setmetatable({1, 2}, {__index = function() return 'x' end})") == (
        b"[1,2]",
        None,
    )


def test_encode_duplicate_key_after_stringification(lj):
    assert enc(lj, b"{[1] = 'int', ['1'] = 'str'}") == (
        None,
        b'json: duplicate key "1" at path $',
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (b"function() end", b"json: cannot encode function at path $"),
        (b"{f = function() end}", b"json: cannot encode function at path $.f"),
        (b"{1, {2, function() end}}", b"json: cannot encode function at path $[2][2]"),
        (b"{[true] = 1}", b"json: cannot encode boolean at path $"),
        (b"{a = {[{}] = 1}}", b"json: cannot encode table at path $.a"),
        (b"{1, {[json.encode] = 1}}", b"json: cannot encode function at path $[2]"),
    ],
)
def test_encode_unsupported_types(lj, expr, expected):
    assert enc(lj, expr) == (None, expected)


def test_encode_thread_and_userdata(lj):
    assert run(lj, b"return json.encode({x = {coroutine.create(print)}})") == (
        None,
        b"json: cannot encode thread at path $.x[1]",
    )
    assert run(lj, b"return json.encode({u = ...})", object()) == (
        None,
        b"json: cannot encode userdata at path $.u",
    )


def test_encode_never_raises(lj):
    assert run(lj, b"return pcall(json.encode, {function() end})") == (
        True,
        None,
        b"json: cannot encode function at path $[1]",
    )


def test_encode_depth_limit(lj):
    ok = run(lj, NEST + b"return json.encode(nest(64, 1))")
    assert ok == b"[" * 63 + b"{}" + b"]" * 63
    assert run(lj, NEST + b"return json.encode(nest(65, 1))") == (
        None,
        b"json: nesting deeper than 64 at path $" + b"[1]" * 64,
    )
    assert run(lj, NEST + b"return json.encode(nest(65, 'k'))") == (
        None,
        b"json: nesting deeper than 64 at path $" + b".k" * 64,
    )


def test_encode_cycle_hits_depth_limit(lj):
    assert run(lj, b"local t = {} t.self = t return json.encode(t)") == (
        None,
        b"json: nesting deeper than 64 at path $" + b".self" * 64,
    )
    assert run(lj, b"local t = {} t[1] = {t} return json.encode(t)") == (
        None,
        b"json: nesting deeper than 64 at path $" + b"[1]" * 64,
    )


def test_encode_large_array_output_parses(lj):
    s = run(
        lj,
        b"local t = {} for i = 1, 20000 do t[i] = {i, 'v' .. i, i / 4} end return json.encode(t)",
    )
    assert json.loads(s) == [[i, f"v{i}", i / 4] for i in range(1, 20001)]


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "mtype"),
    [
        (b"true", True, None),
        (b"false", False, None),
        (b"0", 0, b"integer"),
        (b"-0", 0, b"integer"),
        (b"12", 12, b"integer"),
        (b"-12", -12, b"integer"),
        (b"9223372036854775807", 2**63 - 1, b"integer"),
        (b"-9223372036854775808", -(2**63), b"integer"),
        (b"9223372036854775808", 2.0**63, b"float"),
        (b"-9223372036854775809", -(2.0**63), b"float"),
        (b"1.0", 1.0, b"float"),
        (b"1.5", 1.5, b"float"),
        (b"-0.0", 0.0, b"float"),
        (b"1e3", 1000.0, b"float"),
        (b"1E+3", 1000.0, b"float"),
        (b"25e-1", 2.5, b"float"),
        (b"-0.5e-2", -0.005, b"float"),
        (b"0.1", 0.1, b"float"),
        (b"1e400", float("inf"), b"float"),
        (b' \t\r\n "x" \n', b"x", None),
    ],
)
def test_decode_scalars(lj, text, value, mtype):
    got = run(lj, b"local v, e = json.decode(...) return v, math.type(v), e", text)
    assert got == (value, mtype, None)


def test_decode_null_is_nil_without_error(lj):
    assert run(
        lj, b"return select('#', json.decode('null')), json.decode(' null ')"
    ) == (1, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (rb'""', b""),
        (rb'"plain text"', b"plain text"),
        (rb'"\"\\\/\b\f\n\r\t"', b'"\\/\b\f\n\r\t'),
        (rb'"\u0041\u00e9\u20AC"', "Aé€".encode()),
        (rb'"\u0000x\u0000"', b"\0x\0"),
        (rb'"\u007f\u001F"', b"\x7f\x1f"),
        (rb'"\ud83d\ude00"', "😀".encode()),
        (rb'"\uD834\uDD1E!"', "𝄞!".encode()),
        (rb'"a\ud800"', "a\ufffd".encode()),
        (rb'"\ud800\u0041"', "\ufffdA".encode()),
        (rb'"\udc00\ud800"', "\ufffd\ufffd".encode()),
        (rb'"\ud800\n"', "\ufffd\n".encode()),
        ('"raw é€😀"'.encode(), "raw é€😀".encode()),
        (b'"bad \xff\xfe utf8"', b"bad \xff\xfe utf8"),
        (b'"del \x7f ok"', b"del \x7f ok"),
        (b'"' + b"ab\\n" * 1000 + b'"', b"ab\n" * 1000),
    ],
)
def test_decode_strings(lj, text, expected):
    assert dec(lj, text) == (expected, None)


def test_decode_arrays_and_objects(lj):
    assert dec(lj, b"[]", b"type(v), next(v)") == (b"table", None, None)
    assert dec(lj, b"{}", b"type(v), next(v)") == (b"table", None, None)
    assert dec(
        lj, b'[1, "two", [3], {"four": 4}]', b"#v, v[1], v[2], v[3][1], v[4].four"
    ) == (
        4,
        1,
        b"two",
        3,
        4,
        None,
    )
    assert dec(lj, b' \t\r\n[ 1 ,\n{ "a" : [ ] } ]\n ', b"v[1], type(v[2].a)") == (
        1,
        b"table",
        None,
    )


def test_decode_null_leaves_holes_and_drops_keys(lj):
    probe = b"v[1], v[2], v[3], v[4], select('#', table.unpack(v, 1, 4))"
    assert dec(lj, b"[1, null, 3, null]", probe) == (1, None, 3, None, 4, None)
    assert dec(lj, b'{"a": null, "b": 1}', b"rawget(v, 'a') == nil, v.b, next(v)") == (
        True,
        1,
        b"b",
        None,
    )


def test_decode_duplicate_keys_last_wins(lj):
    assert dec(lj, b'{"a": 1, "a": 2}', b"v.a") == (2, None)
    assert dec(lj, b'{"a": 1, "a": null}', b"v.a, next(v)") == (None, None, None)


def test_decode_object_keys_are_strings(lj):
    assert dec(lj, b'{"1": "x"}', b"v['1'], v[1]") == (b"x", None, None)
    assert dec(lj, b'{"a\\u0000b": 1}', b"v['a\\0b']") == (1, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", b"unexpected end of input at line 1 column 1"),
        (b"   ", b"unexpected end of input at line 1 column 4"),
        (b'{"a": }', b"unexpected character '}' at line 1 column 7"),
        (b'{\n  "abc', b"unterminated string at line 2 column 3"),
        (b"[1, ", b"unexpected end of input at line 1 column 5"),
        (b"[1,]", b"unexpected character ']' at line 1 column 4"),
        (b'{"a":1,}', b"unexpected character '}' at line 1 column 8"),
        (b'{"a" 1}', b"unexpected character '1' at line 1 column 6"),
        (b"{1:2}", b"unexpected character '1' at line 1 column 2"),
        (b"{'a':2}", b"unexpected character ''' at line 1 column 2"),
        (b'{"a":1 "b":2}', b"unexpected character '\"' at line 1 column 8"),
        (b"[1 2]", b"unexpected character '2' at line 1 column 4"),
        (b"[", b"unexpected end of input at line 1 column 2"),
        (b'{"a"', b"unexpected end of input at line 1 column 5"),
        (b"01", b"unexpected character '1' at line 1 column 2"),
        (b"-01", b"unexpected character '1' at line 1 column 3"),
        (b"1.", b"unexpected end of input at line 1 column 3"),
        (b"1.e5", b"unexpected character 'e' at line 1 column 3"),
        (b".5", b"unexpected character '.' at line 1 column 1"),
        (b"-", b"unexpected end of input at line 1 column 2"),
        (b"-x", b"unexpected character 'x' at line 1 column 2"),
        (b"+1", b"unexpected character '+' at line 1 column 1"),
        (b"1e", b"unexpected end of input at line 1 column 3"),
        (b"1e+", b"unexpected end of input at line 1 column 4"),
        (b"1ex", b"unexpected character 'x' at line 1 column 3"),
        (b"0x10", b"unexpected character 'x' at line 1 column 2"),
        (b"tru", b"unexpected end of input at line 1 column 4"),
        (b"trux", b"unexpected character 'x' at line 1 column 4"),
        (b"truex", b"unexpected character 'x' at line 1 column 5"),
        (b"nul", b"unexpected end of input at line 1 column 4"),
        (b"True", b"unexpected character 'T' at line 1 column 1"),
        (b"NaN", b"unexpected character 'N' at line 1 column 1"),
        (b"-Infinity", b"unexpected character 'I' at line 1 column 2"),
        (b"[1] x", b"unexpected character 'x' at line 1 column 5"),
        (b"{} {}", b"unexpected character '{' at line 1 column 4"),
        (b"1 2", b"unexpected character '2' at line 1 column 3"),
        (b'"abc', b"unterminated string at line 1 column 1"),
        (b'["ok", "abc\\', b"unterminated string at line 1 column 8"),
        (b'"a\\qb"', b"invalid escape '\\q' at line 1 column 3"),
        (b'"a\\\xffb"', b"invalid escape at line 1 column 3"),
        (b'"\\u12G4"', b"invalid unicode escape at line 1 column 2"),
        (b'"\\u12"', b"invalid unicode escape at line 1 column 2"),
        (b'"\\U0041"', b"invalid escape '\\U' at line 1 column 2"),
        (b'"a\nb"', b"unescaped control character in string at line 1 column 3"),
        (b'"a\tb"', b"unescaped control character in string at line 1 column 3"),
        (b'"a\0b"', b"unescaped control character in string at line 1 column 3"),
        (b"\x01", b"unexpected byte 0x01 at line 1 column 1"),
        (b"\0", b"unexpected byte 0x00 at line 1 column 1"),
        (b"\xef\xbb\xbf{}", b"unexpected byte 0xEF at line 1 column 1"),
        (b"[1]\0", b"unexpected byte 0x00 at line 1 column 4"),
        (b"[\n\n   }", b"unexpected character '}' at line 3 column 4"),
        (b"[1,\r\n 2,\n x]", b"unexpected character 'x' at line 3 column 2"),
        (
            b'{\n  "a": [1,\n        2,,\n',
            b"unexpected character ',' at line 3 column 11",
        ),
    ],
)
def test_decode_errors(lj, text, message):
    assert run(lj, b"return json.decode(...)", text) == (None, b"json: " + message)


@pytest.mark.parametrize(
    ("args", "type_name"),
    [
        (b"nil", b"nil"),
        (b"", b"nil"),
        (b"5", b"number"),
        (b"{}", b"table"),
        (b"true", b"boolean"),
    ],
)
def test_decode_rejects_non_strings(lj, args, type_name):
    assert run(lj, b"return json.decode(" + args + b")") == (
        None,
        b"json: decode expects a string, got " + type_name,
    )


def test_decode_never_raises(lj):
    assert run(lj, b"return pcall(json.decode, '[1, }')") == (
        True,
        None,
        b"json: unexpected character '}' at line 1 column 5",
    )
    assert run(lj, b"return pcall(json.decode, print)") == (
        True,
        None,
        b"json: decode expects a string, got function",
    )


def test_decode_depth_limit(lj):
    assert dec(lj, b"[" * 64 + b"]" * 64, b"type(v)") == (b"table", None)
    assert run(lj, b"return json.decode(...)", b"[" * 65 + b"]" * 65) == (
        None,
        b"json: nesting deeper than 64 at line 1 column 65",
    )
    obj = b'{"a":' * 64 + b"1" + b"}" * 64
    assert dec(lj, obj, b"type(v)") == (b"table", None)
    deep_obj = b'{"a":' * 65 + b"1" + b"}" * 65
    assert run(lj, b"return json.decode(...)", deep_obj) == (
        None,
        b"json: nesting deeper than 64 at line 1 column 321",
    )
    # Far too deep input is rejected cleanly rather than overflowing a stack.
    assert run(lj, b"return json.decode(...)", b"[" * 100000) == (
        None,
        b"json: nesting deeper than 64 at line 1 column 65",
    )


def test_decode_large_document(lj):
    doc = json.dumps(
        [
            {"id": i, "name": f'item "{i}"\n', "tags": ["a", "é"], "w": i / 3}
            for i in range(5000)
        ]
    )
    assert run(
        lj,
        b"local v, e = json.decode(...) return #v, v[5000].id, v[5000].name, e",
        doc.encode(),
    ) == (
        5000,
        4999,
        b'item "4999"\n',
        None,
    )


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_lua_round_trip_nested_tables(lj):
    out = run(
        lj,
        DEEP_EQ
        + rb"""
      local samples = {
        {1, 2, 3},
        {a = 1, b = {c = {d = {'deep', true, false}}}},
        {list = {{x = 1.5}, {y = -2}, {z = 'q\0"\\\n'}}, empty = {}, n = math.maxinteger},
        {['k with spaces'] = {1, {2, {3, {}}}}, ['\xff'] = '\xfe', [''] = ''},
        {0.1, 1e-300, -1e300, 2^-1074, 123.456},
        {[1] = 'a', [2] = 'b', [4] = 'd'},
      }
      for i, x in ipairs(samples) do
        local s, e = json.encode(x)
        if not s then return 'encode ' .. i .. ': ' .. e end
        local y, e2 = json.decode(s)
        if e2 then return 'decode ' .. i .. ': ' .. e2 end
        -- Sparse arrays become objects with string keys; compare via text.
        if i == 6 then
          if json.encode(y) ~= s then return 'mismatch ' .. i end
        elseif not deq(x, y) then
          return 'mismatch ' .. i .. ': ' .. s
        end
      end
      return 'ok'
    """,
    )
    assert out == b"ok"


def test_integral_floats_come_back_as_integers(lj):
    # JSON has one number type: 1.0 encodes as 1, which decodes as an integer.
    assert run(
        lj, b"local v = json.decode(json.encode({1.0})) return v[1], math.type(v[1])"
    ) == (1, b"integer")


@pytest.mark.parametrize(
    "text",
    [
        b"{}",
        b"[1,2,3]",
        b'{"c":"\\u0000\\n","a":[1,{"b":true}]}',
        b'[true,false,"x",-1.5,1e+100]',
        b'{"":0,"\\"":1,"\\\\":2}',
    ],
)
def test_encode_of_decode_is_canonical(lj, text):
    once = run(lj, b"return json.encode((json.decode(...)))", text)
    twice = run(lj, b"return json.encode((json.decode(...)))", once)
    assert once == twice
    assert json.loads(once) == json.loads(text)


# ---------------------------------------------------------------------------
# Property tests against Python's json module
# ---------------------------------------------------------------------------

SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(), children, max_size=6)
    ),
    max_leaves=30,
)


def normalize(v):
    """Map a JSON value to a form where Lua's lossy spots compare equal.

    Empty list and empty dict are the same Lua table ({}), and integral
    floats may come back as ints, so numbers compare by value.
    """
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        return ("num", float(v))
    if isinstance(v, (list, dict)) and not v:
        return ("empty",)
    if isinstance(v, list):
        return [normalize(x) for x in v]
    if isinstance(v, dict):
        return {k: normalize(x) for k, x in v.items()}
    return v


def lua_reencode(text):
    lua, mod = shared()
    fn = lua.eval(
        b"function(json, s) local v, e = json.decode(s) if e then return nil, e end "
        b"local out, e2 = json.encode(v) return out, e2 end"
    )
    return fn(mod, text)


@settings(max_examples=200, deadline=None, database=None)
@given(value=JSON_VALUES, ensure_ascii=st.booleans())
def test_property_python_dumps_lua_decode_encode_python_loads(value, ensure_ascii):
    text = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    out, err = lua_reencode(text)
    assert err is None
    assert normalize(json.loads(out)) == normalize(value)


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=64))
def test_property_any_bytes_survive_encode_decode(data):
    lua, mod = shared()
    fn = lua.eval(
        b"function(json, s) local j = assert(json.encode(s)) return json.decode(j), j end"
    )
    back, encoded = fn(mod, data)
    assert back == data
    if all(b < 0x80 for b in data):
        assert json.loads(encoded) == data.decode("ascii")


JSONISH = st.text(alphabet=' \t\n\r[]{}:,"\\/-+.0123456789aeEflnrstuxé', max_size=40)


@st.composite
def near_json(draw):
    """Valid JSON text with zero to two random single-character edits."""
    text = json.dumps(draw(JSON_VALUES), ensure_ascii=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        ch = draw(st.sampled_from(list(' \n[]{}:,"\\-.0e1nx')))
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + ch + text[i:]
        else:
            text = text[:i] + ch + text[i + 1 :]
    return text


def _reject_constant(name):
    raise ValueError(name)


def _comparable(v):
    """False if Lua legitimately differs: null (holes/dropped keys) or lone surrogates (U+FFFD)."""
    if v is None:
        return False
    if isinstance(v, str):
        return not any("\ud800" <= c <= "\udfff" for c in v)
    if isinstance(v, list):
        return all(map(_comparable, v))
    if isinstance(v, dict):
        return all(map(_comparable, v)) and all(map(_comparable, v.values()))
    return True


@settings(max_examples=200, deadline=None, database=None)
@given(text=JSONISH | near_json())
def test_property_accepts_exactly_what_python_accepts(text):
    try:
        expected = json.loads(text, parse_constant=_reject_constant)
        python_ok = True
    except ValueError:
        python_ok = False
    lua, mod = shared()
    ok, err = lua.eval(
        b"function(json, s) local v, e = json.decode(s) return e == nil, e end"
    )(mod, text.encode("utf-8"))
    assert ok == python_ok, (text, err)
    if not ok:
        assert err.startswith(b"json: ") and b" at line " in err
    elif _comparable(expected):
        out, err = lua_reencode(text.encode("utf-8"))
        if err is None:  # 1e999 parses fine but cannot be re-encoded
            assert normalize(json.loads(out)) == normalize(expected)
