"""Teaching mode (``node.teach``): pause hosts, step them one event at a time, resume (API.md "Teaching mode").

Paused, a host runs nothing: every delivery, every spawn's first run and the processes that were
runnable when it paused wait, in the order they happened (scheduler/teach.lua). ``step(n)`` makes the
next ``n`` events happen, each followed by what it woke (whose own sends wait in turn), and returns one
line per event (``3 deliver ping {app:processes|0x00002} -> {app:processes|0x00003}``); with nothing
held, a step fires the host's next timer, moving the host's virtual clock to its deadline (while
paused, timers and ``time.now()`` follow that clock). ``resume`` lets every held event happen, in
order: pausing never loses or reorders a message.

Built so far: pause, step, resume, status and the virtual clock. Not yet: seeds (``seed(s)`` refuses,
saying so), exits and link signals as events of their own (they happen within the step of the process
that ended).

Threads: any thread; each call runs on the host's thread (``Host.teach``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import WippyError
from .host import Host

__all__ = ["HostTeaching", "Teach", "TeachError"]


class TeachError(WippyError):
    """Teaching mode misused: a step with nothing paused, a bad N or seed, an unknown host."""


@dataclass(frozen=True)
class HostTeaching:
    """One host's state: paused or not, the held events (the next first), steps taken so far."""

    host: str
    paused: bool
    held: list[str]
    steps: int


class Teach:
    """``node.teach``: ``pause(host=None)``, ``step(n=1)``, ``resume(host=None)``, ``status()``."""

    def __init__(self, hosts: Callable[[], Mapping[str, Host]]) -> None:
        self._hosts = hosts

    def _pick(self, host: str | None) -> list[Host]:
        hosts = self._hosts()
        if host is None:
            return [hosts[name] for name in sorted(hosts) if hosts[name].running]
        h = hosts.get(host)
        if h is None:
            raise TeachError(f"unknown host '{host}'; hosts: {', '.join(sorted(hosts)) or '(none)'}")
        if not h.running:
            raise TeachError(f"host '{host}' is not running (start the node first)")
        return [h]

    def pause(self, host: str | None = None) -> list[str]:
        """Pause ``host`` (every host when None); the names paused now."""
        return [h.name for h in self._pick(host) if h.teach("pause")]

    def resume(self, host: str | None = None) -> int:
        """Resume ``host`` (every paused host when None); how many held events then happened."""
        return sum(int(h.teach("resume")) for h in self._pick(host) if h.paused)

    def paused(self, host: str | None = None) -> bool:
        """Whether ``host`` (any host when None) is paused."""
        return any(h.paused for h in self._pick(host))

    def step(self, n: int = 1, host: str | None = None) -> list[str]:
        """Make the next ``n`` events happen (of ``host``, else of the paused hosts, first by name with
        something held); one line per event. Fewer lines when the world has nothing left to do."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TeachError(f"step: N must be a positive integer, got {n!r}")
        hosts = [h for h in self._pick(host) if h.paused]
        if not hosts:
            where = f"host '{host}' is not" if host else "no host is"
            raise TeachError(f"step: {where} paused; %runtime pause (node.teach.pause()) first")
        lines: list[str] = []
        if len(hosts) == 1:
            return [f"{line}" for line in hosts[0].teach("step", n)]
        for _ in range(n):
            for h in hosts:
                if h.teach("status")[1]:
                    lines += [f"{line} [{h.name}]" for line in h.teach("step", 1)]
                    break
            else:
                break
        return lines

    def seed(self, seed: object) -> None:
        """Seeded scheduling: not built yet (the refusal says so; a non-integer is refused as such)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TeachError(f"seed: S must be an integer, got {seed!r}")
        raise TeachError("seed: seeded scheduling (the same trace from the same seed) is not built yet; "
                         "pause and step work without it")

    def status(self) -> list[HostTeaching]:
        """Every running host's teaching state."""
        out = []
        for h in self._pick(None):
            paused, held, steps = h.teach("status")
            out.append(HostTeaching(h.name, bool(paused), list(held), int(steps)))
        return out
