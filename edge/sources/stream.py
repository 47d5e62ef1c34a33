"""A network stream (RTSP/HTTP MJPEG/...) through OpenCV's FFmpeg backend, newest frame wins.

Credentials in the URL (``rtsp://user:password@host/...``) are never logged or shown in
errors. Open and read timeouts are bounded so that a dead camera is reported instead of
blocking forever. For RTSP over TCP (lossy Wi-Fi), set the environment variable
``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` before starting.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edge.core.errors import SourceError
from edge.sources.live_capture import LiveCaptureSource



def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x`` (for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class StreamSource(LiveCaptureSource):
    """OpenCV ``VideoCapture(url, CAP_FFMPEG)``; ``read()`` returns the newest frame.

    ``open_timeout`` (of :class:`~edge.sources.live_capture.LiveSource`) is also FFmpeg's
    open timeout, ``read_timeout`` its read timeout. ``live_options``: ``clock``,
    ``first_frame_timeout``, ``max_read_failures`` and ``stop`` of ``LiveSource``.
    """

    _read_failed_fix = (
        "check that the camera/server is up and reachable; "
        "the stream can be reopened once it is back"
    )
    _no_first_frame_fix = "check the stream in `ffplay URL` or VLC; some cameras need a sub-stream URL"

    def __init__(self, url: str, *, read_timeout: float = 10.0, **live_options: Any):
        super().__init__(**live_options)
        self.url = str(url)
        self.read_timeout = read_timeout
        self.name = f"stream {redact_url(self.url)}"

    def _open_capture(self):
        import cv2

        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout * 1000),
        ]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.name} could not be opened",
                fix="check the URL, network and credentials (try it with `ffplay URL` or VLC); "
                "for RTSP over TCP set OPENCV_FFMPEG_CAPTURE_OPTIONS='rtsp_transport;tcp'",
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap
