"""The enable switch: a digital input that must be on for any output to open ([safety] enable_pin).

The operator's switch on the boom (or the tractor's PTO/section-master signal) is read
through gpiozero or Jetson.GPIO (``edge.inputs.digital``, chosen by ``[safety] input_kind``;
imported lazily, ``pin_factory`` injectable, tests use ``MockFactory``).

It is a gate at the moment a valve opens, not only when a spray is planned: an output
built with the switch (``build_output(..., enable=switch)`` or ``out.set_enable(switch)``,
see ``edge.outputs.channels``) refuses to switch a channel on while it is off
(``OutputBlocked``), in every mode (whole-frame, ``[spray]``, ``--test-outputs``,
``--measure-valve-lag``). Turning it off switches every gated output off and calls every
``add_off_listener`` callback (the spray scheduler cancels its plans) at once, from the
input library's edge detection, not at the next frame. ``close()`` is idempotent.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any, Callable

from edge.core.errors import OutputError
from edge.inputs.digital import InputSpec, close_input, input_spec, open_input
from edge.inputs.listeners import OffListeners
from edge.outputs.base import Output
from edge.outputs.channels import Interlock

log = logging.getLogger(__name__)


class EnableSwitch:
    def __init__(self, pin: int, *, pull_up: bool = False, pin_factory: Any = None,
                 on_off: Callable[[], None] | None = None, inputs: InputSpec | None = None):
        spec = inputs if inputs is not None else InputSpec(pin_factory=pin_factory)
        self._dev = open_input(pin, pull_up=pull_up, spec=spec, purpose="enable switch")
        self.pin = pin
        self.pin_name = spec.pin_name(pin)
        self.pull_up = pull_up
        self._listeners = OffListeners(*([on_off] if on_off is not None else []))
        self._closed = False
        self.switched_off = 0  # how often it was turned off during the run
        self._dev.when_deactivated = self._deactivated
        self._dev.when_activated = lambda: log.warning("%s on: spraying allowed", self.describe())
        if not self.is_on():
            log.warning("%s is off: no output opens until it is switched on", self.describe())

    def describe(self) -> str:
        return f"enable switch ({self.pin_name})"

    def add_off_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs (from the input's edge thread) whenever the switch turns off."""
        self._listeners.add(callback)

    def remove_off_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    def _deactivated(self) -> None:
        self.switched_off += 1
        log.warning("%s off: all sprays cancelled, all outputs off", self.describe())
        self._listeners.fire("after the enable switch went off")

    def is_on(self) -> bool:
        return not self._closed and bool(self._dev.is_active)

    def require_on(self, action: str) -> None:
        """Raise ``OutputError`` (exit code 6) when the switch is off: ``action`` would open a valve."""
        if not self.is_on():
            raise OutputError(f"the {self.describe()} is off: refusing to {action}",
                              "switch it on (it must be on for any valve to open), or remove [safety] enable_pin "
                              "from the config if there is no switch")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_input(self._dev, "the enable switch input")

    def __enter__(self) -> "EnableSwitch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_enable_switch(cfg: Any, stack: ExitStack | None = None, *, pin_factory: Any = None) -> EnableSwitch | None:
    """The configured enable switch (``[safety] enable_pin``), or None without one.

    With ``stack`` its ``close()`` is registered there: build the switch before the outputs
    so that the outputs (closed first) are off before the switch is released.
    """
    s = cfg.safety
    if s.enable_pin is None:
        return None
    switch = EnableSwitch(s.enable_pin, pull_up=s.enable_pull_up, inputs=input_spec(cfg, pin_factory))
    if stack is not None:
        stack.callback(switch.close)
    return switch


def gate(output: Output, switch: "Interlock | None") -> Output:
    """Make ``output`` refuse to open while ``switch`` (the enable switch, or the spray pause around it) is off
    (an output built elsewhere, e.g. by a test)."""
    if switch is not None:
        output.set_enable(switch)
    return output
