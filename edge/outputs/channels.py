"""What every output backend shares: channel state, the on-time bound, locking, close.

``ChannelOutput`` implements the ``Output`` protocol (edge/outputs/base.py) once; a
backend subclasses it and implements four small hooks that touch the hardware:

- ``_hw_on(channel, was_on, bound_s, now_ns) -> start_ns``: switch one channel on (or
  refresh it); returns the time the on-time bound counts from (normally ``now_ns``).
- ``_hw_off(channel)``: switch one channel off.
- ``_hw_all_off()``: switch every channel off (whatever the cached state says).
- ``_hw_release()``: release the hardware (after everything is off).

and may override ``_changed(channel, on, reason)`` to observe state changes (the
dry-run output logs them). ``off_reason(channel)`` says why a channel last went off
(``set``, ``all_off``, ``expired``, ``enable switch off``, ``controller restarted``...), so
a caller that left a channel on can tell why it is off now. A backend whose device
switched everything off by itself (a serial controller that restarted) calls
``_device_reset(reason)``: the cached state then says off, as the valves are.

Every channel has an on-time bound (``max_on_s``): a channel that is not refreshed by
another ``set(ch, True)`` within the bound is switched off by a background thread, so a
hung pipeline cannot hold a valve open. The thread sleeps on a condition variable until
the earliest deadline; tests with a ``ManualClock`` call ``expire_due()`` instead of
waiting. All public methods are thread-safe (one re-entrant lock per output).

An output may be gated by an enable switch (``set_enable``, an ``Interlock`` such as
``edge.inputs.enable.EnableSwitch``): while the switch is off, ``set(ch, True)`` switches nothing
on, switches every channel off and raises ``OutputBlocked`` (counted in ``blocked``); the
switch turning off switches every channel off at once. The check runs under the output's
lock, and the switch's off-callback takes the same lock, so a valve cannot be opened
after the switch went off.

``live_outputs()`` lists the outputs of this process that have switched a channel on and
are not closed, and ``held_off(reason)`` switches one off and keeps it off while the block
runs: what ``edge-run`` needs to stop the process (Ctrl-Z, ``SIGTSTP``) with every valve
closed, whoever built the output.
"""

from __future__ import annotations

import abc
import logging
import threading
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.reconnect import LinkState
from edge.core.errors import OutputError

DEFAULT_MAX_ON_S = 2.0
MIN_MAX_ON_S = 0.05  # the shortest on-time bound ([outputs] max_on_s, a controller's max_on_ms): shorter sprays nothing

_LIVE: "weakref.WeakSet[ChannelOutput]" = weakref.WeakSet()  # outputs that have switched a channel on
_LIVE_LOCK = threading.Lock()  # taken inside an output's lock, never the other way round


def live_outputs() -> list["ChannelOutput"]:
    """The outputs of this process that have switched a channel on and are not closed."""
    with _LIVE_LOCK:
        return [out for out in _LIVE if not out.closed]


class Interlock(Protocol):
    """An enable switch as the outputs see it (``edge.inputs.enable.EnableSwitch``)."""

    def is_on(self) -> bool: ...

    def describe(self) -> str: ...

    def add_off_listener(self, callback: Callable[[], None]) -> None: ...

    def remove_off_listener(self, callback: Callable[[], None]) -> None: ...


class OutputBlocked(OutputError):
    """``set(ch, True)`` refused: the enable switch is off. Every channel is off."""


class OutputUnavailable(OutputError):
    """``set(ch, True)`` did not switch anything on: the device is gone (a serial controller
    unplugged; ``edge.outputs.reconnecting.ReconnectingOutput`` is reconnecting it). Every channel is off."""


