"""The spray log: one JSON line per planned, executed, late, missed or cancelled spray.

An as-applied record for agronomists and the input of replay scoring. Every line has
``event``, ``t_mono_ns`` (monotonic, when it was written) and ``wall`` (for humans);
the other fields depend on the event (see docs/spray-timing.md). Like the frame log, a
spray log that cannot be written warns once and never stops spraying.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

from edge.clock import SYSTEM_CLOCK, Clock
from edge.recorder import JsonlLog, wall_time


class SprayLog:
    def __init__(self, path: str | Path | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 max_bytes: int = 0, backups: int = 3):
        self._out = JsonlLog(path or None, max_bytes=max_bytes, backups=backups)
        self._clock = clock
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def event(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.counts[event] += 1
            self._out.write({"event": event, "t_mono_ns": self._clock.now_ns(), "wall": wall_time(), **fields})

    def close(self) -> None:
        with self._lock:
            self._out.close()
