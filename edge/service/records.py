"""What the pipeline writes down: a JSONL line per frame and saved trigger frames.

A log or folder named in the config that cannot be written at start is a ``ConfigError``
(exit 3). Mid-run, writing never stops detection: the frame log loses whole lines while
the disk is full and resumes when there is space again (``edge.core.jsonl``); saving
frames stops at the first failure, with one warning.

Both stay under a size cap so an unattended run cannot fill the SD card: the JSONL log
rotates (``frames.jsonl`` -> ``frames.jsonl.1`` ... ``.<backups>``, the oldest deleted) once
it exceeds ``max_bytes``, and the trigger-frame folder deletes its oldest frames once
the saved frames exceed ``max_bytes`` in total. 0 = no cap. The JSONL writing itself
(rotation, the one warning) is ``edge.core.jsonl``'s, shared with the other logs.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import tempfile
from pathlib import Path

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.core.jsonl import JsonlWriter, cannot_write, wall_time

__all__ = ["JsonlLog", "TriggerSaver", "wall_time"]

log = logging.getLogger(__name__)


class JsonlLog(JsonlWriter):
    """The frame log (``[log] jsonl``): one JSON line per frame, written by ``edge.core.jsonl``."""

    def __init__(self, path: str | Path | None, max_bytes: int = 0, backups: int = 3, *,
                 clock: Clock = SYSTEM_CLOCK):
        super().__init__(path, max_bytes, backups, what="frame log", goes_on="detection goes on without it",
                         fix="give a writable path for [log] jsonl (--log-jsonl), or leave it unset",
                         error=ConfigError, logger=log, clock=clock)


class TriggerSaver:
    """Keeps the frames that fired, and a random sample of the others.

    Files are ``<dir>/spray/…jpg`` and ``<dir>/sample/…jpg``, named with the frame id,
    monotonic capture time and top label, so missed weeds can be found and relabelled.
    With ``max_bytes`` the oldest saved frames (this run's and earlier runs') are deleted
    once all of them together exceed it. A folder that cannot be created or written to at
    start is a ``ConfigError``.
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
        if self.folder is None:
            return
        self._check_writable()
        if self.max_bytes:
            self._scan()

    def _check_writable(self) -> None:
        """Create the folder and write (and delete) a file in it, or raise the start-up error."""
        assert self.folder is not None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=self.folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise cannot_write("trigger-frame folder", self.folder, e, ConfigError,
                               "give a writable folder for [log] save_triggers (--save-triggers), "
                               "or leave it unset") from None

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
