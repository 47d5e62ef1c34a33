"""Shared part of the live sources (camera, stream, picamera2): a device opened and read by
a :class:`~edge.sources.latest.LatestFrameReader` thread (newest frame wins, drops
counted), with ``reopen()`` for reconnecting after the device went away.

The device is opened in the reader thread too (``VideoCapture`` of a stream that hangs
while it connects blocks in C): ``start()`` waits for it at most ``open_timeout`` (plus
``OPEN_GRACE_S``, so that a device's own timeout is reported first) and for the first
frame at most ``first_frame_timeout``, and returns at once, without a frame, when the
run's ``stop`` event is set meanwhile (a signal): reads then return None.

``LiveSource`` is the lifecycle; ``LiveCaptureSource`` adds an OpenCV ``VideoCapture``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional, Tuple

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.sources.base import SourceLifecycle
from edge.sources.latest import LatestFrameReader

log = logging.getLogger(__name__)

#: start() waits this much longer than ``open_timeout`` for the device to open
OPEN_GRACE_S = 1.0


class _Device:
    """A device opened in the reader thread: ``open()`` there, then ``grab()`` from it, and
    ``release()`` it (nothing to release if it never opened)."""

    def __init__(self, open_device: Callable[[], Tuple[Callable[[], Any], Callable[[], None]]]):
        self._open_device = open_device
        self._grab: Optional[Callable[[], Any]] = None
        self._release: Optional[Callable[[], None]] = None

    def open(self) -> None:
        self._grab, self._release = self._open_device()

    def grab(self) -> Any:
        assert self._grab is not None, "the reader grabs only after open()"
        return self._grab()

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class LiveSource(SourceLifecycle):
    """Base class: a live device read by the latest-frame reader (newest wins).

    Subclasses implement ``_open_device() -> (grab, release)`` (run in the reader thread;
    see :mod:`edge.sources.latest` for what ``grab`` returns; ``release`` runs in the
    reader thread after its last grab) and set ``_no_first_frame_fix``: what to check when
    the device does not open in time or sends no first frame.
    """

    _no_first_frame_fix: str
    live = True
    name: str

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        open_timeout: float = 10.0,
        first_frame_timeout: float = 10.0,
        max_read_failures: int = 3,
        stop: Optional[threading.Event] = None,
    ):
        self._clock = clock
        self.open_timeout = open_timeout
        self.first_frame_timeout = first_frame_timeout
        self._stop = stop
        self.max_read_failures = max_read_failures
        self._reader: Optional[LatestFrameReader] = None
        self._dropped_before = 0  # dropped by readers of earlier opens (reopen)
        self._next_id = 0
        self._closed = False
        #: what the device actually delivers after our requests (width, height, fps)
        self.actual: dict = {}

    # -- to implement ------------------------------------------------------------------
    def _open_device(self) -> Tuple[Callable[[], Any], Callable[[], None]]:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the device in the reader thread and wait for its first frame (idempotent).

        A device that does not open, or opens but never delivers, is reported here (a
        ``SourceError``), before any output is switched. A stop request meanwhile ends the
        wait at once: the source is then closed for reading (reads return None).
        """
        if self._closed:
            raise SourceError(
                f"{self.name} was closed", fix="create a new source to read it again"
            )
        if self._reader is not None:
            return
        device = _Device(self._open_device)
        reader = LatestFrameReader(
            device.grab,
            open=device.open,
            on_exit=device.release,
            source=self.name,
            clock=self._clock,
            first_id=self._next_id,
        )
        self._reader = reader
        reader.start()
        if not reader.wait(lambda: reader.opened or reader.ended, self.open_timeout + OPEN_GRACE_S, self._stop):
            failed = self._not_opened_error()
        else:
            reader.wait(lambda: reader.captured >= 1 or reader.ended, self.first_frame_timeout, self._stop)
            failed = self._no_first_frame_error()
        if self._stop is not None and self._stop.is_set():
            log.info("%s: stop requested while it was opening", self.name)
            reader.close()
            return
        if reader.captured < 1:
            error = reader.error
            self._stop_reader()
            raise error or failed

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame (see :meth:`LatestFrameReader.read`)."""
        if self._reader is None:
            if self._closed:
                return None
            raise SourceError(
                f"{self.name} was read before start()",
                fix="call start() (or use the source in a `with` block) before read()",
            )
        return self._reader.read(timeout)

    def reopen(self) -> None:
        """Release the device and open it again, e.g. after an unplugged cable.

        Frame ids continue where they stopped and the dropped count keeps adding up.
        Raises ``SourceError`` like ``start()`` when the device is still unavailable.
        """
        if self._closed:
            raise SourceError(f"{self.name} was closed", fix="create a new source")
        self._stop_reader()
        self.start()

    def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
            self._dropped_before += reader.dropped
            self._next_id = reader.next_id

    @property
    def dropped(self) -> int:
        current = self._reader.dropped if self._reader is not None else 0
        return self._dropped_before + current

    def _release(self) -> None:
        """Stop the reader thread and release the device (``close()``, idempotent)."""
        self._stop_reader()

    def _not_opened_error(self) -> SourceError:
        return SourceError(
            f"{self.name} did not open within {self.open_timeout + OPEN_GRACE_S:g} s",
            fix=self._no_first_frame_fix,
        )

    def _no_first_frame_error(self) -> SourceError:
        return SourceError(
            f"{self.name} opened but sent no frame within {self.first_frame_timeout:g} s",
            fix=self._no_first_frame_fix,
        )


class LiveCaptureSource(LiveSource):
    """An OpenCV ``VideoCapture`` (camera index or stream URL) as a live source.

    Subclasses implement ``_open_capture()`` (returns an opened capture or raises
    ``SourceError``) and set ``_read_failed_fix`` and ``_no_first_frame_fix``: what to
    check when the device stops delivering frames or sends no first frame. Their
    ``__init__`` passes the keyword arguments of :class:`LiveSource` (``clock``,
    ``open_timeout``, ``first_frame_timeout``, ``max_read_failures``, ``stop``) on as
    ``**live_options``.
    """

    _read_failed_fix: str

    def _open_capture(self):
        raise NotImplementedError

    def _read_failed_error(self, failures: int) -> SourceError:
        return SourceError(
            f"{self.name} stopped delivering frames ({failures} failed reads in a row)",
            fix=self._read_failed_fix,
        )

    def _open_device(self):
        import cv2

        cap = self._open_capture()
        self.actual = {
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        }
        log.info(
            "%s opened: %dx%d at %.1f fps (as reported by the device)",
            self.name,
            self.actual["width"],
            self.actual["height"],
            self.actual["fps"],
        )
        return self._make_grab(cap), cap.release

    def _make_grab(self, cap):
        failures = 0

        def grab():
            nonlocal failures
            ok, image = cap.read()
            if ok and image is not None:
                failures = 0
                return image
            failures += 1
            if failures >= self.max_read_failures:
                raise self._read_failed_error(failures)
            return None

        return grab
