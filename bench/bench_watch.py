"""Watched trees and the registry from Lua: edit-to-process latency, registry.get rate, big transactions.

    .venv/bin/python bench/bench_watch.py [--quick]

What is measured (figures only, nothing asserted):

* edit → process: a Lua process (``modules: [registry]``) waits on
  ``registry.changes({[".id"] = "b.config:settings"})`` and sends ``registry.get(...).data.x`` to a Python
  mailbox. The clock starts before ``_index.yaml`` is rewritten with a new ``x`` and stops when the
  mailbox receives that value: inotify + the watcher's debounce + ``load_tree`` + one transaction + the
  change event + the Lua ``get``. 100 edits, one at a time; p50/p99 for the default debounce (0.1 s,
  target p99 ≤ 150 ms) and for 0.02 s (what the debounce itself costs).
* registry.get/s: one Lua process calls ``registry.get`` N times in a loop; N / the wall time of
  ``node.exec`` (each call crosses from Lua to Python and copies the entry into Lua).
* one 1000-entry transaction: ``registry.changes()`` with 1000 creates, then ``apply``: the wall time of
  ``apply`` (checks, copies, the node's change notification); and a watched tree of 1000 entries, one
  value edited: the time from the write to the watcher's ``applied`` report.
"""

from __future__ import annotations

import queue
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from wippy.runtime import Entry, Node
from wippy.runtime.watch import TreeWatcher

CONFIG = "namespace: b.config\nentries:\n  - name: settings\n    kind: registry.entry\n    x: {x}\n"
APP = """\
namespace: b
entries:
  - name: follower
    kind: process.lua
    modules: [registry]
    source: |
      local function main(py)
        local sub = registry.changes({[".id"] = "b.config:settings"})
        process.send(py, "value", registry.get("b.config:settings").data.x)
        while true do
          sub:receive()
          process.send(py, "value", registry.get("b.config:settings").data.x)
        end
      end
      return { main = main }
  - name: getter
    kind: process.lua
    modules: [registry]
    source: |
      local function main(n)
        local x = 0
        for i = 1, n do x = x + registry.get("b.config:settings").data.x end
        return x
      end
      return { main = main }
"""


def edit_latency(root: Path, debounce: float, edits: int) -> list[float]:
    """Seconds from each write of _index.yaml to the Lua process reporting the new value."""
    tree = root / f"tree-{debounce}"
    (tree / "b.config").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "b.config" / "_index.yaml").write_text(CONFIG.format(x=0))
    (tree / "b" / "_index.yaml").write_text(APP)
    node = Node(output=None).start()
    watcher = TreeWatcher(node, tree, debounce=debounce)
    watcher.start()
    mb = node.mailbox()
    try:
        node.spawn("b:follower", mb.pid)
        assert mb.receive(5).payload == 0
        samples = []
        for i in range(1, edits + 1):
            t0 = time.perf_counter()
            (tree / "b.config" / "_index.yaml").write_text(CONFIG.format(x=i))
            while mb.receive(5).payload != i:
                pass
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        watcher.stop()
        mb.close()
        node.stop(grace=0.5)


def get_rate(n: int) -> float:
    node = Node(output=None).start()
    try:
        node.apply([Entry("b.config:settings", "registry.entry", {}, {"x": 1}),
                    *[e for e in _app_entries() if e.id == "b:getter"]])
        node.exec("b:getter", 100, timeout=30)  # warm-up: compile once
        t0 = time.perf_counter()
        assert node.exec("b:getter", n, timeout=60) == n
        return n / (time.perf_counter() - t0)
    finally:
        node.stop(grace=0.5)


def _app_entries() -> list[Entry]:
    from wippy.runtime.tree import load_text

    return load_text(APP, "bench")


def big_transaction(count: int) -> float:
    node = Node(output=None).start()
    try:
        tx = node.registry.changes()
        for i in range(count):
            tx.create(Entry(f"b.big:e{i:04d}", "registry.entry", {"type": "bench"}, {"n": i, "text": "x" * 40}))
        t0 = time.perf_counter()
        tx.apply(message="bench")
        return time.perf_counter() - t0
    finally:
        node.stop(grace=0.5)


def big_tree_edit(root: Path, count: int) -> tuple[float, float]:
    """(seconds for start(): load + apply of a `count`-entry tree, seconds from one edit to 'applied')."""
    tree = root / "big"
    tree.mkdir()

    def text(first: int) -> str:
        lines = ["namespace: b.big", "entries:"]
        for i in range(count):
            lines += [f"  - name: e{i:04d}", "    kind: registry.entry", f"    n: {first if i == 0 else i}"]
        return "\n".join(lines) + "\n"

    (tree / "_index.yaml").write_text(text(0))
    node = Node(output=None).start()
    done: queue.Queue[str] = queue.Queue()
    watcher = TreeWatcher(node, tree, debounce=0.02, on_event=lambda kind, msg: done.put(msg))
    try:
        t_start, _ = common.timed(watcher.start)
        t0 = time.perf_counter()
        (tree / "_index.yaml").write_text(text(-1))
        msg = done.get(timeout=10)
        assert msg.endswith("+0 ~1 -0"), msg
        return t_start, time.perf_counter() - t0
    finally:
        watcher.stop()
        node.stop(grace=0.5)


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    common.header("bench_watch: watched trees and registry calls", args.quick)
    edits = 30 if args.quick else 100
    n_get = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for debounce in (0.1, 0.02):
            ms = [s * 1000 for s in edit_latency(root, debounce, edits)]
            pcts = [f"{common.percentile(ms, p):.1f}" for p in (50, 90, 99)]
            rows.append((f"{debounce:g} s", edits, *pcts, f"{max(ms):.1f}"))
        print("edit of _index.yaml → a Lua process sees the new value (ms; target p99 ≤ 150 at 0.1 s):")
        common.table(("debounce", "edits", "p50", "p90", "p99", "max"), rows)
        print()
        rate = get_rate(n_get)
        print(f"registry.get from Lua: {common.fmt_rate(rate)} ({n_get} calls in one process)")
        t_tx = big_transaction(1000)
        print(f"one 1000-entry transaction (registry.changes() ... apply): {t_tx * 1000:.1f} ms")
        t_start, t_edit = big_tree_edit(root, 1000)
        print(f"watched 1000-entry tree: start (load + apply) {t_start * 1000:.1f} ms; "
              f"one edit → applied {t_edit * 1000:.1f} ms (debounce 0.02 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
