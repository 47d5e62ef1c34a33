"""A latest-frame reader: a background thread keeps only the newest frame.

Live devices (USB cameras, RTSP streams, picamera2) deliver frames at their own pace. If
the detector reads them in order it falls behind and sprays on where the weed *was*
seconds ago. So, as picamera2 and Frigate do, one thread grabs frames as fast as the
device delivers them and keeps only the newest; ``read()`` returns that newest frame and
counts every frame that was captured but never returned as *dropped*.

The thread, its errors and its closing are those of every source's reader
(:class:`~edge.sources.reader.ReaderThread`). ``grab`` is the blocking device call. It
returns one of:

- an image (``numpy.ndarray``): timestamped with ``clock.now_ns()`` as soon as it returns;
- a :class:`Grabbed` (image, capture time on the monotonic clock, extra metadata), for
  devices that know the capture time better (picamera2's ``SensorTimestamp``);
- ``None``: no frame this time (a poll timed out); the thread checks its stop event
  and calls ``grab`` again.

It raises :class:`EndOfStream` when the device has no more frames, and any other
exception to report a failure; that exception reaches the caller of ``read()`` as a
:class:`~edge.core.errors.SourceError` instead of dying silently in the thread.

The thread owns the device: ``open`` (if given) opens it in the thread before the first
``grab``, and ``on_exit`` (e.g. ``VideoCapture.release``) runs in the reader thread after
its last ``grab``, so a device is never released while another thread is blocked inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.frame import Frame
from edge.sources.base import FrameTimeout
from edge.sources.reader import EndOfStream, ReaderThread

__all__ = ["EndOfStream", "Grabbed", "LatestFrameReader"]


@dataclass(frozen=True)
class Grabbed:
    """A grabbed image with its own capture time (monotonic ns) and metadata."""

    image: Any
    t_capture_ns: int
    meta: dict = field(default_factory=dict)


GrabResult = Union[Any, Grabbed, None]


class LatestFrameReader(ReaderThread):
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
        open: Optional[Callable[[], None]] = None,
        on_exit: Optional[Callable[[], None]] = None,
        first_id: int = 0,
        join_timeout: float = 2.0,
    ):
        super().__init__(grab, source=source, open=open, on_exit=on_exit, join_timeout=join_timeout)
        self._clock = clock
        self._colour_order = colour_order
        # All below are guarded by self._cond.
        self._next_id = first_id
        self._latest: Optional[Frame] = None  # newest captured frame
        self._latest_returned = True  # True once _latest has been handed out
        self._returned = 0
        self._dropped = 0

    def _closing(self) -> None:
        if self._latest is not None and not self._latest_returned:
            self._dropped += 1  # captured, never returned
            self._latest_returned = True

    # -- state (written under the lock, read without it: each only grows or turns true)
    @property
    def dropped(self) -> int:
        """Frames captured but never returned (replaced by a newer one, or left at close)."""
        return self._dropped

    @property
    def returned(self) -> int:
        return self._returned

    @property
    def next_id(self) -> int:
        """The id the next captured frame will get (for a reopened device to continue)."""
        return self._next_id

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
                self._raise_error()
            if self._ended or self._closed:
                return None
            assert not ready
            raise FrameTimeout(f"{self.source}: no new frame within {timeout:.3f} s")

    def _publish(self, got: GrabResult) -> None:
        if isinstance(got, Grabbed):
            image, t_ns, meta = got.image, int(got.t_capture_ns), dict(got.meta)
        else:
            image, t_ns, meta = got, self._clock.now_ns(), {}
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
