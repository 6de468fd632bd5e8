"""OTP supervisors (``process.supervisor``, ``node.supervision``): strategies, restart types, intensity,
shutdown, names, nesting, specs checked when declared, auto-start, the Lua module, events and the text tree.

Time is a FakeClock (restart windows, shutdown timeouts). Every worker reports to a Python mailbox
registered as ``probe``: ``started`` when it starts and ``cancel`` when it gets a CANCEL event, so the
order of starts and stops is what the workers themselves saw.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from supervision_helpers import node_of, pid_of, quiet, seen, settle
from wippy.runtime import Entry, EntryError, FakeClock, Mailbox, Node, Timeout
from wippy.runtime.errors import SupervisionError
from wippy.runtime.supervisor_tree import TreeEvent, TreeNode, render_text

#: a worker: reports its start; ``crash`` makes it fail, ``return`` makes it return normally.
#: mode nil: listens for events and returns on CANCEL (reporting it); "ignore": reports the CANCEL and
#: goes on; "deaf": never calls process.events()
WORKER = """
local function main(tag, mode)
  process.send("probe", "started", {tag = tag, pid = process.pid()})
  local inbox = process.inbox()
  if mode == "deaf" then
    while true do
      local t = inbox:receive():topic()
      if t == "crash" then error("boom " .. tag) end
      if t == "return" then return "done" end
    end
  end
  local events = process.events()
  while true do
    local r = channel.select{events:case_receive(), inbox:case_receive()}
    if r.channel == events then
      if r.value.kind == process.event.CANCEL then
        process.send("probe", "cancel", {tag = tag, pid = process.pid()})
        if mode ~= "ignore" then return "bye " .. tag end
      end
    else
      local t = r.value:topic()
      if t == "crash" then error("boom " .. tag) end
      if t == "return" then return "done " .. tag end
    end
  end
