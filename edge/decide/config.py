"""The ``[decision]`` config section: the spray rule's overrides (threshold, crop veto, weed labels),
N-of-M debounce, minimum hold.

Plugged into ``edge.config.Config``; every key is documented in ``deploy/config.example.toml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.core.schema import Finite


class DecisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    threshold: Finite | None = Field(default=None, ge=0.0, le=1.0)  # None = the bundle's operating threshold
    # a view whose crop probability reaches this is never sprayed; "none" = no veto; None = the bundle's rule
    crop_veto: Annotated[Finite, Field(ge=0.0, le=1.0)] | Literal["none"] | None = None
    weed_labels: list[str] | None = None  # None = the bundle's weed labels
    debounce_n: int = Field(default=1, ge=1, le=100)  # spray when N of the last M frames are weed frames
    debounce_m: int = Field(default=1, ge=1, le=100)
    min_hold_ms: Finite = Field(default=0.0, ge=0.0, le=60_000)  # keep spraying at least this long

    @field_validator("crop_veto", mode="wrap")
    @classmethod
    def _veto_in_one_line(cls, value, handler):
        """One message for the two forms (not one per member of the union)."""
        try:
            return handler(value)
        except ValidationError as e:
            first = e.errors()[0]["msg"]
            raise ValueError(f'a crop probability (0..1) or "none": {first[:1].lower()}{first[1:]}') from None

    @model_validator(mode="after")
    def _nm(self) -> "DecisionConfig":
        if self.debounce_n > self.debounce_m:
            raise ValueError(f"debounce_n ({self.debounce_n}) must not exceed debounce_m ({self.debounce_m})")
        return self
