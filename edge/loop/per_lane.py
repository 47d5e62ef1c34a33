"""The per-lane processor: frame -> lane tiles -> views -> ground cells decided once -> scheduled sprays.

Used instead of the whole-frame processor when the config has a ``[spray]`` section.

Each frame is cut into a grid: one column per lane (boom section / nozzle, left to right),
``tile_rows`` rows along travel (0 = as many as make the tiles about square, so the
model's centre crop loses little). With the vegetation gate (``[gate]``, on by default
here: ``edge.inference.vegetation``) one mask per frame gives every tile's vegetated
fraction; a tile below the minimum is bare ground: it is not classified (no invoke) and
never sprayed. The other tiles of a frame are classified in a few batched invokes
(``Classifier.classify_many``; a model that cannot run a batch falls back to one invoke
per tile, logged once). Every tile is one view of the spray rule (``edge.decide.rule``);
the views are placed on the ground cells they cover (``edge.spray.cells``: lane x
``cell_length_cm`` along travel, registered by the distance travelled), a classified
tile's on the cells its vegetation covers, and each cell is decided once, when it leaves
the image or at its latest decision time (``latency_ms``: the run's p95 capture -> planned
latency, given by ``LaneProcessor``); a cell that sprays is planned over the extent of its
plant (``edge.spray.planner``). Below the minimum working speed, or with the speed unknown,
nothing is placed, the pending cells are decided and not sprayed, and pending sprays are
cancelled.

The spray log gets a ``speed`` line whenever the travel speed changes (``edge.spray.odometer``),
so replay scoring can place a pass driven at a varying speed.

``LanePlanner`` does one frame's tiles, decisions and plans; ``LaneProcessor`` is the
run loop's ``FrameProcessor`` around it (the pass's start and end in the spray log, the
timings, the fail-safe hooks, the run's spray figures).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.core.metrics import FrameTimings, percentile
from edge.core.tile import Tile
from edge.decide.decider import Decision
from edge.decide.rule import SprayRule, ViewEvidence
from edge.inference.classifier import Classifier, Scores
from edge.inference.scoring import TileClassifier, TileScorer
from edge.inference.config import GateParams
from edge.inference.vegetation import Box, TileVegetation, VegetationGate, bare_probs
from edge.loop.processor import GateCounts, GpsState, ProcessedFrame, ProcessorCounts
from edge.service.records import FramePlace, SavedTile
from edge.spray.cells import CellCounts, CellGrid, TileView, lane_counts
from edge.spray.geometry import Geometry, MaxSpeed, kmh_to_cm_s, max_speed
from edge.spray.config import CELL_LENGTH_CM, LATENCY_FLOOR_MS, MIN_PLANT_CM2, MIN_PLANT_SHARE, PLANT_JOIN_CM
from edge.spray.odometer import Odometer
from edge.spray.planner import Gate, SprayPlanner
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import SpeedSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneResult:
    lane: int
    channel: int
    decision: Decision  # the lane's most weed-like tile (weed_frame: it fires); spray: a cell of the lane sprays
    tile_scores: tuple[float, ...]  # weed score per tile along travel, top row first
    scheduled: int  # intervals handed to the scheduler for this lane on this frame
    late: int  # ... of which late or missed
    decided_tile: int = 0  # the lane's most weed-like tile (index along travel): the one ``decision`` shows
    vegetation: tuple[TileVegetation, ...] | None = None  # per tile along travel (None: the gate is off)
    cells: CellCounts | None = None  # the lane's cells decided, sprayed, vetoed on this frame, and still pending
    # the plants of the cells decided to spray on this frame: (rear, front) cm from the image centre at this frame
    targets_cm: tuple[tuple[float, float], ...] = ()
    tiles: tuple[Tile, ...] = ()  # the lane's tiles along travel (for a saved frame's sidecar) ...
    tile_labels: tuple[str, ...] = ()  # ... their top labels ("" for a bare tile, not classified)
    tile_crop_scores: tuple[float, ...] = ()  # ... their crop scores
    tile_fires: tuple[bool, ...] = ()  # ... whether each tile's view fires by itself (weed, not vetoed)

    def tile_sprayed(self, i: int) -> bool:
        """Tile ``i``'s ground overlaps a plant this frame planned to spray (cells decided on a later frame: no)."""
        t = self.tiles[i]
        lo, hi = min(t.rear_cm, t.front_cm), max(t.rear_cm, t.front_cm)
        return any(max(lo, min(a, b)) < min(hi, max(a, b)) for a, b in self.targets_cm)

    def log_fields(self) -> dict:
        """This lane's entry in the frame's JSONL ``lanes`` list."""
        veg = {} if self.vegetation is None else {"vegetation": [round(v.fraction, 4) for v in self.vegetation],
                                                  "gated": [v.gated for v in self.vegetation]}
        cells = {} if self.cells is None else {"cells": self.cells.log_fields()}
        if self.targets_cm:
            cells["targets_cm"] = [[round(a, 2), round(b, 2)] for a, b in self.targets_cm]
        return {"lane": self.lane, "channel": self.channel, "weed_score": round(self.decision.weed_score, 4),
                "tiles": list(self.tile_scores), **veg, "weed_frame": self.decision.weed_frame,
                "vetoed": self.decision.vetoed, "spray": self.decision.spray, **cells, "scheduled": self.scheduled,
                "late": self.late}


