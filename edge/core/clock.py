"""Clocks. Every timestamp in the edge runtime is monotonic nanoseconds.

Code that waits or measures takes a ``Clock`` so tests can inject a ``ManualClock``
instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic time in nanoseconds."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a manual clock advances instead)."""


class MonotonicClock:
    """The real clock: ``time.monotonic_ns``."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` advances it. Thread-safe."""

    def __init__(self, start_ns: int = 1_000_000_000):
        self._t = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += int(round(seconds * 1e9))

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)


SYSTEM_CLOCK = MonotonicClock()
