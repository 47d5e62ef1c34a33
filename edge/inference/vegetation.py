"""The vegetation gate: is there a plant in this tile at all?

One vegetation index for the whole project (``edge``, ``train`` and ``tools`` use this
module): **excess green** on chromatic coordinates (Woebbecke et al. 1995),

    ExG = 2g - r - b,   r = R / (R + G + B), g = G / (R + G + B), b = B / (R + G + B),

from -1 (pure red or blue) through 0 (any grey, at any brightness) to 2 (pure green).
A pixel is vegetation when ``ExG > exg_threshold`` and its plain excess green
``2G - R - B`` (0..255 units) is above ``exg_min``: chromatic ExG does not change with the
light, but in the dark it is mostly sensor noise, which the plain minimum rejects. Both
are linear in R, G, B (ExG > t is ``(2 - t) G - (1 + t) (R + B) > 0``), so a frame is one
vectorised OpenCV pass without a division, symmetric in R and B (the colour order does
not matter). Both sides are averaged over ``smooth_px`` x ``smooth_px`` pixels before the
comparison: that drops speckle (sensor noise, a green glint on a stone) and keeps thin
leaves, which a morphological opening of the same size erases (measured:
docs/spray-timing.md, "The vegetation gate").

The gate (``VegetationGate``) measures, from that one mask and its integral image, each
tile's **vegetated fraction** and the **extent of the vegetation along the image's rows**
(``TileVegetation``); a tile below ``min_fraction`` is bare ground: the runtime does not
classify it and never sprays it. The numbers come in presets (``edge.inference.config``,
``[gate]``), chosen from data: ``tools/check_vegetation_gate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from edge.core.tile import Tile
from edge.inference.config import GateParams

Box = tuple[int, int, int, int]
# "> 0" in float32 with a margin for rounding, so a pixel exactly at the threshold is not vegetation (with
# t = 0.05 the exact values are multiples of 0.05 apart; float32 rounding is ~1e-4 at these magnitudes)
_EPS = 1e-3  # (x0, x1, y0, y1) in pixels, as ``Tile.pixels`` gives them


@dataclass(frozen=True)
class VegetationExtent:
    """Where the vegetation of a tile lies along the image's rows: ``top`` is the first vegetated row and
    ``bottom`` the end of the last one, as fractions of the tile's height (0 = its top edge, 1 = its bottom)."""

    top: float
    bottom: float

    def along_cm(self, tile: Tile, image_top_ahead: bool) -> tuple[float, float]:
        """(rear_cm, front_cm) of the vegetation on the ground, in the tile's along-travel offsets
        (``Tile.rear_cm`` .. ``Tile.front_cm``, + = ahead of the image centre)."""
        length = tile.front_cm - tile.rear_cm
        if image_top_ahead:  # the tile's top row is its front edge
            return tile.front_cm - self.bottom * length, tile.front_cm - self.top * length
        return tile.rear_cm + self.top * length, tile.rear_cm + self.bottom * length


@dataclass(frozen=True)
class TileVegetation:
    """One tile's vegetation: its vegetated fraction, whether the gate called it bare ground, and the
    extent of the vegetation in it (None: no vegetated pixel)."""

    fraction: float  # vegetated pixels / the tile's pixels, 0..1
    gated: bool  # fraction < min_fraction: bare ground, not classified, never sprayed
    extent: VegetationExtent | None
    # the largest connected patch of vegetation reaching into the tile, all of it (inside the tile or not), in
    # the tile's pixels: may exceed 1, the plant goes on beyond the tile; None: not measured (``plants=False``,
    # or the tile is gated)
    plant: float | None = None


def vegetation_mask(image: np.ndarray, exg_threshold: float, exg_min: float = 0.0, smooth_px: int = 1) -> np.ndarray:
    """Boolean HxW mask of the vegetation pixels of an HxWx3 uint8 image (RGB or BGR: ExG is symmetric
    in R and B); see the module docstring for the two conditions and the smoothing."""
    return _mask(image, exg_threshold, exg_min, smooth_px, _Planes(*image.shape[:2])) > 0


class _Planes:
    """Work buffers for one frame size, allocated once: fresh ones every frame (a few MB at 640x480) cost
    more in page faults than the arithmetic itself."""

    def __init__(self, h: int, w: int):
        self.shape = (h, w)
        self.channels = [np.empty((h, w), np.uint8) for _ in range(3)]
        self.rb = np.empty((h, w), np.uint16)
        self.linear = np.empty((h, w), np.float32)
        self.smooth = np.empty((h, w), np.float32)
        self.mask = np.empty((h, w), np.uint8)
        self.plain = np.empty((h, w), np.uint8)
        self.integral = np.empty((h + 1, w + 1), np.int32)
        self.joined = np.empty((h, w), np.uint8)  # the plants' measure (``plants=True``): the grown mask,
        self.regions = np.empty((h, w), np.int32)  # its labels
        self.green = np.empty((h, w), bool)  # and the mask as booleans


