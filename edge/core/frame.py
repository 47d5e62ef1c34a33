"""Value types that flow through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is only needed by whoever builds a Frame
    import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image.

    ``image`` is an HxWx3 uint8 array in BGR order (OpenCV's), or RGB when
    ``colour_order == "RGB"`` (picamera2 can deliver RGB directly).
    ``t_capture_ns`` is ``time.monotonic_ns()`` at capture (or the sensor timestamp
    mapped onto the same clock); it travels with the frame to the valve.
    """

    image: "np.ndarray"
    frame_id: int
    t_capture_ns: int
    source: str
    colour_order: str = "BGR"
    name: str = ""  # file name for image folders, empty otherwise
    meta: dict = field(default_factory=dict, compare=False)
