"""The order workflow's activities, and a node that runs them in a process of its own.

``charge`` and ``ship`` are Python activities: a workflow calls them with ``funcs.call`` and each call
carries an idempotency key (``"{workflow_id}:{seq}"``). They append what they did to a ledger (a JSON
lines file) and do nothing the second time they see a key, so a retried or replayed call cannot charge a
card twice. The ledger stands in for the payment provider and the carrier.

Run as a script, this file is a node of its own (``notebooks/05-workflows.ipynb`` starts it with
``subprocess.Popen``)::

    python shop.py STORE LEDGER [--start ID JSON]

It opens the workflow store STORE (a file, or a ``postgresql://`` URL: the store is what nodes share),
loads this folder's tree, registers the activities, starts workflow ID with input JSON if asked, prints
what it does (flushed), and runs until it is killed. Like any node, it heartbeats in the store and takes
over the workflows of nodes that went silent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class Ledger:
    """What the activities did, one JSON object a line, keyed by idempotency key (any thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def once(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``record`` under ``key`` unless the key is there already; return the stored record."""
        for e in self.entries():
            if e["key"] == key:
                return e
        entry = {"key": key, **record}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        return entry


def register(node: Any, ledger: Ledger) -> None:
    """Register ``app.orders:charge`` and ``app.orders:ship`` on ``node`` as Python activities."""

    @node.workflows.activity("app.orders:charge")
    def charge(order_id: str, amount: float, *, idempotency_key: str) -> dict[str, Any]:
        e = ledger.once(idempotency_key, {"op": "charge", "order": order_id, "amount": amount})
        return {"amount": e["amount"], "receipt": "rcpt-" + idempotency_key.replace(":", "-")}

    @node.workflows.activity("app.orders:ship")
    def ship(order_id: str, address: str, *, idempotency_key: str) -> dict[str, Any]:
        e = ledger.once(idempotency_key, {"op": "ship", "order": order_id, "address": address})
        return {"tracking": f"TRK-{e['order']}"}


def main(argv: list[str]) -> int:
    from wippy.runtime import Node

    store, ledger = argv[0], Ledger(argv[1])
    node = Node(output=None, workflow_store=store)
    node.load(HERE)
    register(node, ledger)
    node.start()
    print("node up", flush=True)
    if len(argv) >= 4 and argv[2] == "--start":
        wid = node.workflows.start("app.orders:flow", json.loads(argv[4]), workflow_id=argv[3])
        print(f"started workflow {wid}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
