"""Dry-run output: no hardware, every change logged ("valve 0 ON") and kept in memory.

The default output when no hardware is configured. With ``state_file`` it also appends
one JSON line per event (``edge.core.jsonl``), flushed immediately, so another process (a
test sending SIGTERM to ``edge-run``) can watch the valves::

    {"t_mono_ns":123,"event":"open","channel":null,"on":null,"state":[false,false]}
    {"t_mono_ns":456,"event":"set","channel":0,"on":true,"state":[true,false]}
    {"t_mono_ns":789,"event":"close","channel":0,"on":false,"state":[false,false]}
    {"t_mono_ns":790,"event":"closed","channel":null,"on":null,"state":[false,false]}

``t_mono_ns`` is the output's clock (``time.monotonic_ns()`` by default: CLOCK_MONOTONIC,
comparable between processes on one machine), the key the other logs use too; state
files written before it was renamed say ``t_ns``: read a line's time with
``state_time_ns``, which takes either. ``event`` is ``open``, ``set``, ``expired`` (the
on-time bound elapsed), ``all_off`` or ``close`` (a channel switched off by that call);
the last line of a cleanly closed output is ``closed`` with every channel off; ``gap``
(with ``lines_lost`` and the state at that time) follows lines lost to a full disk. The
last ``EVENTS_KEPT`` events are also kept in ``events``. ``read_state_file`` reads a state
file back (also one that is still being written: a cut last line is skipped).

A state file that cannot be opened at start is an ``OutputError`` (exit 6); mid-run a
failing state file never stops the outputs (``edge.core.jsonl``).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from edge.core.clock import Clock
from edge.core.errors import OutputError
from edge.core.jsonl import JsonlWriter, read_jsonl
from edge.outputs.channels import DEFAULT_MAX_ON_S, ChannelOutput

EVENTS_KEPT = 1000


def read_state_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of a state file (``edge.core.jsonl.read_jsonl``), each an object with a time."""
    return read_jsonl(path, "dry-run state file", _state_line, fix="give a file written by --state-file")


def _state_line(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {value!r:.60}")
    t = value.get("t_mono_ns", value.get("t_ns"))
    if isinstance(t, bool) or not isinstance(t, int):
        raise ValueError(f"no time: t_mono_ns must be a whole number of nanoseconds, got {t!r:.40}")
    return value


def state_time_ns(line: Mapping[str, Any]) -> int:
    """The monotonic time of one parsed state-file line: ``t_mono_ns``, or ``t_ns`` in files
    written before the key was renamed."""
    if "t_mono_ns" in line:
        return int(line["t_mono_ns"])
    if "t_ns" in line:
        return int(line["t_ns"])
    raise KeyError(f"state-file line has no time (neither t_mono_ns nor t_ns): {dict(line)!r:.200}")


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
        self.state_file = Path(state_file) if state_file is not None else None
        self._file = JsonlWriter(self.state_file, what="dry-run state file", goes_on="the outputs go on without it",
                                 fix="pick a writable path for outputs.state_file (--state-file), or leave it unset",
                                 error=OutputError, make_folder=False, logger=self._log, clock=self._clock,
                                 gap_fields=lambda: {"channel": None, "on": None, "state": list(self._state)})
        self._record("open", None, None, at_start=True)  # a file that takes no line: exit 6 now, not warnings

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
        self._file.close()

    # -- state file ------------------------------------------------------------------
    def _record(self, event: str, channel: int | None, on: bool | None, at_start: bool = False) -> None:
        t_ns = self._clock.now_ns()
        self.events.append((t_ns, event, channel, on))
        # a failing state file warns once and the outputs go on: the log is not the valve
        self._file.write({"t_mono_ns": t_ns, "event": event, "channel": channel, "on": on,
                          "state": list(self._state)}, at_start=at_start)
