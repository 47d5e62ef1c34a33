"""A folder of images (``--images DIR``) or a single image file, in name order, not live.

Files are listed once at ``start()`` and decoded one at a time on ``read()``. Files that
are not images (by extension) or cannot be decoded are skipped with a warning and counted
in ``skipped``; a file that failed is not tried again when looping. ``Frame.name`` is the
file name, so a log line can be traced back to its photo.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import SourceError
from edge.frame import Frame
from edge.sources.pacing import Pacer

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class ImageFolderSource:
    """Images of a folder sorted by file name (or one image file); None after the last."""

    live = False

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        loop: bool = False,
        fps: Optional[float] = None,
        realtime: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.path = os.fspath(path)
        self.loop = loop
        self._clock = clock
        self._pacer = Pacer(fps, clock) if (realtime and fps) else None
        self._realtime_without_fps = realtime and not fps
        self.name = f"images {os.path.basename(os.path.normpath(self.path)) or self.path}"
        self.files: List[str] = []  # file names still in play, in order
        self.skipped = 0  # non-image or undecodable files (each counted once)
        self._pos = 0  # position in self.files
        self._returned_in_pass = 0
        self._next_id = 0
        self._started = False
        self._closed = False

    def start(self) -> None:
        """List the images (idempotent); ``SourceError`` when there is nothing to read."""
        if self._closed:
            raise SourceError(f"{self.name} was closed", fix="create a new source to read it again")
        if self._started:
            return
        if self._realtime_without_fps:
            raise SourceError(
                "realtime playback of an image folder needs a frame rate",
                fix="set fps in the source config (e.g. fps = 2), or run without --realtime",
            )
        path = self.path
        if os.path.isfile(path):
            if not is_image_name(path):
                raise SourceError(
                    f"{path} is not an image file",
                    fix="give a folder of images or a .jpg/.jpeg/.png/.bmp/.webp/.tif file",
                )
            self._dir = os.path.dirname(path) or "."
            self.files = [os.path.basename(path)]
        elif os.path.isdir(path):
            self._dir = path
            names = sorted(e.name for e in os.scandir(path) if e.is_file())
            for name in names:
                if not is_image_name(name):
                    self._skip(name, "not an image file (by its extension)")
            self.files = [n for n in names if is_image_name(n)]
            if not self.files:
                raise SourceError(
                    f"image folder {path} contains no images",
                    fix="put .jpg/.jpeg/.png/.bmp/.webp/.tif files in it, or point to another folder",
                )
        else:
            raise SourceError(
                f"image path {path} does not exist",
                fix="check the path (relative paths start in the current directory)",
            )
        self._started = True
        log.info("%s: %d image files in %s", self.name, len(self.files), self._dir)

    def _skip(self, name: str, why: str) -> None:
        self.skipped += 1
        log.warning("%s: skipping %s: %s", self.name, name, why)

    def _decode(self, name: str):
        import cv2
        import numpy as np

        full = os.path.join(self._dir, name)
        try:
            data = np.fromfile(full, dtype=np.uint8)  # works with any path, unlike imread
        except OSError as exc:
            self._skip(name, f"cannot be read ({exc})")
            return None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            self._skip(name, "cannot be decoded as an image")
        return image

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next image; None after the last one (never with ``loop``) or after close."""
        if self._closed:
            return None
        if not self._started:
            raise SourceError(
                f"{self.name} was read before start()",
                fix="call start() (or use the source in a `with` block) before read()",
            )
        while True:
            if self._pos >= len(self.files):
                if self._returned_in_pass == 0:
                    raise SourceError(
                        f"image folder {self.path} has no readable image",
                        fix="replace the corrupt files (see the warnings above)",
                    )
                if not self.loop:
                    return None
                self._pos = 0
                self._returned_in_pass = 0
            name = self.files[self._pos]
            image = self._decode(name)
            if image is None:
                del self.files[self._pos]  # never tried again
                continue
            if self._pacer is not None:
                self._pacer.wait(self._next_id, timeout)  # FrameTimeout: same file next time
            self._pos += 1
            self._returned_in_pass += 1
            frame = Frame(
                image=image,
                frame_id=self._next_id,
                t_capture_ns=self._clock.now_ns(),
                source=self.name,
                name=name,
            )
            self._next_id += 1
            return frame

    @property
    def dropped(self) -> int:
        return 0  # every readable image is returned

    def close(self) -> None:
        """Nothing to release; later reads return None (idempotent)."""
        self._closed = True

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
