"""The one JSON-lines writer: frame log, spray log, dry-run state file, valve-lag log.

``JsonlWriter(path)`` appends one compact JSON object a line, line-buffered (a line is in
the file as soon as ``write`` returns, so another process can follow it). The owner of
each log builds its records; this module only writes them down.

- A log that cannot be written (disk full, read-only, a directory in the way) never stops
  detection or spraying: the first failure is warned about once, naming the file and what
  goes on without it, and the writer is switched off.
- With ``max_bytes`` the file is rotated before a line that would take it past the cap:
  ``log`` -> ``log.1`` -> ... -> ``log.<backups>``, the oldest deleted (0 = no cap). A
  restart appends to the current file and counts its size. ``write(record, max_bytes=N)``
  uses another cap for that one line (the spray log lets a file grow while a valve is
  open, so that an open and its close stay in one file).
- ``strict=True`` (a path the user gave for this run only: the dry-run state file, the
  valve-lag log): no folder is created and a file that cannot be opened raises
  ``OSError`` at once, for the caller to turn into its own error with a fix.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlWriter:
    """Appends JSON lines to ``path`` (None: writes nothing); see the module docstring.

    ``what`` names the log and ``goes_on`` what carries on without it, for the one
    warning a failing log gives (``"frame log"``, ``"detection goes on without it"``).
    """

    def __init__(self, path: str | os.PathLike | None, max_bytes: int = 0, backups: int = 3, *,
                 what: str = "log", goes_on: str = "detection goes on without it",
                 logger: logging.Logger | None = None, strict: bool = False):
        self.path = Path(path) if path else None
        self.max_bytes = max(0, int(max_bytes))
        self.backups = max(0, int(backups))
        self.what = what
        self.goes_on = goes_on
        self.rotations = 0
        self._log = logger if logger is not None else log
        self._size = 0
        self._f = None
        self._broken = False
        if self.path is None:
            return
        if strict:
            self._open()  # OSError to the caller
            return
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

    def _warn(self, e: BaseException) -> None:
        if not self._broken:
            self._log.warning("%s %s cannot be written (%s): %s", self.what, self.path, e, self.goes_on)
        self._broken = True
        self._f = None

    def write(self, record: dict[str, Any], *, max_bytes: int | None = None) -> bool:
        """Append ``record`` as one line; True if the file was rotated before it.

        ``max_bytes`` replaces the writer's cap for this line (0 = no cap)."""
        if self._f is None:
            return False
        line = json.dumps(record, separators=(",", ":")) + "\n"
        cap = self.max_bytes if max_bytes is None else max(0, int(max_bytes))
        rotated = False
        try:
            if cap and self._size and self._size + len(line) > cap:
                self._rotate()
                rotated = True
            self._f.write(line)
            self._size += len(line)
        except (OSError, ValueError) as e:  # ValueError: the file was closed under us
            self._warn(e)
        return rotated

    def close(self) -> None:
        """Close the file (idempotent); later writes are dropped."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


def wall_time() -> str:
    """Wall-clock time for humans reading logs (never used for latency)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
