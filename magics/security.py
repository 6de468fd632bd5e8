"""Security magics: ``%whoami`` and ``%policy list|show|check|log`` (API.md, "Security").

    %whoami                                       the notebook's actor and scope
    %whoami --as ACTOR [--meta k=v ...]           act as ACTOR (with meta) from now on
    %whoami --scope GROUP [GROUP ...]             narrow the scope to the policies of GROUPs
    %whoami --reset                               actor ``notebook`` with every right again
    %policy list                                  the security.policy entries: a table
    %policy show ID                               one policy, and whether the notebook's scope holds it
    %policy check ACTION RESOURCE [--meta k=v]    what a call by the notebook would get (nothing recorded)
    %policy log [--clear]                         the refusals so far (pid, actor, action, resource, policy)

The notebook user is the actor ``notebook`` with every right until ``%whoami`` narrows it; the shell
process (``%%lua`` cells) and every call from Python (``node.spawn``, ``node.send``, ``node.apply``, the
magics that change the registry) act as that identity, and processes spawned from cells inherit it. A
scope can only be narrowed: ``--scope`` with a group whose policies the current scope does not hold is
refused (``%whoami --reset`` first).

Threads: each magic runs on the thread that runs the cell and calls ``node.security``, which any thread may
call. Wrong input raises :class:`~IPython.core.error.UsageError` (one line: what, and the fix).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from typing import Any

import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from wippy.runtime import Node, SecurityError, WippyError
from wippy.runtime.security import Policy

from .current import node
from .registry import EntryText, Table

__all__ = ["PolicyText", "SecurityMagics", "identity_text"]

POLICY_SUBCOMMANDS = ("list", "show", "check", "log")
WIDTH = 40


class PolicyText(EntryText):
    """Plain text shown bare (not quoted) as a cell's result (as %registry get shows an entry)."""


def identity_text(n: Node) -> PolicyText:
    """``actor notebook`` / ``scope *`` lines: who the notebook is now."""
    sec = n.security
    actor = sec.actor_of(sec.caller)
    scope = sec.describe_scope(sec.parts(sec.caller)[1])
    meta = f" {json.dumps(dict(actor.meta), sort_keys=True, default=str)}" if actor.meta else ""
    if scope == ["*"]:
        held = "* (every right)"
    elif scope:
        held = ", ".join(scope)
    else:
        held = "(empty: every privileged call is refused)"
    mode = "open: no security.policy entries, every call is allowed" if sec.open else "strict"
    return PolicyText(f"actor  {actor.id}{meta}\nscope  {held}\nmode   {mode}")


