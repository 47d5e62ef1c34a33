"""A folder of images (``--images DIR``) or a single image file, in name order, not live.

Files are listed once at ``start()`` and decoded one at a time, in order, by the reader
thread of :class:`~edge.sources._files.FileSource`. Files are skipped with a warning and
counted in ``skipped`` when they are not images (by extension), cannot be listed (a
symlink loop, a broken link), cannot be read or decoded, or are too large: the size their
header declares (:mod:`edge.sources.image_header`) is checked before decoding, and an
image over ``max_pixels`` is never decoded; a file whose header is not a PNG, JPEG, BMP,
WebP or TIFF header is not decoded either (its size cannot be checked). A file that was
skipped is not tried again when looping. If nothing is left to read, that is a
``SourceError``. ``Frame.name`` is the file name, so a log line can be traced back to its
photo.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, List

from edge.core.errors import SourceError
from edge.sources._files import FileSource
from edge.sources.image_header import ImageRefused, read_image
from edge.sources.pacing import Pacer
from edge.sources.reader import EndOfStream

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class ImageFolderSource(FileSource):
    """Images of a folder sorted by file name (or one image file); None after the last.

    ``options``: ``loop``, ``fps`` (the slideshow rate), ``realtime``, ``clock``,
    ``max_pixels``, ``stop`` and the reader thread's of :class:`~edge.sources._files.FileSource`.
    """

    def __init__(self, path: str | os.PathLike, **options: Any):
        super().__init__(path, **options)
        fps = self.requested_fps
        self._pacer = Pacer(fps, self._clock) if (self.realtime and fps) else None
        self._realtime_without_fps = self.realtime and not fps
        self.name = f"images {os.path.basename(os.path.normpath(self.path)) or self.path}"
        self.files: List[str] = []  # file names still in play, in order
        self.skipped = 0  # non-image, unreadable or too large files (each counted once)
        self._pos = 0  # position in self.files (reader thread)
        self._decoded_in_pass = 0

    def _open(self) -> None:
        """List the images; ``SourceError`` when there is nothing to read."""
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
            names = self._list_files()
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
            raise self._path_error("image path")
        log.info("%s: %d image files in %s", self.name, len(self.files), self._dir)

    def _list_files(self) -> List[str]:
        """The folder's files by name; an entry that cannot be looked at is skipped (warned)."""
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise SourceError(
                f"image folder {self.path} cannot be listed: {exc.strerror or exc}",
                fix="check its permissions (`ls -ld PATH`) and that the file system is mounted",
            ) from None
        names = []
        for entry in entries:
            try:
                if entry.is_file():
                    names.append(entry.name)
            except OSError as exc:  # ELOOP: a symlink loop
                why = "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
                self._skip(entry.name, f"cannot be looked at ({why})")
        return sorted(names)

    def _skip(self, name: str, why: str) -> None:
        self.skipped += 1
        log.warning("%s: skipping %s: %s", self.name, name, why)

    def _decode(self, name: str):
        try:
            return read_image(os.path.join(self._dir, name), self.max_pixels)
        except ImageRefused as why:
            self._skip(name, str(why))
            return None

    def _produce(self) -> tuple:
        """The next image in name order (in the reader thread); ``EndOfStream`` after the
        last one (never with ``loop``)."""
        while True:
            if self._pos >= len(self.files):
                if self._decoded_in_pass == 0:
                    raise SourceError(
                        f"image folder {self.path} has no readable image" if os.path.isdir(self.path)
                        else f"image {self.path} cannot be decoded",
                        fix="replace the corrupt files (see the warnings above)",
                    )
                if not self.loop:
                    raise EndOfStream()
                self._pos = 0
                self._decoded_in_pass = 0
            name = self.files[self._pos]
            image = self._decode(name)
            if image is None:
                del self.files[self._pos]  # never tried again
                continue
            self._pos += 1
            self._decoded_in_pass += 1
            return image, {"name": name}
