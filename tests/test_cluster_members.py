"""Cluster membership (runtime/cluster_members.py) against the real PostgreSQL server of tests/pg_server.py.

Each test has a schema of its own (``isolated_url``), so the members of one test never see another's rows
(the NOTIFY channel is database-wide: the payload names the schema, and the others ignore it). A crashed
node is a child process killed with SIGKILL, as in the real cluster tests. Waits are on events with
generous timeouts; the only time bounds asserted are the feature's contracts (a NOTIFY arrives before
the next periodic scan would have; a dead node is declared down within its ttl plus a margin).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pg_server
import psycopg
import pytest
from wippy.runtime.cluster_members import ClusterError, ClusterTimeout, MemberEvent, Membership, NodeInfo

pytestmark = pytest.mark.timeout(60)

# a node in a child process: joins, prints its incarnation, then heartbeats until killed (or stdin closes)
CHILD = """
import sys
from wippy.runtime.cluster_members import Membership
url, node_id, ttl, beat = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
m = Membership(url, node_id, "tcp://child:" + node_id, ttl=ttl, heartbeat=beat)
print("joined", m.join(), flush=True)
sys.stdin.read()
"""


class Recorder:
    """An ``on_event`` that keeps every event with its arrival time (monotonic); ``wait`` for one."""

    def __init__(self) -> None:
        self.events: list[tuple[float, MemberEvent]] = []
        self._cond = threading.Condition()

    def __call__(self, event: MemberEvent) -> None:
        with self._cond:
            self.events.append((time.monotonic(), event))
            self._cond.notify_all()

    def wait(self, kind: str, node_id: str, incarnation: int | None = None, timeout: float = 10.0) -> float:
        """The arrival time of the first matching event, waiting up to ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, e in self.events:
                    if e.kind == kind and e.node_id == node_id and incarnation in (None, e.incarnation):
                        return at
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {kind} event of {node_id} within {timeout} s; got {self.of()}")
                self._cond.wait(remaining)

    def of(self, node_id: str | None = None) -> list[tuple[str, str, int]]:
        with self._cond:
            return [(e.kind, e.node_id, e.incarnation) for _, e in self.events if node_id in (None, e.node_id)]


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    with pg_server.isolated_url(postgres_url) as u:
        yield u


Make = Callable[..., Membership]


