"""The versioned registry: transactions all or nothing, history, diff, rollback, SQLite persistence."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wippy.runtime import EntryError, WippyError
from wippy.runtime.entries import Entry
from wippy.runtime.registry import (
    SNAPSHOT_EVERY,
    Change,
    ChangeSet,
    Registry,
    RegistryStoreError,
    Version,
)


def data_entry(entry_id: str, value: object = 1, **meta: object) -> Entry:
    return Entry(entry_id, "registry.entry", dict(meta), {"value": value})


def lua_entry(entry_id: str, source: str = "return 1") -> Entry:
    return Entry(entry_id, "function.lua", {}, {"source": source})


@pytest.fixture
def reg() -> Iterator[Registry]:
    r = Registry()
    yield r
    r.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


# ------------------------------------------------------------------ the EntryTable calls
def test_entry_table_calls(reg: Registry) -> None:
    """get/require/unknown_message/entries/ids/apply/version behave as EntryTable's."""
    assert reg.version == 0 and reg.entries() == [] and reg.ids() == []
    assert reg.get("app:a") is None
    with pytest.raises(EntryError, match="unknown entry 'app:a'; no entries are loaded"):
        reg.require("app:a")
    v = reg.apply([data_entry("app:a"), data_entry("app:b"), data_entry("lib:c")])
    assert v == 1 == reg.version
    assert reg.ids() == ["app:a", "app:b", "lib:c"]
    assert [e.id for e in reg.entries()] == ["app:a", "app:b", "lib:c"]
    assert reg.require("app:a") == data_entry("app:a")
    assert reg.unknown_message("app:x") == "unknown entry 'app:x'; entries: app:a, app:b"
    assert reg.unknown_message("zz:x") == "unknown entry 'zz:x'; entries: app:a, app:b, lib:c"
    # create-or-update, then delete, as one version
    assert reg.apply([data_entry("app:a", 2)], delete=["app:b"]) == 2
    assert reg.get("app:a") == data_entry("app:a", 2) and reg.get("app:b") is None
    with pytest.raises(EntryError, match="cannot delete 'app:zz': no such entry"):
        reg.apply(delete=["app:zz"])
    with pytest.raises(EntryError, match="unknown kind"):
        reg.apply([Entry("app:k", "no.such.kind")])
    with pytest.raises(EntryError, match="invalid entry ID"):
        reg.apply([data_entry("nocolon")])
    assert reg.version == 2


def test_unknown_message_truncates(reg: Registry) -> None:
    reg.apply([data_entry(f"app:e{i}") for i in range(10)])
    assert reg.unknown_message("app:x").endswith(" ...")


def test_empty_transaction_makes_no_version(reg: Registry) -> None:
    assert reg.apply() == 0
    assert reg.changes().apply() == 0
    reg.apply([data_entry("app:a")])
    assert reg.apply([data_entry("app:a")]) == 1  # the same entry again: nothing changes
    assert reg.changes().create(data_entry("app:b")).delete("app:b").apply() == 1
    assert len(reg.history()) == 1


def test_entries_are_private_copies(reg: Registry) -> None:
    """A caller mutating its entry's dicts after apply does not rewrite the registry or its history."""
    e = data_entry("app:a", [1, 2])
    reg.apply([e])
    e.data["value"].append(3)  # type: ignore[attr-defined]
    assert reg.require("app:a").data["value"] == [1, 2]
    assert reg.version_entries(1)["app:a"].data["value"] == [1, 2]


def test_unstorable_value_refused(reg: Registry) -> None:
    with pytest.raises(EntryError, match=r"entry 'app:a': data\.value holds a set value"):
        reg.apply([data_entry("app:a", {1, 2})])
    with pytest.raises(EntryError, match=r"entry 'app:a': meta\.owner holds a object value"):
        reg.apply([data_entry("app:a", owner=object())])
    assert reg.version == 0 and reg.entries() == []


