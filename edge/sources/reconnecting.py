"""A live source that comes back after its device went away; the mirror of
``edge.outputs.reconnecting.ReconnectingOutput`` (backoff: ``edge.core.reconnect``).

``ReconnectingSource`` wraps a camera, stream or picamera2 source (anything with
``reopen()``):

- a read that fails (``SourceError``: unplugged, too many failed grabs) or a live source
  that ends (it never should) raises :class:`~edge.sources.base.SourceLost` once: the loop
  switches every output off at once. The device is reopened with backoff; until then
  every read waits (on the injected clock) and raises ``FrameTimeout``;
- a source that stays silent for ``silence_s`` (the loop's stall timeout) without failing
  is reopened with the same backoff, and counted as lost once per silence;
- frames resume after a successful reopen; the backoff starts again from its first delay.

Losses and reconnects are logged, counted and reported as a ``LinkState``.
"""

from __future__ import annotations

import logging
import threading

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.core.reconnect import Backoff, LinkState
from edge.sources.base import FrameTimeout, ReopenableSource, SourceLost

log = logging.getLogger(__name__)


class ReconnectingSource:
    """A ``FrameSource`` whose device may vanish and come back; see the module docstring.

    ``stop`` is the run's stop event: a source that ends while a stop is requested has
    simply ended (``read`` returns None), otherwise it counts as lost.
    """

    live = True

    def __init__(self, source: ReopenableSource, *, backoff: Backoff | None = None, silence_s: float = 1.0,
                 clock: Clock = SYSTEM_CLOCK, stop: threading.Event | None = None):
        self.source = source
        self.name = source.name
        self.backoff = backoff if backoff is not None else Backoff()
        self.silence_ns = int(silence_s * 1e9)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.losses = 0
        self.reconnects = 0
        self._lost: SourceError | None = None  # failed; reopen pending
        self._silent = False  # no frame within silence_s (or not since a reopen)
        self._silence_counted = False
        self._next_reopen_ns: int | None = None
        self._last_frame_ns: int | None = None

    # -- the FrameSource protocol ----------------------------------------------------
    def start(self) -> None:
        self.source.start()

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._last_frame_ns is None:
            self._last_frame_ns = self.clock.now_ns()
        if self._lost is not None:
            self._maybe_reopen()
            if self._lost is not None:
                self._wait_for_reopen(timeout)
                raise FrameTimeout()
        try:
            frame = self.source.read(timeout=timeout)
        except FrameTimeout:
            self._silence()
            raise
        except SourceError as e:
            raise self._lose(e) from None
        if frame is None:
            if self.stop.is_set():
                return None
            raise self._lose(SourceError(f"{self.name} ended unexpectedly", "check the device or connection"))
        if self._silent:
            self._silent = False
            self._next_reopen_ns = None
            self.backoff.reset()
        self._last_frame_ns = self.clock.now_ns()
        return frame

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def link(self) -> LinkState:
        return LinkState(self._lost is None, self.losses, self.reconnects)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "ReconnectingSource":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- losing and reopening --------------------------------------------------------
    def _lose(self, error: SourceError) -> SourceLost:
        self._lost = error
        self._silent = True
        self.losses += 1
        self.backoff.reset()
        delay = self.backoff.next_delay()
        self._next_reopen_ns = self.clock.now_ns() + int(delay * 1e9)
        log.error("%s: %s — all outputs off; reopening in %.1f s", self.name, error, delay)
        return SourceLost(error.what, error.fix)

    def _silence(self) -> None:
        """No frame within the read's timeout: after ``silence_s`` the device is reopened with backoff."""
        assert self._last_frame_ns is not None
        now = self.clock.now_ns()
        if now - self._last_frame_ns < self.silence_ns:
            return
        if not self._silent:
            self._silent = True
            self._silence_counted = False
            self.backoff.reset()
            self._next_reopen_ns = now + int(self.backoff.next_delay() * 1e9)
        else:
            self._maybe_reopen()

    def _maybe_reopen(self) -> None:
        now = self.clock.now_ns()
        if self._next_reopen_ns is None or now < self._next_reopen_ns:
            return
        if self._lost is None:  # a silent source (no error): count it as lost, once per silence
            if not self._silence_counted:
                self._silence_counted = True
                self.losses += 1
            log.warning("%s: still no frame; reopening it", self.name)
        try:
            self.source.reopen()
        except SourceError as e:
            self._lost = e
            delay = self.backoff.next_delay()
            self._next_reopen_ns = self.clock.now_ns() + int(delay * 1e9)
            log.warning("%s still unavailable (%s); next attempt in %.1f s", self.name, e.what, delay)
            return
        self._lost = None
        self.reconnects += 1
        # if it stays silent, the next attempt comes after a longer wait (reset when frames return)
        self._next_reopen_ns = self.clock.now_ns() + int(self.backoff.next_delay() * 1e9)
        log.warning("%s reopened; waiting for frames", self.name)

    def _wait_for_reopen(self, timeout: float | None) -> None:
        """Between reopen attempts: a short wait on the injected clock (at most the read's timeout)."""
        now = self.clock.now_ns()
        if self._next_reopen_ns is not None and now < self._next_reopen_ns:
            wait_s = (self._next_reopen_ns - now) / 1e9
            self.clock.sleep(wait_s if timeout is None else min(timeout, wait_s))
