"""The durable-workflow store's contract, run against both backends (SQLite in tmp_path, PostgreSQL from a
throwaway server: tests/pg_server.py), plus what only one backend has (a second OS process on one SQLite
file; a PostgreSQL connection that breaks) and the errors of stores that cannot be opened.

Time is a fake clock handed to ``open_store(now=...)``: leases expire by advancing it, never by sleeping.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pg_server
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wippy.runtime.errors import (
    CorruptJournal,
    JournalConflict,
    LeaseLost,
    PayloadError,
    StoreError,
    StoreOpenError,
    UnknownWorkflow,
    WippyError,
    WorkflowFinished,
)
from wippy.runtime.workflow_store import (
    JournalRecord,
    SignalRecord,
    Step,
    WorkflowStore,
    decode_value,
    encode_value,
    open_store,
)

TTL = 30.0


class FakeTime:
    """A ``now()`` for the store that moves only when the test says (thread-safe enough: a float)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The session's PostgreSQL server (shared with ``pg_server.postgres_url``); fails without PostgreSQL."""
    yield from pg_server.serve_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh, empty store is: a file in tmp_path, or an empty schema of the PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "workflows.sqlite")
    else:
        with pg_server.isolated_url(request.getfixturevalue("pg_url")) as url:
            yield url


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def store(target: str, clock: FakeTime) -> Iterator[WorkflowStore]:
    s = open_store(target, now=clock)
    yield s
    s.close()


