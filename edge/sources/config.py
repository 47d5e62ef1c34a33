"""The ``[source]`` config section: what to read frames from, checked once.

``SourceConfig`` is both the section of the TOML file (plugged into ``edge.config.Config``,
every key documented in ``deploy/config.example.toml``) and what
:func:`edge.sources.make_source` / :func:`~edge.sources.open_source` build a source from.
Which keys a kind reads:

==========  ===============================================================
kind        keys
==========  ===============================================================
camera      ``camera`` (``/dev/video<camera>``), ``width``, ``height``, ``fps``
picamera    ``camera`` (picamera2 camera number), ``width``, ``height``, ``fps``
stream      ``url`` (RTSP/HTTP)
video       ``path``, ``realtime`` (pace at the file's own rate), ``loop``
images      ``path``, ``fps`` (slideshow rate with ``realtime``), ``realtime``, ``loop``
==========  ===============================================================

The keys a kind does not read are ignored (:attr:`SourceConfig.capture_size` and
:attr:`SourceConfig.frame_rate` say what reaches the source).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.core.schema import Finite

KINDS = ("camera", "video", "images", "stream", "picamera")
LIVE_KINDS = ("camera", "picamera")  # capture size and frame rate are requests to a device


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["camera", "video", "images", "stream", "picamera"] = "camera"
    camera: int = Field(default=0, ge=0, le=63)  # OpenCV camera index (/dev/videoN); picamera2 camera number
    path: str = ""  # video file or image folder (or one image)
    url: str = ""  # rtsp:// or http(s):// stream
    width: int = Field(default=640, ge=16, le=8192)  # capture size requested from a camera (the driver may round)
    height: int = Field(default=480, ge=16, le=8192)
    fps: Finite = Field(default=30.0, ge=0.1, le=1000)  # cameras: requested rate; images: slideshow rate with realtime
    realtime: bool = False  # video files: pace at the file's frame rate; images: at fps
    loop: bool = False  # image folders / videos: start again at the end

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind in ("video", "images") and not self.path:
            raise ValueError(f"source kind '{self.kind}' needs path")
        if self.kind == "stream" and not self.url:
            raise ValueError("source kind 'stream' needs url")
        return self

    @property
    def capture_size(self) -> tuple[int, int] | None:
        """(width, height) requested from a camera; None for files and streams."""
        return (self.width, self.height) if self.kind in LIVE_KINDS else None

    @property
    def frame_rate(self) -> float | None:
        """The rate handed to the source: cameras' request, images' slideshow rate; None for
        a video (it keeps the file's own rate) and a stream."""
        return self.fps if self.kind in LIVE_KINDS or self.kind == "images" else None

    def describe(self) -> str:
        """A short human label, e.g. ``camera 0`` or ``video samples/field.avi`` (a stream's
        password is redacted)."""
        if self.kind == "stream":
            from edge.sources.stream import redact_url

            return f"stream {redact_url(self.url)}"
        return f"{self.kind} {self.camera if self.kind in LIVE_KINDS else self.path}"
