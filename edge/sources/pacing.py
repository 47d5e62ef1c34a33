"""Pacing for file sources played "in real time" (``--realtime``).

Frame ``i`` is due ``i / fps`` seconds after the first one. A late frame is returned at
once (files never drop frames); waiting goes through the injected clock, so a test's
``ManualClock`` advances instead of sleeping.
"""

from __future__ import annotations

from typing import Optional

from edge.core.clock import Clock
from edge.sources.base import FrameTimeout


class Pacer:
    def __init__(self, fps: float, clock: Clock):
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.fps = float(fps)
        self._clock = clock
        self._t0: Optional[int] = None

    def due_ns(self, index: int) -> int:
        """Monotonic time at which frame ``index`` (0-based, counted from the first) is due."""
        if self._t0 is None:
            self._t0 = self._clock.now_ns()
        return self._t0 + int(round(index * 1e9 / self.fps))

    def wait(self, index: int, timeout: Optional[float] = None) -> None:
        """Wait until frame ``index`` is due; ``FrameTimeout`` if that is beyond ``timeout``.

        After a ``FrameTimeout`` the same index can be waited for again.
        """
        remaining = (self.due_ns(index) - self._clock.now_ns()) / 1e9
        if remaining <= 0:
            return
        if timeout is not None and remaining > timeout:
            self._clock.sleep(timeout)
            raise FrameTimeout(f"next frame due in {remaining:.3f} s, beyond the {timeout} s timeout")
        self._clock.sleep(remaining)
