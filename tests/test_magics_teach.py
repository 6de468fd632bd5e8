"""%runtime (magics/teach.py) through IPython's InteractiveShell; a cell refused while its host is paused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wippy.magics
from conftest import magics_shell
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import InteractiveShell
from wippy.runtime import Node


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    with magics_shell(tmp_path_factory.mktemp("wippy-data")) as shell:
        yield shell


@pytest.fixture
def node(ip: InteractiveShell) -> Iterator[Node]:
    n = wippy.magics.node()
    yield n
    n.teach.resume()


def ok(ip: InteractiveShell, cell: str) -> str:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec
    return str(res.result)


def test_pause_status_step_resume(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, "%%lua --entry t.teach:echo\nreturn { main = function() local m = process.inbox():receive() "
           "print('got ' .. m:payload():data()) end }")
    pid = node.spawn("t.teach:echo")
    assert ok(ip, "%runtime pause").startswith("paused app:processes: ")
    node.send(pid, "hi", "there")
    status = ok(ip, "%runtime status")
    assert f"next: deliver hi python -> {pid}" in status and "app:processes: paused after " in status
    msg = shared_usage_error(ip, "%lua 1 + 1", capsys, one_line=True)
    assert msg.startswith("the host app:processes is paused (%runtime pause)") and "%runtime resume" in msg
    lines = ok(ip, "%runtime step").splitlines()
    assert lines[-1].endswith(f"deliver hi python -> {pid}")
    assert node.logs(pid) == ["got there"]
    assert ok(ip, "%runtime resume").startswith("resumed: ")
    assert ok(ip, "%lua 1 + 1") == "2"
    assert "app:processes: running" in ok(ip, "%runtime status")


def test_wrong_use(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    def err(cell: str) -> str:
        return shared_usage_error(ip, cell, capsys, one_line=True)

    assert err("%runtime step").startswith("%runtime step: step: no host is paused")
    assert err("%runtime").startswith("%runtime: missing subcommand")
    assert err("%runtime jump").startswith("%runtime: unknown subcommand 'jump'")
    ok(ip, "%runtime pause")
    assert "N must be a positive integer, got 'x'" in err("%runtime step x")
    assert "N must be a positive integer, got -2" in err("%runtime step -2")
    assert "S must be an integer, got 'abc'" in err("%runtime seed abc")
    assert "S must be an integer, got '1.5'" in err("%runtime seed 1.5")
    assert "usage: %runtime seed S" in err("%runtime seed")
    assert "N must be a positive integer, got 'x'" in err("%runtime log x")
    assert "takes no N" in err("%runtime step 3 --widget")
    assert "%runtime status: takes no arguments" in err("%runtime status now")