@dataclass(frozen=True)
class LaneFrameResult(ProcessedFrame):
    """A per-lane result: ``scores`` are the most weed-like tile's (with the stage times of all
    tiles), ``decision`` the most weed-like lane's (weed_frame / spray: any lane's)."""

    lanes: tuple[LaneResult, ...]
    speed_kmh: float | None
    gate_ms: float = 0.0  # the vegetation gate's time on this frame (part of timings.preprocess)
    tiles: tuple[Tile, ...] = ()  # the frame's tiles, lane by lane, along travel (the cached tuple: the live view)
    distance_cm: float | None = None  # the odometer's distance since the pass's first frame
    gps: tuple[float, float] | None = None  # the speed source's position (a GPS fix), if it knows one

    @property
    def sprayed(self) -> bool:
        """A lane decided to spray a cell (its valve opens later, at the planned time; the scheduler counts the opens)."""
        return self.decision.spray

    @property
    def gated(self) -> bool:
        """Every tile of the frame was bare ground (the gate classified none of them)."""
        return all(x.vegetation is not None and all(v.gated for v in x.vegetation) for x in self.lanes)

    def log_fields(self) -> dict:
        return {"speed_kmh": self.speed_kmh, "lanes": [x.log_fields() for x in self.lanes]}

    def saved_tiles(self) -> tuple[SavedTile, ...]:
        """Every lane tile (lane by lane, top row first) with its box in pixels, scores and vegetation."""
        h, w = self.frame.image.shape[:2]
        out = []
        for x in self.lanes:
            for i, t in enumerate(x.tiles):
                x0, x1, y0, y1 = t.pixels(w, h)
                veg = None if x.vegetation is None else x.vegetation[i]
                out.append(SavedTile((x0, y0, x1 - x0, y1 - y0), x.tile_labels[i], float(x.tile_scores[i]),
                                     float(x.tile_crop_scores[i]), None if veg is None else veg.fraction,
                                     x.tile_sprayed(i), gated=veg is not None and veg.gated, lane=x.lane, row=t.row,
                                     ground_cm=(t.front_cm, t.rear_cm)))
        return tuple(out)

    def place(self) -> FramePlace:
        return FramePlace(self.speed_kmh, self.distance_cm, self.gps)


@dataclass(frozen=True)
class _Anchor:
    """Where and when the last frame was: the cells' ground positions become valve times from there."""

    frame_id: int
    t_capture_ns: int
    distance_cm: float
    gate: Gate


