"""``edge-run --measure-valve-lag CHANNEL``: pulse one valve at chosen lengths, log the exact command times.

The valve lag (``[spray] valve_open_lag_ms`` / ``valve_close_lag_ms``) is the time from
the valve *command* to liquid on the ground, and to the flow stopped. This helper
switches ONE channel of the configured output (the same output classes as a run: gpio,
jetson, serial or dry run, gated by the enable switch) on for each pulse length in turn,
``repeats`` times, with a pause between pulses, and records for every pulse the
monotonic time just before and just after the on and the off command (a serial output
returns after the controller's acknowledgement), plus the wall time for matching a
video by hand. The procedure (slow-motion video of the nozzle with an LED on the valve
coil, or a paper strip moved under the nozzle at a known speed) is in
docs/spray-timing.md, "Measuring the valve lag".

``strip_lag(speed_cm_s, pulses_ms, marks_cm)`` turns paper-strip marks into the
difference ``close lag - open lag`` (a pulse of P ms leaves a mark of
``v * (P - open_lag + close_lag)``) and the speed the marks imply (a check of the stated
speed).

Everything is off before, between and after the pulses, and on Ctrl-C, an error or the
enable switch going off. Timing comes from an injectable ``Clock``; tests use a
``ManualClock`` and ``wait=clock.sleep``.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import EXIT_OK, ConfigError, OutputError
from edge.core.jsonl import JsonlWriter, wall_time
from edge.outputs.channels import ChannelOutput, Interlock, OutputBlocked

log = logging.getLogger(__name__)

DEFAULT_PULSES_MS = (20.0, 50.0, 100.0, 200.0, 500.0)
MIN_PULSE_MS = 1.0  # shorter than a valve or a relay can follow
MAX_PULSE_MS = 10_000.0

PROCEDURE = """\
Valve lag: channel {channel} will be switched ON for {pulses} ms, {repeats} time(s) each, {gap:g} ms apart
({count} pulses, about {total:.1f} s). Every other channel stays off.
  Video:  film the nozzle at 240 fps (phone slow motion) with an LED wired across the valve coil (or the
          relay's indicator LED) in the picture; count frames from LED on to liquid on the ground (open lag)
          and from LED off to the spray collapsed (close lag); ms = frames x 1000 / fps. Take the median.
  Paper:  move a paper strip under the nozzle at a steady, known speed (or drive over a paper roll); the mark
          of a P ms pulse is v x (P - open lag + close lag) long: measure each mark, see docs/spray-timing.md.
  Every pulse's command times (monotonic ns) go to the log{where}."""


@dataclass(frozen=True)
class LagPulse:
    """One pulse: the commanded length and when each command was given (monotonic ns)."""

    seq: int  # 1, 2, ... in the order given
    repeat: int  # 1..repeats
    channel: int
    pulse_ms: float  # asked for
    on_cmd_ns: int  # just before the on command
    on_done_ns: int  # the on command returned (serial: acknowledged by the controller)
    off_cmd_ns: int  # just before the off command
    off_done_ns: int  # the off command returned
    wall: str  # UTC wall time of the on command, for matching a video by hand
    cut_ns: int | None = None  # the enable switch went off (closing the valve) before the off command

    @property
    def cut(self) -> bool:
        """The pulse was cut short: the valve closed before the off command (enable switch off)."""
        return self.cut_ns is not None

    @property
    def commanded_ms(self) -> float:
        """On command to off command (or to the cut): the pulse the valve was actually given."""
        return ((self.cut_ns if self.cut_ns is not None else self.off_cmd_ns) - self.on_cmd_ns) / 1e6

    @property
    def on_latency_ms(self) -> float:
        """How long the on command took (a serial round trip; ~0 for GPIO)."""
        return (self.on_done_ns - self.on_cmd_ns) / 1e6

    def record(self) -> dict:
        return {"event": "pulse", **asdict(self), "cut": self.cut, "commanded_ms": round(self.commanded_ms, 3),
                "on_latency_ms": round(self.on_latency_ms, 3)}


def parse_pulses(text: str) -> tuple[float, ...]:
    """``"20,50,100"`` -> (20.0, 50.0, 100.0); each 1..10000 ms."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"pulse lengths {text!r} are not numbers", "give milliseconds like 20,50,100,200") from None
    if not values:
        raise ConfigError("no pulse lengths given", "give milliseconds like 20,50,100,200")
    return values


def measure_valve_lag(output: ChannelOutput, channel: int, pulses_ms: Sequence[float] = DEFAULT_PULSES_MS, *,
                      repeats: int = 3, gap_ms: float = 1500.0, clock: Clock = SYSTEM_CLOCK,
                      wait: Callable[[float], object] | None = None, stop: threading.Event | None = None,
                      log_path: str | Path | None = None, prompt: Callable[[str], object] | None = None,
                      say: Callable[[str], object] = print) -> list[LagPulse]:
    """Pulse ``channel`` of ``output`` (already built, all off); returns the pulses given.

    ``wait(seconds)`` waits (default: ``stop.wait``, so a signal ends the wait at once);
    ``prompt(text)`` (e.g. ``input``) is called once before the first pulse, None = start at
    once. Raises ``OutputBlocked`` if the enable switch gating ``output`` (``output.enable``)
    goes off (everything is off then); a pulse it cut short is logged with ``"cut": true``
    and the length it really had. The log's ``end`` line is written whatever happened.
    """
    _check(output, channel, pulses_ms, repeats, gap_ms)
    stop = stop or threading.Event()
    wait = wait or stop.wait
    pulses: list[LagPulse] = []
    with ExitStack() as stack:
        lag_log = stack.enter_context(_LagLog(log_path, clock))
        stack.callback(output.all_off)
        output.all_off()
        if not _announce(channel, pulses_ms, repeats, gap_ms, log_path, prompt, say):
            stop.set()
        lag_log.emit("start", output=output.name, channel=channel, pulses_ms=list(pulses_ms), repeats=repeats,
                     gap_ms=gap_ms)
        switch = stack.enter_context(_SwitchWatch(output.enable, clock, stop))
        why: str | None = None
        try:
            _pulse_series(output, channel, pulses_ms, repeats, gap_ms, clock, wait, stop, switch, lag_log, say,
                          pulses)
        except OutputBlocked as e:
            why = "enable switch off"
            lag_log.emit("stopped", reason=why)
            say(f"stopped: {e.what}; all outputs off")
            raise
        except BaseException as e:
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e.__class__.__name__}"
            raise
        finally:
            try:
                output.all_off()
            finally:
                lag_log.emit("end", pulses=len(pulses), stopped=stop.is_set() or why is not None,
                             **({"reason": why} if why else {}))
    say(("stopped early" if stop.is_set() else "done") + f": {len(pulses)} pulse(s), all outputs off")
    return pulses


class _LagLog:
    """The valve-lag log (``--lag-log``): ``start``, a ``pulse`` line per pulse, ``stopped``, ``end``;
    every line has ``event``, ``t_mono_ns`` and ``wall``. No path: nothing is written."""

    def __init__(self, path: str | Path | None, clock: Clock):
        self._out = JsonlWriter(path or None, what="valve-lag log", goes_on="the measurement goes on without it",
                                fix="give a writable path with --lag-log", error=ConfigError, make_folder=False,
                                logger=log, clock=clock)
        self._clock = clock

    def emit(self, event: str, **fields) -> None:
        self._out.write({"event": event, "t_mono_ns": self._clock.now_ns(), "wall": wall_time(), **fields})

    def __enter__(self) -> "_LagLog":
        return self

    def __exit__(self, *exc) -> None:
        self._out.close()


def _announce(channel: int, pulses_ms: Sequence[float], repeats: int, gap_ms: float, log_path: str | Path | None,
              prompt: Callable[[str], object] | None, say: Callable[[str], object]) -> bool:
    """Say what is about to happen and, with ``prompt``, wait for the go; False: the operator cancelled."""
    n = len(pulses_ms) * repeats
    total_s = (sum(pulses_ms) * repeats + gap_ms * (n - 1)) / 1000.0
    say(PROCEDURE.format(channel=channel, pulses=", ".join(f"{p:g}" for p in pulses_ms), repeats=repeats,
                         gap=gap_ms, count=n, total=total_s, where=f" {log_path}" if log_path else
                         " (add --lag-log PATH to keep them)"))
    if prompt is None:
        return True
    answer = prompt("Start filming / the strip, then press Enter to pulse (q + Enter cancels): ")
    return not str(answer or "").strip().lower().startswith("q")


class _SwitchWatch:
    """Notes when the enable switch gating the output goes off (the output's own listener closes
    the valve at once) and ends the measurement then. ``switch`` None: no switch, nothing to watch."""

    def __init__(self, switch: Interlock | None, clock: Clock, stop: threading.Event):
        self._switch = switch
        self._clock = clock
        self._stop = stop
        self.what = switch.describe() if switch is not None else "enable switch"
        self.cut_at: list[int] = []  # when it went off (monotonic ns)

    def _off(self) -> None:
        self.cut_at.append(self._clock.now_ns())
        self._stop.set()  # the measurement stops; a default wait() ends at once

    def __enter__(self) -> "_SwitchWatch":
        if self._switch is not None:
            self._switch.add_off_listener(self._off)
        return self

    def __exit__(self, *exc) -> None:
        if self._switch is not None:
            self._switch.remove_off_listener(self._off)

    def check(self, output_name: str, channel: int) -> None:
        """Raise ``OutputBlocked`` once the switch went off, as the output would refuse the next pulse."""
        if self.cut_at:
            raise OutputBlocked(f"{output_name} channel {channel} not switched on: the {self.what} is off",
                                "switch it on and measure again")


def _pulse_series(output: ChannelOutput, channel: int, pulses_ms: Sequence[float], repeats: int, gap_ms: float,
                  clock: Clock, wait: Callable[[float], object], stop: threading.Event, switch: _SwitchWatch,
                  lag_log: _LagLog, say: Callable[[str], object], pulses: list[LagPulse]) -> None:
    """Every pulse length ``repeats`` times, ``gap_ms`` apart, until ``stop``; appends each pulse to ``pulses``.
    Raises ``OutputBlocked`` when the enable switch went off or cut a pulse short."""
    n = len(pulses_ms) * repeats
    for rep in range(1, repeats + 1):
        for p_ms in pulses_ms:
            switch.check(output.name, channel)
            if stop.is_set():
                return
            if pulses:
                wait(gap_ms / 1000.0)
                switch.check(output.name, channel)
                if stop.is_set():
                    return
            pulse = _pulse(output, channel, p_ms, len(pulses) + 1, rep, clock, wait, switch.cut_at)
            pulses.append(pulse)
            lag_log.emit(**pulse.record())
            say(f"pulse {pulse.seq:3d}/{n}: channel {channel} {p_ms:7.1f} ms asked, {pulse.commanded_ms:8.3f} ms "
                f"commanded (on command took {pulse.on_latency_ms:.3f} ms)  {pulse.wall}"
                + ("  CUT SHORT: the valve closed before the off command" if pulse.cut else ""))
            if pulse.cut:
                raise OutputBlocked(
                    f"pulse {pulse.seq} on channel {channel} was cut after {pulse.commanded_ms:.1f} ms of "
                    f"{p_ms:g}: the {switch.what} went off",
                    "switch it on and measure again (the cut pulse is marked \"cut\" in the log)")


def _check(output: ChannelOutput, channel: int, pulses_ms: Sequence[float], repeats: int, gap_ms: float) -> None:
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < output.channels:
        raise ConfigError(f"channel {channel!r} does not exist: the {output.name} output has channels "
                          f"0..{output.channels - 1}", "give one channel number (the valve to measure)")
    bound_ms = (output.max_on_s or MAX_PULSE_MS / 1000) * 1000
    for p in pulses_ms:
        if not MIN_PULSE_MS <= p <= MAX_PULSE_MS:  # also refuses nan
            raise ConfigError(f"pulse length {p:g} ms is out of range", f"use {MIN_PULSE_MS:g} to {MAX_PULSE_MS:g} ms")
        if p >= bound_ms:
            raise ConfigError(f"pulse length {p:g} ms is not below the output's on-time bound ({bound_ms:g} ms): "
                              "the output would close the valve early", "use shorter pulses or raise [outputs] "
                              "max_on_s for the measurement")
    if not 1 <= repeats <= 100:
        raise ConfigError(f"--repeats {repeats} is out of range", "use 1 to 100")
    if not 0 <= gap_ms <= 60_000:
        raise ConfigError(f"--gap-ms {gap_ms:g} is out of range", "use 0 to 60000 ms (the valve must settle)")


def _pulse(output: ChannelOutput, channel: int, pulse_ms: float, seq: int, rep: int, clock: Clock,
           wait: Callable[[float], object], cut_at: Sequence[int] = ()) -> LagPulse:
    """One pulse; ``cut_at`` collects the times the enable switch went off (it closes the valve)."""
    pulse_ns = int(pulse_ms * 1e6)
    wall = wall_time()
    on_cmd = clock.now_ns()
    still_on = True
    try:
        output.set(channel, True, max_on_s=pulse_ms / 1000.0 + 1.0)
        on_done = clock.now_ns()
        remaining = on_cmd + pulse_ns - clock.now_ns()
        if remaining > 0:
            wait(remaining / 1e9)  # timed from the on command, not from its acknowledgement
    finally:
        off_cmd = clock.now_ns()
        still_on = bool(output.state()[channel])
        output.set(channel, False)
        off_done = clock.now_ns()
    cut_ns = None
    if not still_on:  # something closed the valve before our off command: when, if the switch said so
        cut_ns = next((t for t in cut_at if on_cmd <= t <= off_cmd), off_cmd)
    return LagPulse(seq, rep, channel, pulse_ms, on_cmd, on_done, off_cmd, off_done, wall, cut_ns)


@dataclass(frozen=True)
class StripLag:
    close_minus_open_ms: float  # valve_close_lag_ms - valve_open_lag_ms
    implied_speed_cm_s: float | None  # from the slope of mark length over pulse length (None with one length)
    residual_cm: float  # RMS of the fit at the stated speed


def strip_lag(speed_cm_s: float, pulses_ms: Sequence[float], marks_cm: Sequence[float]) -> StripLag:
    """Paper strip at ``speed_cm_s``: a P ms pulse leaves ``v * (P + close - open) / 1000`` cm.

    Returns ``close - open`` (ms, averaged over the marks), the speed the marks imply (least
    squares slope, a check of the stated speed; needs two or more pulse lengths) and the fit's
    RMS residual. Marks of pulses too short to leave one are left out by the caller.
    """
    if not speed_cm_s > 0:
        raise ValueError(f"speed must be > 0 cm/s, got {speed_cm_s!r}")
    if len(pulses_ms) != len(marks_cm) or not pulses_ms:
        raise ValueError("give one mark length per pulse length")
    diffs = [m / speed_cm_s * 1000.0 - p for p, m in zip(pulses_ms, marks_cm)]
    d = sum(diffs) / len(diffs)
    resid = (sum(((p + d) * speed_cm_s / 1000.0 - m) ** 2 for p, m in zip(pulses_ms, marks_cm)) / len(diffs)) ** 0.5
    slope = None
    if len(set(pulses_ms)) >= 2:
        mp = sum(pulses_ms) / len(pulses_ms)
        mm = sum(marks_cm) / len(marks_cm)
        slope = sum((p - mp) * (m - mm) for p, m in zip(pulses_ms, marks_cm)) / sum((p - mp) ** 2 for p in pulses_ms)
        slope *= 1000.0  # cm per ms -> cm/s
    return StripLag(round(d, 3), None if slope is None else round(slope, 3), round(resid, 3))


def run(cfg, channel: int, pulses_ms: Sequence[float] = DEFAULT_PULSES_MS, *, repeats: int = 3,
        gap_ms: float = 1500.0, log_path: str | None = None, interactive: bool | None = None,
        stop: threading.Event | None = None, output: ChannelOutput | None = None) -> int:
    """``edge-run --measure-valve-lag``: build the configured output (gated by the enable switch) and pulse."""
    from edge.app.wiring import open_gated_output

    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    with ExitStack() as stack:
        out = open_gated_output(cfg, stack, "pulse a valve", output)
        try:
            measure_valve_lag(out, channel, pulses_ms, repeats=repeats, gap_ms=gap_ms, stop=stop,
                              log_path=log_path, prompt=input if interactive else None)
        except EOFError:
            raise OutputError("no answer on standard input: nothing was pulsed",
                              "run it in a terminal, or add --yes to start at once") from None
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.app.valvelag strip --speed-kmh V --pulses-ms P1,P2 --marks-cm L1,L2``: the paper-strip sum."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edge.app.valvelag",
                                description="Valve lag from paper-strip marks (pulse them with edge-run "
                                            "--measure-valve-lag; docs/spray-timing.md).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("strip", help="close lag - open lag from the mark lengths of pulses at a known speed")
    speed = s.add_mutually_exclusive_group(required=True)
    speed.add_argument("--speed-kmh", type=float, help="strip (or vehicle) speed in km/h")
    speed.add_argument("--speed-cm-s", type=float, help="strip (or vehicle) speed in cm/s")
    s.add_argument("--pulses-ms", required=True, help="commanded pulse lengths, e.g. 50,100,200 (the log's "
                                                      "commanded_ms)")
    s.add_argument("--marks-cm", required=True, help="the measured mark lengths, same order, e.g. 3.2,5.7,10.9")
    a = p.parse_args(argv)
    try:
        pulses = parse_pulses(a.pulses_ms)
        marks = tuple(float(x) for x in a.marks_cm.split(",") if x.strip())
        v = a.speed_cm_s if a.speed_cm_s is not None else a.speed_kmh * 100_000 / 3600
        r = strip_lag(v, pulses, marks)
    except (ValueError, ConfigError) as e:
        print(f"python -m edge.app.valvelag: error: {e}", file=sys.stderr)
        return 2
    implied = ("one pulse length: give two or more to check the speed" if r.implied_speed_cm_s is None else
               f"the marks imply {r.implied_speed_cm_s:.1f} cm/s ({r.implied_speed_cm_s * 0.036:.2f} km/h) vs "
               f"{v:.1f} cm/s stated")
    print(f"valve_close_lag_ms - valve_open_lag_ms = {r.close_minus_open_ms:.1f} ms (fit residual "
          f"{r.residual_cm:.2f} cm; {implied})")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
