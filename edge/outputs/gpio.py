"""Raspberry Pi GPIO output through gpiozero: one ``DigitalOutputDevice`` per channel.

Pins are BCM numbers (GPIO17 is 17, physical pin 11). ``active_high=False`` is for
relay boards that switch on a low level. gpiozero is imported lazily (it is the ``pi``
extra); tests pass ``pin_factory=gpiozero.pins.mock.MockFactory()``.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from edge.core.errors import OutputError
from edge.outputs.pins import PinOutput

PI_EXTRA_FIX = "install it with: pip install 'weed-detector[pi]' (or use the dry-run output: outputs.kind = \"dryrun\")"


def _import_gpiozero():
    try:
        import gpiozero
        import gpiozero.exc
    except ImportError as exc:
        raise OutputError(f"GPIO output needs gpiozero, which is not installed ({exc})", PI_EXTRA_FIX) from exc
    return gpiozero


class GpioOutput(PinOutput):
    """Channel ``i`` drives BCM pin ``pins[i]``; all pins off (inactive) at construction.

    ``channel_options``: ``max_on_s``, ``clock`` and ``logger`` of
    :class:`~edge.outputs.channels.ChannelOutput`.
    """

    name = "gpio"

    def __init__(
        self,
        pins: Sequence[int],
        active_high: bool = True,
        pin_factory: Any = None,
        **channel_options: Any,
    ):
        pins = list(pins)
        if not pins:
            raise OutputError("GPIO output has no pins", "list one BCM pin per valve in outputs.pins, e.g. [17, 27]")
        for pin in pins:
            if isinstance(pin, bool) or not isinstance(pin, int) or pin < 0:
                raise OutputError(
                    f"GPIO pin {pin!r} is not a BCM pin number",
                    "use BCM numbers as integers (GPIO17 is 17, physical pin 11); run `pinout` on the Pi",
                )
        duplicates = sorted({p for p in pins if pins.count(p) > 1})
        if duplicates:
            raise OutputError(
                f"GPIO pin(s) {duplicates} listed more than once in outputs.pins",
                "give every channel its own pin",
            )
        super().__init__(pins, active_high, **channel_options)
        gpiozero = _import_gpiozero()
        self._devices: list[Any] = []
        try:
            for pin in pins:
                self._devices.append(self._open_pin(gpiozero, pin, pin_factory))
        except BaseException:
            for device in self._devices:
                try:
                    device.off()
                    device.close()
                except Exception:
                    pass
            self._devices = []
            raise
        self._log.info(
            "GPIO output on BCM pins %s (%s)", list(pins), "active-high" if self.active_high else "active-low"
        )

    def _open_pin(self, gpiozero: Any, pin: int, pin_factory: Any) -> Any:
        exc_mod = gpiozero.exc
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", exc_mod.PinFactoryFallback)
            try:
                return gpiozero.DigitalOutputDevice(
                    pin, active_high=self.active_high, initial_value=False, pin_factory=pin_factory
                )
            except exc_mod.BadPinFactory as exc:
                reasons = "; ".join(str(w.message) for w in caught)
                raise OutputError(
                    f"no GPIO library works on this machine for pin {pin} ({exc}{': ' + reasons if reasons else ''})",
                    "on a Raspberry Pi: pip install 'weed-detector[pi]' (it brings lgpio); "
                    "elsewhere use outputs.kind = \"dryrun\"",
                ) from exc
            except exc_mod.PinInvalidPin as exc:
                raise OutputError(
                    f"GPIO pin {pin} does not exist on this board ({exc})",
                    "use BCM numbers (GPIO17 is 17, physical pin 11); run `pinout` on the Pi to see them",
                ) from exc
            except exc_mod.GPIOPinInUse as exc:
                raise OutputError(
                    f"GPIO pin {pin} is already in use ({exc})",
                    "stop the other program (or edge-run instance) using it, or pick a free pin",
                ) from exc
            except PermissionError as exc:
                raise OutputError(
                    f"no permission to drive GPIO pin {pin} ({exc})",
                    "add the user to the gpio group (sudo usermod -aG gpio $USER) and log in again",
                ) from exc
            except (exc_mod.GPIOZeroError, OSError, ValueError) as exc:
                raise OutputError(
                    f"cannot set up GPIO pin {pin} as an output: {type(exc).__name__}: {exc}",
                    "check outputs.pins (BCM numbers) and that no other program or overlay uses the pin",
                ) from exc
            finally:
                for w in caught:
                    self._log.info("gpiozero: %s", w.message)

    # -- hooks ------------------------------------------------------------------------
    def _hw_all_off(self) -> None:
        errors = []
        for ch in range(self.channels):
            try:
                self._drive(ch, False)
            except OutputError as exc:  # try every pin before reporting
                errors.append(exc)
        if errors:
            raise errors[0]

    def _hw_release(self) -> None:
        for device in self._devices:
            try:
                device.close()
            except Exception as exc:
                self._log.warning("closing GPIO pin %s failed: %s", device, exc)
        self._devices = []

    def _drive(self, channel: int, on: bool) -> None:
        device = self._devices[channel]
        try:
            if on:
                device.on()
            else:
                device.off()
        except Exception as exc:
            raise OutputError(
                f"switching GPIO pin {self.pins[channel]} {'on' if on else 'off'} failed: {type(exc).__name__}: {exc}",
                "check that nothing else took over the pin; restart edge-run",
            ) from exc