class ChannelOutput(abc.ABC):
    """Base class of the output backends; see the module docstring."""

    #: False once the device stopped answering (the serial output sets it); a lost output is not reused
    healthy: bool = True

    name = "output"

    def __init__(
        self,
        channels: int,
        *,
        max_on_s: float | None = DEFAULT_MAX_ON_S,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ):
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise OutputError(
                f"{self.name} output needs at least one channel, got {channels!r}",
                "configure one channel per valve/relay (outputs.channels or outputs.pins)",
            )
        if max_on_s is not None and not max_on_s > 0:
            raise OutputError(
                f"max_on_s must be a positive number of seconds, got {max_on_s!r}",
                "set outputs.max_on_s to the longest a valve may stay open without a refresh, e.g. 2.0",
            )
        self.channels = channels
        self.max_on_s = max_on_s
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._log = logger if logger is not None else logging.getLogger(type(self).__module__)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._state = [False] * channels
        self._deadline: list[int | None] = [None] * channels
        self._off_reason: list[str | None] = [None] * channels
        self._closed = False
        self._expiry_thread: threading.Thread | None = None
        self.expired = 0  # channels switched off because their on-time bound elapsed
        self._enable: Interlock | None = None
        self.blocked = 0  # set(ch, True) refused because the enable switch was off

    # -- the enable switch -------------------------------------------------------------
    def set_enable(self, enable: Interlock | None) -> None:
        """Gate this output by ``enable`` (None: no gate). Off now: every channel goes off."""
        with self._lock:
            if self._enable is not None:
                self._enable.remove_off_listener(self._enable_off)
            self._enable = enable
            if enable is None:
                return
            enable.add_off_listener(self._enable_off)
            if not enable.is_on() and not self._closed:
                self._all_off_locked("enable switch off")

    @property
    def enable(self) -> Interlock | None:
        return self._enable

    def _enable_off(self) -> None:
        with self._lock:
            if not self._closed:
                self._all_off_locked("enable switch off")

    # -- the Output protocol ---------------------------------------------------------
    def set(self, channel: int, on: bool, max_on_s: float | None = None) -> None:
        ch = self._check_channel(channel)
        with self._lock:
            if self._closed:
                if not on:
                    return  # switching off a closed output is a no-op: it is all off already
                raise OutputError(
                    f"{self.name} output is closed; cannot switch channel {ch} on",
                    "this is a bug in the caller: create a new output instead of reusing a closed one",
                )
            if on:
                if self._enable is not None and not self._enable.is_on():
                    self.blocked += 1
                    if any(self._state):
                        self._all_off_locked("enable switch off")
                    raise OutputBlocked(
                        f"{self.name} channel {ch} not switched on: the {self._enable.describe()} is off",
                        "switch it on to spray (no valve opens while it is off)",
                    )
                bound = self._bound(max_on_s)
                now = self._clock.now_ns()
                was_on = self._state[ch]
                start = self._hw_on(ch, was_on, bound, now)
                reopened = was_on and not self._state[ch]  # the device reset it while switching (and it is on again)
                self._state[ch] = True
                self._deadline[ch] = None if bound is None else start + int(bound * 1e9)
                if not was_on or reopened:
                    self._changed(ch, True, "set")
                    with _LIVE_LOCK:
                        _LIVE.add(self)
                if bound is not None:
                    self._start_expiry_thread()
                    self._cond.notify_all()
            elif self._state[ch]:
                try:
                    self._hw_off(ch)
                finally:
                    self._state[ch] = False
                    self._deadline[ch] = None
                self._went_off(ch, "set")

    def all_off(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._all_off_locked("all_off")

    @contextmanager
    def held_off(self, reason: str) -> Iterator[None]:
        """Every channel off (``reason``), and none switches on until the block ends: the block holds
        the output's lock, so every other thread's ``set`` waits (``edge-run`` stops the process in it)."""
        with self._lock:
            if not self._closed:
                self._all_off_locked(reason)
            yield

    def state(self) -> tuple[bool, ...]:
        with self._lock:
            return tuple(self._state)

    def off_reason(self, channel: int) -> str | None:
        """Why ``channel`` last went off (None: it never did)."""
        with self._lock:
            return self._off_reason[self._check_channel(channel)]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            error: BaseException | None = None
            try:
                self._all_off_locked("close")
            except Exception as exc:  # release the hardware anyway, then report
                error = exc
            self._closed = True
            self._cond.notify_all()
            if self._enable is not None:
                self._enable.remove_off_listener(self._enable_off)
            try:
                self._hw_release()
            except Exception as exc:
                if error is None:
                    error = exc
                else:
                    self._log.error("%s output: releasing the hardware failed too: %s", self.name, exc)
            thread = self._expiry_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        if error is not None:
            if isinstance(error, OutputError):
                raise error
            raise OutputError(
                f"{self.name} output: switching off on close failed: {error}",
                "check the wiring/driver; the valves may still be open — cut their power",
            ) from error

    @property
    def closed(self) -> bool:
        return self._closed

    def maintain(self) -> None:
        """Nothing to keep up between frames (a reconnecting output reconnects here)."""

    def link(self) -> LinkState | None:
        """None: this output is not reconnected when lost (``ReconnectingOutput`` is)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        flags = "".join("1" if s else "0" for s in self._state)
        return f"<{type(self).__name__} channels={self.channels} state={flags}{' closed' if self._closed else ''}>"

    # -- the on-time bound -----------------------------------------------------------
    def expire_due(self, now_ns: int | None = None) -> list[int]:
        """Switch off every channel whose on-time bound has elapsed; returns them."""
        with self._lock:
            if self._closed:
                return []
            now = self._clock.now_ns() if now_ns is None else now_ns
            due = [
                ch
                for ch in range(self.channels)
                if self._state[ch] and self._deadline[ch] is not None and now >= self._deadline[ch]
            ]
            for ch in due:
                self._log.warning(
                    "%s output: channel %d switched off: on for its maximum on-time without a refresh",
                    self.name,
                    ch,
                )
                try:
                    self._hw_off(ch)
                except Exception as exc:  # keep going: the other channels must go off too
                    self._log.error("%s output: switching channel %d off failed: %s", self.name, ch, exc)
                self._state[ch] = False
                self._deadline[ch] = None
                self.expired += 1
                self._went_off(ch, "expired")
            return due

    def _bound(self, max_on_s: float | None) -> float | None:
        if max_on_s is None:
            return self.max_on_s
        if not max_on_s > 0:
            raise ValueError(f"max_on_s must be > 0, got {max_on_s!r}")
        return max_on_s if self.max_on_s is None else min(max_on_s, self.max_on_s)

    def _start_expiry_thread(self) -> None:
        if self._expiry_thread is None:
            self._expiry_thread = threading.Thread(
                target=self._expiry_loop, name=f"{self.name}-max-on", daemon=True
            )
            self._expiry_thread.start()

    def _expiry_loop(self) -> None:
        with self._cond:
            while not self._closed:
                try:
                    self.expire_due()
                except Exception:  # never let the safety thread die
                    self._log.exception("%s output: on-time check failed", self.name)
                pending = [d for s, d in zip(self._state, self._deadline) if s and d is not None]
                if pending:
                    timeout = max(0.0, (min(pending) - self._clock.now_ns()) / 1e9) + 0.001
                else:
                    timeout = None
                self._cond.wait(timeout)

    # -- helpers ---------------------------------------------------------------------
    def _check_channel(self, channel: int) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < self.channels:
            raise ValueError(f"channel must be an int in 0..{self.channels - 1}, got {channel!r}")
        return channel

    def _all_off_locked(self, reason: str) -> None:
        was = list(self._state)
        try:
            self._hw_all_off()
        finally:
            self._state = [False] * self.channels
            self._deadline = [None] * self.channels
            for ch, on in enumerate(was):
                if on:
                    self._went_off(ch, reason)

    def _went_off(self, channel: int, reason: str) -> None:
        self._off_reason[channel] = reason
        self._changed(channel, False, reason)

    def _device_reset(self, reason: str) -> list[int]:
        """The device switched every channel off by itself: the cached state follows; returns those
        that were on. Safe from any thread (takes the output's lock)."""
        with self._lock:
            was = [ch for ch, on in enumerate(self._state) if on]
            self._state = [False] * self.channels
            self._deadline = [None] * self.channels
            for ch in was:
                self._went_off(ch, reason)
            return was

    # -- hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _hw_on(self, channel: int, was_on: bool, bound_s: float | None, now_ns: int) -> int:
        """Switch ``channel`` on (or refresh it); return when its on-time bound starts."""

    @abc.abstractmethod
    def _hw_off(self, channel: int) -> None:
        """Switch ``channel`` off."""

    def _hw_all_off(self) -> None:
        for ch in range(self.channels):
            self._hw_off(ch)

    def _hw_release(self) -> None:
        pass

    def _changed(self, channel: int, on: bool, reason: str) -> None:
        pass
