"""A FIFO queue that knows whether its one consumer is waiting on it with nothing to take.

:class:`WaitQueue` is ``queue.SimpleQueue``'s ``put`` / ``get`` / ``get_nowait`` plus :meth:`idle`,
which is True only while the consumer is blocked in ``get`` and the queue is empty. Taking an item and
leaving the waiting state happen under one lock, so ``idle`` never reports a consumer that has just
been handed an item as waiting. Teaching mode uses it to let the supervision act on an exit before
the next event (the supervision thread is the consumer; a host thread asks).

Threads: any thread puts and asks; one consumer thread gets.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Generic, TypeVar

__all__ = ["WaitQueue"]

T = TypeVar("T")


class WaitQueue(Generic[T]):
    """An unbounded FIFO with one consumer; ``idle()`` says the consumer waits on an empty queue."""

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False

    def put(self, item: T) -> None:
        """Append ``item`` and wake the consumer (any thread)."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get_nowait(self) -> T:
        """The first item, or ``queue.Empty`` (the consumer's thread)."""
        with self._cond:
            if not self._items:
                raise queue.Empty
            return self._items.popleft()

    def get(self, timeout: float | None = None) -> T:
        """The first item, waiting up to ``timeout`` seconds (forever with None) for one; raises
        ``queue.Empty`` when none came (the consumer's thread)."""
        with self._cond:
            if not self._items:
                deadline = None if timeout is None else time.monotonic() + timeout
                self._waiting = True
                try:
                    while not self._items:
                        if deadline is None:
                            self._cond.wait()
                        else:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                raise queue.Empty
                            self._cond.wait(left)
                finally:
                    self._waiting = False
            return self._items.popleft()

    def empty(self) -> bool:
        """Whether nothing is queued (any thread; a snapshot)."""
        with self._cond:
            return not self._items

    def idle(self) -> bool:
        """Whether the consumer is blocked in :meth:`get` with nothing queued (any thread)."""
        with self._cond:
            return self._waiting and not self._items
