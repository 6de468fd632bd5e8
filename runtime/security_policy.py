"""``security.policy`` entries: parsed and checked once, into immutable :class:`Policy` values.

A policy entry's data (API.md, "Security")::

    groups: [agents]                       # named scopes this policy belongs to (optional)
    policy:
      actions: [registry.apply]            # globs over the known actions (ACTIONS)
      resources: ["app.tools:*"]           # globs over entry IDs, host IDs, PIDs or names
      effect: allow                        # allow | deny
      conditions:                          # optional; all must hold
        - {field: actor.meta.role, operator: eq, value: agent}

``actions``, ``resources`` and ``groups`` take a list of strings; a single string is read as a list of
one. Every error is an :class:`~wippy.runtime.errors.EntryError` naming the entry and the field path
(``entry 'app:p': policy.conditions[0].operator: must be one of ...``), so a bad policy is refused whole.

**Globs.** Only ``*`` is special: it matches any run of characters, ``.``, ``:``, ``|`` and braces
included (``registry.*`` matches ``registry.apply_version``; ``app:*`` matches every entry of ``app``,
``*`` everything). Every other character is literal (no ``?`` and no ``[...]`` classes), so a PID such
as ``{app:processes|0x0001a}`` can be written as it is. A glob matches the whole string.

**Conditions.** ``field`` is a dotted path: ``actor.id``, ``actor.meta`` or ``actor.meta.<key...>``,
``resource`` (the resource string of the call), ``meta`` or ``meta.<key...>`` (the meta the call passes).
A field that does not resolve (a missing key, or a key below a non-mapping) is *missing*: ``eq``, ``in``,
``contains`` and ``matches`` are then false, ``ne`` is true, ``exists`` is false. Operators:

``eq`` / ``ne``   equal / not equal (``true`` is not ``1``; lists compare element by element)
``in``            the field's value is one of ``value`` (a list)
``contains``      the field is a string containing ``value`` (a string), a list holding ``value``,
                  or a mapping with the key ``value``
``exists``        the field resolves; ``value`` is optional (default true; ``false`` means "is missing")
``matches``       the field is a string and the regex ``value`` matches the *whole* of it
                  (``re.fullmatch``; compiled when the policy is parsed)

Everything here is a pure function or an immutable value: safe from any thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import EntryError

__all__ = [
    "ACTIONS",
    "EFFECTS",
    "OPERATORS",
    "POLICY_KIND",
    "Condition",
    "Policy",
    "compile_glob",
    "freeze",
    "parse_policy",
]

POLICY_KIND = "security.policy"

ACTIONS: tuple[str, ...] = (
    "process.spawn",
    "process.send",
    "process.terminate",
    "process.cancel",
    "registry.get",
    "registry.find",
    "registry.apply",
    "registry.apply_version",
    "funcs.call",
    "workflow.start",
    "workflow.signal",
    "workflow.cancel",
    "agent.run",
    "llm.generate",
)
"""Every action a policy can name, in the order API.md lists them."""

EFFECTS: tuple[str, ...] = ("allow", "deny")
OPERATORS: tuple[str, ...] = ("eq", "ne", "in", "contains", "exists", "matches")

_MISSING: Any = object()


def compile_glob(glob: str) -> re.Pattern[str]:
    """The anchored regex of ``glob``: ``*`` is any run of characters (possibly empty), the rest literal."""
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", glob)) + r"\Z")


def freeze(value: Any) -> Any:
    """An immutable deep copy: mappings become read-only mappings, lists and tuples become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality where a boolean is never a number (``true ~= 1``), element-wise over sequences/mappings."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | tuple | list) or isinstance(b, Mapping | tuple | list):
        return False
    return bool(a == b)


def _resolve(path: tuple[str, ...], root: Any) -> Any:
    value = root
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


