"""Services (``process.service`` entries): restart after any exit with backoff, stable runs, max_attempts,
``requires`` order, registry changes, stop_timeout, and a service as a supervisor's child.

Time is a FakeClock: a backoff delay passes only when the test advances it. Every service process reports
to a Python mailbox registered as ``probe`` (``started``, and ``cancel`` when it gets a CANCEL event).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from supervision_helpers import node_of, pid_of, quiet, seen, settle
from wippy.runtime import Entry, EntryError, FakeClock, Mailbox, Node, Timeout
from wippy.runtime.errors import SupervisionError
from wippy.runtime.supervisor_spec import RestartPolicy
from wippy.runtime.supervisor_tree import TreeEvent, TreeNode

#: ``crash`` makes it fail, ``return`` return; mode "ignore" reports a CANCEL and goes on;
#: mode "fail" fails at once
SERVICE = """
local function main(tag, mode)
  if mode == "fail" then error("cannot start " .. tag) end
  process.send("probe", "started", {tag = tag, pid = process.pid()})
  local inbox, events = process.inbox(), process.events()
  while true do
    local r = channel.select{events:case_receive(), inbox:case_receive()}
    if r.channel == events then
      if r.value.kind == process.event.CANCEL then
        process.send("probe", "cancel", {tag = tag, pid = process.pid()})
        if mode ~= "ignore" then return "bye" end
      end
    else
      local t = r.value:topic()
      if t == "crash" then error("boom " .. tag) end
      if t == "return" then return "done" end
    end
  end
end
return {main = main}
"""

P = "test:svc"
NO_JITTER = {"initial_delay": "1s", "backoff_factor": 2, "max_delay": "5s", "jitter": 0}


@pytest.fixture
def probe(fake_node: Node) -> Iterator[Mailbox]:
    fake_node.define(P, "process.lua", source=SERVICE)
    with fake_node.mailbox("probe") as mb:
        yield mb


def service(entry_id: str, tag: str | None = None, mode: str | None = None, **lifecycle: Any) -> Entry:
    tag = tag or entry_id.split(":")[1]
    data: dict[str, Any] = {"process": P, "input": [tag] if mode is None else [tag, mode]}
    if lifecycle:
        data["lifecycle"] = lifecycle
    return Entry(entry_id, "process.service", {}, data)


def crash(node: Node, node_id: str, topic: str = "crash") -> str:
    pid = pid_of(node, node_id)
    node.send(pid, topic)
    return pid


def wait_running(node: Node, node_id: str, restarts: int) -> TreeNode:
    def ok(t: TreeNode) -> bool:
        n = t.find(node_id)
        return n is not None and n.restarts == restarts and n.status == "running"
    found = node.supervision.wait_for(ok, 5).find(node_id)
    assert found is not None
    return found


def run_service(node: Node, mb: Mailbox, entry: Entry) -> str:
    node.apply([entry])
    pid = node.supervision.start(entry.id)
    assert seen(mb, 1) == [("started", entry.data["input"][0])]
    return pid


# ------------------------------------------------------------------------------------------ backoff
def test_a_service_restarts_with_exact_backoff_delays(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """With jitter 0 the delays are initial_delay * factor^(n-1), capped at max_delay; a restart happens
    when the node's clock passes the delay, not before."""
    old = run_service(fake_node, probe, service("app:s", restart=NO_JITTER))
    assert old == pid_of(fake_node, "app:s")
    expected = [1.0, 2.0, 4.0, 5.0, 5.0]
    for n, delay in enumerate(expected, 1):
        crash(fake_node, "app:s")
        s = fake_node.supervision.wait_status("app:s", "restarting")
        assert s.pid is None and "boom s" in (s.last_exit or "")
        assert fake_node.supervision.delays("app:s") == expected[:n]
        clock.advance(delay - 0.01)
        quiet(fake_node, probe)
        assert node_of(fake_node, "app:s").status == "restarting"
        clock.advance(0.02)
        assert seen(probe, 1) == [("started", "s")]
        new = wait_running(fake_node, "app:s", n).pid
        assert new is not None and new != old and fake_node.alive(new)
        old = new


