"""Travel speed: where the spray scheduler learns how fast the ground moves under the boom.

A ``SpeedSource`` answers ``speed_kmh()`` with the current speed, or ``None`` when it does
not know it (no fix yet, stale reading): the caller then sprays nothing.

- ``FixedSpeed`` (``speed_source = "fixed"``): the driver holds a known speed.
- ``NmeaSpeed`` (``speed_source = "nmea"``): a GPS receiver on a serial port (pyserial,
  imported lazily) sending NMEA 0183 RMC and/or VTG sentences; a reader thread keeps the
  newest speed and position. A speed older than ``stale_s`` counts as unknown, with a
  warning; so does a position older than ``stale_s``, timed by the RMC sentences alone
  (a VTG carries a speed but no position, so it does not refresh the position). A port
  that fails (GPS unplugged) makes the speed unknown at once and is reopened with backoff
  (``edge.core.reconnect.Backoff``); the speed returns with the next valid sentence.
  ``parse_nmea`` is the pure parser.
- ``WheelEncoderSpeed`` (``speed_source = "encoder"``): pulses of a wheel sensor on a GPIO
  input (gpiozero); no pulses within ``stale_s`` = stopped.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.spray.config import SprayConfig
from edge.core.errors import ConfigError, OutputError, SourceError
from edge.inputs.digital import InputSpec, close_input, open_input
from edge.core.reconnect import Backoff, LinkState

log = logging.getLogger(__name__)

KNOTS_TO_KMH = 1.852
MAX_GPS_KMH = 500.0  # a GPS speed above this on a ground machine is a glitch: that sentence's speed is unknown


class SpeedSource(Protocol):
    name: str

    def speed_kmh(self) -> float | None:
        """Current travel speed in km/h, or None when unknown or stale."""

    def position(self) -> tuple[float, float] | None:
        """(lat, lon) where the source knows it (a GPS), else None."""

    def link(self) -> LinkState | None:
        """The GPS port's ``LinkState`` (it is reopened when unplugged); None for sources with no link."""

    def close(self) -> None: ...


class _NoPositionNoLink:
    """For speed sources that know no position and have no link to lose."""

    def position(self) -> tuple[float, float] | None:
        return None

    def link(self) -> LinkState | None:
        return None


class FixedSpeed(_NoPositionNoLink):
    name = "fixed"

    def __init__(self, kmh: float):
        if not kmh >= 0:
            raise ConfigError(f"fixed speed {kmh!r} km/h is invalid", "set [spray] speed_kmh to your working speed, e.g. 6.0")
        self.kmh = float(kmh)

    def speed_kmh(self) -> float | None:
        return self.kmh

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class NmeaFix:
    sentence: str  # "RMC" or "VTG"
    speed_kmh: float | None  # None: the receiver says it has no valid fix
    lat: float | None = None  # degrees, + = north (RMC only)
    lon: float | None = None  # degrees, + = east


def _checksum_ok(body: str, given: str) -> bool:
    x = 0
    for ch in body:
        x ^= ord(ch)
    try:
        return int(given[:2], 16) == x
    except ValueError:
        return False


def _degrees(value: str, hemi: str, deg_digits: int) -> float | None:
    """ddmm.mmm (latitude, 2 degree digits) or dddmm.mmm (longitude, 3); None unless a real position."""
    if not value or hemi not in "NSEW" or not hemi:
        return None
    minutes = _float(value[deg_digits:])
    try:
        deg = int(value[:deg_digits])
    except ValueError:
        return None
    if minutes is None or minutes >= 60 or deg < 0 or deg + minutes / 60.0 > (90 if deg_digits == 2 else 180):
        return None
    deg += minutes / 60.0
    return -deg if hemi in "SW" else deg


def _float(value: str) -> float | None:
    """A finite number >= 0 ("nan", "inf", "1e400" and negatives are not)."""
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) and v >= 0 else None


def _kmh(value: float | None, factor: float = 1.0) -> float | None:
    """A ground speed in km/h, or None when the sentence's figure cannot be one (above ``MAX_GPS_KMH``)."""
    if value is None:
        return None
    kmh = value * factor
    return kmh if kmh <= MAX_GPS_KMH else None