@dataclass(frozen=True)
class Condition:
    """One condition of a policy: ``field`` ``operator`` ``value`` (see the module docstring)."""

    field: str
    """The dotted path as written: ``actor.id``, ``actor.meta.role``, ``resource``, ``meta.reason``."""
    operator: str
    """One of :data:`OPERATORS`."""
    value: Any = None
    """The operand, frozen (a list is a tuple); for ``exists``, whether the field must exist."""
    pattern: re.Pattern[str] | None = None
    """The compiled regex of a ``matches`` condition."""

    def resolve(self, actor_id: str, actor_meta: Mapping[str, Any], resource: str, meta: Mapping[str, Any]) -> Any:
        """The field's value for one call, or a private *missing* marker."""
        head, _, rest = self.field.partition(".")
        path = tuple(rest.split(".")) if rest else ()
        if head == "resource":
            return resource
        if head == "meta":
            return _resolve(path, meta)
        if path == ("id",):
            return actor_id
        return _resolve(path[1:], actor_meta)

    def holds(self, actor_id: str, actor_meta: Mapping[str, Any], resource: str, meta: Mapping[str, Any]) -> bool:
        """Whether the condition holds for one call (a missing field: only ``ne`` and ``exists: false``)."""
        got = self.resolve(actor_id, actor_meta, resource, meta)
        op = self.operator
        if op == "exists":
            return (got is not _MISSING) == bool(self.value)
        if got is _MISSING:
            return op == "ne"
        if op == "eq":
            return _same(got, self.value)
        if op == "ne":
            return not _same(got, self.value)
        if op == "in":
            return any(_same(got, v) for v in self.value)
        if op == "contains":
            if isinstance(got, str):
                return isinstance(self.value, str) and self.value in got
            if isinstance(got, Mapping):
                return isinstance(self.value, str) and self.value in got
            if isinstance(got, tuple | list):
                return any(_same(v, self.value) for v in got)
            return False
        assert self.pattern is not None  # matches: compiled by parse_policy
        return isinstance(got, str) and self.pattern.fullmatch(got) is not None