def raw_sql(target: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database behind its back (``?`` placeholders on both backends)."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
    db = sqlite3.connect(target, isolation_level=None)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not 1.0 nor True; NaN is NaN; -0.0 is not 0.0;
    dict keys in the same order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


# ---------------------------------------------------------------------------------------------- workflows
def test_create_is_idempotent_and_returns_the_stored_record(store: WorkflowStore, clock: FakeTime) -> None:
    created, rec = store.create("order-42", "app.orders:flow", {"sku": "A1", "qty": 2}, "node-a")
    assert created is True
    assert (rec.workflow_id, rec.entry_id, rec.input, rec.status) == ("order-42", "app.orders:flow",
                                                                    {"sku": "A1", "qty": 2}, "running")
    assert (rec.owner, rec.steps, rec.signals, rec.result, rec.error) == ("node-a", 0, 0, None, None)
    assert rec.created_at == rec.updated_at == clock.t
    assert not rec.finished

    clock.advance(5)
    again, existing = store.create("order-42", "app.other:flow", "another input", "node-b")
    assert again is False
    assert existing == rec  # the stored one, untouched: not a second copy, not overwritten
    assert store.get("order-42") == rec
    assert store.get("order-43") is None


def test_list_is_oldest_first_and_filters_by_status(store: WorkflowStore, clock: FakeTime) -> None:
    for wid in ("c", "a", "b"):
        store.create(wid, "app:flow", None, "n1")
        clock.advance(1)
    store.finish("a", "completed", 1)
    assert [r.workflow_id for r in store.list()] == ["c", "a", "b"]
    assert [r.workflow_id for r in store.list("running")] == ["c", "b"]
    assert [r.workflow_id for r in store.list("completed")] == ["a"]
    assert store.list("failed") == []
    with pytest.raises(ValueError, match="status must be one of"):
        store.list("done")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- journal
def test_steps_are_journaled_in_order_and_read_back(store: WorkflowStore, clock: FakeTime) -> None:
    store.create("w", "app:flow", None, "n1")
    results: list[Any] = [1_700_000_000_123_456_789, {"status": 200, "body": b"\x00\xff"}, None, 2.5]
    for seq, result in enumerate(results, start=1):
        clock.advance(0.5)
        store.append("w", seq, "call", f"h{seq}", result)
    journal = store.journal("w")
    assert [(j.seq, j.op, j.args_hash) for j in journal] == [(1, "call", "h1"), (2, "call", "h2"),
                                                             (3, "call", "h3"), (4, "call", "h4")]
    assert all(same(j.result, r) for j, r in zip(journal, results, strict=True))
    assert journal[0] == JournalRecord("w", 1, "call", "h1", results[0], clock.t - 1.5)
    assert [j.seq for j in store.journal("w", after_seq=2)] == [3, 4]
    assert store.journal("w", after_seq=4) == []
    rec = store.get("w")
    assert rec is not None and rec.steps == 4 and rec.updated_at == clock.t


def test_a_duplicate_step_is_a_conflict_and_overwrites_nothing(store: WorkflowStore) -> None:
    store.create("w", "app:flow", None, "n1")
    store.append("w", 1, "now", "h1", 111)
    store.append("w", 2, "random", "h2", 0.25)
    with pytest.raises(JournalConflict) as info:
        store.append("w", 2, "random", "h2", 0.75)
    msg = str(info.value)
    assert "workflow 'w'" in msg and "step 2 is already in its journal (2 steps)" in msg
    assert "another node or process is running this workflow" in msg
    assert store.location in msg
    assert (info.value.workflow_id, info.value.seq, info.value.steps) == ("w", 2, 2)
    with pytest.raises(JournalConflict, match="step 1 is already"):
        store.append("w", 1, "now", "h1", 999)
    with pytest.raises(JournalConflict, match="steps are numbered from 1"):
        store.append("w", 0, "now", "h0")
    assert [(j.seq, j.result) for j in store.journal("w")] == [(1, 111), (2, 0.25)]


def test_a_gap_is_a_conflict(store: WorkflowStore) -> None:
    store.create("w", "app:flow", None, "n1")
    gap = r"step 2 would leave a gap \(its journal has 0 steps, the next one is 1\)"
    with pytest.raises(JournalConflict, match=gap):
        store.append("w", 2, "now", "h")
    store.append("w", 1, "now", "h")
    with pytest.raises(JournalConflict) as info:
        store.append("w", 5, "now", "h")
    assert (info.value.seq, info.value.steps) == (5, 1)
    assert "the next one is 2" in str(info.value)
    assert len(store.journal("w")) == 1


def test_append_to_an_unknown_or_finished_workflow(store: WorkflowStore) -> None:
    with pytest.raises(UnknownWorkflow, match="no workflow has the ID 'ghost' \\(cannot append\\)") as info:
        store.append("ghost", 1, "now", "h")
    assert isinstance(info.value, LookupError) and info.value.workflow_id == "ghost"
    store.create("w", "app:flow", None, "n1")
    store.append("w", 1, "now", "h")
    store.finish("w", "completed", "done")
    with pytest.raises(WorkflowFinished, match=r"workflow 'w' has already finished \(completed\), so it cannot append"):
        store.append("w", 2, "now", "h")
    with pytest.raises(UnknownWorkflow):
        store.journal("ghost")
    assert len(store.journal("w")) == 1  # a finished workflow's journal stays readable


def test_bad_arguments_are_value_errors(store: WorkflowStore) -> None:
    store.create("w", "app:flow", None, "n1")
    with pytest.raises(ValueError, match="seq must be an int"):
        store.append("w", "1", "now", "h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="op must be a non-empty string"):
        store.append("w", 1, "", "h")
    with pytest.raises(ValueError, match="workflow_id must be a non-empty string"):
        store.create("", "app:flow", None, "n1")
    with pytest.raises(ValueError, match="ttl_seconds must be a positive number"):
        store.claim_orphans("n1", 0)


def test_two_nodes_racing_on_one_workflow_never_fork_its_journal(target: str, clock: FakeTime) -> None:
    """Two stores (two connections: two nodes) append "the next step" as fast as they can: every seq is
    written once, by one of them; the loser of each race gets JournalConflict."""
    a, b = open_store(target, now=clock), open_store(target, now=clock)
    try:
        a.create("w", "app:flow", None, "n1")
        start = threading.Barrier(2)

        def run(s: WorkflowStore, name: str) -> tuple[int, int]:
            ok = conflicts = 0
            start.wait()
            for _ in range(150):
                rec = s.get("w")
                assert rec is not None
                try:
                    s.append("w", rec.steps + 1, name, "h", name)
                    ok += 1
                except JournalConflict:
                    conflicts += 1
            return ok, conflicts

        with ThreadPoolExecutor(2) as pool:
            fa, fb = pool.submit(run, a, "a"), pool.submit(run, b, "b")
            (ok_a, _), (ok_b, _) = fa.result(), fb.result()
        journal = a.journal("w")
        assert [j.seq for j in journal] == list(range(1, ok_a + ok_b + 1))
        assert sum(j.op == "a" for j in journal) == ok_a and sum(j.op == "b" for j in journal) == ok_b
        assert all(j.result == j.op for j in journal)
    finally:
        a.close()
        b.close()


def test_threads_of_one_store_each_use_their_own_connection(store: WorkflowStore) -> None:
    for i in range(4):
        store.create(f"w{i}", "app:flow", None, "n1")

    def run(i: int) -> None:
        for seq in range(1, 51):
            store.append(f"w{i}", seq, "step", "h", seq * i)

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(run, i) for i in range(4)]:
            f.result()
    for i in range(4):
        assert [j.result for j in store.journal(f"w{i}")] == [seq * i for seq in range(1, 51)]


# ---------------------------------------------------------------------------------------------- group commit
def test_append_many_writes_several_workflows_in_one_go(store: WorkflowStore) -> None:
    for wid in ("a", "b", "c"):
        store.create(wid, "app:flow", None, "n1")
    store.append("c", 1, "now", "h")
    refused = store.append_many(
        [Step("a", 1, "now", "h", 1), Step("b", 1, "now", "h", "x"), Step("a", 2, "call", "h", [1, 2]),
         Step("b", 2, "call", "h", b"\x01"), Step("c", 2, "now", "h", 3.0)]
    )
    assert refused == {}
    assert [(j.seq, j.result) for j in store.journal("a")] == [(1, 1), (2, [1, 2])]
    assert [(j.seq, j.result) for j in store.journal("b")] == [(1, "x"), (2, b"\x01")]
    assert [j.seq for j in store.journal("c")] == [1, 2]
    assert store.append_many([]) == {}


def test_append_many_refuses_one_workflow_without_holding_back_the_others(store: WorkflowStore) -> None:
    for wid in ("ok", "dup", "gap", "done", "bad", "unordered"):
        store.create(wid, "app:flow", None, "n1")
    store.append("dup", 1, "now", "h", "first")
    store.finish("done", "completed")
    refused = store.append_many(
        [Step("ok", 1, "now", "h", 1), Step("dup", 1, "now", "h", "second"), Step("gap", 2, "now", "h"),
         Step("done", 1, "now", "h"), Step("ghost", 1, "now", "h"), Step("bad", 1, "now", "h", {1, 2}),
         Step("unordered", 1, "now", "h"), Step("unordered", 3, "now", "h"), Step("ok", 2, "now", "h", 2)]
    )
    assert set(refused) == {"dup", "gap", "done", "ghost", "bad", "unordered"}
    assert isinstance(refused["dup"], JournalConflict) and "step 1 is already" in str(refused["dup"])
    assert isinstance(refused["gap"], JournalConflict) and "would leave a gap" in str(refused["gap"])
    assert isinstance(refused["done"], WorkflowFinished)
    assert isinstance(refused["ghost"], UnknownWorkflow)
    assert isinstance(refused["bad"], PayloadError) and "$ is a set" in str(refused["bad"])
    assert "must be consecutive" in str(refused["unordered"])
    assert [j.result for j in store.journal("ok")] == [1, 2]
    assert [j.result for j in store.journal("dup")] == ["first"]
    for wid in ("gap", "bad", "unordered"):
        assert store.journal(wid) == []


# ---------------------------------------------------------------------------------------------- signals
def test_signals_are_numbered_per_workflow_and_read_back(store: WorkflowStore, clock: FakeTime) -> None:
    store.create("w", "app:flow", None, "n1")
    store.create("v", "app:flow", None, "n1")
    assert store.signal("w", "approve", {"by": "ann"}) == 1
    clock.advance(1)
    assert store.signal("w", "note", b"\xfe\xff") == 2
    assert store.signal("v", "approve") == 1
    assert store.signals("w") == [
        SignalRecord("w", 1, "approve", {"by": "ann"}, clock.t - 1),
        SignalRecord("w", 2, "note", b"\xfe\xff", clock.t),
    ]
    assert [s.seq for s in store.signals("w", after_seq=1)] == [2]
    assert store.signals("w", after_seq=2) == []
    rec = store.get("w")
    assert rec is not None and rec.signals == 2 and rec.steps == 0


def test_a_signal_to_an_unknown_or_finished_workflow_is_refused(store: WorkflowStore) -> None:
    with pytest.raises(UnknownWorkflow, match="no workflow has the ID 'ghost' \\(cannot take the signal 'go'\\)"):
        store.signal("ghost", "go")
    with pytest.raises(UnknownWorkflow):
        store.signals("ghost")
    store.create("w", "app:flow", None, "n1")
    store.signal("w", "go", 1)
    store.finish("w", "cancelled", error="stopped by the user")
    refused = r"already finished \(cancelled\), so it cannot take the signal 'go'"
    with pytest.raises(WorkflowFinished, match=refused) as info:
        store.signal("w", "go", 2)
    assert info.value.status == "cancelled"
    assert [s.payload for s in store.signals("w")] == [1]


# ---------------------------------------------------------------------------------------------- finish
def test_finish_once_with_result_or_error(store: WorkflowStore, clock: FakeTime) -> None:
    for wid in ("ok", "bad", "stop"):
        store.create(wid, "app:flow", None, "n1")
    clock.advance(3)
    rec = store.finish("ok", "completed", {"total": 42})
    assert (rec.status, rec.result, rec.error, rec.updated_at, rec.finished) == ("completed", {"total": 42}, None,
                                                                               clock.t, True)
    assert store.finish("bad", "failed", error="boom at line 3").error == "boom at line 3"
    assert store.finish("stop", "cancelled", error={"reason": "user"}).status == "cancelled"
    twice = r"workflow 'ok' has already finished \(completed\), so it cannot finish"
    with pytest.raises(WorkflowFinished, match=twice):
        store.finish("ok", "failed", error="late")
    assert store.get("ok") == rec
    with pytest.raises(UnknownWorkflow):
        store.finish("ghost", "completed")
    store.create("w", "app:flow", None, "n1")
    for status in ("running", "done"):
        with pytest.raises(ValueError, match="status must be one of completed, failed, cancelled"):
            store.finish("w", status)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- leases
def test_a_dead_nodes_workflows_are_claimed_after_the_ttl(store: WorkflowStore, clock: FakeTime) -> None:
    store.create("w1", "app:flow", None, "n1")
    clock.advance(1)
    store.create("w2", "app:flow", None, "n1")
    store.create("done", "app:flow", None, "n1")
    store.finish("done", "completed")
    store.heartbeat("n1")
    clock.advance(TTL - 1)
    assert store.claim_orphans("n2", TTL) == []  # n1 beat 29 s ago: alive
    clock.advance(2)
    assert store.claim_orphans("n2", TTL) == ["w1", "w2"]  # oldest first; finished ones never
    assert {r.workflow_id: r.owner for r in store.list()} == {"w1": "n2", "w2": "n2", "done": "n1"}
    assert store.claim_orphans("n3", TTL) == []  # n2 claimed them just now, which counts as its heartbeat
    assert store.nodes() == {"n1": clock.t - TTL - 1, "n2": clock.t, "n3": clock.t}


def test_a_node_that_lost_its_lease_is_fenced(store: WorkflowStore, clock: FakeTime) -> None:
    store.create("w", "app:flow", None, "n1")
    store.append("w", 1, "now", "h", node_id="n1")
    clock.advance(TTL + 1)
    assert store.claim_orphans("n2", TTL) == ["w"]
    with pytest.raises(LeaseLost, match="workflow 'w' is owned by node 'n2', not by node 'n1'") as info:
        store.append("w", 2, "now", "h", node_id="n1")
    assert isinstance(info.value, JournalConflict) and info.value.owner == "n2"
    assert "stop running it here" in str(info.value)
    with pytest.raises(LeaseLost):
        store.finish("w", "completed", node_id="n1")
    store.append("w", 2, "now", "h", node_id="n2")
    assert store.finish("w", "completed", 7, node_id="n2").result == 7


def test_claim_orphans_takes_at_most_limit(store: WorkflowStore, clock: FakeTime) -> None:
    for i in range(5):
        store.create(f"w{i}", "app:flow", None, "n1")
        clock.advance(0.1)
    clock.advance(TTL + 1)
    assert store.claim_orphans("n2", TTL, limit=2) == ["w0", "w1"]
    assert store.claim_orphans("n3", TTL, limit=10) == ["w2", "w3", "w4"]


def test_release_hands_workflows_over_at_once(store: WorkflowStore) -> None:
    store.create("w1", "app:flow", None, "n1")
    store.create("w2", "app:flow", None, "n1")
    store.create("x", "app:flow", None, "n2")
    store.finish("w2", "failed", error="e")
    assert store.release("n1") == ["w1"]
    assert "n1" not in store.nodes()
    rec = store.get("w1")
    assert rec is not None and rec.owner is None
    assert store.get("w2").owner == "n1"  # type: ignore[union-attr]  # a finished one keeps its last owner
    with pytest.raises(LeaseLost, match="was released by its owner"):
        store.append("w1", 1, "now", "h", node_id="n1")
    assert store.claim_orphans("n3", TTL) == ["w1"]  # no TTL to wait for


def test_claim_one_workflow(store: WorkflowStore, clock: FakeTime) -> None:
    store.create("w", "app:flow", None, "n1")
    assert store.claim("w", "n2", TTL) is False  # n1 is alive
    assert store.claim("w", "n1", TTL) is True  # its own
    clock.advance(TTL + 1)
    assert store.claim("w", "n2", TTL) is True
    assert store.get("w").owner == "n2"  # type: ignore[union-attr]
    assert store.claim("w", "n1", TTL) is False  # n2 claimed it just now
    with pytest.raises(UnknownWorkflow):
        store.claim("ghost", "n1", TTL)
    store.finish("w", "completed")
    with pytest.raises(WorkflowFinished, match="cannot be claimed"):
        store.claim("w", "n1", TTL)


def test_two_claimers_at_once_never_get_the_same_workflow(target: str, clock: FakeTime) -> None:
    """Two nodes (two connections) claim the same orphans at the same moment, round after round: every
    orphan goes to exactly one of them."""
    a, b = open_store(target, now=clock), open_store(target, now=clock)
    try:
        ids = [f"w{i:03}" for i in range(60)]
        for wid in ids:
            a.create(wid, "app:flow", None, "dead")
        clock.advance(TTL + 1)  # "dead" never beat again: all its workflows are orphans
        for _round in range(12):
            # (from the second round on) both hand everything back: every workflow is an orphan again
            a.release("na")
            a.release("nb")
            start = threading.Barrier(2)

            def claim(s: WorkflowStore, node: str, start: threading.Barrier = start) -> list[str]:
                start.wait()
                got: list[str] = []
                while batch := s.claim_orphans(node, TTL, limit=7):
                    got += batch
                return got

            with ThreadPoolExecutor(2) as pool:
                fa, fb = pool.submit(claim, a, "na"), pool.submit(claim, b, "nb")
                got_a, got_b = fa.result(), fb.result()
            assert not set(got_a) & set(got_b)
            assert sorted(got_a + got_b) == ids
            owners = {r.workflow_id: r.owner for r in a.list()}
            assert all(owners[w] == "na" for w in got_a) and all(owners[w] == "nb" for w in got_b)
    finally:
        a.close()
        b.close()


def test_without_a_clock_the_store_uses_real_time(target: str) -> None:
    with open_store(target) as s:
        before = time.time()
        s.heartbeat("n1")
        assert abs(s.nodes()["n1"] - before) < 5  # the server's clock on PostgreSQL: same machine here


# ---------------------------------------------------------------------------------------------- values
_ints = st.integers(-(2**63), 2**63 - 1)
_text = st.text() | st.text(st.characters(categories=["Cs"]))  # lone surrogates, as Python can hold them
_scalars = st.none() | st.booleans() | _ints | st.floats() | _text | st.binary()
_keys = st.text() | _ints | st.binary() | st.floats(allow_nan=False) | st.just("$t")
values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4)
    | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


