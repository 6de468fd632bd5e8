"""Small conversions at the Lua boundary, shared by the host, the node, the shell and the workflows.

lupa runs with ``encoding=None``: Lua strings arrive as ``bytes`` and Python strings are pushed as the
``bytes`` made here. Surrogate escapes keep any byte sequence round-tripping. Pure functions, any thread.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lua_bytes", "lua_pair", "lua_str", "lua_text"]


def lua_bytes(s: str) -> bytes:
    """A Python string as the bytes of a Lua string."""
    return s.encode("utf-8", "surrogateescape")


def lua_pair(r: Any) -> tuple[Any, Any]:
    """Lua's `value` or `nil, err` as a pair (lupa returns a tuple only for several values)."""
    if isinstance(r, tuple):
        return (r[0], r[1] if len(r) > 1 else None)
    return r, None


def lua_str(b: Any) -> str:
    """A Lua string (bytes) as a Python string; anything else through ``str``."""
    if isinstance(b, bytes):
        return b.decode("utf-8", "surrogateescape")
    return str(b)


def lua_text(b: Any) -> str:
    """Like :func:`lua_str`, with ``nil`` (None) as the empty string."""
    return "" if b is None else lua_str(b)
