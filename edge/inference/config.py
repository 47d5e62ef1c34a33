"""The ``[model]`` config section (which bundle, which export, how many interpreter threads) and the
``[gate]`` section (the vegetation gate in front of the model: ``edge.inference.vegetation``).

Plugged into ``edge.config.Config``; every key is documented in ``deploy/config.example.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.core.schema import Finite, PathText

MAX_THREADS = 64  # interpreter threads a config (or edge-bench --threads) may ask for


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    bundle: PathText = ""  # folder or shipped name; "" = the default bundle
    variant: str = ""  # "" = the bundle's main (int8) model; e.g. "float32"
    threads: int = Field(default=2, ge=1, le=MAX_THREADS)
    # per-lane ([spray]) tiles: "tiles" = each tile classified at the model's input size (batched invokes);
    # "frame" = the backbone once over the frame scaled by frame_scale, features pooled per tile
    # (edge.inference.scoring; needs the bundle's frame-features export: weed-train frame-features)
    scoring: Literal["tiles", "frame"] = "tiles"
    frame_scale: Finite = Field(default=0.5, ge=0.1, le=1.0)


@dataclass(frozen=True)
class GateParams:
    """The vegetation gate's numbers (see ``edge.inference.vegetation``)."""

    exg_threshold: float  # a pixel is vegetation when its chromatic excess green 2g - r - b is above this ...
    exg_min: float  # ... and its plain excess green 2G - R - B (0..255 units) above this (0 = no minimum)
    smooth_px: int  # both are averaged over smooth_px x smooth_px pixels first (0 or 1 = not smoothed)
    min_fraction: float  # a tile (whole-frame mode: the frame) with a smaller vegetated fraction is bare ground

    def describe(self) -> str:
        return (f"excess green > {self.exg_threshold:g} and 2G-R-B > {self.exg_min:g} over {self.smooth_px}x"
                f"{self.smooth_px} px; bare below {self.min_fraction * 100:g} % vegetated")


Sensitivity = Literal["low", "medium", "high"]

# Chosen from the plant-seedlings photos: tools/check_vegetation_gate.py, docs/spray-timing.md "The vegetation gate".
# Higher sensitivity = fainter or smaller vegetation still counts as a plant (fewer weeds hidden, more bare
# ground classified).
PRESETS: dict[str, GateParams] = {
    "low": GateParams(exg_threshold=0.11, exg_min=18, smooth_px=3, min_fraction=0.003),
    "medium": GateParams(exg_threshold=0.10, exg_min=12, smooth_px=3, min_fraction=0.0015),
    "high": GateParams(exg_threshold=0.08, exg_min=10, smooth_px=3, min_fraction=0.0005),
}


class GateConfig(BaseModel):
    """``[gate]``: which tiles are bare ground, never classified and never sprayed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool | None = None  # None: on with [spray] (per lane), off without (whole frame)
    sensitivity: Sensitivity = "medium"  # the preset; the numbers below override its values one by one
    exg_threshold: Finite | None = Field(default=None, ge=0.0, le=1.0)
    exg_min: Finite | None = Field(default=None, ge=0.0, le=255.0)
    smooth_px: int | None = Field(default=None, ge=0, le=15)
    min_fraction: Finite | None = Field(default=None, ge=0.0, le=1.0)

    def params(self) -> GateParams:
        """The preset's numbers, with every number set in the config in place of the preset's."""
        explicit = {f.name: getattr(self, f.name) for f in fields(GateParams) if getattr(self, f.name) is not None}
        return replace(PRESETS[self.sensitivity], **explicit)

    def active(self, per_lane: bool) -> bool:
        """Whether the gate runs: as configured, else on in per-lane ([spray]) mode and off in whole-frame mode."""
        return per_lane if self.enabled is None else self.enabled
