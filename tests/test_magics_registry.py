"""The %registry magics, driven in-process through IPython's InteractiveShell: every subcommand, the YAML
cell, bad input, and the export (round trip through load_tree, and `wippy run` on an exported ping-pong)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import wippy.magics
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from wippy.magics.registry import EntryText, RegistryDiff, Table
from wippy.runtime import Node, Registry
from wippy.runtime.entries import Entry
from wippy.runtime.tree import export_tree, load_text, load_tree

ROOT = Path(__file__).resolve().parent.parent
PINGPONG = ROOT / "examples" / "pingpong"

SETTINGS = """\
namespace: app.config
entries:
  - name: settings
    kind: registry.entry
    meta: {type: config}
    greeting: hello
    n: 1
  - name: echo
    kind: function.lua
    source: |
      local function main(x)
        return x
      end
      return { main = main }
"""


@pytest.fixture
def node(ip: InteractiveShell) -> Node:
    return wippy.magics.node()


@pytest.fixture
def reg(node: Node) -> Registry:
    """The node's registry, emptied for each test."""
    node.registry.reset()
    return node.registry


def run(ip: InteractiveShell, cell: str) -> ExecutionResult:
    return ip.run_cell(cell, store_history=False)


def ok(ip: InteractiveShell, cell: str) -> object:
    res = run(ip, cell)
    assert res.success, res.error_in_exec
    return res.result


def usage_error(ip: InteractiveShell, cell: str, capsys: pytest.CaptureFixture[str]) -> str:
    """A UsageError cell whose message is one line (see conftest.usage_error)."""
    return shared_usage_error(ip, cell, capsys, one_line=True)


def cell(ip: InteractiveShell, text: str, line: str = "") -> str:
    return f"%%registry {line}\n{text}"


def strip_source_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.id: Entry(e.id, e.kind, {k: v for k, v in e.meta.items() if k != "source_path"}, dict(e.data))
            for e in entries}


# ---------------------------------------------------------------- the cell


