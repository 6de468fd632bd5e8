"""The issue's recovery scenario, with real OS processes killed by SIGKILL.

Node A (tests/workflow_node.py, its own process) runs ``now → random → charge → receive "approval" →
sleep 2 s → ship → return everything``, where charge and ship are Python activities that apply each
idempotency key once in their own SQLite table. A is killed at one of four points; the approval is sent
while A is dead, through the store, from this process; node B finishes the workflow:

- on PostgreSQL, B is another node (another data directory, so another node ID) on the same store, which
  claims the workflow once A's lease (TTL 1 s) has expired;
- on SQLite, B is A restarted on the same data directory (the same node ID), which resumes it at once.

Then: ``now`` and ``random`` are A's journaled values, the journal has no gap and no duplicate, each
idempotency key was applied once, the approval was consumed once, ship ran at least 2 s after the sleep
began, pairs over string keys replayed in the same order, and restarting A afterwards changes nothing. A
script changed before recovery fails with a non-determinism error naming the step and both operations.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg_server
import pytest
from wippy.runtime.workflow_store import JournalRecord, WorkflowStore, open_store

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "workflow_node.py"
WID = "order-42"
OPS = ["now", "random", "call", "receive", "now", "sleep", "call"]
KEYS = "alpha,bravo,charlie,delta,echo"


@dataclass
class Setup:
    """Where A and B run: their data directories and the store they share."""

    backend: str
    store: str | None          # None: the default store in the data directory (SQLite)
    dir_a: Path
    dir_b: Path
    effects: Path

    def __post_init__(self) -> None:
        self.dir_a.mkdir(parents=True, exist_ok=True)
        self.dir_b.mkdir(parents=True, exist_ok=True)

    def open(self) -> WorkflowStore:
        return open_store(self.store or str(self.dir_a / "workflows.sqlite"))


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "sqlite":
        yield Setup("sqlite", None, tmp_path / "a", tmp_path / "a", tmp_path / "effects.sqlite")
    else:
        url = request.getfixturevalue("postgres_url")
        with pg_server.isolated_url(url) as isolated:
            yield Setup("postgresql", isolated, tmp_path / "a", tmp_path / "b", tmp_path / "effects.sqlite")


def run_node(setup: Setup, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(data_dir), "--effects", str(setup.effects), "--ttl", "1"]
    if setup.store:
        cmd += ["--store", setup.store]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WIPPY_")}
    full_env.update(env or {})
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def journal(setup: Setup) -> list[JournalRecord]:
    with setup.open() as store:
        try:
            return store.journal(WID)
        except LookupError:
            return []


def wait_until(what: str, pred: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"node exited with {proc.returncode}:\n{out}\n{err}"
    return out


def result_of(out: str) -> Any:
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"no result in the output:\n{out}")


def effects(setup: Setup) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(setup.effects)) as db:
        applied = db.execute("SELECT key, activity FROM effects ORDER BY key").fetchall()
        attempts = db.execute("SELECT key, activity FROM attempts ORDER BY at").fetchall()
    return applied, attempts


def crash_a(setup: Setup, point: str) -> list[JournalRecord]:
    """Start the workflow on A and SIGKILL A at ``point``; return the journal as A left it."""
    env: dict[str, str] = {}
    if point == "in_charge":
        env["WIPPY_TEST_KILL_IN_CHARGE"] = "1"
    elif point == "after_journal":
        env["WIPPY_TEST_KILL_AFTER_STEP"] = "3"   # right after the charge's result is durable
    a = run_node(setup, setup.dir_a, "--start", WID, env=env)
    try:
        if point in ("in_charge", "after_journal"):
            a.wait(20)
            assert a.returncode == -signal.SIGKILL, a.communicate()
        elif point == "in_receive":
            wait_until("A to wait for the approval", lambda: len(journal(setup)) >= 3)
            time.sleep(0.3)
            kill(a)
        elif point == "mid_sleep":
            wait_until("A to wait for the approval", lambda: len(journal(setup)) >= 3)
            with setup.open() as store:
                store.signal(WID, "approval", {"by": "alice"})   # A is alive: it polls the store
            wait_until("A to sleep", lambda: len(journal(setup)) >= 6)
            time.sleep(0.5)
            kill(a)
    finally:
        if a.poll() is None:
            kill(a)
        a.communicate()
    return journal(setup)


@pytest.mark.parametrize("point", ["in_charge", "after_journal", "in_receive", "mid_sleep"])
def test_recovery_after_sigkill(setup: Setup, point: str) -> None:
    """A dies at ``point``; B completes the workflow exactly as A would have."""
    left = crash_a(setup, point)
    expected_left = {"in_charge": 2, "after_journal": 3, "in_receive": 3, "mid_sleep": 6}[point]
    assert [r.op for r in left] == OPS[:expected_left]
    if point != "mid_sleep":
        with setup.open() as store:
            store.signal(WID, "approval", {"by": "alice"})   # while A is dead

    b = run_node(setup, setup.dir_b, "--wait", WID)
    res = result_of(finish(b))

    steps = journal(setup)
    assert [r.seq for r in steps] == list(range(1, 8))          # no gap, no duplicate
    assert [r.op for r in steps] == OPS
    assert [(r.op, r.args_hash, r.result) for r in steps[: len(left)]] == [
        (r.op, r.args_hash, r.result) for r in left
    ]                                                              # what A journaled was kept as it was
    assert res["now"] == left[0].result["v"]                       # replayed, not read again
    assert res["random"] == left[1].result["v"]
    assert res["keys"] == KEYS                                     # pairs: the same order in A and B
    assert res["approval"] == {"by": "alice"}
    assert res["charge"]["key"] == f"{WID}:3" and res["ship"]["key"] == f"{WID}:7"

    applied, attempts = effects(setup)
    assert applied == [(f"{WID}:3", "charge"), (f"{WID}:7", "ship")]   # each key applied once
    charge_attempts = [k for k, a in attempts if a == "charge"]
    # the charge ran again (same key) only when A died before its result was journaled
    assert charge_attempts == [f"{WID}:3"] * (2 if point == "in_charge" else 1)

    with setup.open() as store:
        sigs = store.signals(WID)
        rec = store.get(WID)
    assert len(sigs) == 1
    receives = [r for r in steps if r.op == "receive"]
    assert [r.result["v"]["s"] for r in receives] == [1]           # the approval consumed once
    deadline_ns = steps[5].result["v"]
    assert res["ship"]["at"] >= deadline_ns / 1e9                  # ship after the whole sleep
    assert 2_000_000_000 <= deadline_ns - res["sleep_began"] < 2_100_000_000
    assert rec is not None and rec.status == "completed"

    if point == "mid_sleep":
        # restarting A afterwards adds no effect: nothing to resume, nothing applied, nothing journaled
        again = run_node(setup, setup.dir_a, "--run-for", "1.5")
        finish(again)
        assert journal(setup) == steps
        assert effects(setup) == (applied, attempts)


def test_changed_script_fails_with_non_determinism(tmp_path: Path) -> None:
    """The workflow's code changed while A was dead: the replay stops at the step that differs."""
    setup = Setup("sqlite", None, tmp_path / "a", tmp_path / "a", tmp_path / "effects.sqlite")
    crash_a(setup, "in_receive")
    b = run_node(setup, setup.dir_b, "--wait", WID, "--variant", "changed")
    out = finish(b)
    assert "FAILED failed" in out, out
    assert ("non-determinism at step 3: the journal has 'call app.pay:charge' but the code asked for "
            "'call app.pay:refund'") in out
    applied, _ = effects(setup)
    assert applied == [(f"{WID}:3", "charge")]   # the refund never ran
    assert [r.op for r in journal(setup)] == OPS[:3]   # the journal is left as it was