# ------------------------------------------------------------------ transactions
def test_changes_builder(reg: Registry) -> None:
    v = reg.changes().create(data_entry("app:a")).create(lua_entry("app:f")).apply(message="first")
    assert v == 1
    ch = reg.changes()
    ch.update(data_entry("app:a", 5)).delete("app:f").create(data_entry("app:g"))
    assert len(ch) == 3
    assert ch.apply(message="second") == 2
    assert reg.ids() == ["app:a", "app:g"]
    assert reg.history() == [
        Version(1, reg.history()[0].time, "first", (("create", "app:a", "registry.entry"),
                                                    ("create", "app:f", "function.lua"))),
        Version(2, reg.history()[1].time, "second", (("update", "app:a", "registry.entry"),
                                                     ("delete", "app:f", "function.lua"),
                                                     ("create", "app:g", "registry.entry"))),
    ]
    assert reg.version_changes(2) == [
        Change("update", "app:a", "registry.entry", data_entry("app:a"), data_entry("app:a", 5)),
        Change("delete", "app:f", "function.lua", lua_entry("app:f"), None),
        Change("create", "app:g", "registry.entry", None, data_entry("app:g")),
    ]
    assert reg.version_changes(0) == []


def test_changes_refusals(reg: Registry) -> None:
    reg.apply([data_entry("app:a")])
    ch = reg.changes()
    with pytest.raises(EntryError, match="cannot create 'app:a': the entry exists"):
        ch.create(data_entry("app:a"))
    with pytest.raises(EntryError, match="cannot update 'app:b': no such entry"):
        ch.update(data_entry("app:b"))
    with pytest.raises(EntryError, match="cannot delete 'app:b': no such entry"):
        ch.delete("app:b")
    with pytest.raises(EntryError, match="needs `source:`"):
        ch.create(Entry("app:f", "function.lua"))
    # staged operations count: delete then create is allowed, create twice is not
    ch.delete("app:a").create(data_entry("app:a", 9))
    with pytest.raises(EntryError, match="exists"):
        ch.create(data_entry("app:a"))
    assert ch.apply() == 2
    assert reg.version_changes(2) == [
        Change("update", "app:a", "registry.entry", data_entry("app:a"), data_entry("app:a", 9))
    ]
    with pytest.raises(EntryError, match="already applied"):
        ch.apply()
    with pytest.raises(EntryError, match="already applied"):
        ch.create(data_entry("app:z"))


def test_conflict_detected_at_apply(reg: Registry) -> None:
    """A builder rechecks under the lock: another transaction may have changed the entries meanwhile."""
    first = reg.changes().create(data_entry("app:a"))
    reg.apply([data_entry("app:a", 2)])
    with pytest.raises(EntryError, match="cannot create 'app:a'"):
        first.apply()
    upd = reg.changes().update(data_entry("app:a", 3))
    dele = reg.changes().delete("app:a")
    dele.apply()
    with pytest.raises(EntryError, match="cannot update 'app:a'"):
        upd.apply()
    again = reg.changes().create(data_entry("app:b"))
    reg.apply([data_entry("app:b")])
    with pytest.raises(EntryError, match="cannot delete 'app:b'"):
        reg.changes().delete("app:b").delete("app:b")
    with pytest.raises(EntryError, match="cannot create 'app:b'"):
        again.apply()
    dz = reg.changes().delete("app:b")
    reg.apply(delete=["app:b"])
    with pytest.raises(EntryError, match="cannot delete 'app:b'"):
        dz.apply()
    assert reg.version == 4


