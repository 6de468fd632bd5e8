"""Loading YAML trees: entries, file:// sources, and bad input refused whole with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from wippy.runtime import Node, TreeError, load_tree

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pingpong"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_example_tree_loads() -> None:
    """The example loads: process entries with their sources read, a host entry with its options."""
    entries = {e.id: e for e in load_tree(EXAMPLE)}
    assert set(entries) == {"app:main", "app:pong", "app:workers"}
    main = entries["app:main"]
    assert main.kind == "process.lua" and "local function main" in main.data["source"]
    assert main.meta["source_path"] == "pingpong/main.lua"
    assert entries["app:workers"].data["host"] == {"instruction_budget": 0}


def test_data_fields_and_meta(tmp_path: Path) -> None:
    """Every key but name/kind/meta goes to data; meta stays apart; nested trees get their namespace."""
    write(tmp_path, "_index.yaml", """
        namespace: app.config
        entries:
          - name: settings
            kind: registry.entry
            meta: {type: config}
            greeting: hello
            limits: {rate: 5}
    """)
    write(tmp_path, "sub/_index.yaml", """
        version: "1.0"
        namespace: app.workers
        entries:
          - name: handler
            kind: function.lua
            method: handle
            source: |
              return { handle = function(x) return x end }
    """)
    entries = {e.id: e for e in load_tree(tmp_path)}
    s = entries["app.config:settings"]
    assert s.meta == {"type": "config"} and s.data == {"greeting": "hello", "limits": {"rate": 5}}
    h = entries["app.workers:handler"]
    assert h.data["method"] == "handle" and h.namespace == "app.workers" and h.name == "handler"


@pytest.mark.parametrize(
    ("files", "where", "what"),
    [
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: [oops\n"},
         "_index.yaml:5", "flow sequence at line 4"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.thing\n    source: x\n"},
         "_index.yaml:3", "unknown kind 'process.thing'"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.lua\n"},
         "_index.yaml:3", "needs `source:`"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.lua\n    source: file://missing.lua\n"},
         "_index.yaml:5", "cannot read source file://missing.lua"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.lua\n    source: file://bad.lua\n",
          "bad.lua": "local x = 1\nlocal y = = 2\n"}, "bad.lua:2", "Lua syntax error"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.lua\n    source: |\n"
                         "      local ok = 1\n      return {main = function() return ok end\n"},
         "_index.yaml:7", "Lua syntax error"),
        ({"_index.yaml": "namespace: 'bad ns'\nentries: []\n"}, "_index.yaml:1", "`namespace:` must be a dotted name"),
        ({"_index.yaml": "namespace: app\nentries:\n  - kind: process.lua\n"}, "_index.yaml:3", "without `name:`"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: process.lua\n    source: x()\n"
                         "    modules: [sockets]\n"}, "_index.yaml:3", "unknown module 'sockets'"),
        ({"_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: registry.entry\n",
          "b/_index.yaml": "namespace: app\nentries:\n  - name: a\n    kind: registry.entry\n"},
         "_index.yaml:3", "duplicate entry ID 'app:a'"),
    ],
)
def test_bad_trees_name_file_line_and_reason(tmp_path: Path, files: dict[str, str], where: str, what: str) -> None:
    """Each fault is one TreeError naming the file, the line and the reason."""
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    with pytest.raises(TreeError) as exc:
        load_tree(tmp_path)
    message = str(exc.value)
    assert where in message, message
    assert what in message, message


def test_a_bad_tree_changes_nothing(tmp_path: Path) -> None:
    """Loading a tree with one bad entry applies none of its entries; the node keeps what it had."""
    node = Node(output=None)
    node.load(EXAMPLE)
    before = node.entries.ids()
    write(tmp_path, "_index.yaml", """
        namespace: app
        entries:
          - name: good
            kind: registry.entry
          - name: bad
            kind: process.lua
            source: "return {"
    """)
    with pytest.raises(TreeError):
        node.load(tmp_path)
    assert node.entries.ids() == before


def test_registry_get_from_python() -> None:
    """node.registry.get(id) gives the entry {id, kind, meta, data}, as API.md names it."""
    node = Node(output=None)
    node.load(EXAMPLE)
    entry = node.registry.get("app:workers")
    assert entry is not None and entry.kind == "process.host" and entry.data["host"] == {"instruction_budget": 0}
    assert node.registry.get("app:none") is None


def test_missing_tree() -> None:
    """A path that does not exist is a TreeError, not an OSError."""
    with pytest.raises(TreeError, match="no such file or directory"):
        load_tree(Path("/nonexistent/tree"))


def test_host_entries_become_hosts() -> None:
    """process.host entries start hosts with their options when the node runs."""
    node = Node(output=None).start()
    try:
        node.load(EXAMPLE)
        assert node.hosts["app:workers"].running
        assert node.hosts["app:workers"].options.instruction_budget == 0
        assert node.exec("app:main", timeout=10) == 3
    finally:
        node.stop(grace=0.5)


def test_host_entry_with_bad_option(tmp_path: Path) -> None:
    """An unknown host option names the known ones."""
    write(tmp_path, "_index.yaml", """
        namespace: app
        entries:
          - name: h
            kind: process.host
            host: {wrkers: 4}
    """)
    node = Node(output=None)
    with pytest.raises(Exception, match=r"unknown host option\(s\) wrkers"):
        node.load(tmp_path)


@pytest.mark.parametrize(("extra", "where", "what"), [
    ("    imports: {lib: app:missing}\n", "_index.yaml:3", "import 'lib' names 'app:missing', which does not exist"),
    ("    imports: {lib: app:proc}\n", "_index.yaml:3", "a process.lua entry; imports must be library.lua"),
])
def test_bad_imports_are_refused_with_the_entry_line(tmp_path: Path, extra: str, where: str, what: str) -> None:
    """An import of an unknown entry or a non-library is refused whole, at the importing entry's line."""
    write(tmp_path, "_index.yaml", "namespace: app\nentries:\n  - name: user\n    kind: process.lua\n"
          "    source: \"return {}\"\n" + extra +
          "  - name: proc\n    kind: process.lua\n    source: \"return {}\"\n")
    node = Node(output=None)
    with pytest.raises(TreeError) as exc:
        node.load(tmp_path)
    assert where in str(exc.value) and what in str(exc.value)
    assert node.registry.ids() == []


def test_an_import_cycle_is_refused(tmp_path: Path) -> None:
    """Libraries importing each other in a circle are refused, naming the cycle."""
    write(tmp_path, "_index.yaml", """
        namespace: lib
        entries:
          - name: a
            kind: library.lua
            source: "return {}"
            imports: {b: lib:b}
          - name: b
            kind: library.lua
            source: "return {}"
            imports: {a: lib:a}
    """)
    node = Node(output=None)
    with pytest.raises(TreeError, match=r"import cycle lib:(a|b) -> lib:(a|b) -> lib:(a|b)"):
        node.load(tmp_path)
    assert node.registry.version == 0
