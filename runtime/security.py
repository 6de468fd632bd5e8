"""Security: actors, scopes and policies, and the evaluation of one privileged call (API.md, "Security").

Every privileged call is made by an :class:`Actor` inside a :class:`Scope` (a set of policy IDs). A
:class:`PolicySet` holds the ``security.policy`` entries of one registry version and answers
:meth:`PolicySet.check` with a :class:`Decision`:

- only the policies of the call's scope count;
- a matching ``deny`` wins (the decision names it); else a matching ``allow`` permits; else refused;
- with no policies at all the set is **open**: every check allows.

A policy *matches* a call when one of its action globs matches the action, one of its resource globs
matches the resource, and all its conditions hold (globs and conditions: :mod:`.security_policy`).
When several policies match, the one with the smallest ID is named, so decisions are deterministic.

Scopes can only be narrowed: a scope S2 may replace S1 iff S2's policies are a subset of S1's
(:meth:`Scope.contains`, :meth:`Scope.narrowed_to`).

This module is pure Python and not yet wired into the runtime: nothing here spawns, sends or logs.
Actors, scopes, policies and decisions are immutable values; every function is pure apart from the
decision cache of a :class:`PolicySet`, which is safe from any thread (see :meth:`PolicySet.check`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from .errors import SecurityError
from .security_policy import ACTIONS, POLICY_KIND, Condition, Policy, freeze, parse_policy

__all__ = [
    "ACTIONS",
    "POLICY_KIND",
    "Actor",
    "Condition",
    "Decision",
    "Policy",
    "PolicySet",
    "Scope",
    "SecurityError",
    "parse_policy",
]

_CACHE_LIMIT = 4096
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _key(value: Any) -> Any:
    """A hashable, order-independent form of a frozen value (for the decision cache)."""
    if isinstance(value, Mapping):
        return ("m", frozenset((k, _key(v)) for k, v in value.items()))
    if isinstance(value, tuple):
        return ("t", tuple(_key(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("r", repr(value))
    return (type(value).__name__, value)


@dataclass(frozen=True)
class Actor:
    """Who makes a call: an ``id`` (``notebook``, ``app:worker``, ``user:42``) and free ``meta``.

    ``meta`` is copied and frozen on construction (mappings read-only, lists become tuples), so an
    actor never changes after it is made; two actors with the same id and meta are equal.
    """

    id: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise SecurityError(f"an actor's id must be a non-empty string (got {self.id!r})")
        if not isinstance(self.meta, Mapping):
            raise SecurityError(f"actor '{self.id}': meta must be a mapping (got {type(self.meta).__name__})")
        bad = [k for k in self.meta if not isinstance(k, str)]
        if bad:
            raise SecurityError(f"actor '{self.id}': meta keys must be strings (got {bad[0]!r})")
        object.__setattr__(self, "meta", freeze(self.meta))
        object.__setattr__(self, "_cache_key", (self.id, _key(self.meta)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Actor) and self._cache_key == other._cache_key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._cache_key)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Scope:
    """A set of policy IDs: the only policies that count for a call made in it.

    A scope is a value; :meth:`with_policy` and :meth:`without` return new scopes. Whether the IDs
    exist is checked by the :class:`PolicySet` that uses the scope (:meth:`PolicySet.scope`,
    :meth:`PolicySet.check`).
    """

    policies: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        ids = frozenset(self.policies)
        bad = [p for p in ids if not isinstance(p, str) or not p]
        if bad:
            raise SecurityError(f"a scope holds policy IDs (strings); got {bad[0]!r}")
        object.__setattr__(self, "policies", ids)

    @classmethod
    def of(cls, *policy_ids: str) -> Scope:
        """``Scope.of("app:a", "app:b")``."""
        return cls(frozenset(policy_ids))

    def with_policy(self, policy_id: str) -> Scope:
        """This scope plus ``policy_id`` (a widening: only for whoever may grant it)."""
        return Scope(self.policies | {policy_id})

    def without(self, policy_id: str) -> Scope:
        """This scope minus ``policy_id`` (always a narrowing; unchanged if it was not there)."""
        return Scope(self.policies - {policy_id})

    def contains(self, other: Scope) -> bool:
        """Whether ``other`` is a narrowing of this scope (its policies are a subset of these)."""
        return other.policies <= self.policies

    def narrowed_to(self, other: Scope) -> Scope:
        """``other``, if it narrows this scope; a widening raises :class:`SecurityError` naming the extra IDs."""
        extra = sorted(other.policies - self.policies)
        if extra:
            raise SecurityError(
                f"cannot widen a scope: {', '.join(extra)} not in the current scope"
                f" ({', '.join(sorted(self.policies)) or 'empty'}); a scope can only be narrowed"
            )
        return other

    def __iter__(self) -> Iterator[str]:
        """The policy IDs in sorted order."""
        return iter(sorted(self.policies))

    def __len__(self) -> int:
        return len(self.policies)


@dataclass(frozen=True)
class Decision:
    """The answer to one check."""

    allowed: bool
    action: str
    resource: str
    actor_id: str
    policy: str | None
    """The deciding policy: the deny that refused, the allow that permitted; None if open or none allowed."""
    reason: str
    """``denied by policy <id>``, ``no policy allows it``, ``allowed by policy <id>`` or ``open``."""

    @property
    def message(self) -> str:
        """API.md's text: ``permission denied: <action> on <resource> for actor <id> (<reason>)``."""
        verdict = "permission granted" if self.allowed else "permission denied"
        return f"{verdict}: {self.action} on {self.resource} for actor {self.actor_id} ({self.reason})"


