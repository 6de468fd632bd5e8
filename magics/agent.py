"""Agent magics: ``%%agent ID`` and ``%agent list|show|replay|fork|break|continue``.

    %%agent ID [--session S] [--step] [--max-steps N]   the cell's text to the agent; its live session view
    %agent list [AGENT]                 the sessions: ID, agent, status, steps, parent and fork step, actor
    %agent show SESSION [--live]        a session drawn (turns, system message, tools, tokens, diffs)
    %agent replay SESSION               run it again on the recorded answers (no model) and compare
    %agent fork SESSION STEP [--message TEXT | --answer TEXT | --result JSON]
                                        a new session: the steps before STEP, one edit (or none: the
                                        model is asked again at STEP), then live
    %agent break ID before=model|tool|off   pause the agent's runs before each model or tool call
    %agent break                        the breakpoints and the runs paused now (what they will send)
    %agent continue [ID]                let paused runs go on

``%%agent`` runs the agent on a worker thread and waits for its answer while the view follows each
step; when a breakpoint pauses the run (``--step`` sets ``before=model`` for this agent), the cell
returns at once and the view shows what is about to be sent: ``%agent continue`` (after an edit, if you
like: the next step reads the registry again). Threads: each magic runs on the cell's thread and calls
``node.agents`` (thread-safe). Wrong input raises UsageError (one line, no traceback).
"""

from __future__ import annotations

import html
import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from wippy.runtime import WippyError
from wippy.runtime.agents import AgentResult

from .agent_session import SessionPicture, short
from .current import node
from .usage import parse, parse_json

__all__ = ["AgentMagics", "SessionTable"]

SUBCOMMANDS = ("list", "show", "replay", "fork", "break", "continue")


def _fail(sub: str, message: str) -> UsageError:
    return UsageError(f"%agent {sub}: {message}")


class SessionTable:
    """Sessions as a table (text/plain and text/html)."""

    COLUMNS = ("SESSION", "AGENT", "STATUS", "STEPS", "FORK OF", "ACTOR")

    def __init__(self, rows: list[tuple[str, ...]]) -> None:
        self.rows = rows

    def text(self) -> str:
        if not self.rows:
            return "no agent sessions yet (%%agent ID runs one)"
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.COLUMNS)]
        fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
        return "\n".join([fmt(self.COLUMNS), *(fmt(r) for r in self.rows)])

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f'<table class="wippy-agent-sessions"><tr>{head}</tr>{body}</table>'


class ReplayPicture(SessionPicture):
    """A replay: the session's picture drawn from the replay's steps, with the verdict on top."""


