"""The compact binary encoding of message payloads between nodes (one OS process to another).

A payload is plain data (see :mod:`wippy.runtime.payload`): ``None``, ``bool``, ``int`` (signed 64-bit),
``float``, ``str``, ``bytes``, ``list`` (a ``tuple`` is sent as a list) and ``dict`` with keys that are
``str``, ``bytes``, ``int``, ``float`` or ``bool``, nested at most 64 lists/dicts deep. What is encoded
decodes to an equal value of exactly the same types: a ``str`` stays a ``str`` and ``bytes`` stay
``bytes``; ``1`` stays an ``int`` and ``1.0`` a ``float``; NaN, infinities and ``-0.0`` are kept. Dict
order is kept, and so are ``None`` values in dicts. Subclasses of the plain types (an ``IntEnum``, an
``OrderedDict``, a namedtuple) are sent as their base type, as
:func:`wippy.runtime.payload.check_plain` accepts them.

Format
======

Every value is one tag byte, then what the tag says follows. A *varint* is an unsigned LEB128 integer:
7 bits per byte, least significant group first, the high bit set on every byte but the last (at most 10
bytes). Signed integers are *zigzag* mapped first (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)::

    tag          value                 then
    0x00..0x7F   int 0..127            nothing (the value is the tag)
    0x80..0xBF   str of 0..63 bytes    the UTF-8 bytes (the length is tag - 0x80)
    0xC0..0xCF   list of 0..15 items   the items (the count is tag - 0xC0)
    0xD0..0xDF   dict of 0..15 pairs   the key, value pairs (the count is tag - 0xD0)
    0xE0         None                  nothing
    0xE1         False                 nothing
    0xE2         True                  nothing
    0xE3         int                   zigzag varint (the value fits signed 64 bits)
    0xE4         float                 8 bytes, IEEE 754 binary64, little-endian
    0xE5         str                   varint byte length, then that many bytes of UTF-8
    0xE6         bytes                 varint length, then the bytes
    0xE7         list                  varint count, then that many values
    0xE8         dict                  varint count, then that many key, value pairs (a key is a value
                                       that is an int, float, str, bytes or bool)
    0xE9..0xEF   reserved              decoding one is an error
    0xF0..0xFF   int -16..-1           nothing (the value is tag - 256)

The encoder always writes the shortest form (a small int as its tag, a str under 64 bytes, a list or a
dict under 16 entries in its short form); the decoder also reads the long forms. A ``str`` holding lone
surrogates (``"\\udc80"``, as ``surrogateescape`` makes) is written with the ``surrogatepass`` error
handler, so it comes back as it went. Examples: ``1`` -> ``01``; ``-1`` -> ``ff``; ``200`` -> ``e3 90
03``; ``"ping"`` -> ``84 70 69 6e 67``; ``{"n": 1}`` -> ``d1 81 6e 01``; ``[]`` -> ``c0``; ``1.5`` ->
``e4 00 00 00 00 00 00 f8 3f``.

A *batch* (:func:`encode_batch`) carries the messages of one link in one buffer, in order::

    0x57 ('W')   magic
    0x01         format version (FORMAT_VERSION)
    varint       number of frames
    per frame:   varint length + UTF-8 of the sender PID, varint length + UTF-8 of the target,
                 then the payload as one value (as above)

:func:`decode` and :func:`decode_batch` never raise anything but :class:`WireError`, whatever the input:
a truncated buffer, an unknown tag, invalid UTF-8, a varint over 10 bytes, an int outside 64 bits, a dict
key of another type, nesting deeper than 64, or bytes left over each name the byte offset where they were
found (``WireError.offset``). Encoding errors name the path of the value at fault the way payload.py
does (``$.a[3]``, list indices 1-based as Lua counts them; ``WireError.path``).

Threads: any thread; pure functions. The only state is a bounded memo of the encodings of short str
dict keys (a plain dict, safe to share between threads; it only saves work).
"""

from __future__ import annotations

import struct
import types
from collections.abc import Sequence
from typing import Any

from .errors import PayloadError
from .payload import MAX_DEPTH

