"""Outputs: the valves/relays a weed decision switches, behind one interface.

``build_output(config)`` turns an output config (``edge.outputs.config``: the ``[outputs]``
table of the config, one type per ``kind``) into one of the backends, each in a file of its
own:

- ``DryRunOutputConfig`` -> ``dryrun.DryRunOutput``: logs "valve 0 ON", optional JSON-lines state file.
- ``GpioOutputConfig``   -> ``gpio.GpioOutput``: Raspberry Pi pins through gpiozero.
- ``JetsonOutputConfig`` -> ``jetson.JetsonGpioOutput``: Jetson header pins through Jetson.GPIO.
- ``SerialOutputConfig`` -> ``serial_out.SerialOutput``: a sprayer controller over the line
  protocol in docs/serial-protocol.md (reference controller: ``serial_controller.py``).

All implement ``edge.outputs.base.Output``; hardware libraries are imported only when
their backend is built. ``build_output(config, enable=switch)`` gates the output by an enable
switch (``edge.inputs.enable``): no channel opens while it is off (``OutputBlocked``).
"""

from __future__ import annotations

from typing import Any

from edge.core.clock import Clock
from edge.outputs.base import Output
from edge.outputs.channels import ChannelOutput, Interlock, OutputBlocked, OutputUnavailable
from edge.outputs.config import (
    KINDS,
    DryRunOutputConfig,
    GpioOutputConfig,
    JetsonOutputConfig,
    OutputConfig,
    OutputConfigBase,
    PinOutputConfig,
    SerialOutputConfig,
    output_config,
)
from edge.outputs.dryrun import DryRunOutput

__all__ = ["Output", "OutputConfig", "OutputConfigBase", "DryRunOutputConfig", "PinOutputConfig", "GpioOutputConfig",
           "JetsonOutputConfig", "SerialOutputConfig", "output_config", "build_output", "ChannelOutput",
           "DryRunOutput", "Interlock", "OutputBlocked", "OutputUnavailable", "KINDS"]


def build_output(
    config: OutputConfigBase | None = None,
    *,
    clock: Clock | None = None,
    pin_factory: Any = None,
    serial: Any = None,
    log: Any = None,
    enable: Interlock | None = None,
) -> ChannelOutput:
    """Build the output ``config`` describes (dry-run with one channel when ``config`` is None).

    ``pin_factory`` (gpio) and ``serial`` (an open pyserial object for kind serial) are
    injected by tests; ``clock`` drives the on-time bound; ``log`` is the dry-run's
    logger or callable; ``enable`` (an enable switch) gates every channel. Raises
    ``OutputError`` with a fix when the hardware is missing.
    """
    out = _build(config if config is not None else DryRunOutputConfig(), clock, pin_factory, serial, log)
    if enable is not None:
        out.set_enable(enable)
    return out


def _build(c: OutputConfigBase, clock: Clock | None, pin_factory: Any, serial: Any, log: Any) -> ChannelOutput:
    match c:
        case DryRunOutputConfig():
            return DryRunOutput(
                c.channels or 1,
                log=log,
                state_file=c.state_file or None,
                max_on_s=c.max_on_s,
                clock=clock,
            )
        case GpioOutputConfig():
            from edge.outputs.gpio import GpioOutput

            return GpioOutput(
                list(c.pins), active_high=c.active_high, pin_factory=pin_factory, max_on_s=c.max_on_s, clock=clock
            )
        case JetsonOutputConfig():
            from edge.outputs.jetson import JetsonGpioOutput

            return JetsonGpioOutput(
                list(c.pins), active_high=c.active_high, numbering=c.pin_numbering, max_on_s=c.max_on_s, clock=clock
            )
        case SerialOutputConfig():
            from edge.outputs.serial_out import SerialOutput

            return SerialOutput(
                c.port,
                channels=c.channels,
                baud=c.baud,
                heartbeat_s=c.heartbeat_s,
                ack_timeout_s=c.ack_timeout_s,
                retries=c.retries,
                acks=c.acks,
                max_on_s=c.max_on_s,
                serial=serial,
                clock=clock,
            )
    raise TypeError(f"build_output needs an output config (edge.outputs.config), got {type(c).__name__}")
