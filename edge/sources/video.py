"""A video file (``--video PATH``).

As fast as possible by default (benchmarks, offline runs): every frame in order,
``t_capture_ns`` the clock's time when it was decoded. With ``realtime=True`` the file
plays like a camera, so that timing-dependent stages (debounce, hold, valve scheduling)
see what they would see in the field: frame ``i`` is captured at ``i / fps`` after the
first (``t_capture_ns`` is that due time, not the time it was read), and when the
pipeline is slower than the file, a frame already superseded by a newer due one is
dropped and counted, as the newest-frame-wins camera reader does.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Optional

from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.sources._files import FileSource
from edge.sources.pacing import Pacer

log = logging.getLogger(__name__)

_FORMATS_FIX = (
    "check that it is a video file (`ffprobe PATH`); OpenCV reads e.g. AVI/MJPG and MP4/H.264 — "
    "re-encode others with `ffmpeg -i IN -c:v mjpeg -q:v 3 OUT.avi`"
)


class VideoSource(FileSource):
    """OpenCV ``VideoCapture(path)``; ``read()`` returns every frame, then None.

    ``options``: ``realtime``, ``fps`` (paces realtime playback instead of the file's own
    rate), ``loop`` and ``clock`` of :class:`~edge.sources._files.FileSource`.
    """

    def __init__(self, path: str | os.PathLike, **options: Any):
        super().__init__(path, **options)
        self.name = f"video {os.path.basename(self.path)}"
        self.fps: Optional[float] = None  # the rate used for pacing, known after start()
        self.frame_count: Optional[int] = None  # as reported by the container (may be approximate)
        self._cap = None
        self._pending = None  # (image, index in file) decoded but not yet returned
        self._index = 0  # frames decoded in the current pass

    def _open(self) -> None:
        """Open the file; ``SourceError`` naming the path when it can't."""
        import cv2

        if not os.path.exists(self.path):
            raise self._missing_path_error("video file")
        if os.path.isdir(self.path):
            raise SourceError(
                f"video path {self.path} is a folder", fix="use --images for a folder of images"
            )
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file {self.path} could not be opened", fix=_FORMATS_FIX)
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
            self._pacer = Pacer(fps, self._clock)
        self.fps = fps
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise SourceError(f"video file {self.path} has no readable frame", fix=_FORMATS_FIX)
        self._cap = cap
        self._pending = (image, 0)
        self._index = 1
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

    def _next_frame(self, timeout: Optional[float]) -> Optional[Frame]:
        """The next frame in file order; None after the last one."""
        if self._pending is None:
            self._pending = self._decode()
            if self._pending is None:
                log.info("%s: end of file after %d frames", self.name, self._next_id)
                return None
        self._pace(timeout)  # FrameTimeout keeps the frame pending
        t_capture_ns = None
        if self._pacer is not None:
            # Like a camera: a frame whose successor is already due was never going to be
            # seen; drop it (counted) and take the newest due one, stamped at its due time.
            while self._pacer.due_ns(self._next_id + 1) <= self._clock.now_ns():
                newer = self._decode()
                if newer is None:
                    break
                self._pending = newer
                self._next_id += 1
                self._dropped += 1
            t_capture_ns = self._pacer.due_ns(self._next_id)
        image, index = self._pending
        self._pending = None
        return self._frame(image, t_capture_ns=t_capture_ns, meta={"file_index": index})

    def _release(self) -> None:
        """Release the file."""
        cap, self._cap = self._cap, None
        self._pending = None
        if cap is not None:
            cap.release()