__all__ = ["FORMAT_VERSION", "WireError", "decode", "decode_batch", "encode", "encode_batch"]

FORMAT_VERSION = 1

_FIXSTR = 0x80      # + byte length 0..63
_FIXLIST = 0xC0     # + count 0..15
_FIXDICT = 0xD0     # + count 0..15
_T_NONE = 0xE0
_T_FALSE = 0xE1     # _T_FALSE + a bool is its tag
_T_TRUE = 0xE2
_T_INT = 0xE3
_T_FLOAT = 0xE4
_T_STR = 0xE5
_T_BYTES = 0xE6
_T_LIST = 0xE7
_T_DICT = 0xE8
_NEGINT = 0xF0      # 0xF0..0xFF: -16..-1, the int's low byte
_BATCH_MAGIC = 0x57

_I64_MIN = -(2**63)
_I64_END = 2**63
_U64_END = 2**64

_pack_tagged_f64 = struct.Struct("<Bd").pack
_unpack_f64 = struct.Struct("<d").unpack_from

_KEY_TYPES = frozenset((str, bytes, int, float, bool))
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.MethodWrapperType)
_HINT = "the sender and receiver disagree on the format (same wippy version on both nodes?)"
_PLAIN = "send plain data (None, bool, int, float, str, bytes, list, dict)"

_KEYS: dict[str, bytes] = {}    # str dict key -> its encoding (tag + UTF-8), for keys under 64 bytes
_KEYS_MAX = 4096


