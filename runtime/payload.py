"""Copying message payloads between Lua states and Python.

A payload is plain data: nil/None, booleans, integers, floats, strings, and tables of those. Between two
Lua states (two hosts) and between Lua and Python a payload travels as Python values:

==================  ===============================================================================
Lua                 Python
==================  ===============================================================================
nil                 ``None``
boolean             ``bool``
integer / float     ``int`` / ``float`` (Lua's subtype is kept)
string              ``str`` when it is valid UTF-8, else ``bytes`` (NUL bytes are kept either way)
table 1..n          ``list`` (keys exactly 1..n, n >= 1)
other table         ``dict`` (an empty table is an empty ``dict``)
==================  ===============================================================================

Going back to Lua, ``str`` and ``bytes`` both become Lua strings and ``list``/``tuple`` become sequences,
so a Lua -> Python -> Lua round trip gives back an equal value. Everything here runs on the thread that
owns the Lua state it touches (a host thread).
"""

from __future__ import annotations

from typing import Any

from lupa import lua54

from .errors import PayloadError

__all__ = ["MAX_DEPTH", "from_lua", "to_lua"]

MAX_DEPTH = 64

_lua_type = lua54.lua_type


def _key_path(key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f".{key}"
    return f"[{key!r}]"


def _decode(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def from_lua(value: Any, _depth: int = 0, _path: str = "$") -> Any:
    """Convert a Lua value (as lupa hands it over with ``encoding=None``) to plain Python data.

    Raises :class:`PayloadError` naming the path for functions, threads, userdata and nesting deeper
    than 64 tables.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, str):
        return value
    kind = _lua_type(value)
    if kind != "table":
        raise PayloadError(f"payload cannot be copied: {_path} is a {kind or type(value).__name__}")
    if _depth >= MAX_DEPTH:
        raise PayloadError(f"payload cannot be copied: {_path} is nested deeper than {MAX_DEPTH}")
    items = list(value.items())
    n = len(items)
    if n and all(type(k) is int for k, _ in items):
        keys = sorted(k for k, _ in items)
        if keys[0] == 1 and keys[-1] == n:
            out_list: list[Any] = [None] * n
            for k, v in items:
                out_list[k - 1] = from_lua(v, _depth + 1, f"{_path}[{k}]")
            return out_list
    out: dict[Any, Any] = {}
    for k, v in items:
        if isinstance(k, bytes):
            k = _decode(k)
        elif isinstance(k, bool) or not isinstance(k, (int, float, str)):
            raise PayloadError(f"payload cannot be copied: {_path} has a {_lua_type(k) or type(k).__name__} key")
        out[k] = from_lua(v, _depth + 1, f"{_path}{_key_path(k)}")
    return out


def to_lua(lua: Any, value: Any, _depth: int = 0, _path: str = "$") -> Any:
    """Convert plain Python data into Lua values of the runtime ``lua`` (its owning thread only).

    Raises :class:`PayloadError` naming the path for values that are not plain data.
    """
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if _depth >= MAX_DEPTH:
        raise PayloadError(f"payload cannot be copied: {_path} is nested deeper than {MAX_DEPTH}")
    if isinstance(value, (list, tuple)):
        return lua.table_from(
            [to_lua(lua, v, _depth + 1, f"{_path}[{i + 1}]") for i, v in enumerate(value)]
        )
    if isinstance(value, dict):
        converted: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str):
                lk: Any = k.encode("utf-8", "surrogateescape")
            elif isinstance(k, (int, float, bool, bytes)):
                lk = k
            else:
                raise PayloadError(
                    f"payload cannot be copied: {_path} has a key of type {type(k).__name__}"
                )
            if v is None:
                continue
            converted[lk] = to_lua(lua, v, _depth + 1, f"{_path}{_key_path(k)}")
        return lua.table_from(converted)
    raise PayloadError(
        f"payload cannot be copied: {_path} is a {type(value).__name__} "
        "(send plain data: None, bool, int, float, str, bytes, list, dict)"
    )


INT64 = (-(2**63), 2**63 - 1)


def check_plain(value: Any, _depth: int = 0, _path: str = "$") -> None:
    """Raise :class:`PayloadError` if ``value`` is not plain data; any thread (touches no Lua state)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise PayloadError(
                f"payload cannot be copied: {_path} is an integer outside Lua's 64-bit range ({value})"
            )
        return
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return
    if _depth >= MAX_DEPTH:
        raise PayloadError(f"payload cannot be copied: {_path} is nested deeper than {MAX_DEPTH}")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, _depth + 1, f"{_path}[{i + 1}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int, float, bytes)):
                raise PayloadError(
                    f"payload cannot be copied: {_path} has a key of type {type(k).__name__} "
                    "(keys are strings or numbers)"
                )
            check_plain(v, _depth + 1, f"{_path}{_key_path(k)}")
        return
    raise PayloadError(
        f"payload cannot be copied: {_path} is a {type(value).__name__} "
        "(send plain data: None, bool, int, float, str, bytes, list, dict)"
    )