def test_validator_sees_changeset_and_refuses(db: Path) -> None:
    seen: list[ChangeSet] = []

    def no_secret(cs: ChangeSet) -> None:
        seen.append(cs)
        for c in cs.changes:
            if c.after is not None and c.after.meta.get("secret"):
                raise EntryError(f"entry '{c.id}': secret entries are refused (drop meta.secret)")

    with Registry(db) as reg:
        reg.add_validator(no_secret)
        reg.apply([data_entry("app:a")], message="one")
        cs = seen[-1]
        assert cs.version == 1 and cs.message == "one" and dict(cs.before) == {}
        assert dict(cs.after) == {"app:a": data_entry("app:a")}
        with pytest.raises(TypeError):
            cs.after["x"] = data_entry("app:x")  # type: ignore[index]
        notified: list[frozenset[str]] = []
        reg.subscribe(notified.append)
        ch = reg.changes().update(data_entry("app:a", 2)).create(data_entry("app:s", secret=True))
        with pytest.raises(EntryError, match="entry 'app:s': secret entries are refused"):
            ch.apply()
        with pytest.raises(EntryError, match="secret"):
            reg.apply([data_entry("app:b"), data_entry("app:s", secret=True)])
        with pytest.raises(EntryError, match="secret"):
            reg.changes().create(data_entry("app:t", secret=True)).apply()
        # nothing changed in memory, nothing notified
        assert reg.version == 1 and reg.ids() == ["app:a"] and reg.require("app:a") == data_entry("app:a")
        assert len(reg.history()) == 1 and notified == []
        # the refused builder can be fixed and applied
        ok = reg.changes().update(data_entry("app:a", 2))
        assert ok.apply() == 2
    with Registry(db) as again:  # nor in the file
        assert again.version == 2 and again.ids() == ["app:a"]
        assert again.require("app:a") == data_entry("app:a", 2)


def test_validator_refuses_rollback(reg: Registry) -> None:
    reg.apply([data_entry("app:a")])
    reg.apply(delete=["app:a"])

    def keep_deleted(cs: ChangeSet) -> None:
        if any(c.op == "create" for c in cs.changes):
            raise EntryError("entry 'app:a': creates are frozen")

    reg.add_validator(keep_deleted)
    with pytest.raises(EntryError, match="creates are frozen"):
        reg.apply_version(1)
    assert reg.version == 2 and reg.entries() == []


def test_validator_may_read_registry(reg: Registry) -> None:
    """Validators run under the (re-entrant) lock and may read the registry."""
    reads: list[int] = []
    reg.add_validator(lambda cs: reads.append(reg.version))
    reg.apply([data_entry("app:a")])
    assert reads == [0]


# ------------------------------------------------------------------ subscribe
def test_subscribe_gets_changed_ids(reg: Registry) -> None:
    got: list[tuple[frozenset[str], str]] = []
    reg.subscribe(lambda ids: got.append((ids, threading.current_thread().name)))
    reg.apply([data_entry("app:a"), data_entry("app:b")])
    reg.changes().update(data_entry("app:a", 2)).delete("app:b").apply()
    reg.apply([data_entry("app:a", 2)])  # no change, no notification
    reg.apply_version(1)
    t = threading.Thread(target=lambda: reg.apply([data_entry("app:t")]), name="committer")
    t.start()
    t.join()
    reg.reset()
    me = threading.current_thread().name
    assert got == [
        (frozenset({"app:a", "app:b"}), me),
        (frozenset({"app:a", "app:b"}), me),
        (frozenset({"app:a", "app:b"}), me),
        (frozenset({"app:t"}), "committer"),
        (frozenset({"app:a", "app:b", "app:t"}), me),
    ]


