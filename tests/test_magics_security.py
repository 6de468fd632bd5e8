"""%whoami and %policy (magics/security.py), and the registry-changing magics checked as the notebook,
driven in-process through IPython's InteractiveShell (the kernel path: tests/test_kernel.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wippy.magics
from conftest import usage_error as shared_usage_error
from IPython.core.interactiveshell import InteractiveShell
from wippy.magics.registry import Table
from wippy.runtime import Node

POLICIES = """\
namespace: app.sec
entries:
  - name: read_config
    kind: security.policy
    groups: [workers]
    policy: {actions: [registry.get, registry.find], resources: ["app.config:*"], effect: allow}
  - name: no_secret
    kind: security.policy
    groups: [workers]
    policy: {actions: [registry.get], resources: ["app.config:secret"], effect: deny}
  - name: admins_write
    kind: security.policy
    groups: [admins]
    policy:
      actions: [registry.apply]
      resources: ["app.config:*"]
      effect: allow
      conditions:
        - {field: actor.meta.role, operator: eq, value: admin}
"""
CONFIG = """\
namespace: app.config
entries:
  - name: db
    kind: registry.entry
    url: postgres://db
  - name: secret
    kind: registry.entry
    key: hunter2
"""


@pytest.fixture
def node(ip: InteractiveShell) -> Iterator[Node]:
    """The magics' node with the policies and config above; the notebook gets every right back after."""
    n = wippy.magics.node()
    n.whoami(reset=True)
    n.registry.reset()
    n.security.clear_denials()
    ok(ip, "%%registry\n" + CONFIG)
    ok(ip, "%%registry\n" + POLICIES)
    yield n
    n.whoami(reset=True)
    n.registry.reset()


def ok(ip: InteractiveShell, cell: str) -> object:
    res = ip.run_cell(cell, store_history=False)
    assert res.success, res.error_in_exec
    return res.result


def usage_error(ip: InteractiveShell, cell: str, capsys: pytest.CaptureFixture[str]) -> str:
    return shared_usage_error(ip, cell, capsys, one_line=True)


def test_whoami_shows_and_narrows_the_notebook(ip: InteractiveShell, node: Node) -> None:
    assert str(ok(ip, "%whoami")) == "actor  notebook\nscope  * (every right)\nmode   strict"
    assert str(ok(ip, "%whoami --as ann --meta role=admin level=3 --scope workers")) == (
        'actor  ann {"level": 3, "role": "admin"}\nscope  app.sec:no_secret, app.sec:read_config\nmode   strict')
    # the shell process follows
    assert ok(ip, "%lua security.actor():id() .. ' ' .. tostring(security.scope())").value == \
        "ann scope(app.sec:no_secret, app.sec:read_config)"
    assert str(ok(ip, "%whoami --reset")) == "actor  notebook\nscope  * (every right)\nmode   strict"


