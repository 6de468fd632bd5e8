"""The Lua `registry` module's read calls: get, find (API.md's filter syntax), versions, rollback."""

from __future__ import annotations

import pytest
from wippy.runtime import Entry, Node, Shell


@pytest.fixture
def shell(node: Node) -> Shell:
    node.apply([
        Entry("app.tools:search", "function.lua", {"type": "tool", "title": "Web search"},
              {"source": "return { main = function() end }"}),
        Entry("app.tools:calc", "function.lua", {"type": "tool", "title": "Calculator"},
              {"source": "return { main = function() end }"}),
        Entry("app.config:settings", "registry.entry", {"type": "config"}, {"greeting": "hello", "limit": 5}),
    ])
    return node.shell()


def test_get_returns_the_entry(shell: Shell) -> None:
    """registry.get(id) is {id, kind, meta, data}; an unknown ID is nil, err naming it."""
    out = shell.run("""
      local e = registry.get("app.config:settings")
      local none, err = registry.get("app.config:nope")
      return {e.id, e.kind, e.meta.type, e.data.greeting, e.data.limit, none == nil, err}
    """).value
    assert out[:6] == ["app.config:settings", "registry.entry", "config", "hello", 5, True]
    assert "unknown entry 'app.config:nope'" in out[6]


@pytest.mark.parametrize(("flt", "ids"), [
    ('{[".kind"] = "function.lua"}', ["app.tools:calc", "app.tools:search"]),
    ('{["meta.type"] = "tool", [".name"] = "calc"}', ["app.tools:calc"]),
    ('{[".ns"] = "app.config"}', ["app.config:settings"]),
    ('{["meta.title"] = "~^Web"}', ["app.tools:search"]),
    ('{["meta.title"] = "*cul"}', ["app.tools:calc"]),
    ('{[".id"] = "^app.tools:"}', ["app.tools:calc", "app.tools:search"]),
    ('{[".name"] = "$ings"}', ["app.config:settings"]),
    ('{["meta.type"] = "none"}', []),
])
def test_find_with_filters(shell: Shell, flt: str, ids: list[str]) -> None:
    """registry.find matches root keys and meta keys, with ~ * ^ $ operators, sorted by ID."""
    out = shell.run(f"local r = {{}} for i, e in ipairs(registry.find({flt})) do r[i] = e.id end return r").value
    assert (out or []) == ids


def test_bad_filters_are_nil_err(shell: Shell) -> None:
    """An unknown filter key or a broken regex is nil, err; a non-table filter too."""
    out = shell.run("""
      local _, e1 = registry.find({colour = "red"})
      local _, e2 = registry.find({["meta.title"] = "~("})
      local _, e3 = registry.find("x")
      return {e1, e2, e3}
    """).value
    assert "unknown filter key 'colour'" in out[0]
    assert "bad regular expression" in out[1]
    assert "the filter is a table" in out[2]


def test_versions_history_and_rollback(shell: Shell) -> None:
    """current_version, history with its changes, and apply_version as a new version."""
    node = shell.node
    v1 = node.registry.version
    node.apply([Entry("app.config:settings", "registry.entry", {"type": "config"}, {"greeting": "hi"})])
    out = shell.run(f"""
      local before = registry.current_version()
      local h = registry.history()
      local last = h[#h]
      local v = registry.apply_version({v1})
      local now = registry.get("app.config:settings").data.greeting
      return {{before, #h, last.changes[1].op, last.changes[1].id, v, now}}
    """).value
    assert out == [v1 + 1, v1 + 1, "update", "app.config:settings", v1 + 2, "hello"]
    assert shell.run("local v, e = registry.apply_version(999) return e").value.startswith(
        "registry.apply_version: unknown registry version 999")


def test_module_is_granted_not_global(node: Node, shell: Shell) -> None:
    """Entries get `registry` only through `modules: [registry]`."""
    node.define("app:with", "process.lua", modules=["registry"],
                source="return { main = function() return registry.get('app.config:settings').data.limit end }")
    node.define("app:without", "process.lua", source="return { main = function() return registry == nil end }")
    assert node.exec("app:with", timeout=5) == 5
    assert node.exec("app:without", timeout=5) is True


