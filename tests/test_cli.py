"""`wippy run DIR`: the example app through a real subprocess, exit codes, errors, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pingpong"


def wippy(*args: str, cwd: Path = ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wippy.runtime.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def start_cli(tree: Path, *args: str) -> subprocess.Popen[str]:
    """`wippy run TREE ARGS` in the background, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "wippy.runtime.cli", "run", str(tree), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def write_tree(root: Path, source: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "_index.yaml").write_text("namespace: t\nentries:\n  - name: main\n    kind: process.lua\n"
                                      "    source: file://main.lua\n")
    (root / "main.lua").write_text(textwrap.dedent(source))
    return root


def test_pingpong_example_runs() -> None:
    """The example prints each round as it happens and exits 0."""
    r = wippy("run", str(EXAMPLE), "--entry", "app:main")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "round 1: pong 1 from pong",
        "round 2: pong 2 from pong",
        "round 3: pong 3 from pong",
        "pong exited: answered 3 pings",
    ]
    assert r.stderr == ""


def test_console_script_is_installed() -> None:
    """The `wippy` console script of the venv runs the same CLI."""
    exe = Path(sys.executable).parent / "wippy"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "wippy 0.1.0"


def test_failing_entry_exits_nonzero_with_reason(tmp_path: Path) -> None:
    """An entry that raises: exit 1, the reason and the Lua traceback on stderr."""
    tree = write_tree(tmp_path / "t", """
        return { main = function()
          print("before")
          error("card declined")
        end }
    """)
    r = wippy("run", str(tree), "--entry", "t:main")
    assert r.returncode == 1
    assert r.stdout == "before\n"
    assert "t:main" in r.stderr and "ended with error" in r.stderr
    assert "main.lua:4: card declined" in r.stderr and "stack traceback" in r.stderr


def test_bad_tree_is_a_short_error(tmp_path: Path) -> None:
    """A tree that cannot load: exit 2, one paragraph naming file and line, no Python traceback."""
    tree = write_tree(tmp_path / "t", "return { main = function() return 1 +  end }\n")
    r = wippy("run", str(tree), "--entry", "t:main")
    assert r.returncode == 2
    assert "main.lua:1:" in r.stderr and "Lua syntax error" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_entry_and_host(tmp_path: Path) -> None:
    """Unknown entry or host: exit 2 with what exists."""
    r = wippy("run", str(EXAMPLE), "--entry", "app:nope")
    assert r.returncode == 2 and "unknown entry 'app:nope'" in r.stderr and "app:main" in r.stderr
    r = wippy("run", str(EXAMPLE), "--entry", "app:main", "--host", "app:procs")
    assert r.returncode == 2 and "unknown host 'app:procs'" in r.stderr
    assert "Traceback" not in r.stderr


def test_print_is_flushed_as_it_happens(tmp_path: Path) -> None:
    """A line printed before a long wait reaches stdout before the process ends."""
    tree = write_tree(tmp_path / "t", """
        return { main = function()
          print("first")
          time.sleep("3s")
          print("second")
        end }
    """)
    proc = start_cli(tree, "--entry", "t:main")
    try:
        assert proc.stdout is not None
        t0 = time.monotonic()
        line = proc.stdout.readline()
        assert line == "first\n"
        assert time.monotonic() - t0 < 2.5
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_without_entry_runs_until_ctrl_c(tmp_path: Path) -> None:
    """Without --entry the node runs its services until SIGINT, then cancels and exits 0."""
    tree = write_tree(tmp_path / "t", "return { main = function() end }\n")
    proc = start_cli(tree)
    try:
        assert proc.stderr is not None
        assert "Ctrl-C to stop" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopping" in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_interrupts_a_running_entry(tmp_path: Path) -> None:
    """SIGINT while an entry runs: it is cancelled (its CANCEL handler runs), exit 130."""
    tree = write_tree(tmp_path / "t", """
        return { main = function()
          local events = process.events()
          print("ready")
          local ev = events:receive()
          print("got " .. ev.kind)
          return "cleaned up"
        end }
    """)
    proc = start_cli(tree, "--entry", "t:main")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "got pid.cancel" in out
        assert "interrupted" in err
    finally:
        if proc.poll() is None:
            proc.kill()


SERVICES = """\
namespace: app
entries:
  - name: ticker
    kind: process.lua
    source: |
      return { main = function(name, fail)
        if fail then error("cannot reach the database") end
        print(name .. " started")
        process.inbox():receive()
      end }
  - name: db
    kind: process.service
    process: app:ticker
    input: [db]
    lifecycle: {auto_start: true}
  - name: api
    kind: process.service
    process: app:ticker
    input: [api]
    lifecycle: {auto_start: true, requires: [app:db]}
  - name: main
    kind: process.lua
    modules: [supervisor]
    source: |
      return { main = function()
        local t = supervisor.tree()
        for _, c in ipairs(t.children) do print(c.id, c.status) end
      end }
"""


def test_run_starts_services_in_dependency_order(tmp_path: Path) -> None:
    """What auto-starts in the tree runs before the entry (the default host exists before the node starts)."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "_index.yaml").write_text(SERVICES)
    r = wippy("run", str(tmp_path / "app"), "--entry", "app:main", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["db started", "api started", "app:db\trunning", "app:api\trunning"]


def test_run_fails_when_a_required_service_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "_index.yaml").write_text(SERVICES.replace("input: [db]", "input: [db, true]"))
    r = wippy("run", str(tmp_path / "app"), "--entry", "app:main", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "cannot start" in r.stderr and "app:db" in r.stderr and "cannot reach the database" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_an_agent_runs_headless_on_the_local_model(tmp_path: Path) -> None:
    """`wippy run` of a tree with a tool, an agent and a process that runs it: the node serves `local`."""
    (tmp_path / "_index.yaml").write_text(textwrap.dedent("""\
        namespace: app
        entries:
          - name: add
            kind: function.lua
            meta:
              type: tool
              llm_description: adds two numbers a and b
              input_schema: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
            source: "return { main = function(args) return args.a + args.b end }"
          - name: helper
            kind: registry.entry
            meta: {type: agent.gen1, name: helper}
            prompt: Use a tool when one fits, then answer with its result.
            temperature: 0
            max_tokens: 64
            tools: [app:add]
          - name: main
            kind: process.lua
            modules: [agent]
            source: |
              return { main = function()
                local r, err = agent.run("app:helper", "What is 10 plus 32?", {max_steps = 3})
                if not r then error(err) end
                print("steps", r.steps, "session", type(r.session))
              end }
        """))
    r = wippy("run", str(tmp_path), "--entry", "app:main", timeout=120)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1].split("\t")
    assert line[0] == "steps" and 1 <= int(line[1]) <= 3 and line[2:] == ["session", "string"]