@pytest.fixture
def member(url: str) -> Iterator[Make]:
    """member(node_id, join=True, url=..., **options): a Membership (joined), left after the test."""
    made: list[Membership] = []

    def make(node_id: str, *, join: bool = True, at: str | None = None, **options: Any) -> Membership:
        options.setdefault("ttl", 5.0)
        m = Membership(at or url, node_id, f"tcp://127.0.0.1:{7000 + len(made)}", **options)
        made.append(m)
        if join:
            m.join()
        return m

    yield make
    for m in made:
        try:
            m.leave()
        except ClusterError:
            pass


Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn(url: str) -> Iterator[Spawn]:
    """spawn(node_id, ttl, heartbeat) -> a child process that has joined (its incarnation checked)."""
    procs: list[subprocess.Popen[str]] = []

    def start(node_id: str, ttl: float = 1.0, heartbeat: float = 0.2, incarnation: int = 1) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, node_id, str(ttl), str(heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            assert proc.stderr is not None
            raise AssertionError(f"the child {node_id} did not join (exit {proc.returncode}):\n{proc.stderr.read()}")
        assert line.split() == ["joined", str(incarnation)]
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def by_id(nodes: list[NodeInfo]) -> dict[str, NodeInfo]:
    return {n.node_id: n for n in nodes}


def has(*ids: str) -> Callable[[dict[str, NodeInfo]], bool]:
    return lambda live: set(ids) <= live.keys()


# ---------------------------------------------------------------------------------------------- seeing
def test_two_members_see_each_other(member: Make) -> None:
    a = member("a")
    b = member("b")
    assert (a.incarnation, b.incarnation) == (1, 1)
    assert a.wait_for(has("a", "b"), 10).keys() == {"a", "b"}
    assert b.wait_for(has("a", "b"), 10).keys() == {"a", "b"}
    for m in (a, b):
        nodes = m.nodes()
        assert [n.node_id for n in nodes] == ["a", "b"]
        assert all(n.status == "up" and n.incarnation == 1 and 0 <= n.age < n.ttl for n in nodes)
        assert m.live().keys() == {"a", "b"}
        assert m.connected
    assert by_id(a.nodes())["b"].address == b.address


def test_three_members_see_each_other(member: Make) -> None:
    ms = [member(n) for n in ("c", "a", "b")]
    for m in ms:
        m.wait_for(has("a", "b", "c"), 10)
        assert [n.node_id for n in m.nodes()] == ["a", "b", "c"]
        assert sorted(m.live()) == ["a", "b", "c"]


def test_the_first_scan_reports_the_nodes_already_up(member: Make) -> None:
    member("a")
    member("b")
    rec = Recorder()
    member("c", on_event=rec)
    rec.wait("joined", "a", 1)
    rec.wait("joined", "b", 1)
    assert all(node != "c" for _, node, _ in rec.of())  # no event about itself but its connection's


def test_a_join_reaches_the_others_by_notify(member: Make) -> None:
    rec = Recorder()
    a = member("a", ttl=30.0, heartbeat=5.0, on_event=rec)
    a.wait_for(has("a"), 10)  # a's first scan is done: its next periodic scan is 5 s later
    t0 = time.monotonic()
    member("b")
    # within 3 s, well before a's next scan: it came by NOTIFY
    assert rec.wait("joined", "b", 1, timeout=10) - t0 < 3.0
    assert a.wait_for(has("a", "b"), 1.0).keys() == {"a", "b"}


# ---------------------------------------------------------------------------------------------- failure
def test_a_killed_member_is_declared_down_within_its_ttl(member: Make, spawn: Spawn, url: str) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    member("a", ttl=1.0, heartbeat=0.2, on_event=rec_a)
    b = member("b", ttl=1.0, heartbeat=0.2, on_event=rec_b)
    child = spawn("c", ttl=1.0, heartbeat=0.2)
    rec_a.wait("joined", "c", 1)
    rec_b.wait("joined", "c", 1)
    child.kill()  # SIGKILL: no leave(), its row stays up until someone declares it down
    t_kill = time.monotonic()
    # the contract: a node silent for its ttl (1 s) is declared down by the others; detection takes at most
    # ttl + one scan interval, so ttl + 3 s bounds it with a generous margin for a loaded machine
    assert rec_a.wait("down", "c", 1) - t_kill <= 1.0 + 3.0
    assert rec_b.wait("down", "c", 1) - t_kill <= 1.0 + 3.0
    c = by_id(b.nodes())["c"]
    assert (c.status, c.incarnation) == ("down", 1) and not c.live
    assert "c" not in b.live()
    # declared once (a row lock serialises the declarers): each observer saw one "down"
    time.sleep(0.5)
    assert rec_a.of("c") == [("joined", "c", 1), ("down", "c", 1)]
    assert rec_b.of("c") == [("joined", "c", 1), ("down", "c", 1)]
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT changed_by FROM wippy_cluster_nodes WHERE node_id = 'c'").fetchone()
    assert row is not None and row[0] in ("a", "b")


def test_a_restarted_member_rejoins_with_the_next_incarnation(member: Make, spawn: Spawn) -> None:
    rec = Recorder()
    a = member("a", ttl=1.0, heartbeat=0.2, on_event=rec)
    spawn("c").kill()
    rec.wait("down", "c", 1)
    spawn("c", incarnation=2)
    rec.wait("joined", "c", 2)
    assert rec.of("c") == [("joined", "c", 1), ("down", "c", 1), ("joined", "c", 2)]
    c = a.wait_for(has("c"), 10)["c"]
    assert (c.status, c.incarnation) == ("up", 2)


def test_a_restart_not_yet_seen_down_reports_down_then_joined(member: Make, spawn: Spawn) -> None:
    rec = Recorder()
    a = member("a", ttl=30.0, heartbeat=5.0, on_event=rec)  # scans rarely: it learns by NOTIFY
    spawn("c", ttl=1.0, heartbeat=0.2).kill()
    rec.wait("joined", "c", 1)
    deadline = time.monotonic() + 10
    while by_id(a.nodes())["c"].live:  # wait until c's row is past its ttl: a restart may take the id
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c2 = member("c", ttl=1.0, heartbeat=0.2)
    assert c2.incarnation == 2
    rec.wait("joined", "c", 2)
    # whether a declared incarnation 1 down itself or only saw incarnation 2, it reports both, in order
    assert rec.of("c") == [("joined", "c", 1), ("down", "c", 1), ("joined", "c", 2)]


def test_a_second_live_member_with_the_same_id_is_refused(member: Make) -> None:
    a = member("n1")
    with pytest.raises(ClusterError, match=r"node id 'n1' is taken by a live node .*choose another node_id") as e:
        member("n1")
    assert e.value.node_id == "n1"
    assert a.connected and a.incarnation == 1
    n1 = by_id(a.nodes())["n1"]
    assert (n1.status, n1.incarnation, n1.address) == ("up", 1, a.address)


def test_simultaneous_joins_with_one_id_let_exactly_one_in(member: Make) -> None:
    ms = [member("x", join=False) for _ in range(4)]
    barrier = threading.Barrier(len(ms))
    results: list[int | str] = [""] * len(ms)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ms[i].join()
        except ClusterError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(ms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r for r in results if isinstance(r, int)) == [1]
    assert all("is taken by a live node" in r for r in results if isinstance(r, str))


def test_a_lost_connection_is_reported_and_recovered(member: Make, url: str, postgres_url: str) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = member("a", at=url + "&application_name=wippy_cm_a", ttl=5.0, heartbeat=0.2, on_event=rec_a)
    member("b", ttl=5.0, heartbeat=0.2, on_event=rec_b)
    rec_b.wait("joined", "a", 1)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wippy_cm_a'"
        ).fetchall()
    assert killed and all(ok for (ok,) in killed)
    rec_a.wait("disconnected", "a", 1)
    rec_a.wait("reconnected", "a", 1)  # within its ttl: the same incarnation, nobody saw it down
    assert rec_a.of("a") == [("disconnected", "a", 1), ("reconnected", "a", 1)]
    assert a.connected and a.incarnation == 1 and a.last_error
    assert by_id(a.nodes())["a"].status == "up"
    assert rec_b.of("a") == [("joined", "a", 1)]


