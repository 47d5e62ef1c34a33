"""The ``[spray]`` config section: boom geometry, lanes, valve lag, speed (docs/spray-timing.md).

Without a ``[spray]`` section edge-run keeps its whole-frame behaviour (a weed frame
switches every channel). With it, each frame is cut into lanes (one per boom section /
nozzle), each lane is classified and decided on its own, and every spray is scheduled on
the monotonic clock so it lands where the weed is when the nozzle passes over it.

The enable switch moved to ``[safety] enable_pin`` (it gates every output, with or
without ``[spray]``); ``edge.config`` still reads ``enable_pin`` / ``enable_pull_up`` here
and moves them, with a warning.

All distances are centimetres on the ground, times milliseconds, speeds km/h.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.core.schema import Finite, PathText
from edge.outputs.config import MAX_CHANNELS

LaneWidth = Annotated[Finite, Field(ge=0.1, le=5000)]  # cm
Channel = Annotated[int, Field(ge=0, le=MAX_CHANNELS - 1)]


MIN_PLANT_SHARE = 0.6  # [spray] min_plant_share's default (chosen on validation passes: docs/spray-timing.md)
MIN_PLANT_CM2 = 0.2  # [spray] min_plant_cm2's default (chosen on validation passes: docs/spray-timing.md, "The plant's size")
MAX_PLANT_CM2 = 10000.0  # ... and its upper bound
MAX_PLANT_JOIN_CM = 5.0  # [spray] plant_join_cm's upper bound
PLANT_JOIN_CM = 0.25  # [spray] plant_join_cm's default (chosen with min_plant_cm2 on the same passes)
CELL_LENGTH_CM = 5.0  # [spray] cell_length_cm's default
MAX_CELL_LENGTH_CM = 100.0  # ... and its upper bound (edge-replay: no cell's plant is longer)
LATENCY_FLOOR_MS = 20.0  # [spray] latency_floor_ms's default


class SprayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    lanes: int = Field(default=1, ge=1, le=MAX_CHANNELS)  # lanes across the image, left to right
    lane_widths_cm: list[LaneWidth] | None = None  # custom widths, left to right; None = equal lanes
    lane_channels: list[Channel] | None = None  # output channel per lane; None = lane i -> channel i
    footprint_across_cm: Finite = Field(ge=1, le=5000)  # ground width the image covers (across travel)
    footprint_along_cm: Finite = Field(ge=1, le=5000)  # ground length the image covers (along travel)
    image_top: Literal["ahead", "behind"] = "ahead"  # which image edge points in the travel direction
    tile_rows: int = Field(default=0, ge=0, le=32)  # tiles along travel per lane; 0 = auto (square-ish tiles)
    cell_length_cm: Finite = Field(default=CELL_LENGTH_CM, ge=0.5, le=MAX_CELL_LENGTH_CM)  # ground cells: one lane x this along travel
    min_plant_share: Finite = Field(default=MIN_PLANT_SHARE, ge=0, le=1)  # a cell sprays only if this share of its views saw a plant in it
    min_plant_cm2: Finite = Field(default=MIN_PLANT_CM2, ge=0, le=MAX_PLANT_CM2)  # ... and one of them saw a plant (a connected patch of vegetation, whole) of at least this many cm² on the ground
    plant_join_cm: Finite = Field(default=PLANT_JOIN_CM, ge=0, le=MAX_PLANT_JOIN_CM)  # ... parts of the mask at most this far apart on the ground are one plant
    latency_floor_ms: Finite = Field(default=LATENCY_FLOOR_MS, ge=0, le=2000)  # the least latency a cell's decision deadline keeps free
    nozzle_distance_cm: Finite = Field(ge=1, le=5000)  # from the point under the camera (image centre) back to the spray line
    margin_before_cm: Finite = Field(default=5.0, ge=0, le=500)  # start spraying this far before the tile
    margin_after_cm: Finite = Field(default=5.0, ge=0, le=500)  # ... and stop this far after it
    valve_open_lag_ms: Finite = Field(default=30.0, ge=0, le=2000)  # command -> liquid on the ground
    valve_close_lag_ms: Finite = Field(default=30.0, ge=0, le=2000)  # command -> flow stopped
    max_on_s: Finite = Field(default=10.0, ge=0.05, le=600)  # one nozzle open this long without a break -> off (latched)
    speed_source: Literal["fixed", "nmea", "encoder"] = "fixed"  # fixed, a GPS's NMEA RMC/VTG, or a wheel encoder
    speed_kmh: Finite = Field(default=0.0, ge=0, le=100)  # fixed travel speed
    gps_port: PathText = ""  # nmea: serial device or pyserial URL of the GPS receiver
    gps_baud: int = Field(default=9600, ge=50, le=4_000_000)  # nmea: baud rate (ignored by USB receivers)
    speed_stale_s: Finite = Field(default=2.0, ge=0.1, le=60)  # nmea: a speed older than this counts as unknown
    encoder_pin: int | None = Field(default=None, ge=0, le=63)  # encoder: BCM pin of the wheel pulse input
    encoder_cm_per_pulse: Finite = Field(default=0.0, ge=0, le=1000)  # encoder: travel per pulse (wheel circumference / pulses)
    encoder_pull_up: bool = True  # encoder: true for open-collector sensors that pull the pin to ground
    min_speed_kmh: Finite = Field(default=1.0, ge=0, le=100)  # below this (or stopped) nothing sprays
    log_jsonl: PathText = ""  # spray log: every planned/executed/late/missed open and close; "" = none
    log_spared: bool = True  # spray log: also a "spared" line per cell that saw a plant and was not sprayed (replay's "why")

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        # The config's error formatter lists valid keys for plain sections only; name them here.
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)} in [spray] — check the spelling; "
                                 f"valid keys: {', '.join(sorted(cls.model_fields))}")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "SprayConfig":
        if self.lane_widths_cm is not None:
            if len(self.lane_widths_cm) != self.lanes:
                raise ValueError(f"lane_widths_cm lists {len(self.lane_widths_cm)} widths for lanes = {self.lanes}; "
                                 "give one width per lane (left to right) or leave it out for equal lanes")
            total = sum(self.lane_widths_cm)
            if not math.isclose(total, self.footprint_across_cm, rel_tol=0.01):
                raise ValueError(f"lane_widths_cm add up to {total:g} cm but footprint_across_cm = "
                                 f"{self.footprint_across_cm:g}; the lanes must cover the image width")
        if self.lane_channels is not None:
            if len(self.lane_channels) != self.lanes:
                raise ValueError(f"lane_channels lists {len(self.lane_channels)} channels for lanes = {self.lanes}; "
                                 "give one output channel per lane")
        if self.speed_source == "fixed" and self.speed_kmh <= 0:
            raise ValueError(f"speed_kmh = {self.speed_kmh:g}: speed_source = 'fixed' needs your working speed, "
                             "above 0 (e.g. 6.0)")
        if self.speed_source == "fixed" and self.speed_kmh < self.min_speed_kmh:
            raise ValueError(f"speed_kmh = {self.speed_kmh:g} is below min_speed_kmh = {self.min_speed_kmh:g}: with "
                             "speed_source = 'fixed' nothing would ever spray; give your working speed, or lower "
                             "min_speed_kmh")
        if self.speed_source == "encoder" and (self.encoder_pin is None or not self.encoder_cm_per_pulse > 0):
            raise ValueError("encoder_pin and encoder_cm_per_pulse are required with speed_source = 'encoder'")
        if self.speed_source == "nmea" and not self.gps_port:
            raise ValueError("gps_port is required with speed_source = 'nmea' (e.g. /dev/ttyACM0)")
        return self

    def channel_of(self, lane: int) -> int:
        return self.lane_channels[lane] if self.lane_channels is not None else lane

    @property
    def channels_needed(self) -> int:
        return max(self.channel_of(i) for i in range(self.lanes)) + 1
