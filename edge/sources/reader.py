"""The reader thread of every source: a device or file is opened and read in a daemon
thread, never in the caller's.

OpenCV's ``VideoCapture`` can block in C without a bound: opening a FIFO that has no
writer, reading a pipe or network share that stalled, a stream that hangs while it
connects. Python runs a signal's handler only between bytecodes of the main thread, so a
main thread blocked there never sees SIGTERM, and the run loop can neither switch the
outputs off at its stall timeout nor exit. So the blocking calls run in a
:class:`ReaderThread` and the caller waits on it with a timeout:

- ``grab`` is the blocking call, run again and again in the thread. It returns what
  the reader keeps, or None (nothing this time: the thread checks its stop event and
  calls it again); it raises :class:`EndOfStream` at the end and any other exception to
  report a failure, which reaches the caller as a ``SourceError`` instead of dying
  silently in the thread;
- ``on_exit`` (e.g. ``VideoCapture.release``) runs in the thread after its last
  ``grab``, so a device is never released while another thread is blocked inside it;
- ``close()`` waits ``join_timeout`` for the thread (not at all while it is still
  opening) and then abandons it (a daemon thread, logged): a call stuck in C cannot
  hang the caller.

What the thread reads is kept one of two ways: newest wins for live devices
(:class:`~edge.sources.latest.LatestFrameReader`, drops counted), or in order in a small
bounded queue for files (:class:`QueueReader`: the thread waits while the queue is
full, so no frame is lost). ``open``, when given, runs first in the thread (opening a
device or file can block too); ``start()`` of a source waits for it with :meth:`ReaderThread.wait`:
bounded, and given up as soon as the run's stop event is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from edge.core.errors import SourceError, WeedDetectorError
from edge.sources.base import FrameTimeout

log = logging.getLogger(__name__)

#: how often :meth:`ReaderThread.wait` looks at the stop event (a signal's handler sets it)
STOP_POLL_S = 0.05


_ABANDONED: list[threading.Thread] = []  # reader threads left blocked in a device call


def abandoned_threads() -> int:
    """How many reader threads are still blocked in a device call after their source was closed."""
    return sum(1 for t in _ABANDONED if t.is_alive())


class EndOfStream(Exception):
    """Raised by a grab function when the device or file has no more frames."""


class ReaderThread:
    """Run ``open`` (if given) then ``grab`` in a daemon thread (see the module docstring);
    subclasses keep what ``grab`` returns (``_publish``) and hand it out (``read``)."""

    def __init__(
        self,
        grab: Callable[[], Any],
        *,
        source: str,
        open: Optional[Callable[[], None]] = None,
        on_exit: Optional[Callable[[], None]] = None,
        join_timeout: float = 2.0,
    ):
        self._grab = grab
        self.source = source
        self._open = open
        self._on_exit = on_exit
        self._join_timeout = join_timeout
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        # guarded by self._cond
        self._opened = open is None  # ``open`` returned
        self._captured = 0
        self._ended = False  # the thread finished (end of stream, error or stop)
        self._error: Optional[BaseException] = None
        self._closed = False

    # -- to implement ------------------------------------------------------------------
    def _publish(self, got: Any) -> None:
        """Keep what one ``grab`` returned (not None); called in the thread, without the lock."""
        raise NotImplementedError

    def _closing(self) -> None:
        """Called by ``close()`` with the lock held, before the thread is told to stop."""

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
            self._thread = threading.Thread(target=self._run, name=f"frames:{self.source}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and wait ``join_timeout`` for it (idempotent); not at all while it
        is still in ``open`` (nothing is open to release yet).

        If the thread is blocked inside the device for longer, the daemon thread is
        abandoned (logged); it runs ``on_exit`` if that call ever returns.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing()
            self._stop.set()
            self._cond.notify_all()
            thread, opened = self._thread, self._opened
        if thread is None or thread.ident is None:  # never started (a stop signal can cut start() short)
            self._run_on_exit()
        elif thread is not threading.current_thread():
            thread.join(self._join_timeout if opened else 0.0)
            if thread.is_alive():
                _ABANDONED.append(thread)
                log.warning(
                    "%s: the reader thread is still %s; abandoned (it releases the device if that call "
                    "ever returns)",
                    self.source,
                    f"blocked in the device after {self._join_timeout:.1f} s" if opened else "opening the device",
                )

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state (written under the lock, read without it: each only grows or turns true)
    @property
    def captured(self) -> int:
        return self._captured

    @property
    def alive(self) -> bool:
        """True while the reader thread runs."""
        t = self._thread
        return t is not None and t.is_alive()

    @property
    def opened(self) -> bool:
        """True once ``open`` returned (at once without one)."""
        return self._opened

    @property
    def ended(self) -> bool:
        """True once the thread finished (end of stream, failure or close)."""
        return self._ended or self._closed

    def wait_for_capture(self, count: int = 1, timeout: Optional[float] = None) -> bool:
        """Block until ``count`` items were captured in total, or the reader ended; True
        when the count was reached."""
        with self._cond:
            self._cond.wait_for(lambda: self._captured >= count or self._ended or self._closed, timeout)
            return self._captured >= count

    def wait(self, ready: Callable[[], bool], timeout: float, stop: Optional[threading.Event]) -> bool:
        """Wait until ``ready()`` — looked at whenever the thread opened, published or ended —,
        for at most ``timeout`` seconds; False on timeout, or as soon as ``stop`` is set (a
        signal's handler sets it: it is looked at every ``STOP_POLL_S``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                remaining = deadline - time.monotonic()
                if (stop is not None and stop.is_set()) or remaining <= 0:
                    return False
                self._cond.wait(min(STOP_POLL_S, remaining))
        return True

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

    def _raise_error(self) -> None:
        """Raise the thread's failure (the lock held); the original is kept as the cause."""
        err = self._source_error()
        raise err from (None if err is self._error else self._error)

    # -- thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._open is not None:
                self._open()
                with self._cond:
                    self._opened = True
                    self._cond.notify_all()
            while not self._stop.is_set():
                try:
                    got = self._grab()
                except EndOfStream:
                    log.debug("%s: end of stream", self.source)
                    break
                if got is not None:
                    self._publish(got)
        except BaseException as exc:  # reported to read(); the thread must not die silently
            if isinstance(exc, WeedDetectorError):  # a user-facing error: read() and start() say it
                log.debug("%s: frame reader stopped: %s", self.source, exc)
            else:
                log.error("%s: frame reader failed", self.source, exc_info=True)
            with self._cond:
                self._error = exc
        finally:
            self._run_on_exit()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _run_on_exit(self) -> None:
        on_exit, self._on_exit = self._on_exit, None
        if on_exit is None:
            return
        try:
            on_exit()
        except Exception:  # releasing a device must not hide the original problem
            log.warning("%s: releasing the device failed", self.source, exc_info=True)


class QueueReader(ReaderThread):
    """Every item ``grab`` returns, in order, through a queue of ``size``: when it is full
    the thread waits for ``read()`` to take one, so nothing is dropped (files)."""

    def __init__(self, grab: Callable[[], Any], *, size: int = 4, **options: Any):
        super().__init__(grab, **options)
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        self.size = size
        self._items: deque = deque()  # guarded by self._cond

    def _publish(self, got: Any) -> None:
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.size or self._closed)
            if self._closed:
                return
            self._items.append(got)
            self._captured += 1
            self._cond.notify_all()

    def read(self, timeout: Optional[float] = None) -> Any:
        """The next item in order, waiting up to ``timeout`` seconds (forever when None).

        ``FrameTimeout`` when none came in time, ``SourceError`` once the items before the
        thread's failure are taken, None after the end or ``close()``.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._ended or self._closed, timeout)
            if self._closed:
                return None
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._error is not None:
                self._raise_error()
            if self._ended:
                return None
            raise FrameTimeout(f"{self.source}: no frame decoded within {timeout:.3f} s")
