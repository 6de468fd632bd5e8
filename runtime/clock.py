"""Clocks: the real one, and a controllable one for tests where time is the subject.

Hosts read the clock on their own threads; :class:`FakeClock` is advanced by the test's thread and wakes
every host that registered with it so their timers fire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Clock", "FakeClock"]


class Clock:
    """Wall and monotonic time as the runtime sees it. Thread-safe."""

    fake = False

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (timer deadlines)."""
        return time.monotonic()

    def now_ns(self) -> int:
        """Unix time in nanoseconds (``time.now()`` in Lua)."""
        return time.time_ns()

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Real time needs no wake-ups: hosts sleep until their next deadline."""


class FakeClock(Clock):
    """A clock that moves only when :meth:`advance` is called (any thread).

    Hosts waiting for a deadline on this clock sleep until an advance wakes them, so a test of timers,
    sleeps and restarts runs instantly and deterministically.
    """

    fake = True

    def __init__(self, start: float = 1000.0, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._lock = threading.Lock()
        self._mono = start
        self._start_mono = start
        self._start_ns = start_ns
        self._subscribers: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now_ns(self) -> int:
        with self._lock:
            return self._start_ns + int((self._mono - self._start_mono) * 1e9)

    def subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers.append(wake)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every host so due timers fire."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._mono += seconds
            subscribers = list(self._subscribers)
        for wake in subscribers:
            wake()
