"""A network stream (RTSP/HTTP MJPEG/...) through OpenCV's FFmpeg backend, newest frame wins.

Credentials in the URL (``rtsp://user:password@host/...``) are never logged or shown in
errors. Open and read timeouts are bounded so that a dead camera is reported instead of
blocking forever. For RTSP over TCP (lossy Wi-Fi), set the environment variable
``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` before starting.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import SourceError
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
    """OpenCV ``VideoCapture(url, CAP_FFMPEG)``; ``read()`` returns the newest frame."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        first_frame_timeout: float = 10.0,
        max_read_failures: int = 3,
    ):
        super().__init__(
            clock=clock,
            first_frame_timeout=first_frame_timeout,
            max_read_failures=max_read_failures,
        )
        self.url = str(url)
        self.open_timeout = open_timeout
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

    def _read_failed_error(self, failures: int) -> SourceError:
        return SourceError(
            f"{self.name} stopped delivering frames ({failures} failed reads in a row)",
            fix="check that the camera/server is up and reachable; "
            "the stream can be reopened once it is back",
        )

    def _no_first_frame_error(self) -> SourceError:
        return SourceError(
            f"{self.name} opened but sent no frame within {self.first_frame_timeout:g} s",
            fix="check the stream in `ffplay URL` or VLC; some cameras need a sub-stream URL",
        )
