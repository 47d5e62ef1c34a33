"""The spray log: one JSON line per planned, executed, late, missed or cancelled spray.

An as-applied record for agronomists and the input of replay scoring. Every line has
``event``, ``t_mono_ns`` (monotonic, when it was written) and ``wall`` (for humans);
the other fields depend on the event (see docs/spray-timing.md). A spray log that cannot
be written at start is a ``ConfigError`` (exit 3); mid-run, like the frame log, it never
stops spraying: while the disk is full whole lines are lost (counted, one warning), and
when writing resumes a ``gap`` line says how many (``edge.core.jsonl``).

The log itself completes the executed lines: built with the lanes of each channel
(``channel_lanes``) it adds ``lane`` to every line that names a channel but no lane, and
with a position provider (a GPS's ``position()``) it adds ``lat``/``lon`` of the latest
fix to every ``open`` and ``close``.

With ``max_bytes`` the file is rotated (``log`` -> ``log.1`` ...), but only while every
channel is closed, so an open and its close stay in one file; while a valve is open it
may grow up to ``hard_max_bytes`` (default twice ``max_bytes``) before it is rotated
anyway (a valve stuck open must not grow the file forever).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.core.jsonl import JsonlWriter, wall_time

log = logging.getLogger(__name__)

Position = Callable[[], "tuple[float, float] | None"]


def channel_lanes(lane_channels: Sequence[int]) -> dict[int, int | list[int]]:
    """``lane_channels[lane] = channel`` -> ``{channel: lane}`` (a list when lanes share a channel)."""
    out: dict[int, list[int]] = {}
    for lane, ch in enumerate(lane_channels):
        out.setdefault(int(ch), []).append(lane)
    return {ch: lanes[0] if len(lanes) == 1 else lanes for ch, lanes in out.items()}


class SprayLog:
    def __init__(self, path: str | Path | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 max_bytes: int = 0, backups: int = 3, hard_max_bytes: int | None = None,
                 lanes: Mapping[int, int | list[int]] | None = None, position: Position | None = None):
        self.max_bytes = max(0, int(max_bytes))
        self.hard_max_bytes = max(self.max_bytes, int(hard_max_bytes if hard_max_bytes is not None
                                                      else 2 * self.max_bytes))
        self._out = JsonlWriter(path or None, self.max_bytes, backups, what="spray log",
                                goes_on="spraying goes on without it",
                                fix="give a writable path for [spray] log_jsonl, or leave it unset",
                                error=ConfigError, logger=log, clock=clock)
        self._clock = clock
        self._lanes = dict(lanes or {})
        self._position = position
        self._position_failed = False
        self._open: set[int] = set()  # channels whose open has been logged and not their close yet
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.forced_rotations = 0  # rotations at hard_max_bytes with a valve open

    @property
    def writes(self) -> bool:
        """Lines go to a file (False: no ``log_jsonl``, or closed; events are only counted)."""
        return self._out.writes

    @property
    def rotations(self) -> int:
        return self._out.rotations

    @property
    def lines_lost(self) -> int:
        """Lines that could not be written (a full disk); ``gap`` lines in the file say where."""
        return self._out.lines_lost

    def _where(self) -> dict[str, float]:
        if self._position is None:
            return {}
        try:
            pos = self._position()
        except Exception as e:  # the record must never stop spraying
            if not self._position_failed:
                self._position_failed = True
                log.warning("the GPS position for the spray log failed (%s): open/close lines go without it", e)
            return {}
        return {} if pos is None else {"lat": round(pos[0], 7), "lon": round(pos[1], 7)}

    def event(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.counts[event] += 1
            channel = fields.get("channel")
            extra: dict[str, Any] = {}
            if channel is not None and "lane" not in fields and channel in self._lanes:
                extra["lane"] = self._lanes[channel]
            if event in ("open", "close") and "lat" not in fields:
                extra.update(self._where())
            # while a channel is open, its close belongs to the file that has its open
            busy = bool(self._open)
            rotated = self._out.write({"event": event, "t_mono_ns": self._clock.now_ns(), "wall": wall_time(),
                                       **fields, **extra}, max_bytes=self.hard_max_bytes if busy else self.max_bytes)
            if busy and rotated:
                self.forced_rotations += 1
                log.warning("spray log %s reached %d bytes with channel(s) %s open: rotated anyway; the open "
                            "line is in the previous file", self._out.path, self.hard_max_bytes, sorted(self._open))
            if channel is not None:
                if event == "open":
                    self._open.add(channel)
                elif event == "close":
                    self._open.discard(channel)

    def close(self) -> None:
        with self._lock:
            self._out.close()