class WireError(PayloadError):
    """A payload cannot be encoded for the wire, or bytes from the wire cannot be decoded.

    On encode ``path`` names the value at fault (``$.a[3]``); on decode ``offset`` is the byte where the
    problem was found. The other is None.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class _Unencodable(Exception):
    """Internal: the fast encoder met a value it cannot write; :func:`_explain` then finds where and why."""


# --------------------------------------------------------------------------------------- encoding


def _put_uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _key_bytes(k: str) -> bytes:
    """The encoding of the str ``k`` (memoized in _KEYS when short: dict keys repeat)."""
    try:
        b = k.encode()
    except UnicodeEncodeError:
        b = k.encode("utf-8", "surrogatepass")
    n = len(b)
    if n >= 64:
        head = bytearray((_T_STR,))
        _put_uvarint(head, n)
        return bytes(head) + b
    hb = bytes((_FIXSTR + n,)) + b
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[k] = hb
    return hb


def _plain_base(v: Any) -> Any:
    """A subclass of a plain type as an instance of that type (an IntEnum as its int, ...)."""
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):          # bool cannot be subclassed: an int subclass is an int
        return int.__int__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, bytes):
        return bytes.__bytes__(v)
    if isinstance(v, list):
        return list.copy(v)
    if isinstance(v, tuple):
        return list(tuple.__iter__(v))
    if isinstance(v, dict):
        return dict.copy(v)
    raise _Unencodable


def _enc(v: Any, out: bytearray, depth: int) -> None:
    """Append the encoding of ``v`` to ``out``; raise _Unencodable if it is not plain data.

    ``depth`` is the number of lists/dicts around ``v``. The leaves met most often (str, small int,
    float, None, bool) are written inline in the list and dict loops to save a call per item: the code
    is repeated on purpose.
    """
    t = type(v)
    if t is str:
        try:
            b = v.encode()
        except UnicodeEncodeError:
            b = v.encode("utf-8", "surrogatepass")
        n = len(b)
        if n < 64:
            out.append(_FIXSTR + n)
        else:
            out.append(_T_STR)
            _put_uvarint(out, n)
        out += b
    elif t is int:
        if -16 <= v < 128:
            out.append(v & 0xFF)
        elif _I64_MIN <= v < _I64_END:
            out.append(_T_INT)
            z = v << 1 if v >= 0 else ~(v << 1)
            while z >= 0x80:
                out.append((z & 0x7F) | 0x80)
                z >>= 7
            out.append(z)
        else:
            raise _Unencodable
    elif t is dict:
        if depth >= MAX_DEPTH:
            raise _Unencodable
        n = len(v)
        if n < 16:
            out.append(_FIXDICT + n)
        else:
            out.append(_T_DICT)
            _put_uvarint(out, n)
        depth += 1
        keys = _KEYS
        for k, x in v.items():
            tk = type(k)
            if tk is str:
                hb = keys.get(k)
                out += hb if hb is not None else _key_bytes(k)
            elif tk in _KEY_TYPES:
                _enc(k, out, depth)
            else:
                k = _plain_base(k)
                if type(k) not in _KEY_TYPES:
                    raise _Unencodable
                _enc(k, out, depth)
            tx = type(x)
            if tx is str:
                try:
                    b = x.encode()
                except UnicodeEncodeError:
                    b = x.encode("utf-8", "surrogatepass")
                n = len(b)
                if n < 64:
                    out.append(_FIXSTR + n)
                else:
                    out.append(_T_STR)
                    _put_uvarint(out, n)
                out += b
            elif tx is int and -16 <= x < 128:
                out.append(x & 0xFF)
            elif tx is float:
                out += _pack_tagged_f64(_T_FLOAT, x)
            elif x is None:
                out.append(_T_NONE)
            elif tx is bool:
                out.append(_T_FALSE + x)
            else:
                _enc(x, out, depth)
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _Unencodable
        n = len(v)
        if n < 16:
            out.append(_FIXLIST + n)
        else:
            out.append(_T_LIST)
            _put_uvarint(out, n)
        depth += 1
        for x in v:
            tx = type(x)
            if tx is str:
                try:
                    b = x.encode()
                except UnicodeEncodeError:
                    b = x.encode("utf-8", "surrogatepass")
                n = len(b)
                if n < 64:
                    out.append(_FIXSTR + n)
                else:
                    out.append(_T_STR)
                    _put_uvarint(out, n)
                out += b
            elif tx is int and -16 <= x < 128:
                out.append(x & 0xFF)
            elif tx is float:
                out += _pack_tagged_f64(_T_FLOAT, x)
            else:
                _enc(x, out, depth)
    elif t is float:
        out += _pack_tagged_f64(_T_FLOAT, v)
    elif v is None:
        out.append(_T_NONE)
    elif t is bool:
        out.append(_T_FALSE + v)
    elif t is bytes:
        out.append(_T_BYTES)
        _put_uvarint(out, len(v))
        out += v
    else:
        _enc(_plain_base(v), out, depth)


def _key_path(key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f".{key}"
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 128:
        return f"[<an integer of {key.bit_length()} bits>]"
    return f"[{key!r}]"


def _a(kind: str) -> str:
    """``kind`` with its article: "a function", "an object"."""
    return f"an {kind}" if kind[:1].lower() in "aeiou" else f"a {kind}"


def _int_text(v: int) -> str:
    return str(v) if v.bit_length() <= 128 else f"of {v.bit_length()} bits"


def _explain(v: Any, path: str, depth: int) -> tuple[str, str] | None:
    """(path, reason) of the first value in ``v`` that :func:`_enc` refuses, in the order it writes."""
    if isinstance(v, bool) or v is None or isinstance(v, (float, str, bytes)):
        return None
    if isinstance(v, int):
        if _I64_MIN <= v < _I64_END:
            return None
        return path, (f"the integer {_int_text(v)} is outside the signed 64-bit range: "
                      "send it as a str (or a float)")
    if isinstance(v, (list, tuple, dict)) and depth >= MAX_DEPTH:
        return path, (f"it is nested deeper than {MAX_DEPTH} lists/dicts (or it contains itself): "
                      "flatten it")
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            found = _explain(x, f"{path}[{i + 1}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, (str, bytes, int, float)):
                return path, (f"a key of type {type(k).__name__} cannot be sent: "
                              "keys are str, bytes, int, float or bool")
            if isinstance(k, int) and not isinstance(k, bool) and not _I64_MIN <= k < _I64_END:
                return path, (f"the integer key {_int_text(k)} is outside the signed 64-bit range: "
                              "use a str key")
            found = _explain(x, f"{path}{_key_path(k)}", depth + 1)
            if found:
                return found
        return None
    kind = "function" if isinstance(v, _FUNCTIONS) else type(v).__name__
    return path, f"{_a(kind)} cannot be sent: {_PLAIN}"


def _encode_error(value: object, where: str = "") -> WireError:
    found = _explain(value, "$", 0)
    path, reason = found if found else ("$", f"the value cannot be encoded: {_PLAIN}")
    return WireError(f"wire: cannot encode {where}{path}: {reason}", path=path)


def encode(value: object) -> bytes:
    """The wire encoding of the plain data ``value`` (see the module docstring for the format).

    Raises :class:`WireError` naming the path of the first value that is not plain data, of an int
    outside signed 64 bits, of a dict key of another type, or of nesting deeper than 64.
    """
    out = bytearray()
    try:
        _enc(value, out, 0)
    except _Unencodable:
        raise _encode_error(value) from None
    return bytes(out)


def _put_str(out: bytearray, s: str) -> None:
    try:
        b = s.encode()
    except UnicodeEncodeError:
        b = s.encode("utf-8", "surrogatepass")
    _put_uvarint(out, len(b))
    out += b


def encode_batch(items: Sequence[tuple[str, str, object]]) -> bytes:
    """One buffer carrying the frames ``(sender_pid, target, payload)`` of a link, in order.

    Raises :class:`WireError` naming the frame (``items[3]``, 0-based) and the payload path at fault.
    """
    out = bytearray((_BATCH_MAGIC, FORMAT_VERSION))
    _put_uvarint(out, len(items))
    for i, item in enumerate(items):
        try:
            sender, target, payload = item
        except (TypeError, ValueError):
            raise WireError(f"wire: cannot encode items[{i}]: a frame is a (sender_pid, target, payload) "
                            f"tuple, not {type(item).__name__}", path=f"items[{i}]") from None
        if type(sender) is not str or type(target) is not str:
            which, bad = ("sender_pid", sender) if type(sender) is not str else ("target", target)
            raise WireError(f"wire: cannot encode items[{i}]: the {which} is {_a(type(bad).__name__)}, "
                            "not a str", path=f"items[{i}]")
        _put_str(out, sender)
        _put_str(out, target)
        try:
            _enc(payload, out, 0)
        except _Unencodable:
            raise _encode_error(payload, f"items[{i}] (to {target!r}) payload ") from None
    return bytes(out)


# --------------------------------------------------------------------------------------- decoding


def _truncated(offset: int, what: str = "") -> WireError:
    detail = f" ({what})" if what else ""
    return WireError(f"wire: truncated frame at byte {offset}{detail}: {_HINT}", offset=offset)


def _garbage(offset: int, what: str) -> WireError:
    return WireError(f"wire: {what} at byte {offset}: {_HINT}", offset=offset)


def _utf8_slow(data: bytes, start: int, end: int) -> str:
    """A str that strict UTF-8 refused: lone surrogates (as encode writes them), a truncation or garbage."""
    if end > len(data):
        raise _truncated(len(data), f"a str of {end - start} bytes at byte {start}")
    try:
        return data[start:end].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise _garbage(start + e.start, "invalid UTF-8 in a str") from None


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """(the varint at ``pos``, the position after it)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    start = pos
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z, pos
        shift += 7
        if shift >= 70:
            raise _garbage(start, "a varint longer than 10 bytes")