# ------------------------------------------------------------------ versions
def test_history_diff_apply_version() -> None:
    clock = iter(range(100, 200))
    reg = Registry(now=lambda: float(next(clock)))
    reg.apply([data_entry("app:a"), data_entry("app:b")], message="v1")
    reg.changes().update(data_entry("app:a", 2)).delete("app:b").apply(message="v2")
    reg.changes().create(lua_entry("app:c")).apply()
    assert [(h.version, h.time, h.message) for h in reg.history()] == [(1, 100.0, "v1"), (2, 101.0, "v2"),
                                                                       (3, 102.0, None)]
    assert reg.version_entries(0) == {}
    assert reg.version_entries(1) == {"app:a": data_entry("app:a"), "app:b": data_entry("app:b")}
    assert reg.version_entries(3) == {"app:a": data_entry("app:a", 2), "app:c": lua_entry("app:c")}
    assert reg.diff(1, 3) == [
        Change("update", "app:a", "registry.entry", data_entry("app:a"), data_entry("app:a", 2)),
        Change("delete", "app:b", "registry.entry", data_entry("app:b"), None),
        Change("create", "app:c", "function.lua", None, lua_entry("app:c")),
    ]
    assert reg.diff(3, 1) == [
        Change("update", "app:a", "registry.entry", data_entry("app:a", 2), data_entry("app:a")),
        Change("create", "app:b", "registry.entry", None, data_entry("app:b")),
        Change("delete", "app:c", "function.lua", lua_entry("app:c"), None),
    ]
    assert reg.diff(2, 2) == [] and len(reg.diff(0, 3)) == 2 and len(reg.diff(3, 0)) == 2
    # rollback: a new version equal to version 1, whose delta is diff(3, 1)
    assert reg.apply_version(1) == 4
    assert reg.version_entries(4) == reg.version_entries(1)
    assert reg.version_changes(4) == reg.diff(3, 1)
    assert reg.history()[-1].message == "apply version 1"
    # roll forward to 3 again; to the current one: nothing
    assert reg.apply_version(3, message="forward") == 5
    assert reg.version_entries(5) == reg.version_entries(3) and reg.history()[-1].message == "forward"
    assert reg.apply_version(5) == 5 and reg.apply_version(3) == 5
    assert reg.apply_version(0) == 6 and reg.entries() == []
    reg.close()


def test_kind_change_is_an_update(reg: Registry) -> None:
    reg.apply([data_entry("app:a")])
    reg.apply([lua_entry("app:a")])
    assert reg.version_changes(2) == [
        Change("update", "app:a", "function.lua", data_entry("app:a"), lua_entry("app:a"))
    ]


def test_unknown_versions(reg: Registry) -> None:
    with pytest.raises(EntryError, match=r"unknown registry version 1: only version 0 \(empty\) exists"):
        reg.version_entries(1)
    reg.apply([data_entry("app:a")])
    reg.apply([data_entry("app:b")])
    for bad in (3, -1, True, "1"):
        with pytest.raises(EntryError, match=r"known versions are 0 \(empty\) to 2"):
            reg.version_entries(bad)  # type: ignore[arg-type]
    with pytest.raises(EntryError, match="unknown registry version 7"):
        reg.apply_version(7)
    with pytest.raises(EntryError, match="unknown registry version 9"):
        reg.diff(0, 9)
    with pytest.raises(EntryError, match="unknown registry version 9"):
        reg.version_changes(9)
    assert reg.version == 2


def test_snapshots_do_not_change_answers(reg: Registry) -> None:
    n = SNAPSHOT_EVERY * 2 + 5
    for i in range(n):
        reg.apply([data_entry("app:a", i)], delete=["app:b"] if i % 2 else [])
        if i % 2 == 0:
            reg.apply([data_entry("app:b", i)])
    for v in (SNAPSHOT_EVERY, SNAPSHOT_EVERY + 1, reg.version):
        model: dict[str, Entry] = {}
        for c in [c for k in range(1, v + 1) for c in reg.version_changes(k)]:
            if c.after is None:
                del model[c.id]
            else:
                model[c.id] = c.after
        assert reg.version_entries(v) == model


def test_reset(db: Path) -> None:
    with Registry(db) as reg:
        reg.apply([data_entry("app:a")])
        reg.apply([data_entry("app:b")])
        reg.reset()
        assert reg.version == 0 and reg.entries() == [] and reg.history() == []
        assert reg.apply([data_entry("app:c")]) == 1
    with Registry(db) as again:
        assert again.version == 1 and again.ids() == ["app:c"]
        again.reset()
    with Registry(db) as empty:
        assert empty.version == 0 and empty.history() == []


