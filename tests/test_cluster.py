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
import re
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
from wippy.magics.views import TreeView
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
    pids: dict[str, str] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

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

    def printed(self, what: str, timeout: float = 60.0) -> str:
        """The PID the node's service ``what`` printed (``echo pid {name@app:processes|0x...}``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if what in self.pids:
                return self.pids[what]
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"node {self.name} exited {self.proc.returncode}: {self.errors}") from None
                continue
            self.seen.append(line)
            if line.endswith("}") and " pid " in line:
                kind, _, pid = line.split(" ", 2)
                self.pids[kind] = pid
        raise AssertionError(f"node {self.name} printed no {what} PID within {timeout}s: {self.errors}")

    def echo_pid(self, timeout: float = 60.0) -> str:
        return self.printed("echo", timeout)

    def drained(self) -> list[str]:
        """Every line the node printed so far (kept in ``seen``)."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            self.seen.append(line)
            if line.endswith("}") and " pid " in line:
                kind, _, pid = line.split(" ", 2)
                self.pids[kind] = pid

    def wait_for(self, line: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while line not in self.drained():
            assert time.monotonic() < end, f"{self.name} never printed {line!r}: {self.seen}"
            time.sleep(0.05)
        return True

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

MIXED = """return { main = function(dest, n)
  local inbox = process.inbox()
  for i = 1, n do
    local payload = i
    if i % 7 == 0 then payload = { i = i, at = time.now() } end   -- a Time value: carried by Python
    assert(process.send(dest, "ping", payload))
  end
  for i = 1, n do
    local d = inbox:receive():payload():data()
    local got = type(d) == "table" and d.i or d
    if got ~= i then return "out of order at " .. i .. ": " .. tostring(got) end
  end
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
    # the messages went in batches (scheduler/xnode.lua); payloads it leaves to Python (a Time value) go
    # between them and keep their place
    me.define("t:mixed", "process.lua", source=MIXED)
    assert me.exec("t:mixed", pids["n1"], 700, timeout=120) == "in order: 700"
    batches, sent, fallbacks = me.host().call(lambda ctx: ctx.scheduler.xnode_stats())
    assert sent >= 2000 + 600 and fallbacks == 100 and 0 < batches < sent, (batches, sent, fallbacks)
    assert me.cluster.status().links["dropped_sends"] == 0
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


SVC = """return { main = function()
  assert(process.registry.register("svc", process.pid(), { global = true }))
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    if m:topic() == "crash" then error("svc crashes on purpose") end
    process.send(m:payload():data().reply_to, "pong", process.pid())
  end
end }"""

ASKER = """return { main = function(forwarder, name)
  -- ask the forwarder on another node to send to `name` (a global name); its holder answers with its PID
  process.send(forwarder, "go", { to = name, topic = "ping", data = { reply_to = process.pid() } })
  local m = process.inbox():receive()
  return m:topic() .. " " .. tostring(m:payload():data())
end }"""

BY_NAME = """return { main = function(name)
  assert(process.send(name, "hello", 7))
  local m = process.inbox():receive()
  return m:topic() .. " " .. tostring(m:payload():data())
end }"""


def test_global_names_across_nodes_follow_a_restart(me: Node, nodes: dict[str, NodeProc]) -> None:
    pids = {name: p.echo_pid() for name, p in nodes.items()}
    forwarder = nodes["n1"].printed("forward")
    wait_up(me, {"n1", "n2", "n3"})
    me.define("t:by_name", "process.lua", source=BY_NAME)
    me.define("t:svc", "process.lua", source=SVC)
    me.define("t:asker", "process.lua", source=ASKER)
    # a global name held on n2, used from here
    assert me.exec("t:by_name", "echo-n2", timeout=60) == "hello 7"
    assert me.lookup("echo-n2") == pids["n2"]
    # a name held here, under a supervisor, reached from n1 (n1 looks it up); then re-registered
    me.supervision.start({"id": "names", "strategy": "one_for_one", "max_restarts": 5, "period": 60,
                          "children": [{"id": "svc", "process": "t:svc"}]})
    first = me.supervision.tree("names").children[0].pid
    end = time.monotonic() + 30
    while me.lookup("svc") != first:
        assert time.monotonic() < end, "svc never registered its global name"
        time.sleep(0.05)
    assert me.exec("t:asker", forwarder, "svc", timeout=60) == f"pong {first}"
    me.send(first, "crash")
    end = time.monotonic() + 60
    while True:
        child = me.supervision.tree("names").children[0]
        if child.pid not in (None, first) and me.lookup("svc") == child.pid:
            break
        assert time.monotonic() < end, "the restarted svc did not register again"
        time.sleep(0.05)
    second = child.pid
    # n1 reaches the new holder (its cache follows the re-registration over the link)
    end = time.monotonic() + 30
    while (said := me.exec("t:asker", forwarder, "svc", timeout=60)) != f"pong {second}":
        assert time.monotonic() < end, said
        time.sleep(0.1)
    # a name taken by a live holder is refused, naming it
    me.define("t:taker", "process.lua", source="""return { main = function()
      local ok, err = process.registry.register("echo-n3", process.pid(), { global = true })
      return tostring(ok) .. " " .. tostring(err) end }""")
    assert me.exec("t:taker", timeout=30) == (f"nil name 'echo-n3' is already registered by {pids['n3']} "
                                              "(a global name: one holder in the cluster)")
    # a node killed -9: its names are no one's
    nodes["n3"].kill9()
    end = time.monotonic() + TTL + 30
    while me.lookup("echo-n3") is not None:
        assert time.monotonic() < end, "the names of a node that is down stayed"
        time.sleep(0.05)


def test_a_registry_change_on_one_node_reaches_a_process_on_another(me: Node, nodes: dict[str, NodeProc]) -> None:
    for p in nodes.values():
        p.printed("watch")
    wait_up(me, {"n1", "n2", "n3"})
    me.define("shared:setting", "registry.entry", value=42)
    end = time.monotonic() + 60
    while "changed shared:setting v=42" not in nodes["n3"].drained():
        assert time.monotonic() < end, f"n3 printed {nodes['n3'].seen}"
        time.sleep(0.05)
    me.define("shared:setting", "registry.entry", value=43)
    while "changed shared:setting v=43" not in nodes["n1"].drained():
        assert time.monotonic() < end, f"n1 printed {nodes['n1'].seen}"
        time.sleep(0.05)
    # n2 made no commit of its own: its registry has the entry, with the version message naming t
    assert "changed shared:setting v=43" in nodes["n2"].drained() or nodes["n2"].wait_for(
        "changed shared:setting v=43")


REMOTE_SPAWN = """return { main = function(node)
  -- an echo spawned on the other node's host and monitored from here (the entry was defined here: the
  -- registry's commit reached that node first)
  local pid = assert(process.spawn_monitored("t:remote_echo", node .. "@app:processes"))
  assert(process.send(pid, "hi", "there"))
  local m = process.inbox():receive()
  process.terminate(pid)
  local ev = process.events():receive()
  return pid .. " " .. m:topic() .. " " .. tostring(m:payload():data()) .. " " .. ev.kind .. " " .. tostring(ev.reason)
end }"""
REMOTE_ECHO = """return { main = function()
  local inbox = process.inbox()
  while true do
    local m = inbox:receive()
    process.send(m:from(), m:topic(), m:payload():data())
  end
end }"""


def test_the_cluster_table_tree_view_and_a_spawn_on_another_nodes_host(me: Node, nodes: dict[str, NodeProc]) -> None:
    for p in nodes.values():
        p.printed("watch")
    wait_up(me, {"n1", "n2", "n3"})
    # the cluster's process table: every node's processes, by node
    table = me.cluster_processes()
    assert {(n, p.pid) for n, p in table} >= {(name, p.echo_pid()) for name, p in nodes.items()}
    assert {n for n, _ in table} >= {"n1", "n2", "n3"}
    # the cluster's supervision trees: one per node, each node's services in its own
    tree = me.cluster_tree()
    assert tree.children[0].id == "node t"
    assert {c.id for c in tree.children} == {"node t", "node n1", "node n2", "node n3"}
    n1 = next(c for c in tree.children if c.id == "node n1")
    assert {"c:echo", "c:forward", "c:watch"} <= {c.id for c in n1.walk()}, [c.id for c in n1.walk()]
    # the live %tree view draws the same: every node, ids qualified by node, and a crash on n1 flashes
    # n1's box (seen by the poll of the other nodes' trees), not t's
    view = TreeView(me)
    try:
        assert view.in_cluster() and view.snapshot is not None
        assert {c.id for c in view.snapshot.children} == {"node t", "node n1", "node n2", "node n3"}
        svg = view.svg.value
        assert 'data-id="node n1/c:echo"' in svg and 'data-id="node n2/c:echo"' in svg
        assert ">node n1</text>" in svg and ">cluster</text>" in svg
        assert "4 nodes" in view.status.value
        view.FLASH_SECONDS = 3600.0   # the flash stays until the picture is read
        me.send(nodes["n1"].printed("forward"), "go", 1)   # not a table: the forwarder fails, is restarted
        end = time.monotonic() + 60
        while not ((box := re.search(r'<g class="([^"]*)" data-id="node n1/c:forward">(.*?)</g>', view.svg.value, re.S))
                   and "wippy-flash" in box[1] and "restarts 1" in box[2]):
            assert time.monotonic() < end, f"no flash on n1's forward box: {view.flashing}"
            time.sleep(0.02)
        assert "node n1/c:forward" in view.flashing
        assert not any(k.startswith(("node n2/", "node t/")) for k in view.flashing), view.flashing
        assert "c:forward  service" in view.text() and "restarts=1" in view.text()
    finally:
        view.close()
    me.define("t:remote_echo", "process.lua", source=REMOTE_ECHO)   # the spawn comes after it on the link
    me.define("t:remote_spawn", "process.lua", source=REMOTE_SPAWN)
    said = me.exec("t:remote_spawn", "n2", timeout=60).split(" ", 1)
    assert said[0].startswith("{n2@app:processes|t.") and said[1] == "hi there pid.exit terminated", said
    me.define("t:nowhere", "process.lua", source="""return { main = function()
      local pid, err = process.spawn("t:remote_echo", "zz@app:processes")
      return tostring(pid) .. " " .. tostring(err) end }""")
    assert me.exec("t:nowhere", timeout=30).startswith("nil spawn: node 'zz' is not up in the cluster")


def test_the_workflows_of_a_killed_node_resume_on_another(me: Node, nodes: dict[str, NodeProc]) -> None:
    """Every node runs the tree's starter: one of them starts workflow w1 (the others are told it runs
    on another node). That node is killed -9 after w1's first activity: another node claims w1 once
    its lease ends and runs the rest; the first activity does not run again anywhere."""
    end = time.monotonic() + 60
    runner = None
    while runner is None:
        for p in nodes.values():
            if "activity 1 ran" in p.drained():
                runner = p
        assert time.monotonic() < end, {n: p.seen for n, p in nodes.items()}
        time.sleep(0.05)
    # the first activity's result is journaled (then, and only then, it must never run again)
    from wippy.runtime.workflow_store import open_store

    with open_store(runner.url) as store:
        while not any(r.op == "call" for r in store.journal("w1")):
            assert time.monotonic() < end, store.journal("w1")
            time.sleep(0.02)
    runner.kill9()
    others = [p for p in nodes.values() if p is not runner]
    end = time.monotonic() + 60
    while not any("activity 2 ran" in p.drained() for p in others):
        assert time.monotonic() < end, {p.name: p.seen for p in others}
        time.sleep(0.05)
    assert sum(p.seen.count("activity 1 ran") for p in others) == 0   # what completed did not run again
    assert sum(p.seen.count("activity 2 ran") for p in others) == 1
    assert "activity 2 ran" not in runner.seen


def test_a_node_that_loses_the_database_says_so_and_comes_back(me: Node, cluster_url: str) -> None:
    import psycopg

    with psycopg.connect(cluster_url, autocommit=True) as db:   # its membership connections cut
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'wippy-cluster:t'")
    end = time.monotonic() + 60
    while not any("is back in the cluster" in f for f in me.faults):
        assert time.monotonic() < end, me.faults
        time.sleep(0.05)
    lost = [f for f in me.faults if "lost the cluster database" in f]
    assert lost and "takes no new work" in lost[0]
    assert me.cluster.accepting and me.cluster.status().connected
