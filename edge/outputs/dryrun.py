"""Dry-run output: no hardware, every change logged ("valve 0 ON") and kept in memory.

The default output when no hardware is configured. With ``state_file`` it also appends
one JSON line per event, flushed immediately, so another process (a test sending
SIGTERM to ``edge-run``) can watch the valves::

    {"t_ns": 123, "event": "open",  "channel": null, "on": null, "state": [false, false]}
    {"t_ns": 456, "event": "set",   "channel": 0, "on": true,  "state": [true, false]}
    {"t_ns": 789, "event": "close", "channel": 0, "on": false, "state": [false, false]}
    {"t_ns": 790, "event": "closed", "channel": null, "on": null, "state": [false, false]}

``t_ns`` is the output's clock (``time.monotonic_ns()`` by default: CLOCK_MONOTONIC,
comparable between processes on one machine). ``event`` is ``open``, ``set``,
``expired`` (the on-time bound elapsed), ``all_off`` or ``close`` (a channel switched
off by that call); the last line of a cleanly closed output is ``closed`` with every
channel off. The last ``EVENTS_KEPT`` events are also kept in ``events``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import Callable

from edge.core.clock import Clock
from edge.core.errors import OutputError
from edge.outputs.channels import DEFAULT_MAX_ON_S, ChannelOutput

EVENTS_KEPT = 1000


class DryRunOutput(ChannelOutput):
    """Logs and records channel changes; drives nothing."""

    name = "dryrun"

    def __init__(
        self,
        channels: int = 1,
        log: logging.Logger | Callable[[str], object] | None = None,
        state_file: str | os.PathLike | None = None,
        *,
        max_on_s: float | None = DEFAULT_MAX_ON_S,
        clock: Clock | None = None,
        label: str = "valve",
    ):
        logger = log if isinstance(log, logging.Logger) else logging.getLogger(__name__)
        super().__init__(channels, max_on_s=max_on_s, clock=clock, logger=logger)
        if log is None or isinstance(log, logging.Logger):
            self._emit: Callable[[str], object] = logger.info
        elif callable(log):
            self._emit = log
        else:
            raise TypeError(f"log must be a logging.Logger or a callable taking a str, got {log!r}")
        self.label = label
        # (t_ns, event, channel, on), newest last
        self.events: deque[tuple[int, str, int | None, bool | None]] = deque(maxlen=EVENTS_KEPT)
        self._file = None
        self._file_failed = False
        self.state_file = Path(state_file) if state_file is not None else None
        if self.state_file is not None:
            try:
                self._file = open(self.state_file, "a", encoding="utf-8", buffering=1)
            except OSError as exc:
                raise OutputError(
                    f"cannot open the dry-run state file {str(self.state_file)!r}: {exc.strerror or exc}",
                    "pick a writable path for outputs.state_file (or leave it unset)",
                ) from exc
        self._record("open", None, None)

    # -- hooks ------------------------------------------------------------------------
    def _hw_on(self, channel: int, was_on: bool, bound_s: float | None, now_ns: int) -> int:
        return now_ns  # nothing to drive; a refresh just moves the deadline

    def _hw_off(self, channel: int) -> None:
        pass

    def _hw_all_off(self) -> None:
        pass

    def _changed(self, channel: int, on: bool, reason: str) -> None:
        suffix = " (max on-time elapsed without refresh)" if reason == "expired" else ""
        self._emit(f"{self.label} {channel} {'ON' if on else 'OFF'}{suffix}")
        self._record(reason, channel, on)

    def _hw_release(self) -> None:
        self._record("closed", None, None)
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    # -- state file ------------------------------------------------------------------
    def _record(self, event: str, channel: int | None, on: bool | None) -> None:
        t_ns = self._clock.now_ns()
        self.events.append((t_ns, event, channel, on))
        if self._file is None:
            return
        line = json.dumps(
            {"t_ns": t_ns, "event": event, "channel": channel, "on": on, "state": list(self._state)}
        )
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:
            if not self._file_failed:  # warn once, keep running: the log is not the valve
                self._file_failed = True
                self._log.warning("dry-run state file %s not writable any more: %s", self.state_file, exc)
