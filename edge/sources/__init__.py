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

Every source opens and reads its device or file in a reader thread
(:mod:`edge.sources.reader`), so that a call blocked in C (a FIFO without a writer, a
stalled share or stream) never holds the loop: ``read(timeout)`` raises ``FrameTimeout``
instead, and the run's stop event ends ``start()``. Live sources keep the newest frame
(:class:`~edge.sources.latest.LatestFrameReader`), files every frame in order
(:class:`~edge.sources.reader.QueueReader`). Backends are imported only when used:
``import edge.sources`` loads neither OpenCV nor picamera2.

Build a source from a :class:`~edge.sources.config.SourceConfig` (the ``[source]`` config
section, which checks its keys once) with :func:`make_source` (not started) or
:func:`open_source` (started: the device is open and, for live sources, has delivered a
first frame). Sources are context managers and ``close()`` is idempotent.
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Tuple

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.sources.base import FrameSource, FrameTimeout
from edge.sources.config import KINDS, SourceConfig

__all__ = ["SourceConfig", "make_source", "open_source", "FrameSource", "FrameTimeout", "KINDS"]


def make_source(
    config: SourceConfig,
    *,
    infer_size: Optional[Tuple[int, int]] = None,
    clock: Clock = SYSTEM_CLOCK,
    stop: Optional[threading.Event] = None,
) -> FrameSource:
    """Build the source ``config`` describes without opening it (call ``start()`` or use ``with``).

    ``infer_size`` (width, height) is the model input: a ``picamera`` has its low-res stream
    scaled by the ISP to just cover it (None = 320x240); other kinds ignore it. ``stop`` is
    the run's stop event: set while ``start()`` waits for the device or file to open, it
    ends the wait at once (the source then reads None).
    """
    if infer_size is not None and (len(infer_size) != 2 or min(infer_size) <= 0):
        raise ConfigError(
            f"infer_size must be (width, height) > 0, got {infer_size!r}",
            fix="use the model's input size, e.g. (224, 224)",
        )
    size = config.capture_size or (None, None)
    if config.kind == "camera":
        from edge.sources.camera import CameraSource

        return CameraSource(config.camera, *size, config.frame_rate, clock=clock, stop=stop)
    if config.kind == "stream":
        from edge.sources.stream import StreamSource

        return StreamSource(config.url, clock=clock, stop=stop)
    if config.kind == "picamera":
        from edge.sources.picamera import PicameraSource

        return PicameraSource(config.camera, *size, config.frame_rate, infer_size, clock=clock, stop=stop)
    path = os.path.expanduser(config.path)
    files = {"loop": config.loop, "fps": config.frame_rate, "realtime": config.realtime, "clock": clock,
             "max_pixels": config.max_image_pixels, "stop": stop}
    if config.kind == "video":
        from edge.sources.video import VideoSource

        return VideoSource(path, **files)
    from edge.sources.images import ImageFolderSource

    return ImageFolderSource(path, **files)


def open_source(
    config: SourceConfig,
    *,
    infer_size: Optional[Tuple[int, int]] = None,
    clock: Clock = SYSTEM_CLOCK,
    stop: Optional[threading.Event] = None,
) -> FrameSource:
    """Build and start the source ``config`` describes; ``SourceError`` (with a fix) if it can't
    open. With ``stop`` set during the opening, it returns at once (the source reads None)."""
    source = make_source(config, infer_size=infer_size, clock=clock, stop=stop)
    try:
        source.start()
    except BaseException:
        source.close()
        raise
    return source
