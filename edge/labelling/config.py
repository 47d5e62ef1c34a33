"""The ``[labelling]`` config section: where labelled tiles go and how tiles are grouped.

Plugged into ``edge.config.Config``; every key is documented in ``deploy/config.example.toml``;
what the keys do is in docs/labelling.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.core.schema import Finite, PathText


class LabellingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: PathText = ""  # folder of the labelled data set (one sub-folder per class); "" = labelling off
    frames: PathText = ""  # the saved frames to label; "" = [log] save_triggers
    group_distance_cm: Finite = Field(default=50.0, ge=1, le=10_000)  # ground cells of this length share a group
    group_window_s: Finite = Field(default=2.0, ge=0.1, le=3600)  # without a distance: frames in one window share one
