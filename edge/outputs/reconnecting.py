"""An output that reconnects after its device went away (backoff: ``edge.core.reconnect``).

- :class:`ReconnectingOutput`: wraps an output that can lose its device mid-run (the
  serial sprayer controller unplugged). When the device stops answering, the wrapped
  output is closed (it stops heart-beating, so the controller's own watchdog closes the
  valves), every channel reads as off, and detection goes on; a new output is built
  with backoff, started by ``maintain()`` (the pipeline calls it on every loop turn) or by the
  next ``set(ch, True)``. Each attempt runs in a thread of its own (``spawn``; a handshake
  with a silent controller waits ``retries`` x ``ack_timeout_s``: the loop never waits for
  it), and the next ``maintain()`` after it ended takes the new output in (or schedules the
  next attempt). Losses and reconnects are logged and counted. While it is lost,
  ``set(ch, True)`` raises ``OutputUnavailable`` (nothing opened: the caller must not
  count a spray), and ``off_reason(ch)`` of a channel that was on says
  ``controller lost``.

A device missing at start-up is still an ``OutputError`` (exit code 6): the first build
happens in the constructor and is not retried.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.reconnect import Backoff, LinkState
from edge.core.errors import WeedDetectorError
from edge.outputs.base import Output
from edge.outputs.channels import Interlock, OutputUnavailable

log = logging.getLogger(__name__)


Spawn = Callable[[Callable[[], None]], None]


def spawn_thread(work: Callable[[], None]) -> None:
    """Run ``work`` in a daemon thread (the reconnect attempts; a test passes ``lambda w: w()`` instead)."""
    threading.Thread(target=work, name="output-reconnect", daemon=True).start()


class _Attempt:
    """One build of the output, off the loop thread; a result nobody takes any more is closed."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.output: Output | None = None
        self.error: WeedDetectorError | None = None
        self._lock = threading.Lock()
        self._cancelled = False

    def run(self, factory: Callable[[], Output]) -> None:
        built: Output | None = None
        failure: WeedDetectorError | None = WeedDetectorError("the attempt ended without an output")
        try:
            built, failure = factory(), None
        except WeedDetectorError as e:
            failure = e
        except Exception as e:  # a bug in building: the next attempt may fare no better, but the run goes on
            log.exception("building the output failed")
            failure = WeedDetectorError(f"building the output failed: {e!r}")
        finally:  # whatever ended it (even a BaseException): the attempt is over, the next one can follow
            with self._lock:
                if self._cancelled and built is not None:
                    _close_quietly(built)
                    built = None
                self.output, self.error = built, failure
            self.done.set()

    def cancel(self) -> None:
        """The wrapper is closed: close what this attempt built, now or when it ends."""
        with self._lock:
            self._cancelled = True
            built, self.output = self.output, None
        if built is not None:
            _close_quietly(built)


def _close_quietly(out: Output) -> None:
    try:
        out.close()
    except Exception as e:
        log.debug("closing an output nobody uses failed: %s", e)