@given(values)
@settings(max_examples=300, deadline=None)
def test_value_codec_round_trips_exactly(value: Any) -> None:
    text = encode_value(value)
    assert "\x00" not in text and text.isascii()
    assert same(decode_value(text), value)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({1, 2}, "$ is a set"),
        ({"a": [1, object()]}, "$.a[2] is a object"),
        ({(1, 2): "x"}, "$ has a key of type tuple"),
        ([2**64], "$[1] is an integer outside Lua's 64-bit range"),
    ],
)
def test_a_value_that_is_not_plain_data_is_refused_with_its_path(value: Any, path: str) -> None:
    with pytest.raises(PayloadError, match=r"^where: " + path.replace("[", r"\[").replace("$", r"\$")):
        encode_value(value, "where")


def test_too_deep_a_value_is_refused() -> None:
    v: Any = 1
    for _ in range(70):
        v = [v]
    with pytest.raises(PayloadError, match="nested deeper than 64"):
        encode_value(v)


@given(value=values)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_values_round_trip_through_the_store(store: WorkflowStore, value: Any) -> None:
    wid = f"w{id(value)}-{time.perf_counter_ns()}"
    store.create(wid, "app:flow", value, "n1")
    store.append(wid, 1, "call", "h", value)
    store.append_many([Step(wid, 2, "call", "h", value)])
    store.signal(wid, "t", value)
    store.finish(wid, "failed", result=value, error=value)
    rec = store.get(wid)
    assert rec is not None
    assert same(rec.input, value) and same(rec.error, value)
    assert value is None or same(rec.result, value)
    assert all(same(j.result, value) for j in store.journal(wid))
    assert same(store.signals(wid)[0].payload, value)