def test_cell_applies_one_transaction(ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    ok(ip, cell(ip, SETTINGS, "--message 'first settings'"))
    assert capsys.readouterr().out == "2 created, 0 updated, 0 unchanged (version 1)\n"
    assert reg.version == 1
    assert reg.history()[0].message == "first settings"
    settings = reg.get("app.config:settings")
    assert settings is not None and settings.data == {"greeting": "hello", "n": 1}
    assert settings.meta == {"type": "config"}
    echo = reg.get("app.config:echo")
    assert echo is not None and echo.data["source"].startswith("local function main(x)")
    ok(ip, cell(ip, SETTINGS.replace("hello", "hi")))
    assert capsys.readouterr().out == "0 created, 1 updated, 1 unchanged (version 2)\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("namespace: app\nentries:\n  - name: x\n    kind: registry.entry\n    v: [1, 2\n",
     "%%registry: cell:6: malformed YAML"),
    ("namespace: app\nentries:\n  - name: ok\n    kind: registry.entry\n  - name: x\n    kind: nope.kind\n",
     "%%registry: cell:5: entry 'app:x': unknown kind 'nope.kind'"),
    ("namespace: app\nentries:\n  - name: bad\n    kind: process.lua\n    source: |\n"
     "      local x = 1\n      return { main = function() x = end }\n",
     "%%registry: cell:7: entry 'app:bad': Lua syntax error"),
    ("namespace: app\nentries:\n  - name: x\n    kind: registry.entry\n  - name: x\n    kind: registry.entry\n",
     "%%registry: cell:5: duplicate entry ID 'app:x'"),
    ("namespace: 3\n", "%%registry: cell:1: `namespace:` must be a dotted name"),
    ("namespace: app\nentries: []\n", "%%registry: the cell has no entries"),
    ("   \n", "%%registry: the cell is empty"),
])
def test_refused_cell_names_line_and_entry_and_changes_nothing(
        ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    ok(ip, cell(ip, SETTINGS))
    message = usage_error(ip, cell(ip, text), capsys)
    assert message.startswith(expected), message
    assert reg.version == 1 and reg.ids() == ["app.config:echo", "app.config:settings"]


def test_cell_bad_options(ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--message needs a text" in usage_error(ip, cell(ip, SETTINGS, "--message"), capsys)
    assert "unexpected arguments 'extra'" in usage_error(ip, cell(ip, SETTINGS, "extra"), capsys)
    assert reg.version == 0


# ---------------------------------------------------------------- list and get


def test_list_is_a_sorted_table_filtered_by_namespace(ip: InteractiveShell, reg: Registry) -> None:
    ok(ip, cell(ip, SETTINGS))
    ok(ip, cell(ip, "namespace: app\nentries:\n  - {name: zed, kind: registry.entry}\n"))
    table = ok(ip, "%registry list")
    assert isinstance(table, Table)
    assert [r[0] for r in table.rows] == ["app.config:echo", "app.config:settings", "app:zed"]
    text = repr(table).splitlines()
    assert text[0].split() == ["ID", "KIND", "META"]
    assert text[2].split() == ["app.config:settings", "registry.entry", "type=config"]
    assert text[3].split() == ["app:zed", "registry.entry", "-"]
    html = table._repr_html_()
    assert html.startswith("<table") and "<th>ID</th>" in html and "<td>app:zed</td>" in html
    filtered = ok(ip, "%registry list app.config")
    assert isinstance(filtered, Table) and [r[0] for r in filtered.rows] == ["app.config:echo", "app.config:settings"]
    assert repr(ok(ip, "%registry list nothing.here")) == "no entries in namespace nothing.here"


def test_get_shows_the_entry_as_yaml_with_source_as_a_block(ip: InteractiveShell, reg: Registry) -> None:
    ok(ip, cell(ip, SETTINGS))
    text = ok(ip, "%registry get app.config:echo")
    assert isinstance(text, EntryText)
    assert repr(text) == str(text)
    assert str(text) == (
        "id: app.config:echo\nkind: function.lua\nmeta: {}\ndata:\n  source: |\n"
        "    local function main(x)\n      return x\n    end\n    return { main = main }"
    )
    assert str(ok(ip, "%registry get app.config:settings")).splitlines()[-3:] == [
        "data:", "  greeting: hello", "  n: 1"]


# ---------------------------------------------------------------- set


def test_set_types_values_as_yaml_scalars(ip: InteractiveShell, reg: Registry,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, cell(ip, SETTINGS))
    capsys.readouterr()
    ok(ip, "%registry set app.config:settings greeting=hi")
    assert capsys.readouterr().out == "app.config:settings: greeting = 'hi' (version 2)\n"
    ok(ip, "%registry set app.config:settings n=3 on=true name=x ratio=0.5 'msg=hello world' nothing=")
    assert reg.version == 3  # one transaction for all the keys
    entry = reg.get("app.config:settings")
    assert entry is not None
    assert entry.data == {"greeting": "hi", "n": 3, "on": True, "name": "x", "ratio": 0.5,
                          "msg": "hello world", "nothing": None}
    assert entry.meta == {"type": "config"}
    assert [c.op for c in reg.version_changes(3)] == ["update"]


@pytest.mark.parametrize(("line", "expected"), [
    ("%registry set", "%registry set: missing arguments; usage: %registry set ID key=value ..."),
    ("%registry set app.config:settings", "%registry set: missing arguments"),
    ("%registry set app.config:nope a=1", "%registry set: unknown entry 'app.config:nope'; entries: app.config:echo"),
    ("%registry set not-an-id a=1", "%registry set: invalid entry ID 'not-an-id'"),
    ("%registry set app.config:settings greeting", "'greeting' is not key=value; write e.g. greeting=hi"),
    ("%registry set app.config:settings =3", "'=3' is not key=value"),
    ("%registry set app.config:settings 'x=[1, 2'", "the value of 'x' is not a YAML scalar"),
    ("%registry set app.config:settings 'x=[1, 2]'", "the value of 'x' is not a scalar"),
])
def test_set_bad_input(ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str],
                       line: str, expected: str) -> None:
    ok(ip, cell(ip, SETTINGS))
    assert expected in usage_error(ip, line, capsys)
    assert reg.version == 1


# ---------------------------------------------------------------- apply


def test_apply_a_directory_and_a_file(ip: InteractiveShell, reg: Registry, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    ok(ip, f"%registry apply {PINGPONG}")
    assert capsys.readouterr().out == f"applied {PINGPONG}: 3 created, 0 updated, 0 unchanged (version 1)\n"
    assert reg.ids() == ["app:main", "app:pong", "app:workers"]
    index = tmp_path / "_index.yaml"
    index.write_text("namespace: app\nentries:\n  - {name: pong, kind: registry.entry}\n"
                     "  - {name: extra, kind: registry.entry}\n")
    ok(ip, f"%registry apply {index}")
    assert capsys.readouterr().out == f"applied {index}: 1 created, 1 updated, 0 unchanged (version 2)\n"
    assert reg.version == 2 and len(reg.version_changes(2)) == 2


def test_apply_bad_trees_name_file_and_line(ip: InteractiveShell, reg: Registry, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tree" / "app"
    bad.mkdir(parents=True)
    (bad / "_index.yaml").write_text("namespace: app\nentries:\n  - name: h\n    kind: process.lua\n"
                                     "    source: file://h.lua\n")
    (bad / "h.lua").write_text("return {\n  main = function( end\n}\n")
    message = usage_error(ip, f"%registry apply {tmp_path / 'tree'}", capsys)
    assert re.search(r"^%registry apply: tree/app/h\.lua:2: entry 'app:h': Lua syntax error", message), message
    assert message.endswith("(nothing changed)")
    missing = usage_error(ip, f"%registry apply {tmp_path / 'nowhere'}", capsys)
    assert missing == f"%registry apply: {tmp_path / 'nowhere'}: no such file or directory (nothing changed)"
    assert "missing arguments; usage: %registry apply PATH" in usage_error(ip, "%registry apply", capsys)
    assert reg.version == 0


# ---------------------------------------------------------------- diff, history, rollback, reset


def test_diff_is_a_coloured_unified_diff(ip: InteractiveShell, reg: Registry) -> None:
    ok(ip, cell(ip, SETTINGS))                                      # v1
    ok(ip, "%registry set app.config:settings greeting=hi")         # v2
    ok(ip, cell(ip, "namespace: app\nentries:\n  - {name: new, kind: registry.entry, x: 1}\n"))  # v3
    diff = ok(ip, "%registry diff")
    assert isinstance(diff, RegistryDiff) and (diff.v1, diff.v2) == (2, 3)
    assert diff.text.splitlines()[:2] == ["--- v2 (no app:new)", "+++ v3 app:new"]
    assert "+id: app:new" in diff.text.splitlines()
    one = ok(ip, "%registry diff 1")
    assert isinstance(one, RegistryDiff) and (one.v1, one.v2) == (1, 3)
    lines = one.text.splitlines()
    assert lines[:2] == ["--- v1 app.config:settings", "+++ v3 app.config:settings"]
    assert "--- v1 (no app:new)" in lines and "+++ v3 app:new" in lines
    assert "-  greeting: hello" in lines and "+  greeting: hi" in lines
    coloured = repr(one)
    assert "\x1b[32m+  greeting: hi\x1b[0m" in coloured and "\x1b[31m-  greeting: hello\x1b[0m" in coloured
    assert '<span style="color:#cf222e">-  greeting: hello</span>' in one._repr_html_()
    back = ok(ip, "%registry diff 3 1")
    assert isinstance(back, RegistryDiff) and "-id: app:new" in back.text.splitlines()
    same = ok(ip, "%registry diff 2 2")
    assert repr(same) == "no changes between version 2 and 2"


def test_diff_bad_input(ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(ip, "%registry diff", capsys) == (
        "%registry diff: the registry has no versions yet; apply entries first")
    ok(ip, cell(ip, SETTINGS))
    assert usage_error(ip, "%registry diff 7", capsys) == (
        "%registry diff: unknown version 7: known versions are 0 (empty) to 1; %registry history lists them")
    assert "version 'x' is not a number" in usage_error(ip, "%registry diff x", capsys)
    assert "unexpected arguments '3'" in usage_error(ip, "%registry diff 1 1 3", capsys)


def test_history_table(ip: InteractiveShell, reg: Registry) -> None:
    assert repr(ok(ip, "%registry history")) == "no versions yet"
    ok(ip, cell(ip, SETTINGS, "--message 'add settings'"))
    ok(ip, "%registry set app.config:settings n=2")
    ok(ip, cell(ip, "namespace: app\nentries:\n  - {name: x, kind: registry.entry}\n"))
    reg.changes().delete("app.config:echo").update(Entry("app:x", "registry.entry", {}, {"v": 1})).apply("by hand")
    table = ok(ip, "%registry history")
    assert isinstance(table, Table)
    assert table.columns == ("VERSION", "TIME", "MESSAGE", "CHANGES")
    assert [r[0] for r in table.rows] == ["1", "2", "3", "4"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", r[1]) for r in table.rows)
    assert table.rows[0][2:] == ("add settings", "+app.config:settings +app.config:echo")
    assert table.rows[1][2:] == ("set app.config:settings n", "~app.config:settings")
    assert table.rows[3][2:] == ("by hand", "-app.config:echo ~app:x")
    assert "<th>VERSION</th>" in table._repr_html_()


def test_rollback_makes_a_new_version(ip: InteractiveShell, reg: Registry,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, cell(ip, SETTINGS))
    ok(ip, "%registry set app.config:settings greeting=hi")
    capsys.readouterr()
    ok(ip, "%registry rollback 1")
    assert capsys.readouterr().out == "version 3 (the entries of version 1)\n"
    entry = reg.get("app.config:settings")
    assert entry is not None and entry.data["greeting"] == "hello"
    ok(ip, "%registry rollback 1")
    assert capsys.readouterr().out == "the entries already equal version 1's (version 3)\n"
    ok(ip, "%registry rollback 0")
    assert reg.ids() == [] and reg.version == 4
    assert "unknown version 9" in usage_error(ip, "%registry rollback 9", capsys)
    assert "missing arguments; usage: %registry rollback V" in usage_error(ip, "%registry rollback", capsys)
    assert reg.version == 4


def test_reset_empties_the_registry(ip: InteractiveShell, reg: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, cell(ip, SETTINGS))
    capsys.readouterr()
    ok(ip, "%registry reset")
    assert capsys.readouterr().out == "registry emptied (2 entries removed; version 0)\n"
    assert reg.version == 0 and reg.ids() == [] and reg.history() == []
    assert "unexpected arguments 'now'" in usage_error(ip, "%registry reset now", capsys)


# ---------------------------------------------------------------- subcommands and the node


@pytest.mark.parametrize(("line", "expected"), [
    ("%registry", "%registry: missing subcommand; subcommands: list, get, set, apply, diff, history, rollback, "
                  "reset, export"),
    ("%registry frob", "%registry: unknown subcommand 'frob'; subcommands: list, get, set, apply, diff, history, "
                       "rollback, reset, export"),
    ("%registry __init__", "%registry: unknown subcommand '__init__'"),
    ("%registry get", "%registry get: missing arguments; usage: %registry get ID"),
    ("%registry get app:nope", "%registry get: unknown entry 'app:nope'; no entries are loaded"),
    ("%registry get a b", "%registry get: unexpected arguments 'b'"),
    ("%registry list a b", "%registry list: unexpected arguments 'b'"),
    ("%registry history x", "%registry history: unexpected arguments 'x'"),
    ("%registry export", "%registry export: missing arguments; usage: %registry export DIR [NS ...]"),
    ("%registry get 'app:x", "%registry: cannot split the line (No closing quotation); close the quotes"),
])
def test_bad_input_is_one_usage_line(ip: InteractiveShell, reg: Registry, node: Node,
                                     capsys: pytest.CaptureFixture[str], line: str, expected: str) -> None:
    assert usage_error(ip, line, capsys).startswith(expected)
    assert node.started
    assert ok(ip, "%lua 1 + 1") is not None  # the node stays up


# ---------------------------------------------------------------- export


def test_load_text_and_export_tree_round_trip(tmp_path: Path) -> None:
    entries = load_text(SETTINGS, "cell")
    assert [e.id for e in entries] == ["app.config:settings", "app.config:echo"]
    more = [*entries, *load_tree(PINGPONG)]
    files = export_tree(more, tmp_path / "out")
    names = sorted(str(f.relative_to(tmp_path / "out")) for f in files)
    assert names == ["app.config/_index.yaml", "app.config/echo.lua", "app/_index.yaml", "app/main.lua",
                     "app/pong.lua"]
    assert "source: file://echo.lua" in (tmp_path / "out" / "app.config" / "_index.yaml").read_text()
    assert strip_source_path(load_tree(tmp_path / "out")) == strip_source_path(more)
    only = export_tree(more, tmp_path / "only", ["app.config"])
    assert {f.parent.name for f in only} == {"app.config"}


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    from wippy.runtime import TreeError

    with pytest.raises(TreeError, match=r"data\.name cannot be written in a tree"):
        export_tree([Entry("app:x", "registry.entry", {}, {"name": "x"})], tmp_path / "a")
    assert not (tmp_path / "a").exists()
    export_tree([Entry("app:x", "registry.entry", {}, {})], tmp_path / "b")
    with pytest.raises(TreeError, match=r"already holds _index\.yaml files"):
        export_tree([Entry("app:x", "registry.entry", {}, {})], tmp_path / "b")


def test_export_magic_round_trip(ip: InteractiveShell, reg: Registry, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, cell(ip, SETTINGS))
    ok(ip, f"%registry apply {PINGPONG}")
    ok(ip, "%registry set app.config:settings on=true")
    capsys.readouterr()
    out = tmp_path / "export"
    ok(ip, f"%registry export {out}")
    assert capsys.readouterr().out == f"exported 5 entries to {out} (5 files)\n"
    assert strip_source_path(load_tree(out)) == strip_source_path(reg.entries())
    ok(ip, f"%registry export {tmp_path / 'part'} app.config")
    assert {e.id for e in load_tree(tmp_path / "part")} == {"app.config:settings", "app.config:echo"}
    assert "already holds _index.yaml files" in usage_error(ip, f"%registry export {out}", capsys)
    assert "no entries in namespace nope" in usage_error(ip, f"%registry export {tmp_path / 'n'} nope", capsys)
    ok(ip, "%registry set app.config:settings name=x")
    assert "data.name cannot be written" in usage_error(ip, f"%registry export {tmp_path / 'x'}", capsys)


def test_wippy_run_runs_an_exported_pingpong(ip: InteractiveShell, reg: Registry, tmp_path: Path) -> None:
    """A ping-pong defined in the registry (inline sources in a cell), exported, runs headless."""
    main_lua = (PINGPONG / "main.lua").read_text()
    pong_lua = (PINGPONG / "pong.lua").read_text()

    def block(src: str) -> str:
        return "".join(f"      {line}\n" if line else "\n" for line in src.splitlines())

    text = ("namespace: app\nentries:\n  - name: main\n    kind: process.lua\n    source: |\n" + block(main_lua)
            + "  - name: pong\n    kind: process.lua\n    source: |\n" + block(pong_lua)
            + "  - name: workers\n    kind: process.host\n    host: {instruction_budget: 0}\n"
            + "    lifecycle: {auto_start: true}\n")
    ok(ip, cell(ip, text))
    out = tmp_path / "app-export"
    ok(ip, f"%registry export {out}")
    assert (out / "app" / "main.lua").read_text() == main_lua
    proc = subprocess.run(
        [sys.executable, "-m", "wippy.runtime.cli", "run", str(out), "--entry", "app:main",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "round 1: pong 1 from pong", "round 2: pong 2 from pong", "round 3: pong 3 from pong",
        "pong exited: answered 3 pings"]
