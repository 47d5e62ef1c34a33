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
video       ``path``, ``realtime`` (pace at the file's own rate; one outside 0.1..1000 fps is refused:
            give ``fps``), ``loop``, ``max_image_pixels``
images      ``path``, ``fps`` (slideshow rate with ``realtime``), ``realtime``, ``loop``,
            ``max_image_pixels``
==========  ===============================================================

``max_image_pixels`` bounds the memory a file can make the detector allocate: an image
whose header declares more pixels is skipped with a warning, a video with larger frames is
refused (``SourceError``). ``camera`` is 0..1023 (an index OpenCV and V4L2 can take).

The keys a kind does not read are ignored (:attr:`SourceConfig.capture_size` and
:attr:`SourceConfig.frame_rate` say what reaches the source).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.core.schema import Finite, PathText

KINDS = ("camera", "video", "images", "stream", "picamera")
MAX_CAMERA_INDEX = 1023
MIN_FPS, MAX_FPS = 0.1, 1000.0  # [source] fps's range, and the file rates realtime playback paces by
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: a 7300x5500 photo, about 120 MB as BGR
LIVE_KINDS = ("camera", "picamera")  # capture size and frame rate are requests to a device


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["camera", "video", "images", "stream", "picamera"] = "camera"
    camera: int = Field(default=0, ge=0, le=MAX_CAMERA_INDEX)  # OpenCV camera index (/dev/videoN); picamera2 camera number
    path: PathText = ""  # video file or image folder (or one image)
    url: PathText = ""  # rtsp:// or http(s):// stream
    width: int = Field(default=640, ge=16, le=8192)  # capture size requested from a camera (the driver may round)
    height: int = Field(default=480, ge=16, le=8192)
    fps: Finite = Field(default=30.0, ge=MIN_FPS, le=MAX_FPS)  # cameras: requested rate; images: slideshow rate with realtime
    realtime: bool = False  # video files: pace at the file's frame rate; images: at fps
    loop: bool = False  # image folders / videos: start again at the end
    # images / videos: larger ones are refused before they are decoded (64 kP .. 1 GP, OpenCV's own maximum)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1 << 16, le=1 << 30)

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