def test_a_member_declared_down_while_alive_rejoins_with_a_new_incarnation(member: Make, url: str) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = member("a", ttl=5.0, heartbeat=0.2, on_event=rec_a)
    member("b", ttl=5.0, heartbeat=0.2, on_event=rec_b)
    rec_b.wait("joined", "a", 1)
    with psycopg.connect(url, autocommit=True) as conn:  # as if a had stalled past its ttl
        conn.execute("UPDATE wippy_cluster_nodes SET status = 'down' WHERE node_id = 'a'")
    rec_a.wait("reconnected", "a", 2)
    assert rec_a.of("a") == [("disconnected", "a", 1), ("reconnected", "a", 2)]
    assert a.incarnation == 2
    rec_b.wait("joined", "a", 2)
    assert rec_b.of("a") == [("joined", "a", 1), ("down", "a", 1), ("joined", "a", 2)]


# ---------------------------------------------------------------------------------------------- leaving
def test_leave_makes_the_others_see_left(member: Make) -> None:
    rec = Recorder()
    a = member("a", ttl=30.0, heartbeat=5.0, on_event=rec)
    b = member("b")
    rec.wait("joined", "b", 1)
    t0 = time.monotonic()
    b.leave()
    assert rec.wait("left", "b", 1) - t0 < 3.0  # by NOTIFY: a's next scan is seconds away
    assert not b.connected
    b.leave()  # idempotent
    node = by_id(a.nodes())["b"]
    assert (node.status, node.incarnation) == ("left", 1)
    assert a.live().keys() == {"a"}
    with pytest.raises(ClusterError, match=r"after leave\(\)"):
        b.nodes()
    with pytest.raises(ClusterError, match="has left; a Membership joins once"):
        b.join()
    b2 = member("b")
    assert b2.incarnation == 2
    rec.wait("joined", "b", 2)
    assert rec.of("b") == [("joined", "b", 1), ("left", "b", 1), ("joined", "b", 2)]


def test_a_context_manager_joins_and_leaves(url: str) -> None:
    with Membership(url, "a", "tcp://a") as a:
        assert a.connected and a.incarnation == 1
        with Membership(url, "b", "tcp://b") as b:
            assert a.wait_for(has("a", "b"), 10).keys() == {"a", "b"}
            assert b.connected
        assert a.wait_for(lambda live: "b" not in live, 10).keys() == {"a"}
    assert not a.connected


# ---------------------------------------------------------------------------------------------- errors
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_a_clear_error() -> None:
    bad = f"postgresql://postgres:s3cret@127.0.0.1:{_free_port()}/postgres"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"cannot connect to the cluster database .*check that the server runs"):
        Membership(bad, "a", "tcp://a").join()
    assert time.monotonic() - t0 < 10
    try:
        Membership(bad, "a", "tcp://a").join()
    except ClusterError as exc:
        assert "s3cret" not in str(exc) and "postgres:***@127.0.0.1" in str(exc)
        assert exc.location is not None and "s3cret" not in exc.location


