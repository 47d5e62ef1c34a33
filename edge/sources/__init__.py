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

Build a source from a :class:`~edge.sources.config.SourceConfig` (the ``[source]`` config
section, which checks its keys once) with :func:`make_source` (not started) or
:func:`open_source` (started: the device is open and, for live sources, has delivered a
first frame). Sources are context managers and ``close()`` is idempotent.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.sources.base import FrameSource, FrameTimeout
from edge.sources.config import KINDS, SourceConfig

__all__ = ["SourceConfig", "make_source", "open_source", "FrameSource", "FrameTimeout", "KINDS"]


def make_source(
    config: SourceConfig, *, infer_size: Optional[Tuple[int, int]] = None, clock: Clock = SYSTEM_CLOCK
) -> FrameSource:
    """Build the source ``config`` describes without opening it (call ``start()`` or use ``with``).

    ``infer_size`` (width, height) is the model input: a ``picamera`` has its low-res stream
    scaled by the ISP to just cover it (None = 320x240); other kinds ignore it.
    """
    if infer_size is not None and (len(infer_size) != 2 or min(infer_size) <= 0):
        raise ConfigError(
            f"infer_size must be (width, height) > 0, got {infer_size!r}",
            fix="use the model's input size, e.g. (224, 224)",
        )
    size = config.capture_size or (None, None)
    if config.kind == "camera":
        from edge.sources.camera import CameraSource

        return CameraSource(config.camera, *size, config.frame_rate, clock=clock)
    if config.kind == "stream":
        from edge.sources.stream import StreamSource

        return StreamSource(config.url, clock=clock)
    if config.kind == "picamera":
        from edge.sources.picamera import PicameraSource

        return PicameraSource(config.camera, *size, config.frame_rate, infer_size, clock=clock)
    path = os.path.expanduser(config.path)
    if config.kind == "video":
        from edge.sources.video import VideoSource

        return VideoSource(path, realtime=config.realtime, fps=config.frame_rate, loop=config.loop, clock=clock)
    from edge.sources.images import ImageFolderSource

    return ImageFolderSource(path, loop=config.loop, fps=config.frame_rate, realtime=config.realtime, clock=clock)


def open_source(
    config: SourceConfig, *, infer_size: Optional[Tuple[int, int]] = None, clock: Clock = SYSTEM_CLOCK
) -> FrameSource:
    """Build and start the source ``config`` describes; ``SourceError`` (with a fix) if it can't open."""
    source = make_source(config, infer_size=infer_size, clock=clock)
    try:
        source.start()
    except BaseException:
        source.close()
        raise
    return source
