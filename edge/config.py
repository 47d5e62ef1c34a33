"""The one TOML config file, validated on load (unknown keys rejected by name).

Each stage owns its section (the module that defines it):

============  ==========================  ===========================================
section       model                       module
============  ==========================  ===========================================
[model]       ``ModelConfig``             ``edge.inference.config``
[gate]        ``GateConfig``              ``edge.inference.config``
[source]      ``SourceConfig``            ``edge.sources.config``
[decision]    ``DecisionConfig``          ``edge.decide.config``
[outputs]     ``OutputConfig`` (by kind)  ``edge.outputs.config``
[safety]      ``SafetyConfig``            ``edge.loop.config``
[log]         ``LogConfig``               ``edge.service.config``
[service]     ``ServiceConfig``           ``edge.service.config``
[spray]       ``SprayConfig``             ``edge.spray.config``
[web]         ``WebConfig``               ``edge.web.config``
[labelling]   ``LabellingConfig``         ``edge.labelling.config``
============  ==========================  ===========================================

This module only assembles them: ``Config``, the checks across sections (input pins that
are also output pins, the old ``[spray]`` enable-switch keys), ``load_config`` and the one
error format. Every key is documented in ``deploy/config.example.toml``. Command-line flags
override the file (``edge.cli`` builds the override dict). Validation errors become one
``ConfigError`` line naming the key, e.g.::

    config /etc/weed-detector/config.toml: [outputs] pinz: unknown key — check the spelling; valid keys here: ...
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from edge.core.errors import ConfigError
from edge.core.files import FileRefused, read_regular
from edge.core.schema import QUIET, quiet
from edge.decide.config import DecisionConfig
from edge.inference.config import GateConfig, ModelConfig
from edge.labelling.config import LabellingConfig
from edge.loop.config import SafetyConfig
from edge.outputs.config import (
    OUTPUT_KEYS,
    OUTPUT_TYPES,
    DryRunOutputConfig,
    GpioOutputConfig,
    OutputConfig,
    PinOutputConfig,
)
from edge.service.config import LogConfig, ServiceConfig
from edge.sources.config import SourceConfig
from edge.spray.config import SprayConfig
from edge.web.config import WebConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Config", "load_config", "MOVED_TO_SAFETY", "MAX_CONFIG_BYTES"]


MAX_CONFIG_BYTES = 1_000_000  # a config is a few kB; anything larger is not one

# Keys that moved out of [spray] (still read there, with a warning): old key -> [safety] key
MOVED_TO_SAFETY = {"enable_pin": "enable_pin", "enable_pull_up": "enable_pull_up"}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: ModelConfig = ModelConfig()
    gate: GateConfig = GateConfig()  # the vegetation gate: on with [spray], off without, unless set
    source: SourceConfig = SourceConfig()
    decision: DecisionConfig = DecisionConfig()
    outputs: OutputConfig = DryRunOutputConfig()  # one type per kind: edge.outputs.config
    safety: SafetyConfig = SafetyConfig()
    log: LogConfig = LogConfig()
    service: ServiceConfig = ServiceConfig()
    spray: SprayConfig | None = None  # None: whole-frame decisions (see edge.spray.config)
    web: WebConfig = WebConfig()  # the live view in the browser: off unless listen is set (edge-run --web)
    labelling: LabellingConfig = LabellingConfig()  # the labelling pages' data set (edge.labelling)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any, info: ValidationInfo) -> Any:
        """``[spray] enable_pin`` / ``enable_pull_up`` (before the switch gated every mode) -> ``[safety]``."""
        if not isinstance(data, dict) or not isinstance(data.get("spray"), dict):
            return data
        spray = dict(data["spray"])
        moved = [k for k in MOVED_TO_SAFETY if k in spray]
        if not moved:
            return data
        safety = dict(data.get("safety") or {})
        for old in moved:
            new = MOVED_TO_SAFETY[old]
            value = spray.pop(old)
            if new in safety and safety[new] != value:
                raise ValueError(f"[spray] {old} = {value!r} and [safety] {new} = {safety[new]!r} disagree; "
                                 f"[spray] {old} has moved to [safety] {new}: keep only that one")
            safety[new] = value
            if not quiet(info):
                logging.getLogger(__name__).warning(
                    "config: [spray] %s has moved to [safety] %s (the enable switch now gates every output, with or "
                    "without [spray]); it is read from [spray] for now — move it", old, new)
        return {**data, "spray": spray, "safety": safety}

    @model_validator(mode="after")
    def _no_frame_debounce_with_cells(self) -> "Config":
        """With [spray] the ground cells combine views by the rule: frame counting and a hold do not apply."""
        d = self.decision
        if self.spray is not None and (d.debounce_n, d.debounce_m, d.min_hold_ms) != (1, 1, 0.0):
            raise ValueError(
                f"[decision] debounce_n/debounce_m ({d.debounce_n}/{d.debounce_m}) and min_hold_ms "
                f"({d.min_hold_ms:g}) apply to whole-frame mode only: with [spray] every ground cell is decided "
                "once from all its views (the spray rule's mean log-odds); remove them (or set 1/1 and 0), and "
                "tune [spray] cell_length_cm, margin_before_cm / margin_after_cm instead")
        return self

    @model_validator(mode="after")
    def _scoring_per_lane(self) -> "Config":
        if self.model.scoring == "frame" and self.spray is None:
            raise ValueError('[model] scoring = "frame" scores lane tiles, and this config has no [spray] section; '
                             'add [spray] (per-lane spraying) or set scoring = "tiles"')
        return self

    @model_validator(mode="after")
    def _input_pins(self) -> "Config":
        s = self.spray
        encoder = s.encoder_pin if s is not None and s.speed_source == "encoder" else None
        if encoder is not None and isinstance(self.outputs, GpioOutputConfig) and encoder in self.outputs.pins:
            raise ValueError(f"[spray] encoder_pin {encoder} is also an output pin ([outputs] pins); "
                             "wire the wheel encoder to a free GPIO pin")
        pin = self.safety.enable_pin
        if pin is None:
            return self
        if isinstance(self.outputs, PinOutputConfig) and pin in self.outputs.pins:
            raise ValueError(f"[safety] enable_pin {pin} is also an output pin ([outputs] pins); "
                             "wire the enable switch to a free GPIO pin")
        if encoder == pin:
            raise ValueError(f"[spray] encoder_pin and [safety] enable_pin are both GPIO{pin}; use two pins")
        return self


def _valid_keys(section: str | None, kind: str | None) -> str:
    """The keys of a section (of ``[outputs]`` of one kind), or the sections (``section`` None)."""
    if kind is not None:
        own = set(OUTPUT_TYPES[kind].model_fields)
        return f"{', '.join(sorted(own))} (other output kinds also take: {', '.join(sorted(OUTPUT_KEYS - own))})"
    model = Config.model_fields[section].annotation if section else Config
    return ", ".join(sorted(model.model_fields))


def _describe(e: ValidationError, origin: str) -> ConfigError:
    return _describe_error(e.errors()[0], origin)


def _key_loc(err: Any) -> tuple[list[str], str | None]:
    """The config key an error is at, as written in the file, and the ``[outputs]`` kind its location names."""
    loc = [str(x) for x in err["loc"]]
    # an [outputs] error's location holds the kind the union chose: outputs.gpio.pinz -> [outputs] pinz
    kind = loc.pop(1) if len(loc) > 1 and loc[0] == "outputs" and loc[1] in OUTPUT_TYPES else None
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # [outputs] kind is not a kind
        loc.append(err["ctx"]["discriminator"].strip("'"))
    return loc, kind


def _describe_error(err: Any, origin: str) -> ConfigError:
    loc, kind = _key_loc(err)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        *tags, last = err["ctx"].get("expected_tags", "").split(", ")
        msg = f"Input should be {', '.join(tags)} or {last}" if tags else msg
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (loc[0] if loc else "(top level)")
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(loc[0] if len(loc) > 1 else None, kind)
        return ConfigError(f"config {origin}: {where}: unknown key", f"check the spelling; valid keys here: {valid}")
    if not loc:  # a check across sections names its keys itself
        return ConfigError(f"config {origin}: {msg}", "see deploy/config.example.toml for every key")
    return ConfigError(f"config {origin}: {where}: {msg}", "see deploy/config.example.toml for every key")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _check_replaced(data: dict[str, Any], overrides: dict[str, Any], origin: str) -> None:
    """A file value that a flag replaces for this run is still checked (``-q`` over a misspelt ``[log] level``
    would hide it until the flag is dropped): ``ConfigError`` naming the file's key."""
    try:
        Config.model_validate(data, context=QUIET)  # the merged check has given the warnings already
    except ValidationError as e:
        for err in e.errors():
            loc, _ = _key_loc(err)
            node: Any = overrides
            for part in loc:
                if not isinstance(node, dict) or part not in node:
                    break
                node = node[part]
            if loc and node is not overrides and not isinstance(node, dict):
                bad = _describe_error(err, origin)
                raise ConfigError(f"{bad.what} (a command-line flag replaces it for this run)",
                                  "fix the value in the file") from None
    except RecursionError:  # reported by the merged check already
        pass


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any), apply overrides (nested dict), validate."""
    data: dict[str, Any] = {}
    origin = "(command line)"
    if path:
        p = Path(path)
        origin = str(p)
        data = file_data = _read_toml(p)
    if overrides:
        data = _merge(data, overrides)
        if path:
            origin += " + command line"
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise _describe(e, origin) from None
    except RecursionError:
        raise ConfigError(f"config {origin}: values nested too deeply to check",
                          "a config holds tables of plain values: see deploy/config.example.toml") from None
    if path and overrides:
        _check_replaced(file_data, overrides, str(path))
    return cfg


def _read_toml(p: Path) -> dict[str, Any]:
    """The TOML file at ``p``: a regular file of at most ``MAX_CONFIG_BYTES`` (a FIFO or a device such as
    ``/dev/urandom`` is refused before it is opened), UTF-8, valid TOML, not nested past Python's limit."""
    try:
        text = read_regular(p, MAX_CONFIG_BYTES).decode("utf-8-sig")  # a byte-order mark (Windows editors) dropped
    except FileRefused as e:
        if e.missing:
            raise ConfigError(f"config file {p} not found", "give an existing file with --config, "
                              "e.g. a copy of deploy/config.example.toml") from None
        raise ConfigError(f"config file {p} {e}", "give the TOML config file with --config, "
                          "e.g. a copy of deploy/config.example.toml") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} cannot be read ({e})", "save it as UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML ({e})", "fix the syntax at that line") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"config file {p} holds a value Python cannot read ({e})",
                          "a config holds plain numbers: see deploy/config.example.toml") from None
    except RecursionError:
        raise ConfigError(f"config file {p} nests arrays or tables too deeply to read",
                          "a config holds tables of plain values: see deploy/config.example.toml") from None