def parse_nmea(line: str | bytes) -> NmeaFix | None:
    """An RMC or VTG sentence (any talker: GP, GN, GL, ...) -> its speed; None for anything else.

    The checksum is required and checked; a damaged line, another sentence type or a
    malformed field gives None. A sentence that says "no fix" (RMC status V, FAA mode N)
    gives a fix with ``speed_kmh = None``.
    """
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    line = line.strip()
    if not line.startswith("$") or "*" not in line:
        return None
    body, _, given = line[1:].partition("*")
    if not _checksum_ok(body, given):
        return None
    f = body.split(",")
    kind = f[0][2:] if len(f[0]) == 5 else ""
    if kind == "RMC" and len(f) >= 10:
        valid = f[2] == "A" and not (len(f) > 12 and f[12][:1] == "N")
        kmh = _kmh(_float(f[7]), KNOTS_TO_KMH) if f[7] else None
        lat, lon = _degrees(f[3], f[4], 2), _degrees(f[5], f[6], 3)
        return NmeaFix("RMC", kmh if valid else None, lat if valid else None, lon if valid else None)
    if kind == "VTG" and len(f) >= 9:
        valid = not (len(f) > 9 and f[9][:1] == "N")
        if f[7]:  # km/h given: that figure or nothing (a glitch there is not mended by the knots field)
            kmh = _kmh(_float(f[7]))
        else:
            kmh = _kmh(_float(f[5]), KNOTS_TO_KMH) if f[5] else None
        return NmeaFix("VTG", kmh if valid else None)
    return None


class NmeaSpeed:
    """Speed (and position) from a GPS's NMEA sentences on a serial port; see the module docstring."""

    name = "nmea"

    def __init__(self, port: str, baud: int = 9600, *, stale_s: float = 2.0, clock: Clock = SYSTEM_CLOCK,
                 on_fix: Callable[[NmeaFix], None] | None = None, backoff: Backoff | None = None):
        if not stale_s > 0:
            raise ConfigError(f"speed_stale_s {stale_s!r} must be > 0", "use e.g. 2.0 (seconds)")
        self.port, self.baud = port, baud
        self.backoff = backoff or Backoff(0.5, 5.0)
        self.stale_ns = int(stale_s * 1e9)
        self.clock = clock
        self.on_fix = on_fix
        self._lock = threading.Lock()
        self._kmh: float | None = None
        self._t_ns: int | None = None
        self._pos: tuple[float, float] | None = None
        self._pos_t_ns: int | None = None  # when the last RMC (the only sentence with a position) arrived
        self._stale_warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: Any = None
        self.sentences = 0
        self.rejected = 0  # lines that were not a valid RMC/VTG sentence
        self.losses = 0  # the port failed (GPS unplugged): speed unknown until it is reopened
        self.reconnects = 0
        self.failed_attempts = 0
        self._fails_in_row = 0

    def feed(self, line: str | bytes) -> NmeaFix | None:
        fix = parse_nmea(line)
        if fix is None:
            self.rejected += 1
            return None
        with self._lock:
            self.sentences += 1
            self._kmh = fix.speed_kmh
            self._t_ns = self.clock.now_ns()
            if fix.sentence == "RMC":  # a VTG (speed only) must not make an old position look current
                valid = fix.lat is not None and fix.lon is not None
                self._pos = (fix.lat, fix.lon) if valid else None
                self._pos_t_ns = self._t_ns
        if self.on_fix is not None:
            self.on_fix(fix)
        return fix

    def speed_kmh(self) -> float | None:
        with self._lock:
            if self._t_ns is None:
                return None
            age = self.clock.now_ns() - self._t_ns
            if age > self.stale_ns:
                if not self._stale_warned:
                    self._stale_warned = True
                    log.warning("GPS speed on %s is %.1f s old: treated as unknown, nothing sprays until it returns",
                                self.port, age / 1e9)
                return None
            self._stale_warned = False
            return self._kmh

    def position(self) -> tuple[float, float] | None:
        with self._lock:
            if self._pos_t_ns is None or self.clock.now_ns() - self._pos_t_ns > self.stale_ns:
                return None
            return self._pos

    @property
    def connected(self) -> bool:
        return self._serial is not None

    def link(self) -> LinkState:
        return LinkState(self.connected, self.losses, self.reconnects)

    def _open(self) -> Any:
        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a core dependency
            raise SourceError(f"GPS speed needs pyserial ({exc})", "pip install pyserial") from exc
        try:
            return serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.2)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SourceError(f"cannot open the GPS port {self.port!r}: {exc}",
                              "check [spray] gps_port (e.g. /dev/ttyACM0, /dev/serial0) and that you are in the "
                              "dialout group") from exc

    def start(self) -> "NmeaSpeed":
        """Open the port (a missing port at start-up is a ``SourceError``) and start the reader thread."""
        self._serial = self._open()
        self._thread = threading.Thread(target=self._read_loop, name="gps-nmea", daemon=True)
        self._thread.start()
        return self

    def _lose(self, port: Any, why: object) -> None:
        """The port failed (unplugged): the speed is unknown at once, the port is closed and reopened later."""
        with self._lock:
            self._serial = None
            self._kmh, self._t_ns, self._pos, self._pos_t_ns = None, None, None, None
        self.losses += 1
        log.warning("GPS port %s failed (%s): speed unknown, nothing sprays; reopening it with backoff",
                    self.port, why)
        try:
            port.close()
        except Exception as exc:  # the device is gone; closing may fail too
            log.debug("closing the lost GPS port failed: %s", exc)

    def _reopen(self) -> None:
        """One reconnect attempt; waits (interruptibly) for the backoff's delay when it fails."""
        try:
            port = self._open()
        except SourceError as exc:
            self.failed_attempts += 1
            self._fails_in_row += 1
            delay = self.backoff.next_delay()
            if self._fails_in_row == 1 or delay >= self.backoff.max_s:  # not a line per quick retry
                log.warning("GPS port %s still unavailable (%s); next attempt in %g s", self.port,
                            exc.__cause__ or exc.what, delay)
            self._stop.wait(delay)
            return
        if self._stop.is_set():  # closed meanwhile: do not leak the port
            port.close()
            return
        self._serial = port
        self.reconnects += 1
        self._fails_in_row = 0
        self.backoff.reset()
        log.warning("GPS port %s reopened; spraying resumes with its next valid fix", self.port)

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                self._reopen()
                continue
            try:
                line = port.readline()
            except Exception as exc:  # unplugged: pyserial raises SerialException (an OSError on some ports)
                if self._stop.is_set():
                    return
                self._lose(port, exc)
                self.backoff.reset()
                self._stop.wait(self.backoff.next_delay())
                continue
            if line:
                self.feed(line)

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=1.0)
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass


class WheelEncoderSpeed(_NoPositionNoLink):
    """Speed from a wheel's pulse sensor on a GPIO input (gpiozero, imported lazily).

    The speed is the distance of the pulses within the last ``stale_s`` divided by the time
    they span; fewer than two pulses in that time means (nearly) stopped: 0 km/h, so
    nothing sprays. Pulses are timestamped on the injected monotonic clock.
    """

    name = "encoder"

    def __init__(self, pin: int, cm_per_pulse: float, *, stale_s: float = 2.0, pull_up: bool = True,
                 clock: Clock = SYSTEM_CLOCK, pin_factory: Any = None, inputs: InputSpec | None = None):
        if not cm_per_pulse > 0:
            raise ConfigError(f"encoder_cm_per_pulse {cm_per_pulse!r} must be > 0",
                              "wheel circumference in cm / pulses per revolution")
        try:  # gpiozero or Jetson.GPIO, as [safety] input_kind says
            self._dev = open_input(pin, pull_up=pull_up, spec=inputs or InputSpec(pin_factory=pin_factory),
                                   purpose="wheel encoder")
        except OutputError as exc:
            raise SourceError(exc.what, f"{exc.fix}; check [spray] encoder_pin, or use speed_source = 'fixed'") from exc
        self.pin, self.cm_per_pulse = pin, cm_per_pulse
        self.window_ns = int(stale_s * 1e9)
        self.clock = clock
        self._lock = threading.Lock()
        self._pulses: deque[int] = deque()
        self.pulses = 0
        self._closed = False
        self._dev.when_activated = self._pulse

    def _pulse(self) -> None:
        now = self.clock.now_ns()
        with self._lock:
            self.pulses += 1
            self._pulses.append(now)
            while self._pulses and now - self._pulses[0] > self.window_ns:
                self._pulses.popleft()

    def speed_kmh(self) -> float | None:
        now = self.clock.now_ns()
        with self._lock:
            recent = [t for t in self._pulses if now - t <= self.window_ns]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return 0.0
        cm_s = (len(recent) - 1) * self.cm_per_pulse / ((recent[-1] - recent[0]) / 1e9)
        return cm_s * 3600 / 100_000

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_input(self._dev, "the wheel encoder input")


def build_speed_source(cfg: SprayConfig, *, backoff: Backoff | None = None,
                       inputs: InputSpec | None = None) -> SpeedSource:
    """The configured speed source, started; ``backoff`` paces reopening a lost GPS port."""
    if cfg.speed_source == "fixed":
        return FixedSpeed(cfg.speed_kmh)
    if cfg.speed_source == "nmea":
        return NmeaSpeed(cfg.gps_port, cfg.gps_baud, stale_s=cfg.speed_stale_s, backoff=backoff).start()
    if cfg.speed_source == "encoder" and cfg.encoder_pin is not None:
        return WheelEncoderSpeed(cfg.encoder_pin, cfg.encoder_cm_per_pulse, stale_s=cfg.speed_stale_s,
                                 pull_up=cfg.encoder_pull_up, inputs=inputs)
    raise ConfigError(f"[spray] speed_source {cfg.speed_source!r} is not supported", 'use "fixed"')
