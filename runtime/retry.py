"""How often an activity is tried: :class:`RetryPolicy` (``retry:`` of a ``function.lua`` entry).

Checked when an entry is defined (``runtime/entries.py``) and used by the durable workflows
(``runtime/workflow.py``, which re-exports it). Immutable; any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import EntryError
from .units import parse_seconds

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often an activity is tried and how long to wait in between (per activity).

    Attempt ``n`` (from 1) that fails waits ``min(initial_interval * backoff ** (n - 1), max_interval)``
    seconds before attempt ``n + 1``; after ``max_attempts`` attempts the last error is the call's result
    (``nil, err`` in Lua), journaled like a success. Set for a ``function.lua`` entry by its ``retry:``
    field (``{max_attempts: 5, initial_interval: 1s, backoff: 2, max_interval: 1m}``) and for a Python
    activity by ``activity(..., retry=...)``.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0

    @classmethod
    def from_mapping(cls, m: Any, where: str = "retry") -> RetryPolicy:
        """Read a ``retry:`` mapping (durations as ``"1s"`` or seconds); :class:`EntryError` naming the
        field for anything else."""
        if m is None:
            return cls()
        if isinstance(m, RetryPolicy):
            return m
        if not isinstance(m, dict):
            raise EntryError(f"{where}: must be a mapping (max_attempts, initial_interval, backoff, max_interval)")
        known = {"max_attempts", "initial_interval", "backoff", "max_interval"}
        unknown = set(m) - known
        if unknown:
            raise EntryError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(sorted(known))})")
        try:
            attempts = m.get("max_attempts", cls.max_attempts)
            if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
                raise ValueError("max_attempts must be an integer >= 1")
            initial = parse_seconds(m.get("initial_interval", cls.initial_interval))
            backoff = m.get("backoff", cls.backoff)
            if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 1:
                raise ValueError("backoff must be a number >= 1")
            maximum = parse_seconds(m.get("max_interval", cls.max_interval))
            if initial < 0 or maximum < 0:
                raise ValueError("intervals cannot be negative")
        except ValueError as exc:
            raise EntryError(f"{where}: {exc}") from None
        return cls(attempts, initial, float(backoff), maximum)

    def to_lua(self) -> dict[str, Any]:
        return {"max_attempts": self.max_attempts, "initial": self.initial_interval, "backoff": self.backoff,
                "max": self.max_interval}
