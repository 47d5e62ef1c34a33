"""The ``[model]`` config section: which bundle, which export, how many interpreter threads.

Plugged into ``edge.config.Config``; every key is documented in ``deploy/config.example.toml``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str = ""  # folder or shipped name; "" = the default bundle
    variant: str = ""  # "" = the bundle's main (int8) model; e.g. "float32"
    threads: int = Field(default=2, ge=1, le=64)
