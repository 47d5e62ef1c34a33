"""The ``[safety]`` config section: the loop's fail-safes and the enable switch.

``stall_timeout_s`` and ``max_spray_s`` bound the run loop (``edge.loop.runner``,
``edge.loop.actuator``); ``enable_pin`` / ``enable_pull_up`` / ``input_kind`` describe the
enable switch (``edge.inputs.enable``) that gates every output in every mode. Plugged into
``edge.config.Config``, which also reads the switch's old ``[spray]`` keys (with a warning);
every key is documented in ``deploy/config.example.toml``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.core.schema import Finite


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    stall_timeout_s: Finite = Field(default=1.0, ge=0.05, le=60)  # no frame this long -> all outputs off
    max_spray_s: Finite = Field(default=10.0, ge=0.1, le=600)  # spraying this long without a break -> off until the weed signal drops
    enable_pin: int | None = Field(default=None, ge=0, le=255)  # enable switch input; None = no switch
    enable_pull_up: bool = False  # false: switch to 3V3 (on = high); true: switch to ground (on = low)
    input_kind: Literal["auto", "gpio", "jetson"] = "auto"  # how inputs are read; auto: jetson with jetson outputs
