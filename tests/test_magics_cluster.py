"""%cluster (magics/cluster.py) through IPython's InteractiveShell, against the throwaway PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wippy.magics
from conftest import usage_error
from IPython.core.interactiveshell import InteractiveShell
from pg_server import isolated_url

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def cluster_url(postgres_url: str) -> Iterator[str]:
    with isolated_url(postgres_url) as url:
        yield url


def ok(ip: InteractiveShell, cell: str) -> str:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec
    return str(res.result)


def test_join_status_leave(ip: InteractiveShell, cluster_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(ip, "%cluster status", capsys, one_line=True).startswith(
        "%cluster status: this node is in no cluster (%cluster join postgresql://...)")
    assert "usage: %cluster join" in usage_error(ip, "%cluster join", capsys, one_line=True)
    assert "usage: %cluster join URL" in usage_error(ip, "%cluster jump", capsys, one_line=True)
    said = ok(ip, f"%cluster join {cluster_url} --name nb1 --ttl 3")
    try:
        check_joined(ip, said, cluster_url, capsys)
    finally:   # before the fixture drops the cluster's schema
        if wippy.magics.node().cluster is not None:
            wippy.magics.node().leave_cluster()


def check_joined(ip: InteractiveShell, said: str, cluster_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert said.startswith("node nb1 joined the cluster at ") and "other nodes up: none yet" in said
    n = wippy.magics.node()
    assert n.node_name == "nb1" and ip.user_ns["node"] is n
    assert ok(ip, "%lua process.pid()").startswith('"{nb1@app:processes|')   # PIDs carry the node's name
    status = ok(ip, "%cluster status").splitlines()
    assert status[0].startswith("node nb1 at tcp://127.0.0.1:")
    assert status[1].split() == ["node", "address", "status", "heartbeat", "load"]
    assert status[2].startswith("nb1 (this node)") and " up " in status[2]
    ps = ok(ip, "%ps").splitlines()
    assert ps[0].split()[:2] == ["NODE", "PID"] and ps[1].split()[0] == "nb1"
    assert ps[1].split()[1].startswith("{nb1@app:processes|")
    assert "node nb1" in ok(ip, "%tree --text")   # every node's tree, this one's first
    assert "already in a cluster" in usage_error(ip, f"%cluster join {cluster_url}", capsys, one_line=True)
    assert ok(ip, "%cluster leave").startswith("node nb1 left the cluster")
    assert n.cluster is None
