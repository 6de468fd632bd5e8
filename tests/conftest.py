"""Shared fixtures: a running node per test (or per module), and a helper that runs Lua as a process."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wippy.runtime import FakeClock, Node

# the throwaway PostgreSQL server (tests/pg_server.py): the `postgres_url` session fixture
pytest_plugins = ["pg_server"]

_ids = itertools.count(1)


@pytest.fixture
def node() -> Iterator[Node]:
    """A started node with the default host; stopped after the test."""
    n = Node(output=None).start()
    yield n
    n.stop(grace=0.5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_node(clock: FakeClock) -> Iterator[Node]:
    """A started node on a FakeClock: timers fire only when the test advances the clock."""
    n = Node(output=None, clock=clock).start()
    yield n
    n.stop(grace=0.1)


RunLua = Callable[..., Any]


def define(node: Node, source: str, kind: str = "process.lua", **data: Any) -> str:
    """Define `source` as a fresh entry and return its ID."""
    entry_id = f"test:e{next(_ids)}"
    node.define(entry_id, kind, source=source, **data)
    return entry_id


@pytest.fixture
def run_lua(node: Node) -> RunLua:
    """run_lua(body, *args, host=None): run `body` as the main function of a process; return its result.

    `body` is the inside of `function(...)`; the process's arguments are in `...`.
    """

    def run(body: str, *args: Any, host: str | None = None, timeout: float = 10.0) -> Any:
        entry = define(node, "return { main = function(...)\n" + body + "\nend }")
        return node.exec(entry, *args, host=host, timeout=timeout)

    return run


@contextlib.contextmanager
def magics_shell(data: Path) -> Iterator[Any]:
    """An IPython InteractiveShell with `%load_ext wippy.magics` (which starts a node of its own, with
    its data directory at ``data``); unloaded afterwards, which stops watchers and that node."""
    import wippy.magics
    from IPython.core.interactiveshell import InteractiveShell

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WIPPY_DATA_DIR", str(data))
        wippy.magics.set_node(None)
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "wippy.magics")
        try:
            yield shell
        finally:   # a failing test must not leave its node to the next test file
            shell.run_line_magic("unload_ext", "wippy.magics")


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An InteractiveShell with `%load_ext wippy.magics` and a node of its own, one per test module
    (a module that needs entries defined first overrides it)."""
    with magics_shell(tmp_path_factory.mktemp("wippy-data")) as shell:
        yield shell


def usage_error(ip: Any, cell: str, capsys: pytest.CaptureFixture[str], one_line: bool = False) -> str:
    """Run a cell that must fail with a UsageError; return its message (shown alone, no traceback)."""
    from IPython.core.error import UsageError

    capsys.readouterr()
    res = ip.run_cell(cell, store_history=False)
    assert isinstance(res.error_in_exec, UsageError), res.error_in_exec
    out = capsys.readouterr()
    assert out.err == f"UsageError: {res.error_in_exec}\n"
    assert "Traceback" not in out.out + out.err
    if one_line:
        assert "\n" not in str(res.error_in_exec)
    return str(res.error_in_exec)
