"""The ``[outputs]`` config section: one model per output kind, chosen by ``kind``.

``OutputConfig`` is a discriminated union on ``kind``: ``DryRunOutputConfig`` (the default
when ``[outputs]`` is absent), ``GpioOutputConfig``, ``JetsonOutputConfig`` and
``SerialOutputConfig``. They share the keys of ``OutputConfigBase`` (``channels``,
``max_on_s``, ``pin_numbering``); each checks its own keys. ``edge.outputs.build_output``
builds the backend of a config's type.

Reading an ``[outputs]`` table (``Config.outputs``, :func:`output_config`):

- ``kind`` defaults to ``"dryrun"``;
- a key that belongs to another kind (``pins`` under ``kind = "dryrun"``, as
  ``deploy/config.example.toml`` has) is dropped with a warning naming it, e.g.
  ``[outputs] pins, baud, heartbeat_s do not apply to kind 'dryrun'; ignored``;
- a key no kind has is an error naming it (``extra="forbid"``).

Every field is a key of the config's ``[outputs]`` table, documented by its description and
in ``deploy/config.example.toml``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationInfo, model_validator

from edge.core.schema import Finite, PathText, as_tuple, quiet
from edge.outputs.channels import DEFAULT_MAX_ON_S, MIN_MAX_ON_S
from edge.outputs.serial_out import (DEFAULT_ACK_TIMEOUT_S, DEFAULT_BAUD, DEFAULT_HEARTBEAT_S, DEFAULT_RETRIES,
                                     MIN_HEARTBEAT_S)

log = logging.getLogger(__name__)

MAX_CHANNELS = 64  # valves/boom sections one output drives (channels 0..63)


class OutputConfigBase(BaseModel):
    """The keys every output kind reads. Unknown keys are rejected; configs are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str  # each kind narrows it to its own literal (the union's tag)
    channels: int | None = Field(
        None,
        ge=1,
        le=MAX_CHANNELS,
        description="Number of valves/boom sections. dryrun: default 1. gpio/jetson: taken from pins "
        "(must equal len(pins) if given). serial: default = what the controller announces; "
        "required with acks = false.",
    )
    max_on_s: Finite = Field(
        DEFAULT_MAX_ON_S,
        ge=MIN_MAX_ON_S,
        le=60,
        description="Longest a channel stays on without being refreshed by a new 'on'; enforced by the edge "
        "and (serial) by the controller. Capped by the controller's own maximum.",
    )
    pin_numbering: Literal["BOARD", "BCM"] = Field(
        "BOARD",
        description="jetson: how pins are numbered (BOARD = physical header pin). Read with every output kind: "
        "the Jetson inputs ([safety] input_kind = jetson) number their pins the same way.",
    )


class DryRunOutputConfig(OutputConfigBase):
    """``kind = "dryrun"``: log only (``edge.outputs.dryrun``)."""

    kind: Literal["dryrun"] = "dryrun"
    state_file: PathText | None = Field(
        None,
        description="dryrun: append every change as a JSON line to this file (monotonic ns timestamps), "
        "for observing a running edge-run from another process.",
    )


class PinOutputConfig(OutputConfigBase):
    """The keys of the outputs that drive one pin per channel (gpio, jetson)."""

    pins: Annotated[tuple[Annotated[int, Field(ge=0, le=255)], ...], BeforeValidator(as_tuple)] = Field(
        (),
        max_length=MAX_CHANNELS,
        description="gpio: BCM pin numbers, one per channel (GPIO17 is 17). jetson: header pins in "
        "pin_numbering. Channel i drives pins[i].",
    )
    active_high: bool = Field(
        True, description="gpio/jetson: true if a high level opens the valve; false for active-low relay boards."
    )

    @model_validator(mode="after")
    def _check_pins(self) -> "PinOutputConfig":
        if not self.pins:
            raise ValueError(f"outputs.pins is required for kind = {self.kind!r}: one pin per valve, e.g. [17, 27]")
        if self.channels is not None and self.channels != len(self.pins):
            raise ValueError(
                f"outputs.channels = {self.channels} but outputs.pins lists {len(self.pins)} pins; "
                "drop channels or make them agree"
            )
        if len(set(self.pins)) != len(self.pins):
            raise ValueError(f"outputs.pins lists a pin twice: {list(self.pins)}")
        return self


class GpioOutputConfig(PinOutputConfig):
    """``kind = "gpio"``: Raspberry Pi pins through gpiozero (``edge.outputs.gpio``)."""

    kind: Literal["gpio"] = "gpio"


