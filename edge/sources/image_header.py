"""The size an image file declares, read from its header before anything is decoded.

A 1.2 MB PNG can declare 20000x20000 pixels: decoding it allocates 1.2 GB, and on a Pi
the OOM killer's SIGKILL then leaves a valve open. :func:`declared_size` reads the
width and height from the header of the formats the image source reads — PNG (IHDR),
JPEG (the first SOFn marker), BMP (the DIB header), WebP (VP8, VP8L, VP8X) and TIFF
(classic and BigTIFF, the first IFD) — in pure Python, without decoding, so that the
source can refuse an image over its pixel limit.

OpenCV has a limit of its own (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 by default), but no
call to set it: it is read from the environment once, when ``cv2`` is loaded, and
``edge-run`` loads ``cv2`` (for inference) before it reads its config. So the image
source decodes only what this module could size; a file whose header is none of these
is skipped (OpenCV sniffs the content, not the extension: a ``.png`` holding a PPM
would otherwise be decoded unchecked). Setting ``OPENCV_IO_MAX_IMAGE_PIXELS`` in the
service's environment still lowers OpenCV's own bound as well.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional


class ImageSize(NamedTuple):
    format: str  # "PNG", "JPEG", "BMP", "WebP" or "TIFF"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not C4 (DHT), C8, CC (DAC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# JPEG markers without a length: TEM, RST0-7, SOI
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def declared_size(data: bytes) -> Optional[ImageSize]:
    """The width and height ``data``'s header declares, or None when it is not a PNG, JPEG,
    BMP, WebP or TIFF header, or is cut short before the size."""
    try:
        for magic, reader in _READERS:
            if data.startswith(magic):
                size = reader(data)
                return None if size is None else ImageSize(size[0], abs(size[1]), abs(size[2]))
    except (struct.error, IndexError):  # the header ends before its size
        return None
    return None


def _png(data: bytes):
    # signature, then the first chunk: length, "IHDR", width, height (big-endian)
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return "PNG", width, height


def _jpeg(data: bytes):
    pos = 2
    while True:
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: damaged
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan, before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)  # after the length and precision
            return "JPEG", width, height
        if length < 2:
            return None
        pos += length


def _bmp(data: bytes):
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    elif header_size >= 16:  # BITMAPINFOHEADER and later: signed 32-bit (height < 0: top-down)
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        return None
    return "BMP", width, height


def _webp(data: bytes):
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return "WebP", width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 0x2F, then 14-bit width-1 and height-1
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack_from("<I", data, 21)
        return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        fields = data[24:30]
        if len(fields) < 6:
            return None
        return "WebP", int.from_bytes(fields[:3], "little") + 1, int.from_bytes(fields[3:], "little") + 1
    return None


_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
# TIFF field types holding an integer size: SHORT, LONG, LONG8 (BigTIFF)
_TIFF_INT = {3: "H", 4: "I", 16: "Q"}


def _tiff(data: bytes):
    order = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack_from(order + "H", data, 2)
    if version == 42:  # classic: 32-bit offsets, 12-byte entries
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        count_fmt, entry_fmt, entry_size, value_at = "H", "HHI", 12, 8
    elif version == 43:  # BigTIFF: 64-bit offsets, 20-byte entries
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        count_fmt, entry_fmt, entry_size, value_at = "Q", "HHQ", 20, 12
    else:
        return None
    (entries,) = struct.unpack_from(order + count_fmt, data, ifd)
    first = ifd + struct.calcsize(order + count_fmt)
    sizes = {}
    for i in range(entries):
        at = first + i * entry_size
        tag, kind, _count = struct.unpack_from(order + entry_fmt, data, at)
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in _TIFF_INT:
            (sizes[tag],) = struct.unpack_from(order + _TIFF_INT[kind], data, at + value_at)
            if len(sizes) == 2:
                return "TIFF", sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]
    return None


_READERS = (
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8", _jpeg),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"II+\x00", _tiff),
    (b"MM\x00+", _tiff),
)


class ImageRefused(ValueError):
    """An image file not decoded (:func:`read_image`): its message says why (unreadable, a header that cannot be sized,
    over the pixel limit, not decodable)."""


def too_large(width: int, height: int, max_pixels: int) -> Optional[str]:
    """Why an image or frame of this size is refused (over ``max_pixels``), or None."""
    if width * height <= max_pixels:
        return None
    return (f"{width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:g} (max_image_pixels in [source])")


def read_image(path, max_pixels: int):
    """The BGR image of the file at ``path``, decoded only after its header's size was checked against
    ``max_pixels`` (the one way the image source, edge-bench and the tools read an image file); ``ImageRefused``
    saying why not."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(path, dtype=np.uint8)  # works with any path, unlike imread
    except (OSError, ValueError) as exc:
        raise ImageRefused(f"cannot be read ({exc})") from None
    size = declared_size(data.tobytes())
    if size is None:
        raise ImageRefused("its header is not a complete PNG, JPEG, BMP, WebP or TIFF header, "
                           "so its size cannot be checked before decoding")
    why = too_large(size.width, size.height, max_pixels)
    if why:
        raise ImageRefused(f"its {size.format} header declares {why}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageRefused("cannot be decoded as an image")
    return image
