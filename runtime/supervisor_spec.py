"""What supervisors and services are told to do: their specs, parsed and checked when declared.

Two kinds of registry entries (API.md "Registry entries"):

- ``process.service`` (Wippy): one process kept running, restarted with backoff, started after the
  services it ``requires`` and stopped before them.
- ``process.supervisor`` (beyond Wippy, OTP's supervisor): ordered children restarted by a strategy
  within a restart intensity.

Every parse error is an :class:`~.errors.EntryError` naming the entry and the field
(``entry 'app:sup': children[1].restart: must be one of permanent, transient, temporary (got 'always')``).
Durations are strings (``"150ms"``, ``"5s"``, ``"1m"``) or numbers of seconds. Pure functions: any thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .entries import Entry, validate_id
from .errors import EntryError
from .tree import parse_seconds

__all__ = [
    "RESTART_TYPES",
    "STRATEGIES",
    "ChildSpec",
    "RestartPolicy",
    "ServiceSpec",
    "SupervisorSpec",
    "check_supervision",
    "parse_child",
    "parse_service",
    "parse_supervisor",
    "parse_supervisor_entry",
]

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")
DEFAULT_HOST = "app:processes"
INFINITY = math.inf


class _Fields:
    """Reads one mapping of a spec, naming ``where`` (``entry 'x': children[2]``) in every error."""

    def __init__(self, owner: str, path: str, data: Any, known: tuple[str, ...]) -> None:
        self.owner, self.path = owner, path
        self.where = f"{owner}: {path}" if path else owner
        if not isinstance(data, Mapping):
            raise EntryError(f"{self.where}: must be a mapping, got {type(data).__name__}")
        self.data = data
        unknown = [str(k) for k in data if k not in known]
        if unknown:
            raise EntryError(f"{self.where}: unknown field '{unknown[0]}' (fields: {', '.join(known)})")

    def fail(self, name: str, what: str) -> EntryError:
        return EntryError(f"{self.owner}: {self.path + '.' if self.path else ''}{name}: {what}")

    def sub(self, name: str) -> str:
        """The path of a field below this mapping (``children[1].supervisor``)."""
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def duration(self, name: str, default: float, allow_infinity: bool = False) -> float:
        value = self.data.get(name)
        if value is None:
            return default
        if allow_infinity and value in ("infinity", "inf"):
            return INFINITY
        try:
            seconds = parse_seconds(value)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None
        if seconds < 0 or math.isnan(seconds):
            raise self.fail(name, f"must not be negative (got {value!r})")
        return seconds

    def number(self, name: str, default: float, low: float = 0.0) -> float:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < low:
            raise self.fail(name, f"must be a number >= {low:g} (got {value!r})")
        return float(value)

    def integer(self, name: str, default: int) -> int:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(name, f"must be a whole number >= 0 (got {value!r})")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false (got {value!r})")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.data.get(name, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)} (got {value!r})")
        return str(value)

    def entry_id(self, name: str, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(name, "is required (a registry ID, namespace:name)")
            return None
        try:
            return validate_id(value)
        except EntryError as exc:
            raise self.fail(name, str(exc)) from None

    def arguments(self, name: str) -> tuple[Any, ...]:
        value = self.data.get(name)
        if value is None or (isinstance(value, Mapping) and not value):  # {} from Lua: no arguments
            return ()
        if isinstance(value, list | tuple):
            return tuple(value)
        return (value,)  # one argument may be written without the list

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or value.startswith("{"):
            raise self.fail(name, f"must be a non-empty string not starting with '{{' (got {value!r})")
        return value


@dataclass(frozen=True)
class RestartPolicy:
    """A service's restart backoff (Wippy's ``lifecycle.restart``).

    The delay before restart number ``n`` (1, 2, ... since the last stable run) is
    ``min(initial_delay * backoff_factor ** (n - 1), max_delay)``, then scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` and capped at ``max_delay`` again. ``max_attempts`` restarts in a row
    are allowed (0 = forever); the next failure leaves the service ``failed``.
    """

    initial_delay: float = 1.0
    max_delay: float = 60.0
    backoff_factor: float = 2.0
    jitter: float = 0.1
    max_attempts: int = 0

    def delay(self, attempt: int, uniform: Callable[[float, float], float]) -> float:
        """The delay before restart ``attempt`` (1-based); ``uniform`` is ``random.Random.uniform``."""
        base = min(self.initial_delay * self.backoff_factor ** max(0, attempt - 1), self.max_delay)
        if self.jitter > 0:
            base *= 1.0 + self.jitter * uniform(-1.0, 1.0)
        return max(0.0, min(base, self.max_delay))


@dataclass(frozen=True)
class ServiceSpec:
    """A ``process.service`` entry: ``process`` on ``host`` with ``input``, and its ``lifecycle``."""

    id: str
    process: str
    host: str = DEFAULT_HOST
    input: tuple[Any, ...] = ()
    name: str | None = None
    auto_start: bool = False
    requires: tuple[str, ...] = ()
    startup: str = "required"          #: required | optional
    start_timeout: float = 10.0
    stop_timeout: float = 10.0
    stable_threshold: float = 10.0
    restart: RestartPolicy = RestartPolicy()


@dataclass(frozen=True)
class ChildSpec:
    """One child of a supervisor: a process entry (a worker), a service, or a supervisor.

    ``target`` is the entry ID (``process``, ``service`` or ``supervisor``), or None for a supervisor
    given inline (``nested``). ``shutdown`` is seconds to wait after CANCEL before terminating;
    0 means ``brutal_kill`` (terminate at once) and ``math.inf`` waits for as long as it takes.
    """

    id: str
    kind: str                          #: worker | service | supervisor
    target: str | None
    host: str = DEFAULT_HOST
    input: tuple[Any, ...] = ()
    name: str | None = None
    restart: str = "permanent"
    shutdown: float = 5.0
    nested: SupervisorSpec | None = None


@dataclass(frozen=True)
class SupervisorSpec:
    """A ``process.supervisor`` entry (or a spec table from Lua, a mapping from Python)."""

    id: str
    strategy: str = "one_for_one"
    max_restarts: int = 1              #: OTP's default intensity
    period: float = 5.0                #: OTP's default period, seconds
    children: tuple[ChildSpec, ...] = ()
    auto_start: bool = False


_CHILD_FIELDS = ("id", "process", "service", "supervisor", "host", "input", "name", "restart", "shutdown")
_SUP_FIELDS = ("id", "strategy", "max_restarts", "period", "children", "lifecycle", "meta", "name", "kind")
_SVC_FIELDS = ("process", "host", "input", "name", "lifecycle", "meta", "kind", "id")
_LIFECYCLE_FIELDS = ("auto_start", "requires", "startup", "start_timeout", "stop_timeout", "stable_threshold",
                     "restart")
_RESTART_FIELDS = ("initial_delay", "max_delay", "backoff_factor", "jitter", "max_attempts")


def parse_child(owner: str, path: str, data: Any, depth: int = 0) -> ChildSpec:
    """One child spec; ``owner`` and ``path`` name it in errors (``entry 'app:sup': children[0]``)."""
    f = _Fields(owner, path, data, _CHILD_FIELDS)
    cid = f.get("id")
    if not isinstance(cid, str) or not cid or "/" in cid:
        raise f.fail("id", f"is required: a name for the child, without '/' (got {cid!r})")
    targets = [k for k in ("process", "service", "supervisor") if f.get(k) is not None]
    if len(targets) != 1:
        raise f.fail("process", "a child names exactly one of process:, service: or supervisor: "
                     f"(got {', '.join(targets) or 'none'})")
    which = targets[0]
    nested: SupervisorSpec | None = None
    target: str | None
    if which == "supervisor" and isinstance(f.get("supervisor"), Mapping):
        if depth > 32:
            raise f.fail("supervisor", "nested more than 32 levels deep")
        nested = parse_supervisor(owner, f.sub("supervisor"), cid, f.get("supervisor"), depth + 1)
        target = None
    else:
        target = f.entry_id(which, required=True)
    kind = {"process": "worker", "service": "service", "supervisor": "supervisor"}[which]
    if kind != "worker":
        for k in ("host", "input", "name"):
            if f.get(k) is not None:
                raise f.fail(k, f"belongs to process children; a {kind} child takes its own from its entry")
    if f.get("shutdown") == "brutal_kill":
        shutdown = 0.0
    else:
        shutdown = f.duration("shutdown", INFINITY if kind == "supervisor" else 5.0, allow_infinity=True)
    return ChildSpec(
        id=cid, kind=kind, target=target, host=f.entry_id("host") or DEFAULT_HOST, input=f.arguments("input"),
        name=f.text("name"), restart=f.choice("restart", RESTART_TYPES, "permanent"), shutdown=shutdown,
        nested=nested,
    )


def parse_supervisor(owner: str, path: str, sup_id: str, data: Any, depth: int = 0) -> SupervisorSpec:
    """A supervisor spec from an entry's data, a Lua table or a Python mapping.

    ``owner`` names what it came from in errors (``entry 'app:sup'``, ``supervisor spec``), ``path`` where
    it sits inside that (empty at the top).
    """
    f = _Fields(owner, path, data, _SUP_FIELDS)
    children_raw = f.get("children", [])
    if isinstance(children_raw, Mapping) and not children_raw:   # {} from Lua is an empty list
        children_raw = []
    if not isinstance(children_raw, list | tuple):
        raise f.fail("children", f"must be a list of child specs (got {type(children_raw).__name__})")
    children = tuple(parse_child(owner, f.sub(f"children[{i}]"), c, depth) for i, c in enumerate(children_raw))
    seen: set[str] = set()
    for i, c in enumerate(children):
        if c.id in seen:
            raise EntryError(f"{owner}: {f.sub(f'children[{i}]')}.id: '{c.id}' is used by an earlier child; "
                             "child ids are unique within a supervisor")
        seen.add(c.id)
    lifecycle = _Fields(owner, f.sub("lifecycle"), f.get("lifecycle") or {}, ("auto_start",))
    return SupervisorSpec(
        id=sup_id,
        strategy=f.choice("strategy", STRATEGIES, "one_for_one"),
        max_restarts=f.integer("max_restarts", 1),
        period=f.duration("period", 5.0),
        children=children,
        auto_start=lifecycle.boolean("auto_start", False),
    )


def parse_service(entry: Entry) -> ServiceSpec:
    """A ``process.service`` entry's spec."""
    owner = f"entry '{entry.id}'"
    f = _Fields(owner, "", entry.data, _SVC_FIELDS)
    lc = _Fields(owner, "lifecycle", f.get("lifecycle") or {}, _LIFECYCLE_FIELDS)
    rs = _Fields(owner, "lifecycle.restart", lc.get("restart") or {}, _RESTART_FIELDS)
    requires_raw = lc.get("requires") or []
    if isinstance(requires_raw, str):
        requires_raw = [requires_raw]
    if not isinstance(requires_raw, list):
        raise lc.fail("requires", "must be a list of process.service IDs")
    requires: list[str] = []
    for r in requires_raw:
        try:
            requires.append(validate_id(r))
        except EntryError as exc:
            raise lc.fail("requires", str(exc)) from None
    policy = RestartPolicy(
        initial_delay=rs.duration("initial_delay", 1.0),
        max_delay=rs.duration("max_delay", 60.0),
        backoff_factor=rs.number("backoff_factor", 2.0, low=1.0),
        jitter=rs.number("jitter", 0.1),
        max_attempts=rs.integer("max_attempts", 0),
    )
    if policy.jitter > 1:
        raise rs.fail("jitter", f"must be between 0 and 1 (got {policy.jitter:g})")
    return ServiceSpec(
        id=entry.id,
        process=f.entry_id("process", required=True) or "",
        host=f.entry_id("host") or DEFAULT_HOST,
        input=f.arguments("input"),
        name=f.text("name"),
        auto_start=lc.boolean("auto_start", False),
        requires=tuple(requires),
        startup=lc.choice("startup", ("required", "optional"), "required"),
        start_timeout=lc.duration("start_timeout", 10.0),
        stop_timeout=lc.duration("stop_timeout", 10.0),
        stable_threshold=lc.duration("stable_threshold", 10.0),
        restart=policy,
    )


def parse_supervisor_entry(entry: Entry) -> SupervisorSpec:
    """A ``process.supervisor`` entry's spec."""
    return parse_supervisor(f"entry '{entry.id}'", "", entry.id, entry.data)


def _walk_children(spec: SupervisorSpec) -> list[tuple[str, ChildSpec]]:
    out: list[tuple[str, ChildSpec]] = []
    for i, c in enumerate(spec.children):
        out.append((f"children[{i}]", c))
        if c.nested is not None:
            out.extend((f"children[{i}].supervisor.{w}", cc) for w, cc in _walk_children(c.nested))
    return out


def check_supervision(after: Mapping[str, Entry], hosts: Callable[[str], bool]) -> None:
    """Check every service and supervisor entry of a registry state: fields, references, cycles.

    ``hosts(id)`` says whether a host of that ID exists outside the registry (the node's own).
    Raises :class:`EntryError` naming the entry and the field; used as a registry validator, so a bad
    spec is refused with its transaction.
    """
    def need(where: str, ref: str, kinds: tuple[str, ...]) -> None:
        e = after.get(ref)
        if e is None:
            if kinds == ("process.host",) and hosts(ref):
                return
            raise EntryError(f"{where}: '{ref}' does not exist (define it in the same change, or fix the ID)")
        if e.kind not in kinds:
            raise EntryError(f"{where}: '{ref}' is a {e.kind} entry; this field takes {' or '.join(kinds)}")

    services: dict[str, ServiceSpec] = {}
    sup_refs: dict[str, list[str]] = {}
    for e in after.values():
        if e.kind == "process.service":
            s = parse_service(e)
            services[e.id] = s
            need(f"entry '{e.id}': process", s.process, ("process.lua",))
            need(f"entry '{e.id}': host", s.host, ("process.host",))
            for r in s.requires:
                need(f"entry '{e.id}': lifecycle.requires", r, ("process.service",))
        elif e.kind == "process.supervisor":
            spec = parse_supervisor_entry(e)
            refs = sup_refs.setdefault(e.id, [])
            for w, c in _walk_children(spec):
                where = f"entry '{e.id}': {w}"
                if c.kind == "worker":
                    need(f"{where}.process", c.target or "", ("process.lua",))
                    need(f"{where}.host", c.host, ("process.host",))
                elif c.kind == "service":
                    need(f"{where}.service", c.target or "", ("process.service",))
                elif c.target is not None:
                    need(f"{where}.supervisor", c.target, ("process.supervisor",))
                    refs.append(c.target)
    _no_cycle({k: list(v.requires) for k, v in services.items()}, "requires cycle",
              "services cannot require each other in a circle")
    _no_cycle(sup_refs, "supervisor cycle", "a supervisor cannot contain itself")


def _no_cycle(graph: dict[str, list[str]], what: str, why: str) -> None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
                raise EntryError(f"entry '{nxt}': {what} {' -> '.join(cycle)} ({why})")
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if state.get(start) is None:
            visit(start, [start])
