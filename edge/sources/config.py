"""The ``[source]`` config section: what to read frames from, checked once.

``SourceConfig`` is the section of the TOML file (plugged into ``edge.config.Config``,
every key documented in ``deploy/config.example.toml``). Which keys a kind reads:

==========  ===============================================================
kind        keys
==========  ===============================================================
camera      ``camera`` (``/dev/video<camera>``), ``width``, ``height``, ``fps``
picamera    ``camera`` (picamera2 camera number), ``width``, ``height``, ``fps``
stream      ``url`` (RTSP/HTTP)
video       ``path``, ``realtime`` (pace at the file's own rate), ``loop``
images      ``path``, ``fps`` (slideshow rate with ``realtime``), ``realtime``, ``loop``
==========  ===============================================================

The keys a kind does not read are ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["camera", "video", "images", "stream", "picamera"] = "camera"
    camera: int = Field(default=0, ge=0)  # OpenCV camera index (/dev/videoN); picamera2 camera number
    path: str = ""  # video file or image folder (or one image)
    url: str = ""  # rtsp:// or http(s):// stream
    width: int = Field(default=640, ge=16)  # capture size requested from a camera (the driver may round)
    height: int = Field(default=480, ge=16)
    fps: float = Field(default=30.0, gt=0)  # cameras: requested rate; images: slideshow rate with realtime
    realtime: bool = False  # video files: pace at the file's frame rate; images: at fps
    loop: bool = False  # image folders / videos: start again at the end

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind in ("video", "images") and not self.path:
            raise ValueError(f"source kind '{self.kind}' needs path")
        if self.kind == "stream" and not self.url:
            raise ValueError("source kind 'stream' needs url")
        return self
