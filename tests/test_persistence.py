"""The registry persists in the node's data directory: a new node there restores it; another starts empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wippy.runtime import Entry, Node

ROOT = Path(__file__).resolve().parent.parent


def test_a_node_restores_its_registry_and_hosts(tmp_path: Path) -> None:
    """Entries, history and host entries survive a stop and a new node on the same directory."""
    first = Node(output=None, data_dir=tmp_path / "data").start()
    first.define("app:hello", "process.lua", source="return { main = function() return 'hi' end }")
    first.apply([Entry("app:extra", "process.host", {}, {"host": {"instruction_budget": 0}})])
    version = first.registry.version
    first.stop(grace=0.5)

    again = Node(output=None, data_dir=tmp_path / "data").start()
    try:
        assert again.registry.version == version
        assert [v.version for v in again.registry.history()] == list(range(1, version + 1))
        assert again.exec("app:hello", timeout=5) == "hi"
        assert again.hosts["app:extra"].running
        assert again.exec("app:hello", host="app:extra", timeout=5) == "hi"
    finally:
        again.stop(grace=0.5)


def test_another_data_directory_starts_empty(tmp_path: Path) -> None:
    """A node on another directory (or none) has no entries."""
    first = Node(output=None, data_dir=tmp_path / "a").start()
    first.define("app:hello", "process.lua", source="return { main = function() end }")
    first.stop(grace=0.5)
    for other in (Node(output=None, data_dir=tmp_path / "b"), Node(output=None)):
        assert other.registry.ids() == [] and other.registry.version == 0


def test_wippy_run_makes_the_stored_registry_follow_the_tree(tmp_path: Path) -> None:
    """`wippy run DIR` replaces what the data directory held with the tree: one version per change."""
    data = tmp_path / "data"
    for name in ("one", "two"):
        tree = tmp_path / name
        tree.mkdir()
        (tree / "_index.yaml").write_text(
            f"namespace: t\nentries:\n  - name: {name}\n    kind: process.lua\n"
            f"    source: \"return {{ main = function() print('{name}') end }}\"\n")
        r = subprocess.run([sys.executable, "-m", "wippy.runtime.cli", "run", str(tree), "--entry", f"t:{name}",
                            "--data-dir", str(data)], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert r.returncode == 0 and r.stdout == f"{name}\n", r.stderr
    node = Node(output=None, data_dir=data)
    assert node.registry.ids() == ["t:two"]
    assert [v.changes for v in node.registry.history()] == [
        (("create", "t:one", "process.lua"),),
        (("create", "t:two", "process.lua"), ("delete", "t:one", "process.lua")),
    ]