def _dec(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """(the value whose tag is at ``pos``, the position after it); ``depth`` lists/dicts are around it."""
    t = data[pos]
    pos += 1
    if t < 0x80:
        return t, pos
    if t < _FIXLIST:
        end = pos + t - _FIXSTR
        if end > len(data):
            raise _truncated(len(data), f"a str of {t - _FIXSTR} bytes at byte {pos - 1}")
        try:
            return data[pos:end].decode(), end
        except UnicodeDecodeError:
            return _utf8_slow(data, pos, end), end
    if t < _T_NONE:
        if depth >= MAX_DEPTH:
            raise _garbage(pos - 1, f"a list or dict nested deeper than {MAX_DEPTH}")
        if t < _FIXDICT:
            return _dec_list(data, pos, t - _FIXLIST, depth + 1)
        return _dec_dict(data, pos, t - _FIXDICT, depth + 1)
    if t >= _NEGINT:
        return t - 256, pos
    if t == _T_FLOAT:
        return _unpack_f64(data, pos)[0], pos + 8
    if t == _T_NONE:
        return None, pos
    if t == _T_TRUE:
        return True, pos
    if t == _T_FALSE:
        return False, pos
    if t == _T_INT:
        b = data[pos]
        if b < 0x80:
            z, end = b, pos + 1
        elif data[pos + 1] < 0x80:
            z, end = (b & 0x7F) | (data[pos + 1] << 7), pos + 2
        else:
            z, end = _uvarint(data, pos)
        if z >= _U64_END:
            raise _garbage(pos - 1, "an integer outside 64 bits")
        return (z >> 1) ^ -(z & 1), end
    if t == _T_STR or t == _T_BYTES:  # noqa: SIM109 - two compares beat building a tuple of globals
        n, start = _uvarint(data, pos)
        end = start + n
        if end > len(data):
            kind = "str" if t == _T_STR else "bytes value"
            raise _truncated(len(data), f"a {kind} of {n} bytes at byte {pos - 1}")
        if t == _T_BYTES:
            return data[start:end], end
        try:
            return data[start:end].decode(), end
        except UnicodeDecodeError:
            return _utf8_slow(data, start, end), end
    if t == _T_LIST or t == _T_DICT:  # noqa: SIM109
        if depth >= MAX_DEPTH:
            raise _garbage(pos - 1, f"a list or dict nested deeper than {MAX_DEPTH}")
        n, start = _uvarint(data, pos)
        if t == _T_LIST:
            return _dec_list(data, start, n, depth + 1)
        return _dec_dict(data, start, n, depth + 1)
    raise _garbage(pos - 1, f"unknown tag 0x{t:02x}")


def _dec_list(data: bytes, pos: int, count: int, depth: int) -> tuple[list[Any], int]:
    """``count`` items from ``pos`` (the header is read; ``depth`` lists/dicts are around the items).

    The common leaves are read inline, as :func:`_enc` writes them (see there).
    """
    size = len(data)
    if count > size - pos:   # every item takes at least one byte
        raise _truncated(size, f"a list of {count} items at byte {pos}")
    items: list[Any] = []
    append = items.append
    v: Any
    for _ in range(count):
        t = data[pos]
        if t < 0x80:
            append(t)
            pos += 1
        elif t < _FIXLIST:
            pos += 1
            end = pos + t - _FIXSTR
            if end > size:
                raise _truncated(size, f"a str of {t - _FIXSTR} bytes at byte {pos - 1}")
            try:
                append(data[pos:end].decode())
            except UnicodeDecodeError:
                append(_utf8_slow(data, pos, end))
            pos = end
        elif t == _T_FLOAT:
            append(_unpack_f64(data, pos + 1)[0])
            pos += 9
        elif t < _T_NONE and depth < MAX_DEPTH:   # a short list or dict: one call, not two
            if t < _FIXDICT:
                v, pos = _dec_list(data, pos + 1, t - _FIXLIST, depth + 1)
            else:
                v, pos = _dec_dict(data, pos + 1, t - _FIXDICT, depth + 1)
            append(v)
        else:
            v, pos = _dec(data, pos, depth)
            append(v)
    return items, pos


def _dec_dict(data: bytes, pos: int, count: int, depth: int) -> tuple[dict[Any, Any], int]:
    """``count`` key, value pairs from ``pos`` (the header is read; ``depth`` lists/dicts are around the
    values). The common keys and values are read inline, as :func:`_enc` writes them (see there)."""
    size = len(data)
    if 2 * count > size - pos:   # every key and every value takes at least one byte
        raise _truncated(size, f"a dict of {count} pairs at byte {pos}")
    d: dict[Any, Any] = {}
    for _ in range(count):
        t = data[pos]
        if _FIXSTR <= t < _FIXLIST:
            pos += 1
            end = pos + t - _FIXSTR
            if end > size:
                raise _truncated(size, f"a str of {t - _FIXSTR} bytes at byte {pos - 1}")
            try:
                k: Any = data[pos:end].decode()
            except UnicodeDecodeError:
                k = _utf8_slow(data, pos, end)
            pos = end
        else:
            at = pos
            k, pos = _dec(data, pos, depth)
            if type(k) not in _KEY_TYPES:
                raise _garbage(at, f"a dict key of type {type(k).__name__}")
        t = data[pos]
        if t < 0x80:
            d[k] = t
            pos += 1
        elif t < _FIXLIST:
            pos += 1
            end = pos + t - _FIXSTR
            if end > size:
                raise _truncated(size, f"a str of {t - _FIXSTR} bytes at byte {pos - 1}")
            try:
                d[k] = data[pos:end].decode()
            except UnicodeDecodeError:
                d[k] = _utf8_slow(data, pos, end)
            pos = end
        elif t == _T_FLOAT:
            d[k] = _unpack_f64(data, pos + 1)[0]
            pos += 9
        elif t < _T_NONE and depth < MAX_DEPTH:   # a short list or dict: one call, not two
            if t < _FIXDICT:
                d[k], pos = _dec_list(data, pos + 1, t - _FIXLIST, depth + 1)
            else:
                d[k], pos = _dec_dict(data, pos + 1, t - _FIXDICT, depth + 1)
        elif t == _T_NONE:
            d[k] = None
            pos += 1
        elif t == _T_TRUE:
            d[k] = True
            pos += 1
        elif t == _T_FALSE:
            d[k] = False
            pos += 1
        else:
            d[k], pos = _dec(data, pos, depth)
    return d, pos


def _as_bytes(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return bytes(data)
        except (TypeError, ValueError) as e:   # a released memoryview, a non-contiguous one
            raise WireError(f"wire: cannot read the buffer: {e}") from None
    raise WireError(f"wire: decode takes bytes, bytearray or memoryview, not {type(data).__name__}")


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value :func:`encode` wrote into ``data`` (the whole buffer: bytes left over are an error).

    Raises :class:`WireError` (and nothing else) naming the byte offset of what is wrong.
    """
    buf = _as_bytes(data)
    try:
        value, pos = _dec(buf, 0, 0)
    except (IndexError, struct.error):
        raise _truncated(len(buf)) from None
    if pos != len(buf):
        raise _garbage(pos, f"{len(buf) - pos} bytes left over after the value")
    return value


def decode_batch(data: bytes | bytearray | memoryview) -> list[tuple[str, str, Any]]:
    """The frames ``(sender_pid, target, payload)`` :func:`encode_batch` wrote into ``data``, in order.

    Raises :class:`WireError` (and nothing else) naming the byte offset of what is wrong.
    """
    buf = _as_bytes(data)
    size = len(buf)
    try:
        if buf[0] != _BATCH_MAGIC:
            raise _garbage(0, f"not a wippy batch (first byte 0x{buf[0]:02x}, expected 0x{_BATCH_MAGIC:02x})")
        if buf[1] != FORMAT_VERSION:
            raise _garbage(1, f"batch format version {buf[1]}, this node reads version {FORMAT_VERSION}")
        count, pos = _uvarint(buf, 2)
        if 3 * count > size - pos:   # every frame takes at least three bytes
            raise _truncated(size, f"a batch of {count} frames at byte 2")
        frames: list[tuple[str, str, Any]] = []
        append = frames.append
        for _ in range(count):
            n, start = _uvarint(buf, pos)
            end = start + n
            if end > size:
                raise _truncated(size, f"a sender PID of {n} bytes at byte {pos}")
            try:
                sender = buf[start:end].decode()
            except UnicodeDecodeError:
                sender = _utf8_slow(buf, start, end)
            n, start = _uvarint(buf, end)
            pos = start + n
            if pos > size:
                raise _truncated(size, f"a target of {n} bytes at byte {end}")
            try:
                target = buf[start:pos].decode()
            except UnicodeDecodeError:
                target = _utf8_slow(buf, start, pos)
            payload, pos = _dec(buf, pos, 0)
            append((sender, target, payload))
    except (IndexError, struct.error):
        raise _truncated(size) from None
    if pos != size:
        raise _garbage(pos, f"{size - pos} bytes left over after the last frame")
    return frames