@pytest.mark.parametrize("how", ["return", "cancel", "terminate"])
def test_a_service_restarts_after_any_exit(fake_node: Node, clock: FakeClock, probe: Mailbox, how: str) -> None:
    """Services run until stopped: a normal return, a cancel or a kill all lead to a restart."""
    old = run_service(fake_node, probe, service("app:s", restart=NO_JITTER))
    if how == "return":
        fake_node.send(old, "return")
    elif how == "cancel":
        fake_node.cancel(old)
        assert seen(probe, 1) == [("cancel", "s")]
    else:
        fake_node.terminate(old)
    s = fake_node.supervision.wait_status("app:s", "restarting")
    assert s.last_exit == {"return": "normal", "cancel": "cancelled", "terminate": "terminated"}[how]
    clock.advance(1.0)
    assert seen(probe, 1) == [("started", "s")]
    assert wait_running(fake_node, "app:s", 1).pid != old


def test_jittered_delays_follow_the_seeded_rng(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """With jitter, delays are RestartPolicy.delay drawn from node.supervision.rng."""
    restart = {"initial_delay": "500ms", "backoff_factor": 3, "max_delay": "20s", "jitter": 0.5}
    run_service(fake_node, probe, service("app:s", restart=restart))
    fake_node.supervision.rng.seed(7)
    policy = RestartPolicy(initial_delay=0.5, backoff_factor=3, max_delay=20.0, jitter=0.5)
    rng = random.Random(7)
    expected = [policy.delay(n, rng.uniform) for n in range(1, 6)]
    assert len(set(expected)) == 5 and all(d <= 20.0 for d in expected)
    for n, delay in enumerate(expected, 1):
        crash(fake_node, "app:s")
        fake_node.supervision.wait_status("app:s", "restarting")
        assert fake_node.supervision.delays("app:s") == expected[:n]
        clock.advance(delay * 0.999)
        quiet(fake_node, probe)
        clock.advance(delay * 0.002)
        seen(probe, 1)
        wait_running(fake_node, "app:s", n)


def test_a_stable_run_resets_the_backoff(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """A run longer than stable_threshold resets the count: the next delay is initial_delay."""
    run_service(fake_node, probe, service("app:s", restart=NO_JITTER, stable_threshold="30s"))
    for n, delay in enumerate([1.0, 2.0], 1):
        crash(fake_node, "app:s")
        fake_node.supervision.wait_status("app:s", "restarting")
        clock.advance(delay)
        seen(probe, 1)
        wait_running(fake_node, "app:s", n)
    clock.advance(29.0)          # not stable yet: the backoff goes on
    crash(fake_node, "app:s")
    fake_node.supervision.wait_status("app:s", "restarting")
    clock.advance(4.0)
    seen(probe, 1)
    wait_running(fake_node, "app:s", 3)
    clock.advance(31.0)          # a stable run: the next delay is initial_delay again
    crash(fake_node, "app:s")
    fake_node.supervision.wait_status("app:s", "restarting")
    assert fake_node.supervision.delays("app:s") == [1.0, 2.0, 4.0, 1.0]
    clock.advance(1.0)
    seen(probe, 1)
    wait_running(fake_node, "app:s", 4)


def test_max_attempts_then_the_service_fails(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """max_attempts restarts in a row are made; the next failure leaves the service failed."""
    run_service(fake_node, probe, service("app:s", restart={**NO_JITTER, "max_attempts": 2}))
    for n, delay in enumerate([1.0, 2.0], 1):
        crash(fake_node, "app:s")
        fake_node.supervision.wait_status("app:s", "restarting")
        clock.advance(delay)
        seen(probe, 1)
        wait_running(fake_node, "app:s", n)
    crash(fake_node, "app:s")
    s = fake_node.supervision.wait_status("app:s", "failed")
    assert (s.pid, s.restarts) == (None, 2) and "boom s" in (s.last_exit or "")
    clock.advance(100.0)
    quiet(fake_node, probe)
    assert node_of(fake_node, "app:s").status == "failed"
    assert fake_node.supervision.delays("app:s") == [1.0, 2.0]


def test_restart_events_carry_the_delay(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """The TreeEvent of a service waiting to restart carries its backoff delay."""
    run_service(fake_node, probe, service("app:s", restart=NO_JITTER))
    got: list[TreeEvent] = []
    fake_node.supervision.subscribe(got.append)
    crash(fake_node, "app:s")
    fake_node.supervision.wait_status("app:s", "restarting")
    clock.advance(1.0)
    wait_running(fake_node, "app:s", 1)
    settle(fake_node)
    assert [(e.id, e.status, e.delay) for e in got] == [
        ("app:s", "restarting", 1.0), ("app:s", "starting", None), ("app:s", "running", None)]
    assert "boom s" in (got[0].reason or "")


def test_a_named_service_keeps_its_name_across_restarts(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """A service's name is released when it ends and taken again by its next process."""
    entry = service("app:s", restart=NO_JITTER)
    old = run_service(fake_node, probe, Entry(entry.id, entry.kind, {}, {**entry.data, "name": "pool"}))
    assert fake_node.lookup("pool") == old
    fake_node.send("pool", "crash")
    fake_node.supervision.wait_status("app:s", "restarting")
    assert fake_node.lookup("pool") is None
    clock.advance(1.0)
    seen(probe, 1)
    new = wait_running(fake_node, "app:s", 1).pid
    assert new != old and fake_node.lookup("pool") == new
    fake_node.supervision.stop("app:s")
    assert fake_node.lookup("pool") is None


# ----------------------------------------------------------------------------------------- requires
def chain(**lifecycle: Any) -> list[Entry]:
    """app:api requires app:cache requires app:db (listed dependents first)."""
    return [
        service("app:api", requires=["app:cache"], **lifecycle),
        service("app:cache", requires=["app:db"], **lifecycle),
        service("app:db", **lifecycle),
    ]


def test_required_services_start_first(fake_node: Node, probe: Mailbox) -> None:
    """Auto-started services start after what they require, whatever the order of the change."""
    fake_node.apply(chain(auto_start=True))
    # the commit returned: all three run, in dependency order
    assert seen(probe, 3) == [("started", "db"), ("started", "cache"), ("started", "api")]
    tree = fake_node.supervision.tree()
    assert [(c.id, c.kind, c.status) for c in tree.children] == [
        ("app:db", "service", "running"), ("app:cache", "service", "running"), ("app:api", "service", "running")]
    assert all(c.pid and fake_node.alive(c.pid) for c in tree.children)


def test_starting_a_service_by_hand_starts_what_it_requires(fake_node: Node, probe: Mailbox) -> None:
    """Requirements start first and stand before it in the tree; deletion stops them in reverse."""
    fake_node.apply(chain())
    assert fake_node.supervision.tree().children == ()
    pid = fake_node.supervision.start("app:api")
    assert seen(probe, 3) == [("started", "db"), ("started", "cache"), ("started", "api")]
    assert pid == pid_of(fake_node, "app:api")
    assert [c.id for c in fake_node.supervision.tree().children] == ["app:db", "app:cache", "app:api"]
    fake_node.apply([], delete=["app:db", "app:cache", "app:api"])
    assert seen(probe, 3) == [("cancel", "api"), ("cancel", "cache"), ("cancel", "db")]


def test_stopped_requirements_start_again_with_their_dependent(fake_node: Node, probe: Mailbox) -> None:
    """Stopping a service stops what requires it; starting a dependent starts its stopped requirements."""
    fake_node.apply(chain())
    fake_node.supervision.start("app:api")
    seen(probe, 3)
    fake_node.supervision.stop("app:cache")   # api stops first, then cache; db runs on
    assert seen(probe, 2) == [("cancel", "api"), ("cancel", "cache")]
    assert [(c.id, c.status) for c in fake_node.supervision.tree().children] == [
        ("app:db", "running"), ("app:api", "stopped")]
    fake_node.supervision.start("app:api")
    assert seen(probe, 2) == [("started", "cache"), ("started", "api")]
    assert [(c.id, c.status) for c in fake_node.supervision.tree().children] == [
        ("app:db", "running"), ("app:cache", "running"), ("app:api", "running")]


def test_stopping_a_required_service_stops_its_dependents_first(fake_node: Node, probe: Mailbox) -> None:
    """Everything that requires it, directly or not, stops first, last started first."""
    fake_node.apply(chain(auto_start=True))
    seen(probe, 3)
    pids = [pid_of(fake_node, i) for i in ("app:api", "app:cache", "app:db")]
    fake_node.supervision.stop("app:db")
    assert seen(probe, 3) == [("cancel", "api"), ("cancel", "cache"), ("cancel", "db")]
    assert not any(fake_node.alive(p) for p in pids)
    quiet(fake_node, probe)


def test_deleting_services_stops_them_in_reverse_order(fake_node: Node, probe: Mailbox) -> None:
    """Deleting services in one change stops dependents before their requirements."""
    fake_node.apply(chain(auto_start=True))
    seen(probe, 3)
    fake_node.apply([], delete=["app:db", "app:api", "app:cache"])
    assert seen(probe, 3) == [("cancel", "api"), ("cancel", "cache"), ("cancel", "db")]
    assert fake_node.supervision.tree().children == ()


def test_node_stop_stops_services_in_reverse_order(clock: FakeClock) -> None:
    """node.stop() stops services in reverse dependency order."""
    node = Node(output=None, clock=clock).start()
    try:
        node.define(P, "process.lua", source=SERVICE)
        mb = node.mailbox("probe")
        node.apply(chain(auto_start=True))
        seen(mb, 3)
    finally:
        node.stop(grace=0.1)
    assert seen(mb, 3) == [("cancel", "api"), ("cancel", "cache"), ("cancel", "db")]


def test_a_requires_cycle_is_refused_naming_the_cycle(fake_node: Node, probe: Mailbox) -> None:
    """The commit is refused with the cycle spelled out."""
    with pytest.raises(EntryError, match=r"requires cycle app:a -> app:b -> app:c -> app:a"):
        fake_node.apply([service("app:a", requires=["app:b"]), service("app:b", requires=["app:c"]),
                         service("app:c", requires=["app:a"], auto_start=True)])
    with pytest.raises(EntryError, match=r"requires cycle app:a -> app:a"):
        fake_node.apply([service("app:a", requires=["app:a"])])
    assert fake_node.entries.get("app:a") is None
    assert fake_node.supervision.tree().children == ()


@pytest.mark.parametrize(("entry", "field", "why"), [
    (service("app:a", requires=["app:nope"]), "lifecycle.requires", "'app:nope' does not exist"),
    (service("app:a", requires=[P]), "lifecycle.requires", "is a process.lua entry"),
    (service("app:a", requires="not an id"), "lifecycle.requires", "invalid entry ID"),
    (service("app:a", startup="sometimes"), "lifecycle.startup", "must be one of required, optional"),
    (service("app:a", restart={"jitter": 2}), "lifecycle.restart.jitter", "between 0 and 1"),
    (service("app:a", restart={"backoff_factor": 0.5}), "lifecycle.restart.backoff_factor", ">= 1"),
    (service("app:a", restart={"initial_delay": "soon"}), "lifecycle.restart.initial_delay", "soon"),
    (service("app:a", restart={"max_attempts": -1}), "lifecycle.restart.max_attempts", "whole number"),
    (service("app:a", restart={"retries": 3}), "lifecycle.restart: unknown field 'retries'", "max_attempts"),
    (service("app:a", autostart=True), "lifecycle: unknown field 'autostart'", "auto_start"),
    (Entry("app:a", "process.service", {}, {"input": []}), "process", "is required"),
    (Entry("app:a", "process.service", {}, {"process": "app:nope"}), "process", "does not exist"),
    (Entry("app:a", "process.service", {}, {"process": P, "host": "app:nohost"}), "host", "does not exist"),
])
def test_a_bad_service_entry_is_refused_naming_the_field(fake_node: Node, probe: Mailbox, entry: Entry,
                                                         field: str, why: str) -> None:
    """The whole transaction is refused; the error names the entry and the field path."""
    with pytest.raises(EntryError, match=rf"entry 'app:a': {field}") as exc:
        fake_node.apply([entry])
    assert why in str(exc.value)
    assert fake_node.entries.get("app:a") is None


def test_deleting_a_required_service_alone_is_refused(fake_node: Node, probe: Mailbox) -> None:
    """A requirement cannot be deleted while a service names it; the running ones are untouched."""
    fake_node.apply(chain(auto_start=True))
    seen(probe, 3)
    with pytest.raises(EntryError, match=r"entry 'app:cache': lifecycle.requires: 'app:db' does not exist"):
        fake_node.apply([], delete=["app:db"])
    quiet(fake_node, probe)
    assert node_of(fake_node, "app:db").status == "running"


def test_an_optional_requirement_that_cannot_start_does_not_hold_back_its_dependents(
        fake_node: Node, probe: Mailbox) -> None:
    """startup: optional: its dependents start although it is still restarting."""
    fake_node.apply([service("app:db", mode="fail", startup="optional", restart=NO_JITTER),
                     service("app:api", requires=["app:db"])])
    fake_node.supervision.start("app:api")
    assert seen(probe, 1) == [("started", "api")]
    assert node_of(fake_node, "app:api").status == "running"
    assert "cannot start db" in (fake_node.supervision.wait_status("app:db", "restarting").last_exit or "")


def test_a_required_service_that_cannot_start_fails_its_dependents(fake_node: Node, probe: Mailbox) -> None:
    """startup: required (the default): a process that fails in its first steps fails the start of what
    requires it."""
    fake_node.apply([service("app:db", mode="fail"), service("app:api", requires=["app:db"])])
    with pytest.raises(SupervisionError, match="'app:api' could not start: required service app:db is not running"):
        fake_node.supervision.start("app:api")
    assert "cannot start db" in (node_of(fake_node, "app:db").last_exit or "")
    assert node_of(fake_node, "app:db").status == "failed"
    quiet(fake_node, probe)
    assert any("app:db failed to start" in p for p in fake_node.supervision.problems)


# -------------------------------------------------------------------------------- registry changes
def test_a_service_removed_from_the_registry_is_stopped(fake_node: Node, probe: Mailbox) -> None:
    """Deleting the entry stops its process and removes it from the tree."""
    fake_node.apply([service("app:s", auto_start=True)])
    seen(probe, 1)
    pid = pid_of(fake_node, "app:s")
    fake_node.apply([], delete=["app:s"])
    assert seen(probe, 1) == [("cancel", "s")]
    assert not fake_node.alive(pid)
    assert fake_node.supervision.tree().children == ()


def test_a_changed_service_restarts_with_the_new_spec(fake_node: Node, probe: Mailbox) -> None:
    """A changed entry stops the process and starts one as the entry now reads (input, restart policy)."""
    fake_node.apply([service("app:s", "v1", auto_start=True)])
    seen(probe, 1)
    old = pid_of(fake_node, "app:s")
    fake_node.apply([service("app:s", "v2", auto_start=True, restart={"jitter": 0, "initial_delay": "3s"})])
    assert seen(probe, 2) == [("cancel", "v1"), ("started", "v2")]
    new = pid_of(fake_node, "app:s")
    assert new != old and fake_node.alive(new) and not fake_node.alive(old)
    crash(fake_node, "app:s")
    fake_node.supervision.wait_status("app:s", "restarting")
    assert fake_node.supervision.delays("app:s") == [3.0]


def test_a_service_started_by_hand_restarts_when_its_entry_changes(fake_node: Node, probe: Mailbox) -> None:
    """Not only auto_start services follow their entry."""
    run_service(fake_node, probe, service("app:s", "v1"))
    fake_node.apply([service("app:s", "v2")])
    assert seen(probe, 2) == [("cancel", "v1"), ("started", "v2")]


def test_stop_timeout_cancels_then_terminates(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """CANCEL, then terminate once stop_timeout passes on the node's clock; no restart."""
    pid = run_service(fake_node, probe, service("app:s", mode="ignore", stop_timeout="8s"))
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        stopper = threading.Thread(target=fake_node.supervision.stop, args=("app:s",))
        stopper.start()
        assert seen(probe, 1) == [("cancel", "s")]
        fake_node.supervision.wait_status("app:s", "stopping")
        clock.advance(7.5)
        with pytest.raises(Timeout):
            mb.wait_exit(pid, 0.3)
        clock.advance(1.0)
        ev = mb.wait_exit(pid, 5)
        stopper.join(5)
    assert ev.reason == "terminated" and not stopper.is_alive()
    quiet(fake_node, probe)   # and it is not restarted


def test_a_listening_service_stops_at_once_when_cancelled(fake_node: Node, probe: Mailbox) -> None:
    """A service that returns on CANCEL stops without waiting for stop_timeout."""
    pid = run_service(fake_node, probe, service("app:s", stop_timeout="1h"))
    with fake_node.mailbox() as mb:
        mb.monitor(pid)
        fake_node.supervision.stop("app:s", timeout=5)
        ev = mb.wait_exit(pid, 5)
    assert ev.reason == "cancelled" and ev.result == {"value": "bye"}
    assert seen(probe, 1) == [("cancel", "s")]


# ------------------------------------------------------------------------------ under a supervisor
def test_a_service_as_a_supervisor_child(fake_node: Node, clock: FakeClock, probe: Mailbox) -> None:
    """A service child restarts itself with its backoff; once it gives up, its supervisor's strategy
    applies (one_for_all: the others stop last first, then all start again in order)."""
    fake_node.apply([
        # auto_start, but a supervisor runs it: it does not start at the top as well
        service("app.db:pool", "db", restart={**NO_JITTER, "max_attempts": 1}, auto_start=True),
        Entry("app:sup", "process.supervisor", {}, {
            "strategy": "one_for_all", "lifecycle": {"auto_start": True},
            "children": [{"id": "a", "process": P, "input": ["a"]}, {"id": "db", "service": "app.db:pool"},
                         {"id": "b", "process": P, "input": ["b"]}]}),
    ])
    assert seen(probe, 3) == [("started", "a"), ("started", "db"), ("started", "b")]
    # not also started at the top: it belongs to the supervisor
    assert [c.id for c in fake_node.supervision.tree().children] == ["app:sup"]
    db = node_of(fake_node, "app:sup/db")
    assert (db.kind, db.entry, db.status) == ("service", "app.db:pool", "running")
    a, b = pid_of(fake_node, "app:sup/a"), pid_of(fake_node, "app:sup/b")
    crash(fake_node, "app:sup/db")
    fake_node.supervision.wait_status("app:sup/db", "restarting")
    assert fake_node.supervision.delays("app:sup/db") == [1.0]
    clock.advance(1.0)
    assert seen(probe, 1) == [("started", "db")]
    wait_running(fake_node, "app:sup/db", 1)
    assert [pid_of(fake_node, "app:sup/a"), pid_of(fake_node, "app:sup/b")] == [a, b]
    # the second failure in a row: the service gives up and the supervisor takes over
    crash(fake_node, "app:sup/db")
    assert seen(probe, 5) == [("cancel", "b"), ("cancel", "a"), ("started", "a"), ("started", "db"), ("started", "b")]
    wait_running(fake_node, "app:sup/b", 1)
    s = fake_node.supervision.tree("app:sup")
    assert [c.status for c in s.children] == ["running", "running", "running"]
    assert "boom db" in (node_of(fake_node, "app:sup/db").last_exit or "")
    fake_node.apply([], delete=["app:sup"])
    assert seen(probe, 3) == [("cancel", "b"), ("cancel", "db"), ("cancel", "a")]