class ReconnectingOutput:
    """An ``Output`` whose device may vanish and come back; see the module docstring.

    ``factory()`` builds the real output (every channel off) or raises
    ``WeedDetectorError``. An output whose ``healthy`` turns False (``SerialOutput``)
    is treated as lost as soon as it turns False (its heartbeat failed), even between
    switch commands.
    """

    def __init__(self, factory: Callable[[], Output], *, backoff: Backoff | None = None,
                 clock: Clock = SYSTEM_CLOCK, spawn: Spawn = spawn_thread):
        self._factory = factory
        self._spawn = spawn
        self._attempt: _Attempt | None = None  # a reconnect attempt started and not yet taken in
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._lock = threading.RLock()
        self._inner: Output | None = factory()
        self._enable: Interlock | None = None
        self.name = self._inner.name
        self.channels = self._inner.channels
        self.max_on_s = self._inner.max_on_s
        self._lost_off: list[str | None] = [None] * self.channels  # "controller lost" for channels on then
        self._next_try_ns = 0
        self._closed = False
        self.losses = 0
        self.reconnects = 0
        self.failed_attempts = 0

    # -- state -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        with self._lock:
            return self._inner is not None

    @property
    def healthy(self) -> bool:
        """True: a lost device is this wrapper's normal business, not a failure of the run."""
        return True

    def link(self) -> LinkState:
        with self._lock:
            return LinkState(self._inner is not None, self.losses, self.reconnects)

    def set_enable(self, enable: Interlock | None) -> None:
        """Gate the device's output (and every one rebuilt after a loss) by ``enable``."""
        with self._lock:
            self._enable = enable
            if self._inner is not None:
                self._inner.set_enable(enable)

    def _lose(self, why: object) -> None:
        """The device is gone: close what is left (never raises) and schedule a reconnect."""
        inner, self._inner = self._inner, None
        if inner is None:
            return
        try:
            was_on = tuple(inner.state())[: self.channels]
        except Exception:  # the state is a cache; never let it stop the fail-safe path
            was_on = (True,) * self.channels
        self._lost_off = ["controller lost" if on else None for on in was_on]
        self.losses += 1
        log.error("%s output lost (%s): every channel counts as off; detection goes on and the output "
                  "is reconnected with backoff", self.name, why)
        try:
            inner.close()
        except Exception as e:  # the device is gone; closing it may fail too
            log.debug("closing the lost %s output failed: %s", self.name, e)
        self._backoff.reset()
        self._next_try_ns = self._clock.now_ns() + int(self._backoff.next_delay() * 1e9)

    def maintain(self) -> None:
        """Notice a lost device and reconnect when the backoff allows (cheap when healthy)."""
        with self._lock:
            if self._closed:
                return
            if self._inner is not None:
                if not self._inner.healthy:
                    self._lose("it stopped answering")
                return
            if self._attempt is None:
                if self._clock.now_ns() < self._next_try_ns:
                    return
                attempt, factory = _Attempt(), self._factory
                try:
                    self._spawn(lambda: attempt.run(factory))
                except Exception as e:  # no thread to be had: this attempt failed, the next one follows the backoff
                    attempt.error = WeedDetectorError(f"no thread for the attempt: {e}")
                    attempt.done.set()
                self._attempt = attempt
            if self._attempt.done.is_set():  # at once with a spawn that runs it in this thread
                self._take(self._attempt)

    def _take(self, attempt: _Attempt) -> None:
        """An ended attempt: the new output in use, or the next attempt scheduled. With the lock held."""
        self._attempt = None
        now = self._clock.now_ns()
        inner = attempt.output
        if inner is None:
            self.failed_attempts += 1
            delay = self._backoff.next_delay()
            self._next_try_ns = now + int(delay * 1e9)
            what = attempt.error.what if attempt.error is not None else "no output"
            log.warning("%s output still unavailable (%s); next attempt in %.1f s", self.name, what, delay)
            return
        if inner.channels < self.channels:
            inner.close()
            self.failed_attempts += 1
            self._next_try_ns = now + int(self._backoff.next_delay() * 1e9)
            log.error("%s output came back with %d channels instead of %d; not using it",
                      self.name, inner.channels, self.channels)
            return
        if self._enable is not None:
            inner.set_enable(self._enable)
        self._inner = inner
        self.reconnects += 1
        self._backoff.reset()
        log.warning("%s output reconnected (every channel off); spraying resumes with the next weed",
                    self.name)

    # -- the Output protocol ---------------------------------------------------------
    def set(self, channel: int, on: bool, max_on_s: float | None = None) -> None:
        """``OutputUnavailable`` for ``on`` while the device is lost (or lost by this very command)."""
        with self._lock:
            if on:
                self.maintain()
            inner = self._inner
            if inner is None:
                if on:  # every channel is off (the controller's watchdog saw to it): nothing opened
                    raise self._unavailable(channel, "it is lost")
                return
            try:
                inner.set(channel, on, max_on_s=max_on_s)
            except WeedDetectorError as e:
                if inner.healthy:
                    raise  # a refusal by a working device (bad channel...) is a real error
                self._lose(e.what)
                if on:
                    raise self._unavailable(channel, f"it stopped answering: {e.what}") from None

    def _unavailable(self, channel: int, why: str) -> OutputUnavailable:
        return OutputUnavailable(
            f"{self.name} channel {channel} not switched on: the controller is lost ({why}); reconnecting with "
            "backoff", "check the controller's cable and power; spraying resumes once it answers again")

    def off_reason(self, channel: int) -> str | None:
        """Why ``channel`` last went off: ``controller lost`` while lost (or not switched on since)."""
        with self._lock:
            inner = self._inner
            reason = inner.off_reason(channel) if inner is not None else None
            return reason or self._lost_off[channel]

    def all_off(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.all_off()

    def state(self) -> tuple[bool, ...]:
        with self._lock:
            if self._inner is None:
                return (False,) * self.channels
            return tuple(self._inner.state())[: self.channels]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            inner, self._inner = self._inner, None
            attempt, self._attempt = self._attempt, None
        if attempt is not None:  # a reconnect under way: what it builds is closed (the thread is not waited for)
            attempt.cancel()
        if inner is not None:
            inner.close()

    def __enter__(self) -> "ReconnectingOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
