"""The enable switch: a GPIO input that must be on for any nozzle to open ([spray] enable_pin).

The operator's switch on the boom (or the tractor's PTO/section-master signal) is read
through gpiozero (imported lazily; ``pin_factory`` injectable, tests use ``MockFactory``).
Turning it off cancels every planned spray and switches every output off at once (the
``on_off`` callback runs from gpiozero's edge detection, not at the next frame); while it
is off nothing is scheduled. ``close()`` is idempotent.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from edge.errors import OutputError

log = logging.getLogger(__name__)


class EnableSwitch:
    def __init__(self, pin: int, *, pull_up: bool = False, pin_factory: Any = None,
                 on_off: Callable[[], None] | None = None):
        try:
            import gpiozero
        except ImportError as exc:
            raise OutputError(f"[spray] enable_pin needs gpiozero, which is not installed ({exc})",
                              "pip install 'weed-detector[pi]' (Raspberry Pi), or remove enable_pin") from exc
        try:
            self._dev = gpiozero.DigitalInputDevice(pin, pull_up=pull_up, pin_factory=pin_factory)
        except Exception as exc:  # gpiozero raises many kinds (pin in use, no pin factory, bad pin)
            raise OutputError(f"cannot read the enable switch on GPIO{pin}: {exc}",
                              "check [spray] enable_pin (a BCM number not used by the outputs) and run on the Pi "
                              "as a user in the gpio group") from exc
        self.pin = pin
        self._on_off = on_off
        self._closed = False
        self._dev.when_deactivated = self._deactivated
        self._dev.when_activated = lambda: log.warning("enable switch on: spraying allowed")
        if not self.is_on():
            log.warning("enable switch (GPIO%d) is off: nothing sprays until it is switched on", pin)

    def _deactivated(self) -> None:
        log.warning("enable switch off: all sprays cancelled, all outputs off")
        if self._on_off is not None:
            self._on_off()

    def is_on(self) -> bool:
        return not self._closed and bool(self._dev.is_active)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._dev.close()
        except Exception as exc:
            log.warning("closing the enable switch input failed: %s", exc)
