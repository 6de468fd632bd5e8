"""TreeWatcher: edits of a watched tree become registry versions (one per edit), bad edits are refused
whole with file:line, a running Lua process sees the new values; and `wippy run DIR` watches by default."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wippy.magics
from conftest import magics_shell
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from wippy.magics.registry import WATCHERS
from wippy.runtime import Node, TreeError
from wippy.runtime.mailbox import Mailbox
from wippy.runtime.watch import TreeWatcher, relevant_path

pytestmark = pytest.mark.timeout(10)

TIMEOUT = 5.0
DEBOUNCE = 0.05

CONFIG = """\
namespace: app.config
entries:
  - name: settings
    kind: registry.entry
    meta: {{type: config}}
    x: {x}
  - name: other
    kind: registry.entry
    y: 2
"""

APP = """\
namespace: app
entries:
  - name: follower
    kind: process.lua
    modules: [registry]
    source: file://follower.lua
  - name: helper
    kind: function.lua
    source: file://helper.lua
"""

# waits on registry.changes() for the settings entry and reports data.x to the Python mailbox `py`;
# answers "ping" with "pong" so a test can see it still runs
FOLLOWER = """\
local function main(py)
  local sub = registry.changes({[".id"] = "app.config:settings"})
  local inbox = process.inbox()
  process.send(py, "value", registry.get("app.config:settings").data.x)
  while true do
    local r = channel.select{ sub:case_receive(), inbox:case_receive() }
    if r.channel == sub then
      local e = registry.get("app.config:settings")
      process.send(py, "value", e and e.data.x or "gone")
    elseif r.value:topic() == "stop" then
      return "stopped"
    else
      process.send(py, "pong", r.value:payload():data())
    end
  end
end
return { main = main }
"""

HELPER = "return { main = function() return 'one' end }\n"


def make_tree(root: Path, x: object = 1) -> Path:
    (root / "app.config").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "app.config" / "_index.yaml").write_text(CONFIG.format(x=x))
    (root / "app" / "_index.yaml").write_text(APP)
    (root / "app" / "follower.lua").write_text(FOLLOWER)
    (root / "app" / "helper.lua").write_text(HELPER)
    return root


def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Rig:
    """A node, a watched tree, the watcher's events in a queue, and a mailbox."""

    def __init__(self, node: Node, tree: Path) -> None:
        self.node, self.tree = node, tree
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.watcher = TreeWatcher(node, tree, debounce=DEBOUNCE,
                                   on_event=lambda kind, msg: self.events.put((kind, msg)))
        self.mb: Mailbox = node.mailbox()

    def event(self) -> tuple[str, str]:
        return self.events.get(timeout=TIMEOUT)

    def value(self) -> object:
        msg = self.mb.receive(TIMEOUT)
        assert msg.topic == "value"
        return msg.payload

    def follower(self) -> str:
        pid = self.node.spawn("app:follower", self.mb.pid)
        assert self.value() == 1
        return pid

    def config(self, x: object) -> None:
        (self.tree / "app.config" / "_index.yaml").write_text(CONFIG.format(x=x))


