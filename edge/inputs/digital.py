"""Digital inputs (enable switch, wheel encoder): gpiozero or Jetson.GPIO, chosen by config.

``open_input(pin, pull_up=..., spec=InputSpec(...))`` returns an object with gpiozero's
``DigitalInputDevice`` interface (the part edge uses): ``is_active``, ``value``,
``when_activated``, ``when_deactivated`` (callables run from the library's edge-detection
thread) and an idempotent ``close()``.

- ``kind = "gpio"``: a real ``gpiozero.DigitalInputDevice`` (Raspberry Pi, BCM numbers;
  ``pin_factory`` injectable, tests use ``MockFactory``).
- ``kind = "jetson"``: :class:`JetsonGpioInput` on Jetson.GPIO (header pins in
  ``numbering``, BOARD by default). Jetson.GPIO **ignores** pull-up/pull-down requests, so
  the pin needs an external resistor (10 kΩ to 3V3 with ``pull_up``, to GND without);
  ``pull_up = True`` still means "active low" (a switch or open-collector sensor to ground).

The kind comes from the config (``[safety] input_kind``; ``auto`` follows ``[outputs]
kind``), never from sniffing the platform. Both libraries are imported lazily.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal

from edge.core.errors import OutputError
from edge.outputs.jetson import set_numbering

log = logging.getLogger(__name__)

InputKind = Literal["gpio", "jetson"]


@dataclass(frozen=True)
class InputSpec:
    """How inputs are read: ``kind`` (gpio = gpiozero, jetson = Jetson.GPIO), the Jetson pin
    numbering (one per process, shared with the Jetson outputs) and an injected gpiozero
    ``pin_factory`` (tests)."""

    kind: InputKind = "gpio"
    numbering: str = "BOARD"
    pin_factory: Any = None

    def pin_name(self, pin: int) -> str:
        return f"GPIO{pin}" if self.kind == "gpio" else f"{self.numbering} pin {pin}"


def input_spec(cfg: Any, pin_factory: Any = None) -> InputSpec:
    """The ``InputSpec`` of a ``Config``: ``[safety] input_kind`` (auto: jetson when the
    outputs are jetson, gpio otherwise) and ``[outputs] pin_numbering``."""
    kind = cfg.safety.input_kind
    if kind == "auto":
        kind = "jetson" if cfg.outputs.kind == "jetson" else "gpio"
    return InputSpec(kind=kind, numbering=cfg.outputs.pin_numbering, pin_factory=pin_factory)


def close_input(dev: Any, what: str) -> None:
    """Close an input opened by :func:`open_input`; a failure is logged, never raised
    (closing runs during shutdown, which must go on)."""
    try:
        dev.close()
    except Exception as exc:
        log.warning("closing %s failed: %s", what, exc)


def open_input(pin: int, *, pull_up: bool = False, spec: InputSpec | None = None, purpose: str = "input",
               bounce_ms: int | None = None) -> Any:
    """One digital input, active high (``pull_up=False``) or active low (``pull_up=True``).

    Raises ``OutputError`` naming the pin and the fix when the library is missing or the pin
    cannot be claimed.
    """
    spec = spec or InputSpec()
    if spec.kind == "jetson":
        return JetsonGpioInput(pin, pull_up=pull_up, numbering=spec.numbering, purpose=purpose, bounce_ms=bounce_ms)
    if spec.kind != "gpio":
        raise OutputError(f"input kind {spec.kind!r} is unknown", "use [safety] input_kind = \"gpio\" or \"jetson\"")
    try:
        import gpiozero
    except ImportError as exc:
        raise OutputError(f"the {purpose} on GPIO{pin} needs gpiozero, which is not installed ({exc})",
                          "pip install 'weed-detector[pi]' (Raspberry Pi); on a Jetson set [safety] "
                          "input_kind = \"jetson\"") from exc
    try:
        return gpiozero.DigitalInputDevice(pin, pull_up=pull_up, pin_factory=spec.pin_factory,
                                           bounce_time=None if bounce_ms is None else bounce_ms / 1000.0)
    except Exception as exc:  # gpiozero raises many kinds (pin in use, no pin factory, bad pin)
        raise OutputError(f"cannot read the {purpose} on GPIO{pin}: {type(exc).__name__}: {exc}",
                          "use a free BCM pin (not an output pin) and run on the Pi as a user in the gpio "
                          "group") from exc


def _import_jetson_gpio(purpose: str, pin: int):
    try:
        import Jetson.GPIO as GPIO
    except ImportError as exc:
        raise OutputError(f"the {purpose} on Jetson pin {pin} needs Jetson.GPIO, which is not installed ({exc})",
                          "pip install 'weed-detector[jetson]', or set [safety] input_kind = \"gpio\" on a "
                          "Raspberry Pi") from exc
    except Exception as exc:  # the library probes the board and the permissions at import
        raise OutputError(f"Jetson.GPIO cannot run here: {exc}",
                          "run on a Jetson as a user in the gpio group (sudo usermod -aG gpio $USER, then log "
                          "in again)") from exc
    return GPIO


class JetsonGpioInput:
    """A Jetson header pin read through Jetson.GPIO, with gpiozero's input interface.

    Edges on both sides are detected by Jetson.GPIO's own thread; each edge reads the pin
    and calls ``when_activated`` / ``when_deactivated`` when the active state changed (a
    repeated edge from contact bounce is not reported twice).
    """

    def __init__(self, pin: int, *, pull_up: bool = False, numbering: str = "BOARD", purpose: str = "input",
                 bounce_ms: int | None = None):
        if isinstance(pin, bool) or not isinstance(pin, int) or pin < 0:
            raise OutputError(f"the {purpose} needs a {numbering} pin number, got {pin!r}",
                              "give a header pin number, e.g. 15")
        if numbering not in ("BOARD", "BCM"):
            raise OutputError(f"Jetson pin numbering {numbering!r} is unknown", "use BOARD or BCM")
        GPIO = _import_jetson_gpio(purpose, pin)
        self._gpio = GPIO
        self.pin = pin
        self.numbering = numbering
        self.purpose = purpose
        self.pull_up = bool(pull_up)
        self._active_level = GPIO.LOW if pull_up else GPIO.HIGH
        self._lock = threading.Lock()
        self._closed = False
        self.when_activated: Callable[[], object] | None = None
        self.when_deactivated: Callable[[], object] | None = None
        try:
            set_numbering(GPIO, numbering, purpose)
            GPIO.setup(pin, GPIO.IN)  # no pull_up_down: Jetson.GPIO ignores it (external resistor)
            self._last = self._read()
            kw = {} if bounce_ms is None else {"bouncetime": int(bounce_ms)}
            GPIO.add_event_detect(pin, GPIO.BOTH, callback=self._edge, **kw)
        except OutputError:
            raise
        except Exception as exc:  # ValueError: not a GPIO pin; RuntimeError: busy, no permission
            try:
                GPIO.cleanup(pin)
            except Exception:
                pass
            raise OutputError(
                f"cannot read the {purpose} on Jetson {numbering} pin {pin}: {type(exc).__name__}: {exc}",
                f"use a free GPIO-capable {numbering} header pin (see the carrier board pinout) and run as a user "
                "in the gpio group") from exc
        log.info("%s on Jetson %s pin %d (active %s; Jetson.GPIO has no internal pull resistors: wire a 10 kOhm "
                 "resistor to %s)", purpose, numbering, pin, "low" if pull_up else "high",
                 "3V3" if pull_up else "GND")

    def _read(self) -> bool:
        return self._gpio.input(self.pin) == self._active_level

    def _edge(self, _channel: Any = None) -> None:
        with self._lock:
            if self._closed:
                return
            active = self._read()
            if active == self._last:
                return
            self._last = active
        cb = self.when_activated if active else self.when_deactivated
        if cb is not None:
            cb()

    @property
    def is_active(self) -> bool:
        with self._lock:
            return not self._closed and self._read()

    @property
    def value(self) -> int:
        return int(self.is_active)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._gpio.remove_event_detect(self.pin)
        except Exception as exc:
            log.debug("Jetson.GPIO remove_event_detect(%d) failed: %s", self.pin, exc)
        try:
            self._gpio.cleanup(self.pin)
        except Exception as exc:
            log.warning("Jetson.GPIO cleanup of pin %d failed: %s", self.pin, exc)

    def __enter__(self) -> "JetsonGpioInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
