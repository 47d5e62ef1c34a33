"""A video file (``--video PATH``).

As fast as possible by default (benchmarks, offline runs): every frame in order,
``t_capture_ns`` the clock's time when ``read()`` returns it. With ``realtime=True`` the file
plays like a camera, so that timing-dependent stages (debounce, hold, valve scheduling)
see what they would see in the field: frame ``i`` is captured at ``i / fps`` after the
first (``t_capture_ns`` is that due time, not the time it was read), and when the
pipeline is slower than the file, a frame already superseded by a newer due one is
dropped and counted, as the newest-frame-wins camera reader does.

The file is opened and decoded in the reader thread of
:class:`~edge.sources._files.FileSource` (a FIFO or a stalled share cannot hang the
loop). A video whose frames are larger than ``max_pixels`` (its stated width x height)
is refused when it is opened, before a frame is converted.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Optional

from edge.core.errors import SourceError
from edge.sources._files import FileSource
from edge.sources.base import FrameTimeout
from edge.sources.config import MAX_FPS, MIN_FPS
from edge.sources.pacing import Pacer
from edge.sources.reader import EndOfStream

log = logging.getLogger(__name__)

_FORMATS_FIX = (
    "check that it is a video file (`ffprobe PATH`); OpenCV reads e.g. AVI/MJPG and MP4/H.264 — "
    "re-encode others with `ffmpeg -i IN -c:v mjpeg -q:v 3 OUT.avi`"
)


class VideoSource(FileSource):
    """OpenCV ``VideoCapture(path)``; ``read()`` returns every frame, then None.

    ``options``: ``realtime``, ``fps`` (paces realtime playback instead of the file's own
    rate), ``loop``, ``clock``, ``max_pixels``, ``stop`` and the reader thread's of
    :class:`~edge.sources._files.FileSource`.
    """

    def __init__(self, path: str | os.PathLike, **options: Any):
        super().__init__(path, **options)
        self.name = f"video {os.path.basename(self.path)}"
        self.fps: Optional[float] = None  # the rate used for pacing, known after start()
        self.frame_count: Optional[int] = None  # as reported by the container (may be approximate)
        self._cap = None
        self._first = None  # (image, index in file) read by _open, not yet produced
        self._index = 0  # frames decoded in the current pass

    def _open(self) -> None:
        """Open the file (in the reader thread); ``SourceError`` naming the path when it can't."""
        import cv2

        if not os.path.exists(self.path):
            raise self._path_error("video file")
        if os.path.isdir(self.path):
            raise SourceError(
                f"video path {self.path} is a folder", fix="use --images for a folder of images"
            )
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file {self.path} could not be opened", fix=_FORMATS_FIX)
        too_large = self._too_large(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if too_large:
            cap.release()
            raise SourceError(
                f"video file {self.path} has frames of {too_large}",
                fix="re-encode it smaller (`ffmpeg -i IN -vf scale=1280:-2 -c:v mjpeg -q:v 3 OUT.avi`), "
                "or raise max_image_pixels in [source] if this machine has the memory",
            )
        file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        fps = self.requested_fps or (file_fps if math.isfinite(file_fps) and file_fps > 0 else None)
        if self.realtime:
            if fps is None:
                cap.release()
                raise SourceError(
                    f"video file {self.path} does not state its frame rate, needed for realtime playback",
                    fix="give the frame rate explicitly (fps in the source config), or run without --realtime",
                )
            if not self.requested_fps and not MIN_FPS <= fps <= MAX_FPS:  # 0.01 fps would wait 100 s a frame
                cap.release()
                raise SourceError(
                    f"video file {self.path} states a frame rate of {fps:g} fps, outside {MIN_FPS:g}..{MAX_FPS:g}, "
                    "so realtime playback cannot be paced by it",
                    fix="give the frame rate explicitly (fps in the source config), or run without --realtime",
                )
            self._pacer = Pacer(fps, self._clock)
        self.fps = fps
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(f"video file {self.path} has no readable frame", fix=_FORMATS_FIX)
        self._cap = cap
        self._first = (image, 0)
        self._index = 1
        self._said_short = False
        log.info(
            "%s opened: %s frames at %s fps%s",
            self.name,
            self.frame_count if self.frame_count is not None else "?",
            f"{fps:g}" if fps else "?",
            " (realtime)" if self.realtime else "",
        )

    def _decode(self):
        """Next (image, index) from the file, or None at the end."""
        ok, image = self._cap.read()
        if ok and image is not None:
            self._index += 1
            return image, self._index - 1
        if self.frame_count is not None and self._index < self.frame_count - 1 and not self._said_short:
            self._said_short = True  # once, not at every loop
            log.warning("%s: the file ended after %d of the %d frames its header declares: it may be cut short or "
                        "damaged (re-copy or re-encode it)", self.name, self._index, self.frame_count)
        if self.loop and self._index > 0:
            import cv2

            log.info("%s: end of file after %d frames, looping", self.name, self._index)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._index = 0
            ok, image = self._cap.read()
            if ok and image is not None:
                self._index = 1
                return image, 0
        return None

    def _produce(self) -> tuple:
        """The next ``(image, fields)`` in file order (in the reader thread); ``EndOfStream`` at the end."""
        first, self._first = self._first, None
        decoded = first if first is not None else self._decode()
        if decoded is None:
            raise EndOfStream()
        image, index = decoded
        return image, {"meta": {"file_index": index}}

    def _catch_up(self, timeout: Optional[float]) -> Optional[int]:
        """Realtime: like a camera, a frame whose successor is already due was never going to
        be seen; drop it (counted) for the newest due one, stamped at its due time."""
        if self._pacer is None:
            return None
        while self._pacer.due_ns(self._next_id + 1) <= self._clock.now_ns():
            try:
                newer = self._reader.read(timeout)
            except FrameTimeout:  # not decoded yet: the due one goes out now
                break
            if newer is None:
                break
            self._pending = newer
            self._next_id += 1
            self._dropped += 1
        return self._pacer.due_ns(self._next_id)

    def _close_file(self) -> None:
        """Release the file (in the reader thread, after its last read)."""
        cap, self._cap = self._cap, None
        self._first = None
        if cap is not None:
            cap.release()
