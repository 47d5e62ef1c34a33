"""A USB/V4L2 camera through OpenCV (``--camera N``), newest frame wins.

The requested width/height/fps are hints: many cameras only offer a few modes, so the
values the device really delivers are logged and kept in ``CameraSource.actual``.
``CAP_PROP_BUFFERSIZE=1`` keeps the driver from queueing old frames (where the backend
supports it); the latest-frame reader thread does the rest.
"""

from __future__ import annotations

from typing import Any, Optional

from edge.core.errors import SourceError
from edge.sources.config import MAX_CAMERA_INDEX
from edge.sources.live_capture import LiveCaptureSource


_OPEN_FIX = (
    "check `ls /dev/video*`, that the user is in the 'video' group, "
    "and that no other program uses it"
)


class CameraSource(LiveCaptureSource):
    """OpenCV ``VideoCapture(index)``; ``read()`` returns the newest frame.

    ``live_options``: ``clock``, ``open_timeout``, ``first_frame_timeout``,
    ``max_read_failures`` and ``stop`` of :class:`~edge.sources.live_capture.LiveSource`.
    """

    _read_failed_fix = (
        "check the cable/USB connection and `dmesg` for disconnects; "
        "a powered USB hub helps when the camera browns out"
    )
    _no_first_frame_fix = "try another resolution/fps (`v4l2-ctl --list-formats-ext`), " + _OPEN_FIX

    def __init__(
        self,
        index: int = 0,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        *,
        api_preference: Optional[int] = None,
        **live_options: Any,
    ):
        super().__init__(**live_options)
        self.index = int(index)
        self.width = width
        self.height = height
        self.fps = fps
        self.api_preference = api_preference  # e.g. cv2.CAP_V4L2; None = OpenCV's choice
        self.name = f"camera {self.index}"

    def _open_capture(self):
        import cv2

        api = cv2.CAP_ANY if self.api_preference is None else self.api_preference
        try:
            cap = cv2.VideoCapture(self.index, api)
        except (cv2.error, OverflowError) as exc:  # an index OpenCV cannot take (beyond a C int)
            raise SourceError(
                f"camera {self.index} could not be opened ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                fix=f"use the N of an existing /dev/videoN (0..{MAX_CAMERA_INDEX}): " + _OPEN_FIX,
            ) from None
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.index} could not be opened", fix=_OPEN_FIX)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(self.width))
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(self.height))
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, float(self.fps))
        return cap
