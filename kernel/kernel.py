"""The Wippy kernels: IPython with a running node, the magics loaded, and a Lua-first variant.

Threads: ipykernel runs cells (``do_execute``) and the other ``do_*`` hooks on the kernel's main thread
(cells possibly on subshell threads in JupyterLab 4.4+); ``do_shutdown`` runs on the main thread's event
loop. The node's hosts are threads of their own; the node's public API is thread-safe.

The ``do_*`` hooks overridden here are coroutines: ipykernel 7 warns (PendingDeprecationWarning) about
plain ones, and IPythonKernel's own ``do_complete``/``do_inspect``/``do_is_complete``/``do_shutdown`` are
plain, so ours await what the base returns only when it is awaitable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from ipykernel.ipkernel import IPythonKernel
from wippy.magics import load_ipython_extension, set_node
from wippy.magics.current import node as current_node
from wippy.magics.current import start_node
from wippy.runtime import WippyError, luadoc

__all__ = ["WippyKernel", "WippyLuaKernel"]

STOP_GRACE = 1.0  # seconds processes get to end after a CANCEL when the kernel shuts down or restarts


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _lazy(fetch: Callable[[], Iterable[str]]) -> Iterator[str]:
    """Names fetched from the node only if the completer looks at them (each fetch is a host call)."""
    try:
        yield from fetch()
    except WippyError:  # a busy or stopped host: complete without these names
        return


class WippyKernel(IPythonKernel):
    """IPython plus one :class:`wippy.runtime.Node`, started with the kernel and stopped with it.

    The node is ``self.node``, ``wippy.magics.node()`` and ``node`` in the user namespace; its data
    directory is ``WIPPY_DATA_DIR``, else one per notebook (``wippy.magics.current.data_dir``).
    In ``%%lua`` cells, completion, inspection and is_complete speak Lua (``wippy.runtime.luadoc``).
    """

    implementation = "wippy"
    implementation_version = "0.1.0"
    banner = "Wippy: an actor runtime of isolated Lua processes, beside IPython (%%lua, %ps, %spawn, ...)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        set_node(start_node())
        load_ipython_extension(self.shell)

    @property
    def node(self) -> Any:
        """The magics' node (``%cluster join`` replaces it by one with a cluster name)."""
        return current_node()

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        """Stop the node (a restart starts a fresh kernel process, hence a fresh node), then IPython's."""
        current_node().stop(grace=STOP_GRACE)
        set_node(None)
        return await _result(super().do_shutdown(restart))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ Lua cells: complete, inspect
    def lua_source(self, code: str) -> tuple[str, int] | None:
        """The Lua of a cell and where it starts in ``code``, or None for a cell that is not Lua."""
        first, newline, rest = code.partition("\n")
        if newline and first.split(maxsplit=1)[:1] == ["%%lua"]:
            return rest, len(first) + 1
        return None

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:
        """Lua completion (API members, globals, entry IDs, PIDs and names) in Lua; IPython's elsewhere."""
        cursor = len(code) if cursor_pos is None else cursor_pos
        lua = self.lua_source(code)
        if lua is None or cursor < lua[1]:
            return await _result(super().do_complete(code, cursor_pos))  # type: ignore[no-any-return]
        source, offset = lua
        node = self.node

        def pids() -> list[str]:
            procs = node.statistics().processes
            return [p.pid for p in procs] + [name for p in procs for name in p.names]

        matches, start, end = luadoc.complete(
            source, cursor - offset,
            globals_=_lazy(lambda: node.shell().globals()),
            entry_ids=_lazy(node.entries.ids),
            pids=_lazy(pids),
            fields=lambda path: _lazy(lambda: node.shell().fields(path)),
        )
        return {"status": "ok", "matches": matches, "cursor_start": start + offset,
                "cursor_end": end + offset, "metadata": {}}

    async def do_inspect(self, code: str, cursor_pos: int, detail_level: int = 0,
                         omit_sections: Iterable[str] = ()) -> dict[str, Any]:
        """The signature and doc of the Lua API name at the cursor; IPython's inspection elsewhere."""
        lua = self.lua_source(code)
        if lua is None or cursor_pos < lua[1]:
            reply = super().do_inspect(code, cursor_pos, detail_level, omit_sections)
            return await _result(reply)  # type: ignore[no-any-return]
        found = luadoc.inspect(lua[0], cursor_pos - lua[1])
        if found is None:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}
        signature, doc = found
        return {"status": "ok", "found": True, "metadata": {},
                "data": {"text/plain": f"{signature}\n\n{doc}", "text/markdown": f"`{signature}`\n\n{doc}"}}

    async def do_history(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """IPython's history, as a coroutine (IPythonKernel's is plain; ipykernel 7 warns about that)."""
        return await _result(super().do_history(*args, **kwargs))  # type: ignore[no-any-return]

    async def do_is_complete(self, code: str) -> dict[str, Any]:
        """Lua cells are complete when they compile (a console then runs them); IPython's rule elsewhere."""
        lua = self.lua_source(code)
        if lua is None:
            return await _result(super().do_is_complete(code))  # type: ignore[no-any-return]
        status = luadoc.is_complete(lua[0])
        return {"status": status, "indent": ""} if status == "incomplete" else {"status": status}


class WippyLuaKernel(WippyKernel):
    """Every cell is Lua (as if it began with ``%%lua``), unless it starts with ``%`` (a magic)."""

    implementation = "wippy-lua"
    language_info: ClassVar[dict[str, Any]] = {
        "name": "lua",
        "version": "5.4",
        "mimetype": "text/x-lua",
        "file_extension": ".lua",
        "codemirror_mode": "lua",
        "pygments_lexer": "lua",
    }
    banner = "Wippy (Lua): cells are Lua run in the notebook's shell process; %magics still work"

    def lua_source(self, code: str) -> tuple[str, int] | None:
        """The whole cell, unless it starts with ``%`` (then as in the Python kernel)."""
        if not code.lstrip().startswith("%"):
            return code, 0
        return super().lua_source(code)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # first, before IPython's own cleanups (which would dedent the Lua or strip prompt-like text)
        self.shell.input_transformers_cleanup.insert(0, _as_lua_cell)


def _as_lua_cell(lines: list[str]) -> list[str]:
    """A Lua-kernel cell as IPython runs it: a ``%%lua`` cell, unless it starts with ``%``.

    An input transformer rather than a rewrite in ``do_execute``, so the history keeps what the user
    typed; the Lua line numbers are unchanged (``%%lua`` is not counted).
    """
    code = "".join(lines)
    if code.strip() and not code.lstrip().startswith("%"):
        return ["%%lua\n", *lines]
    return lines