def test_a_server_that_never_answers_does_not_hang() -> None:
    import socket

    # a socket that listens (the kernel completes the TCP handshake) but never answers: only libpq's
    # connect_timeout ends the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=r"cannot connect .*timeout"):
            Membership(f"postgresql://postgres@127.0.0.1:{port}/postgres", "a", "tcp://a", connect_timeout=2).join()
        assert time.monotonic() - t0 < 10


def test_an_unknown_database_is_named(postgres_url: str) -> None:
    bad = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(ClusterError, match=r"no_such_db.*check that the server runs"):
        Membership(bad, "a", "tcp://a").join()


def test_an_unreadable_url_is_a_clear_error() -> None:
    with pytest.raises(ClusterError, match=r"cannot be read .*postgresql://user:password@host:port/database"):
        Membership("not a url", "a", "tcp://a")


def test_a_search_path_without_a_schema_is_a_clear_error(postgres_url: str) -> None:
    bad = pg_server.with_search_path(postgres_url, "no_such_schema")
    with pytest.raises(ClusterError, match=r"no schema of the search_path exists .*CREATE SCHEMA"):
        Membership(bad, "a", "tcp://a").join()


def test_a_foreign_table_is_refused(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE wippy_cluster_nodes(node_id text PRIMARY KEY, heartbeat_at float8)")
    with pytest.raises(ClusterError, match=r"is not a membership table .*lacks address text.*another schema"):
        Membership(url, "a", "tcp://a").join()


def test_misuse_is_refused(member: Make, url: str) -> None:
    with pytest.raises(ValueError, match=r"heartbeat must be .* less than ttl"):
        Membership(url, "a", "tcp://a", ttl=1.0, heartbeat=1.0)
    with pytest.raises(ValueError, match="ttl must be a positive"):
        Membership(url, "a", "tcp://a", ttl=0)
    with pytest.raises(ValueError, match="meta must be JSON"):
        Membership(url, "a", "tcp://a", meta={"f": object()})
    fresh = Membership(url, "a", "tcp://a")
    with pytest.raises(ClusterError, match=r"call join\(\) first"):
        fresh.nodes()
    with pytest.raises(ClusterError, match=r"call join\(\) first"):
        fresh.wait_for(has("a"), 1)
    a = member("a")
    with pytest.raises(ClusterError, match=r"already joined \(incarnation 1\)"):
        a.join()
    with pytest.raises(TypeError, match="load must be an int"):
        a.set_load(True)


def test_wait_for_times_out_with_the_live_set(member: Make) -> None:
    a = member("a")
    with pytest.raises(ClusterTimeout, match=r"within 0.3 s; live now: a") as e:
        a.wait_for(has("zzz"), 0.3)
    assert isinstance(e.value, TimeoutError) and e.value.live.keys() == {"a"}


# ---------------------------------------------------------------------------------------------- data
def test_meta_and_load_round_trip(member: Make) -> None:
    meta = {"zone": "eu-1", "tags": ["gpu", "big"], "weight": 2.5, "nested": {"ok": True, "none": None}}
    a = member("a", heartbeat=0.2, meta=meta)
    a.set_load(7)
    b = member("b")
    deadline = time.monotonic() + 10
    while by_id(b.nodes())["a"].load != 7:  # written with a's next heartbeat
        assert time.monotonic() < deadline
        time.sleep(0.05)
    info = b.live()["a"]
    assert info.meta == meta and info.load == 7
    assert by_id(b.nodes())["b"].meta == {}
    assert abs(info.started_at - time.time()) < 60  # the server runs on this machine
    assert 0 <= info.age < info.ttl == 5.0


def test_a_raising_callback_does_not_stop_the_thread(member: Make, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder()

    def bad(event: MemberEvent) -> None:
        rec(event)
        raise RuntimeError("boom from on_event")

    member("a", on_event=bad)
    b = member("b")
    rec.wait("joined", "b")
    member("c")
    rec.wait("joined", "c")
    b.leave()
    rec.wait("left", "b")  # the thread goes on after the callback raised
    err = capsys.readouterr().err
    assert err.count("RuntimeError: boom from on_event") == 1  # printed once per distinct message
    assert "Traceback" in err and "on_event raised for MemberEvent(kind='joined'" in err


def test_leave_from_on_event(member: Make) -> None:
    done = threading.Event()
    holder: list[Membership] = []

    def on_event(event: MemberEvent) -> None:
        if event.kind == "joined" and event.node_id == "b":
            holder[0].leave()  # on the membership thread itself
            done.set()

    rec = Recorder()
    holder.append(member("a", on_event=on_event))
    member("b", ttl=30.0, heartbeat=5.0, on_event=rec)
    assert done.wait(10)
    rec.wait("left", "a", 1)
    assert not holder[0].connected
