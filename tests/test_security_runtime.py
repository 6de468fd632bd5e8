"""Security wired into the runtime (API.md, "Security"; issue 12): every checked action from Lua and from
Python, refused with API.md's text and proven not to have happened; open and strict mode; deny wins;
conditions and groups; host default scopes for tree processes; inheritance and narrowing on spawn
(local and on another host); function calls in the caller's context; policies changed while processes
run; the audit trail (``security.denied`` events, ``node.security.denials``); and the attacks the issue
lists (fake handles, unknown policy IDs, the sandbox's metatables and rawset, widening).

The policy engine's table (allow, deny, undefined, conditions, globs) is tests/test_security.py.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wippy.runtime import EntryError, Node, SecurityError
from wippy.runtime.entries import Entry

_ids = itertools.count(1)


def policy(pid: str, actions: list[str], resources: list[str], effect: str = "allow",
           groups: list[str] | None = None, conditions: list[dict[str, Any]] | None = None) -> Entry:
    body: dict[str, Any] = {"actions": actions, "resources": resources, "effect": effect}
    if conditions:
        body["conditions"] = conditions
    return Entry(pid, "security.policy", {}, {"groups": groups or [], "policy": body})


# The policies most tests use. Group "base" lets the notebook spawn the test's entries; the others are
# what a test narrows the notebook (and so the processes it spawns) to.
POLICIES = [
    policy("sec:spawn", ["process.spawn"], ["test:*"], groups=["base", "spawner"]),
    policy("sec:read_config", ["registry.get", "registry.find"], ["app.config:*"], groups=["reader"]),
    policy("sec:no_secret", ["registry.get", "registry.find"], ["app.config:secret"], "deny", groups=["reader"]),
    policy("sec:write_config", ["registry.apply"], ["app.config:*"], groups=["writer"]),
    policy("sec:send_any", ["process.send"], ["*"], groups=["sender"]),
    policy("sec:kill", ["process.terminate", "process.cancel"], ["*"], groups=["killer"]),
    policy("sec:call", ["funcs.call"], ["app.fn:*"], groups=["caller"]),
    policy("sec:workflows", ["workflow.*"], ["*"], groups=["wf"]),
    policy("sec:rollback", ["registry.apply_version"], ["*"], groups=["roller"]),
]
CONFIG = [
    Entry("app.config:db", "registry.entry", {}, {"url": "postgres://db"}),
    Entry("app.config:secret", "registry.entry", {}, {"key": "hunter2"}),
    Entry("app.other:x", "registry.entry", {}, {"v": 1}),
]
MODULES = ["security", "registry", "funcs", "workflow"]


@pytest.fixture
def strict() -> Iterator[Node]:
    """A started node with :data:`POLICIES` and :data:`CONFIG` (strict mode); the notebook has every right."""
    n = Node(output=None).start()
    n.apply([*POLICIES, *CONFIG])
    yield n
    n.stop(grace=0.5)


def lua(node: Node, body: str, modules: list[str] | None = None, **data: Any) -> str:
    """Define ``body`` (the inside of ``function(...)``) as a fresh process.lua entry; return its ID."""
    entry = f"test:p{next(_ids)}"
    node.define(entry, "process.lua", source="return { main = function(...)\n" + body + "\nend }",
                modules=MODULES if modules is None else modules, **data)
    return entry


def as_(node: Node, groups: list[str], body: str, *args: Any, actor: str = "worker",
        meta: dict[str, Any] | None = None, entry: str | None = None) -> Any:
    """Run ``body`` as a process spawned by the notebook narrowed to ``groups`` (plus ``base``, so it may
    spawn it) acting as ``actor``; the notebook gets every right back afterwards. Returns its result."""
    entry = entry or lua(node, body)
    node.whoami(actor=actor, meta=meta, groups=["base", *groups])
    try:
        return node.exec(entry, *args, timeout=10)
    finally:
        node.whoami(reset=True)


def denied(action: str, resource: str, actor: str = "worker", by: str | None = None) -> str:
    """API.md's refusal text."""
    why = f"denied by policy {by}" if by else "no policy allows it"
    return f"permission denied: {action} on {resource} for actor {actor} ({why})"


def counter(node: Node) -> str:
    """A process (full rights) that counts messages and answers ``count`` with the count so far."""
    entry = lua(node, """
      local n = 0
      while true do
        local m = process.inbox():receive()
        if m:topic() == "count" then process.send(m:from(), "count", n) else n = n + 1 end
      end""", modules=[])
    return node.spawn(entry)


def count(node: Node, pid: str) -> int:
    with node.mailbox() as mb:
        mb.send(pid, "count")
        return int(mb.receive(timeout=10).payload)