def test_a_workflow_started_in_a_notebook_continues_after_restart_kernel(tmp_path: Path) -> None:
    """Restart kernel: the new kernel's node (same data directory, same node ID) resumes the workflow at
    once; it replays what it did and goes on."""
    from jupyter_client.kernelspec import find_kernel_specs
    from jupyter_client.manager import start_new_kernel

    if "wippy" not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "wippy.kernel", "install", "--sys-prefix"], check=True,
                       capture_output=True)
    env = {**os.environ, "WIPPY_DATA_DIR": str(tmp_path / "data"), "PYTHONWARNINGS": "error"}
    km, kc = start_new_kernel(kernel_name="wippy", startup_timeout=30, cwd=str(tmp_path), env=env)

    def run(code: str) -> str:
        out: list[str] = []

        def keep(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "execute_result":
                out.append(msg["content"]["data"]["text/plain"])
            elif msg["msg_type"] == "error":
                out.append("ERROR " + "\n".join(msg["content"]["traceback"]))

        reply = kc.execute_interactive(code, timeout=30, output_hook=keep)
        assert reply["content"]["status"] == "ok", out
        return out[-1] if out else ""

    try:
        run('node.define("app:nb", "workflow.lua", source="""return { main = function()\n'
            '  local t = time.now():unix_nano()\n'
            '  return { t = t, go = process.listen("go"):receive() } end }""")\n'
            'node.workflows.start("app:nb", workflow_id="nb-1")')
        run("import time\nwhile node.workflows.get('nb-1').steps < 1: time.sleep(0.02)")
        before = run("node.workflows.history('nb-1')[0].result")
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=30)
        assert run("node.workflows.pid('nb-1') is not None") == "True"   # resumed at start
        run("node.workflows.signal('nb-1', 'go', 'after restart')")
        got = run("sorted(node.workflows.result('nb-1', timeout=10).items())")
        assert got == f"[('go', 'after restart'), ('t', {before})]"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
