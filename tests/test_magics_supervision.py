"""%tree in an IPython shell: the tree as text and as a picture, a subtree, bad roots, and the supervisor
started from a %%registry cell that returns once its children run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import magics_shell, usage_error
from wippy.magics.supervision import TreeText, tree_svg
from wippy.magics.views import TreeView
from wippy.runtime.supervisor_tree import TreeNode

WORKER = """\
namespace: demo
entries:
  - name: worker
    kind: process.lua
    source: |
      local function main(name)
        local inbox = process.inbox()
        while true do
          local msg = inbox:receive()
          if msg:topic() == "crash" then error("crashed on purpose: " .. name) end
        end
      end
      return { main = main }
  - name: sup
    kind: process.supervisor
    strategy: one_for_all
    max_restarts: 3
    period: 60s
    lifecycle: {auto_start: true}
    children:
      - {id: a, process: demo:worker, input: [a], name: t-a}
      - {id: b, process: demo:worker, input: [b], name: t-b}
"""


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with magics_shell(tmp_path_factory.mktemp("data")) as shell:
        res = shell.run_cell("%%registry\n" + WORKER)
        assert res.success, res.error_in_exec
        yield shell


def test_a_registry_cell_returns_once_the_children_run(ip: Any) -> None:
    node = ip.user_ns["node"]
    sup = node.supervision.tree("demo:sup")
    assert sup.status == "running"
    assert [c.status for c in sup.children] == ["running", "running"]
    for c in sup.children:
        assert c.pid is not None and node.alive(c.pid)
    assert node.lookup("t-a") == sup.children[0].pid


def test_tree_text_draws_the_tree_with_statuses(ip: Any) -> None:
    res = ip.run_cell("%tree --text demo:sup")
    out = res.result
    assert isinstance(out, TreeText)
    text = repr(out)
    lines = text.splitlines()
    assert lines[0].startswith("demo:sup  supervisor one_for_all  running  {python|")
    assert lines[1].startswith("├── a  worker permanent  running  {app:processes|")
    assert lines[2].startswith("└── b  worker permanent  running  {app:processes|")
    assert out._repr_html_() is None   # --text: no picture


def test_tree_without_pids_reads_the_same_every_run(ip: Any) -> None:
    text = repr(ip.run_cell("%tree --no-pids demo:sup").result)
    assert text == ("demo:sup  supervisor one_for_all  running\n"
                    "├── a  worker permanent  running\n"
                    "└── b  worker permanent  running")


def test_bare_tree_is_the_live_view_with_a_picture_of_every_node(ip: Any) -> None:
    out = ip.run_cell("%tree").result
    try:
        assert isinstance(out, TreeView)
        bundle = out._repr_mimebundle_()
        svg = bundle["text/html"]
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert 'data-id="demo:sup/a"' in svg and 'data-id="demo:sup/b"' in svg
        assert "wippy-running" in svg
        assert bundle["text/plain"].splitlines()[0].startswith("node  root  running")
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert out.svg.value == svg  # the widget shows the same picture
    finally:
        out.close()


def test_no_pids_is_a_picture_snapshot(ip: Any) -> None:
    out = ip.run_cell("%tree --no-pids demo:sup").result
    assert isinstance(out, TreeText)
    svg = out._repr_html_()
    assert svg.startswith("<svg") and "{python|" not in svg


def test_a_crash_shows_in_the_tree(ip: Any) -> None:
    node = ip.user_ns["node"]
    before = node.supervision.version
    node.send("t-b", "crash")
    node.supervision.wait_for(lambda t: node.supervision.version > before)
    node.supervision.sync()
    text = repr(ip.run_cell("%tree --text --no-pids demo:sup").result)
    assert "└── b  worker permanent  running  restarts=1  last=error: demo:worker:5: crashed on purpose: b" in text
    assert "├── a  worker permanent  running  restarts=1  last=cancelled" in text


def test_unknown_root_is_one_clear_line(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    msg = usage_error(ip, "%tree demo:nope", capsys, one_line=True)
    assert msg.startswith("%tree: no supervisor, service or child 'demo:nope' in the tree; known: ")
    assert "demo:sup" in msg


def test_bad_option_points_at_the_usage(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    msg = usage_error(ip, "%tree --bogus", capsys)
    assert "%tree" in msg and "%tree?" in msg


def test_svg_marks_failed_nodes_and_their_reason() -> None:
    t = TreeNode(id="node", kind="root", status="running", children=(
        TreeNode(id="s", kind="supervisor", status="failed", strategy="one_for_one",
                 last_exit="shutdown: reached max restart intensity (1 in 5s)"),))
    svg = tree_svg(t)
    assert "wippy-failed" in svg
    assert "reached max restart intensity" in svg



def test_links_between_supervised_processes_are_drawn_dotted(ip: Any) -> None:
    from wippy.magics.supervision import tree_links

    node = ip.user_ns["node"]
    node.define("demo:linker", "process.lua", source="""
return { main = function(other)
  local pid = process.registry.lookup(other)
  if pid then process.link(pid) end
  process.inbox():receive()
end }""")
    node.supervision.start({"id": "linked", "children": [
        {"id": "la", "process": "demo:linker", "input": ["nobody"], "name": "l-a"},
        {"id": "lb", "process": "demo:linker", "input": ["l-a"], "name": "l-b"},
    ]})
    try:
        tree = node.supervision.tree("linked")
        a, b = (c.pid for c in tree.children)
        assert node.statistics().processes   # the statistics carry the links
        assert tree_links(node, tree) == [(min(a, b), max(a, b))]
        svg = tree_svg(tree, links=tree_links(node, tree))
        assert svg.count('class="wippy-link"') == 1
        assert "stroke-dasharray" in svg
        assert tree_svg(tree).count("wippy-link") == 0
    finally:
        node.supervision.stop("linked")
