"""The one JSON-lines writer and the one reader: frame log, spray log, dry-run state file,
valve-lag log; ground-truth files.

``JsonlWriter(path)`` appends one compact JSON object a line (``encode_line``: a number that is
not finite is written as null, never as the non-JSON NaN); a line is in the file as
soon as ``write`` returns (one unbuffered write, so another process can follow it). The
owner of each log builds its records; this module only writes them down.

- **At start** a file the user named that cannot be opened (no such folder, read-only,
  a directory in the way) is an error: the owner's ``error`` class (``ConfigError``,
  exit 3, for the frame log, spray log and valve-lag log; ``OutputError``, exit 6, for
  the dry-run state file) with a message naming the file and the owner's ``fix``.
- **Mid-run** writing never stops detection or spraying. A line is written whole or not
  at all: the file's end is remembered, and a write that fails half way (disk full,
  ``EFBIG``, an I/O error) is truncated back to it. The first failure is warned about
  once, naming the file and what goes on without it; later lines are counted as lost and
  writing is retried on a later ``write`` once a delay has passed
  (``edge.core.reconnect.Backoff`` on the injected clock: 1, 2, 4 ... 30 s; no thread).
  When a retry succeeds a marker line goes in first, ``{"event": "gap", "t_mono_ns":
  ..., "wall": ..., "lines_lost": N, "lost_from_ns": ...}`` (plus the owner's
  ``gap_fields()``), and one "resumed after N lines lost" warning is logged. Lines still
  lost at ``close`` are warned about then.
- A FIFO, a pipe or a terminal is written without blocking the loop: a line waits at most
  ``PIPE_WAIT_S`` for a reader that fell behind, then it is lost and counted as above (a log
  never holds up detection, nor its stop on SIGTERM); a line the pipe took part of is finished
  first, so lines are never glued together. To read a log at your own pace, write it to a file
  and follow that (``tail -f``).
- A file that does not end with a newline when it is opened (an earlier run was cut off
  mid-line, e.g. by a power loss) has that cut line removed first, with a warning, so
  appending never glues a new line onto it. A file whose first line does not start a JSON object
  (a config or an image named as the log by mistake) is not touched: the owner's start-up error.
- With ``max_bytes`` the file is rotated before a line that would take it past the cap:
  ``log`` -> ``log.1`` -> ... -> ``log.<backups>``, the oldest deleted (0 = no cap). A
  restart appends to the current file and counts its size. ``write(record, max_bytes=N)``
  uses another cap for that one line (the spray log lets a file grow while a valve is
  open, so that an open and its close stay in one file).

``read_jsonl(path, what)`` reads any of these files back (a regular file of at most
``MAX_READ_BYTES``): blank lines skipped; a cut final line (no newline at the end, not JSON)
of a file a run wrote is warned about and skipped (the run was stopped while writing it);
any other line that is not UTF-8 JSON is a ``ConfigError``
naming the file and the line. ``parse`` turns each value into what the caller needs (a
``ValueError``, e.g. a pydantic ``ValidationError``, becomes the same kind of error).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import select
import stat
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError, WeedDetectorError
from edge.core.files import FileRefused, read_regular
from edge.core.reconnect import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
Opener = Callable[[Path], BinaryIO]

PIPE_WAIT_S = 0.25  # a FIFO or terminal: how long a line waits for a reader that fell behind before it is lost
_FILL = b"\x00 \t\r"  # not part of any line: blanks, and the NUL bytes a power loss can leave
CUT_LINE_MAX = 1 << 20  # a cut last line longer than this is not one of our lines: left alone, an error


def open_append(path: Path) -> BinaryIO:
    """The file a writer appends to: binary, unbuffered (one ``write`` per line), readable for the
    cut-line check at open (write-only when reading is not allowed). Anything but a regular file (a
    FIFO, a terminal) stays non-blocking: a reader that stops reading makes lines lost, never a loop
    stuck in ``write`` (one that SIGTERM could not stop either)."""
    flags = os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd, mode = os.open(path, os.O_RDWR | flags, 0o666), "a+b"
    except PermissionError:
        fd, mode = os.open(path, os.O_WRONLY | flags, 0o666), "ab"
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, buffering=0)
    except BaseException:
        os.close(fd)
        raise


def cannot_write(what: str, path: str | os.PathLike, exc: BaseException, error: type[WeedDetectorError],
                 fix: str) -> WeedDetectorError:
    """The one start-up error for a file or folder the user named that cannot be written."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.filename is not None and os.fspath(exc.filename) != os.fspath(path):
        reason += f": {os.fspath(exc.filename)!r}"  # e.g. a file where its folder should be
    return error(f"cannot write the {what} {str(path)!r}: {reason}", fix)


