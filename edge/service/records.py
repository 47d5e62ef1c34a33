"""What the pipeline writes down: a JSONL line per frame and saved trigger frames.

A log that cannot be written (disk full, read-only) never stops detection: the first
failure is warned about once and that writer is switched off.

Both stay under a size cap so an unattended run cannot fill the SD card: the JSONL log
rotates (``frames.jsonl`` -> ``frames.jsonl.1`` ... ``.<backups>``, the oldest deleted) once
it exceeds ``max_bytes``, and the trigger-frame folder deletes its oldest frames once
the saved frames exceed ``max_bytes`` in total. 0 = no cap.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlLog:
    def __init__(self, path: str | Path | None, max_bytes: int = 0, backups: int = 3):
        self.path = Path(path) if path else None
        self.max_bytes = max(0, int(max_bytes))
        self.backups = max(0, int(backups))
        self.rotations = 0
        self._size = 0
        self._f = None
        self._broken = False
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._open()
            except OSError as e:
                self._warn(e)

    def _open(self) -> None:
        assert self.path is not None
        self._f = open(self.path, "a", encoding="utf-8", buffering=1)
        self._size = self._f.tell()

    def _rotate(self) -> None:
        """``log`` -> ``log.1`` -> ... -> ``log.<backups>`` (deleted beyond that)."""
        assert self.path is not None and self._f is not None
        self._f.close()
        self._f = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        self._open()

    def _warn(self, e: OSError) -> None:
        if not self._broken:
            log.warning("frame log %s cannot be written (%s): detection goes on without it", self.path, e)
        self._broken = True
        self._f = None

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._f.write(line)
            self._size += len(line)
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
    With ``max_bytes`` the oldest saved frames (this run's and earlier runs') are deleted
    once all of them together exceed it.
    """

    def __init__(self, folder: str | Path | None, sample_rate: float = 0.0, seed: int | None = None,
                 max_bytes: int = 0):
        self.folder = Path(folder) if folder else None
        self.sample_rate = sample_rate
        self.max_bytes = max(0, int(max_bytes))
        self._rng = random.Random(seed)
        self._broken = False
        self.saved = 0
        self.deleted = 0
        self._files: collections.deque = collections.deque()  # (path, bytes), oldest first
        self._total = 0
        if self.folder is not None and self.max_bytes:
            self._scan()

    def _scan(self) -> None:
        """Frames saved by earlier runs count against the cap too (oldest first by mtime)."""
        assert self.folder is not None
        found = []
        for kind in ("spray", "sample"):
            try:
                for p in (self.folder / kind).glob("*.jpg"):
                    st = p.stat()
                    found.append((st.st_mtime_ns, str(p), st.st_size))
            except OSError:
                continue
        for _, path, size in sorted(found):
            self._files.append((path, size))
            self._total += size

    def _enforce_cap(self) -> None:
        while self._total > self.max_bytes and len(self._files) > 1:
            path, size = self._files.popleft()
            self._total -= size
            try:
                os.unlink(path)
                self.deleted += 1
            except FileNotFoundError:
                pass

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
        if self.max_bytes:
            try:
                size = (d / name).stat().st_size
                self._files.append((str(d / name), size))
                self._total += size
                self._enforce_cap()
            except OSError as e:
                log.warning("cannot keep %s under %d bytes (%s): saving stops", self.folder, self.max_bytes, e)
                self._broken = True
        return str(d / name)


def wall_time() -> str:
    """Wall-clock time for humans reading logs (never used for latency)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