# ---------------------------------------------------------------------------------------------- modes
def test_open_node_allows_everything_and_says_so_once() -> None:
    """No security.policy entry: every call allowed, as in wave 1; the log says once that it runs open."""
    n = Node(output=None).start()
    try:
        assert n.security.mode == "open"
        n.apply(CONFIG)
        n.define("app:again", "registry.entry")
        out = n.exec(lua(n, """
          local e = registry.get("app.config:secret")
          local c = registry.snapshot():changes()
          c:update({id = "app.config:db", kind = "registry.entry", data = {url = "changed"}})
          return {e.data.key, c:apply() ~= nil, security.can("registry.apply", "anything:at_all")}"""))
        assert out == ["hunter2", True, True]
        notes = [line for line in n.logs("security") if "runs open" in line]
        assert len(notes) == 1, n.logs("security")
        assert n.security.denials == []
    finally:
        n.stop(grace=0.5)


def tree_exec(node: Node, entry: str, host: str | None = None) -> Any:
    """Run ``entry`` as a process of the tree (its entry's ID as actor, its host's default scope)."""
    with node.mailbox() as mb:
        pid = node.spawn(entry, host=host, monitor=mb, as_tree=True)
        ev = mb.wait_exit(pid, 10)
    assert ev.result.get("error") is None, ev.result
    return ev.result.get("value")


def test_the_first_policy_makes_the_node_strict_and_deleting_the_last_opens_it() -> None:
    n = Node(output=None).start()
    try:
        n.apply(CONFIG)
        entry = lua(n, "return {registry.get('app.other:x')}", modules=["registry"])
        assert tree_exec(n, entry)[0]["id"] == "app.other:x"
        n.apply([policy("sec:only", ["registry.get"], ["app.config:*"], groups=["g"])])
        assert n.security.mode == "strict"
        # a tree process on a host without default_scope holds no policy: refused
        assert tree_exec(n, entry) == {2: denied("registry.get", "app.other:x", actor=entry)}
        n.apply([], delete=["sec:only"])
        assert n.security.mode == "open"
        assert tree_exec(n, entry)[0]["id"] == "app.other:x"
    finally:
        n.stop(grace=0.5)


# ---------------------------------------------------------------------------------------------- spawn
def test_spawn_refused_from_lua_starts_nothing(strict: Node) -> None:
    """process.spawn is checked on the entry ID (and the host); a refusal is nil, err and no process."""
    strict.define("other:thing", "process.lua", source="return { main = function() end }")
    spawns = strict.events.subscribe("spawn")
    try:
        out = as_(strict, [], """
          local pid, err = process.spawn("other:thing", "app:processes")
          local ok, err2 = process.spawn("test:does_not_matter_yet", "app:processes")
          return {pid == nil, err}""")
        assert out == [True, denied("process.spawn", "other:thing")]
        entries = [e.entry for e in spawns.drain()]
        assert "other:thing" not in entries
    finally:
        spawns.close()
    assert not any(p.entry == "other:thing" for p in strict.statistics().processes)


def test_spawn_refused_from_python_raises_and_starts_nothing(strict: Node) -> None:
    strict.define("other:thing", "process.lua", source="return { main = function() end }")
    strict.whoami(groups=["base"])
    with pytest.raises(SecurityError) as exc:
        strict.spawn("other:thing")
    assert str(exc.value) == denied("process.spawn", "other:thing", actor="notebook")
    assert not any(p.entry == "other:thing" for p in strict.statistics().processes)
    strict.whoami(reset=True)
    strict.define("test:ok", "process.lua", source="return { main = function() return 1 end }")
    assert strict.exec("test:ok") == 1


def test_a_policy_on_the_host_allows_any_entry_there(strict: Node) -> None:
    """A spawn is one decision over entry and host: an allow naming the host permits any entry on it;
    a deny on either refuses."""
    strict.apply([
        Entry("app:sandbox", "process.host", {}, {}),
        policy("sec:sandbox", ["process.spawn"], ["app:sandbox"], groups=["sandboxed"]),
        policy("sec:no_evil", ["process.spawn"], ["evil:*"], "deny", groups=["sandboxed"]),
    ])
    strict.define("other:thing", "process.lua", source="return { main = function() return 'ran' end }")
    strict.define("evil:thing", "process.lua", source="return { main = function() return 'evil' end }")
    out = as_(strict, ["sandboxed"], """
      local a = process.exec("other:thing", "app:sandbox")
      local b, e1 = process.exec("other:thing", "app:processes")
      local c, e2 = process.exec("evil:thing", "app:sandbox")
      return {a, b == nil and c == nil, e1, e2}""")
    assert out == ["ran", True, denied("process.spawn", "other:thing"),
                   denied("process.spawn", "evil:thing", by="sec:no_evil")]


# ---------------------------------------------------------------------------------------------- send
def test_send_refused_from_lua_delivers_nothing(strict: Node) -> None:
    target = counter(strict)
    out = as_(strict, [], """
      local ok, err = process.send(..., "hello", {1, 2})
      return {ok == nil, err}""", target)
    assert out == [True, denied("process.send", target)]
    assert count(strict, target) == 0
    assert as_(strict, ["sender"], "return process.send(..., 'hello')", target) is True
    assert count(strict, target) == 1


