"""Teaching mode's magic: ``%runtime pause | step | resume | seed | status | log``.

    %runtime pause [HOST]        stop the host (every host) between two events: nothing is delivered
    %runtime step [N]            make the next N events happen (default 1), one line each
    %runtime step --widget       buttons for a class: step, step 10, pause, resume; the next event shown
    %runtime resume [HOST]       held events happen (in order; seeded, in the seed's order)
    %runtime seed S | off        scheduling order, each process's math.random and timers (virtual clock)
                                 follow the integer S: the same seed and cells give the same events
    %runtime status              each host: running, seeded or paused, the events waiting (the next first)
    %runtime log [N]             the last N (default 50) events since the seed or the first pause

After each step every live view of the node draws again (and the trace view marks the step). While a
seed is set, a ``%%lua`` cell waits for the seeded world to settle before and after it runs, so what
it sees and prints is the same on every run.

Threads: the cell's thread, calling ``node.teach`` (thread-safe). Wrong input raises UsageError.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from wippy.runtime import WippyError
from wippy.runtime.teach import HostTeaching

from .current import node
from .views.pump import refresh_views

__all__ = ["RuntimeMagics", "TeachText"]

SUBCOMMANDS = ("pause", "step", "resume", "status", "seed", "log")


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
    def runtime(self, line: str) -> Any:
        """``%runtime pause [HOST] | step [N] [--widget] | resume [HOST] | seed S|off | status | log [N]``."""
        words = line.split()
        if not words:
            raise UsageError(f"%runtime: missing subcommand; subcommands: {', '.join(SUBCOMMANDS)}")
        sub, rest = words[0], words[1:]
        if sub not in SUBCOMMANDS:
            raise UsageError(f"%runtime: unknown subcommand {sub!r}; subcommands: {', '.join(SUBCOMMANDS)}")
        n = node()
        teach = n.teach
        try:
            if sub == "pause":
                teach.pause(rest[0] if rest else None)
                refresh_views(n)
                state = teach.status()
                return TeachText("\n".join(f"paused {s.host}: {len(s.held)} events waiting" for s in state
                                           if s.paused) or "nothing to pause")
            if sub == "resume":
                count = teach.resume(rest[0] if rest else None)
                refresh_views(n)
                if teach.current_seed is not None:
                    return TeachText(f"resumed: {count} held event{'s' if count != 1 else ''}; the hosts go on "
                                     f"in the order of seed {teach.current_seed}")
                return TeachText(f"resumed: {count} held event{'s' if count != 1 else ''} happened")
            if sub == "step":
                widget = [w for w in rest if w in ("--widget", "-w")]
                rest = [w for w in rest if w not in widget]
                if len(rest) > 1:
                    raise UsageError("%runtime step: usage: %runtime step [N] [--widget]")
                if widget:
                    if rest:
                        raise UsageError("%runtime step --widget: takes no N (its buttons step 1 or 10)")
                    from .views.stepper import StepperView

                    return StepperView(n)
                try:
                    count = int(rest[0]) if rest else 1
                except ValueError:
                    raise UsageError(f"%runtime step: N must be a positive integer, got {rest[0]!r}") from None
                lines = teach.step(count)
                refresh_views(n)
                return TeachText("\n".join(lines) or "nothing happened: no event waits and no timer is set")
            if sub == "seed":
                if len(rest) != 1:
                    raise UsageError("%runtime seed: usage: %runtime seed S (an integer) | off")
                if rest[0] == "off":
                    teach.seed(None)
                    return TeachText("seed off: the hosts schedule freely again, on their own clocks")
                try:
                    value: object = int(rest[0])
                except ValueError:
                    value = rest[0]
                teach.seed(value)
                return TeachText(f"seed {value}: scheduling order, math.random and timers (a virtual clock) "
                                 "follow it; %runtime log shows the events")
            if sub == "log":
                if len(rest) > 1:
                    raise UsageError("%runtime log: usage: %runtime log [N]")
                try:
                    last = int(rest[0]) if rest else 50
                except ValueError:
                    raise UsageError(f"%runtime log: N must be a positive integer, got {rest[0]!r}") from None
                return TeachText("\n".join(teach.log(last=last)) or "no events yet (seed or pause first)")
            if rest:
                raise UsageError("%runtime status: takes no arguments")
            return TeachText(status_text(teach.status(), teach.current_seed))
        except WippyError as exc:
            raise UsageError(f"%runtime {sub}: {exc}") from None


def status_text(state: list[HostTeaching], seed: int | None) -> str:
    """``%runtime status``: one block per host."""
    out = []
    for s in state:
        seeded = f", seed {seed}" if s.seeded and seed is not None else ""
        if not s.paused:
            out.append(f"{s.host}: running{seeded}" + (f" ({s.steps} events so far)" if s.seeded else ""))
            continue
        out.append(f"{s.host}: paused after {s.steps} steps{seeded}, {len(s.held)} events waiting")
        if s.next and s.next not in s.held[:1]:
            out.append(f"  next: {s.next}")
        out += [f"  next: {h}" if i == 0 and s.next == h else f"        {h}" for i, h in enumerate(s.held[:10])]
        if len(s.held) > 10:
            out.append(f"        ... {len(s.held) - 10} more")
    return "\n".join(out)
