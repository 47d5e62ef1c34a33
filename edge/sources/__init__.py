"""Frame sources: one small interface (:class:`~edge.sources.base.FrameSource`), one
module per backend.

==========  ==============================  ====================================
kind        module                          behaviour
==========  ==============================  ====================================
camera      :mod:`edge.sources.camera`      OpenCV device index, newest frame wins
stream      :mod:`edge.sources.stream`      RTSP/HTTP URL via OpenCV, newest wins
picamera    :mod:`edge.sources.picamera`    picamera2 lores stream, newest wins
video       :mod:`edge.sources.video`       every frame of a file, in order
images      :mod:`edge.sources.images`      every image of a folder, by name
==========  ==============================  ====================================

Live sources share :class:`~edge.sources.latest.LatestFrameReader`. Backends are imported
only when used: ``import edge.sources`` loads neither OpenCV nor picamera2.

Build a source from a :class:`SourceSpec` with :func:`make_source` (not started) or
:func:`open_source` (started: the device is open and, for live sources, has delivered a
first frame). Sources are context managers and ``close()`` is idempotent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.sources.base import FrameSource, FrameTimeout

__all__ = ["SourceSpec", "make_source", "open_source", "FrameSource", "FrameTimeout", "KINDS"]

KINDS = ("camera", "video", "images", "stream", "picamera")


@dataclass(frozen=True)
class SourceSpec:
    """What to read frames from. The config module builds it from TOML and CLI flags.

    Fields:
        kind: ``"camera"`` (OpenCV device), ``"video"`` (file), ``"images"`` (folder or
            one image file), ``"stream"`` (RTSP/HTTP URL) or ``"picamera"`` (picamera2).
        index: camera number for ``camera`` (``/dev/video<index>``) and ``picamera``.
        path: file or folder for ``video`` and ``images``.
        url: stream address for ``stream``, e.g. ``rtsp://user:pass@192.168.1.20/stream1``.
        width, height: requested capture size for ``camera`` and ``picamera`` (a hint:
            the device may pick the nearest mode it has). None = device default
            (picamera: 640x480).
        fps: requested frame rate for ``camera``/``picamera``; for ``video`` it
            overrides the file's rate when pacing with ``realtime``; for ``images`` it is
            the slideshow rate with ``realtime``.
        realtime: ``video``/``images`` only: pace frames at ``fps`` (video: the file's
            rate) instead of as fast as possible.
        loop: ``video``/``images`` only: start again after the last frame.
        infer_size: ``picamera`` only: (width, height) of the model input; the low-res
            stream is scaled by the ISP to just cover it. None = 320x240.
    """

    kind: str
    index: int = 0
    path: Optional[str] = None
    url: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    realtime: bool = False
    loop: bool = False
    infer_size: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown source kind {self.kind!r}",
                fix="use one of: " + ", ".join(KINDS),
            )
        if self.kind in ("video", "images") and not self.path:
            flag = "--video PATH" if self.kind == "video" else "--images DIR"
            raise ConfigError(f"source kind {self.kind!r} needs a path", fix=f"give {flag}")
        if self.kind == "stream" and not self.url:
            raise ConfigError("source kind 'stream' needs a url", fix="give --stream URL")
        if self.index < 0:
            raise ConfigError(f"camera index {self.index} is negative", fix="use 0 for the first camera")
        for key in ("width", "height", "fps"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"source {key} must be positive, got {value}", fix=f"remove {key} or set it > 0")
        if self.infer_size is not None and (len(self.infer_size) != 2 or min(self.infer_size) <= 0):
            raise ConfigError(
                f"infer_size must be (width, height) > 0, got {self.infer_size!r}",
                fix="use the model's input size, e.g. (224, 224)",
            )

    def describe(self) -> str:
        """A short human label, e.g. ``camera 0`` or ``video samples/field.avi``."""
        target = {"camera": self.index, "picamera": self.index, "stream": self.url}.get(
            self.kind, self.path
        )
        if self.kind == "stream":
            from edge.sources.stream import redact_url

            target = redact_url(str(target))
        return f"{self.kind} {target}"


def make_source(spec: SourceSpec, *, clock: Clock = SYSTEM_CLOCK) -> FrameSource:
    """Build the source for ``spec`` without opening it (call ``start()`` or use ``with``)."""
    if spec.kind == "camera":
        from edge.sources.camera import CameraSource

        return CameraSource(spec.index, spec.width, spec.height, spec.fps, clock=clock)
    if spec.kind == "stream":
        from edge.sources.stream import StreamSource

        return StreamSource(spec.url, clock=clock)
    if spec.kind == "picamera":
        from edge.sources.picamera import PicameraSource

        return PicameraSource(
            spec.index, spec.width, spec.height, spec.fps, spec.infer_size, clock=clock
        )
    if spec.kind == "video":
        from edge.sources.video import VideoSource

        return VideoSource(
            os.path.expanduser(spec.path), realtime=spec.realtime, fps=spec.fps, loop=spec.loop, clock=clock
        )
    if spec.kind == "images":
        from edge.sources.images import ImageFolderSource

        return ImageFolderSource(
            os.path.expanduser(spec.path), loop=spec.loop, fps=spec.fps, realtime=spec.realtime, clock=clock
        )
    raise AssertionError(spec.kind)  # SourceSpec validated the kind


def open_source(spec: SourceSpec, *, clock: Clock = SYSTEM_CLOCK) -> FrameSource:
    """Build and start the source for ``spec``; ``SourceError`` (with a fix) if it can't open."""
    source = make_source(spec, clock=clock)
    try:
        source.start()
    except BaseException:
        source.close()
        raise
    return source