@magics_class
class AgentMagics(Magics):
    """``%%agent`` and ``%agent``."""

    @magic_arguments()
    @argument("agent", help="the agent.gen1 entry ID")
    @argument("--session", default=None, help="continue this session (its conversation)")
    @argument("--step", action="store_true", help="pause before each model call (%agent continue steps)")
    @argument("--max-steps", type=int, default=8, help="model steps before the run stops (default 8)")
    @argument("--static", action="store_true", help="no live view: print the session when it ends")
    @cell_magic("agent")
    def agent_cell(self, line: str, cell: str) -> Any:
        """``%%agent ID [--session S] [--step] [--max-steps N]``: the cell's text to the agent."""
        args = parse(self.agent_cell, line, "%%agent")
        n = node()
        agents = n.agents
        if not agents.is_agent(args.agent):
            known = sorted(e.id for e in n.registry.entries()
                           if e.kind == "registry.entry" and e.meta.get("type") == "agent.gen1")
            raise UsageError(f"%%agent: unknown agent '{args.agent}' (agents: {', '.join(known) or '(none)'}; "
                             "define a registry.entry with meta.type: agent.gen1)")
        if args.max_steps < 1:
            raise UsageError("%%agent: --max-steps must be at least 1")
        if args.session is not None:
            try:
                rec = agents.sessions.get(args.session)
            except WippyError as exc:
                raise UsageError(f"%%agent: {exc}") from None
            if rec.agent != args.agent:
                raise UsageError(f"%%agent: session '{args.session}' belongs to {rec.agent}, not {args.agent}")
            sid = args.session
        else:
            sid = agents.sessions.create(args.agent, actor=n.security.actor_of(n.security.caller).id)
        if args.step:
            agents.set_break(args.agent, "model")
        outcome: list[Any] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append(agents.run(args.agent, cell.strip(), session=sid, max_steps=args.max_steps))
            except BaseException as exc:
                outcome.append(exc)
            finally:
                done.set()

        view = None
        if not args.static:
            from .views.session import SessionView

            view = SessionView(n, sid)
            from IPython.display import display

            display(view)
        threading.Thread(target=work, name="wippy-agent-cell", daemon=True).start()
        while not done.wait(0.05):
            if any(p.session == sid for p in agents.paused()):
                if view is not None:
                    view.refresh()
                    return None
                return SessionPicture(n, sid)
        result = outcome[0]
        if view is not None:
            view.close()   # finished: the output keeps the static picture
        if isinstance(result, WippyError):
            raise UsageError(f"%%agent: {result}")
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, AgentResult)
        if result.error is not None and result.stopped is None:
            raise UsageError(f"%%agent: {result.error} (the session {sid} keeps the conversation)")
        return SessionPicture(n, sid) if view is None else None

    @line_magic("agent")
    def agent(self, line: str) -> Any:
        """``%agent list|show|replay|fork|break|continue ...`` (see the module's help)."""
        sub, _, rest = line.strip().partition(" ")
        if not sub:
            raise UsageError(f"%agent: missing subcommand; subcommands: {', '.join(SUBCOMMANDS)}")
        if sub not in SUBCOMMANDS:
            raise UsageError(f"%agent: unknown subcommand {sub!r}; subcommands: {', '.join(SUBCOMMANDS)}")
        try:
            return getattr(self, f"_{sub}")(rest.strip())
        except WippyError as exc:
            raise _fail(sub, str(exc)) from None

    # ------------------------------------------------------------------ subcommands
    @staticmethod
    def _list(rest: str) -> SessionTable:
        agent = rest or None
        rows = [(r.id, r.agent, r.status, str(r.steps), f"{r.parent}@{r.fork_step}" if r.parent else "",
                 r.actor or "") for r in node().agents.sessions.list(agent)]
        return SessionTable(rows)

    @staticmethod
    def _show(rest: str) -> Any:
        words = rest.split()
        if not words:
            raise _fail("show", "give a session ID (%agent list shows them)")
        n = node()
        n.agents.sessions.get(words[0])
        if "--live" in words[1:]:
            from .views.session import SessionView

            return SessionView(n, words[0])
        return SessionPicture(n, words[0])

    @staticmethod
    def _replay(rest: str) -> SessionPicture:
        if not rest:
            raise _fail("replay", "give a session ID (%agent list shows them)")
        n = node()
        r = n.agents.replay(rest.split()[0])
        verdict = (f"replay: identical ({len(r.steps)} steps, no model ran, {r.elapsed_ms:.1f} ms)" if r.identical
                   else f"replay: DIFFERENT: {r.difference}")
        return ReplayPicture(n, r.session, title=verdict, show_timing=False)

    @staticmethod
    def _fork(rest: str) -> SessionPicture:
        words = rest.split(None, 3)
        usage = "usage: %agent fork SESSION STEP [--message TEXT | --answer TEXT | --result JSON]"
        if len(words) == 2:
            words += ["", ""]
        if len(words) < 4 or words[2] not in ("", "--message", "--answer", "--result"):
            raise _fail("fork", usage)
        sid, step_text, flag, value = words
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]   # --answer "some text": the text, not its quotes
        try:
            step = int(step_text)
        except ValueError:
            raise _fail("fork", f"STEP must be a step number, got {step_text!r}") from None
        n = node()
        kw: dict[str, Any] = {}
        if flag == "--message":
            kw["message"] = value
        elif flag == "--answer":
            kw["answer"] = value
        elif flag == "--result":
            kw["tool_result"] = parse_json(value, "%agent fork", "--result")
        r = n.agents.fork(sid, step, **kw)
        if r.error is not None and r.stopped is None:
            raise _fail("fork", f"{r.error} (the new session {r.session} keeps what ran)")
        return SessionPicture(n, r.session)

    @staticmethod
    def _break(rest: str) -> Any:
        n = node()
        if not rest:
            lines = [f"break {a} before={b}" for a, b in sorted(n.agents.breaks().items())] or ["no breakpoints"]
            lines += [f"paused: {p.agent} session {p.session} before {p.before} (step {p.step}): {short(p.about, 100)}"
                      for p in n.agents.paused()]
            return _Text("\n".join(lines))
        words = rest.split()
        if len(words) != 2 or not words[1].startswith("before="):
            raise _fail("break", "usage: %agent break ID before=model|tool|off")
        before = words[1].split("=", 1)[1]
        n.agents.set_break(words[0], before)
        return _Text(f"break {words[0]} before={before}" if before != "off" else f"no breakpoint on {words[0]}")

    @staticmethod
    def _continue(rest: str) -> Any:
        count = node().agents.resume(rest.split()[0] if rest else None)
        return _Text(f"resumed {count} paused run{'s' if count != 1 else ''}")


class _Text(str):
    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))