def test_snapshot_reads_a_fixed_version(shell: Shell) -> None:
    """A snapshot keeps seeing its version after later commits; get, find, namespace, entries."""
    node = shell.node
    out = shell.run("""
      snap = registry.snapshot()
      return {snap:version(), #snap:entries(), snap:get("app.config:settings").data.greeting,
              #snap:find({[".kind"] = "function.lua"}), #snap:namespace("app.tools")}
    """).value
    v = node.registry.version
    assert out == [v, 3, "hello", 2, 2]
    node.apply([Entry("app.config:settings", "registry.entry", {}, {"greeting": "changed"})])
    assert shell.run("return snap:get('app.config:settings').data.greeting").value == "hello"
    assert shell.run("return registry.get('app.config:settings').data.greeting").value == "changed"


def test_transaction_from_lua_is_all_or_nothing(shell: Shell) -> None:
    """snapshot():changes() create/update/delete then apply: one new version, or nothing at all."""
    node = shell.node
    v0 = node.registry.version
    out = shell.run("""
      local c = registry.snapshot():changes()
      c:create({id = "app.config:extra", kind = "registry.entry", data = {n = 1}})
       :update({id = "app.config:settings", kind = "registry.entry", data = {greeting = "bonjour"}})
       :delete("app.tools:calc")
      local v = c:apply()
      local ok, again = pcall(c.apply, c)
      return {v, registry.get("app.config:extra").data.n, registry.get("app.config:settings").data.greeting,
              registry.get("app.tools:calc") == nil, again}
    """).value
    assert out[:4] == [v0 + 1, 1, "bonjour", True]
    assert "applied already" in out[4]
    bad = shell.run("""
      local c = registry.snapshot():changes()
      c:create({id = "app.config:more", kind = "registry.entry"})
      c:create({id = "app.config:extra", kind = "registry.entry"})
      return {c:apply()}
    """).value
    assert "app.config:extra" in str(bad) and node.registry.version == v0 + 1
    assert node.registry.get("app.config:more") is None


def test_change_subscriptions(shell: Shell) -> None:
    """registry.changes(filter) delivers {version, changes} for matching commits, in order."""
    node = shell.node
    shell.run("""
      all_changes = registry.changes()
      config_changes = registry.changes({[".ns"] = "app.config"})
    """)
    v0 = node.registry.version
    node.apply([Entry("app.tools:new", "function.lua", {}, {"source": "return {}"})])
    node.apply([Entry("app.config:settings", "registry.entry", {}, {"greeting": "hey"})])
    out = shell.run("""
      local function take(ch)
        local r = channel.select{ch:case_receive(), time.after("2s"):case_receive()}
        return r.channel == ch and r.value or "timeout"
      end
      local a1, a2 = take(all_changes), take(all_changes)
      local c1 = take(config_changes)
      local none = channel.select{config_changes:case_receive(), default = true}
      return {a1.version, a1.changes[1].id, a1.changes[1].op, a2.version, a2.changes[1].id,
              c1.version, c1.changes[1].id, none.default}
    """).value
    assert out == [v0 + 1, "app.tools:new", "create", v0 + 2, "app.config:settings",
                   v0 + 2, "app.config:settings", True]


def test_change_subscription_with_a_bad_filter(shell: Shell) -> None:
    """A filter with an unknown key is refused when subscribing."""
    err = shell.run("local ch, err = registry.changes({colour = 'red'}) return err").value
    assert "unknown filter key 'colour'" in err


def test_find_from_python(shell: Shell) -> None:
    """node.registry.find takes the same filters as Lua's registry.find."""
    reg = shell.node.registry
    assert [e.id for e in reg.find({"meta.type": "tool"})] == ["app.tools:calc", "app.tools:search"]
    assert [e.id for e in reg.find({".kind": "registry.entry", "meta.type": "^conf"})] == ["app.config:settings"]
    assert len(reg.find()) == 3