class JsonlWriter:
    """Appends JSON lines to ``path`` (None: writes nothing); see the module docstring.

    ``what`` names the log and ``goes_on`` what carries on without it, for the one warning a
    failing log gives (``"frame log"``, ``"detection goes on without it"``); ``error`` and
    ``fix`` make the start-up error; ``make_folder`` creates a missing parent folder (the
    logs) or not (a path given for one run: the state file, the valve-lag log).
    """

    def __init__(self, path: str | os.PathLike | None, max_bytes: int = 0, backups: int = 3, *,
                 what: str = "log", goes_on: str = "detection goes on without it",
                 fix: str = "give a writable path, or leave it unset", error: type[WeedDetectorError] = ConfigError,
                 make_folder: bool = True, logger: logging.Logger | None = None, clock: Clock = SYSTEM_CLOCK,
                 backoff: Backoff | None = None, opener: Opener | None = None,
                 gap_fields: Callable[[], dict[str, Any]] | None = None):
        self.path = Path(path) if path else None
        self.max_bytes = max(0, int(max_bytes))
        self.backups = max(0, int(backups))
        self.what = what
        self.goes_on = goes_on
        self._error, self._fix = error, fix
        self.rotations = 0
        self.lines_lost = 0  # over the whole run
        self.gaps = 0  # failures that were followed by a resumption
        self._log = logger if logger is not None else log
        self._clock = clock
        self._backoff = backoff or Backoff(1.0, 30.0)
        self._opener = opener or open_append
        self._gap_fields = gap_fields
        self._size = 0
        self._f: BinaryIO | None = None
        self._tail = b""  # a pipe's part-written line, finished before the next one
        self._seekable = True
        self._closed = False
        self._lost = 0  # lines lost since the failure that is not resumed yet
        self._lost_from_ns: int | None = None  # when writing failed (None: writing works)
        self._retry_ns = 0
        if self.path is None:
            return
        try:
            if make_folder:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as e:
            raise cannot_write(what, self.path, e, error, fix) from None

    @property
    def writes(self) -> bool:
        """Lines go to a file: a path was given and the writer is not closed."""
        return self.path is not None and not self._closed

    # -- the file ------------------------------------------------------------------------
    def _open(self) -> None:
        assert self.path is not None
        f = self._opener(self.path)
        try:
            self._seekable = f.seekable()  # a regular file; not a pipe or a terminal (nothing to cut back there)
            self._size = self._drop_cut_line(f) if self._seekable and f.readable() else 0
        except BaseException:
            f.close()
            raise
        self._f = f

    def _drop_cut_line(self, f: BinaryIO) -> int:
        """The file's size once a cut last line (no newline after it) is truncated away. A file whose first line
        does not start a JSON object (a config, a photo given as the log by mistake) is not appended to; damage
        further on (a torn page, a cut line of garbage after a power loss) is not held against it: the readers
        skip such lines, and a run must start."""
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        f.seek(0)
        head = f.read(min(end, CUT_LINE_MAX)).lstrip(_FILL + b"\n")  # blank and NUL-filled lines skipped
        if head and not head.startswith(b"{"):  # every line a run writes is a JSON object
            raise OSError(errno.EINVAL, "its first line is not a JSON object: not a JSON-lines file a run wrote, "
                                        "so nothing is appended to it")
        start = max(0, end - CUT_LINE_MAX - 1)
        f.seek(start)
        tail = f.read(end - start)
        if tail.endswith(b"\n"):
            return end
        nl = tail.rfind(b"\n")
        if nl < 0 and start > 0:
            raise OSError(errno.EINVAL, f"it does not end with a whole line and its last {CUT_LINE_MAX} bytes "
                                        "hold no newline: not a JSON-lines file")
        keep = start + nl + 1
        f.truncate(keep)
        self._log.warning("%s %s ended with a cut line (%d bytes, an earlier run stopped while writing it): "
                          "removed before appending", self.what, self.path, end - keep)
        return keep

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

    def _append(self, data: bytes, cap: int) -> bool:
        """Write ``data`` whole (rotating first if it would pass ``cap``); True if rotated.
        On ``OSError`` the file is cut back to where it was and the error raised."""
        rotated = False
        if self._f is None:
            self._open()
        elif cap and self._size and self._size + len(data) > cap:
            self._rotate()
            rotated = True
        f = self._f
        assert f is not None
        if not self._seekable:
            self._append_pipe(f, data)
            return rotated
        start = f.seek(0, os.SEEK_END)  # where the line starts (O_APPEND)
        try:
            view = memoryview(data)
            while view:
                n = f.write(view)
                if not n:  # nothing taken and no error: as good as a full disk
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
        except OSError:
            self._cut_back(f, start)
            raise
        except ValueError as e:  # the file was closed under us
            self._cut_back(f, start)
            raise OSError(errno.EBADF, str(e)) from e
        self._size = start + len(data)
        return rotated

    def _append_pipe(self, f: BinaryIO, data: bytes) -> None:
        """``data`` into a non-blocking FIFO or terminal, the rest of a line cut earlier first, waiting at most
        ``PIPE_WAIT_S`` for the reader each time the pipe is full. A line the pipe took none of is lost (OSError
        EAGAIN, counted by ``write``); one it took part of is finished before anything else, so that the reader
        never sees two lines glued together (a pipe takes lines up to PIPE_BUF, 4 KiB, whole or not at all)."""
        whole = self._tail + data
        view = memoryview(whole)
        try:
            while view:
                n = f.write(view)
                if n is None:  # full: wait for the reader, a little
                    if not select.select([], [f], [], PIPE_WAIT_S)[1]:
                        break
                    continue
                if not n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
        except OSError:  # the reader went away (EPIPE)
            self._tail = b""
            self._drop_file()
            raise
        except ValueError as e:  # the file was closed under us
            self._tail = b""
            self._drop_file()
            raise OSError(errno.EBADF, str(e)) from e
        if not view:
            self._tail = b""
            return
        written = len(whole) - len(view)
        if written > len(self._tail):  # into this line: the rest of it goes first next time
            self._tail = bytes(view)
            return
        self._tail = self._tail[written:]
        raise OSError(errno.EAGAIN, "its reader is not keeping up")

    def _cut_back(self, f: BinaryIO, start: int) -> None:
        """Undo a part-written line; if even that fails, drop the file (the next open removes the cut line)."""
        try:
            if not self._seekable:
                raise OSError(errno.ESPIPE, "not a regular file")
            f.truncate(start)
        except (OSError, ValueError):
            self._drop_file()

    def _drop_file(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except (OSError, ValueError):
                pass

    # -- writing -------------------------------------------------------------------------
    def write(self, record: dict[str, Any], *, max_bytes: int | None = None, at_start: bool = False) -> bool:
        """Append ``record`` as one line; True if the file was rotated before it.

        ``max_bytes`` replaces the writer's cap for this line (0 = no cap). Never raises for
        the file: a failure is counted and retried (module docstring) — but with ``at_start`` (the
        owner's first line, before the run begins) a file that takes no line is the owner's start-up
        error, as one that cannot be opened (``/dev/full``, a full disk)."""
        if self.path is None or self._closed:
            return False
        line = encode_line(record)
        cap = self.max_bytes if max_bytes is None else max(0, int(max_bytes))
        if at_start and self._lost_from_ns is None:
            try:
                return self._append(line, cap)
            except OSError as e:
                self._drop_file()
                raise cannot_write(self.what, self.path, e, self._error, self._fix) from None
        now = self._clock.now_ns()
        failed_since = self._lost_from_ns
        if failed_since is not None:
            if now < self._retry_ns:
                self._lost += 1
                self.lines_lost += 1
                return False
            line = self._gap_line(now, failed_since) + line
        try:
            rotated = self._append(line, cap)
        except OSError as e:
            self._failed(e, now)
            return False
        if failed_since is not None:
            self._log.warning("%s %s: writing resumed after %d line(s) lost", self.what, self.path, self._lost)
            self.gaps += 1
            self._lost, self._lost_from_ns = 0, None
            self._backoff.reset()
        return rotated

    def _gap_line(self, now: int, failed_since: int) -> bytes:
        rec = {"event": "gap", "t_mono_ns": now, "wall": wall_time(), "lines_lost": self._lost,
               "lost_from_ns": failed_since, **(self._gap_fields() if self._gap_fields else {})}
        return encode_line(rec)

    def _failed(self, e: OSError, now: int) -> None:
        if self._closed:  # closed while this line was being written: nothing to retry
            return
        if self._lost_from_ns is None:
            self._log.warning("%s %s cannot be written (%s): %s; lines are counted as lost and writing is "
                              "retried", self.what, self.path, e.strerror or e, self.goes_on)
            self._lost_from_ns = now
        self._lost += 1
        self.lines_lost += 1
        self._retry_ns = now + int(self._backoff.next_delay() * 1e9)

    def close(self) -> None:
        """Close the file (idempotent); later writes are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._tail and self._f is not None:  # finish a pipe's part-written line if its reader takes it now
            with contextlib.suppress(OSError):
                self._append_pipe(self._f, b"")
        self._drop_file()
        if self._lost:
            self._log.warning("%s %s: %d line(s) lost at the end of the run (writing never resumed)",
                              self.what, self.path, self._lost)


def encode_line(record: Any) -> bytes:
    """``record`` as one compact JSON line. A number that is not finite (NaN, Infinity: not JSON, a
    reader of the file would refuse the line) is written as null."""
    try:
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_or_null(record), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode("utf-8")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def wall_time() -> str:
    """Wall-clock time for humans reading logs (never used for latency)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# -- reading --------------------------------------------------------------------------------
def _value(raw: bytes) -> Any:
    """One line's JSON value; ``ValueError`` saying why it is not UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte {e.start + 1})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ValueError(f"not JSON: {e}") from None


MAX_READ_BYTES = 1_000_000_000  # a JSON-lines file read back whole (a spray log rotates at [service] log_max_mb)


def read_jsonl(path: str | os.PathLike, what: str, parse: Callable[[Any], T] | None = None, *,
               fix: str = "one JSON object per line", logger: logging.Logger | None = None,
               written_by_a_run: bool = True, max_bytes: int = MAX_READ_BYTES) -> list[T]:
    """Every line of a JSON-lines file, through ``parse`` (None: the JSON values); see the module
    docstring. ``ConfigError`` (exit 3) names the file and the line. The file is a regular file of at most
    ``max_bytes`` (a device such as /dev/zero, or a huge file, would fill the memory); a cut last line is
    skipped only in a file ``written_by_a_run`` (a hand-written file's last line is checked like the others)."""
    logger = logger if logger is not None else log
    try:
        data = read_regular(path, max_bytes)
    except FileRefused as e:
        fix = ("give the file's path" if e.missing else
               "split the log into parts of at most that size at its pass_start lines" if e.too_large else
               "give a regular file (a pipe or a device: save it to a file first)")
        raise ConfigError(f"the {what} {str(path)!r} {e}", fix) from None
    lines = data.split(b"\n")
    whole = data.endswith(b"\n")
    if whole:
        lines.pop()
    out: list[Any] = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = _value(raw)
        except ValueError as e:
            if i == len(lines) and not whole and written_by_a_run:
                logger.warning("%s %s: the last line (line %d) is cut (%s), skipped: the run stopped, or its disk "
                               "filled, while writing it", what, path, i, e)
                continue
            raise ConfigError(f"{what} {path} line {i} is {e}", fix) from None
        if parse is not None:
            try:
                value = parse(value)
            except RecursionError:
                raise ConfigError(f"{what} {path} line {i}: nested too deeply", fix) from None
            except ValueError as e:
                raise ConfigError(f"{what} {path} line {i}: {e}", fix) from None
        out.append(value)
    return out
