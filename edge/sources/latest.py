"""A latest-frame reader: a background thread keeps only the newest frame.

Live devices (USB cameras, RTSP streams, picamera2) deliver frames at their own pace. If
the detector reads them in order it falls behind and sprays on where the weed *was*
seconds ago. So, as picamera2 and Frigate do, one thread grabs frames as fast as the
device delivers them and keeps only the newest; ``read()`` returns that newest frame and
counts every frame that was captured but never returned as *dropped*.

``grab`` is the blocking device call. It returns one of:

- an image (``numpy.ndarray``): timestamped with ``clock.now_ns()`` as soon as it returns;
- a :class:`Grabbed` (image, capture time on the monotonic clock, extra metadata), for
  devices that know the capture time better (picamera2's ``SensorTimestamp``);
- ``None``: no frame this time (a poll timed out); the thread checks its stop event
  and calls ``grab`` again.

It raises :class:`EndOfStream` when the device has no more frames, and any other
exception to report a failure; that exception reaches the caller of ``read()`` as a
:class:`~edge.core.errors.SourceError` instead of dying silently in the thread.

The thread owns the device: ``on_exit`` (e.g. ``VideoCapture.release``) runs in the
reader thread after its last ``grab``, so a device is never released while another thread
is blocked inside it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import SourceError, WeedDetectorError
from edge.core.frame import Frame
from edge.sources.base import FrameTimeout

log = logging.getLogger(__name__)


class EndOfStream(Exception):
    """Raised by a grab function when the device has no more frames."""


@dataclass(frozen=True)
class Grabbed:
    """A grabbed image with its own capture time (monotonic ns) and metadata."""

    image: Any
    t_capture_ns: int
    meta: dict = field(default_factory=dict)


GrabResult = Union[Any, Grabbed, None]


class LatestFrameReader:
    """Run ``grab`` in a thread; ``read()`` returns the newest frame not yet returned.

    Frame ids count captured frames from ``first_id``, so a gap between two returned
    ids is the number of frames dropped in between.
    """

    def __init__(
        self,
        grab: Callable[[], GrabResult],
        *,
        source: str,
        clock: Clock = SYSTEM_CLOCK,
        colour_order: str = "BGR",
        on_exit: Optional[Callable[[], None]] = None,
        first_id: int = 0,
        join_timeout: float = 2.0,
    ):
        self._grab = grab
        self.source = source
        self._clock = clock
        self._colour_order = colour_order
        self._on_exit = on_exit
        self._join_timeout = join_timeout

        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        # All below are guarded by self._cond.
        self._next_id = first_id
        self._latest: Optional[Frame] = None  # newest captured frame
        self._latest_returned = True  # True once _latest has been handed out
        self._captured = 0
        self._returned = 0
        self._dropped = 0
        self._ended = False  # the thread finished (end of stream, error or stop)
        self._error: Optional[BaseException] = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        with self._cond:
            if self._closed:
                raise SourceError(
                    f"{self.source}: the frame reader was already closed",
                    fix="create a new source (or call reopen()) instead of restarting a closed one",
                )
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"frames:{self.source}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and wait briefly for it (idempotent).

        If ``grab`` is blocked inside the device for longer than ``join_timeout``, the
        daemon thread finishes (and runs ``on_exit``) as soon as that call returns.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._latest is not None and not self._latest_returned:
                self._dropped += 1  # captured, never returned
                self._latest_returned = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            self._run_on_exit()
        elif thread is not threading.current_thread():
            thread.join(self._join_timeout)
            if thread.is_alive():
                log.warning(
                    "%s: the reader thread is still blocked in the device after %.1f s; "
                    "it will release the device when the call returns",
                    self.source,
                    self._join_timeout,
                )

    def __enter__(self) -> "LatestFrameReader":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Frames captured but never returned (replaced by a newer one, or left at close)."""
        with self._cond:
            return self._dropped

    @property
    def captured(self) -> int:
        with self._cond:
            return self._captured

    @property
    def returned(self) -> int:
        with self._cond:
            return self._returned

    @property
    def alive(self) -> bool:
        """True while the reader thread runs."""
        t = self._thread
        return t is not None and t.is_alive()

    def wait_for_capture(self, count: int = 1, timeout: Optional[float] = None) -> bool:
        """Block until ``count`` frames were captured in total, or the reader ended.

        Returns True when the count was reached. Sources use it in ``start()`` to check
        that a device really delivers frames before the pipeline switches anything on.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._captured >= count or self._ended or self._closed, timeout
            )
            return self._captured >= count

    # -- reading ---------------------------------------------------------------------
    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """Return the newest frame newer than the last one returned.

        Blocks up to ``timeout`` seconds (forever when None). Raises ``FrameTimeout`` when
        no newer frame arrived in time, ``SourceError`` when the reader thread failed.
        Returns None when the stream ended or the reader was closed.
        """
        with self._cond:
            ready = self._cond.wait_for(
                lambda: not self._latest_returned or self._ended or self._closed, timeout
            )
            if not self._latest_returned:  # a newer frame first, even if the thread ended
                self._latest_returned = True
                self._returned += 1
                return self._latest
            if self._error is not None:
                err = self._source_error()
                raise err from (None if err is self._error else self._error)
            if self._ended or self._closed:
                return None
            assert not ready
            raise FrameTimeout(f"{self.source}: no new frame within {timeout:.3f} s")

    @property
    def error(self) -> Optional[WeedDetectorError]:
        """The reader thread's failure as a user-facing error, or None."""
        with self._cond:
            return None if self._error is None else self._source_error()

    def _source_error(self) -> WeedDetectorError:
        err = self._error
        if isinstance(err, WeedDetectorError):
            return err
        return SourceError(
            f"{self.source}: reading frames failed: {type(err).__name__}: {err}",
            fix="check the device or connection (the log has the traceback); "
            "restart or reopen the source once it is back",
        )

    # -- thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    got = self._grab()
                except EndOfStream:
                    log.info("%s: end of stream", self.source)
                    break
                if got is None:
                    continue
                if isinstance(got, Grabbed):
                    image, t_ns, meta = got.image, int(got.t_capture_ns), dict(got.meta)
                else:
                    image, t_ns, meta = got, self._clock.now_ns(), {}
                self._publish(image, t_ns, meta)
        except BaseException as exc:  # reported to read(); the thread must not die silently
            log.error("%s: frame reader failed", self.source, exc_info=True)
            with self._cond:
                self._error = exc
        finally:
            self._run_on_exit()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, image: Any, t_ns: int, meta: dict) -> None:
        with self._cond:
            if self._closed:
                return
            if self._latest is not None and not self._latest_returned:
                self._dropped += 1
            self._latest = Frame(
                image=image,
                frame_id=self._next_id,
                t_capture_ns=t_ns,
                source=self.source,
                colour_order=self._colour_order,
                meta=meta,
            )
            self._next_id += 1
            self._captured += 1
            self._latest_returned = False
            self._cond.notify_all()

    def _run_on_exit(self) -> None:
        on_exit, self._on_exit = self._on_exit, None
        if on_exit is None:
            return
        try:
            on_exit()
        except Exception:  # releasing a device must not hide the original problem
            log.warning("%s: releasing the device failed", self.source, exc_info=True)

    @property
    def next_id(self) -> int:
        """The id the next captured frame will get (for a reopened device to continue)."""
        with self._cond:
            return self._next_id
