"""The one way back after a device went away: exponential backoff, and the link state
every reconnecting part reports (the camera or stream, the serial controller, the GPS).

- :class:`Backoff`: the delays between reconnect attempts (e.g. 0.5, 1, 2, 4 ... 10 s),
  reset after a success. ``edge.sources.reconnecting``, ``edge.outputs.reconnecting`` and
  the GPS reader (``edge.spray.speed``) all use it.
- :class:`LinkState`: connected or not, and how often it was lost and came back; the run
  status and the stats line show it.
"""

from __future__ import annotations

from dataclasses import dataclass


class Backoff:
    """``initial_s``, then doubling (``factor``) up to ``max_s``; ``reset()`` after a success."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 10.0, factor: float = 2.0):
        if not (initial_s > 0 and max_s >= initial_s and factor >= 1):
            raise ValueError(f"backoff needs 0 < initial_s <= max_s and factor >= 1, got "
                             f"{initial_s!r}, {max_s!r}, {factor!r}")
        self.initial_s, self.max_s, self.factor = initial_s, max_s, factor
        self._next = initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt (each call grows the following one)."""
        d = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return d

    def reset(self) -> None:
        self._next = self.initial_s


@dataclass(frozen=True)
class LinkState:
    """A device that can vanish mid-run and be reconnected: is it there now, how often it went and came back."""

    connected: bool
    losses: int = 0
    reconnects: int = 0