def test_an_unstorable_value_writes_nothing(store: WorkflowStore) -> None:
    with pytest.raises(PayloadError, match=r"workflow 'w': input: \$\[1\] is a object"):
        store.create("w", "app:flow", {1: object()}, "n1")
    assert store.get("w") is None
    store.create("w", "app:flow", None, "n1")
    with pytest.raises(PayloadError, match=r"workflow 'w', step 1: result: \$\.f is a function"):
        store.append("w", 1, "call", "h", {"f": lambda: 1})
    with pytest.raises(PayloadError, match="signal 'go' payload"):
        store.signal("w", "go", {1, 2})
    rec = store.get("w")
    assert rec is not None and (rec.steps, rec.signals) == (0, 0)
    store.append("w", 1, "call", "h", "fine")  # step 1 is still the next one


# ---------------------------------------------------------------------------------------------- corruption
def test_a_corrupted_step_is_reported_and_left_as_it_is(store: WorkflowStore, target: str) -> None:
    store.create("w", "app:flow", None, "n1")
    for seq in (1, 2, 3):
        store.append("w", seq, "call", "h", seq)
    raw_sql(target, "UPDATE wippy_journal SET result = ? WHERE workflow_id = ? AND seq = ?", ('{"$t":"b","v":"%%"}',
                                                                                              "w", 2))
    with pytest.raises(CorruptJournal) as info:
        store.journal("w")
    msg = str(info.value)
    assert "workflow 'w', step 2 cannot be read" in msg and "the row was left as it is" in msg
    assert store.location in msg
    assert (info.value.workflow_id, info.value.seq) == ("w", 2)
    assert [j.seq for j in store.journal("w", after_seq=2)] == [3]  # the rest is readable
    store.append("w", 4, "call", "h", 4)  # and the journal goes on; nothing was rewritten
    assert raw_sql(target, "SELECT result FROM wippy_journal WHERE workflow_id = ? AND seq = ?", ("w", 2)) == [
        ('{"$t":"b","v":"%%"}',)
    ]