class LanePlanner:
    """Cuts a frame into tiles, gates out the bare ones, classifies the rest in batches, places their views on the
    ground cells, decides the cells that are due, plans their sprays. Owns no thread."""

    def __init__(self, classifier: Classifier, rule: SprayRule, geometry: Geometry,
                 scheduler: SprayScheduler, speed: SpeedSource, *, min_speed_kmh: float = 1.0,
                 tile_rows: int = 0, enable: Callable[[], bool] | None = None,
                 vegetation: VegetationGate | None = None, cell_length_cm: float = CELL_LENGTH_CM,
                 min_plant_share: float = MIN_PLANT_SHARE, min_plant_cm2: float = MIN_PLANT_CM2,
                 plant_join_cm: float = PLANT_JOIN_CM, latency_floor_ms: float = LATENCY_FLOOR_MS,
                 scorer: TileScorer | None = None, log_spared: bool = True):
        self.classifier = classifier
        self.rule = rule
        self.scorer = scorer or TileClassifier(classifier)  # [model] scoring: how the kept tiles get their Scores
        self.geometry = geometry
        self.scheduler = scheduler
        self.tile_rows = tile_rows
        self.cells = CellGrid(rule, geometry, cell_length_cm, min_plant_share, min_plant_cm2)
        self.plant_join_cm = plant_join_cm  # parts of the mask at most this far apart are one plant (min_plant_cm2)
        # spared cells are those the gate saw a plant in; without the gate every cell would be one
        self.spray = SprayPlanner(geometry, scheduler, speed, min_speed_kmh=min_speed_kmh, enable=enable,
                                  log_spared=log_spared and vegetation is not None)
        self.latency_floor_ns = int(latency_floor_ms * 1e6)
        self.vegetation = vegetation  # None: every tile is classified
        m = classifier.bundle.manifest
        self._bare = Scores(bare_probs(classifier.labels, m.background_labels), classifier.labels, 0, 0)
        self.gate_ns = 0  # the gate's time on the last frame
        self.warm_up_ns = 0  # the scorer's warm-up on the last frame (a new frame size), else 0
        self.tiles_seen = 0  # tiles of every frame so far ...
        self.tiles_gated = 0  # ... of which the gate called bare ground
        self.cells_dropped = 0  # cells forgotten undecided (a stall, a lost camera)
        self.odometer: Odometer | None = None  # distance since the first frame: the cells' ground coordinate
        self.speed_change: dict | None = None  # the last frame's ``speed`` line for the spray log, if one is due
        self._intervals: deque[int] = deque(maxlen=31)  # the last capture intervals (ns): the frame period
        self._last_capture_ns: int | None = None
        self._anchor: _Anchor | None = None
        self._grid: tuple[tuple[int, int], int, tuple[Tile, ...], tuple[Box, ...]] | None = None
        self._join_px = 0

    @property
    def speed(self) -> SpeedSource:
        return self.spray.speed

    @property
    def too_slow_frames(self) -> int:
        return self.spray.too_slow_frames

    @property
    def disabled_frames(self) -> int:
        return self.spray.disabled_frames

    def reset(self) -> None:
        """After a stall or a lost camera: the cells undecided are forgotten (what was seen says nothing now)."""
        self.cells_dropped += self.cells.clear()
        self._last_capture_ns = None

    @property
    def grid(self) -> tuple[int, int] | None:
        """(tile rows, tiles per frame) of the frames seen so far; None before the first frame."""
        return None if self._grid is None else (self._grid[1], len(self._grid[2]))

    def _grid_for(self, width: int, height: int) -> tuple[int, tuple[Tile, ...], tuple[Box, ...]]:
        """The tile grid of frames of this size; the first frame of a size also warms the scorer up for it
        (``warm_up_ns``: how long that took, kept out of the run's latency)."""
        if self._grid is None or self._grid[0] != (width, height):
            rows, tiles, boxes = self.geometry.tile_grid(width, height, self.tile_rows)
            self._grid = ((width, height), rows, tiles, boxes)
            # the join distance in pixels of this frame size (the mean scale across and along travel)
            px_per_cm = math.sqrt(width / self.geometry.footprint_across_cm * height / self.geometry.footprint_along_cm)
            self._join_px = int(round(self.plant_join_cm * px_per_cm))
            t0 = time.perf_counter_ns()
            self.scorer.warm_up(width, height, len(tiles))
            self.warm_up_ns = time.perf_counter_ns() - t0
            log.info("tiles: %d a frame (%d row(s) a lane) at %dx%d; scorer ready in %.0f ms", len(tiles), rows,
                     width, height, self.warm_up_ns / 1e6)
        return self._grid[1], self._grid[2], self._grid[3]

    def tiles_for(self, width: int, height: int) -> tuple[int, tuple[Tile, ...]]:
        rows, tiles, _ = self._grid_for(width, height)
        return rows, tiles

    def cut(self, image: np.ndarray) -> tuple[int, tuple[Tile, ...], list[np.ndarray]]:
        h, w = image.shape[:2]
        rows, tiles, boxes = self._grid_for(w, h)
        return rows, tiles, [image[y0:y1, x0:x1] for x0, x1, y0, y1 in boxes]

    def classify(self, frame: Frame) -> tuple[int, tuple[Tile, ...], list[Scores], tuple[TileVegetation, ...] | None]:
        """The frame's tiles, their scores (a bare tile's are the bare view's, without an invoke) and vegetation."""
        self.warm_up_ns = 0
        rows, tiles, boxes = self._grid_for(frame.image.shape[1], frame.image.shape[0])
        veg = None
        self.gate_ns = 0
        if self.vegetation is not None:
            t0 = time.perf_counter_ns()
            veg = self.vegetation.measure(frame.image, boxes, plants=self.cells.min_plant_cm2 > 0, join_px=self._join_px)
            self.gate_ns = time.perf_counter_ns() - t0
        keep = [i for i in range(len(tiles)) if veg is None or not veg[i].gated]
        scores = [self._bare] * len(tiles)
        if keep:
            for i, s in zip(keep, self.scorer.score(frame.image, [boxes[i] for i in keep], frame.colour_order)):
                scores[i] = s
        self.tiles_seen += len(tiles)
        self.tiles_gated += len(tiles) - len(keep)
        return rows, tiles, scores, veg

    def frame_period_ns(self) -> int:
        """When the next frame is due: the 90th percentile of the last 31 capture intervals, so that frames a
        live source drops now and then (the pipeline fell behind) count; 0 before the second frame."""
        return int(percentile(self._intervals, 90)) if self._intervals else 0

    def _track(self, frame: Frame) -> tuple[Gate, float]:
        """This frame's speed gate and distance travelled (the odometer; ``speed_change`` when a line is due)."""
        gate = self.spray.gate()
        kmh = self.spray.last_kmh
        t = frame.t_capture_ns
        if self.odometer is None:
            self.odometer = Odometer(t, kmh)
        self.speed_change = self.odometer.update(t, kmh)
        if self._last_capture_ns is not None and t > self._last_capture_ns:
            self._intervals.append(t - self._last_capture_ns)
        self._last_capture_ns = t
        return gate, self.odometer.distance_cm

    def process(self, frame: Frame, latency_ms: float | None = None) -> tuple[list[Scores], list[LaneResult], float | None]:
        """One frame: ``latency_ms`` is the pipeline's capture -> planned latency (a high percentile; None or
        less than ``latency_floor_ms``: the floor), which the cells' decision deadline keeps free."""
        rows, tiles, scores, veg = self.classify(frame)
        labels = self.classifier.labels
        gate, distance = self._track(frame)
        views = self.rule.view(np.stack([s.probs for s in scores]))  # one row per tile, lane by lane
        fires = np.asarray(self.rule.fires(views), bool).reshape(-1)
        weed = np.asarray(views.weed_mass, np.float64).reshape(-1)
        if gate.kmh is None:  # stopped or the speed unknown: nothing can be placed; what was pending is not sprayed
            decided = self.cells.decide_all("stopped")
        else:
            self.cells.place(distance, self._tile_views(tiles, views, veg), frame.frame_id)
            latency_ns = max(self.latency_floor_ns, int((latency_ms or 0.0) * 1e6))
            decided = self.cells.due(distance, frame.t_capture_ns, kmh_to_cm_s(gate.kmh), self.frame_period_ns(),
                                     latency_ns)
        self._anchor = _Anchor(frame.frame_id, frame.t_capture_ns, distance, gate)
        counts = lane_counts(decided, self.geometry.lanes, self.cells)
        results = []
        for lane in range(self.geometry.lanes):
            first, end = lane * rows, (lane + 1) * rows
            mine = [d for d in decided if d.cell.lane == lane]
            planned = self.spray.plan(lane, mine, frame.frame_id, gate, distance, frame.t_capture_ns,
                                      weed_seen=bool(fires[first:end].any()))
            best = first + max(range(rows), key=lambda i: (fires[first + i], weed[first + i]))
            probs = scores[best].probs
            top = int(np.argmax(probs))
            decision = Decision(frame.frame_id, frame.t_capture_ns, float(weed[best]), bool(fires[best]),
                                any(d.spray for d in mine), self.classifier.labels[top], float(probs[top]),
                                crop_score=float(np.asarray(views.crop_mass).reshape(-1)[best]),
                                vetoed=bool(np.asarray(views.vetoed).reshape(-1)[best]),
                                weed_log_odds=float(np.asarray(views.weed_log_odds).reshape(-1)[best]))
            lane_veg = None if veg is None else veg[first:end]
            labels = tuple("" if lane_veg is not None and lane_veg[i].gated else scores[first + i].top[0]
                           for i in range(end - first))
            crop = np.asarray(views.crop_mass, np.float64).reshape(-1)[first:end]
            results.append(LaneResult(lane, self.geometry.channels[lane], decision,
                                      tuple(round(float(x), 4) for x in weed[first:end]), planned.scheduled,
                                      planned.late, best - first, lane_veg,
                                      counts[lane], tuple((d.cell.plant[0] - distance, d.cell.plant[1] - distance)
                                                          for d in mine if d.spray and d.cell.plant is not None),
                                      tiles=tuple(tiles[first:end]), tile_labels=labels,
                                      tile_crop_scores=tuple(round(float(c), 4) for c in crop),
                                      tile_fires=tuple(bool(x) for x in fires[first:end])))
        return scores, results, gate.kmh

    @property
    def tiles(self) -> tuple[Tile, ...]:
        """The last frame's tiles (the cached tuple: no copy)."""
        return () if self._grid is None else self._grid[2]

    def retune(self, rule: SprayRule | None, gate: GateParams | None) -> None:
        """From the next frame on: the tiles' views and the cells' decisions by ``rule`` (cells still pending are
        decided by it too), the gate by ``gate`` (None: unchanged). The loop's thread, between frames."""
        if rule is not None:
            if rule.labels != self.rule.labels:
                raise ConfigError("a new spray rule must be for the same model labels",
                                  "build it from the running bundle")
            self.rule = self.cells.rule = rule
        if gate is not None and self.vegetation is not None:
            self.vegetation.params = gate

    def _tile_views(self, tiles: Sequence[Tile], views: ViewEvidence,
                    veg: tuple[TileVegetation, ...] | None) -> list[TileView]:
        """Each tile as the cells see it: bare (the gate) or classified, with its vegetation's extent."""
        log_odds, vetoed = np.asarray(views.weed_log_odds).reshape(-1), np.asarray(views.vetoed).reshape(-1)
        weed, crop = np.asarray(views.weed_mass).reshape(-1), np.asarray(views.crop_mass).reshape(-1)
        out = []
        for i, tile in enumerate(tiles):
            v = None if veg is None else veg[i]
            if v is not None and v.gated:
                out.append(TileView(tile, None))
                continue
            plant = None if v is None or v.extent is None else v.extent.along_cm(tile, self.geometry.image_top_ahead)
            area = None if v is None or v.plant is None else v.plant * self.geometry.tile_area_cm2(tile)
            out.append(TileView(tile, ViewEvidence(float(log_odds[i]), bool(vetoed[i]), float(weed[i]),
                                                   float(crop[i])), plant, area))
        return out

    def finish_cells(self) -> int:
        """The source ended: every cell still pending is decided now and planned from the last frame (so a dry
        run's spray log is complete); how many intervals were planned."""
        a = self._anchor
        if a is None or not len(self.cells):
            return 0
        decided = self.cells.decide_all("end")
        return sum(self.spray.plan(lane, [d for d in decided if d.cell.lane == lane], a.frame_id, a.gate,
                                   a.distance_cm, a.t_capture_ns, weed_seen=True).scheduled
                   for lane in range(self.geometry.lanes))

    @property
    def gate_counts(self) -> GateCounts | None:
        return None if self.vegetation is None else GateCounts("tiles", self.tiles_seen, self.tiles_gated)


