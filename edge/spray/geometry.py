"""Boom geometry: image tiles on the ground, and when a nozzle must open and close for one.

Pure arithmetic, no I/O, no clock: every function takes the times it needs.

Coordinates along travel are centimetres from the point under the camera (the image
centre), positive ahead of it. The nozzles spray on a line ``nozzle_distance_cm`` behind
that point. The vehicle moves forward at ``v`` cm/s, so a ground point that was at
offset ``x`` when the frame was captured reaches the spray line ``(x + D) / v`` seconds
later. A weed is taken to occupy the whole tile it was found in:

- the tile's *leading* edge (its rear edge, the one nearest the nozzle) minus
  ``margin_before_cm`` reaches the spray line at ``t_capture + (rear + D - mb) / v``; the
  valve is commanded ``valve_open_lag_ms`` earlier;
- its *trailing* edge (front edge) plus ``margin_after_cm`` has passed at
  ``t_capture + (front + D + ma) / v``; the valve is commanded ``valve_close_lag_ms``
  earlier, so the flow stops there.

Across travel, lane ``i`` of the image (left to right) is the ground strip under nozzle
``lane_channels[i]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.core.errors import SourceError
from edge.core.tile import Tile
from edge.spray.config import SprayConfig

CM_PER_S_PER_KMH = 100_000 / 3600  # 1 km/h = 27.78 cm/s
MIN_PULSE_NS = 1_000_000  # the shortest open command: 1 ms


def kmh_to_cm_s(kmh: float) -> float:
    return kmh * CM_PER_S_PER_KMH


def cm_s_to_kmh(cm_s: float) -> float:
    return cm_s / CM_PER_S_PER_KMH


@dataclass(frozen=True)
class Geometry:
    lane_edges: tuple[float, ...]  # lanes + 1 fractions of the image width, 0.0 .. 1.0
    channels: tuple[int, ...]  # output channel per lane
    footprint_across_cm: float
    footprint_along_cm: float
    image_top_ahead: bool
    nozzle_distance_cm: float
    margin_before_cm: float
    margin_after_cm: float
    open_lag_ns: int
    close_lag_ns: int

    @classmethod
    def from_config(cls, c: SprayConfig) -> "Geometry":
        widths = c.lane_widths_cm if c.lane_widths_cm is not None else [c.footprint_across_cm / c.lanes] * c.lanes
        total = float(sum(widths))
        edges = [0.0]
        for w in widths:
            edges.append(edges[-1] + w / total)
        edges[-1] = 1.0
        return cls(
            lane_edges=tuple(edges),
            channels=tuple(c.channel_of(i) for i in range(c.lanes)),
            footprint_across_cm=c.footprint_across_cm,
            footprint_along_cm=c.footprint_along_cm,
            image_top_ahead=c.image_top == "ahead",
            nozzle_distance_cm=c.nozzle_distance_cm,
            margin_before_cm=c.margin_before_cm,
            margin_after_cm=c.margin_after_cm,
            open_lag_ns=int(round(c.valve_open_lag_ms * 1e6)),
            close_lag_ns=int(round(c.valve_close_lag_ms * 1e6)),
        )

    @property
    def lanes(self) -> int:
        return len(self.lane_edges) - 1

    @property
    def rear_room_cm(self) -> float:
        """From a ground point at the image's rear edge to where its spray must start (the spray line minus
        ``margin_before_cm``): the room a cell decided as it leaves the image has. At most 0: the spray line lies
        inside the view."""
        return self.nozzle_distance_cm - self.footprint_along_cm / 2 - self.margin_before_cm

    def auto_rows(self, width_px: int, height_px: int) -> int:
        """Rows per lane that make the narrowest lane's tiles roughly square in pixels."""
        narrowest = min(b - a for a, b in zip(self.lane_edges, self.lane_edges[1:])) * width_px
        return max(1, min(32, round(height_px / max(narrowest, 1.0))))

    def _along(self, y: float) -> float:
        half = self.footprint_along_cm / 2
        return half - y * self.footprint_along_cm if self.image_top_ahead else y * self.footprint_along_cm - half

    def tiles(self, rows: int) -> tuple[Tile, ...]:
        """All tiles, lane-major (lane 0 row 0, lane 0 row 1, ...)."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        out = []
        for lane in range(self.lanes):
            for row in range(rows):
                y0, y1 = row / rows, (row + 1) / rows
                a, b = self._along(y0), self._along(y1)
                out.append(Tile(lane, row, self.lane_edges[lane], self.lane_edges[lane + 1], y0, y1,
                                front_cm=max(a, b), rear_cm=min(a, b)))
        return tuple(out)

    def tile_grid(self, width: int, height: int, rows: int = 0) -> tuple[int, tuple[Tile, ...], tuple[tuple[int, int, int, int], ...]]:
        """(rows, tiles, their pixel boxes (x0, x1, y0, y1)) of frames of this size, ``rows`` tiles along travel a
        lane (0: ``auto_rows``); ``SourceError`` when the frame is too small for the grid (a tile would hold no
        pixel) — the per-lane runtime and the tools cut frames by this one grid."""
        rows = rows or self.auto_rows(width, height)
        tiles = self.tiles(rows)
        boxes = tuple(t.pixels(width, height) for t in tiles)
        if any(min(x1, width) <= max(x0, 0) or min(y1, height) <= max(y0, 0) for x0, x1, y0, y1 in boxes):
            raise SourceError(f"a {width}x{height} frame is too small for {self.lanes} lane(s) x {rows} "
                              "tile row(s): a tile would hold no pixel",
                              "feed frames of at least one pixel a tile (a camera's or video's own size; no "
                              "thumbnails in an image folder), or lower [spray] lanes / tile_rows")
        return rows, tiles, boxes

    def tile_area_cm2(self, tile: Tile) -> float:
        """The ground a tile covers, cm² (a camera looking straight down: its share of the footprint)."""
        return (tile.x1 - tile.x0) * self.footprint_across_cm * (tile.front_cm - tile.rear_cm)

    def interval_ns(self, rear_cm: float, front_cm: float, t_capture_ns: int, speed_cm_s: float) -> tuple[int, int]:
        """(open command, close command) in monotonic ns for a weed between ``rear_cm`` and ``front_cm``."""
        if not speed_cm_s > 0:
            raise ValueError(f"speed must be > 0 cm/s to schedule a spray, got {speed_cm_s!r}")
        d = self.nozzle_distance_cm
        t_open = t_capture_ns + (rear_cm + d - self.margin_before_cm) / speed_cm_s * 1e9 - self.open_lag_ns
        t_close = t_capture_ns + (front_cm + d + self.margin_after_cm) / speed_cm_s * 1e9 - self.close_lag_ns
        # A target shorter than (close lag - open lag) cannot be sprayed shorter than the valve allows:
        # close right after opening; the flow then covers at least the target.
        return int(round(t_open)), int(round(max(t_close, t_open + MIN_PULSE_NS)))

    def tile_interval_ns(self, tile: Tile, t_capture_ns: int, speed_cm_s: float) -> tuple[int, int]:
        return self.interval_ns(tile.rear_cm, tile.front_cm, t_capture_ns, speed_cm_s)


@dataclass(frozen=True)
class MaxSpeed:
    landing_kmh: float  # fastest speed at which the rearmost tile's spray is still commanded in time
    coverage_kmh: float  # fastest speed at which every ground point is seen in `views` frames (inf = unknown)
    latency_ms: float  # the latency it was computed for (capture -> scheduled, incl. the valve's opening lag)

    @property
    def max_kmh(self) -> float:
        return max(0.0, min(self.landing_kmh, self.coverage_kmh))

    @property
    def limited_by(self) -> str:
        return "latency" if self.landing_kmh <= self.coverage_kmh else "frame rate"


def max_speed(geom: Geometry, latency_ms: float, frame_period_ms: float | None = None,
              views: int = 1) -> MaxSpeed:
    """The highest travel speed at which sprays still land on target.

    ``latency_ms``: capture -> spray scheduled (the pipeline's measured end-to-end, a high
    percentile), plus any scheduler delay. The valve opening lag is added here. A ground cell
    is decided at the latest on the frame that sees it at the image's rear edge, so the room
    is from there to the spray line. Each ground point must be seen in ``views`` frames (1:
    at least once), which bounds the speed by the frame rate (``frame_period_ms``; None = not
    known, no bound).
    """
    period = frame_period_ms if frame_period_ms and frame_period_ms > 0 else None
    wait_ms = latency_ms + geom.open_lag_ns / 1e6
    room_cm = geom.rear_room_cm  # from the rear edge of the image: the worst case, whatever the tiling
    if room_cm <= 0:
        landing = 0.0
    elif wait_ms <= 0:
        landing = math.inf
    else:
        landing = cm_s_to_kmh(room_cm / (wait_ms / 1e3))
    coverage = math.inf if period is None else cm_s_to_kmh(geom.footprint_along_cm / (views * period / 1e3))
    return MaxSpeed(landing_kmh=landing, coverage_kmh=coverage, latency_ms=wait_ms)
