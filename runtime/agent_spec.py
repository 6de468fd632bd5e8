"""Agents, tools and models as the registry holds them (API.md, "Agents"), resolved and checked.

* An **agent** is a ``registry.entry`` with ``meta: {type: agent.gen1, name}`` and ``prompt``, ``model``,
  ``temperature``, ``max_tokens``, ``tools`` (IDs and ``ns:*`` wildcards), ``memory``, ``traits``,
  ``delegate`` and ``inherit``. :func:`resolve_agent` merges what it inherits and composes its system
  message: the prompt, the traits' prompts, ``## Your memory contains:`` with the memory items, then
  the delegates with their rules, in that order.
* A **tool** is a ``function.lua`` entry with ``meta: {type: tool, input_schema, llm_alias?,
  llm_description?}``; :func:`tool_spec` gives its name, description and JSON schema.
* A **model** is a ``registry.entry`` with ``meta: {type: llm.model, name}`` (:func:`find_model`).

:func:`check_agents` is the commit-time check: an agent with an unknown model, tool, trait or delegate,
or an inherit cycle, refuses the transaction with the entry and the field named. Pure functions over
an entry lookup: any thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .entries import Entry
from .errors import EntryError

__all__ = [
    "AGENT_TYPE",
    "BUILTIN_TOOLS",
    "LOCAL_MODEL",
    "MODEL_TYPE",
    "TOOL_TYPE",
    "TRAIT_TYPE",
    "AgentSpec",
    "ToolSpec",
    "check_agents",
    "find_model",
    "model_names",
    "resolve_agent",
    "tool_spec",
]

AGENT_TYPE = "agent.gen1"
TOOL_TYPE = "tool"
MODEL_TYPE = "llm.model"
TRAIT_TYPE = "agent.trait"
LOCAL_MODEL = "local"
#: tools the node provides itself (agents list them by ID like any tool)
BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    "wippy.agents:define_tool": {
        "name": "define_tool",
        "description": (
            "Define (or replace) a tool: a function.lua entry in the registry, usable from your next step. "
            "`id` is 'namespace:name'; `source` is Lua code defining `function main(args) ... end` "
            "(args is a table of the tool's arguments); `input_schema` is the JSON schema of those arguments."
        ),
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "maxLength": 120},
                "description": {"type": "string", "maxLength": 200},
                "source": {"type": "string", "maxLength": 4000},
                "input_schema": {"type": "object"},
            },
            "required": ["id", "description", "source"],
        },
    },
}

Lookup = Callable[[str], Entry | None]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as offered to a model: ``name`` (unique in the agent), ``description``, JSON ``schema``;
    ``id`` is the function entry, or the delegate agent's ID when ``delegate`` is set."""

    id: str
    name: str
    description: str
    schema: Mapping[str, Any]
    delegate: bool = False

    def to_openai(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": dict(self.schema)}


@dataclass(frozen=True)
class AgentSpec:
    """An agent entry resolved: inherit merged, wildcards expanded, the system message composed."""

    id: str
    name: str
    title: str
    system: str
    model: str
    temperature: float | None
    max_tokens: int | None
    tools: tuple[ToolSpec, ...]
    memory: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    inherits: tuple[str, ...] = ()
    raw_prompt: str = ""
    delegates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def tool(self, name: str) -> ToolSpec | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


def _is(entry: Entry | None, typ: str) -> bool:
    return entry is not None and entry.kind == "registry.entry" and entry.meta.get("type") == typ


def _strings(entry_id: str, field_name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EntryError(f"entry '{entry_id}': `{field_name}` must be a list of strings")
    return list(value)


def model_names(entries: Iterable[Entry]) -> list[str]:
    """The names of the ``llm.model`` entries, and ``local`` (always there), sorted."""
    names = {str(e.meta.get("name")) for e in entries if _is(e, MODEL_TYPE) and e.meta.get("name")}
    names.add(LOCAL_MODEL)
    return sorted(names)


def find_model(name: str, entries: Iterable[Entry]) -> Entry | None:
    """The ``llm.model`` entry whose ``meta.name`` (or ID) is ``name``; None (``local`` may be built in)."""
    for e in entries:
        if _is(e, MODEL_TYPE) and (e.meta.get("name") == name or e.id == name):
            return e
    return None


def _schema_of(entry_id: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {"type": "object", "properties": {}}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise EntryError(f"entry '{entry_id}': meta.input_schema is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise EntryError(f"entry '{entry_id}': meta.input_schema must be a JSON schema (a mapping)")
    if raw.get("type", "object") != "object":
        raise EntryError(f"entry '{entry_id}': meta.input_schema must describe an object (type: object)")
    return dict(raw)


def tool_spec(entry_id: str, lookup: Lookup) -> ToolSpec:
    """The tool ``entry_id`` (a ``function.lua`` entry of meta.type ``tool``, or a built-in tool)."""
    builtin = BUILTIN_TOOLS.get(entry_id)
    if builtin is not None:
        return ToolSpec(entry_id, builtin["name"], builtin["description"], builtin["schema"])
    e = lookup(entry_id)
    if e is None:
        raise EntryError(
            f"unknown tool '{entry_id}': no such entry (define a function.lua entry with "
            "meta.type: tool, or use one of " + ", ".join(sorted(BUILTIN_TOOLS)) + ")"
        )
    if e.kind != "function.lua":
        raise EntryError(f"tool '{entry_id}' is a {e.kind} entry; a tool is a function.lua entry with meta.type: tool")
    name = e.meta.get("llm_alias") or e.name
    desc = e.meta.get("llm_description") or e.meta.get("comment") or f"the tool {e.id}"
    return ToolSpec(e.id, str(name), str(desc), _schema_of(e.id, e.meta.get("input_schema")))


def _expand_tools(agent_id: str, patterns: list[str], entries: Iterable[Entry]) -> list[str]:
    out: list[str] = []
    all_entries = list(entries)
    for pat in patterns:
        if pat.endswith(":*"):
            ns = pat[:-2]
            found = sorted(
                e.id
                for e in all_entries
                if e.namespace == ns and e.kind == "function.lua" and e.meta.get("type") == TOOL_TYPE
            )
            out.extend(i for i in found if i not in out)
        elif pat not in out:
            out.append(pat)
    return out


def _trait_prompt(agent_id: str, trait: str, entries: list[Entry], lookup: Lookup) -> str:
    e = lookup(trait) if ":" in trait else None
    if e is None:
        for cand in entries:
            if _is(cand, TRAIT_TYPE) and (cand.meta.get("name") == trait or cand.id == trait):
                e = cand
                break
    if not _is(e, TRAIT_TYPE):
        known = sorted(str(c.meta.get("name") or c.id) for c in entries if _is(c, TRAIT_TYPE))
        raise EntryError(
            f"entry '{agent_id}': traits: unknown trait '{trait}' (traits: "
            f"{', '.join(known) or '(none)'}; a trait is a registry.entry with meta.type: agent.trait)"
        )
    assert e is not None
    return str(e.data.get("prompt") or "")


def _chain(agent_id: str, lookup: Lookup, seen: tuple[str, ...] = ()) -> list[Entry]:
    """The agent and everything it inherits, depth first, each once; a cycle is refused."""
    if agent_id in seen:
        cycle = " -> ".join((*seen[seen.index(agent_id) :], agent_id))
        raise EntryError(f"entry '{seen[0]}': inherit: cycle {cycle} (an agent cannot inherit itself)")
    e = lookup(agent_id)
    if not _is(e, AGENT_TYPE):
        if seen:
            raise EntryError(
                f"entry '{seen[-1]}': inherit: unknown agent '{agent_id}' (an agent is a "
                "registry.entry with meta.type: agent.gen1)"
            )
        raise EntryError(f"unknown agent '{agent_id}' (an agent is a registry.entry with meta.type: agent.gen1)")
    assert e is not None
    out = [e]
    for parent in _strings(e.id, "inherit", e.data.get("inherit")):
        for p in _chain(parent, lookup, (*seen, agent_id)):
            if p not in out:
                out.append(p)
    return out


def resolve_agent(agent_id: str, lookup: Lookup, entries: Iterable[Entry]) -> AgentSpec:
    """The agent ``agent_id`` resolved against the current entries; :class:`EntryError` names the fault."""
    all_entries = list(entries)
    chain = _chain(agent_id, lookup)
    me = chain[0]
    prompts: list[str] = []
    tools: list[str] = []
    memory: list[str] = []
    traits: list[str] = []
    delegates: dict[str, dict[str, str]] = {}
    for e in chain:  # the agent's own first, then what it inherits
        p = e.data.get("prompt")
        if isinstance(p, str) and p.strip() and p not in prompts:
            prompts.append(p.strip())
        for t in _strings(e.id, "tools", e.data.get("tools")):
            if t not in tools:
                tools.append(t)
        for m in _strings(e.id, "memory", e.data.get("memory")):
            if m not in memory:
                memory.append(m)
        for t in _strings(e.id, "traits", e.data.get("traits")):
            if t not in traits:
                traits.append(t)
        d = e.data.get("delegate") or {}
        if not isinstance(d, dict):
            raise EntryError(f"entry '{e.id}': `delegate` maps agent IDs to {{name, rule}}")
        for target, how in d.items():
            how = how if isinstance(how, dict) else {}
            delegates.setdefault(
                str(target),
                {"name": str(how.get("name") or str(target).split(":")[-1]), "rule": str(how.get("rule") or "")},
            )
    model = me.data.get("model")
    for e in chain[1:]:
        if model is None:
            model = e.data.get("model")
    model = str(model) if model is not None else LOCAL_MODEL
    if model != LOCAL_MODEL and find_model(model, all_entries) is None:
        raise EntryError(
            f"entry '{me.id}': model: unknown model '{model}' (models: "
            f"{', '.join(model_names(all_entries))}; define a registry.entry with meta.type: llm.model)"
        )
    specs: list[ToolSpec] = []
    for tid in _expand_tools(me.id, tools, all_entries):
        try:
            specs.append(tool_spec(tid, lookup))
        except EntryError as exc:
            raise EntryError(f"entry '{me.id}': tools: {exc}") from None
    for target, how in delegates.items():
        if not _is(lookup(target), AGENT_TYPE):
            raise EntryError(f"entry '{me.id}': delegate: unknown agent '{target}'")
        specs.append(
            ToolSpec(
                target,
                how["name"],
                how["rule"] or f"ask the agent {target}",
                {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
                delegate=True,
            )
        )
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EntryError(f"entry '{me.id}': tools: two tools are called {dup[0]!r} (set meta.llm_alias on one)")
    system = list(prompts)
    for t in traits:
        tp = _trait_prompt(me.id, t, all_entries, lookup)
        if tp.strip():
            system.append(tp.strip())
    if memory:
        system.append("## Your memory contains:\n" + "\n".join(f"- {m}" for m in memory))
    if delegates:
        system.append(
            "## You can delegate:\n" + "\n".join(f"- {how['name']}: {how['rule']}" for how in delegates.values())
        )
    temperature = me.data.get("temperature")
    max_tokens = me.data.get("max_tokens")
    for e in chain[1:]:
        temperature = e.data.get("temperature") if temperature is None else temperature
        max_tokens = e.data.get("max_tokens") if max_tokens is None else max_tokens
    return AgentSpec(
        id=me.id,
        name=str(me.meta.get("name") or me.name),
        title=str(me.meta.get("title") or ""),
        system="\n\n".join(system),
        model=model,
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        max_tokens=int(max_tokens) if isinstance(max_tokens, int) else None,
        tools=tuple(specs),
        memory=tuple(memory),
        traits=tuple(traits),
        inherits=tuple(e.id for e in chain[1:]),
        raw_prompt="\n\n".join(prompts),
        delegates=delegates,
    )


def check_agents(after: Mapping[str, Entry], touched: Iterable[str]) -> None:
    """Refuse (EntryError) a commit leaving a touched agent, or one depending on a touched entry, broken."""
    touched = set(touched)
    agents = [e for e in after.values() if _is(e, AGENT_TYPE)]
    for e in agents:
        deps = {
            e.id,
            *_strings(e.id, "inherit", e.data.get("inherit")),
            *_strings(e.id, "tools", e.data.get("tools")),
            *_strings(e.id, "traits", e.data.get("traits")),
            *(e.data.get("delegate") or {}),
        }
        if not (deps & touched) and not any(t.endswith(":*") for t in _strings(e.id, "tools", e.data.get("tools"))):
            continue
        for field_name in ("temperature",):
            v = e.data.get(field_name)
            if v is not None and not isinstance(v, int | float):
                raise EntryError(f"entry '{e.id}': {field_name}: must be a number")
        v = e.data.get("max_tokens")
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise EntryError(f"entry '{e.id}': max_tokens: must be a positive integer")
        resolve_agent(e.id, after.get, after.values())