# ------------------------------------------------------------------ persistence
def test_persistence_restores_entries_and_history(db: Path) -> None:
    rich = Entry(
        "app.cfg:rich",
        "registry.entry",
        {"type": "config", "tags": ["a", "b"], "when": dt.date(2024, 5, 1)},
        {
            "n": 1, "f": 2.5, "b": True, "none": None, "s": "héllo ✓",
            "nested": {"list": [1, {"x": [2.0]}], "$t": "not a tag"},
            "ints": {1: "one", 2: "two"}, "tuple": (1, 2), "at": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
            "blob": b"\x00\xff",
        },
    )
    with Registry(db) as reg:
        reg.apply([rich, lua_entry("app:f", "return 'x'\n")], message="load")
        reg.changes().delete("app:f").apply(message="drop f")
        history = reg.history()
        snapshots = [reg.version_entries(v) for v in range(reg.version + 1)]
    with Registry(db) as again:
        assert again.version == 2 and again.history() == history
        assert [again.version_entries(v) for v in range(3)] == snapshots
        assert again.require("app.cfg:rich") == rich
        assert again.version_changes(2) == [Change("delete", "app:f", "function.lua",
                                                   lua_entry("app:f", "return 'x'\n"), None)]
        assert again.apply([data_entry("app:z")]) == 3
    with Registry(str(db)) as third:
        assert third.version == 3