@pytest.fixture
def rig(node: Node, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(node, make_tree(tmp_path / "tree"))
    r.watcher.start()
    yield r
    r.watcher.stop()
    r.mb.close()


def test_start_applies_the_tree_as_one_version(rig: Rig) -> None:
    """start() applies the tree at once (one version) and tracks its IDs; no event for the start."""
    reg = rig.node.registry
    assert reg.version == 1
    assert reg.history()[0].message == f"watch {rig.tree}"
    assert rig.watcher.ids == {"app.config:settings", "app.config:other", "app:follower", "app:helper"}
    assert rig.watcher.running and rig.events.empty()


def test_a_yaml_edit_reaches_a_running_process(rig: Rig) -> None:
    """Editing a value is one version; the process subscribed with registry.changes() reads the new value."""
    rig.follower()
    v0 = rig.node.registry.version
    rig.config(42)
    assert rig.event() == ("applied", f"version {v0 + 1}: +0 ~1 -0")
    assert rig.value() == 42
    assert rig.node.registry.version == v0 + 1
    assert rig.watcher.last_result == f"version {v0 + 1}: +0 ~1 -0" and rig.watcher.last_error is None
    assert any("version" in line for line in rig.node.logs(rig.watcher.log_name))
    rig.config(43)
    assert rig.event()[0] == "applied" and rig.value() == 43
    assert rig.node.registry.version == v0 + 2


def test_one_edit_is_one_version_and_an_unchanged_reload_none(rig: Rig) -> None:
    """Several writes in quick succession are one version; rewriting the same content makes none."""
    v0 = rig.node.registry.version
    for x in (2, 3, 4):
        rig.config(x)
    rig.event()
    assert rig.node.registry.version == v0 + 1
    assert rig.node.registry.get("app.config:settings").data["x"] == 4  # type: ignore[union-attr]
    reloads = rig.watcher.reloads
    rig.config(4)  # same content
    wait_until(lambda: rig.watcher.reloads > reloads)
    assert rig.node.registry.version == v0 + 1 and rig.events.empty()


def test_a_lua_source_edit_replaces_the_entry(rig: Rig) -> None:
    v0 = rig.node.registry.version
    (rig.tree / "app" / "helper.lua").write_text("return { main = function() return 'two' end }\n")
    assert rig.event() == ("applied", f"version {v0 + 1}: +0 ~1 -0")
    assert "'two'" in rig.node.registry.get("app:helper").data["source"]  # type: ignore[union-attr]
    assert rig.node.registry.history()[-1].changes == (("update", "app:helper", "function.lua"),)


def test_removing_an_entry_from_the_yaml_deletes_it(rig: Rig) -> None:
    v0 = rig.node.registry.version
    text = (rig.tree / "app.config" / "_index.yaml").read_text()
    (rig.tree / "app.config" / "_index.yaml").write_text(text.split("  - name: other")[0])
    assert rig.event() == ("applied", f"version {v0 + 1}: +0 ~0 -1")
    assert rig.node.registry.get("app.config:other") is None
    assert "app.config:other" not in rig.watcher.ids


def test_a_new_namespace_and_a_new_host(rig: Rig) -> None:
    """A new _index.yaml adds its entries; a new process.host entry becomes a running host."""
    (rig.tree / "app.hosts").mkdir()
    (rig.tree / "app.hosts" / "_index.yaml").write_text(
        "namespace: app.hosts\nentries:\n  - name: workers\n    kind: process.host\n")
    assert rig.event()[0] == "applied"
    wait_until(lambda: "app.hosts:workers" in rig.node.hosts)
    assert rig.node.hosts["app.hosts:workers"].running
    assert rig.node.registry.get("app.hosts:workers") is not None


@pytest.mark.parametrize(("file", "content", "where"), [
    ("app.config/_index.yaml", "namespace: app.config\nentries:\n  - name: settings\n    x: [1, 2\n",
     "tree/app.config/_index.yaml:5:"),
    ("app/helper.lua", "return { main = function()\n  return 'x' +\nend }\n", "tree/app/helper.lua:3:"),
    ("app.config/_index.yaml", "namespace: app.config\nentries:\n  - name: settings\n    kind: nope.kind\n",
     "tree/app.config/_index.yaml:3:"),
])
def test_a_bad_edit_is_refused_whole(rig: Rig, file: str, content: str, where: str) -> None:
    """Malformed YAML, a Lua syntax error, an unknown kind: nothing applied, the process keeps running
    and answering, the error names file:line; fixing the file applies again."""
    pid = rig.follower()
    v0 = rig.node.registry.version
    before = rig.node.registry.entries()
    original = (rig.tree / file).read_text()
    (rig.tree / file).write_text(content)
    kind, message = rig.event()
    assert kind == "error" and where in message, message
    assert rig.watcher.last_error is not None and where in rig.watcher.last_error
    assert rig.node.registry.version == v0 and rig.node.registry.entries() == before
    rig.mb.send(pid, "ping", 7)
    msg = rig.mb.receive(TIMEOUT)
    assert (msg.topic, msg.payload) == ("pong", 7)
    assert rig.node.alive(pid)
    # a fix (the original plus a new value) applies as the next version
    (rig.tree / file).write_text(original)
    rig.config(9)
    assert rig.event() == ("applied", f"version {v0 + 1}: +0 ~1 -0")
    assert rig.watcher.last_error is None and rig.value() == 9


def test_stop_stops_watching(rig: Rig) -> None:
    rig.watcher.stop()
    assert not rig.watcher.running
    v0, reloads = rig.node.registry.version, rig.watcher.reloads
    rig.config(99)
    time.sleep(DEBOUNCE * 6)  # long enough for a watcher to have reacted
    assert rig.node.registry.version == v0 and rig.watcher.reloads == reloads and rig.events.empty()
    rig.watcher.stop()  # stopping twice is harmless


def test_a_bad_tree_at_start_is_refused(node: Node, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "app" / "helper.lua").write_text("return {\n")
    watcher = TreeWatcher(node, tree)
    with pytest.raises(TreeError, match=r"helper\.lua:\d+:"):
        watcher.start()
    assert not watcher.running and node.registry.version == 0


def test_editor_temporaries_are_ignored() -> None:
    assert relevant_path("/t/_index.yaml") and relevant_path("/t/a/x.lua")
    for name in ("/t/.x.lua.swp", "/t/x.lua~", "/t/.#x.lua", "/t/notes.txt", "/t/_index.yaml.swx"):
        assert not relevant_path(name), name


# ---------------------------------------------------------------------------------------------- the magics
@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """An InteractiveShell with `%load_ext wippy.magics` (a node of its own, in a temporary data dir)."""
    with magics_shell(tmp_path_factory.mktemp("wippy-data")) as shell:
        yield shell


def test_registry_watch_magics(ip: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """%registry watch DIR applies and watches; `watch` lists results and errors; `unwatch` stops it."""
    node = wippy.magics.node()
    node.registry.reset()
    tree = make_tree(tmp_path / "tree")
    capsys.readouterr()
    assert ip.run_cell(f"%registry watch {tree}", store_history=False).success
    assert capsys.readouterr().out == f"watching {tree} (version 1)\n"
    watcher = WATCHERS[str(tree)]
    (tree / "app.config" / "_index.yaml").write_text(CONFIG.format(x=8))
    wait_until(lambda: watcher.last_result == "version 2: +0 ~1 -0")
    table = ip.run_cell("%registry watch", store_history=False).result
    assert "version 2: +0 ~1 -0" in repr(table) and str(tree) in repr(table)
    assert any("version 2" in line for line in node.logs(f"watch:{tree}"))
    (tree / "app" / "helper.lua").write_text("return {\n")
    wait_until(lambda: watcher.last_error is not None)
    assert "tree/app/helper.lua:" in repr(ip.run_cell("%registry watch", store_history=False).result)
    res = ip.run_cell(f"%registry watch {tree}", store_history=False)
    assert isinstance(res.error_in_exec, UsageError) and "already watched" in str(res.error_in_exec)
    capsys.readouterr()
    assert ip.run_cell(f"%registry unwatch {tree}", store_history=False).success
    assert capsys.readouterr().out == f"stopped watching {tree}\n"
    assert not watcher.running and str(tree) not in WATCHERS
    res = ip.run_cell(f"%registry unwatch {tree}", store_history=False)
    assert isinstance(res.error_in_exec, UsageError) and "not watched" in str(res.error_in_exec)
    res = ip.run_cell(f"%registry watch {tmp_path / 'nope'}", store_history=False)
    assert isinstance(res.error_in_exec, UsageError) and "no such file" in str(res.error_in_exec)
    assert node.registry.version == 2


def test_watch_reports_reach_the_next_cell(ip: InteractiveShell, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """What a watcher applied or refused in the background is printed at the start of the next cell."""
    node = wippy.magics.node()
    node.registry.reset()
    tree = make_tree(tmp_path / "tree")
    assert ip.run_cell(f"%registry watch {tree}", store_history=False).success
    watcher = WATCHERS[str(tree)]
    (tree / "app" / "helper.lua").write_text("return {\n")
    wait_until(lambda: watcher.last_error is not None)
    capsys.readouterr()
    assert ip.run_cell("1 + 1", store_history=False).success
    out = capsys.readouterr().out
    assert f"wippy watch {tree}: refused: " in out and "helper.lua:" in out
    assert ip.run_cell("2 + 2", store_history=False).success
    assert "wippy watch" not in capsys.readouterr().out   # shown once
    assert ip.run_cell(f"%registry unwatch {tree}", store_history=False).success


# ---------------------------------------------------------------------------------------------- the CLI
def start_cli(tree: Path, *args: str) -> subprocess.Popen[str]:
    """`wippy run TREE ARGS` in the background, with a data directory of its own beside the tree."""
    data = tree.parent / "data"
    return subprocess.Popen([sys.executable, "-m", "wippy.runtime.cli", "run", str(tree), "--data-dir", str(data),
                             *args], cwd=tree.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_wippy_run_watches_the_tree(tmp_path: Path) -> None:
    """`wippy run DIR` (no --entry) applies an edit and says so on stderr; SIGINT exits 0."""
    tree = make_tree(tmp_path / "tree")
    proc = start_cli(tree)
    try:
        assert proc.stderr is not None
        assert "Ctrl-C to stop" in proc.stderr.readline()
        assert proc.stderr.readline() == f"wippy: watching {tree}\n"
        (tree / "app.config" / "_index.yaml").write_text(CONFIG.format(x=5))
        assert re.fullmatch(r"wippy: watch: version \d+: \+0 ~1 -0\n", proc.stderr.readline())
        (tree / "app" / "helper.lua").write_text("return {\n")
        line = proc.stderr.readline()
        assert line.startswith("wippy: watch: refused: tree/app/helper.lua:") and "Lua syntax error" in line, line
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=8)
        assert proc.returncode == 0, err
        assert "stopping" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_wippy_run_no_watch(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    proc = start_cli(tree, "--no-watch")
    try:
        assert proc.stderr is not None
        assert "Ctrl-C to stop" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=8)
        assert proc.returncode == 0, err
        assert "watching" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


