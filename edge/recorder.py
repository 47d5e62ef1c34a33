"""What the pipeline writes down: a JSONL line per frame and saved trigger frames.

A log that cannot be written (disk full, read-only) never stops detection: the first
failure is warned about once and that writer is switched off.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlLog:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._f = None
        self._broken = False
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "a", encoding="utf-8", buffering=1)
            except OSError as e:
                self._warn(e)

    def _warn(self, e: OSError) -> None:
        if not self._broken:
            log.warning("frame log %s cannot be written (%s): detection goes on without it", self.path, e)
        self._broken = True
        self._f = None

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        try:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as e:
            self._warn(e)

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


class TriggerSaver:
    """Keeps the frames that fired, and a random sample of the others.

    Files are ``<dir>/spray/…jpg`` and ``<dir>/sample/…jpg``, named with the frame id,
    monotonic capture time and top label, so missed weeds can be found and relabelled.
    """

    def __init__(self, folder: str | Path | None, sample_rate: float = 0.0, seed: int | None = None):
        self.folder = Path(folder) if folder else None
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._broken = False
        self.saved = 0

    def maybe_save(self, frame, decision) -> str | None:
        if self.folder is None or self._broken:
            return None
        if decision.spray:
            kind = "spray"
        elif self.sample_rate > 0 and self._rng.random() < self.sample_rate:
            kind = "sample"
        else:
            return None
        import cv2

        d = self.folder / kind
        name = f"{frame.frame_id:08d}_{frame.t_capture_ns}_{decision.label}_{decision.weed_score:.2f}.jpg"
        img = frame.image if frame.colour_order == "BGR" else cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        try:
            d.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(d / name), img):
                raise OSError("cv2.imwrite returned False")
        except OSError as e:
            log.warning("cannot save frames to %s (%s): detection goes on without saving", self.folder, e)
            self._broken = True
            return None
        self.saved += 1
        return str(d / name)


def wall_time() -> str:
    """Wall-clock time for humans reading logs (never used for latency)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