def test_sqlite_settings(db: Path) -> None:
    with Registry(db) as reg:
        reg.apply([data_entry("app:a")])
        assert reg._db is not None
        assert reg._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reg._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def _raw(db: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute(sql, args)
    con.close()


def test_corrupted_row_is_reported_and_left(db: Path) -> None:
    with Registry(db) as reg:
        reg.apply([data_entry("app:a")])
        reg.apply([data_entry("app:b")])
    _raw(db, "UPDATE versions SET changes = '{not json' WHERE version = 2")
    before = db.read_bytes()
    with pytest.raises(RegistryStoreError, match=rf"registry file {db}: version 2 is corrupted") as err:
        Registry(db)
    assert isinstance(err.value, WippyError) and err.value.version == 2 and err.value.path == str(db)
    assert "left as it is" in str(err.value)
    assert db.read_bytes() == before
    con = sqlite3.connect(db)
    assert con.execute("SELECT changes FROM versions WHERE version = 2").fetchone()[0] == "{not json"
    con.close()


@pytest.mark.parametrize(
    "changes",
    [
        '{"op": "create"}',
        '[{"op": "create", "id": "app:x", "kind": "registry.entry", "before": null, "after": 5}]',
        '[{"op": "zap", "id": "app:x", "kind": "registry.entry", "before": null, "after": null}]',
        '[{"op": "delete", "id": "app:nope", "kind": "registry.entry", '
        '"before": {"id": "app:nope", "kind": "registry.entry", "meta": {}, "data": {}}, "after": null}]',
        '[{"op": "create", "id": "app:x", "kind": "registry.entry", "before": null, '
        '"after": {"id": "app:x", "kind": "registry.entry", "meta": {}, "data": {"v": {"$t": "??", "v": 1}}}}]',
    ],
)
def test_malformed_rows(db: Path, changes: str) -> None:
    with Registry(db) as reg:
        reg.apply([data_entry("app:a")])
        reg.apply([data_entry("app:b")])
    _raw(db, "UPDATE versions SET changes = ? WHERE version = 2", changes)
    with pytest.raises(RegistryStoreError, match="version 2 is corrupted"):
        Registry(db)


def test_missing_version_and_not_a_database(db: Path, tmp_path: Path) -> None:
    with Registry(db) as reg:
        for i in range(3):
            reg.apply([data_entry("app:a", i)])
    _raw(db, "DELETE FROM versions WHERE version = 2")
    with pytest.raises(RegistryStoreError, match="version 2 is missing"):
        Registry(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(RegistryStoreError, match=rf"registry file {junk}: cannot read it"):
        Registry(junk)
    assert junk.read_bytes() == b"this is not sqlite at all" * 100
    _raw(db, "UPDATE registry_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(RegistryStoreError, match="schema '99'"):
        Registry(db)


def test_write_failure_changes_nothing(db: Path) -> None:
    """A version another writer already took makes the insert fail: memory stays as it was."""
    with Registry(db) as reg, Registry(db) as other:
        reg.apply([data_entry("app:a")])
        with pytest.raises(RegistryStoreError, match="cannot write it"):
            other.apply([data_entry("app:b")])
        assert other.version == 0 and other.entries() == []


def test_closed_registry_refuses_commits(db: Path) -> None:
    reg = Registry(db)
    reg.apply([data_entry("app:a")])
    reg.close()
    reg.close()
    assert reg.require("app:a") == data_entry("app:a")
    with pytest.raises(RegistryStoreError, match="is closed"):
        reg.apply([data_entry("app:b")])
    with pytest.raises(RegistryStoreError, match="is closed"):
        reg.reset()
    assert reg.version == 1


# ------------------------------------------------------------------ threads
def test_threads_commit_consecutive_versions(db: Path) -> None:
    threads, per_thread = 8, 25
    with Registry(db) as reg:
        versions: list[int] = []
        notified: list[frozenset[str]] = []
        reg.subscribe(notified.append)
        lock = threading.Lock()
        barrier = threading.Barrier(threads)

        def work(t: int) -> None:
            barrier.wait()
            for i in range(per_thread):
                ch = reg.changes().create(data_entry(f"t{t}:e{i}"))
                if i:
                    ch.update(data_entry(f"t{t}:e{i - 1}", "done"))
                v = ch.apply(message=f"t{t}-{i}")
                with lock:
                    versions.append(v)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        total = threads * per_thread
        assert sorted(versions) == list(range(1, total + 1))
        assert reg.version == total and len(reg.ids()) == total and len(notified) == total
        assert [h.version for h in reg.history()] == list(range(1, total + 1))
        current = {e.id: e for e in reg.entries()}
    with Registry(db) as again:
        assert {e.id: e for e in again.entries()} == current


# ------------------------------------------------------------------ property
IDS = [f"app:e{i}" for i in range(5)]
entries_st = st.builds(
    Entry,
    st.sampled_from(IDS),
    st.just("registry.entry"),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-3, 3) | st.text(max_size=3), max_size=2),
    st.dictionaries(
        st.sampled_from(["x", "y"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=4),
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=2), kids, max_size=2),
            max_leaves=5,
        ),
        max_size=2,
    ),
)
step_st = st.one_of(
    st.tuples(st.just("tx"), st.lists(st.tuples(st.sampled_from(["put", "delete"]), entries_st), max_size=4)),
    st.tuples(st.just("rollback"), st.integers(min_value=0, max_value=1000)),
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, max_size=12))
def test_property_versions_match_a_model(
    steps: list[tuple[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("prop") / "r.db"
    models: list[dict[str, Entry]] = [{}]
    with Registry(path) as reg:
        for kind, arg in steps:
            current = dict(models[-1])
            if kind == "rollback":
                assert isinstance(arg, int)
                target = arg % len(models)
                v = reg.apply_version(target)
                if models[target] != current:
                    models.append(dict(models[target]))
            else:
                assert isinstance(arg, list)
                ch = reg.changes()
                staged = dict(current)
                for op, entry in arg:
                    if op == "delete":
                        if entry.id in staged:
                            ch.delete(entry.id)
                            del staged[entry.id]
                        else:
                            with pytest.raises(EntryError):
                                ch.delete(entry.id)
                    elif entry.id in staged:
                        ch.update(entry)
                        staged[entry.id] = entry
                    else:
                        ch.create(entry)
                        staged[entry.id] = entry
                v = ch.apply()
                if staged != current:
                    models.append(staged)
            assert v == len(models) - 1 == reg.version
            assert {e.id: e for e in reg.entries()} == models[-1]
        for i, model in enumerate(models):
            assert reg.version_entries(i) == model
            assert reg.diff(0, i) == [Change("create", k, e.kind, None, e) for k, e in sorted(model.items())]
        history = reg.history()
    with Registry(path) as again:
        assert again.history() == history
        for i, model in enumerate(models):
            assert again.version_entries(i) == model
        for i in range(len(models)):
            for j in range(len(models)):
                d = again.diff(i, j)
                after = dict(models[i])
                for c in d:
                    assert after.get(c.id) == c.before
                    if c.after is None:
                        del after[c.id]
                    else:
                        after[c.id] = c.after
                assert after == models[j]