class JetsonOutputConfig(PinOutputConfig):
    """``kind = "jetson"``: Jetson header pins through Jetson.GPIO (``edge.outputs.jetson``)."""

    kind: Literal["jetson"] = "jetson"


def _check_network_url(port: str) -> None:
    """A pyserial network URL (socket://, rfc2217://) names HOST:PORT with a port of 1-65535: said here, in one line,
    instead of pyserial's internals at open ('<=' not supported ..., 'debug|info|warning|error')."""
    scheme, sep, rest = port.partition("://")
    if not sep or scheme.lower() not in ("socket", "rfc2217"):
        return
    host, colon, number = rest.split("?", 1)[0].split("/", 1)[0].rpartition(":")
    if not colon or not host.strip("[]") or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"outputs.port {port!r}: a {scheme}:// URL needs HOST:PORT with a port of 1-65535, "
                         f"e.g. '{scheme}://192.168.1.20:4000'")


class SerialOutputConfig(OutputConfigBase):
    """``kind = "serial"``: a sprayer controller over docs/serial-protocol.md (``edge.outputs.serial_out``)."""

    kind: Literal["serial"] = "serial"
    port: PathText | None = Field(
        None,
        description="serial: device path (/dev/ttyACM0, /dev/serial/by-id/...) or pyserial URL (loop://, socket://host:port).",
    )
    baud: int = Field(DEFAULT_BAUD, ge=50, le=4_000_000, description="serial: baud rate (ignored by USB CDC devices such as a Pico).")
    heartbeat_s: Finite = Field(
        DEFAULT_HEARTBEAT_S,
        ge=MIN_HEARTBEAT_S,
        le=30,
        description="serial: heartbeat period; must be at most half the controller's watchdog timeout.",
    )
    ack_timeout_s: Finite = Field(
        DEFAULT_ACK_TIMEOUT_S, ge=0.001, le=10, description="serial: how long to wait for each ACK before re-sending."
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

    @model_validator(mode="after")
    def _check_link(self) -> "SerialOutputConfig":
        if not self.port:
            raise ValueError("outputs.port is required for kind = 'serial', e.g. '/dev/ttyACM0'")
        _check_network_url(self.port)
        if not self.acks and self.channels is None:
            raise ValueError("outputs.channels is required for kind = 'serial' with acks = false")
        return self


# kind -> its config type (the union's members, in the order errors list them)
OUTPUT_TYPES: dict[str, type[OutputConfigBase]] = {
    t.model_fields["kind"].default: t
    for t in (DryRunOutputConfig, GpioOutputConfig, JetsonOutputConfig, SerialOutputConfig)
}
KINDS = tuple(OUTPUT_TYPES)
OUTPUT_KEYS = frozenset(k for t in OUTPUT_TYPES.values() for k in t.model_fields)  # what any kind takes


def _keys_for_kind(data: Any, info: ValidationInfo) -> Any:
    """An ``[outputs]`` table as written -> the keys its kind reads: ``kind`` defaults to
    dryrun, keys of another kind are dropped with a warning; unknown keys are left for the
    model to reject by name."""
    if not isinstance(data, Mapping):
        return data  # a built config, or not a table (the union says what it wants)
    data = {"kind": "dryrun", **data}
    kind = data["kind"]
    own = OUTPUT_TYPES[kind].model_fields if isinstance(kind, str) and kind in OUTPUT_TYPES else None
    if own is None:
        return data  # not a kind: the union's error lists the kinds
    foreign = [k for k in data if k not in own and k in OUTPUT_KEYS]
    if foreign and not quiet(info):
        log.warning("config: [outputs] %s do not apply to kind %r; ignored", ", ".join(foreign), kind)
    return {k: v for k, v in data.items() if k not in foreign}


OutputConfig = Annotated[
    Union[DryRunOutputConfig, GpioOutputConfig, JetsonOutputConfig, SerialOutputConfig],
    Field(discriminator="kind"),
    BeforeValidator(_keys_for_kind),
]

_ADAPTER: TypeAdapter[OutputConfigBase] = TypeAdapter(OutputConfig)


def output_config(table: Mapping[str, Any] | None = None) -> OutputConfigBase:
    """The output config of an ``[outputs]`` table (dry-run with its defaults for None).
    Raises pydantic's ``ValidationError`` (``edge.config.load_config`` turns it into a
    ``ConfigError``)."""
    return _ADAPTER.validate_python(table or {})
