"""The newest frame with what the detector made of it, drawn for the live view.

``paint(result, ...)`` scales the frame down to the stream's width and draws on it:

- the frame scaled to ``[web] stream_width``;
- the **lane boundaries** (magenta, ``LANE_BGR``, 3 px) and the **tile grid** (grey);
- the **vegetation mask's outline** (yellow) with the gate's numbers in force (none when the gate is off);
- each tile's **top label and weed score**; a tile the gate called bare ground says ``bare``; a
  tile whose view fires (weed, not vetoed) is framed red;
- what is **going to be sprayed** (red, filled half-transparent): per lane, the plants of the
  ground cells this frame decided to spray (``LaneResult.targets_cm``; a cell is decided as it
  leaves the image, so most bands sit at the image's rear edge) — in whole-frame mode the one
  "tile" is the frame, filled while the valves are open;
- each **valve's state** along the bottom edge (green = open).

Text drawn into the image is ASCII (OpenCV's fonts): a label is passed through ``one_line`` and
anything else becomes ``?``. The page shows the same labels HTML-escaped.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from edge.core.text import one_line
from edge.core.tile import Tile
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
    if isinstance(result, LaneFrameResult) and result.tiles and result.lanes:
        _lanes(img, result)
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


def _along_to_y(lane_tiles: Sequence[Tile], height: int):
    """cm along travel (from the image centre, + = ahead) -> image row, linear over the lane's tiles."""
    top, bottom = lane_tiles[0], lane_tiles[-1]
    ahead_on_top = top.front_cm >= bottom.front_cm
    cm_top, cm_bottom = (top.front_cm, bottom.rear_cm) if ahead_on_top else (top.rear_cm, bottom.front_cm)
    y_top, y_bottom = top.y0 * height, bottom.y1 * height
    return lambda cm: y_top + (cm - cm_top) / (cm_bottom - cm_top) * (y_bottom - y_top)


def _lanes(img: np.ndarray, r: LaneFrameResult) -> None:
    h, w = img.shape[:2]
    rows = len(r.tiles) // len(r.lanes)
    edges = set()
    for lane in r.lanes:
        lane_tiles = r.tiles[lane.lane * rows:(lane.lane + 1) * rows]
        boxes = [t.pixels(w, h) for t in lane_tiles]
        to_y = _along_to_y(lane_tiles, h)
        x0, x1 = boxes[0][0], boxes[0][1]
        for rear, front in lane.targets_cm:  # the plants of the cells this frame decided to spray
            ya, yb = sorted((to_y(rear), to_y(front)))
            ya, yb = int(max(0, min(h - 4, ya))), int(max(4, min(h, yb)))  # behind the image: a band at its edge
            _spray_fill(img, x0, x1, ya, max(yb, ya + 4))
        for i, (bx0, bx1, by0, by1) in enumerate(boxes):
            fires = i < len(lane.tile_fires) and lane.tile_fires[i]
            cv2.rectangle(img, (bx0, by0), (bx1 - 1, by1 - 1), SPRAY_BGR if fires else GRID_BGR, 2 if fires else 1)
            gated = lane.vegetation is not None and lane.vegetation[i].gated
            label = lane.tile_labels[i] if i < len(lane.tile_labels) else ""
            score = lane.tile_scores[i] if i < len(lane.tile_scores) else 0.0
            _text(img, "bare" if gated else _ascii(label)[:14], bx0 + 3, by0 + 14, 0.42)
            if not gated:
                _text(img, f"{score:.2f}", bx0 + 3, by0 + 30, 0.42, (0, 0, 255) if fires else (255, 255, 255))
        edges |= {min(w - 2, x0), min(w - 2, x1)}
    for x in sorted(edges):
        cv2.line(img, (x, 0), (x, h - 1), LANE_BGR, 3)
