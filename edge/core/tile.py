"""``Tile``: one cell of the image grid cut for per-lane decisions (a value type: the
spray geometry makes them, the lane decisions and the spray planner pass them on)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One cell of the image grid, in image fractions and in ground offsets."""

    lane: int
    row: int  # 0 = top of the image
    x0: float  # fractions of the image width, left to right
    x1: float
    y0: float  # fractions of the image height, top to bottom
    y1: float
    front_cm: float  # along-travel offset of the tile's front (trailing) edge, + = ahead of the camera
    rear_cm: float  # ... of its rear (leading) edge, nearest the nozzle

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, x1, y0, y1) in pixels; neighbouring tiles share their edges, none is empty."""
        px0, px1 = round(self.x0 * width), round(self.x1 * width)
        py0, py1 = round(self.y0 * height), round(self.y1 * height)
        return px0, max(px1, px0 + 1), py0, max(py1, py0 + 1)
