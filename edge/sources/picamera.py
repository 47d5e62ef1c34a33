"""Raspberry Pi camera modules through picamera2 (``--picamera``), newest frame wins.

picamera2 comes from Raspberry Pi OS's apt (``python3-picamera2``) and is imported only
in ``start()``, so ``import edge`` works anywhere.

Configure, then start (the picamera2 way): a *main* stream at the requested size (it sets
the field of view and sensor mode) and a small *lores* stream that the ISP scales in
hardware; only the lores images are returned, so inference never resizes a full frame.
The lores size keeps the main stream's aspect ratio and just covers the model input
(``infer_size``), leaving the bundle's crop/stretch rule to preprocessing.

Colour: picamera2's ``RGB888`` is stored B,G,R per pixel, i.e. OpenCV's BGR order, so
frames are ``colour_order="BGR"`` like every other source. Pi 5 (PiSP) scales lores to
RGB888 directly; Pi 4 and earlier (VC4) only give a YUV420 lores stream, so there we fall
back to YUV420 and convert with ``cv2.COLOR_YUV420p2BGR``.

Capture time: each request's ``SensorTimestamp`` metadata is the time (ns) the sensor
started reading out the frame, taken from the V4L2 buffer timestamp, which is
``CLOCK_MONOTONIC`` — the clock behind ``time.monotonic_ns()`` on Linux — so it is used
as ``t_capture_ns`` directly. It is earlier than the time the frame reaches Python by
the readout and ISP time, which is exactly the latency the valve scheduler must
compensate. As a guard against a different clock domain, a SensorTimestamp that is in
the future or older than ``max_timestamp_age`` seconds relative to the clock is not
trusted: the receipt time is used and ``meta["timestamp"]`` says which one it is.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Tuple

from edge.core.errors import SourceError
from edge.sources.latest import Grabbed
from edge.sources.live_capture import LiveSource

log = logging.getLogger(__name__)

_APT_FIX = (
    "on Raspberry Pi OS install it from apt: `sudo apt install python3-picamera2`, and "
    "create the virtualenv with `python3 -m venv --system-site-packages` so it is visible "
    "(the PyPI package lacks the libcamera bindings)"
)
_CABLE_FIX = (
    "check `rpicam-hello --list-cameras` (libcamera-hello on older systems), the ribbon "
    "cable's orientation, and that no other program uses the camera"
)


def sensor_time_to_clock(
    sensor_ns: Optional[int], now_ns: int, max_age_ns: int
) -> Optional[int]:
    """Return ``sensor_ns`` when it is a plausible monotonic capture time, else None.

    Plausible: not after ``now_ns`` and at most ``max_age_ns`` before it.
    """
    if sensor_ns is None:
        return None
    age = now_ns - int(sensor_ns)
    return int(sensor_ns) if 0 <= age <= max_age_ns else None


def lores_size_for(main_size: Tuple[int, int], infer_size: Tuple[int, int]) -> Tuple[int, int]:
    """Smallest even size with the main stream's aspect ratio covering ``infer_size``."""
    mw, mh = main_size
    iw, ih = infer_size
    scale = min(1.0, max(iw / mw, ih / mh))
    w = min(mw, 2 * math.ceil(mw * scale / 2))
    h = min(mh, 2 * math.ceil(mh * scale / 2))
    return int(w), int(h)


class PicameraSource(LiveSource):
    """A Raspberry Pi camera via picamera2; ``read()`` returns the newest lores frame.

    ``live_options``: ``clock``, ``open_timeout``, ``first_frame_timeout`` and ``stop`` of
    :class:`~edge.sources.live_capture.LiveSource`.
    """

    _no_first_frame_fix = _CABLE_FIX

    def __init__(
        self,
        camera_num: int = 0,
        width: Optional[int] = None,
        height: Optional[int] = None,
        fps: Optional[float] = None,
        infer_size: Optional[Tuple[int, int]] = None,
        *,
        max_timestamp_age: float = 1.0,
        **live_options: Any,
    ):
        super().__init__(**live_options)
        self.camera_num = int(camera_num)
        self.main_size = (int(width or 640), int(height or 480))
        self.fps = fps
        self.infer_size = tuple(infer_size) if infer_size else (320, 240)
        self.max_timestamp_age_ns = int(max_timestamp_age * 1e9)
        self.name = f"picamera {self.camera_num}"
        self.lores_format: Optional[str] = None  # "RGB888" or "YUV420", known after start()

    def _configure(self, picam2):
        lores = {"size": lores_size_for(self.main_size, self.infer_size), "format": "RGB888"}
        controls = {}
        if self.fps:
            frame_us = int(round(1e6 / float(self.fps)))
            controls["FrameDurationLimits"] = (frame_us, frame_us)
        config = picam2.create_preview_configuration(
            main={"size": self.main_size}, lores=lores, controls=controls
        )
        picam2.align_configuration(config)
        try:
            picam2.configure(config)
        except RuntimeError as exc:
            if "must be YUV" not in str(exc):
                raise
            # VC4 (Pi 4 and earlier): the lores stream can only be YUV420.
            config["lores"]["format"] = "YUV420"
            picam2.align_configuration(config)
            picam2.configure(config)
        lores_cfg = picam2.stream_configuration("lores")
        self.lores_format = str(lores_cfg["format"])
        self.actual = {
            "main": tuple(picam2.stream_configuration("main")["size"]),
            "lores": tuple(lores_cfg["size"]),
            "lores_format": self.lores_format,
        }
        log.info("%s configured: %s", self.name, self.actual)

    def _open_device(self):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(f"picamera2 is not installed ({exc})", fix=_APT_FIX) from exc
        import cv2

        try:
            picam2 = Picamera2(self.camera_num)
        except Exception as exc:  # IndexError when no camera, RuntimeError when busy
            raise SourceError(
                f"picamera {self.camera_num} could not be opened ({type(exc).__name__}: {exc})",
                fix=_CABLE_FIX,
            ) from exc
        try:
            self._configure(picam2)
            picam2.start()
        except Exception as exc:
            picam2.close()
            raise SourceError(
                f"picamera {self.camera_num} could not be configured or started "
                f"({type(exc).__name__}: {exc})",
                fix="try another width/height/fps; " + _CABLE_FIX,
            ) from exc

        lores_w = self.actual["lores"][0]
        yuv = self.lores_format == "YUV420"
        clock, max_age = self._clock, self.max_timestamp_age_ns

        def grab():
            request = picam2.capture_request()
            try:
                array = request.make_array("lores")  # a copy: safe after release()
                metadata = request.get_metadata()
            finally:
                request.release()  # buffers must go back to libcamera at once
            now = clock.now_ns()
            if yuv:  # (h*3/2, stride) planar I420 -> (h, stride, 3) BGR, cut the padding
                image = cv2.cvtColor(array, cv2.COLOR_YUV420p2BGR)[:, :lores_w]
            else:
                image = array[:, :lores_w, :3]
            t_sensor = sensor_time_to_clock(metadata.get("SensorTimestamp"), now, max_age)
            meta = {"timestamp": "sensor" if t_sensor is not None else "receipt"}
            if "ExposureTime" in metadata:
                meta["exposure_us"] = metadata["ExposureTime"]
            return Grabbed(image, t_sensor if t_sensor is not None else now, meta)

        def release():
            try:
                picam2.stop()
            finally:
                picam2.close()

        return grab, release
