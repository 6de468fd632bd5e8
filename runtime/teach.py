"""Teaching mode (``node.teach``): pause hosts, step them one event at a time, resume, seed (API.md
"Teaching mode").

Paused, a host runs nothing: every delivery, every spawn's first run, every exit and link signal
(and terminate / cancel requests), and the processes that were runnable when it paused wait, in the
order they happened (scheduler/teach.lua). ``step(n)`` makes the next ``n`` events happen, each
followed by what it woke (whose own sends and signals wait in turn), and returns one line per event
(``3 deliver ping {app:processes|0x00002} -> {app:processes|0x00003}``); with nothing held, a step fires
the host's next timer, moving the host's virtual clock to its deadline (while paused or seeded,
timers and ``time.now()`` follow that clock). ``resume`` lets every held event happen, in order:
pausing never loses or reorders a message.

``seed(s)`` makes a run reproducible: the next event is drawn by a generator seeded from ``s`` (and the
host's name) among the held ones, keeping the order of events between two processes; every process
gets its own ``math.random`` seeded from ``s`` and its spawn rank; timers run on the virtual clock,
which jumps to the next timer when nothing else can happen (a seeded world runs as fast as it can,
at most 60 virtual seconds ahead of real time). The same seed and the same cells give the same
events (``log()``). When an exit reaches the supervision (a Python thread), the next event waits
until it has acted, so its restarts come in the same place of the trace every time.

Threads: any thread; each host's part runs on the host's thread (``Host.teach``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import TeachError
from .host import Host

__all__ = ["HostTeaching", "Teach", "TeachError"]


@dataclass(frozen=True)
class HostTeaching:
    """One host's state: paused or not, the held events (the next first), steps taken so far,
    seeded or not, and the line of the event the next step takes (None: nothing to do)."""

    host: str
    paused: bool
    held: list[str]
    steps: int
    seeded: bool = False
    next: str | None = None


_SEED_MIN, _SEED_MAX = -(2**63), 2**63 - 1
_QUIET_MAX = 10.0   # real seconds a step waits at most for the supervision to act on an exit


class Teach:
    """``node.teach``: ``pause(host=None)``, ``step(n=1)``, ``resume(host=None)``, ``seed(s)``,
    ``status()``, ``log()``, ``settle()``."""

    def __init__(self, hosts: Callable[[], Mapping[str, Host]],
                 python_quiet: Callable[[], bool] = lambda: True) -> None:
        self._hosts = hosts
        self._python_quiet = python_quiet
        self._seed: int | None = None

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

    def _wait_python(self) -> None:
        """Let the supervision act on the exit a step just told it of (its spawns and signals reach
        the host's queue before the next step does)."""
        end = time.monotonic() + _QUIET_MAX
        while not self._python_quiet() and time.monotonic() < end:
            time.sleep(0.001)

    def settle(self, timeout: float = 30.0, host: str | None = None) -> bool:
        """Wait until every seeded, running host has nothing to do before real time moves (its world
        settled, or its next timer beyond the virtual clock's lead) and the supervision waits for
        input; False if that took longer than ``timeout`` seconds. Unseeded or paused: True at once.
        Inputs from Python (spawns, sends) wait for this by themselves (``Host.post``)."""
        end = time.monotonic() + timeout
        return all(h.settle(max(0.0, end - time.monotonic())) for h in self._pick(host))

    def pause(self, host: str | None = None) -> list[str]:
        """Pause ``host`` (every host when None); the names paused now. A seeded world settles first,
        so the events held at the pause are the same on every run."""
        if self._seed is not None:
            self.settle(host=host)
        return [h.name for h in self._pick(host) if h.teach("pause")]

    def resume(self, host: str | None = None) -> int:
        """Resume ``host`` (every paused host when None); how many held events there were (unseeded
        they all happen now, in order; seeded the host goes on in the seed's order)."""
        return sum(int(h.teach("resume")) for h in self._pick(host) if h.paused)

    def paused(self, host: str | None = None) -> bool:
        """Whether ``host`` (any host when None) is paused."""
        return any(h.paused for h in self._pick(host))

    def _step_host(self, h: Host, n: int) -> list[str]:
        lines: list[str] = []
        while len(lines) < n:
            got, touched = h.teach("step", n - len(lines))
            lines += got
            if touched:
                self._wait_python()
            elif not got or len(lines) < n:
                break
        return lines

    def step(self, n: int = 1, host: str | None = None) -> list[str]:
        """Make the next ``n`` events happen (of ``host``, else of the paused hosts, first by name with
        something to do); one line per event. Fewer lines when the world has nothing left to do."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TeachError(f"step: N must be a positive integer, got {n!r}")
        hosts = [h for h in self._pick(host) if h.paused]
        if not hosts:
            where = f"host '{host}' is not" if host else "no host is"
            raise TeachError(f"step: {where} paused; %runtime pause (node.teach.pause()) first")
        if len(hosts) == 1:
            return self._step_host(hosts[0], n)
        lines: list[str] = []
        for _ in range(n):
            for h in hosts:
                if h.teach("status")[4] is not None:
                    lines += [f"{line} [{h.name}]" for line in self._step_host(h, 1)]
                    break
            else:
                break
        return lines

    def seed(self, seed: object) -> None:
        """Seed every running host (``None`` drops the seed): scheduling order, each process's
        ``math.random`` and timers on the virtual clock follow it; the step count and the log start
        again. Refuses what is not an integer in the signed 64-bit range."""
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise TeachError(f"seed: S must be an integer, got {seed!r}")
            if not _SEED_MIN <= seed <= _SEED_MAX:
                raise TeachError(f"seed: S must fit in 64 bits (-2**63 .. 2**63-1), got {seed}")
        for h in self._pick(None):
            h.teach("seed", seed)
        self._seed = seed

    @property
    def current_seed(self) -> int | None:
        """The seed the hosts run on, or None."""
        return self._seed

    def log(self, host: str | None = None, last: int = 1000) -> list[str]:
        """The last ``last`` event lines of ``host`` (of every host, each line ending with its host's
        name in brackets, when None and there are several) since its seed or its first pause; a
        seeded world settles first."""
        if isinstance(last, bool) or not isinstance(last, int) or last < 1:
            raise TeachError(f"log: N must be a positive integer, got {last!r}")
        if self._seed is not None:
            self.settle(host=host)
        hosts = self._pick(host)
        if len(hosts) == 1:
            return list(hosts[0].teach("log", last))
        out: list[str] = []
        for h in hosts:
            out += [f"{line} [{h.name}]" for line in h.teach("log", last)]
        return out

    def status(self) -> list[HostTeaching]:
        """Every running host's teaching state."""
        out = []
        for h in self._pick(None):
            paused, held, steps, seeded, nxt = h.teach("status")
            out.append(HostTeaching(h.name, paused, held, steps, seeded, nxt))
        return out