def test_a_missing_step_is_reported(store: WorkflowStore, target: str) -> None:
    store.create("w", "app:flow", None, "n1")
    for seq in (1, 2, 3):
        store.append("w", seq, "call", "h")
    raw_sql(target, "DELETE FROM wippy_journal WHERE workflow_id = ? AND seq = 3", ("w",))
    with pytest.raises(CorruptJournal, match="step 3 is missing from its journal \\(its record counts 3 steps\\)"):
        store.journal("w")
    raw_sql(target, "DELETE FROM wippy_journal WHERE workflow_id = ? AND seq = 1", ("w",))
    with pytest.raises(CorruptJournal, match="step 1 is missing from its journal \\(found 2\\)"):
        store.journal("w")


def test_a_step_row_its_record_does_not_count_is_never_overwritten(store: WorkflowStore, target: str) -> None:
    store.create("w", "app:flow", None, "n1")
    store.create("v", "app:flow", None, "n1")
    raw_sql(target, "INSERT INTO wippy_journal VALUES ('w', 1, 'forged', 'h', '\"by hand\"', 0)")
    with pytest.raises(CorruptJournal, match="step 1 is already in its journal although its record counts 0"):
        store.append("w", 1, "call", "h", "mine")
    refused = store.append_many([Step("w", 1, "call", "h"), Step("v", 1, "call", "h", "v1")])
    assert list(refused) == ["w"] and isinstance(refused["w"], CorruptJournal)
    assert [j.result for j in store.journal("v")] == ["v1"]  # the other workflow of the batch went through
    assert raw_sql(target, "SELECT op, result FROM wippy_journal WHERE workflow_id = 'w'") == [("forged", '"by hand"')]


