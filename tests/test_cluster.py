"""Several nodes (runtime/cluster.py): three `wippy run --cluster` node processes on loopback and the test's
own node, against a throwaway PostgreSQL server (tests/pg_server.py).

Each node process runs tests/cluster_tree: an auto-started service `c:echo` that prints its PID (the
test reads it from the node's stdout) and answers every message with the same topic and payload. The
test's node joins the same cluster and drives everything from Lua processes of its own.

What a user would see: a message to a PID on another node is delivered and answered, in order; a monitor
of a process on a node that is killed -9 fires with reason `noconnection` within `cluster_ttl` + 1 s; a
node restarted on the same data directory rejoins under its name (a new incarnation) and is reachable
again; a send to a node that is down fails with a message naming it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from pg_server import isolated_url
from wippy.runtime import Node

pytestmark = [pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
TREE = Path(__file__).resolve().parent / "cluster_tree"
TTL = 3.0   # cluster_ttl of every node here: a busy single core must not miss a heartbeat by that much


@dataclass
class NodeProc:
    """A `wippy run --cluster` node process: its name, data directory, and what it printed."""

    name: str
    data_dir: Path
    url: str
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)

    def start(self, *, named: bool = True) -> None:
        """Start the node process (``named``: with ``--node NAME``; else the name kept in its data dir)."""
        name = ["--node", self.name] if named else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wippy.runtime.cli", "run", str(TREE), "--no-watch", "--cluster", self.url,
             *name, "--cluster-ttl", str(TTL), "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        out, err = self.proc.stdout, self.proc.stderr
        assert out is not None and err is not None
        threading.Thread(target=_pump, args=(out, self.lines.put), daemon=True).start()
        threading.Thread(target=_pump, args=(err, self.errors.append), daemon=True).start()

    def echo_pid(self, timeout: float = 60.0) -> str:
        """The PID the node's echo service printed (``echo pid {name@app:processes|0x...}``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"node {self.name} exited {self.proc.returncode}: {self.errors}") from None
                continue
            if line.startswith("echo pid "):
                return line.split(" ", 2)[2]
        raise AssertionError(f"node {self.name} printed no echo PID within {timeout}s: {self.errors}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _pump(stream: IO[str], sink: Callable[[str], None]) -> None:
    """Hand each line of a child's pipe to ``sink`` until the child closes it; then close our end."""
    with stream:
        for line in stream:
            sink(line.rstrip("\n"))


@pytest.fixture
def cluster_url(postgres_url: str) -> Iterator[str]:
    with isolated_url(postgres_url) as url:
        yield url


@pytest.fixture
def nodes(cluster_url: str, tmp_path: Path) -> Iterator[dict[str, NodeProc]]:
    procs = {n: NodeProc(n, tmp_path / n, cluster_url) for n in ("n1", "n2", "n3")}
    for p in procs.values():
        p.start()
    try:
        yield procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture
def me(cluster_url: str, tmp_path: Path) -> Iterator[Node]:
    """The test's own node, a member of the same cluster."""
    n = Node(output=None, data_dir=tmp_path / "me", node_name="t")
    n.start()
    try:
        n.join_cluster(cluster_url, ttl=TTL)
        yield n
    finally:
        n.stop(grace=1.0)


PINGER = """return { main = function(dest, n)
  local inbox = process.inbox()
  local got = {}
  for i = 1, n do assert(process.send(dest, "ping", i)) end
  for i = 1, n do got[i] = inbox:receive():payload():data() end
  for i = 1, n do if got[i] ~= i then return "out of order at " .. i .. ": " .. tostring(got[i]) end end
  return "in order: " .. n
end }"""

WATCHER = """return { main = function(dest)
  assert(process.monitor(dest))
  local ev = process.events():receive()
  return ev.kind .. " " .. tostring(ev.from) .. " " .. tostring(ev.reason)
end }"""

SENDER = """return { main = function(dest)
  local ok, err = process.send(dest, "ping", 1)
  return tostring(ok) .. " " .. tostring(err)
end }"""


def wait_up(node: Node, names: set[str], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not names <= set(node.cluster.up()):
        assert time.monotonic() < end, f"nodes up: {node.cluster.up()}, wanted {sorted(names)}"
        time.sleep(0.05)


def test_messages_cross_nodes_in_order_and_a_killed_node_is_noconnection(
        me: Node, nodes: dict[str, NodeProc]) -> None:
    pids = {name: p.echo_pid() for name, p in nodes.items()}
    assert all(pid.startswith(f"{{{name}@app:processes|") for name, pid in pids.items()), pids
    wait_up(me, {"n1", "n2", "n3"})
    me.define("t:pinger", "process.lua", source=PINGER)
    me.define("t:watcher", "process.lua", source=WATCHER)
    me.define("t:sender", "process.lua", source=SENDER)
    # per-sender order across the link, under load: 2000 pings, answered by the echo on n1
    assert me.exec("t:pinger", pids["n1"], 2000, timeout=120) == "in order: 2000"
    # a monitor of a process on n2; n2 is killed -9: the monitor fires with noconnection
    with me.mailbox() as mb:
        watcher = me.spawn("t:watcher", pids["n2"], monitor=mb)
        time.sleep(0.5)   # let the monitor request reach n2 (a monitor asked later would answer at once)
        nodes["n2"].kill9()
        killed = time.monotonic()
        ev = mb.wait_exit(watcher, timeout=TTL + 30)
        seen = time.monotonic() - killed
    assert ev.result.get("value") == f"pid.exit {pids['n2']} noconnection", ev
    assert seen <= TTL + 1.0 + 0.5, f"noconnection came {seen:.2f}s after kill -9 (cluster_ttl {TTL}s)"
    # a send to the node that is down fails, naming it
    assert me.exec("t:sender", pids["n2"], timeout=30).startswith("nil send: node 'n2' is not up")
    # the others are still there
    assert me.exec("t:pinger", pids["n3"], 10, timeout=60) == "in order: 10"


def test_a_node_restarted_on_its_data_directory_rejoins(me: Node, nodes: dict[str, NodeProc]) -> None:
    first = nodes["n3"].echo_pid()
    wait_up(me, {"n1", "n2", "n3"})
    me.define("t:pinger", "process.lua", source=PINGER)
    assert me.exec("t:pinger", first, 5, timeout=60) == "in order: 5"
    before = {n.node_id: n.incarnation for n in me.cluster.status().nodes}
    nodes["n3"].kill9()
    again = nodes["n3"] = NodeProc("n3", nodes["n3"].data_dir, nodes["n3"].url)
    again.start(named=False)   # the same data directory, no --node: the name kept there
    second = again.echo_pid()
    assert second.startswith("{n3@app:processes|")
    end = time.monotonic() + 60
    while True:
        now = {n.node_id: (n.incarnation, n.status) for n in me.cluster.status().nodes}
        if now.get("n3", (0, ""))[0] > before["n3"] and "n3" in me.cluster.up():
            break
        assert time.monotonic() < end, now
        time.sleep(0.05)
    assert me.exec("t:pinger", second, 5, timeout=60) == "in order: 5"