def test_send_by_name_is_checked_on_the_name(strict: Node) -> None:
    target = counter(strict)
    strict.register("billing", target)
    strict.apply([policy("sec:billing", ["process.send"], ["billing"], groups=["billing"])])
    out = as_(strict, ["billing"], """
      local a = process.send("billing", "x")
      local b, err = process.send(..., "x")
      return {a, err}""", target)
    assert out == [True, denied("process.send", target)]
    assert count(strict, target) == 1


def test_send_refused_from_python_raises_and_delivers_nothing(strict: Node) -> None:
    target = counter(strict)
    strict.whoami(groups=["base"])
    with pytest.raises(SecurityError) as exc:
        strict.send(target, "hello")
    assert str(exc.value) == denied("process.send", target, actor="notebook")
    with strict.mailbox() as mb, pytest.raises(SecurityError):
        mb.send(target, "hello")
    strict.whoami(reset=True)
    assert count(strict, target) == 0


# ---------------------------------------------------------------------------------------------- terminate, cancel
def test_terminate_and_cancel_refused_from_lua_leave_the_target_running(strict: Node) -> None:
    target = counter(strict)
    out = as_(strict, [], """
      local a, e1 = process.terminate(...)
      local b, e2 = process.cancel(..., "go away")
      return {a == nil and b == nil, e1, e2}""", target)
    assert out == [True, denied("process.terminate", target), denied("process.cancel", target)]
    assert strict.alive(target) and count(strict, target) == 0
    assert as_(strict, ["killer"], "return process.terminate(...)", target) is True
    strict_wait_dead(strict, target)


def strict_wait_dead(node: Node, pid: str) -> None:
    deadline = time.monotonic() + 10
    while node.alive(pid):
        assert time.monotonic() < deadline, f"{pid} still runs"
        time.sleep(0.01)


def test_terminate_and_cancel_refused_from_python(strict: Node) -> None:
    target = counter(strict)
    strict.whoami(groups=["base"])
    with pytest.raises(SecurityError) as e1:
        strict.terminate(target)
    with pytest.raises(SecurityError) as e2:
        strict.cancel(target, "stop")
    strict.whoami(reset=True)
    assert str(e1.value) == denied("process.terminate", target, actor="notebook")
    assert str(e2.value) == denied("process.cancel", target, actor="notebook")
    assert strict.alive(target) and count(strict, target) == 0


# ---------------------------------------------------------------------------------------------- registry
def test_registry_get_and_find_see_only_what_is_allowed(strict: Node) -> None:
    """registry.get refuses (a deny names its policy); find and snapshot reads hide what is not allowed."""
    out = as_(strict, ["reader"], """
      local db = registry.get("app.config:db")
      local s, e1 = registry.get("app.config:secret")
      local o, e2 = registry.get("app.other:x")
      local ids = {}
      for _, e in ipairs(registry.find({[".kind"] = "registry.entry"})) do ids[#ids + 1] = e.id end
      table.sort(ids)
      local snap = registry.snapshot()
      local sids = {}
      for _, e in ipairs(snap:entries()) do sids[#sids + 1] = e.id end
      table.sort(sids)
      return {db.data.url, e1, e2, ids, sids, snap:get("app.config:secret") == nil}""")
    assert out == ["postgres://db", denied("registry.get", "app.config:secret", by="sec:no_secret"),
                   denied("registry.get", "app.other:x"), ["app.config:db"], ["app.config:db"], True]


def test_registry_apply_refused_changes_nothing(strict: Node) -> None:
    entry = lua(strict, """
      local c = registry.snapshot():changes()
      c:update({id = "app.config:db", kind = "registry.entry", data = {url = "evil"}})
      local v, err = c:apply()
      local c2 = registry.snapshot():changes()
      c2:create({id = "app.config:new", kind = "registry.entry", data = {}})
      c2:delete("app.other:x")
      local v2, err2 = c2:apply()
      return {v == nil and v2 == nil, err, err2}""")
    before = strict.registry.version
    out = as_(strict, ["reader"], "", entry=entry)
    assert out == [True, denied("registry.apply", "app.config:db"), denied("registry.apply", "app.config:new")]
    assert strict.registry.version == before
    assert strict.registry.get("app.config:db").data["url"] == "postgres://db"
    assert strict.registry.get("app.config:new") is None and strict.registry.get("app.other:x") is not None


def test_registry_apply_allowed_on_its_namespace_only(strict: Node) -> None:
    out = as_(strict, ["reader", "writer"], """
      local c = registry.snapshot():changes()
      c:update({id = "app.config:db", kind = "registry.entry", data = {url = "new"}})
      local v = c:apply()
      return {v, registry.get("app.config:db").data.url}""")
    assert out == [strict.registry.version, "new"]