end
return {main = main}
"""

W = "test:w"


@pytest.fixture
def probe(fake_node: Node) -> Iterator[Mailbox]:
    """The mailbox the workers report to; defines the worker entry ``test:w``."""
    fake_node.define(W, "process.lua", source=WORKER)
    with fake_node.mailbox("probe") as mb:
        yield mb


def child(cid: str, mode: str | None = None, **kw: Any) -> dict[str, Any]:
    """A worker child spec running ``test:w`` with its id as tag."""
    return {"id": cid, "process": W, "input": [cid] if mode is None else [cid, mode], **kw}


def crash(node: Node, node_id: str, topic: str = "crash") -> str:
    """Make the worker ``node_id`` crash (or return); returns its PID."""
    pid = pid_of(node, node_id)
    node.send(pid, topic)
    return pid


def wait_restarted(node: Node, node_id: str, restarts: int = 1, timeout: float = 5.0) -> TreeNode:
    def ok(t: TreeNode) -> bool:
        n = t.find(node_id)
        return n is not None and n.restarts >= restarts and n.status == "running"
    found = node.supervision.wait_for(ok, timeout).find(node_id)
    assert found is not None
    return found


def start(node: Node, strategy: str, *children: dict[str, Any], sup_id: str = "s", **kw: Any) -> str:
    return node.supervision.start({"id": sup_id, "strategy": strategy, "max_restarts": 10, "period": 10,
                                   "children": list(children), **kw})


def pids(node: Node, *ids: str) -> list[str]:
    return [pid_of(node, i) for i in ids]


# ------------------------------------------------------------------------------------- strategies
def test_children_start_in_order_and_the_tree_shows_them(fake_node: Node, probe: Mailbox) -> None:
    """Children start in their order; the tree has the supervisor (with its PID) and each child running."""
    sup_pid = start(fake_node, "one_for_one", child("a"), child("b"), child("c"))
    assert seen(probe, 3) == [("started", "a"), ("started", "b"), ("started", "c")]
    s = node_of(fake_node, "s")
    assert (s.kind, s.status, s.pid, s.strategy) == ("supervisor", "running", sup_pid, "one_for_one")
    assert [(c.id, c.kind, c.status, c.restart, c.restarts) for c in s.children] == [
        ("s/a", "worker", "running", "permanent", 0),
        ("s/b", "worker", "running", "permanent", 0),
        ("s/c", "worker", "running", "permanent", 0),
    ]
    assert all(fake_node.alive(c.pid or "") for c in s.children)


def test_one_for_one_restarts_only_the_crashed_child(fake_node: Node, probe: Mailbox) -> None:
    """The crashed child runs again with a new PID; its siblings keep theirs."""
    start(fake_node, "one_for_one", child("a"), child("b"), child("c"))
    seen(probe, 3)
    a, b, c = pids(fake_node, "s/a", "s/b", "s/c")
    crash(fake_node, "s/b")
    assert seen(probe, 1) == [("started", "b")]
    nb = wait_restarted(fake_node, "s/b")
    assert nb.pid not in (None, b)
    assert nb.last_exit is not None and nb.last_exit.startswith("error: ") and "boom b" in nb.last_exit
    assert pids(fake_node, "s/a", "s/c") == [a, c]
    assert [node_of(fake_node, i).restarts for i in ("s/a", "s/c")] == [0, 0]
    quiet(fake_node, probe)


def test_one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order(
        fake_node: Node, probe: Mailbox) -> None:
    """As OTP: the others stop last first, then every child starts again in order."""
    start(fake_node, "one_for_all", child("a"), child("b"), child("c"), child("d"))
    seen(probe, 4)
    old = pids(fake_node, "s/a", "s/b", "s/c", "s/d")
    crash(fake_node, "s/b")
    assert seen(probe, 7) == [
        ("cancel", "d"), ("cancel", "c"), ("cancel", "a"),
        ("started", "a"), ("started", "b"), ("started", "c"), ("started", "d"),
    ]
    wait_restarted(fake_node, "s/d")
    new = pids(fake_node, "s/a", "s/b", "s/c", "s/d")
    assert not set(old) & set(new)
    assert [node_of(fake_node, f"s/{i}").restarts for i in "abcd"] == [1, 1, 1, 1]
    assert "boom b" in (node_of(fake_node, "s/b").last_exit or "")
    quiet(fake_node, probe)


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it(fake_node: Node, probe: Mailbox) -> None:
    """The children after the crashed one stop last first; it and they start again in order."""
    start(fake_node, "rest_for_one", child("a"), child("b"), child("c"), child("d"))
    seen(probe, 4)
    a = pid_of(fake_node, "s/a")
    crash(fake_node, "s/b")
    assert seen(probe, 5) == [
        ("cancel", "d"), ("cancel", "c"),
        ("started", "b"), ("started", "c"), ("started", "d"),
    ]
    wait_restarted(fake_node, "s/d")
    assert pid_of(fake_node, "s/a") == a
    assert [node_of(fake_node, f"s/{i}").restarts for i in "abcd"] == [0, 1, 1, 1]
    quiet(fake_node, probe)


def test_rest_for_one_last_child_restarts_alone(fake_node: Node, probe: Mailbox) -> None:
    start(fake_node, "rest_for_one", child("a"), child("b"))
    seen(probe, 2)
    a = pid_of(fake_node, "s/a")
    crash(fake_node, "s/b")
    assert seen(probe, 1) == [("started", "b")]
    wait_restarted(fake_node, "s/b")
    assert pid_of(fake_node, "s/a") == a
    quiet(fake_node, probe)


# ---------------------------------------------------------------------------------- restart types
@pytest.mark.parametrize("how", ["crash", "return"])
def test_permanent_child_is_restarted_after_any_exit(fake_node: Node, probe: Mailbox, how: str) -> None:
    """A permanent child is restarted after an error and after a normal return."""
    start(fake_node, "one_for_one", child("a"))
    seen(probe, 1)
    old = crash(fake_node, "s/a", how)
    assert seen(probe, 1) == [("started", "a")]
    n = wait_restarted(fake_node, "s/a")
    assert n.pid != old
    if how == "return":
        assert n.last_exit == "normal"
    else:
        assert (n.last_exit or "").startswith("error: ")


def test_transient_child_is_restarted_only_after_an_abnormal_exit(fake_node: Node, probe: Mailbox) -> None:
    """Abnormal: error, terminated. Not restarted: a normal return, a cancel (as OTP's shutdown)."""
    start(fake_node, "one_for_one", child("err", restart="transient"), child("kill", restart="transient"),
          child("ret", restart="transient"), child("cxl", restart="transient"))
    seen(probe, 4)
    crash(fake_node, "s/err")
    fake_node.terminate(pid_of(fake_node, "s/kill"))
    assert sorted(seen(probe, 2)) == [("started", "err"), ("started", "kill")]
    assert wait_restarted(fake_node, "s/kill").last_exit == "terminated"
    assert (wait_restarted(fake_node, "s/err").last_exit or "").startswith("error: ")

    crash(fake_node, "s/ret", "return")
    ret = fake_node.supervision.wait_status("s/ret", "stopped")
    assert (ret.pid, ret.restarts, ret.last_exit) == (None, 0, "normal")
    fake_node.cancel(pid_of(fake_node, "s/cxl"), "enough")
    assert seen(probe, 1) == [("cancel", "cxl")]
    cxl = fake_node.supervision.wait_status("s/cxl", "stopped")
    assert (cxl.pid, cxl.restarts, cxl.last_exit) == (None, 0, "cancelled")
    quiet(fake_node, probe)
    assert node_of(fake_node, "s").status == "running"


def test_temporary_child_is_never_restarted(fake_node: Node, probe: Mailbox) -> None:
    """A temporary child that ends stays ended (failed after an error), and the supervisor runs on."""
    start(fake_node, "one_for_one", child("a", restart="temporary"), child("b", restart="temporary"))
    seen(probe, 2)
    crash(fake_node, "s/a")
    crash(fake_node, "s/b", "return")
    a = fake_node.supervision.wait_status("s/a", "failed")
    b = fake_node.supervision.wait_status("s/b", "stopped")
    assert (a.pid, a.restarts) == (None, 0) and "boom a" in (a.last_exit or "")
    assert (b.pid, b.restarts, b.last_exit) == (None, 0, "normal")
    quiet(fake_node, probe)
    assert node_of(fake_node, "s").status == "running"


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_temporary_sibling_stopped_by_the_strategy_is_not_restarted(
        fake_node: Node, probe: Mailbox, strategy: str) -> None:
    """A temporary child stopped because of a sibling's crash stays stopped (as OTP)."""
    start(fake_node, strategy, child("a"), child("b"), child("t", restart="temporary"), child("c"))
    seen(probe, 4)
    crash(fake_node, "s/b")
    if strategy == "one_for_all":
        assert seen(probe, 6) == [("cancel", "c"), ("cancel", "t"), ("cancel", "a"),
                                  ("started", "a"), ("started", "b"), ("started", "c")]
    else:
        assert seen(probe, 4) == [("cancel", "c"), ("cancel", "t"), ("started", "b"), ("started", "c")]
    wait_restarted(fake_node, "s/c")
    t = node_of(fake_node, "s/t")
    assert (t.status, t.pid, t.restarts) == ("stopped", None, 0)
    quiet(fake_node, probe)


# -------------------------------------------------------------------------------------- intensity
def test_intensity_exceeded_stops_children_in_reverse_and_fails(fake_node: Node, probe: Mailbox) -> None:
    """More than max_restarts restarts within period: the others stop last first, the supervisor fails."""
    fake_node.supervision.start({"id": "s", "max_restarts": 2, "period": 10,
                                 "children": [child("a"), child("b"), child("c")]})
    seen(probe, 3)
    for n in (1, 2):
        crash(fake_node, "s/b")
        assert seen(probe, 1) == [("started", "b")]
        wait_restarted(fake_node, "s/b", n)
    old = pids(fake_node, "s/a", "s/b", "s/c")
    crash(fake_node, "s/b")
    assert seen(probe, 2) == [("cancel", "c"), ("cancel", "a")]
    s = fake_node.supervision.wait_status("s", "failed")
    assert (s.last_exit or "").startswith("shutdown: reached max restart intensity"), s.last_exit
    assert "boom b" in (s.last_exit or "")
    assert [c.status for c in s.children] == ["stopped", "failed", "stopped"]
    assert all(c.pid is None for c in s.children)
    assert not any(fake_node.alive(p) for p in old)
    quiet(fake_node, probe)


def test_restarts_spread_beyond_the_period_do_not_trip_intensity(
        fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """Intensity counts restarts within `period` seconds of the node's clock only."""
    fake_node.supervision.start({"id": "s", "max_restarts": 1, "period": "5s", "children": [child("a")]})
    seen(probe, 1)
    for n in (1, 2, 3, 4):
        crash(fake_node, "s/a")
        assert seen(probe, 1) == [("started", "a")]
        wait_restarted(fake_node, "s/a", n)
        clock.advance(5.5)
    assert node_of(fake_node, "s").status == "running"
    # two within the period: one too many
    crash(fake_node, "s/a")
    seen(probe, 1)
    wait_restarted(fake_node, "s/a", 5)
    clock.advance(4.0)
    crash(fake_node, "s/a")
    assert fake_node.supervision.wait_status("s", "failed").children[0].restarts == 5


def test_intensity_escalates_to_the_parent_which_restarts_the_nested_supervisor(
        fake_node: Node, probe: Mailbox) -> None:
    """A nested supervisor past its intensity fails; its parent (one_for_one) restarts it, and its children run
    again with new PIDs."""
    fake_node.supervision.start({"id": "top", "strategy": "one_for_one", "max_restarts": 3, "children": [
        child("x"),
        {"id": "mid", "supervisor": {"strategy": "one_for_one", "max_restarts": 0, "children": [
            child("a"), child("b")]}},
        child("y"),
    ]})
    assert seen(probe, 4) == [("started", "x"), ("started", "a"), ("started", "b"), ("started", "y")]
    x, y, mid, a, b = pids(fake_node, "top/x", "top/y", "top/mid", "top/mid/a", "top/mid/b")
    crash(fake_node, "top/mid/a")
    # mid gives up at once (max_restarts 0): b stops; top restarts mid, which starts a and b again
    assert seen(probe, 3) == [("cancel", "b"), ("started", "a"), ("started", "b")]
    m = wait_restarted(fake_node, "top/mid")
    assert (m.last_exit or "").startswith("shutdown: reached max restart intensity (0 in 5s)")
    assert m.pid not in (None, mid)
    new_a, new_b = pids(fake_node, "top/mid/a", "top/mid/b")
    assert new_a not in (a, b) and new_b not in (a, b)
    assert fake_node.alive(new_a) and fake_node.alive(new_b)
    assert pids(fake_node, "top/x", "top/y") == [x, y]
    assert node_of(fake_node, "top").status == "running"
    quiet(fake_node, probe)


def test_escalation_through_every_level_fails_the_top(fake_node: Node, probe: Mailbox) -> None:
    """A parent that is itself past its intensity fails too and stops its other children, last first."""
    fake_node.supervision.start({"id": "top", "max_restarts": 0, "children": [
        child("x"),
        {"id": "mid", "supervisor": {"max_restarts": 0, "children": [child("a")]}},
        child("y"),
    ]})
    seen(probe, 3)
    crash(fake_node, "top/mid/a")
    assert seen(probe, 2) == [("cancel", "y"), ("cancel", "x")]
    top = fake_node.supervision.wait_status("top", "failed")
    assert (top.last_exit or "").startswith("shutdown: reached max restart intensity")
    assert "after mid" in (top.last_exit or "")
    assert all(n.pid is None for n in top.walk() if n.kind == "worker")
    mid = node_of(fake_node, "top/mid")
    assert mid.status == "failed"   # not overwritten by top stopping it afterwards
    assert (mid.last_exit or "").startswith("shutdown: reached max restart intensity (0 in 5s) after a: error:")
    quiet(fake_node, probe)


# --------------------------------------------------------------------------------------- shutdown
def test_brutal_kill_terminates_at_once(fake_node: Node, probe: Mailbox) -> None:
    """shutdown: brutal_kill terminates without a CANCEL."""
    start(fake_node, "one_for_one", child("a", shutdown="brutal_kill"))
    seen(probe, 1)
    pid = pid_of(fake_node, "s/a")
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        fake_node.supervision.stop("s")
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "terminated"
    quiet(fake_node, probe)   # no CANCEL was sent


def test_shutdown_timeout_sends_cancel_and_a_listening_worker_returns(fake_node: Node, probe: Mailbox) -> None:
    """A worker that listens for events gets CANCEL and returns; its result is its own."""
    start(fake_node, "one_for_one", child("a", shutdown="2s"))
    seen(probe, 1)
    pid = pid_of(fake_node, "s/a")
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        fake_node.supervision.stop("s")
        ev = mb.wait_exit(pid, 5)
    assert seen(probe, 1) == [("cancel", "a")]
    assert ev.reason == "cancelled" and ev.result == {"value": "bye a"}


def test_shutdown_timeout_terminates_a_worker_that_ignores_cancel(
        fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """CANCEL, then terminate once `shutdown` passes on the node's clock (longer than the host's own
    default grace, which must not cut it short)."""
    start(fake_node, "one_for_one", child("a", "ignore", shutdown="8s"))
    seen(probe, 1)
    pid = pid_of(fake_node, "s/a")
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        stopper = threading.Thread(target=fake_node.supervision.stop, args=("s",))
        stopper.start()
        assert seen(probe, 1) == [("cancel", "a")]
        fake_node.supervision.wait_status("s/a", "stopping")
        clock.advance(7.5)
        with pytest.raises(Timeout):
            mb.wait_exit(pid, 0.3)
        assert fake_node.alive(pid)
        clock.advance(1.0)
        ev = mb.wait_exit(pid, 5)
        stopper.join(5)
    assert not stopper.is_alive()
    assert ev.reason == "terminated"
    with pytest.raises(SupervisionError):
        fake_node.supervision.tree("s")


def test_a_worker_that_never_listens_is_ended_by_the_cancel_at_once(fake_node: Node, probe: Mailbox) -> None:
    """API.md: a process that never called process.events() ends at once when cancelled."""
    start(fake_node, "one_for_one", child("a", "deaf", shutdown="1h"))
    seen(probe, 1)
    pid = pid_of(fake_node, "s/a")
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        fake_node.supervision.stop("s", timeout=5)   # no clock advance needed
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "cancelled" and ev.result.get("value") is None
    quiet(fake_node, probe)


# ------------------------------------------------------------------------------------------ names
def test_named_child_is_restarted_under_the_same_name(fake_node: Node, probe: Mailbox) -> None:
    """The name points to the new PID after each restart (the old one is released first)."""
    start(fake_node, "one_for_one", child("a", name="worker-a"), child("b", name="worker-b"))
    seen(probe, 2)
    old = pid_of(fake_node, "s/a")
    assert fake_node.lookup("worker-a") == old
    for n in (1, 2, 3):
        crash(fake_node, "s/a")      # the old name must be free before the new process takes it
        seen(probe, 1)
        new = wait_restarted(fake_node, "s/a", n).pid
        assert new is not None and new != old
        assert fake_node.lookup("worker-a") == new
        old = new
    assert (node_of(fake_node, "s/a").last_exit or "").startswith("error: ")
    fake_node.send("worker-a", "return")
    assert seen(probe, 1) == [("started", "a")]
    assert fake_node.lookup("worker-a") == wait_restarted(fake_node, "s/a", 4).pid
    fake_node.supervision.stop("s")
    assert fake_node.lookup("worker-a") is None and fake_node.lookup("worker-b") is None


# ---------------------------------------------------------------------------------------- nesting
def test_nesting_three_deep_with_inline_specs_and_entry_references(fake_node: Node, probe: Mailbox) -> None:
    """Inline `supervisor: {...}` children and `supervisor: ns:entry` references, four levels."""
    fake_node.define("app:l4", "process.supervisor", children=[child("w4a"), child("w4b")])
    fake_node.define("app:l2", "process.supervisor", strategy="one_for_all", children=[
        child("w2"),
        {"id": "l3", "supervisor": {"strategy": "rest_for_one", "children": [
            child("w3"),
            {"id": "l4", "supervisor": "app:l4"},
        ]}},
    ])
    fake_node.define("app:l1", "process.supervisor", children=[
        child("w1"), {"id": "l2", "supervisor": "app:l2"}])
    fake_node.supervision.start("app:l1")
    assert seen(probe, 5) == [("started", t) for t in ("w1", "w2", "w3", "w4a", "w4b")]
    tree = fake_node.supervision.tree("app:l1")
    assert [(n.id, n.kind, n.status) for n in tree.walk()] == [
        ("app:l1", "supervisor", "running"),
        ("app:l1/w1", "worker", "running"),
        ("app:l1/l2", "supervisor", "running"),
        ("app:l1/l2/w2", "worker", "running"),
        ("app:l1/l2/l3", "supervisor", "running"),
        ("app:l1/l2/l3/w3", "worker", "running"),
        ("app:l1/l2/l3/l4", "supervisor", "running"),
        ("app:l1/l2/l3/l4/w4a", "worker", "running"),
        ("app:l1/l2/l3/l4/w4b", "worker", "running"),
    ]
    assert [n.strategy for n in tree.walk() if n.kind == "supervisor"] == [
        "one_for_one", "one_for_all", "rest_for_one", "one_for_one"]
    assert node_of(fake_node, "app:l1/l2/l3/l4").entry == "app:l4"
    # the deepest crash stays at its level
    before = {n.id: n.pid for n in tree.walk()}
    crash(fake_node, "app:l1/l2/l3/l4/w4a")
    assert seen(probe, 1) == [("started", "w4a")]
    wait_restarted(fake_node, "app:l1/l2/l3/l4/w4a")
    after = {n.id: n.pid for n in fake_node.supervision.tree("app:l1").walk()}
    assert [k for k in before if before[k] != after[k]] == ["app:l1/l2/l3/l4/w4a"]
    # a crash in rest_for_one l3 restarts w3 and the whole l4 subtree
    crash(fake_node, "app:l1/l2/l3/w3")
    assert seen(probe, 5) == [("cancel", "w4b"), ("cancel", "w4a"),
                              ("started", "w3"), ("started", "w4a"), ("started", "w4b")]
    wait_restarted(fake_node, "app:l1/l2/l3/l4")
    wait_restarted(fake_node, "app:l1/l2/l3/w3")
    again = {n.id: n.pid for n in fake_node.supervision.tree("app:l1").walk()}
    assert [k for k in after if after[k] != again[k]] == [
        "app:l1/l2/l3/w3", "app:l1/l2/l3/l4", "app:l1/l2/l3/l4/w4a", "app:l1/l2/l3/l4/w4b"]
    assert all(fake_node.alive(again[k]) for k in again if "/w" in k)
    # stopping the top stops everything, deepest last child first
    fake_node.supervision.stop("app:l1")
    assert seen(probe, 5) == [("cancel", t) for t in ("w4b", "w4a", "w3", "w2", "w1")]


# ------------------------------------------------------------------------------- specs when declared
def sup_entry(fake_node: Node, entry_id: str = "app:sup", **data: Any) -> None:
    fake_node.define(entry_id, "process.supervisor", **data)


@pytest.mark.parametrize(("children", "field", "why"), [
    ([child("a"), child("b", restart="always")], r"children\[1\]\.restart", "must be one of permanent"),
    ([child("a", shutdown="soon")], r"children\[0\]\.shutdown", "soon"),
    ([child("a", restrat="transient")], r"children\[0\]: unknown field 'restrat'", "fields: id"),
    ([{"id": "a"}], r"children\[0\]\.process", "exactly one of process:, service: or supervisor:"),
    ([child("a"), child("a")], r"children\[1\]\.id", "used by an earlier child"),
    ([child("a", process="app:nope")], r"children\[0\]\.process", "'app:nope' does not exist"),
    ([child("a", host="app:nohost")], r"children\[0\]\.host", "'app:nohost' does not exist"),
    ([{"id": "n", "supervisor": {"children": [child("a", restart=1)]}}],
     r"children\[0\]\.supervisor\.children\[0\]\.restart", "must be one of"),
    ([{"id": "n", "supervisor": "app:nope"}], r"children\[0\]\.supervisor", "'app:nope' does not exist"),
    ([{"id": "n", "supervisor": W}], r"children\[0\]\.supervisor", "is a process.lua entry"),
    ([{"id": "d", "service": "app:nope"}], r"children\[0\]\.service", "does not exist"),
])
def test_a_bad_child_spec_is_refused_by_the_commit_naming_the_field(
        fake_node: Node, probe: Mailbox, children: list[Any], field: str, why: str) -> None:
    """The whole transaction is refused; the error names the entry and the field path."""
    version = fake_node.entries.version
    with pytest.raises(EntryError, match=rf"entry 'app:sup': {field}") as exc:
        sup_entry(fake_node, children=children, lifecycle={"auto_start": True})
    assert why in str(exc.value)
    assert fake_node.entries.get("app:sup") is None and fake_node.entries.version == version
    assert fake_node.supervision.tree().children == ()
    quiet(fake_node, probe)


@pytest.mark.parametrize(("data", "field"), [
    ({"strategy": "one_for_some"}, "strategy"),
    ({"max_restarts": -1}, "max_restarts"),
    ({"period": "later"}, "period"),
    ({"children": "a"}, "children"),
    ({"lifecycle": {"auto_start": "yes"}}, r"lifecycle\.auto_start"),
    ({"lifecycle": {"restart": {}}}, r"lifecycle: unknown field 'restart'"),
    ({"stratgy": "one_for_all"}, "unknown field 'stratgy'"),
])
def test_a_bad_supervisor_field_is_refused(fake_node: Node, probe: Mailbox, data: dict[str, Any],
                                           field: str) -> None:
    """Top-level fields of a supervisor entry are checked as its children are."""
    with pytest.raises(EntryError, match=rf"entry 'app:sup': {field}"):
        sup_entry(fake_node, **{"children": [child("a")], **data})
    assert fake_node.entries.get("app:sup") is None


def test_a_supervisor_that_contains_itself_is_refused(fake_node: Node, probe: Mailbox) -> None:
    """A cycle of entry references, directly or through inline and referenced levels."""
    with pytest.raises(EntryError, match=r"supervisor cycle app:a -> app:a"):
        sup_entry(fake_node, "app:a", children=[{"id": "me", "supervisor": "app:a"}])
    from wippy.runtime import Entry
    with pytest.raises(EntryError, match=r"supervisor cycle app:a -> app:b -> app:c -> app:a") as exc:
        fake_node.apply([
            Entry("app:a", "process.supervisor", {}, {"children": [{"id": "b", "supervisor": "app:b"}]}),
            Entry("app:b", "process.supervisor", {}, {"children": [
                {"id": "n", "supervisor": {"children": [{"id": "c", "supervisor": "app:c"}]}}]}),
            Entry("app:c", "process.supervisor", {}, {"children": [child("w"), {"id": "a", "supervisor": "app:a"}]}),
        ])
    assert "cannot contain itself" in str(exc.value)
    assert [fake_node.entries.get(i) for i in ("app:a", "app:b", "app:c")] == [None, None, None]


def test_deleting_an_entry_a_supervisor_needs_is_refused(fake_node: Node, probe: Mailbox) -> None:
    """References are checked on every commit, deletions too."""
    sup_entry(fake_node, children=[child("a")])
    with pytest.raises(EntryError, match=r"entry 'app:sup': children\[0\]\.process: 'test:w' does not exist"):
        fake_node.apply([], delete=[W])
    assert fake_node.entries.get(W) is not None


def test_a_bad_spec_from_python_or_lua_names_the_field(fake_node: Node, probe: Mailbox) -> None:
    """Specs that do not come through the registry are checked when given."""
    with pytest.raises(EntryError, match=r"children\[1\]\.restart: must be one of"):
        fake_node.supervision.start({"id": "s", "children": [child("a"), child("b", restart="sometimes")]})
    with pytest.raises(EntryError, match=r"children\[0\]\.process: 'app:nope' is not a process.lua entry"):
        fake_node.supervision.start({"id": "s", "children": [child("a", process="app:nope")]})
    with pytest.raises(EntryError, match="id: is required"):
        fake_node.supervision.start({"children": [child("a")]})
    assert fake_node.supervision.tree().children == ()
    quiet(fake_node, probe)
    fake_node.define("test:lua", "process.lua", modules=["supervisor"], source="""
      return {main = function()
        local pid, err = supervisor.start({id = "s", children = {{id = "a", process = "test:w", restart = "x"}}})
        return {pid == nil, err}
      end}""")
    no_pid, err = fake_node.exec("test:lua", timeout=5)
    assert no_pid is True
    assert "children[0].restart: must be one of permanent, transient, temporary (got 'x')" in err


# ------------------------------------------------------------------------------------ auto_start
def test_auto_start_supervisor_runs_when_its_commit_returns(fake_node: Node, probe: Mailbox) -> None:
    """The call that committed an auto_start supervisor returns once its children run."""
    sup_entry(fake_node, strategy="one_for_all", children=[child("a"), child("b")],
              lifecycle={"auto_start": True})
    # node.define returned: the children run, their PIDs are in the tree and alive
    s = fake_node.supervision.tree("app:sup")
    assert s.status == "running" and s.entry == "app:sup"
    assert [c.status for c in s.children] == ["running", "running"]
    assert all(c.pid and fake_node.alive(c.pid) for c in s.children)
    assert seen(probe, 2) == [("started", "a"), ("started", "b")]


def test_deleting_an_auto_start_supervisor_stops_it(fake_node: Node, probe: Mailbox) -> None:
    """Deleting the entry stops the supervisor, its children last first, and removes it from the tree."""
    sup_entry(fake_node, children=[child("a"), child("b")], lifecycle={"auto_start": True})
    seen(probe, 2)
    old = [c.pid or "" for c in fake_node.supervision.tree("app:sup").children]
    fake_node.apply([], delete=["app:sup"])
    assert seen(probe, 2) == [("cancel", "b"), ("cancel", "a")]
    assert not any(fake_node.alive(p) for p in old)
    assert fake_node.supervision.tree().children == ()
    quiet(fake_node, probe)


def test_changing_an_auto_start_supervisor_restarts_it_with_the_new_spec(fake_node: Node, probe: Mailbox) -> None:
    """A changed entry stops the running supervisor and starts it again as it now reads."""
    sup_entry(fake_node, children=[child("a"), child("b")], lifecycle={"auto_start": True})
    seen(probe, 2)
    old_sup = pid_of(fake_node, "app:sup")
    sup_entry(fake_node, strategy="rest_for_one", children=[child("a"), child("c")],
              lifecycle={"auto_start": True})
    assert seen(probe, 4) == [("cancel", "b"), ("cancel", "a"), ("started", "a"), ("started", "c")]
    s = fake_node.supervision.tree("app:sup")
    assert (s.strategy, s.status) == ("rest_for_one", "running") and s.pid != old_sup
    assert [c.id for c in s.children] == ["app:sup/a", "app:sup/c"]
    assert all(c.pid and fake_node.alive(c.pid) for c in s.children)


def test_a_supervisor_without_auto_start_waits_to_be_started(fake_node: Node, probe: Mailbox) -> None:
    """Started by entry ID from Python; a second start is refused; stop by PID."""
    sup_entry(fake_node, children=[child("a")])
    assert fake_node.supervision.tree().children == ()
    pid = fake_node.supervision.start("app:sup")
    assert pid == pid_of(fake_node, "app:sup") and pid.startswith("{")
    assert seen(probe, 1) == [("started", "a")]
    with pytest.raises(SupervisionError, match="already running"):
        fake_node.supervision.start("app:sup")
    fake_node.supervision.stop(pid)
    assert seen(probe, 1) == [("cancel", "a")]
    assert fake_node.supervision.tree().children == ()


# ----------------------------------------------------------------------------------- from Python
def test_start_from_python_returns_the_supervisor_pid(fake_node: Node, probe: Mailbox) -> None:
    """The returned PID is the supervisor's: in the tree, alive while it runs."""
    pid = fake_node.supervision.start({"id": "s", "children": [child("a"), child("b")]})
    assert pid == pid_of(fake_node, "s")
    assert fake_node.supervision.tree(pid).id == "s"
    a = pid_of(fake_node, "s/a")
    assert fake_node.alive(a) and fake_node.alive(pid)
    fake_node.supervision.stop("s")
    assert not fake_node.alive(a) and not fake_node.alive(pid)
    with pytest.raises(SupervisionError, match="no top-level supervisor or service 's'"):
        fake_node.supervision.stop("s")


def test_node_stop_stops_supervisors_last_child_first(clock: FakeClock) -> None:
    """node.stop() stops supervisors in reverse start order, each one's children last first."""
    node = Node(output=None, clock=clock).start()
    try:
        node.define(W, "process.lua", source=WORKER)
        mb = node.mailbox("probe")
        node.supervision.start({"id": "s1", "children": [child("a"), child("b")]})
        node.supervision.start({"id": "s2", "children": [child("c")]})
        seen(mb, 3)
    finally:
        node.stop(grace=0.1)
    assert seen(mb, 3) == [("cancel", "c"), ("cancel", "b"), ("cancel", "a")]


# -------------------------------------------------------------------------------------- from Lua
LUA_SUP = """
local function main(cmd)
  if cmd == "start" then
    local pid, err = supervisor.start({id = "lua", strategy = "one_for_all", children = {
      {id = "a", process = "test:w", input = {"a"}},
      {id = "b", process = "test:w", input = {"b"}, restart = "transient"},
    }})
    if not pid then error(err) end
    local t = supervisor.tree("lua")
    local kids = {}
    for i, c in ipairs(t.children) do kids[i] = c.id .. "=" .. c.status end
    return {pid = pid, status = t.status, strategy = t.strategy, tree_pid = t.pid, kids = kids}
  end
  if cmd == "stop" then
    local ok, err = supervisor.stop("lua")
    local again, err2 = supervisor.stop("lua")
    return {ok = ok, again = again == nil, err = err2}
  end
end
return {main = main}
"""


def test_start_tree_and_stop_from_lua(fake_node: Node, probe: Mailbox) -> None:
    """The supervisor module in a process: start returns the PID, tree a table, stop true or nil, err."""
    fake_node.define("test:lua", "process.lua", source=LUA_SUP, modules=["supervisor"])
    out = fake_node.exec("test:lua", "start", timeout=5)
    assert out["pid"] == pid_of(fake_node, "lua") and out["tree_pid"] == out["pid"]
    assert (out["status"], out["strategy"]) == ("running", "one_for_all")
    assert out["kids"] == ["lua/a=running", "lua/b=running"]
    assert seen(probe, 2) == [("started", "a"), ("started", "b")]
    # it outlives the process that started it
    assert node_of(fake_node, "lua").status == "running"
    out = fake_node.exec("test:lua", "stop", timeout=5)
    assert out["ok"] is True and out["again"] is True
    assert "no top-level supervisor or service 'lua'" in out["err"]
    assert seen(probe, 2) == [("cancel", "b"), ("cancel", "a")]


def test_supervisor_module_in_the_shell(fake_node: Node, probe: Mailbox) -> None:
    """The shell process (cells) has the supervisor module."""
    shell = fake_node.shell()
    res = shell.run("""
      sup = supervisor.start({id = "cell", children = {{id = "a", process = "test:w", input = {"a"}}}})
      local t = supervisor.tree()
      return t.children[1].id .. " " .. t.children[1].children[1].status .. " " .. tostring(sup == t.children[1].pid)
    """, timeout=5)
    assert res.value == "cell running true"
    assert seen(probe, 1) == [("started", "a")]
    kids = shell.run('return supervisor.children("cell")', timeout=5).value
    assert [k["id"] for k in kids] == ["cell/a"]
    assert shell.run('return supervisor.stop(sup)', timeout=5).value is True
    assert seen(probe, 1) == [("cancel", "a")]


def test_lua_monitor_of_a_supervisor_gets_exit_when_it_fails(fake_node: Node, probe: Mailbox) -> None:
    """process.monitor on a supervisor PID: an EXIT event whose error is the failure."""
    fake_node.define("test:watch", "process.lua", modules=["supervisor"], source="""
      return {main = function()
        local pid = supervisor.start({id = "s", max_restarts = 0, children = {
          {id = "a", process = "test:w", input = {"a"}}}})
        assert(process.monitor(pid))
        process.send("probe", "started", {tag = "watcher", pid = pid})
        local ev = process.events():receive()
        return {kind = ev.kind, from = ev.from == pid, reason = ev.reason, error = ev.result.error}
      end}""")
    with fake_node.mailbox() as mb:
        watcher = mb.spawn_monitored("test:watch")
        assert sorted(seen(probe, 2)) == [("started", "a"), ("started", "watcher")]
        crash(fake_node, "s/a")
        ev = mb.wait_exit(watcher, 5)
    out = ev.result["value"]
    assert out["kind"] == "pid.exit" and out["from"] is True
    assert out["error"].startswith("shutdown: reached max restart intensity")
    assert fake_node.supervision.tree("s").status == "failed"


def test_lua_monitor_of_a_stopped_supervisor_gets_a_normal_exit(fake_node: Node, probe: Mailbox) -> None:
    """A supervisor stopped on purpose ends normally for its monitors."""
    pid = fake_node.supervision.start({"id": "s", "children": [child("a")]})
    fake_node.define("test:watch", "process.lua", source="""
      return {main = function(pid)
        assert(process.monitor(pid))
        process.send("probe", "started", {tag = "watcher"})
        local ev = process.events():receive()
        return {ev.kind, ev.from == pid, ev.result.error == nil}
      end}""")
    with fake_node.mailbox() as mb:
        watcher = mb.spawn_monitored("test:watch", pid)
        assert sorted(seen(probe, 2)) == [("started", "a"), ("started", "watcher")]
        fake_node.supervision.stop("s")
        assert mb.wait_exit(watcher, 5).result["value"] == ["pid.exit", True, True]


# ---------------------------------------------------------------------------------- events, text
def test_subscribers_see_a_crash_and_restart_in_order(fake_node: Node, probe: Mailbox) -> None:
    """TreeEvents for a crash and its restart, in order; unsubscribing stops them."""
    got: list[TreeEvent] = []
    start(fake_node, "one_for_one", child("a"), child("b"))
    seen(probe, 2)
    old = pid_of(fake_node, "s/b")
    unsubscribe = fake_node.supervision.subscribe(got.append)
    crash(fake_node, "s/b")
    new = wait_restarted(fake_node, "s/b").pid
    settle(fake_node)
    unsubscribe()
    assert [(e.kind, e.id, e.status) for e in got] == [
        ("status", "s/b", "restarting"), ("status", "s/b", "starting"), ("status", "s/b", "running")]
    assert "boom b" in (got[0].reason or "") and got[0].pid is None
    assert got[-1].pid == new != old and got[-1].restarts == 1
    crash(fake_node, "s/a")
    wait_restarted(fake_node, "s/a")
    assert len(got) == 3   # unsubscribed


def test_subscribers_see_a_supervisor_start_and_fail(fake_node: Node, probe: Mailbox) -> None:
    """TreeEvents from a supervisor's start to its failure past its intensity."""
    got: list[TreeEvent] = []
    fake_node.supervision.subscribe(got.append)
    fake_node.supervision.start({"id": "s", "max_restarts": 0, "children": [child("a"), child("b")]})
    seen(probe, 2)
    crash(fake_node, "s/a")
    fake_node.supervision.wait_status("s", "failed")
    settle(fake_node)
    assert [(e.kind, e.id, e.status) for e in got] == [
        ("added", "s", "starting"), ("status", "s", "starting"),
        ("status", "s/a", "starting"), ("status", "s/a", "running"),
        ("status", "s/b", "starting"), ("status", "s/b", "running"),
        ("status", "s", "running"),
        ("status", "s/a", "failed"), ("status", "s", "stopping"),
        ("status", "s/b", "stopping"), ("status", "s/b", "stopped"),
        ("status", "s", "failed"),
    ]


def test_render_text_draws_the_tree(fake_node: Node, probe: Mailbox) -> None:
    """%tree --text: one line a node, with kind, strategy or restart type, status, PID, restarts, last exit."""
    pid = fake_node.supervision.start({"id": "s", "strategy": "one_for_all", "children": [
        child("a"), {"id": "inner", "supervisor": {"children": [child("b", restart="transient")]}}]})
    seen(probe, 2)
    crash(fake_node, "s/inner/b")
    seen(probe, 1)
    wait_restarted(fake_node, "s/inner/b")
    a, b = pids(fake_node, "s/a", "s/inner/b")
    text = render_text(fake_node.supervision.tree("s"))
    lines = text.splitlines()
    assert lines[0] == f"s  supervisor one_for_all  running  {pid}"
    assert lines[1] == f"├── a  worker permanent  running  {a}"
    assert lines[2].startswith("└── inner  supervisor one_for_one permanent  running  {python|")
    assert lines[3].startswith(f"    └── b  worker transient  running  {b}  restarts=1  last=error: ")
    assert "boom b" in lines[3] and len(lines) == 4
    full = fake_node.supervision.text()
    assert full.splitlines()[0].startswith("node  root  running")
    assert full.splitlines()[1].startswith("└── s  supervisor one_for_all  running")


# ---------------------------------------------------------------------- signals to a supervisor PID
def test_terminating_a_nested_supervisor_lets_its_parent_restart_it(fake_node: Node, probe: Mailbox) -> None:
    """Terminating a supervisor's PID stops its children and fails it; its parent restarts it."""
    fake_node.supervision.start({"id": "top", "children": [
        child("x"), {"id": "mid", "supervisor": {"children": [child("a"), child("b")]}}]})
    seen(probe, 3)
    mid = pid_of(fake_node, "top/mid")
    with fake_node.mailbox() as mb:
        mb.monitor(mid)
        fake_node.terminate(mid)
        ev = mb.wait_exit(mid, 5)
    assert ev.reason == "terminated" and ev.result.get("error") == "terminated"
    assert seen(probe, 4) == [("cancel", "b"), ("cancel", "a"), ("started", "a"), ("started", "b")]
    m = wait_restarted(fake_node, "top/mid")
    assert m.pid != mid and m.last_exit == "terminated"
    assert not fake_node.alive(mid) and fake_node.alive(m.pid or "")


def test_cancelling_a_top_supervisor_stops_it(fake_node: Node, probe: Mailbox) -> None:
    """Cancelling a top-level supervisor's PID is a stop: children last first, gone from the tree."""
    pid = fake_node.supervision.start({"id": "s", "children": [child("a"), child("b")]})
    seen(probe, 2)
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        fake_node.cancel(pid)
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "cancelled" and ev.result.get("error") is None
    assert seen(probe, 2) == [("cancel", "b"), ("cancel", "a")]
    assert fake_node.supervision.tree().children == ()
    assert not fake_node.alive(pid)


def test_monitoring_an_ended_supervisor_gives_noproc(fake_node: Node, probe: Mailbox) -> None:
    pid = fake_node.supervision.start({"id": "s", "children": [child("a")]})
    fake_node.supervision.stop("s")
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        assert mb.wait_exit(pid, 0.5).reason == "noproc"


def test_a_lua_process_linked_to_a_failing_supervisor_gets_link_down(fake_node: Node, probe: Mailbox) -> None:
    """A link to a supervisor PID: its failure arrives as LINK_DOWN (trap_links)."""
    pid = fake_node.supervision.start({"id": "s", "max_restarts": 0, "children": [child("a")]})
    fake_node.define("test:linked", "process.lua", source="""
      return {main = function(pid)
        process.set_options({trap_links = true})
        assert(process.link(pid))
        process.send("probe", "started", {tag = "linked"})
        local ev = process.events():receive()
        return {ev.kind, ev.from == pid, ev.result.error}
      end}""")
    with fake_node.mailbox() as mb:
        linked = mb.spawn_monitored("test:linked", pid)
        assert sorted(seen(probe, 2)) == [("started", "a"), ("started", "linked")]
        crash(fake_node, "s/a")
        kind, same, error = mb.wait_exit(linked, 5).result["value"]
    assert (kind, same) == ("pid.link.down", True)
    assert error.startswith("shutdown: reached max restart intensity")


# ----------------------------------------------------------------------------------- restored node
def test_an_auto_start_supervisor_starts_again_on_a_restored_node(clock: FakeClock, tmp_path: Any) -> None:
    """A node on the same data directory starts the stored auto_start supervisor."""
    first = Node(output=None, clock=clock, data_dir=tmp_path).start()
    try:
        first.define(W, "process.lua", source=WORKER)
        first.define("app:sup", "process.supervisor", children=[child("a")], lifecycle={"auto_start": True})
    finally:
        first.stop(grace=0.1)
    second = Node(output=None, clock=clock, data_dir=tmp_path)
    mb = second.mailbox("probe")
    try:
        second.start()
        assert seen(mb, 1) == [("started", "a")]
        a = second.supervision.tree("app:sup/a")
        assert a.status == "running" and second.alive(a.pid or "")
    finally:
        second.stop(grace=0.1)


def test_a_child_that_cannot_start_fails_the_start_and_the_started_ones_stop(
        fake_node: Node, probe: Mailbox) -> None:
    """As OTP's start_link: a child that cannot be started fails the supervisor's start; the children
    started before it stop, last first."""
    with fake_node.mailbox("taken"):
        with pytest.raises(SupervisionError, match=r"'s' could not start: error: child c could not start: "
                                                   r"error: .*name 'taken' is already registered"):
            start(fake_node, "one_for_one", child("a"), child("b"), child("c", name="taken"), child("d"))
        settle(fake_node)
        reports = []
        while (m := probe.receive_nowait()) is not None:
            reports.append((m.topic, m.payload["tag"]))
        # children are spawned without waiting for their first steps: one stopped before it ran any
        # reports nothing; one that ran got its CANCEL, b before a
        assert reports in ([("started", "a"), ("started", "b"), ("cancel", "b"), ("cancel", "a")],
                           [("started", "a"), ("cancel", "a")], [])
        s = node_of(fake_node, "s")
        assert s.status == "failed" and [c.status for c in s.children] == ["stopped", "stopped", "failed", "stopped"]
    # the name is free now: starting it again replaces the failed one
    start(fake_node, "one_for_one", child("c", name="taken"))
    assert seen(probe, 1) == [("started", "c")]
    assert fake_node.lookup("taken") == pid_of(fake_node, "s/c")


def test_lua_starts_an_entry_by_id(fake_node: Node, probe: Mailbox) -> None:
    """supervisor.start takes an entry ID too; errors come back as nil, err."""
    sup_entry(fake_node, children=[child("a")])
    fake_node.define("test:lua", "process.lua", modules=["supervisor"], source="""
      return {main = function()
        local pid, err = supervisor.start("app:sup")
        local again, err2 = supervisor.start("app:sup")
        local none, err3 = supervisor.start("app:nope")
        return {pid = pid, again = again == nil, err2 = err2, err3 = err3}
      end}""")
    out = fake_node.exec("test:lua", timeout=5)
    assert out["pid"] == pid_of(fake_node, "app:sup") and out["again"] is True
    assert "already running" in out["err2"]
    assert "unknown entry 'app:nope'" in out["err3"]
    assert seen(probe, 1) == [("started", "a")]


def test_a_host_and_a_supervisor_on_it_in_one_transaction(node: Node) -> None:
    """A process.host defined in the same commit as a supervisor whose child runs on it: the host exists
    before supervision starts the child."""
    node.define("t:idle", "process.lua", source="return { main = function() process.inbox():receive() end }")
    node.apply([Entry("t:h2", "process.host", {}, {"host": {}}),
                Entry("t:sup", "process.supervisor", {}, {"lifecycle": {"auto_start": True}, "children": [
                    {"id": "a", "process": "t:idle", "host": "t:h2"}]})])
    child = node.supervision.tree("t:sup").children[0]
    assert child.status == "running"
    assert child.pid is not None and child.pid.startswith("{t:h2|")
    assert node.alive(child.pid)