class _EntryLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


# One cache slot: the outcome (allowed, policy, reason) of a scope/action/resource without conditioned
# candidates, or the candidates (denies then allows, by ID) whose conditions must be evaluated per call.
_Outcome = tuple[bool, str | None, str]


@dataclass(frozen=True)
class _Plan:
    fixed: _Outcome | None
    candidates: tuple[Policy, ...]


class PolicySet:
    """The policies of one registry version, and the checks made against them.

    Build it with :meth:`from_entries` (or from parsed :class:`Policy` values). The set never changes;
    a new registry version means a new set (and a fresh cache).
    """

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._policies: dict[str, Policy] = {}
        for p in policies:
            if p.id in self._policies:
                raise SecurityError(f"policy '{p.id}' is defined twice")
            self._policies[p.id] = p
        self._groups: dict[str, frozenset[str]] = {}
        for p in self._policies.values():
            for g in p.groups:
                self._groups[g] = self._groups.get(g, frozenset()) | {p.id}
        self._plans: dict[tuple[frozenset[str], str, str], _Plan] = {}
        self._conditioned: dict[tuple[frozenset[str], str, str, Any, Any], _Outcome] = {}

    @classmethod
    def from_entries(cls, entries: Iterable[_EntryLike]) -> PolicySet:
        """The set of every ``security.policy`` entry among ``entries`` (others are ignored).

        Raises :class:`~wippy.runtime.errors.EntryError` for the first policy that does not parse.
        """
        return cls(parse_policy(e.id, e.data) for e in entries if e.kind == POLICY_KIND)

    @property
    def open(self) -> bool:
        """True when there are no policies: every check allows (wave 1's behaviour)."""
        return not self._policies

    @property
    def policies(self) -> Mapping[str, Policy]:
        """Every policy by ID (read-only)."""
        return MappingProxyType(self._policies)

    @property
    def groups(self) -> Mapping[str, frozenset[str]]:
        """Every group and the IDs of its policies (read-only)."""
        return MappingProxyType(self._groups)

    def policy(self, policy_id: str) -> Policy:
        """The policy ``policy_id``; an unknown ID raises :class:`SecurityError` listing the known ones."""
        try:
            return self._policies[policy_id]
        except KeyError:
            raise SecurityError(
                f"unknown policy '{policy_id}'; policies: {', '.join(sorted(self._policies)) or '(none)'}"
            ) from None

    def named_scope(self, group: str) -> Scope:
        """The scope of every policy in ``group``; an unknown group raises naming the known groups."""
        try:
            return Scope(self._groups[group])
        except KeyError:
            raise SecurityError(
                f"unknown policy group '{group}'; groups: {', '.join(sorted(self._groups)) or '(none)'}"
            ) from None

    def scope(self, policy_ids: Iterable[str] = ()) -> Scope:
        """A scope of existing policy IDs; an unknown ID raises :class:`SecurityError`."""
        scope = Scope(frozenset(policy_ids))
        self._check_scope(scope)
        return scope

    def full_scope(self) -> Scope:
        """The scope of every policy of the set."""
        return Scope(frozenset(self._policies))

    def _check_scope(self, scope: Scope) -> None:
        unknown = sorted(scope.policies - self._policies.keys())
        if unknown:
            raise SecurityError(
                f"scope names unknown policy '{unknown[0]}'; policies: {', '.join(sorted(self._policies)) or '(none)'}"
            )

    def check(
        self, actor: Actor, scope: Scope, action: str, resource: str, meta: Mapping[str, Any] | None = None
    ) -> Decision:
        """Decide whether ``actor`` in ``scope`` may do ``action`` on ``resource``.

        ``meta`` is the call's own meta (the ``meta.<key>`` fields of conditions). An unknown action, a
        scope naming a policy this set does not hold, or a non-string resource raise
        :class:`SecurityError`: these are programming errors, not refusals.

        Cache: the policies that match (scope, action, resource) are found once and kept. If none of
        them has conditions the outcome is kept too, so the next such check is one dict lookup;
        otherwise the outcome is kept per (scope, action, resource, actor, meta), with the actor and
        meta compared by value, so a different actor or meta is never answered from another's entry.
        The caches are bounded (cleared when full). Any thread: entries are immutable and a dict's
        get/set is atomic, so two racing threads at worst compute the same correct outcome twice.
        """
        if action not in ACTIONS:
            raise SecurityError(f"unknown action '{action}'; actions: {', '.join(ACTIONS)}")
        if not isinstance(resource, str):
            raise SecurityError(f"a resource is a string (got {type(resource).__name__})")
        if not isinstance(actor, Actor) or not isinstance(scope, Scope):
            raise SecurityError("check() takes an Actor and a Scope")
        if not self._policies:
            return Decision(True, action, resource, actor.id, None, "open")
        plan_key = (scope.policies, action, resource)
        plan = self._plans.get(plan_key)
        if plan is None:
            self._check_scope(scope)
            plan = self._plan(scope, action, resource)
            if len(self._plans) >= _CACHE_LIMIT:
                self._plans.clear()
            self._plans[plan_key] = plan
        if plan.fixed is not None:
            outcome = plan.fixed
        else:
            frozen_meta = freeze(meta) if meta is not None else _EMPTY
            key = (*plan_key, actor._cache_key, _key(frozen_meta))  # type: ignore[attr-defined]
            found = self._conditioned.get(key)
            if found is None:
                found = self._evaluate(plan.candidates, actor, resource, frozen_meta)
                if len(self._conditioned) >= _CACHE_LIMIT:
                    self._conditioned.clear()
                self._conditioned[key] = found
            outcome = found
        allowed, policy, reason = outcome
        return Decision(allowed, action, resource, actor.id, policy, reason)

    def _plan(self, scope: Scope, action: str, resource: str) -> _Plan:
        hits = [
            p
            for p in (self._policies[i] for i in sorted(scope.policies))
            if p.matches_action(action) and p.matches_resource(resource)
        ]
        ordered = tuple([p for p in hits if p.effect == "deny"] + [p for p in hits if p.effect == "allow"])
        if any(p.conditions for p in ordered):
            return _Plan(None, ordered)
        return _Plan(self._evaluate(ordered, None, resource, _EMPTY), ordered)

    @staticmethod
    def _evaluate(ordered: tuple[Policy, ...], actor: Actor | None, resource: str, meta: Mapping[str, Any]) -> _Outcome:
        """Denies come first in ``ordered``: the first that holds decides."""
        actor_id, actor_meta = (actor.id, actor.meta) if actor is not None else ("", _EMPTY)
        for p in ordered:
            if p.conditions_hold(actor_id, actor_meta, resource, meta):
                if p.effect == "deny":
                    return (False, p.id, f"denied by policy {p.id}")
                return (True, p.id, f"allowed by policy {p.id}")
        return (False, None, "no policy allows it")

    def __repr__(self) -> str:
        return f"PolicySet({len(self._policies)} policies, {'open' if self.open else 'strict'})"