@dataclass(frozen=True)
class Policy:
    """One parsed ``security.policy`` entry (immutable; see :func:`parse_policy`)."""

    id: str
    """The entry ID (``app:agents_edit_tools``): what a scope holds and a denial names."""
    effect: str
    """``allow`` or ``deny``."""
    actions: tuple[str, ...]
    """The action globs as written."""
    resources: tuple[str, ...]
    """The resource globs as written."""
    conditions: tuple[Condition, ...] = ()
    """All must hold for the policy to match a call."""
    groups: frozenset[str] = frozenset()
    """The named scopes this policy belongs to."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_action_res", tuple(compile_glob(g) for g in self.actions))
        object.__setattr__(self, "_resource_res", tuple(compile_glob(g) for g in self.resources))

    def matches_action(self, action: str) -> bool:
        """Whether one of the action globs matches ``action``."""
        return any(r.match(action) for r in self._action_res)  # type: ignore[attr-defined]

    def matches_resource(self, resource: str) -> bool:
        """Whether one of the resource globs matches ``resource``."""
        return any(r.match(resource) for r in self._resource_res)  # type: ignore[attr-defined]

    def conditions_hold(
        self, actor_id: str, actor_meta: Mapping[str, Any], resource: str, meta: Mapping[str, Any]
    ) -> bool:
        """Whether every condition holds for one call (true when there are none)."""
        return all(c.holds(actor_id, actor_meta, resource, meta) for c in self.conditions)


class _Fields:
    """One mapping of a policy entry, naming ``entry 'x': path`` in every error."""

    def __init__(self, owner: str, path: str, data: Any, known: tuple[str, ...]) -> None:
        self.owner, self.path = owner, path
        if not isinstance(data, Mapping):
            raise EntryError(f"{owner}: {path}: must be a mapping (got {type(data).__name__})")
        unknown = [str(k) for k in data if k not in known]
        if unknown:
            raise EntryError(f"{owner}: {path}: unknown field '{unknown[0]}' (fields: {', '.join(known)})")
        self.data = data

    def fail(self, name: str, what: str) -> EntryError:
        return EntryError(f"{self.owner}: {self.path}.{name}: {what}")

    def strings(self, name: str, required: bool) -> tuple[str, ...]:
        """A list of non-empty strings (a single string is a list of one)."""
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(name, "is required (a list of strings)")
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, Sequence) or isinstance(value, bytes):
            raise self.fail(name, f"must be a list of strings (got {type(value).__name__})")
        if required and not value:
            raise self.fail(name, "must not be empty")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{name}[{i}]", f"must be a non-empty string (got {item!r})")
        return tuple(value)


def _field_path(where: _Fields, field: Any) -> None:
    if not isinstance(field, str) or not field:
        raise where.fail("field", f"must be a dotted path string (got {field!r})")
    parts = field.split(".")
    ok = all(parts) and (
        field in ("resource", "meta", "actor.id", "actor.meta")
        or (parts[0] == "meta" and len(parts) > 1)
        or (parts[:2] == ["actor", "meta"] and len(parts) > 2)
    )
    if not ok:
        raise where.fail(
            "field",
            f"must be actor.id, actor.meta.<key>, resource or meta.<key> (got {field!r})",
        )


def _condition(owner: str, path: str, data: Any) -> Condition:
    where = _Fields(owner, path, data, ("field", "operator", "value"))
    field = data.get("field")
    if field is None:
        raise where.fail("field", "is required (actor.id, actor.meta.<key>, resource or meta.<key>)")
    _field_path(where, field)
    op = data.get("operator")
    if op not in OPERATORS:
        raise where.fail("operator", f"must be one of {', '.join(OPERATORS)} (got {op!r})")
    if "value" not in data or data["value"] is None:
        if op != "exists":
            raise where.fail("value", f"is required for operator {op}")
        return Condition(field, op, True)
    value = data["value"]
    if op == "exists" and not isinstance(value, bool):
        raise where.fail("value", f"must be true or false for operator exists (got {value!r})")
    if op == "in" and (not isinstance(value, list | tuple)):
        raise where.fail("value", f"must be a list for operator in (got {value!r})")
    if op == "matches":
        if not isinstance(value, str):
            raise where.fail("value", f"must be a regex string for operator matches (got {value!r})")
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise where.fail("value", f"is not a valid regex ({exc}) (got {value!r})") from None
        return Condition(field, op, value, pattern)
    return Condition(field, op, freeze(value))


def parse_policy(entry_id: str, data: Mapping[str, Any]) -> Policy:
    """Parse the data of one ``security.policy`` entry into a :class:`Policy`.

    Raises :class:`~wippy.runtime.errors.EntryError` naming the field path on the first problem: an
    unknown field, a missing or empty ``actions``/``resources``, an ``effect`` other than allow/deny,
    an action glob that matches no known action, a resource glob that can match nothing (spaces), a
    condition with a bad field, operator or value.
    """
    owner = f"entry '{entry_id}'"
    if not isinstance(data, Mapping):
        raise EntryError(f"{owner}: must be a mapping (got {type(data).__name__})")
    unknown = [str(k) for k in data if k not in ("groups", "policy")]
    if unknown:
        raise EntryError(f"{owner}: unknown field '{unknown[0]}' (fields: groups, policy)")
    groups = _groups(owner, data.get("groups"))
    if "policy" not in data:
        raise EntryError(f"{owner}: policy: is required (actions, resources, effect, conditions)")
    body = _Fields(owner, "policy", data["policy"], ("actions", "resources", "effect", "conditions"))
    actions = body.strings("actions", required=True)
    for i, glob in enumerate(actions):
        rx = compile_glob(glob)
        if not any(rx.match(a) for a in ACTIONS):
            raise body.fail(f"actions[{i}]", f"'{glob}' matches no known action (actions: {', '.join(ACTIONS)})")
    resources = body.strings("resources", required=True)
    for i, glob in enumerate(resources):
        if any(c.isspace() for c in glob):
            raise body.fail(f"resources[{i}]", f"{glob!r} can match nothing: entry IDs, hosts, PIDs and names "
                                               "have no spaces; write e.g. app.config:* or {app:processes|*}")
    effect = body.data.get("effect")
    if effect not in EFFECTS:
        raise body.fail("effect", f"must be allow or deny (got {effect!r})")
    raw = body.data.get("conditions")
    if raw is None:
        raw = []
    if not isinstance(raw, list | tuple):
        raise body.fail("conditions", f"must be a list of conditions (got {type(raw).__name__})")
    conditions = tuple(_condition(owner, f"policy.conditions[{i}]", c) for i, c in enumerate(raw))
    return Policy(entry_id, effect, actions, resources, conditions, frozenset(groups))


def _groups(owner: str, value: Any) -> tuple[str, ...]:
    """``groups``: a list of non-empty strings at the top of the entry (a single string is one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise EntryError(f"{owner}: groups: must be a list of group names (got {type(value).__name__})")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise EntryError(f"{owner}: groups[{i}]: must be a non-empty string (got {item!r})")
    return tuple(value)