def _pairs(words: Sequence[str], magic: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in words:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"{magic}: --meta takes key=value pairs, e.g. --meta role=worker; got {pair!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def _options(words: list[str], magic: str, valued: dict[str, int]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``words`` into positionals and options; ``valued`` says how many values an option takes
    (-1: every word up to the next option)."""
    pos: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            if w not in valued:
                raise UsageError(f"{magic}: unknown option {w}; options: {', '.join(valued)}")
            want = valued[w]
            vals: list[str] = []
            i += 1
            while i < len(words) and (want < 0 or len(vals) < want) and not words[i].startswith("--"):
                vals.append(words[i])
                i += 1
            if want > 0 and len(vals) < want:
                raise UsageError(f"{magic}: {w} needs a value (see {magic}? for the usage)")
            opts[w] = opts.get(w, []) + vals
            continue
        pos.append(w)
        i += 1
    return pos, opts


def _words(line: str, magic: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{magic}: cannot split the line ({exc}); close the quotes") from None


def _conditions(p: Policy) -> str:
    return "; ".join(f"{c.field} {c.operator} {json.dumps(c.value, default=str)}" for c in p.conditions)


def _short(text: str) -> str:
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


@magics_class
class SecurityMagics(Magics):
    """``%whoami`` and ``%policy``."""

    @line_magic
    def whoami(self, line: str) -> PolicyText:
        """``%whoami [--as ACTOR] [--meta k=v ...] [--scope GROUP ...] [--reset]``: the notebook's identity.

        %whoami                          show the actor, its scope and the node's mode
        %whoami --as ACTOR               act as ACTOR (meta from --meta, else none)
        %whoami --meta k=v ...           the actor's meta (conditions read actor.meta.k)
        %whoami --scope GROUP ...        narrow the scope to the policies of these groups
        %whoami --reset                  actor notebook with every right again
        """
        words = _words(line, "%whoami")
        pos, opts = _options(words, "%whoami", {"--as": 1, "--meta": -1, "--scope": -1, "--reset": 0})
        if pos:
            raise UsageError(f"%whoami: unexpected {' '.join(pos)!r}; usage: %whoami [--as ACTOR] [--meta k=v ...] "
                             "[--scope GROUP ...] [--reset]")
        n = node()
        if "--reset" in opts:
            if len(opts) > 1:
                raise UsageError("%whoami: --reset stands alone (it gives back actor notebook with every right)")
            n.whoami(reset=True)
            return identity_text(n)
        if "--scope" in opts and not opts["--scope"]:
            raise UsageError("%whoami: --scope needs one or more group names; %policy list shows the groups")
        actor = opts["--as"][0] if "--as" in opts else None
        meta = _pairs(opts["--meta"], "%whoami") if "--meta" in opts else None
        groups = opts.get("--scope")
        if actor is not None or meta is not None or groups is not None:
            try:
                n.whoami(actor=actor, groups=groups, meta=meta)
            except WippyError as exc:
                raise UsageError(f"%whoami: {exc} (the identity is unchanged)") from None
        return identity_text(n)

    @line_magic
    def policy(self, line: str) -> Any:
        """``%policy list|show ID|check ACTION RESOURCE|log [--clear]``: the node's security policies.

        %policy list                           every security.policy entry: effect, actions, resources,
                                               groups, conditions
        %policy show ID                        one policy in full
        %policy check ACTION RESOURCE          the decision for a call by the notebook now (not recorded);
                                               --meta k=v ... gives the call's meta
        %policy log [--clear]                  every refusal so far, oldest first (--clear empties it)
        """
        words = _words(line, "%policy")
        if not words:
            raise UsageError(f"%policy: missing subcommand; subcommands: {', '.join(POLICY_SUBCOMMANDS)}")
        sub, args = words[0], words[1:]
        if sub not in POLICY_SUBCOMMANDS:
            raise UsageError(f"%policy: unknown subcommand {sub!r}; subcommands: {', '.join(POLICY_SUBCOMMANDS)}")
        n = node()
        if sub == "list":
            if args:
                raise UsageError("%policy list: takes no arguments")
            return self._list(n)
        if sub == "show":
            if len(args) != 1:
                raise UsageError("%policy show: usage: %policy show ID (%policy list shows them)")
            return self._show(n, args[0])
        if sub == "check":
            return self._check(n, args)
        pos, opts = _options(args, "%policy log", {"--clear": 0})
        if pos:
            raise UsageError("%policy log: usage: %policy log [--clear]")
        if "--clear" in opts:
            count = len(n.security.denials)
            n.security.clear_denials()
            print(f"refusal log cleared ({count} rows removed)")
            return None
        return self._log(n)

    @staticmethod
    def _list(n: Node) -> Table:
        ps = n.security.policies.policies
        rows = [(p.id, p.effect, ", ".join(p.actions), _short(", ".join(p.resources)), ", ".join(sorted(p.groups)),
                 _short(_conditions(p))) for _, p in sorted(ps.items())]
        return Table(("POLICY", "EFFECT", "ACTIONS", "RESOURCES", "GROUPS", "CONDITIONS"), rows,
                     "no security.policy entries: the node runs open (every call is allowed)", "wippy-policies")

    @staticmethod
    def _show(n: Node, policy_id: str) -> PolicyText:
        sec = n.security
        p = sec.policies.policies.get(policy_id)
        if p is None:
            known = ", ".join(sorted(sec.policies.policies)) or "none (the node runs open)"
            raise UsageError(f"%policy show: no policy '{policy_id}'; policies: {known}")
        scope = sec.describe_scope(sec.parts(sec.caller)[1])
        held = "yes (every right)" if scope == ["*"] else ("yes" if policy_id in scope else "no")
        lines = [f"{p.id} ({p.effect})",
                 f"  actions:    {', '.join(p.actions)}",
                 f"  resources:  {', '.join(p.resources)}",
                 f"  groups:     {', '.join(sorted(p.groups)) or '(none)'}",
                 f"  conditions: {_conditions(p) or '(none)'}",
                 f"  in the notebook's scope: {held}"]
        return PolicyText("\n".join(lines))

    @staticmethod
    def _check(n: Node, args: list[str]) -> PolicyText:
        pos, opts = _options(args, "%policy check", {"--meta": -1})
        if len(pos) != 2:
            raise UsageError("%policy check: usage: %policy check ACTION RESOURCE [--meta k=v ...], "
                             "e.g. %policy check registry.get app.config:db")
        meta = _pairs(opts["--meta"], "%policy check") if "--meta" in opts else None
        sec = n.security
        try:
            d = sec.decide(sec.caller, pos[0], pos[1], meta)
        except SecurityError as exc:
            raise UsageError(f"%policy check: {exc}") from None
        return PolicyText(d.message)

    @staticmethod
    def _log(n: Node) -> Table:
        rows = [(time.strftime("%H:%M:%S", time.localtime(d.time)), d.pid or "(python)", d.actor, d.action,
                 d.resource, d.policy or "(no allow)") for d in n.security.denials]
        return Table(("TIME", "PID", "ACTOR", "ACTION", "RESOURCE", "POLICY"), rows, "no refusals yet",
                     "wippy-policy-log")