def test_registry_apply_from_python_is_checked_on_each_entry(strict: Node) -> None:
    before = strict.registry.version
    strict.whoami(groups=["writer"])
    try:
        with pytest.raises(SecurityError) as exc:
            strict.apply([Entry("app.config:db", "registry.entry", {}, {"url": "x"}),
                          Entry("app.other:y", "registry.entry", {}, {})])
        assert str(exc.value) == denied("registry.apply", "app.other:y", actor="notebook")
        assert strict.registry.version == before
        strict.apply([Entry("app.config:db", "registry.entry", {}, {"url": "x"})])
        assert strict.registry.version == before + 1
    finally:
        strict.whoami(reset=True)


def test_registry_apply_version_is_checked(strict: Node) -> None:
    refused = lua(strict, "local v, err = registry.apply_version(...); return {v == nil, err}")
    allowed = lua(strict, "return registry.apply_version(...)")
    strict.define("app.config:v", "registry.entry")
    v = strict.registry.version
    out = as_(strict, [], "", v - 1, entry=refused)
    assert out == [True, denied("registry.apply_version", str(v - 1))]
    assert strict.registry.version == v and strict.registry.get("app.config:v") is not None
    strict.whoami(groups=["base"])
    try:
        with pytest.raises(SecurityError) as exc:
            strict.apply_version(v - 1)
        assert str(exc.value) == denied("registry.apply_version", str(v - 1), actor="notebook")
        assert strict.registry.version == v
    finally:
        strict.whoami(reset=True)
    assert as_(strict, ["roller"], "", v - 1, entry=allowed) == v + 1
    assert strict.registry.get("app.config:v") is None


# ---------------------------------------------------------------------------------------------- funcs.call
def test_funcs_call_is_checked_and_runs_in_the_callers_context(strict: Node) -> None:
    """A function runs as its caller: it may read what the caller may, no more, and cannot keep a
    wider scope after it returns (there is no call that widens one)."""
    strict.define("app.fn:read", "function.lua", modules=["registry", "security"], source="""
      return { main = function(id)
        local e, err = registry.get(id)
        local ok, werr = pcall(function()
          return process.with_context({}):with_scope(security.new_scope({"sec:kill"}))
        end)
        return {e and e.id or err, security.actor():id(), tostring(security.scope()), ok, tostring(werr)}
      end }""")
    strict.define("other.fn:x", "function.lua", source="return { main = function() return 'ran' end }")
    out = as_(strict, ["caller", "reader"], """
      local a = funcs.call("app.fn:read", "app.config:db")
      local b = funcs.call("app.fn:read", "app.other:x")
      local c, err = funcs.call("other.fn:x")
      return {a, b, c == nil, err, tostring(security.scope())}""")
    scope = "scope(sec:call, sec:no_secret, sec:read_config, sec:spawn)"
    assert out[0][:4] == ["app.config:db", "worker", scope, False]
    assert "sec:kill" in out[0][4] and "widen" in out[0][4]
    assert out[1][0] == denied("registry.get", "app.other:x")
    assert out[2] is True and out[3] == denied("funcs.call", "other.fn:x")
    assert out[4] == scope


def test_call_function_from_python_is_checked(strict: Node) -> None:
    strict.define("app.fn:read", "function.lua", modules=["registry", "security"], source="""
      return { main = function(id) local e, err = registry.get(id); return e and e.id or err end }""")
    strict.define("other.fn:x", "function.lua", source="return { main = function() return 'ran' end }")
    strict.whoami(actor="analyst", groups=["caller", "reader"])
    try:
        assert strict.call_function("app.fn:read", "app.config:db") == "app.config:db"
        assert strict.call_function("app.fn:read", "app.other:x") == denied("registry.get", "app.other:x",
                                                                              actor="analyst")
        with pytest.raises(SecurityError) as exc:
            strict.call_function("other.fn:x")
        assert str(exc.value) == denied("funcs.call", "other.fn:x", actor="analyst")
    finally:
        strict.whoami(reset=True)


# ---------------------------------------------------------------------------------------------- workflows
@pytest.fixture
def wf_node(tmp_path: Path) -> Iterator[Node]:
    n = Node(output=None, data_dir=tmp_path / "data").start()
    n.apply([*POLICIES, *CONFIG])
    n.define("app.wf:flow", "workflow.lua", modules=["workflow"], source="""
      return { main = function() return process.inbox():receive():topic() end }""")
    yield n
    n.stop(grace=0.5)


