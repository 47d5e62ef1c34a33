"""NVIDIA Jetson GPIO output through Jetson.GPIO (the ``jetson`` extra).

Pins are numbered per ``numbering``: ``"BOARD"`` (physical header pin, the default and
the least surprising on Jetson carrier boards) or ``"BCM"`` (Raspberry-Pi-compatible
names). Jetson.GPIO keeps one numbering mode per process, so every Jetson output in a
process must use the same one.
"""

from __future__ import annotations

from typing import Any, Sequence

from edge.core.errors import OutputError
from edge.outputs.pins import PinOutput

NUMBERINGS = ("BOARD", "BCM")
JETSON_EXTRA_FIX = "install it with: pip install 'weed-detector[jetson]' (or use the dry-run output: outputs.kind = \"dryrun\")"


def _import_jetson_gpio():
    try:
        import Jetson.GPIO as GPIO
    except ImportError as exc:
        raise OutputError(f"Jetson output needs Jetson.GPIO, which is not installed ({exc})", JETSON_EXTRA_FIX) from exc
    except Exception as exc:  # the library probes the board and the permissions at import
        raise OutputError(
            f"Jetson.GPIO cannot run here: {exc}",
            "run on a Jetson as a user in the gpio group (sudo usermod -aG gpio $USER, then log in again)",
        ) from exc
    return GPIO



def set_numbering(GPIO, numbering: str, purpose: str) -> None:
    """Put Jetson.GPIO in ``numbering`` ("BOARD", "BCM", ...) unless this process already chose
    another one (Jetson.GPIO has one numbering per process)."""
    mode = {"BOARD": GPIO.BOARD, "BCM": GPIO.BCM}[numbering]  # one of NUMBERINGS: checked by the callers
    GPIO.setwarnings(False)
    current = GPIO.getmode()
    if current is not None and current != mode:
        raise OutputError(
            f"Jetson.GPIO is already in {current} numbering in this process; the {purpose} use {numbering}",
            "use the same [outputs] pin_numbering for every Jetson pin",
        )
    if current is None:
        GPIO.setmode(mode)

class JetsonGpioOutput(PinOutput):
    """Channel ``i`` drives header pin ``pins[i]``; all pins inactive at construction.

    ``channel_options``: ``max_on_s``, ``clock`` and ``logger`` of
    :class:`~edge.outputs.channels.ChannelOutput`.
    """

    name = "jetson"

    def __init__(
        self,
        pins: Sequence[int],
        active_high: bool = True,
        numbering: str = "BOARD",
        **channel_options: Any,
    ):
        pins = list(pins)
        if numbering not in NUMBERINGS:
            raise OutputError(f"Jetson pin numbering {numbering!r} is unknown", f"use one of {list(NUMBERINGS)}")
        if not pins or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pins):
            raise OutputError(
                f"Jetson output needs a list of {numbering} pin numbers, got {pins!r}",
                "list one header pin per valve in outputs.pins, e.g. [29, 31]",
            )
        if len(set(pins)) != len(pins):
            raise OutputError(f"a Jetson pin is listed twice in {pins}", "give every channel its own pin")
        super().__init__(pins, active_high, **channel_options)
        self.numbering = numbering
        GPIO = _import_jetson_gpio()
        self._gpio = GPIO
        self._on_level = GPIO.HIGH if self.active_high else GPIO.LOW
        self._off_level = GPIO.LOW if self.active_high else GPIO.HIGH
        try:
            set_numbering(GPIO, numbering, "outputs")
            GPIO.setup(list(pins), GPIO.OUT, initial=self._off_level)
        except OutputError:
            raise
        except Exception as exc:  # ValueError: bad channel; RuntimeError/OSError: busy or no permission
            try:
                GPIO.cleanup(list(pins))
            except Exception:
                pass
            raise OutputError(
                f"cannot set up Jetson {numbering} pins {pins} as outputs: {type(exc).__name__}: {exc}",
                f"check outputs.pins are GPIO-capable {numbering} pins (see `jetson-io` / the carrier board "
                "pinout) and that the user is in the gpio group",
            ) from exc
        self._log.info(
            "Jetson GPIO output on %s pins %s (%s)",
            numbering,
            pins,
            "active-high" if self.active_high else "active-low",
        )

    def _hw_all_off(self) -> None:
        try:
            self._gpio.output(list(self.pins), self._off_level)
        except Exception as exc:
            raise OutputError(
                f"switching Jetson pins {list(self.pins)} off failed: {type(exc).__name__}: {exc}",
                "check that nothing else took over the pins; restart edge-run",
            ) from exc

    def _hw_release(self) -> None:
        try:
            self._gpio.cleanup(list(self.pins))
        except Exception as exc:
            self._log.warning("Jetson.GPIO cleanup of pins %s failed: %s", list(self.pins), exc)

    def _drive(self, channel: int, on: bool) -> None:
        try:
            self._gpio.output(self.pins[channel], self._on_level if on else self._off_level)
        except Exception as exc:
            raise OutputError(
                f"switching Jetson pin {self.pins[channel]} {'on' if on else 'off'} failed: {type(exc).__name__}: {exc}",
                "check that nothing else took over the pin; restart edge-run",
            ) from exc
