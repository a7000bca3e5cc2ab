"""Injected time.

Protocol cores never read the system clock: they are handed a ``Clock`` (or
simply ``now`` values) so tests can drive every timer with ``FakeClock`` and
no sleeps. ``monotonic()`` is for deadlines and durations, ``time()`` for
wall-clock stamps that leave the process (logs, records, SIP Date headers).
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    """Where the gateway reads the time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; for deadlines."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch; for stamps that leave the process."""
        ...


class SystemClock:
    """The real clocks of the host."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; a negative step is a test bug."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds

    def set(self, monotonic: float) -> None:
        """Jump to an absolute monotonic time, never backwards."""
        if monotonic < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = monotonic