def test_workflow_start_signal_cancel_from_lua(wf_node: Node) -> None:
    n = wf_node
    wid = n.workflows.start("app.wf:flow", workflow_id="w1")
    out = as_(n, [], """
      local pid, e1 = process.with_options({workflow_id = "w2"}):spawn("app.wf:flow", "app:processes")
      local s, e2 = workflow.signal("w1", "go", {})
      local c, e3 = workflow.cancel("w1", "no")
      return {pid == nil and s == nil and c == nil, e1, e2, e3}""")
    assert out == [True, denied("workflow.start", "app.wf:flow"), denied("workflow.signal", "w1"),
                   denied("workflow.cancel", "w1")]
    assert n.workflows.status(wid) == "running"
    assert [w for w in n.workflows.list() if w.workflow_id == "w2"] == []
    assert as_(n, ["wf"], "return workflow.signal('w1', 'go', {})") is not None
    assert n.workflows.result(wid, timeout=10) == "go"


def test_workflow_start_signal_cancel_from_python(wf_node: Node) -> None:
    n = wf_node
    wid = n.workflows.start("app.wf:flow", workflow_id="w1")
    n.whoami(groups=["base"])
    try:
        with pytest.raises(SecurityError) as e1:
            n.workflows.start("app.wf:flow", workflow_id="w3")
        with pytest.raises(SecurityError) as e2:
            n.workflows.signal(wid, "go")
        with pytest.raises(SecurityError) as e3:
            n.workflows.cancel(wid)
    finally:
        n.whoami(reset=True)
    assert str(e1.value) == denied("workflow.start", "app.wf:flow", actor="notebook")
    assert str(e2.value) == denied("workflow.signal", "w1", actor="notebook")
    assert str(e3.value) == denied("workflow.cancel", "w1", actor="notebook")
    assert n.workflows.status(wid) == "running"


# ---------------------------------------------------------------------------------------------- conditions, groups
def test_conditions_on_the_actors_meta(strict: Node) -> None:
    """A policy with a condition counts only for actors whose meta holds it."""
    strict.apply([policy("sec:admins", ["registry.apply"], ["app.other:*"], groups=["admin"],
                         conditions=[{"field": "actor.meta.role", "operator": "eq", "value": "admin"}])])
    body = """
      local c = registry.snapshot():changes()
      c:update({id = "app.other:x", kind = "registry.entry", data = {v = 2}})
      local v, err = c:apply()
      return {v ~= nil, err or "", security.actor():meta().role}"""
    entry = lua(strict, body)
    assert as_(strict, ["admin"], "", entry=entry, actor="ann", meta={"role": "user"}) == [
        False, denied("registry.apply", "app.other:x", actor="ann"), "user"]
    assert strict.registry.get("app.other:x").data["v"] == 1
    assert as_(strict, ["admin"], "", entry=entry, actor="bob", meta={"role": "admin"}) == [True, "", "admin"]
    assert strict.registry.get("app.other:x").data["v"] == 2


def test_named_scope_is_every_policy_of_a_group(strict: Node) -> None:
    out = as_(strict, ["reader", "writer"], """
      local s = security.named_scope("reader")
      local ok, err = pcall(security.named_scope, "nobody")
      return {s:policies(), s:contains("sec:read_config"), s:contains("sec:kill"), ok, err}""")
    assert out[:4] == [["sec:no_secret", "sec:read_config"], True, False, False]
    assert "unknown policy group 'nobody'" in out[4] and "reader" in out[4]


def test_can_answers_without_recording_a_refusal(strict: Node) -> None:
    before = len(strict.security.denials)
    out = as_(strict, ["reader"], """
      return {security.can("registry.get", "app.config:db"), security.can("registry.get", "app.config:secret"),
              security.can("process.send", "{app:processes|0x00001}")}""")
    assert out == [True, False, False]
    assert len(strict.security.denials) == before


# ---------------------------------------------------------------------------------------------- tree processes
def test_tree_processes_run_in_their_hosts_default_scope(strict: Node) -> None:
    """A process the node starts from its tree acts as its entry ID in its host's default_scope; the
    scope follows the host entry as the registry has it."""
    strict.apply([Entry("app:readers", "process.host", {}, {"host": {"default_scope": ["reader"]}})])
    entry = lua(strict, """
      local db, e1 = registry.get("app.config:db")
      local s, e2 = registry.get("app.config:secret")
      return {db and db.id or e1, e2, security.actor():id(), tostring(security.scope())}""")
    assert tree_exec(strict, entry, host="app:readers") == [
        "app.config:db", denied("registry.get", "app.config:secret", actor=entry, by="sec:no_secret"), entry,
        "scope(sec:no_secret, sec:read_config)"]
    assert tree_exec(strict, entry)[0] == denied("registry.get", "app.config:db", actor=entry)
    strict.apply([Entry("app:readers", "process.host", {}, {"host": {"default_scope": ["writer"]}})])
    assert tree_exec(strict, entry, host="app:readers")[0] == denied("registry.get", "app.config:db", actor=entry)


