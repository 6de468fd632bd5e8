"""The policy engine (issue 12, API.md "Security"): parsing, actors, scopes and the decision of each check.

Pure Python, no node: a policy table case by case, every parse error with its exact text, deny beating
allow, narrowing and widening, open mode, and the decision cache never answering for the wrong actor.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wippy.runtime.entries import Entry
from wippy.runtime.errors import EntryError
from wippy.runtime.security import (
    ACTIONS,
    Actor,
    Decision,
    PolicySet,
    Scope,
    SecurityError,
    parse_policy,
)


def policy(
    pid: str,
    effect: str = "allow",
    actions: Any = ("registry.get",),
    resources: Any = ("*",),
    conditions: Any = None,
    groups: Any = None,
) -> Entry:
    body: dict[str, Any] = {"actions": list(actions), "resources": list(resources), "effect": effect}
    if conditions is not None:
        body["conditions"] = conditions
    data: dict[str, Any] = {"policy": body}
    if groups is not None:
        data["groups"] = groups
    return Entry(pid, "security.policy", data=data)


def cond(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    c: dict[str, Any] = {"field": field, "operator": operator}
    if value is not None:
        c["value"] = value
    return c


WORKER = Actor("app:worker", {"role": "worker", "team": {"name": "ops"}, "tags": ["a", "b"]})

# The notebook's example: a worker reads app.config:* but may not write it; a deny beats an allow.
TABLE = PolicySet.from_entries(
    [
        policy(
            "app:read_config", actions=["registry.get", "registry.find"], resources=["app.config:*"], groups=["workers"]
        ),
        policy("app:no_secret", "deny", actions=["registry.*"], resources=["app.config:secret"], groups=["workers"]),
        policy("app:spawn_any", actions=["process.*"], resources=["*"], groups=["ops"]),
        policy("app:send_pid", actions=["process.send"], resources=["{app:processes|0x0001a}"], groups=["ops"]),
        Entry("app:not_a_policy", "process.lua", data={"source": "return 1", "method": "main"}),
    ]
)


@pytest.mark.parametrize(
    ("scope_group", "action", "resource", "allowed", "by", "reason"),
    [
        ("workers", "registry.get", "app.config:db", True, "app:read_config", "allowed by policy app:read_config"),
        ("workers", "registry.find", "app.config:db", True, "app:read_config", "allowed by policy app:read_config"),
        ("workers", "registry.apply", "app.config:db", False, None, "no policy allows it"),
        ("workers", "registry.get", "app.config:secret", False, "app:no_secret", "denied by policy app:no_secret"),
        ("workers", "registry.get", "app:other", False, None, "no policy allows it"),
        ("workers", "process.spawn", "app:child", False, None, "no policy allows it"),
        ("ops", "process.spawn", "app:child", True, "app:spawn_any", "allowed by policy app:spawn_any"),
        (
            "ops",
            "process.terminate",
            "{app:processes|0x00002}",
            True,
            "app:spawn_any",
            "allowed by policy app:spawn_any",
        ),
        ("ops", "registry.get", "app.config:db", False, None, "no policy allows it"),
    ],
)
def test_policy_table(scope_group: str, action: str, resource: str, allowed: bool, by: str | None, reason: str) -> None:
    """Allow, deny and undefined, by group, with globs on actions and resources."""
    d = TABLE.check(WORKER, TABLE.named_scope(scope_group), action, resource)
    assert (d.allowed, d.policy, d.reason) == (allowed, by, reason)
    assert (d.action, d.resource, d.actor_id) == (action, resource, "app:worker")


def test_denial_messages_are_api_md_text() -> None:
    scope = TABLE.named_scope("workers")
    assert TABLE.check(WORKER, scope, "registry.apply", "app.config:db").message == (
        "permission denied: registry.apply on app.config:db for actor app:worker (no policy allows it)"
    )
    assert TABLE.check(WORKER, scope, "registry.get", "app.config:secret").message == (
        "permission denied: registry.get on app.config:secret for actor app:worker (denied by policy app:no_secret)"
    )


def test_deny_beats_allow_whatever_the_order() -> None:
    """The deny is named even when the allow sorts first and is more specific."""
    for allow_id, deny_id in (("app:a", "app:z"), ("app:z", "app:a")):
        ps = PolicySet.from_entries(
            [
                policy(allow_id, resources=["app.config:secret"]),
                policy(deny_id, "deny", actions=["*"], resources=["*"]),
            ]
        )
        d = ps.check(WORKER, ps.full_scope(), "registry.get", "app.config:secret")
        assert (d.allowed, d.policy) == (False, deny_id)


def test_only_the_scopes_policies_count() -> None:
    """The deny outside the scope does not refuse; the allow outside the scope does not permit."""
    scope = Scope.of("app:read_config")
    assert TABLE.check(WORKER, scope, "registry.get", "app.config:secret").allowed
    assert not TABLE.check(WORKER, Scope(), "registry.get", "app.config:db").allowed


def test_globs_star_spans_dots_colons_braces_and_nothing_else_is_special() -> None:
    ps = PolicySet.from_entries(
        [
            policy("app:star", actions=["*"], resources=["app.*:x"]),
            policy("app:pid", actions=["process.send"], resources=["{app:processes|0x*}"]),
            policy("app:literal", actions=["registry.get"], resources=["a?[b]"]),
        ]
    )
    s, a = ps.full_scope(), WORKER
    assert ps.check(a, s, "llm.generate", "app.deep.ns:x").allowed
    assert not ps.check(a, s, "llm.generate", "app.deep.ns:xy").allowed  # a glob matches the whole string
    assert ps.check(a, s, "process.send", "{app:processes|0x0001a}").allowed
    assert not ps.check(a, s, "process.send", "{app:other|0x0001a}").allowed
    assert ps.check(a, s, "registry.get", "a?[b]").allowed
    assert not ps.check(a, s, "registry.get", "ax[b]").allowed
    assert not ps.check(a, s, "registry.get", "a?b").allowed


@pytest.mark.parametrize(
    ("condition", "yes", "no"),
    [
        (cond("actor.id", "eq", "app:worker"), WORKER, Actor("app:other")),
        (cond("actor.meta.role", "eq", "worker"), WORKER, Actor("x", {"role": "admin"})),
        (cond("actor.meta.role", "ne", "admin"), WORKER, Actor("x", {"role": "admin"})),
        (cond("actor.meta.role", "ne", "admin"), Actor("x"), Actor("x", {"role": "admin"})),  # missing: ne true
        (cond("actor.meta.role", "in", ["worker", "ops"]), WORKER, Actor("x", {"role": "guest"})),
        (cond("actor.meta.role", "in", ["worker"]), WORKER, Actor("x")),  # missing: in false
        (cond("actor.meta.tags", "contains", "b"), WORKER, Actor("x", {"tags": ["c"]})),
        (cond("actor.meta.role", "contains", "ork"), WORKER, Actor("x", {"role": "admin"})),
        (cond("actor.meta.team", "contains", "name"), WORKER, Actor("x", {"team": {"id": 1}})),
        (cond("actor.meta.team.name", "eq", "ops"), WORKER, Actor("x", {"team": "ops"})),  # key below a string
        (cond("actor.meta.role", "exists"), WORKER, Actor("x")),
        (cond("actor.meta.role", "exists", False), Actor("x"), WORKER),
        (cond("actor.meta.role", "matches", "w.*"), WORKER, Actor("x", {"role": "a-worker"})),  # whole string
        (cond("actor.meta.level", "eq", 1), Actor("x", {"level": 1}), Actor("x", {"level": True})),  # true is not 1
        (cond("actor.meta.tags", "eq", ["a", "b"]), WORKER, Actor("x", {"tags": ["b", "a"]})),
    ],
)
def test_conditions_on_the_actor(condition: dict[str, Any], yes: Actor, no: Actor) -> None:
    ps = PolicySet.from_entries([policy("app:p", conditions=[condition])])
    assert ps.check(yes, ps.full_scope(), "registry.get", "app:x").allowed
    d = ps.check(no, ps.full_scope(), "registry.get", "app:x")
    assert (d.allowed, d.reason) == (False, "no policy allows it")


def test_conditions_on_resource_and_call_meta_all_must_hold() -> None:
    ps = PolicySet.from_entries(
        [
            policy(
                "app:p",
                conditions=[cond("resource", "matches", r"app\.tools:[a-z]+"), cond("meta.reason", "eq", "upgrade")],
            )
        ]
    )
    s = ps.full_scope()
    assert ps.check(WORKER, s, "registry.get", "app.tools:grep", {"reason": "upgrade"}).allowed
    assert not ps.check(WORKER, s, "registry.get", "app.tools:grep", {"reason": "fun"}).allowed
    assert not ps.check(WORKER, s, "registry.get", "app.tools:grep").allowed  # meta missing
    assert not ps.check(WORKER, s, "registry.get", "app.tools:Grep2", {"reason": "upgrade"}).allowed


def test_a_deny_with_a_condition_that_fails_lets_the_allow_through() -> None:
    ps = PolicySet.from_entries(
        [
            policy("app:allow"),
            policy("app:deny_guests", "deny", conditions=[cond("actor.meta.role", "eq", "guest")]),
        ]
    )
    s = ps.full_scope()
    assert ps.check(WORKER, s, "registry.get", "app:x").policy == "app:allow"
    d = ps.check(Actor("g", {"role": "guest"}), s, "registry.get", "app:x")
    assert (d.allowed, d.policy) == (False, "app:deny_guests")


def test_open_mode_allows_everything() -> None:
    ps = PolicySet.from_entries([Entry("app:main", "process.lua", data={"source": "x", "method": "main"})])
    assert ps.open and not TABLE.open
    d = ps.check(Actor("anyone"), Scope(), "registry.apply", "app:anything")
    assert d == Decision(True, "registry.apply", "app:anything", "anyone", None, "open")


def test_groups_and_policies_by_name() -> None:
    assert TABLE.named_scope("workers") == Scope.of("app:read_config", "app:no_secret")
    assert TABLE.policy("app:no_secret").effect == "deny"
    with pytest.raises(SecurityError, match=r"^unknown policy group 'nobody'; groups: ops, workers$"):
        TABLE.named_scope("nobody")
    with pytest.raises(SecurityError, match=r"^unknown policy 'app:nope'; policies: app:no_secret, app:read_config"):
        TABLE.policy("app:nope")


def test_a_scope_of_a_policy_that_does_not_exist_is_refused() -> None:
    msg = r"^scope names unknown policy 'app:ghost'; policies: app:no_secret, "
    with pytest.raises(SecurityError, match=msg):
        TABLE.scope(["app:read_config", "app:ghost"])
    with pytest.raises(SecurityError, match=msg):
        TABLE.check(WORKER, Scope.of("app:ghost"), "registry.get", "app.config:db")
    with pytest.raises(SecurityError, match=r"^unknown action 'registry.put'; actions: process.spawn, "):
        TABLE.check(WORKER, TABLE.full_scope(), "registry.put", "app:x")


def test_scopes_narrow_but_never_widen() -> None:
    wide = Scope.of("app:a", "app:b")
    narrow = wide.without("app:b")
    assert narrow == Scope.of("app:a") and wide.contains(narrow) and not narrow.contains(wide)
    assert wide.narrowed_to(narrow) is narrow
    assert wide.narrowed_to(wide) == wide and wide.narrowed_to(Scope()) == Scope()
    with pytest.raises(
        SecurityError,
        match=r"^cannot widen a scope: app:c not in the current scope \(app:a\); a scope can only be narrowed$",
    ):
        narrow.narrowed_to(narrow.with_policy("app:c"))
    assert wide.policies == frozenset({"app:a", "app:b"})  # values: nothing above changed it
    assert list(wide) == ["app:a", "app:b"] and len(wide) == 2


def test_actors_are_frozen_copies() -> None:
    meta: dict[str, Any] = {"role": "worker", "tags": ["a"]}
    actor = Actor("w", meta)
    meta["role"], meta["tags"] = "admin", ["a", "root"]
    assert actor.meta["role"] == "worker" and actor.meta["tags"] == ("a",)
    with pytest.raises(TypeError):
        actor.meta["role"] = "admin"  # type: ignore[index]
    with pytest.raises(AttributeError):
        actor.id = "root"  # type: ignore[misc]
    assert Actor("w", {"tags": ["a"], "role": "worker"}) == actor and hash(actor) == hash(Actor("w", actor.meta))
    with pytest.raises(SecurityError, match="an actor's id must be a non-empty string"):
        Actor("")


def test_the_cache_answers_the_same_and_never_for_the_wrong_actor() -> None:
    ps = PolicySet.from_entries(
        [
            policy("app:admins", actions=["registry.apply"], conditions=[cond("actor.meta.role", "eq", "admin")]),
            policy("app:plain", actions=["registry.get"]),
        ]
    )
    s = ps.full_scope()
    admin, worker = Actor("u1", {"role": "admin"}), Actor("u2", {"role": "worker"})
    for _ in range(3):  # interleaved, repeated: every answer from the cache is the first answer
        assert ps.check(admin, s, "registry.apply", "app:x").allowed
        assert not ps.check(worker, s, "registry.apply", "app:x").allowed
        assert ps.check(Actor("u3", {"role": "admin"}), s, "registry.apply", "app:x").actor_id == "u3"
        assert ps.check(worker, s, "registry.get", "app:x").actor_id == "u2"  # unconditioned, shared outcome
        assert ps.check(admin, s, "registry.get", "app:x").actor_id == "u1"
    # same id, different meta: a different actor for the cache
    assert not ps.check(Actor("u1", {"role": "worker"}), s, "registry.apply", "app:x").allowed
    # meta of the call is part of the key when conditions read it
    ps2 = PolicySet.from_entries([policy("app:m", conditions=[cond("meta.ok", "eq", True)])])
    s2 = ps2.full_scope()
    assert ps2.check(worker, s2, "registry.get", "r", {"ok": True}).allowed
    assert not ps2.check(worker, s2, "registry.get", "r", {"ok": False}).allowed
    assert not ps2.check(worker, s2, "registry.get", "r").allowed
    assert ps2.check(worker, s2, "registry.get", "r", {"ok": True}).allowed


def test_a_single_string_is_a_list_of_one() -> None:
    p = parse_policy(
        "app:p", {"groups": "g", "policy": {"actions": "funcs.call", "resources": "app:f", "effect": "allow"}}
    )
    assert (p.groups, p.actions, p.resources, p.conditions) == (frozenset({"g"}), ("funcs.call",), ("app:f",), ())


OPS = "eq, ne, in, contains, exists, matches"  # spelled out: the message is the contract
GOOD: dict[str, Any] = {"actions": ["registry.get"], "resources": ["*"], "effect": "allow"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"policy": GOOD, "x": 1}, "entry 'app:p': unknown field 'x' (fields: groups, policy)"),
        ({"groups": ["g"]}, "entry 'app:p': policy: is required (actions, resources, effect, conditions)"),
        ({"policy": [1]}, "entry 'app:p': policy: must be a mapping (got list)"),
        (
            {"policy": {**GOOD, "x": 1}},
            "entry 'app:p': policy: unknown field 'x' (fields: actions, resources, effect, conditions)",
        ),
        ({"policy": {**GOOD, "effect": "maybe"}}, "entry 'app:p': policy.effect: must be allow or deny (got 'maybe')"),
        ({"policy": {**GOOD, "effect": None}}, "entry 'app:p': policy.effect: must be allow or deny (got None)"),
        ({"policy": {**GOOD, "actions": None}}, "entry 'app:p': policy.actions: is required (a list of strings)"),
        ({"policy": {**GOOD, "actions": []}}, "entry 'app:p': policy.actions: must not be empty"),
        ({"policy": {**GOOD, "resources": []}}, "entry 'app:p': policy.resources: must not be empty"),
        ({"policy": {**GOOD, "resources": 5}}, "entry 'app:p': policy.resources: must be a list of strings (got int)"),
        (
            {"policy": {**GOOD, "resources": ["a", 3]}},
            "entry 'app:p': policy.resources[1]: must be a non-empty string (got 3)",
        ),
        (
            {"policy": {**GOOD, "actions": ["registry.get", "proc.*"]}},
            "entry 'app:p': policy.actions[1]: 'proc.*' matches no known action (actions: " + ", ".join(ACTIONS) + ")",
        ),
        (
            {"policy": {**GOOD, "actions": ["registry.put"]}},
            "entry 'app:p': policy.actions[0]: 'registry.put' matches no known action (actions: "
            + ", ".join(ACTIONS)
            + ")",
        ),
        ({"groups": {"a": 1}, "policy": GOOD}, "entry 'app:p': groups: must be a list of group names (got dict)"),
        ({"groups": ["a", ""], "policy": GOOD}, "entry 'app:p': groups[1]: must be a non-empty string (got '')"),
        (
            {"policy": {**GOOD, "conditions": {"a": 1}}},
            "entry 'app:p': policy.conditions: must be a list of conditions (got dict)",
        ),
        ({"policy": {**GOOD, "conditions": ["x"]}}, "entry 'app:p': policy.conditions[0]: must be a mapping (got str)"),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "gt", 1)]}},
            "entry 'app:p': policy.conditions[0].operator: must be one of " + OPS + " (got 'gt')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "eq", "a"), {"field": "actor.id", "value": 1}]}},
            "entry 'app:p': policy.conditions[1].operator: must be one of " + OPS + " (got None)",
        ),
        (
            {"policy": {**GOOD, "conditions": [{**cond("actor.id", "eq", "a"), "op": "eq"}]}},
            "entry 'app:p': policy.conditions[0]: unknown field 'op' (fields: field, operator, value)",
        ),
        (
            {"policy": {**GOOD, "conditions": [{"operator": "eq", "value": 1}]}},
            "entry 'app:p': policy.conditions[0].field: is required "
            "(actor.id, actor.meta.<key>, resource or meta.<key>)",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.name", "eq", "a")]}},
            "entry 'app:p': policy.conditions[0].field: must be actor.id, actor.meta.<key>, resource or meta.<key> "
            "(got 'actor.name')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("resource.id", "eq", "a")]}},
            "entry 'app:p': policy.conditions[0].field: must be actor.id, actor.meta.<key>, resource or meta.<key> "
            "(got 'resource.id')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("meta..x", "eq", "a")]}},
            "entry 'app:p': policy.conditions[0].field: must be actor.id, actor.meta.<key>, resource or meta.<key> "
            "(got 'meta..x')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "eq")]}},
            "entry 'app:p': policy.conditions[0].value: is required for operator eq",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "in", "abc")]}},
            "entry 'app:p': policy.conditions[0].value: must be a list for operator in (got 'abc')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "exists", "yes")]}},
            "entry 'app:p': policy.conditions[0].value: must be true or false for operator exists (got 'yes')",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "matches", 3)]}},
            "entry 'app:p': policy.conditions[0].value: must be a regex string for operator matches (got 3)",
        ),
        (
            {"policy": {**GOOD, "conditions": [cond("actor.id", "matches", "(a")]}},
            "entry 'app:p': policy.conditions[0].value: is not a valid regex "
            "(missing ), unterminated subpattern at position 0) (got '(a')",
        ),
    ],
)
def test_parse_errors_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(EntryError) as info:
        parse_policy("app:p", data)
    assert str(info.value) == message


def test_a_bad_policy_among_entries_refuses_the_whole_set() -> None:
    with pytest.raises(EntryError, match=r"^entry 'app:bad': policy.effect: must be allow or deny"):
        PolicySet.from_entries([policy("app:good"), policy("app:bad", effect="permit")])


ACTOR_IDS = st.sampled_from(["a", "b", "c"])
ROLES = st.sampled_from(["admin", "worker", None])
RESOURCES = st.sampled_from(["app:x", "app.config:db", "app.config:secret", "{app:h|0x1}"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ACTOR_IDS, ROLES, RESOURCES, st.sampled_from(["registry.get", "process.send"])), max_size=30))
def test_cached_answers_equal_fresh_ones(calls: list[tuple[str, str | None, str, str]]) -> None:
    """Any sequence of checks on one (caching) set answers exactly as a fresh set does for each call."""

    def entries() -> list[Entry]:
        return [
            policy("app:admins", actions=["*"], conditions=[cond("actor.meta.role", "eq", "admin")]),
            policy("app:reads", actions=["registry.get"], resources=["app.config:*"]),
            policy(
                "app:secret",
                "deny",
                actions=["*"],
                resources=["app.config:secret"],
                conditions=[cond("actor.id", "ne", "a")],
            ),
        ]

    shared = PolicySet.from_entries(entries())
    for actor_id, role, resource, action in calls:
        actor = Actor(actor_id, {"role": role} if role else {})
        got = shared.check(actor, shared.full_scope(), action, resource)
        fresh = PolicySet.from_entries(entries())
        assert got == fresh.check(actor, fresh.full_scope(), action, resource)