def test_whoami_refuses_a_widening_and_unknown_groups(ip: InteractiveShell, node: Node,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ok(ip, "%whoami --scope workers")
    msg = usage_error(ip, "%whoami --scope admins", capsys)
    assert msg.startswith("%whoami: ") and "app.sec:admins_write" in msg and msg.endswith("(the identity is unchanged)")
    msg = usage_error(ip, "%whoami --scope nobody", capsys)
    assert "unknown policy group 'nobody'" in msg and "workers" in msg
    assert "scope  app.sec:no_secret, app.sec:read_config" in str(ok(ip, "%whoami"))
    assert usage_error(ip, "%whoami --bogus", capsys).startswith("%whoami: unknown option --bogus")
    assert "--scope needs one or more group names" in usage_error(ip, "%whoami --scope", capsys)
    assert "stands alone" in usage_error(ip, "%whoami --reset --as x", capsys)


def test_policy_list_and_show(ip: InteractiveShell, node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    table = ok(ip, "%policy list")
    assert isinstance(table, Table)
    text = repr(table)
    lines = text.splitlines()
    assert lines[0].split() == ["POLICY", "EFFECT", "ACTIONS", "RESOURCES", "GROUPS", "CONDITIONS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["app.sec:admins_write", "app.sec:no_secret", "app.sec:read_config"]
    assert 'actor.meta.role eq "admin"' in text
    assert str(ok(ip, "%policy show app.sec:no_secret")) == "\n".join([
        "app.sec:no_secret (deny)",
        "  actions:    registry.get",
        "  resources:  app.config:secret",
        "  groups:     workers",
        "  conditions: (none)",
        "  in the notebook's scope: yes (every right)"])
    ok(ip, "%whoami --scope workers")
    assert str(ok(ip, "%policy show app.sec:admins_write")).endswith("in the notebook's scope: no")
    msg = usage_error(ip, "%policy show app.sec:nope", capsys)
    assert msg.startswith("%policy show: no policy 'app.sec:nope'; policies: app.sec:admins_write")


def test_policy_list_on_an_open_node(ip: InteractiveShell, node: Node) -> None:
    node.registry.reset()
    assert repr(ok(ip, "%policy list")) == "no security.policy entries: the node runs open (every call is allowed)"
    assert str(ok(ip, "%whoami")).endswith("mode   open: no security.policy entries, every call is allowed")


def test_policy_check_answers_for_the_notebook_without_recording(ip: InteractiveShell, node: Node,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert str(ok(ip, "%policy check registry.get app.config:secret")) == \
        "permission granted: registry.get on app.config:secret for actor notebook (full rights)"
    ok(ip, "%whoami --as ann --scope workers admins")
    assert str(ok(ip, "%policy check registry.get app.config:db")) == \
        "permission granted: registry.get on app.config:db for actor ann (allowed by policy app.sec:read_config)"
    assert str(ok(ip, "%policy check registry.get app.config:secret")) == \
        "permission denied: registry.get on app.config:secret for actor ann (denied by policy app.sec:no_secret)"
    assert str(ok(ip, "%policy check registry.apply app.config:db")) == \
        "permission denied: registry.apply on app.config:db for actor ann (no policy allows it)"
    assert node.security.denials == []
    msg = usage_error(ip, "%policy check registry.fly x", capsys)
    assert msg.startswith("%policy check: unknown action 'registry.fly'; actions: process.spawn")
    assert "usage: %policy check ACTION RESOURCE" in usage_error(ip, "%policy check registry.get", capsys)


def test_registry_magics_are_checked_as_the_notebook(ip: InteractiveShell, node: Node,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """%registry set / apply / rollback / reset, %%registry and %%lua --entry: refused with the policy
    text and nothing changed, until an allow (here one with a condition on the actor's meta) holds."""
    v = node.registry.version
    ok(ip, "%whoami --as ann --meta role=user --scope workers admins")
    msg = usage_error(ip, "%registry set app.config:db url=evil", capsys)
    assert msg == ("%registry set: permission denied: registry.apply on app.config:db for actor ann "
                   "(no policy allows it) (nothing changed)")
    msg = usage_error(ip, "%%registry\nnamespace: app.config\nentries:\n  - name: more\n    kind: registry.entry\n",
                      capsys)
    assert "permission denied: registry.apply on app.config:more for actor ann" in msg
    msg = usage_error(ip, f"%registry rollback {v - 1}", capsys)
    assert f"permission denied: registry.apply_version on {v - 1} for actor ann" in msg
    msg = usage_error(ip, "%registry reset", capsys)
    assert "permission denied: registry.apply on" in msg
    msg = usage_error(ip, "%%lua --entry app.config:fn --kind function.lua\nreturn {main = function() end}", capsys)
    assert msg.startswith("%%lua --entry: permission denied: registry.apply on app.config:fn for actor ann")
    assert node.registry.version == v and node.registry.get("app.config:db").data["url"] == "postgres://db"
    assert [d.action for d in node.security.denials] == ["registry.apply", "registry.apply",
                                                         "registry.apply_version", "registry.apply",
                                                         "registry.apply"]
    ok(ip, "%whoami --as ann --meta role=admin")
    ok(ip, "%registry set app.config:db url=new")
    assert node.registry.get("app.config:db").data["url"] == "new"


def test_policy_log_shows_refusals_and_clears(ip: InteractiveShell, node: Node,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert repr(ok(ip, "%policy log")) == "no refusals yet"
    ok(ip, "%whoami --as ann --scope workers")
    ok(ip, "%lua registry.get('app.config:secret')")
    shell_pid = node.shell().pid
    lines = repr(ok(ip, "%policy log")).splitlines()
    assert lines[0].split() == ["TIME", "PID", "ACTOR", "ACTION", "RESOURCE", "POLICY"]
    assert lines[1].split()[1:] == [shell_pid, "ann", "registry.get", "app.config:secret", "app.sec:no_secret"]
    capsys.readouterr()
    assert ok(ip, "%policy log --clear") is None
    assert capsys.readouterr().out == "refusal log cleared (1 rows removed)\n"
    assert repr(ok(ip, "%policy log")) == "no refusals yet"
    assert usage_error(ip, "%policy nope", capsys).startswith("%policy: unknown subcommand 'nope'")
