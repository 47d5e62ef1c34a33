"""Outputs: the valves/relays a weed decision switches, behind one interface.

``build_output(spec)`` turns an ``OutputSpec`` (the ``[outputs]`` table of the config)
into one of the backends, each in a file of its own:

- ``dryrun`` — ``DryRunOutput``: logs "valve 0 ON", optional JSON-lines state file.
- ``gpio``   — ``GpioOutput``: Raspberry Pi pins through gpiozero.
- ``jetson`` — ``JetsonGpioOutput``: Jetson header pins through Jetson.GPIO.
- ``serial`` — ``SerialOutput``: a sprayer controller over the line protocol in
  docs/serial-protocol.md (reference controller: ``serial_controller.py``).

All implement ``edge.outputs.base.Output``; hardware libraries are imported only when
their backend is built. ``build_output(spec, enable=switch)`` gates the output by an enable
switch (``edge.inputs.enable``): no channel opens while it is off (``OutputBlocked``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.core.clock import Clock
from edge.outputs.base import Output
from edge.outputs.channels import DEFAULT_MAX_ON_S, ChannelOutput, Interlock, OutputBlocked, OutputUnavailable
from edge.outputs.dryrun import DryRunOutput
from edge.outputs.serial_out import DEFAULT_ACK_TIMEOUT_S, DEFAULT_BAUD, DEFAULT_HEARTBEAT_S, DEFAULT_RETRIES

__all__ = ["Output", "OutputSpec", "build_output", "ChannelOutput", "DryRunOutput", "Interlock", "OutputBlocked",
           "OutputUnavailable", "KINDS"]

KINDS = ("dryrun", "gpio", "jetson", "serial")


class OutputSpec(BaseModel):
    """How to build the outputs; every field is a key of the config's ``[outputs]`` table.

    Unknown keys are rejected. Fields that do not apply to ``kind`` must keep their
    defaults' meaning (e.g. ``pins`` is ignored by ``serial``) — the model checks the
    combinations that would otherwise surprise (pins for gpio/jetson, port for serial).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dryrun", "gpio", "jetson", "serial"] = Field(
        "dryrun",
        description="Backend: dryrun (log only, the default), gpio (Raspberry Pi via gpiozero), "
        "jetson (Jetson.GPIO) or serial (sprayer controller, docs/serial-protocol.md).",
    )
    channels: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Number of valves/boom sections. dryrun: default 1. gpio/jetson: taken from pins "
        "(must equal len(pins) if given). serial: default = what the controller announces; "
        "required with acks = false.",
    )
    pins: tuple[int, ...] = Field(
        (),
        description="gpio: BCM pin numbers, one per channel (GPIO17 is 17). jetson: header pins in "
        "pin_numbering. Channel i drives pins[i].",
    )
    active_high: bool = Field(
        True, description="gpio/jetson: true if a high level opens the valve; false for active-low relay boards."
    )
    pin_numbering: Literal["BOARD", "BCM"] = Field(
        "BOARD", description="jetson: how pins are numbered (BOARD = physical header pin)."
    )
    port: str | None = Field(
        None,
        description="serial: device path (/dev/ttyACM0, /dev/serial/by-id/...) or pyserial URL (loop://, socket://host:port).",
    )
    baud: int = Field(DEFAULT_BAUD, gt=0, description="serial: baud rate (ignored by USB CDC devices such as a Pico).")
    heartbeat_s: float = Field(
        DEFAULT_HEARTBEAT_S,
        gt=0,
        le=30,
        description="serial: heartbeat period; must be at most half the controller's watchdog timeout.",
    )
    ack_timeout_s: float = Field(
        DEFAULT_ACK_TIMEOUT_S, gt=0, le=10, description="serial: how long to wait for each ACK before re-sending."
    )
    retries: int = Field(
        DEFAULT_RETRIES,
        ge=0,
        le=10,
        description="serial: re-sends after a timeout or damaged line before the controller counts as not answering.",
    )
    acks: bool = Field(
        True,
        description="serial: wait for acknowledgements (handshake, retries). false = send-only link "
        "(TX-only wiring, loop:// tests); needs channels.",
    )
    max_on_s: float = Field(
        DEFAULT_MAX_ON_S,
        gt=0,
        le=60,
        description="Longest a channel stays on without being refreshed by a new 'on'; enforced by the edge "
        "and (serial) by the controller. Capped by the controller's own maximum.",
    )
    state_file: str | None = Field(
        None,
        description="dryrun: append every change as a JSON line to this file (monotonic ns timestamps), "
        "for observing a running edge-run from another process.",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> "OutputSpec":
        if self.kind in ("gpio", "jetson"):
            if not self.pins:
                raise ValueError(f"outputs.pins is required for kind = {self.kind!r}: one pin per valve, e.g. [17, 27]")
            if self.channels is not None and self.channels != len(self.pins):
                raise ValueError(
                    f"outputs.channels = {self.channels} but outputs.pins lists {len(self.pins)} pins; "
                    "drop channels or make them agree"
                )
            if len(set(self.pins)) != len(self.pins):
                raise ValueError(f"outputs.pins lists a pin twice: {list(self.pins)}")
        if self.kind == "serial":
            if not self.port:
                raise ValueError("outputs.port is required for kind = 'serial', e.g. '/dev/ttyACM0'")
            if not self.acks and self.channels is None:
                raise ValueError("outputs.channels is required for kind = 'serial' with acks = false")
        return self


def build_output(
    spec: OutputSpec | None = None,
    *,
    clock: Clock | None = None,
    pin_factory: Any = None,
    serial: Any = None,
    log: Any = None,
    enable: Interlock | None = None,
) -> ChannelOutput:
    """Build the output ``spec`` describes (dry-run with one channel when ``spec`` is None).

    ``pin_factory`` (gpio) and ``serial`` (an open pyserial object for kind serial) are
    injected by tests; ``clock`` drives the on-time bound; ``log`` is the dry-run's
    logger or callable; ``enable`` (an enable switch) gates every channel. Raises
    ``OutputError`` with a fix when the hardware is missing.
    """
    out = _build(spec if spec is not None else OutputSpec(), clock, pin_factory, serial, log)
    if enable is not None:
        out.set_enable(enable)
    return out


def _build(spec: OutputSpec, clock: Clock | None, pin_factory: Any, serial: Any, log: Any) -> ChannelOutput:
    if spec.kind == "dryrun":
        return DryRunOutput(
            spec.channels or 1,
            log=log,
            state_file=os.fspath(spec.state_file) if spec.state_file else None,
            max_on_s=spec.max_on_s,
            clock=clock,
        )
    if spec.kind == "gpio":
        from edge.outputs.gpio import GpioOutput

        return GpioOutput(
            list(spec.pins), active_high=spec.active_high, pin_factory=pin_factory, max_on_s=spec.max_on_s, clock=clock
        )
    if spec.kind == "jetson":
        from edge.outputs.jetson import JetsonGpioOutput

        return JetsonGpioOutput(
            list(spec.pins),
            active_high=spec.active_high,
            numbering=spec.pin_numbering,
            max_on_s=spec.max_on_s,
            clock=clock,
        )
    from edge.outputs.serial_out import SerialOutput

    return SerialOutput(
        spec.port,
        channels=spec.channels,
        baud=spec.baud,
        heartbeat_s=spec.heartbeat_s,
        ack_timeout_s=spec.ack_timeout_s,
        retries=spec.retries,
        acks=spec.acks,
        max_on_s=spec.max_on_s,
        serial=serial,
        clock=clock,
    )
