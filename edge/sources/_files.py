"""Shared part of the file sources (video file, image folder): not live, every frame
returned in order, optionally paced at a frame rate (``realtime``) and looped.

The file is opened and decoded in a reader thread
(:class:`~edge.sources.reader.QueueReader`), never in the caller's: ``VideoCapture`` on
a FIFO without a writer blocks in C inside its open, and a read of a pipe or network
share that stalled blocks in C too. The thread fills a small queue and waits while it is
full, so a slow consumer never loses a frame; ``read(timeout)`` waits for the queue at
most ``timeout`` (``FrameTimeout``: the loop switches the outputs off at its stall
timeout), and ``close()`` abandons a thread stuck in C after ``join_timeout``. (OpenCV
serialises the FFmpeg opens of a process behind one lock: while an abandoned open is
blocked, no other video or stream of the process can open. ``edge-run`` opens one source
and exits after a stop, so it does not notice.)

``FileSource`` is the lifecycle (``start()`` once, ``read()`` only after it, ``close()``
idempotent, context manager), the frame ids and the pacing. ``start()`` waits at most
``open_timeout`` for the file to open (``SourceError`` after that), and returns at once
when the run's ``stop`` event is set meanwhile (a signal): reads then return None.

Subclasses implement, all run in the reader thread: ``_open()`` (once; ``SourceError``
when the file cannot be read), ``_produce()`` (the next ``(image, fields)`` in file
order, ``EndOfStream`` after the last, looping if asked) and, when they hold a resource,
``_close_file()`` (after the last ``_produce``). ``read()`` builds frames from what
``_produce`` returned: ids, pacing, capture time (when it is read, or its due time with
``realtime``) and the ``fields`` (e.g. ``name``, ``meta``).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import Optional

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.sources.base import SourceLifecycle
from edge.sources.config import DEFAULT_MAX_IMAGE_PIXELS
from edge.sources.image_header import too_large
from edge.sources.pacing import Pacer
from edge.sources.reader import QueueReader

log = logging.getLogger(__name__)


class FileSource(SourceLifecycle):
    """Base class of the sources that read files; see the module docstring.

    Arguments: ``path`` of the file or folder; ``loop``: start again after the last
    frame; ``fps``: the rate for ``realtime`` pacing; ``realtime``: release frames at
    that rate instead of as fast as possible; ``clock``: for timestamps and pacing;
    ``max_pixels``: larger images or video frames are refused before they are decoded;
    ``stop``: the run's stop event; ``open_timeout``, ``queue_size``, ``join_timeout``:
    of the reader thread.
    """

    live = False
    name: str

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        loop: bool = False,
        fps: Optional[float] = None,
        realtime: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        stop: Optional[threading.Event] = None,
        open_timeout: float = 10.0,
        queue_size: int = 4,
        join_timeout: float = 1.0,
    ):
        self.path = os.fspath(path)
        self.loop = loop
        self.requested_fps = fps
        self.realtime = realtime
        self.max_pixels = max_pixels
        self.open_timeout = open_timeout
        self._clock = clock
        self._stop = stop
        self._queue_size = queue_size
        self._join_timeout = join_timeout
        self._pacer: Optional[Pacer] = None  # set by a subclass for realtime playback
        self._reader: Optional[QueueReader] = None
        self._pending: Optional[tuple] = None  # (image, fields) taken from the reader, not yet returned
        self._next_id = 0
        self._dropped = 0  # realtime video only: frames superseded before they were read
        self._started = False
        self._closed = False

    # -- to implement (run in the reader thread) ------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _produce(self) -> tuple:
        raise NotImplementedError

    def _close_file(self) -> None:
        pass

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the file(s) in the reader thread (idempotent); ``SourceError`` with a fix
        when it can't, or when it does not open within ``open_timeout``."""
        if self._closed:
            raise SourceError(f"{self.name} was closed", fix="create a new source to read it again")
        if self._started:
            return
        log.info("%s: opening %s", self.name, self.path)
        reader = QueueReader(self._produce, open=self._open, on_exit=self._close_file, size=self._queue_size,
                             source=self.name, join_timeout=self._join_timeout)
        self._reader = reader
        self._started = True
        reader.start()
        reader.wait(lambda: reader.opened or reader.ended, self.open_timeout, self._stop)
        if self._stop is not None and self._stop.is_set():
            log.info("%s: stop requested while it was opening", self.name)
            reader.close()
            return
        if reader.opened:
            return
        error = reader.error
        reader.close()
        raise error or SourceError(
            f"{self.name}: {self.path} did not open within {self.open_timeout:g} s",
            fix="a FIFO needs a writer, a network file system a reachable server; "
            "check what the path is (`ls -l PATH`, `mount`)",
        )

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame in order; None after the last one (never with ``loop``) or after close.

        ``FrameTimeout`` when the next frame was not decoded (or, realtime, is not due)
        within ``timeout`` seconds; the next read returns it.
        """
        if self._closed:
            return None
        if not self._started:
            raise SourceError(
                f"{self.name} was read before start()",
                fix="call start() (or use the source in a `with` block) before read()",
            )
        return self._next_frame(timeout)

    @property
    def dropped(self) -> int:
        return self._dropped

    def _release(self) -> None:
        """Stop the reader thread (``close()``); it closes the file after its last read."""
        reader, self._reader = self._reader, None
        self._pending = None
        if reader is not None:
            reader.close()

    # -- reading -----------------------------------------------------------------------
    def _next_frame(self, timeout: Optional[float]) -> Optional[Frame]:
        """The next frame, paced; None at the end."""
        if not self._take_pending(timeout):
            return None
        self._pace(timeout)  # FrameTimeout keeps the frame pending
        return self._frame_from_pending(self._catch_up(timeout))

    def _catch_up(self, timeout: Optional[float]) -> Optional[int]:
        """Before a paced frame goes out: its capture time (None = now). The video drops
        frames already superseded here (``_dropped``)."""
        return None

    def _take_pending(self, timeout: Optional[float]) -> bool:
        """Make sure a decoded frame is pending; False at the end (``FrameTimeout`` when none
        was decoded within ``timeout``)."""
        if self._pending is None:
            assert self._reader is not None
            self._pending = self._reader.read(timeout)
            if self._pending is None:
                log.info("%s: end of source after %d frames", self.name, self._next_id)
                return False
        return True

    def _frame_from_pending(self, t_capture_ns: Optional[int] = None) -> Frame:
        """The pending frame as the next ``Frame`` (id, capture time — now unless given —,
        this source, its fields)."""
        (image, fields), self._pending = self._pending, None
        frame = Frame(
            image=image,
            frame_id=self._next_id,
            t_capture_ns=self._clock.now_ns() if t_capture_ns is None else t_capture_ns,
            source=self.name,
            **fields,
        )
        self._next_id += 1
        return frame

    # -- for subclasses --------------------------------------------------------------
    def _path_error(self, what: str) -> SourceError:
        """Why ``path`` cannot be opened, it being no file (or folder) that can be read:
        ``<what> <path> does not exist``, is a symlink loop, a broken symlink, neither a
        file nor a folder, cannot be looked at; e.g. ``what="video file"``."""
        try:
            os.stat(self.path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return SourceError(
                    f"{what} {self.path} is a symlink loop",
                    fix="point the link at a real file or folder (`ls -l PATH` shows where it leads)",
                )
            if os.path.islink(self.path):
                return SourceError(
                    f"{what} {self.path} is a broken symlink (to {os.readlink(self.path)})",
                    fix="point the link at a real file or folder, or give the path itself",
                )
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                return SourceError(
                    f"{what} {self.path} cannot be looked at ({exc.strerror})",
                    fix="check the permissions of the path and its folders (`ls -ld PATH`)",
                )
        else:
            return SourceError(
                f"{what} {self.path} is neither a file nor a folder (a FIFO, socket or device)",
                fix="give a file or a folder of them",
            )
        return SourceError(
            f"{what} {self.path} does not exist",
            fix="check the path (relative paths start in the current directory)",
        )

    def _too_large(self, width: int, height: int) -> Optional[str]:
        """Why an image or frame of this size is refused (over ``max_pixels``), or None."""
        return too_large(width, height, self.max_pixels)

    def _pace(self, timeout: Optional[float]) -> None:
        """Wait until the next frame is due (realtime only).

        ``FrameTimeout`` when that is beyond ``timeout``: call it before consuming the
        frame, so that the next read returns the same one.
        """
        if self._pacer is not None:
            self._pacer.wait(self._next_id, timeout)
