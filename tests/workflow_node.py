"""One node in its own OS process, for tests/test_workflow_recovery.py (and by hand).

    python tests/workflow_node.py --data-dir D --effects E [--store S] [--ttl 1] [--start WID]
                                  [--variant v1|changed] [--wait WID] [--timeout T] [--run-for T]

Defines the issue's workflow ``app.orders:flow`` (now → random → charge → receive "approval" → sleep 2 s →
ship → return everything) and its two Python activities, which record every attempt and apply each
idempotency key once in their own SQLite file ``E`` (the dedup table a real payment service would keep).
Starts the node on data directory ``D`` (store ``S``, default ``D/workflows.sqlite``; lease TTL ``--ttl``),
starts the workflow ``--start WID`` if asked, then waits for ``--wait WID`` and prints one line
``RESULT <json>`` (or ``FAILED <status> <error>``), or just runs ``--run-for`` seconds, and stops cleanly.

Fault injection: ``WIPPY_TEST_KILL_IN_CHARGE=1`` makes the charge activity SIGKILL its process right after
it applied its effect (before the engine could journal the result); ``WIPPY_TEST_KILL_AFTER_STEP=N`` is
the engine's own (runtime/workflow.py). The test kills the process itself for the other points.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wippy.runtime import Node

ENTRY = "app.orders:flow"

FLOW = """
return { main = function(order)
  local started = time.now():unix_nano()
  local r = math.random(1, 1000000000)
  local keys = {}
  for k in pairs({ delta = 1, alpha = 2, charlie = 3, bravo = 4, echo = 5 }) do keys[#keys + 1] = k end
  local order_keys = table.concat(keys, ",")
  local charged, err = funcs.call("app.pay:%(charge)s", order, 42, started, r, order_keys)
  if not charged then error("charge failed: " .. tostring(err)) end
  local approval = process.listen("approval"):receive()
  local slept = time.now():unix_nano()
  time.sleep("2s")
  local shipped = funcs.call("app.ship:ship", order)
  return { now = started, random = r, keys = order_keys, charge = charged, approval = approval,
           sleep_began = slept, ship = shipped }
end }
"""


def effects_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS effects(key TEXT PRIMARY KEY, activity TEXT, args TEXT, at REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS attempts(key TEXT, activity TEXT, pid INTEGER, at REAL)")
    return db


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--effects", required=True)
    ap.add_argument("--store")
    ap.add_argument("--ttl", type=float, default=1.0)
    ap.add_argument("--start")
    ap.add_argument("--wait")
    ap.add_argument("--variant", default="v1")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--run-for", type=float, default=0.0)
    args = ap.parse_args(argv)

    db = effects_db(args.effects)
    lock = threading.Lock()   # activities run on a thread pool
    kill_in_charge = os.environ.get("WIPPY_TEST_KILL_IN_CHARGE") == "1"

    def apply(activity: str, key: str | None, payload: Any) -> bool:
        """Record the attempt; apply the effect once per key. True when this call applied it."""
        now = time.time()
        with lock:
            db.execute("INSERT INTO attempts VALUES (?, ?, ?, ?)", (key, activity, os.getpid(), now))
            cur = db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?, ?)",
                             (key, activity, json.dumps(payload), now))
            return cur.rowcount == 1

    node = Node(output=None, data_dir=args.data_dir, workflow_store=args.store, workflow_ttl=args.ttl)

    @node.workflows.activity("app.pay:charge", retry={"max_attempts": 1})
    def charge(order: str, amount: int, started: int, r: int, keys: str, *, idempotency_key: str) -> Any:
        applied = apply("charge", idempotency_key, [order, amount, started, r, keys])
        if kill_in_charge:
            os.kill(os.getpid(), signal.SIGKILL)   # the effect is made; its result is never journaled
        return {"charged": amount, "key": idempotency_key, "applied": applied}

    @node.workflows.activity("app.pay:refund", retry={"max_attempts": 1})
    def refund(*a: Any, idempotency_key: str) -> Any:
        apply("refund", idempotency_key, list(a))
        return {"refunded": True}

    @node.workflows.activity("app.ship:ship", retry={"max_attempts": 1})
    def ship(order: str, *, idempotency_key: str) -> Any:
        applied = apply("ship", idempotency_key, [order])
        return {"shipped": order, "key": idempotency_key, "at": time.time(), "applied": applied}

    charge_name = "refund" if args.variant == "changed" else "charge"
    node.define(ENTRY, "workflow.lua", source=FLOW % {"charge": charge_name}, modules=["funcs"])
    node.start()
    try:
        if args.start:
            node.workflows.start(ENTRY, "order-42", workflow_id=args.start)
            print(f"STARTED {args.start}", flush=True)
        if args.wait:
            try:
                value = node.workflows.result(args.wait, timeout=args.timeout)
                print("RESULT " + json.dumps(value), flush=True)
            except Exception as exc:
                rec = node.workflows.get(args.wait)
                print(f"FAILED {rec.status} {type(exc).__name__}: {exc}", flush=True)
        elif args.run_for:
            time.sleep(args.run_for)
        else:
            while True:   # until killed
                time.sleep(1)
    finally:
        node.stop(grace=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