def test_a_service_runs_in_its_hosts_default_scope(strict: Node) -> None:
    """A process.service is a tree process: its entry's ID is its actor, its host's default scope its scope."""
    strict.define("test:svc", "process.lua", modules=["security", "registry"], source="""
      return { main = function()
        local db, err = registry.get("app.config:db")
        process.send("probe", "report", {actor = security.actor():id(), db = db and db.id or err})
        process.inbox():receive()
      end }""")
    strict.apply([
        Entry("app:readers", "process.host", {}, {"host": {"default_scope": ["reader", "sender"]},
                                                   "lifecycle": {"auto_start": True}}),
        Entry("app:svc", "process.service", {}, {"process": "test:svc", "host": "app:readers"}),
    ])
    with strict.mailbox("probe") as mb:
        strict.supervision.start("app:svc")
        msg = mb.receive(timeout=10)
    assert msg.payload == {"actor": "test:svc", "db": "app.config:db"}


def test_wippy_run_runs_its_entry_as_a_tree_process(tmp_path: Path) -> None:
    """`wippy run DIR --entry ID`: the entry acts as its ID in its host's default scope."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "_index.yaml").write_text(textwrap.dedent("""\
        namespace: t
        entries:
          - name: main
            kind: process.lua
            modules: [registry, security]
            source: file://main.lua
          - name: readers
            kind: process.host
            host: {default_scope: [readers]}
          - name: read
            kind: security.policy
            groups: [readers]
            policy: {actions: [registry.get], resources: ["t:config"], effect: allow}
          - name: config
            kind: registry.entry
            data: {v: 1}
          - name: hidden
            kind: registry.entry
        """))
    (root / "main.lua").write_text(textwrap.dedent("""\
        return { main = function()
          local c = registry.get("t:config")
          local h, err = registry.get("t:hidden")
          print(security.actor():id(), c and c.id, err)
        end }
        """))
    r = subprocess.run([sys.executable, "-m", "wippy.runtime.cli", "run", str(root), "--entry", "t:main",
                        "--host", "t:readers", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "t:main\tt:config\t" + denied("registry.get", "t:hidden", actor="t:main") + "\n"


# ---------------------------------------------------------------------------------------------- inheritance, narrowing
CHILD = """
  local e, err = registry.get("app.config:db")
  return {security.actor():id(), tostring(security.scope()), e and e.id or err}"""


def test_a_child_inherits_its_spawners_actor_and_scope_here_and_on_another_host(strict: Node) -> None:
    strict.apply([Entry("app:other_host", "process.host", {}, {"lifecycle": {"auto_start": True}})])
    child = lua(strict, CHILD)
    scope = "scope(sec:no_secret, sec:read_config, sec:spawn)"
    out = as_(strict, ["reader"], f"""
      local here = process.exec("{child}", "app:processes")
      local there = process.exec("{child}", "app:other_host")
      return {{here, there}}""", actor="inheritor")
    assert out == [["inheritor", scope, "app.config:db"], ["inheritor", scope, "app.config:db"]]


def test_a_child_narrowed_to_fewer_policies_and_another_actor(strict: Node) -> None:
    strict.apply([Entry("app:other_host", "process.host", {}, {"lifecycle": {"auto_start": True}})])
    child = lua(strict, CHILD)
    out = as_(strict, ["reader"], f"""
      local narrow = security.scope():without("sec:read_config")
      local sp = process.with_context({{}}):with_actor(security.new_actor("child", {{}})):with_scope(narrow)
      return {{sp:exec("{child}", "app:processes"), sp:exec("{child}", "app:other_host"),
              tostring(security.scope())}}""")
    assert out == [["child", "scope(sec:no_secret, sec:spawn)", denied("registry.get", "app.config:db", "child")],
                   ["child", "scope(sec:no_secret, sec:spawn)", denied("registry.get", "app.config:db", "child")],
                   "scope(sec:no_secret, sec:read_config, sec:spawn)"]


def test_widening_a_scope_is_refused_naming_the_extra_policies(strict: Node) -> None:
    child = lua(strict, CHILD)
    out = as_(strict, ["reader"], f"""
      local wide = security.scope():with("sec:kill")
      local ok, err = pcall(function() return process.with_context({{}}):with_scope(wide) end)
      local ok2, err2 = pcall(function()
        return process.with_context({{}}):with_scope(security.new_scope({{"sec:write_config", "sec:spawn"}}))
      end)
      local r, err3 = process.exec("{child}", "app:processes")
      return {{ok, err, ok2, err2, r[2]}}""")
    assert out[0] is False and "with_scope:" in out[1] and "sec:kill" in out[1] and "narrowed" in out[1]
    assert out[2] is False and "sec:write_config" in out[3]
    assert out[4] == "scope(sec:no_secret, sec:read_config, sec:spawn)"


def test_whoami_narrows_the_notebook_and_cannot_widen_it() -> None:
    n = Node(output=None).start()
    try:
        n.apply([*POLICIES, *CONFIG])
        assert n.whoami(groups=["reader", "base"]) == ("notebook", ["sec:no_secret", "sec:read_config", "sec:spawn"])
        with pytest.raises(SecurityError, match="sec:kill"):
            n.whoami(groups=["killer"])
        with pytest.raises(SecurityError, match="unknown policy group 'nope'"):
            n.whoami(groups=["nope"])
        shell = n.shell()
        assert shell.run("return tostring(security.scope())").value == \
            "scope(sec:no_secret, sec:read_config, sec:spawn)"
        assert n.whoami(reset=True) == ("notebook", ["*"])
        assert shell.run("return tostring(security.scope())").value == "scope(*)"
    finally:
        n.stop(grace=0.5)


# ---------------------------------------------------------------------------------------------- policies change
def test_a_policy_added_or_deleted_while_a_process_runs_counts_at_its_next_call(strict: Node) -> None:
    """Decisions are cached per context, action and resource until the policy set changes."""
    entry = lua(strict, """
      local out = {}
      while true do
        local m = process.inbox():receive()
        if m:topic() == "stop" then return out end
        local e, err = registry.get("app.other:x")
        out[#out + 1] = e and "allowed" or err
        process.send(m:from(), "done")
      end""")
    strict.apply([policy("sec:other", ["registry.get"], ["app.other:*"], groups=["other"])])
    strict.whoami(actor="w", groups=["base", "other", "sender"])
    with strict.mailbox() as mb:
        pid = strict.spawn(entry, monitor=mb)
        strict.whoami(reset=True)

        def ask() -> None:
            mb.send(pid, "go")
            assert mb.receive(timeout=10).topic == "done"
        ask()
        strict.apply([policy("sec:other_no", ["registry.get"], ["app.other:x"], "deny", groups=["other"])])
        ask()   # not in the process's scope (it was made before): still allowed
        strict.apply([policy("sec:other", ["registry.get"], ["app.other:*"], "deny", groups=["other"])])
        ask()   # the same ID, now a deny
        strict.apply([], delete=["sec:other"])
        ask()   # deleted: no policy of its scope allows it
        mb.send(pid, "stop")
        ev = mb.wait_exit(pid, 10)
    assert ev.result["value"] == ["allowed", "allowed", denied("registry.get", "app.other:x", "w", "sec:other"),
                                  denied("registry.get", "app.other:x", "w")]


def test_a_bad_policy_is_refused_at_commit_with_its_field_path(strict: Node) -> None:
    before = strict.registry.version
    bad = Entry("app:p", "security.policy", {}, {"policy": {
        "actions": ["registry.get"], "resources": ["*"], "effect": "allow",
        "conditions": [{"field": "actor.id", "operator": "like", "value": "x"}]}})
    with pytest.raises(EntryError) as exc:
        strict.apply([bad, Entry("app.config:more", "registry.entry", {}, {})])
    assert str(exc.value).startswith("entry 'app:p': policy.conditions[0].operator: must be one of eq, ne")
    bad2 = Entry("app:p", "security.policy", {}, {"policy": {"actions": ["process.fly"], "resources": ["*"],
                                                             "effect": "allow"}})
    with pytest.raises(EntryError, match=r"entry 'app:p': policy\.actions\[0\]"):
        strict.apply([bad2])
    nothing = Entry("app:p", "security.policy", {}, {"policy": {"actions": ["registry.get"],
                                                                "resources": ["app config:*"], "effect": "allow"}})
    with pytest.raises(EntryError, match=r"entry 'app:p': policy\.resources\[0\]: 'app config:\*' can match nothing"):
        strict.apply([nothing])
    with pytest.raises(EntryError, match="default_scope"):
        strict.apply([Entry("app:h", "process.host", {}, {"host": {"default_scope": ["no_such_group"]}})])
    assert strict.registry.version == before and strict.registry.get("app.config:more") is None
    assert "app:h" not in strict.hosts


# ---------------------------------------------------------------------------------------------- audit trail
def test_every_refusal_is_an_event_and_a_row(strict: Node) -> None:
    strict.security.clear_denials()
    sub = strict.events.subscribe("security.denied")
    try:
        entry = lua(strict, "registry.get('app.config:secret'); registry.get('app.config:secret'); "
                            "return process.pid()")
        pid = as_(strict, ["reader"], "", entry=entry)
        evs = sub.drain()
    finally:
        sub.close()
    rows = strict.security.denials
    # cached or not, each refusal is recorded
    assert [(r.pid, r.actor, r.action, r.resource, r.policy) for r in rows] == \
        [(pid, "worker", "registry.get", "app.config:secret", "sec:no_secret")] * 2
    assert rows[0].message == denied("registry.get", "app.config:secret", by="sec:no_secret")
    assert [(e.kind, e.pid, e.actor, e.action, e.resource, e.policy) for e in evs] == \
        [("security.denied", pid, "worker", "registry.get", "app.config:secret", "sec:no_secret")] * 2


# ---------------------------------------------------------------------------------------------- attacks
def test_a_table_shaped_like_an_actor_or_a_scope_is_refused(strict: Node) -> None:
    lua(strict, CHILD)
    out = as_(strict, ["reader"], """
      local fake_actor = setmetatable({}, {__index = {id = function() return "notebook" end}})
      local fake_scope = {policies = function() return {"sec:kill"} end}
      local ok1, e1 = pcall(function() return process.with_context({}):with_actor(fake_actor) end)
      local ok2, e2 = pcall(function() return process.with_context({}):with_scope(fake_scope) end)
      local ok3, e3 = pcall(function() return process.with_context({}):with_actor("notebook") end)
      local ok4, e4 = pcall(security.scope().policies, fake_scope)
      return {ok1, e1, ok2, e2, ok3, e3, ok4, e4}""")
    assert out[0] is False and "a table shaped like an actor is not an actor" in out[1]
    assert out[2] is False and "a table shaped like a scope is not a scope" in out[3]
    assert out[4] is False and "expected an actor" in out[5] and "got string" in out[5]
    assert out[6] is False and "expected a scope" in out[7]


def test_a_scope_of_a_policy_that_does_not_exist_is_refused(strict: Node) -> None:
    out = as_(strict, ["reader"], """
      local ok1, e1 = pcall(security.new_scope, {"sec:read_config", "sec:ghost"})
      local ok2, e2 = pcall(security.policy, "sec:ghost")
      local ok3, e3 = pcall(function() return security.scope():with("sec:ghost") end)
      return {ok1, e1, ok2, e2, ok3, e3}""")
    assert out[0] is False and "sec:ghost" in out[1]
    assert out[2] is False and "sec:ghost" in out[3]
    assert out[4] is False and "sec:ghost" in out[5]


def test_the_module_and_handles_cannot_be_changed_or_opened(strict: Node) -> None:
    """rawset on the module, setmetatable / getmetatable on handles, pairs over a handle: nothing leaks
    and nothing changes the process's identity."""
    out = as_(strict, ["reader"], """
      local a = security.actor()
      local r = {}
      r[1] = select(2, pcall(rawset, security, "actor", function() return nil end))
      r[2] = select(2, pcall(function() security.can = function() return true end end))
      r[3] = select(2, pcall(setmetatable, a, {}))
      r[4] = tostring(getmetatable(a))
      r[5] = select(2, pcall(rawset, a, "id", function() return "notebook" end))
      local n = 0
      for k, v in pairs(a) do n = n + 1 end
      r[6] = n
      local n2 = 0
      for k, v in pairs(getmetatable(security.scope()) == "scope" and {} or getmetatable(security.scope())) do
        n2 = n2 + 1
      end
      r[7] = n2
      r[8] = security.actor():id()
      r[9] = security.can("process.terminate", "anything")
      return r""")
    assert all("read-only table" in out[i] for i in (0, 1, 2, 4)), out
    assert out[3] == "actor" and out[5] == 0 and out[6] == 0
    assert out[7] == "worker" and out[8] is False


def test_a_handle_sent_in_a_message_is_not_a_handle(strict: Node) -> None:
    """Messages are copied as plain data: a scope handle arrives as a plain (empty) table, never as a
    usable identity."""
    out = as_(strict, ["reader", "sender"], """
      local ok, err = process.send(process.pid(), "mine", security.scope())
      local got = nil
      if ok then
        local m = process.inbox():receive()
        local sc = m:payload():data()
        local ok2, e2 = pcall(function() return process.with_context({}):with_scope(sc) end)
        got = {ok2, tostring(e2)}
      end
      return {ok == true, tostring(err), got}""")
    assert out[0] is True, out
    assert out[2][0] is False and "a table shaped like a scope is not a scope" in out[2][1]


# ---------------------------------------------------------------------------------------------- the process table
def test_the_process_table_shows_each_processs_actor(strict: Node) -> None:
    """node.statistics() (%ps, the live table): a narrowed child's actor, a tree process's entry ID,
    the notebook for the shell and for what cells and Python spawn."""
    waiter = lua(strict, "process.inbox():receive()", modules=[])
    spawner = lua(strict, f"""
      local pid = process.with_context({{}}):with_actor(security.new_actor("worker-7", {{}})):spawn("{waiter}",
        "app:processes")
      return pid""")
    child = strict.exec(spawner)
    mine = strict.spawn(waiter)
    tree = strict.spawn(waiter, as_tree=True)
    shell = strict.shell().pid
    actors = {p.pid: p.actor for p in strict.statistics().processes}
    assert actors[child] == "worker-7" and actors[mine] == "notebook" and actors[tree] == waiter
    assert actors[shell] == "notebook"
    strict.whoami(actor="ann")
    try:
        assert {p.pid: p.actor for p in strict.statistics().processes}[shell] == "ann"
    finally:
        strict.whoami(reset=True)
