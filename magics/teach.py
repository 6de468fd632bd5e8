"""Teaching mode's magic: ``%runtime pause [HOST] | step [N] | resume [HOST] | status | seed S``.

    %runtime pause [HOST]    stop the host (every host) between two events: nothing is delivered
    %runtime step [N]        make the next N events happen (default 1), one line each
    %runtime resume [HOST]   every held event happens, in order; the host runs freely again
    %runtime status          each host: running or paused, the events waiting (the next first)
    %runtime seed S          seeded scheduling: not built yet (says so)

Threads: the cell's thread, calling ``node.teach`` (thread-safe). Wrong input raises UsageError.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from wippy.runtime import WippyError

from .current import node

__all__ = ["RuntimeMagics", "TeachText"]

SUBCOMMANDS = ("pause", "step", "resume", "status", "seed")


class TeachText(str):
    """Lines shown bare (not quoted) as a cell's result."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


@magics_class
class RuntimeMagics(Magics):
    """``%runtime``."""

    @line_magic("runtime")
    def runtime(self, line: str) -> TeachText:
        """``%runtime pause [HOST] | step [N] | resume [HOST] | status | seed S`` (teaching mode)."""
        words = line.split()
        if not words:
            raise UsageError(f"%runtime: missing subcommand; subcommands: {', '.join(SUBCOMMANDS)}")
        sub, rest = words[0], words[1:]
        if sub not in SUBCOMMANDS:
            raise UsageError(f"%runtime: unknown subcommand {sub!r}; subcommands: {', '.join(SUBCOMMANDS)}")
        teach = node().teach
        try:
            if sub == "pause":
                teach.pause(rest[0] if rest else None)
                state = teach.status()
                return TeachText("\n".join(f"paused {s.host}: {len(s.held)} events waiting" for s in state
                                           if s.paused) or "nothing to pause")
            if sub == "resume":
                n = teach.resume(rest[0] if rest else None)
                return TeachText(f"resumed: {n} held event{'s' if n != 1 else ''} happened")
            if sub == "step":
                if len(rest) > 1:
                    raise UsageError("%runtime step: usage: %runtime step [N]")
                try:
                    count = int(rest[0]) if rest else 1
                except ValueError:
                    raise UsageError(f"%runtime step: N must be a positive integer, got {rest[0]!r}") from None
                lines = teach.step(count)
                return TeachText("\n".join(lines) or "nothing happened: no event waits and no timer is set")
            if sub == "seed":
                if len(rest) != 1:
                    raise UsageError("%runtime seed: usage: %runtime seed S (an integer)")
                try:
                    value: object = int(rest[0])
                except ValueError:
                    value = rest[0]
                teach.seed(value)
                return TeachText("")
            state = teach.status()
            out = []
            for s in state:
                if not s.paused:
                    out.append(f"{s.host}: running")
                    continue
                out.append(f"{s.host}: paused after {s.steps} steps, {len(s.held)} events waiting")
                out += [f"  next: {h}" if i == 0 else f"        {h}" for i, h in enumerate(s.held[:10])]
                if len(s.held) > 10:
                    out.append(f"        ... {len(s.held) - 10} more")
            return TeachText("\n".join(out))
        except WippyError as exc:
            raise UsageError(f"%runtime {sub}: {exc}") from None