def test_a_corrupted_workflow_record_is_reported(store: WorkflowStore, target: str) -> None:
    store.create("w", "app:flow", [1], "n1")
    raw_sql(target, "UPDATE wippy_workflows SET input = 'not json' WHERE workflow_id = 'w'")
    with pytest.raises(CorruptJournal, match=r"workflow 'w', its record \(input\) cannot be read") as info:
        store.get("w")
    assert info.value.seq is None
    with pytest.raises(CorruptJournal):
        store.list()


def test_a_corrupted_signal_is_reported(store: WorkflowStore, target: str) -> None:
    store.create("w", "app:flow", None, "n1")
    store.signal("w", "go", 1)
    raw_sql(target, "UPDATE wippy_signals SET payload = '{\"$t\":\"what\",\"v\":1}' WHERE workflow_id = 'w'")
    with pytest.raises(CorruptJournal, match=r"signal 1 cannot be read .*unknown value tag 'what'"):
        store.signals("w")


# ---------------------------------------------------------------------------------------------- opening
def test_a_store_of_another_schema_version_is_refused(target: str) -> None:
    open_store(target).close()
    raw_sql(target, "UPDATE wippy_store_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreOpenError, match="its schema is '99', not the one this runtime reads"):
        open_store(target)


def test_a_closed_store_says_so(store: WorkflowStore) -> None:
    store.create("w", "app:flow", None, "n1")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed: open it again with open_store"):
        store.get("w")


def test_sqlite_paths_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreOpenError, match=f"the directory {tmp_path / 'nope'} does not exist; create it first"):
        open_store(tmp_path / "nope" / "w.sqlite")
    with pytest.raises(StoreOpenError, match="it is a directory; give the path of a file"):
        open_store(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just bytes" * 100)
    with pytest.raises(StoreOpenError, match=r"cannot read it as a workflow store .*Move it away"):
        open_store(junk)
    assert junk.read_bytes().startswith(b"this is not a database")  # left as it was
    with pytest.raises(StoreOpenError, match="an in-memory store cannot be shared"):
        open_store(":memory:")


def test_sqlite_url_form(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite"
    with open_store(f"sqlite://{path}") as s:
        s.create("w", "app:flow", None, "n1")
        assert s.location == str(path)
    with open_store(path) as s:
        assert s.get("w") is not None


def test_unknown_scheme() -> None:
    with pytest.raises(StoreOpenError, match="unknown scheme 'mysql'; use a file path, sqlite:///path, or postgresql://"):
        open_store("mysql://root:hunter2@localhost/db")
    with pytest.raises(StoreOpenError) as info:
        open_store("redis://u:hunter2@localhost/0")
    assert "hunter2" not in str(info.value)


def test_an_unreachable_postgresql_server(pg_url: str) -> None:
    port = pg_server._free_port()
    url = f"postgresql://wippy:s3cret@127.0.0.1:{port}/db?connect_timeout=5"
    with pytest.raises(StoreOpenError) as info:
        open_store(url)
    msg = str(info.value)
    assert f"workflow store postgresql://wippy:***@127.0.0.1:{port}/db" in msg
    assert "cannot connect" in msg and "check that the server runs" in msg
    assert "s3cret" not in msg and "s3cret" not in str(info.value.location)


def test_a_missing_postgresql_database(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreOpenError, match=r'cannot connect .*database "no_such_db" does not exist'):
        open_store(url)


def test_a_missing_postgresql_schema(pg_url: str) -> None:
    with pytest.raises(StoreOpenError, match="no schema of the search_path exists"):
        open_store(pg_server.with_search_path(pg_url, "no_such_schema"))


# ---------------------------------------------------------------------------------------------- one backend
CHILD = """
import sys
from wippy.runtime.errors import JournalConflict
from wippy.runtime.workflow_store import open_store
store = open_store(sys.argv[1])
seen = store.get("shared").steps
print("ready", seen, flush=True)
sys.stdin.readline()
ok = 0
for _ in range(int(sys.argv[2])):
    try:
        store.append("shared", store.get("shared").steps + 1, "child", "h", {"by": "child"})
        ok += 1
    except JournalConflict:
        pass
store.close()
print(ok, flush=True)
"""


def test_a_second_process_on_the_same_sqlite_file(tmp_path: Path) -> None:
    """Another OS process opens the file, sees what this one wrote, and both append at once: the journal
    stays one unbroken sequence, with each step written by exactly one of them."""
    path = tmp_path / "shared.sqlite"
    with open_store(path) as store:
        store.create("shared", "app:flow", None, "n1")
        for seq in range(1, 6):
            store.append("shared", seq, "parent", "h", {"by": "parent"})
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "200"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().split() == ["ready", "5"]
            child.stdin.write("go\n")
            child.stdin.flush()
            ok = 0
            for _ in range(200):
                try:
                    store.append("shared", store.get("shared").steps + 1, "parent", "h", {"by": "parent"})  # type: ignore[union-attr]
                    ok += 1
                except JournalConflict:
                    pass
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == 0, err
        child_ok = int(out.split()[0])
        journal = store.journal("shared")
        assert [j.seq for j in journal] == list(range(1, 5 + ok + child_ok + 1))
        assert sum(j.op == "child" for j in journal) == child_ok
        assert all(j.result == {"by": j.op} for j in journal)


def test_a_broken_postgresql_connection_is_replaced(pg_url: str) -> None:
    import psycopg

    with pg_server.isolated_url(pg_url) as url, open_store(url + "&application_name=wippy_broken") as store:
        store.create("w", "app:flow", None, "n1")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wippy_broken'"
            ).fetchall()
        assert killed == [(True,)]
        with pytest.raises(StoreError, match=r"the connection was lost .*the next call connects again"):
            store.append("w", 1, "now", "h")
        store.append("w", 1, "now", "h")
        assert [j.seq for j in store.journal("w")] == [1]


def _in_a_new_thread(fn: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def test_a_thread_that_cannot_connect_gets_a_store_error_sqlite(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "w.sqlite"
    with open_store(path) as store:
        store.create("w", "app:flow", None, "n1")
        shutil.rmtree(tmp_path / "data")  # the directory went away behind the store's back
        with pytest.raises(StoreError, match=r"cannot open it \(unable to open database file\); check the path"):
            _in_a_new_thread(lambda: store.get("w"))


def test_a_thread_that_cannot_connect_gets_a_store_error_postgresql(pg_url: str) -> None:
    import psycopg

    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE wippy_closing")
        try:
            with open_store(f"{base}/wippy_closing") as store:
                store.create("w", "app:flow", None, "n1")
                admin.execute("ALTER DATABASE wippy_closing ALLOW_CONNECTIONS false")
                with pytest.raises(StoreError, match=r"cannot connect .*not currently accepting connections"):
                    _in_a_new_thread(lambda: store.get("w"))
                assert store.get("w") is not None  # this thread's connection still works
        finally:
            admin.execute("DROP DATABASE wippy_closing WITH (FORCE)")


def test_without_postgresql_the_fixture_fails_saying_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIPPY_PG_BIN", raising=False)
    monkeypatch.setattr(pg_server.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg_server.shutil, "which", lambda name: None)
    with pytest.raises(pg_server.PostgresNotFound, match=r"run scripts/ensure-postgres\.sh") as info:
        pg_server.find_bin_dir()

    @contextlib.contextmanager
    def missing() -> Iterator[pg_server.PostgresServer]:
        raise info.value
        yield  # pragma: no cover

    monkeypatch.setattr(pg_server, "shared_postgres", missing)
    with pytest.raises(pytest.fail.Exception, match=r"run scripts/ensure-postgres\.sh"):  # a failure, not a skip
        next(pg_server.serve_url())
    monkeypatch.setenv("WIPPY_PG_BIN", "/nowhere")
    with pytest.raises(pg_server.PostgresNotFound, match="WIPPY_PG_BIN=/nowhere holds no initdb"):
        pg_server.find_bin_dir()


def test_records_are_frozen(store: WorkflowStore) -> None:
    _, rec = store.create("w", "app:flow", None, "n1")
    with pytest.raises(AttributeError):
        rec.status = "completed"  # type: ignore[misc]


def test_every_store_error_is_a_wippy_error() -> None:
    for cls in (StoreOpenError, UnknownWorkflow, WorkflowFinished, JournalConflict, LeaseLost, CorruptJournal):
        assert issubclass(cls, StoreError) and issubclass(cls, WippyError)