def _mask(image: np.ndarray, t: float, exg_min: float, smooth_px: int, planes: _Planes) -> np.ndarray:
    """The mask as uint8 0/255 in ``planes.mask`` (what the OpenCV calls give; the gate sums it as it is)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    c0, g, c2 = cv2.split(image, planes.channels)
    cv2.add(c0, c2, dst=planes.rb, dtype=cv2.CV_16U)
    k = (int(smooth_px), int(smooth_px)) if smooth_px > 1 else None

    def above_zero(weight_g: float, weight_rb: float, offset: float, out: np.ndarray) -> None:
        cv2.addWeighted(g, weight_g, planes.rb, weight_rb, offset, dst=planes.linear, dtype=cv2.CV_32F)
        cv2.compare(planes.linear if k is None else cv2.blur(planes.linear, k, dst=planes.smooth), _EPS,
                    cv2.CMP_GT, dst=out)

    # ExG > t  <=>  2G - R - B > t (R + G + B)  <=>  (2 - t) G - (1 + t) (R + B) > 0
    above_zero(2.0 - t, -(1.0 + t), 0.0, planes.mask)
    if exg_min > 0:  # and 2G - R - B - exg_min > 0
        above_zero(2.0, -1.0, -float(exg_min), planes.plain)
        cv2.bitwise_and(planes.mask, planes.plain, dst=planes.mask)
    return planes.mask


class VegetationGate:
    """Measures the vegetation of a frame's tiles from one mask per frame (see the module docstring)."""

    def __init__(self, params: GateParams):
        self.params = params
        self._planes: _Planes | None = None

    def _planes_for(self, image: np.ndarray) -> _Planes:
        if self._planes is None or self._planes.shape != image.shape[:2]:
            self._planes = _Planes(*image.shape[:2])
        return self._planes

    def mask(self, image: np.ndarray) -> np.ndarray:
        """The frame's vegetation mask (bool HxW), with this gate's numbers."""
        p = self.params
        return _mask(image, p.exg_threshold, p.exg_min, p.smooth_px, self._planes_for(image)) > 0

    def measure(self, image: np.ndarray, boxes: Sequence[Box], plants: bool = False,
                join_px: int = 0) -> tuple[TileVegetation, ...]:
        """Each box's vegetation (fraction, gated, extent), from one mask and its integral image; with ``plants``,
        also the size of the largest connected patch of vegetation reaching into each box that is not gated
        (8-connected regions of the same mask: a plant cut by the tile's edge counts whole, a speck of
        greenish soil is its few pixels). Parts of the mask at most ``join_px`` pixels apart (along a row, a
        column or a diagonal: the gap between them, in pixels) are one patch — a leaf tip the threshold cut off
        its plant; a patch's size counts its vegetation pixels only, and it reaches into a box only through
        vegetation pixels in the box."""
        p = self.params
        planes = self._planes_for(image)
        h, w = planes.shape
        mask = _mask(image, p.exg_threshold, p.exg_min, p.smooth_px, planes)
        integral = cv2.integral(mask, sum=planes.integral, sdepth=cv2.CV_32S)
        out = []
        inside = [(max(0, x0), min(w, x1), max(0, y0), min(h, y1)) for x0, x1, y0, y1 in boxes]  # within the image
        for x0, x1, y0, y1 in inside:
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"tile box {(x0, x1, y0, y1)} lies outside the {w}x{h} image")
            # vegetated pixels (x 255: the mask is 0/255) above each row boundary of the box
            column = integral[y0:y1 + 1, x1] - integral[y0:y1 + 1, x0]
            fraction = float(column[-1] - column[0]) / (255.0 * (x1 - x0) * (y1 - y0))
            rows = np.flatnonzero(np.diff(column))
            extent = None if rows.size == 0 else VegetationExtent(float(rows[0]) / (y1 - y0),
                                                                  float(rows[-1] + 1) / (y1 - y0))
            out.append(TileVegetation(fraction, fraction < p.min_fraction, extent))
        if plants and not all(v.gated for v in out):  # a bare frame costs no labelling
            out = self._with_plants(mask, inside, out, int(join_px), planes)
        return tuple(out)

    @staticmethod
    def _with_plants(mask: np.ndarray, boxes: Sequence[Box], veg: list[TileVegetation], join_px: int,
                     planes: _Planes) -> list[TileVegetation]:
        """``veg`` with each box's ``plant`` (see ``measure``): the mask grown by ``join_px`` in all (the kernel's
        side is join_px + 1: parts with a gap of up to join_px pixels touch), labelled, and each label's
        vegetation pixels counted; ``boxes`` lie within the image."""
        joined = mask if join_px < 1 else cv2.dilate(mask, np.ones((join_px + 1, join_px + 1), np.uint8),
                                                     dst=planes.joined)
        n, regions = cv2.connectedComponents(joined, labels=planes.regions, connectivity=8, ltype=cv2.CV_32S)
        green = np.greater(mask, 0, out=planes.green)
        areas = np.bincount(regions[green], minlength=n)  # each patch's vegetation pixels (the grown ground left out)
        out = []
        for (x0, x1, y0, y1), v in zip(boxes, veg):
            if v.gated:
                out.append(v)
                continue
            labels = regions[y0:y1, x0:x1][green[y0:y1, x0:x1]]  # the labels of the box's vegetation pixels
            biggest = int(areas[labels].max()) if labels.size else 0
            out.append(replace(v, plant=biggest / ((x1 - x0) * (y1 - y0))))
        return out

    def frame(self, image: np.ndarray) -> TileVegetation:
        """The whole frame as one tile (whole-frame mode)."""
        h, w = image.shape[:2]
        return self.measure(image, [(0, w, 0, h)])[0]


def bare_probs(labels: Sequence[str], background_labels: Sequence[str]) -> np.ndarray:
    """The probabilities the decisions see for a tile the gate called bare ground: all mass on the bundle's
    (first) background label, or zeros when it has none. Its weed score is 0 either way."""
    probs = np.zeros(len(labels), dtype=np.float32)
    if background_labels:
        probs[list(labels).index(background_labels[0])] = 1.0
    return probs