def _aggregate(frame: Frame, lanes: list[LaneResult], scores: list[Scores], labels) -> tuple[Decision, Scores]:
    top = max(lanes, key=lambda r: r.decision.weed_score)
    d = top.decision
    decision = Decision(frame.frame_id, frame.t_capture_ns, d.weed_score, any(r.decision.weed_frame for r in lanes),
                        any(r.decision.spray for r in lanes), d.label, d.label_prob, crop_score=d.crop_score,
                        vetoed=d.vetoed, weed_log_odds=d.weed_log_odds)
    rows = len(scores) // len(lanes)
    best = scores[top.lane * rows + top.decided_tile]
    agg = Scores(probs=best.probs, labels=tuple(labels), preprocess_ns=sum(s.preprocess_ns for s in scores),
                 inference_ns=sum(s.inference_ns for s in scores))
    return decision, agg


class LaneProcessor:
    """The run loop's ``FrameProcessor`` for per-lane spraying (see the module docstring)."""

    def __init__(self, planner: LanePlanner, *, clock: Clock = SYSTEM_CLOCK):
        self.planner = planner
        self.scheduler = planner.scheduler
        self.output = planner.scheduler.output
        self.clock = clock
        self._last_capture_ns: int | None = None
        self._e2e_ms: deque[float] = deque(maxlen=300)  # the last frames' end to end: the cells' deadline latency
        self._latency_ms: float | None = None  # p95 of those + the scheduler's p95 switching delay, refreshed ...
        self._latency_age = 0  # ... every LATENCY_EVERY frames

    LATENCY_EVERY = 10

    @property
    def odometer(self) -> Odometer | None:
        """Distance since the first frame (the planner's: the cells are registered by it); `speed` lines."""
        return self.planner.odometer

    def latency_ms(self) -> float | None:
        """The latency the cells' decision deadline keeps free: p95 of the run's end to end (capture -> planned)
        over the last 300 frames plus the scheduler's p95 switching delay; None before the first frame."""
        if self._e2e_ms and (self._latency_ms is None or self._latency_age >= self.LATENCY_EVERY):
            self._latency_ms = percentile(self._e2e_ms, 95) + self.scheduler.summary()["switch_delay_p95_ms"]
            self._latency_age = 0
        self._latency_age += 1
        return self._latency_ms

    def process(self, frame: Frame, wait_ns: int = 0) -> LaneFrameResult:
        slog = self.scheduler.spray_log
        if self._last_capture_ns is None:  # replay scoring measures the pass from here
            slog.event("pass_start", t_capture_ns=frame.t_capture_ns, frame=frame.frame_id,
                       speed_kmh=self.planner.speed.speed_kmh(), log_spared=self.planner.spray.log_spared,
                       lane_channels=list(self.planner.geometry.channels))  # replay checks its config against it
        self._last_capture_ns = frame.t_capture_ns
        t0 = time.perf_counter_ns()
        scores, lanes, kmh = self.planner.process(frame, self.latency_ms())
        t1 = time.perf_counter_ns()
        changed = self.planner.speed_change
        if changed is not None:  # replay scoring integrates the speed over the pass
            slog.event("speed", frame=frame.frame_id, **changed)
        decision, agg = _aggregate(frame, lanes, scores, self.planner.classifier.labels)
        gate_ns = self.planner.gate_ns
        classify_ns = agg.preprocess_ns + agg.inference_ns + gate_ns
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=(gate_ns + agg.preprocess_ns) / 1e6,  # the vegetation gate and the tiles' preprocessing
            inference=agg.inference_ns / 1e6,
            decision=max(0, t1 - t0 - classify_ns - self.planner.warm_up_ns) / 1e6,  # tiling, deciding and scheduling
            actuation=0.0,  # the scheduler thread switches the valves at their planned times
            end_to_end=max(0, self.clock.now_ns() - frame.t_capture_ns) / 1e6,
        )
        # a new frame size's warm-up (once) is not the pipeline's latency: the deadline does not keep it free
        self._e2e_ms.append(max(0.0, timings.end_to_end - self.planner.warm_up_ns / 1e6))
        odo = self.odometer
        return LaneFrameResult(frame, agg, decision, self.outputs(), timings, lanes=tuple(lanes), speed_kmh=kmh,
                               gate_ms=gate_ns / 1e6, tiles=self.planner.tiles,
                               distance_cm=None if odo is None else odo.distance_cm,
                               gps=self.planner.speed.position())

    def between_frames(self) -> None:
        self.scheduler.check()
        self.scheduler.run_due()

    def fail_safe(self, reason: str) -> None:
        if any(self.output.state()) or any(self.scheduler.pending(c) for c in range(self.output.channels)):
            log.warning("fail-safe (%s): all sprays cancelled, all outputs off", reason)
        self.scheduler.cancel_all(reason)

    def forget(self) -> None:
        self.planner.reset()

    def outputs(self) -> tuple[bool, ...]:
        return tuple(self.output.state())

    def counts(self) -> ProcessorCounts:
        link = self.planner.speed.link()
        gps = GpsState(link, self.planner.speed.speed_kmh() is not None) if link is not None else None
        return ProcessorCounts(max_on_trips=self.scheduler.max_on_trips, blocked_openings=self.scheduler.blocked,
                               unavailable_openings=self.scheduler.unavailable, gps=gps, gate=self.planner.gate_counts)

    def retune(self, rule: SprayRule | None = None, gate: GateParams | None = None) -> None:
        self.planner.retune(rule, gate)

    def tuning(self) -> tuple[SprayRule, GateParams | None]:
        p = self.planner
        return p.rule, None if p.vegetation is None else p.vegetation.params

    def at_end_of_source(self, stop: threading.Event, beat: Callable[[], None]) -> None:
        """A video or image folder ended: let the sprays already planned happen (so a dry run's spray log
        is complete), unless a stop is requested. The cells still pending are decided first (``finish_cells``).
        Bounded by the last planned close time."""
        self.planner.finish_cells()
        while not stop.is_set():
            nxt = self.scheduler.run_due()
            if nxt is None:
                return
            self.clock.sleep(min(0.01, max(0.0, (nxt - self.clock.now_ns()) / 1e9)) or 0.001)
            beat()

    def max_speed(self, e2e_p95_ms: float, fps: float) -> MaxSpeed:
        """From this run's measured latency (p95 capture -> scheduled, + p95 switching delay) and the geometry."""
        latency = e2e_p95_ms + self.scheduler.summary()["switch_delay_p95_ms"]
        return max_speed(self.planner.geometry, latency, 1000.0 / fps if fps > 0 else None)

    def finish(self, e2e_p95_ms: float, fps: float) -> dict:
        """The pass's end in the spray log, and the run's spray figures (scheduler, max speed, GPS)."""
        if self._last_capture_ns is not None:
            dist = {} if self.odometer is None else {"distance_cm": round(self.odometer.distance_cm, 2)}
            self.scheduler.spray_log.event("pass_end", t_capture_ns=self._last_capture_ns, **dist)
        m = self.max_speed(e2e_p95_ms, fps)
        spray = {**self.scheduler.summary(), "too_slow_frames": self.planner.too_slow_frames,
                 "disabled_frames": self.planner.disabled_frames, "cells_dropped": self.planner.cells_dropped,
                 "max_speed_kmh": round(m.max_kmh, 2), "landing_kmh": round(m.landing_kmh, 2),
                 "coverage_kmh": round(m.coverage_kmh, 2), "limited_by": m.limited_by,
                 "latency_ms": round(m.latency_ms, 2)}
        link = self.planner.speed.link()
        if link is not None:
            spray.update(gps_losses=link.losses, gps_reconnects=link.reconnects)
        return spray
