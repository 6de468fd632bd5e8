"""The node's security state: its policies, the identities of processes, the checks and the audit trail.

:mod:`.security` decides one call against one :class:`~.security.PolicySet`; this module is what a
node keeps around it (API.md, "Security"):

- the :class:`~.security.PolicySet` of the current registry version, rebuilt when a commit changes a
  ``security.policy`` entry (:meth:`NodeSecurity.refresh`), and a registry validator that refuses a
  transaction whose policies do not parse or whose hosts name unknown groups (:meth:`validator`);
- **open** mode while no policy exists (every check allows, said once in the node's log), **strict**
  as soon as one does;
- the identities processes carry, as small integers (*keys*): an actor key, a scope key and a
  *context* key for an (actor, scope) pair. Lua holds nothing but these keys inside handles it cannot
  forge (scheduler/security.lua), so an identity crosses hosts as a number and means the same there.
  Equal values get the same key; the tables only grow with distinct identities.
- scope key :data:`FULL` is the notebook's "every right" (not a set of policies: it allows every
  action, open or strict, and can be narrowed to any scope);
- the notebook user's identity (:attr:`caller`, actor ``notebook``; :meth:`whoami` narrows or resets
  it), the identity of tree processes (:meth:`tree_context`: the entry's ID as actor, the host's
  ``default_scope`` groups as scope);
- every refusal: a row of :attr:`denials` (``%policy log``), a ``security.denied`` event on the bus and
  a line in the node's log.

Threads: any. The identity tables and the denial log are guarded by one lock; the policy set is
replaced whole (a reference swap), and :meth:`~.security.PolicySet.check` is safe from any thread.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .entries import Entry
from .errors import EntryError, SecurityError
from .events import EventBus
from .registry import ChangeSet
from .security import ACTIONS, POLICY_KIND, Actor, Decision, PolicySet, Scope

__all__ = ["FULL", "NOTEBOOK_ACTOR", "Denial", "NodeSecurity", "host_default_groups"]

FULL = 0
"""The scope key of "every right" (the notebook's scope until ``%whoami --scope`` narrows it)."""
NOTEBOOK_ACTOR = "notebook"
DENIALS_KEPT = 1000


@dataclass(frozen=True)
class Denial:
    """One refused call, as ``%policy log`` shows it."""

    time: float          #: unix seconds
    pid: str | None      #: the calling process (None: a call from Python)
    actor: str
    action: str
    resource: str
    policy: str | None   #: the deny that refused it; None when no policy allowed it
    message: str         #: the error text the caller got


def host_default_groups(entry: Entry | None) -> tuple[str, ...]:
    """The ``host: {default_scope: [...]}`` groups of a ``process.host`` entry (none without one)."""
    if entry is None:
        return ()
    host = entry.data.get("host")
    raw = host.get("default_scope") if isinstance(host, Mapping) else None
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    return tuple(str(g) for g in raw) if isinstance(raw, list | tuple) else ()


def _check_default_scope(entry: Entry, policies: PolicySet) -> None:
    host = entry.data.get("host")
    raw = host.get("default_scope") if isinstance(host, Mapping) else None
    if raw is None:
        return
    groups = [raw] if isinstance(raw, str) else raw
    if not isinstance(groups, list | tuple):
        raise EntryError(f"entry '{entry.id}': host.default_scope: a list of policy groups (got {raw!r})")
    for i, g in enumerate(groups):
        if not isinstance(g, str) or g not in policies.groups:
            known = ", ".join(sorted(policies.groups)) or "(none: define security.policy entries with groups:)"
            raise EntryError(f"entry '{entry.id}': host.default_scope[{i}]: unknown policy group {g!r}"
                             f" (groups: {known})")


@dataclass(frozen=True)
class _HostDefault:
    """The scope "whatever ``host: {default_scope}`` of this host names now" (tree processes)."""

    host: str


class NodeSecurity:
    """A node's policies, identities, checks and denials (see the module docstring). Any thread."""

    def __init__(self, entries: Callable[[], Iterable[Entry]], entry: Callable[[str], Entry | None],
                 events: EventBus, note: Callable[[str], None], now: Callable[[], float] = time.time) -> None:
        self._entries = entries
        self._entry = entry
        self._events = events
        self._note = note
        self._now = now
        self._lock = threading.Lock()
        self._policies = PolicySet()
        self.generation = 0
        """Bumped whenever the policy set changes (hosts drop their cached decisions)."""
        self._actors: list[Actor] = []
        self._actor_keys: dict[Actor, int] = {}
        self._scopes: list[Scope | _HostDefault | None] = [None]          # key 0 = FULL
        self._scope_keys: dict[Scope | _HostDefault, int] = {}
        self._contexts: list[tuple[int, int]] = []
        self._context_keys: dict[tuple[int, int], int] = {}
        self._said_open = False
        self._defaults: dict[str, tuple[str, ...]] = {}
        self._denials: collections.deque[Denial] = collections.deque(maxlen=DENIALS_KEPT)
        self._listeners: list[Callable[[], None]] = []
        self.caller: int = self.context(Actor(NOTEBOOK_ACTOR), FULL)
        """The context of calls made from Python and from the notebook's shell process."""
        self.refresh()

    # ------------------------------------------------------------------ policies
    @property
    def policies(self) -> PolicySet:
        """The policy set of the current registry version."""
        return self._policies

    @property
    def open(self) -> bool:
        """True while no ``security.policy`` entry exists: every check allows."""
        return self._policies.open

    @property
    def mode(self) -> str:
        return "open" if self.open else "strict"

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` after the policy set changed (on the committing thread)."""
        self._listeners.append(listener)

    def refresh(self) -> bool:
        """Rebuild the policy set from the registry's current entries; True if it changed."""
        entries = list(self._entries())
        new = PolicySet.from_entries(entries)
        old = self._policies
        defaults = {e.id: host_default_groups(e) for e in entries if e.kind == "process.host"}
        # a host's default_scope changes what its tree processes may do: cached decisions go too
        changed = dict(new.policies) != dict(old.policies) or defaults != self._defaults
        self._defaults = defaults
        if changed:
            self._policies = new
            with self._lock:
                self.generation += 1
        if new.open and not self._said_open:
            self._said_open = True
            self._note("security: the node runs open (no security.policy entries: every call is allowed);"
                       " defining a policy makes it strict")
        elif changed and not new.open and dict(new.policies) != dict(old.policies):
            self._note(f"security: strict, {len(new.policies)} policies")
        if changed:
            for fn in list(self._listeners):
                fn()
        return changed

    def validator(self, cs: ChangeSet) -> None:
        """Refuse a transaction whose policies do not parse, or whose hosts name unknown groups."""
        touched = any(c.kind == POLICY_KIND or (c.before is not None and c.before.kind == POLICY_KIND)
                      or c.kind == "process.host" for c in cs.changes)
        if not touched:
            return
        policies = PolicySet.from_entries(cs.after.values())   # raises EntryError naming the field
        for e in cs.after.values():
            if e.kind == "process.host":
                _check_default_scope(e, policies)

    # ------------------------------------------------------------------ identities
    def actor_key(self, actor: Actor) -> int:
        with self._lock:
            key = self._actor_keys.get(actor)
            if key is None:
                key = self._actor_keys[actor] = len(self._actors)
                self._actors.append(actor)
            return key

    def scope_key(self, scope: Scope | _HostDefault | None) -> int:
        """The key of ``scope`` (None: :data:`FULL`)."""
        if scope is None:
            return FULL
        with self._lock:
            key = self._scope_keys.get(scope)
            if key is None:
                key = self._scope_keys[scope] = len(self._scopes)
                self._scopes.append(scope)
            return key

    def actor(self, key: int) -> Actor:
        try:
            return self._actors[key]
        except (IndexError, TypeError):
            raise SecurityError(f"unknown actor handle {key!r}") from None

    def scope(self, key: int) -> Scope | None:
        """The scope of ``key`` now; None for :data:`FULL`. A host's default scope is resolved against
        the current policies (its groups' policies)."""
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(self._scopes):
            raise SecurityError(f"unknown scope handle {key!r}")
        s = self._scopes[key]
        if isinstance(s, _HostDefault):
            groups = [g for g in self._host_groups(s.host) if g in self._policies.groups]
            return self.named_scope(groups)
        return s

    def context(self, actor: Actor | int, scope: Scope | int | None) -> int:
        """The context key of (actor, scope); either given as a value or as its key."""
        a = actor if isinstance(actor, int) else self.actor_key(actor)
        s = scope if isinstance(scope, int) else self.scope_key(scope)
        self.actor(a)
        self.scope(s)
        with self._lock:
            key = self._context_keys.get((a, s))
            if key is None:
                key = self._context_keys[(a, s)] = len(self._contexts)
                self._contexts.append((a, s))
            return key

    def parts(self, ctx: int) -> tuple[int, int]:
        """(actor key, scope key) of a context."""
        try:
            return self._contexts[ctx]
        except (IndexError, TypeError):
            raise SecurityError(f"unknown security context {ctx!r}") from None

    def actor_of(self, ctx: int) -> Actor:
        return self.actor(self.parts(ctx)[0])

    def scope_of(self, ctx: int) -> Scope | None:
        return self.scope(self.parts(ctx)[1])

    def describe_scope(self, key: int) -> list[str]:
        """The policy IDs of a scope, sorted (``["*"]`` for :data:`FULL`)."""
        s = self.scope(key)
        return ["*"] if s is None else list(s)

    def named_scope(self, groups: Iterable[str]) -> Scope:
        """The scope of every policy in ``groups``; an unknown group raises :class:`SecurityError`."""
        ids: set[str] = set()
        for g in groups:
            ids |= self._policies.named_scope(g).policies
        return Scope(frozenset(ids))

    def narrow(self, current: int, wanted: int) -> int:
        """``wanted`` if it narrows ``current`` (scope keys); a widening raises :class:`SecurityError`."""
        cur, new = self.scope(current), self.scope(wanted)
        if cur is None:
            return wanted
        if new is None:
            raise SecurityError("cannot widen a scope: full rights are not in the current scope"
                                f" ({', '.join(cur) or 'empty'}); a scope can only be narrowed")
        cur.narrowed_to(new)
        return wanted

    def tree_context(self, entry_id: str, host: str) -> int:
        """The context of a process started by the node from its tree: actor = the entry's ID, scope =
        the ``default_scope`` groups of its host as they are at each check (empty when it has none)."""
        return self.context(Actor(entry_id), self.scope_key(_HostDefault(host)))

    def _host_groups(self, host: str) -> tuple[str, ...]:
        e = self._entry(host)
        return host_default_groups(e) if e is not None and e.kind == "process.host" else ()

    def whoami(self, actor: str | None = None, meta: Mapping[str, Any] | None = None,
               groups: Iterable[str] | None = None, reset: bool = False) -> int:
        """Change the notebook's identity: act as ``actor`` (with ``meta``), narrowed to ``groups``;
        ``reset`` gives back actor ``notebook`` with every right. Returns the new :attr:`caller`."""
        if reset:
            self.caller = self.context(Actor(NOTEBOOK_ACTOR), FULL)
        else:
            a, s = self.parts(self.caller)
            cur_actor = self.actor(a)
            new_actor = Actor(actor if actor is not None else cur_actor.id,
                              dict(meta) if meta is not None else (cur_actor.meta if actor is None else {}))
            scope_key = s
            if groups is not None:
                scope_key = self.narrow(s, self.scope_key(self.named_scope(list(groups))))
            self.caller = self.context(new_actor, scope_key)
        for fn in list(self._listeners):
            fn()
        return self.caller

    # ------------------------------------------------------------------ checks
    def decide(self, ctx: int, action: str, resource: str, meta: Mapping[str, Any] | None = None) -> Decision:
        """The decision for a call in context ``ctx`` (nothing recorded). Policies a scope names that no
        longer exist (deleted since) simply do not count."""
        if action not in ACTIONS:
            raise SecurityError(f"unknown action '{action}'; actions: {', '.join(ACTIONS)}")
        a, s = self.parts(ctx)
        actor = self.actor(a)
        scope = self.scope(s)
        policies = self._policies
        if policies.open:
            return Decision(True, action, str(resource), actor.id, None, "open")
        if scope is None:
            return Decision(True, action, str(resource), actor.id, None, "full rights")
        known = scope.policies & policies.policies.keys()
        if known != scope.policies:
            scope = Scope(known)
        return policies.check(actor, scope, action, str(resource), meta)

    def decide_spawn(self, ctx: int, entry_id: str, host: str) -> Decision:
        """``process.spawn`` of ``entry_id`` on ``host``: refused if a deny matches either, else allowed
        if an allow matches either (a policy may name the entries, or the host: "anything on the sandbox
        host"), else refused naming the entry."""
        on_entry = self.decide(ctx, "process.spawn", entry_id)
        on_host = self.decide(ctx, "process.spawn", host)
        for d in (on_entry, on_host):
            if not d.allowed and d.policy is not None:
                return d
        if on_entry.allowed:
            return on_entry
        return on_host if on_host.allowed else on_entry

    def check(self, ctx: int, action: str, resource: str, pid: str | None = None,
              meta: Mapping[str, Any] | None = None) -> Decision:
        """:meth:`decide`, and a refusal recorded (:meth:`denied`)."""
        d = self.decide(ctx, action, resource, meta)
        if not d.allowed:
            self.denied(d, pid)
        return d

    def require(self, ctx: int, action: str, resource: str, pid: str | None = None) -> None:
        """:meth:`check`; a refusal raises :class:`SecurityError` with API.md's message."""
        d = self.check(ctx, action, resource, pid)
        if not d.allowed:
            raise SecurityError(d.message)

    def require_spawn(self, ctx: int, entry_id: str, host: str, pid: str | None = None) -> None:
        """:meth:`decide_spawn`; a refusal is recorded and raises :class:`SecurityError`."""
        d = self.decide_spawn(ctx, entry_id, host)
        if not d.allowed:
            self.denied(d, pid)
            raise SecurityError(d.message)

    def denied(self, d: Decision, pid: str | None) -> None:
        """Record a refusal: a row of :attr:`denials`, a ``security.denied`` event, a log line."""
        row = Denial(self._now(), pid, d.actor_id, d.action, d.resource, d.policy, d.message)
        with self._lock:
            self._denials.append(row)
        if "security.denied" in self._events.wanted:
            self._events.emit("security.denied", pid=pid, actor=d.actor_id, action=d.action,
                              resource=d.resource, policy=d.policy, reason=d.reason)
        self._note(f"security: {d.message}" + (f" (from {pid})" if pid else ""))

    @property
    def denials(self) -> list[Denial]:
        """The last refusals, oldest first (at most :data:`DENIALS_KEPT`)."""
        with self._lock:
            return list(self._denials)

    def clear_denials(self) -> None:
        with self._lock:
            self._denials.clear()

    # ------------------------------------------------------------------ the Lua side's calls
    def lua_call(self, host: str, op: str, args: list[Any]) -> tuple[Any, ...]:
        """A call of scheduler/security.lua (host ``host``'s thread): ``(value,)`` or ``(None, error)``.

        Every identity crosses as an integer key; a key Lua did not get from here is refused.
        """
        try:
            return self._lua_op(host, op, args)
        except SecurityError as exc:
            return (None, str(exc))
        except EntryError as exc:
            return (None, str(exc))

    def _lua_op(self, host: str, op: str, a: list[Any]) -> tuple[Any, ...]:
        if op == "check":
            d = self.check(int(a[0]), str(a[1]), str(a[2]), str(a[3]) if a[3] is not None else None)
            return (True,) if d.allowed else (False, d.message)
        if op == "check_spawn":
            d = self.decide_spawn(int(a[0]), str(a[1]), str(a[2]))
            if not d.allowed:
                self.denied(d, str(a[3]) if a[3] is not None else None)
            return (True,) if d.allowed else (False, d.message)
        if op == "denied_spawn":
            d = self.decide_spawn(int(a[0]), str(a[1]), str(a[2]))
            if not d.allowed:
                self.denied(d, str(a[3]) if a[3] is not None else None)
            return (True,)
        if op == "denied":
            d = self.decide(int(a[0]), str(a[1]), str(a[2]))
            if not d.allowed:
                self.denied(d, str(a[3]) if a[3] is not None else None)
            return (True,)
        if op == "tree":
            return (self.tree_context(str(a[0]), host),)
        if op == "can":
            meta = a[3] if isinstance(a[3], dict) else None
            return (self.decide(int(a[0]), str(a[1]), str(a[2]), meta).allowed,)
        if op == "actor_of":
            return (self.parts(int(a[0]))[0],)
        if op == "scope_of":
            return (self.parts(int(a[0]))[1],)
        if op == "actor_id":
            return (self.actor(int(a[0])).id,)
        if op == "actor_meta":
            return (_thaw(self.actor(int(a[0])).meta),)
        if op == "scope_policies":
            return (self.describe_scope(int(a[0])),)
        if op == "scope_contains":
            s = self.scope(int(a[0]))
            return (s is None or str(a[1]) in s.policies,)
        if op == "scope_with":
            pid = str(a[1])
            self._policies.policy(pid)   # an unknown ID raises, naming the known ones
            s = self.scope(int(a[0]))
            return (FULL if s is None else self.scope_key(s.with_policy(pid)),)
        if op == "scope_without":
            s = self.scope(int(a[0]))
            base = self._policies.full_scope() if s is None else s
            return (self.scope_key(base.without(str(a[1]))),)
        if op == "policy_info":
            p = self._policies.policy(str(a[0]))
            return ({"id": p.id, "effect": p.effect, "actions": list(p.actions), "resources": list(p.resources),
                     "groups": sorted(p.groups)},)
        if op == "new_actor":
            meta = a[1] if isinstance(a[1], dict) else {}
            return (self.actor_key(Actor(str(a[0]), meta)),)
        if op == "new_scope":
            ids = a[0] if isinstance(a[0], list) else []
            return (self.scope_key(self._policies.scope(str(i) for i in ids)),)
        if op == "named_scope":
            return (self.scope_key(self._policies.named_scope(str(a[0]))),)
        if op == "narrow":
            base_actor, base_scope = self.parts(int(a[0]))
            actor = self.actor(int(a[1])) if a[1] is not None else None
            scope = self.narrow(base_scope, int(a[2])) if a[2] is not None else base_scope
            return (self.context(self.actor_key(actor) if actor is not None else base_actor, scope),)
        raise SecurityError(f"unknown security call {op!r}")


def _thaw(value: Any) -> Any:
    """A frozen value (security_policy.freeze) as plain dicts and lists, for Lua."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
