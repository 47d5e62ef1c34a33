"""The newest frame with what the detector made of it, drawn for the live view.

``paint(result, ...)`` scales the frame down to the stream's width and draws on it:

- the frame scaled to ``[web] stream_width``;
- the **lane boundaries** (magenta, ``LANE_BGR``, 3 px) and the **tile grid** (grey);
- the **vegetation mask's outline** (yellow) with the gate's numbers in force (none when the gate is off);
- each tile's **top label and weed score**; a tile the gate called bare ground says ``bare``;
- the tiles **going to be sprayed** (red, filled half-transparent) — in whole-frame mode the one
  "tile" is the frame, red-framed while it sprays;
- each **valve's state** along the bottom edge (green = open).

Text drawn into the image is ASCII (OpenCV's fonts): a label is passed through ``one_line`` and
anything else becomes ``?``. The page shows the same labels HTML-escaped.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from edge.core.text import one_line
from edge.inference.config import GateParams
from edge.inference.vegetation import vegetation_mask
from edge.loop.per_lane import LaneFrameResult
from edge.loop.processor import ProcessedFrame
from edge.loop.whole_frame import FrameResult

LANE_BGR = (255, 0, 255)
GRID_BGR = (160, 160, 160)
MASK_BGR = (0, 230, 255)
SPRAY_BGR = (0, 0, 255)
VALVE_ON_BGR = (0, 200, 0)
VALVE_OFF_BGR = (70, 70, 70)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _ascii(text: str) -> str:
    return one_line(text).encode("ascii", "replace").decode("ascii")


def scaled(image: np.ndarray, colour_order: str, width: int) -> tuple[np.ndarray, float]:
    """The frame in BGR, ``width`` wide (aspect kept; a smaller frame is scaled up so that the overlay's text
    stays readable), and the scale applied."""
    img = image if colour_order == "BGR" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    if w == width:
        return img.copy(), 1.0
    s = width / w
    return cv2.resize(img, (width, max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), s


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, colour=(255, 255, 255)) -> None:
    """Text with a dark edge, so that it reads on any ground."""
    cv2.putText(img, text, (x, y), FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)


def _outline(img: np.ndarray, source: np.ndarray, s: float, gate: GateParams) -> None:
    """The vegetation mask's outline, found on the smaller of the frame and the overlay image (the gate's own
    numbers: the mask the gate saw, at most scaled), drawn on ``img``."""
    small = source if s > 1 else img
    mask = vegetation_mask(small, gate.exg_threshold, gate.exg_min, gate.smooth_px).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if s > 1:
        contours = [np.round((c.astype(np.float32) + 0.5) * s).astype(np.int32) for c in contours]
    cv2.drawContours(img, contours, -1, MASK_BGR, 1, cv2.LINE_AA)


def _spray_fill(img: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> None:
    roi = img[y0:y1, x0:x1]
    red = np.empty_like(roi)
    red[:] = SPRAY_BGR
    cv2.addWeighted(roi, 0.6, red, 0.4, 0, dst=roi)
    cv2.rectangle(img, (x0 + 1, y0 + 1), (x1 - 2, y1 - 2), SPRAY_BGR, 2)


def _valves(img: np.ndarray, outputs: Sequence[bool]) -> None:
    h, w = img.shape[:2]
    n = max(1, len(outputs))
    cell = min(60, w // n)
    for i, on in enumerate(outputs):
        x0, y0 = 4 + i * cell, h - 20
        cv2.rectangle(img, (x0, y0), (x0 + cell - 6, h - 4), VALVE_ON_BGR if on else VALVE_OFF_BGR, -1)
        _text(img, f"V{i} {'ON' if on else 'off'}", x0 + 3, h - 8, 0.35)


def paint(result: ProcessedFrame, *, width: int, gate: GateParams | None, outputs: Sequence[bool]) -> np.ndarray:
    """The overlay image (BGR) of one processed frame; ``outputs`` is each valve's state now."""
    f = result.frame
    img, s = scaled(f.image, f.colour_order, width)
    if gate is not None:
        _outline(img, f.image, s, gate)
    if isinstance(result, LaneFrameResult) and result.boxes and result.lanes:
        _lanes(img, result, s)
    else:
        _whole(img, result)
    _valves(img, outputs)
    return img


def _whole(img: np.ndarray, r: ProcessedFrame) -> None:
    h, w = img.shape[:2]
    d = r.decision
    if r.decision.spray and any(r.outputs):
        _spray_fill(img, 0, w, 0, h)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), GRID_BGR, 1)
    gated = isinstance(r, FrameResult) and r.gated
    text = "bare" if gated else f"{_ascii(d.label)[:22]} weed {d.weed_score:.2f}"
    _text(img, text, 6, 18, 0.5)


def _lanes(img: np.ndarray, r: LaneFrameResult, s: float) -> None:
    rows = len(r.boxes) // len(r.lanes)
    sx = lambda v: min(img.shape[1] - 1, round(v * s))  # noqa: E731
    sy = lambda v: min(img.shape[0] - 1, round(v * s))  # noqa: E731
    for lane in r.lanes:
        for i in range(rows):
            bx0, bx1, by0, by1 = r.boxes[lane.lane * rows + i]
            x0, x1, y0, y1 = sx(bx0), sx(bx1), sy(by0), sy(by1)
            if i in lane.spray_tiles:
                _spray_fill(img, x0, x1, y0, y1)
            cv2.rectangle(img, (x0, y0), (x1, y1), GRID_BGR, 1)
            gated = lane.vegetation is not None and lane.vegetation[i].gated
            label = lane.tile_labels[i] if i < len(lane.tile_labels) else ""
            score = lane.tile_scores[i] if i < len(lane.tile_scores) else 0.0
            _text(img, "bare" if gated else _ascii(label)[:14], x0 + 3, y0 + 14, 0.42)
            if not gated:
                _text(img, f"{score:.2f}", x0 + 3, y0 + 30, 0.42, (0, 0, 255) if i in lane.spray_tiles else
                      (255, 255, 255))
    edges = sorted({sx(r.boxes[lane.lane * rows][0]) for lane in r.lanes} | {sx(r.boxes[-1][1])})
    for x in edges:
        cv2.line(img, (x, 0), (x, img.shape[0] - 1), LANE_BGR, 3)
