"""The per-lane processor: frame -> lane tiles -> scores -> a decision per lane -> scheduled sprays.

Used instead of the whole-frame processor when the config has a ``[spray]`` section.

Each frame is cut into a grid: one column per lane (boom section / nozzle, left to right),
``tile_rows`` rows along travel (0 = as many as make the tiles about square, so the
model's centre crop loses little). With the vegetation gate (``[gate]``, on by default
here: ``edge.inference.vegetation``) one mask per frame gives every tile's vegetated
fraction; a tile below the minimum is bare ground: it is not classified (no invoke), its
lane decision sees it as bare ground (all probability on the bundle's background label,
or none: a weed score of 0), and it is never sprayed — it is taken out of whatever this
frame would spray, a hold's strip included. The other tiles of a frame are classified in
a few batched invokes (``Classifier.classify_many``; a model that cannot run a batch
falls back to one invoke per tile, logged once). Each lane is decided on its own
(``edge.decide.lanes``: threshold, N-of-M debounce, hold, fed with the lane's most
weed-like tile); what a lane decides to spray is planned (``edge.spray.planner``): every
weed tile of that lane — including those of the earlier weed frames the debounce was
still waiting on, so the first frame that fired sets the time; a frame without weed
tiles that still sprays schedules its whole lane strip if a hold (``min_hold_ms``) is
set, else nothing. Below the minimum working speed, or with the speed unknown, nothing
is scheduled and pending sprays are cancelled.

The spray log gets a ``speed`` line whenever the travel speed changes (``edge.spray.odometer``),
so replay scoring can place a pass driven at a varying speed.

``LanePlanner`` does one frame's tiles, decisions and plans; ``LaneProcessor`` is the
run loop's ``FrameProcessor`` around it (the pass's start and end in the spray log, the
timings, the fail-safe hooks, the run's spray figures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.frame import Frame
from edge.core.metrics import FrameTimings
from edge.core.tile import Tile
from edge.decide.decider import Decider, Decision
from edge.decide.lanes import LaneDecisions, LaneVerdict
from edge.inference.classifier import Classifier, Scores
from edge.inference.vegetation import Box, TileVegetation, VegetationGate, bare_probs
from edge.loop.processor import GateCounts, GpsState, ProcessedFrame, ProcessorCounts
from edge.service.records import FramePlace, SavedTile
from edge.spray.geometry import Geometry, MaxSpeed, max_speed
from edge.spray.odometer import Odometer
from edge.spray.planner import SprayPlanner
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import SpeedSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneResult:
    lane: int
    channel: int
    decision: Decision
    tile_scores: tuple[float, ...]  # weed score per tile along travel, top row first
    scheduled: int  # intervals handed to the scheduler for this lane on this frame
    late: int  # ... of which late or missed
    decided_tile: int = 0  # the tile the lane's decision was made on (index along travel)
    vegetation: tuple[TileVegetation, ...] | None = None  # per tile along travel (None: the gate is off)
    tiles: tuple[Tile, ...] = ()  # the lane's tiles along travel (for the saved frame's sidecar) ...
    tile_labels: tuple[str, ...] = ()  # ... their top labels ("" for a bare tile, not classified)
    tile_crop_scores: tuple[float, ...] = ()  # ... their crop scores
    tile_sprayed: tuple[bool, ...] = ()  # ... whether each is in this frame's planned spray

    def log_fields(self) -> dict:
        """This lane's entry in the frame's JSONL ``lanes`` list."""
        veg = {} if self.vegetation is None else {"vegetation": [round(v.fraction, 4) for v in self.vegetation],
                                                  "gated": [v.gated for v in self.vegetation]}
        return {"lane": self.lane, "channel": self.channel, "weed_score": round(self.decision.weed_score, 4),
                "tiles": list(self.tile_scores), **veg, "weed_frame": self.decision.weed_frame,
                "vetoed": self.decision.vetoed, "spray": self.decision.spray, "scheduled": self.scheduled, "late": self.late}


@dataclass(frozen=True)
class LaneFrameResult(ProcessedFrame):
    """A per-lane result: ``scores`` are the most weed-like tile's (with the stage times of all
    tiles), ``decision`` the most weed-like lane's (weed_frame / spray: any lane's)."""

    lanes: tuple[LaneResult, ...]
    speed_kmh: float | None
    gate_ms: float = 0.0  # the vegetation gate's time on this frame (part of timings.preprocess)
    distance_cm: float | None = None  # the odometer's distance since the pass's first frame
    gps: tuple[float, float] | None = None  # the speed source's position (a GPS fix), if it knows one

    @property
    def sprayed(self) -> bool:
        """A lane decided to spray (its valve opens later, at the planned time; the scheduler counts the opens)."""
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
                                     x.tile_sprayed[i], gated=veg is not None and veg.gated, lane=x.lane, row=t.row,
                                     ground_cm=(t.front_cm, t.rear_cm)))
        return tuple(out)

    def place(self) -> FramePlace:
        return FramePlace(self.speed_kmh, self.distance_cm, self.gps)


class LanePlanner:
    """Cuts a frame into tiles, gates out the bare ones, classifies the rest in batches, decides per lane, plans
    the sprays. Owns no thread."""

    def __init__(self, classifier: Classifier, make_decider: Callable[[], Decider], geometry: Geometry,
                 scheduler: SprayScheduler, speed: SpeedSource, *, min_speed_kmh: float = 1.0,
                 tile_rows: int = 0, enable: Callable[[], bool] | None = None,
                 vegetation: VegetationGate | None = None):
        self.classifier = classifier
        self.geometry = geometry
        self.scheduler = scheduler
        self.tile_rows = tile_rows
        self.decisions = LaneDecisions(make_decider, geometry.lanes)
        self.spray = SprayPlanner(geometry, scheduler, speed, min_speed_kmh=min_speed_kmh, enable=enable)
        self.debounce_n = self.decisions.debounce_n
        self.vegetation = vegetation  # None: every tile is classified
        m = classifier.bundle.manifest
        self._bare = Scores(bare_probs(classifier.labels, m.background_labels), classifier.labels, 0, 0)
        # the bare tiles of the frames a debounce window may still spray (sightings of earlier frames)
        self._bare_tiles: deque[tuple[int, frozenset[Tile]]] = deque(maxlen=self.decisions.debounce_m)
        self.gate_ns = 0  # the gate's time on the last frame
        self.tiles_seen = 0  # tiles of every frame so far ...
        self.tiles_gated = 0  # ... of which the gate called bare ground
        self._grid: tuple[tuple[int, int], int, tuple[Tile, ...], tuple[Box, ...]] | None = None

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
        """After a stall or a lost camera: every lane's history is dropped."""
        self.decisions.reset()
        self._bare_tiles.clear()

    @property
    def grid(self) -> tuple[int, int] | None:
        """(tile rows, tiles per frame) of the frames seen so far; None before the first frame."""
        return None if self._grid is None else (self._grid[1], len(self._grid[2]))

    def _grid_for(self, width: int, height: int) -> tuple[int, tuple[Tile, ...], tuple[Box, ...]]:
        if self._grid is None or self._grid[0] != (width, height):
            rows = self.tile_rows or self.geometry.auto_rows(width, height)
            tiles = self.geometry.tiles(rows)
            self._grid = ((width, height), rows, tiles, tuple(t.pixels(width, height) for t in tiles))
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
        rows, tiles, crops = self.cut(frame.image)
        veg = None
        self.gate_ns = 0
        if self.vegetation is not None:
            t0 = time.perf_counter_ns()
            veg = self.vegetation.measure(frame.image, self._grid_for(frame.image.shape[1], frame.image.shape[0])[2])
            self.gate_ns = time.perf_counter_ns() - t0
        keep = [i for i in range(len(tiles)) if veg is None or not veg[i].gated]
        scores = [self._bare] * len(tiles)
        if keep:
            for i, s in zip(keep, self.classifier.classify_many([crops[i] for i in keep], frame.colour_order)):
                scores[i] = s
        self.tiles_seen += len(tiles)
        self.tiles_gated += len(tiles) - len(keep)
        return rows, tiles, scores, veg

    def process(self, frame: Frame) -> tuple[list[Scores], list[LaneResult], float | None]:
        rows, tiles, scores, veg = self.classify(frame)
        if veg is not None:
            self._bare_tiles.append((frame.frame_id, frozenset(t for t, v in zip(tiles, veg) if v.gated)))
        gate = self.spray.gate()
        self.decisions.next_frame()
        probs = np.stack([s.probs for s in scores])  # one row per tile, lane by lane
        results = []
        for lane in range(self.geometry.lanes):
            first, end = lane * rows, (lane + 1) * rows
            verdict = self._not_bare(self.decisions.decide(lane, probs[first:end], tiles[first:end], frame))
            planned = self.spray.plan(verdict, frame.frame_id, gate)
            lane_veg = None if veg is None else veg[first:end]
            sprayed = {t for s in verdict.sightings if s.frame_id == frame.frame_id for t in s.tiles} \
                if planned.scheduled else set()
            labels = tuple("" if lane_veg is not None and lane_veg[i].gated else scores[first + i].top[0]
                           for i in range(end - first))
            results.append(LaneResult(lane, self.geometry.channels[lane], verdict.decision, verdict.weed_scores,
                                      planned.scheduled, planned.late, verdict.decided_tile, lane_veg,
                                      tiles=tiles[first:end], tile_labels=labels,
                                      tile_crop_scores=verdict.crop_scores,
                                      tile_sprayed=tuple(t in sprayed for t in tiles[first:end])))
        return scores, results, gate.kmh

    def _not_bare(self, verdict: LaneVerdict) -> LaneVerdict:
        """The verdict without the tiles the gate called bare ground in the frame of each sighting (a hold's
        strip, or any tile at a threshold of 0, would include them): a bare tile is never sprayed."""
        if not self._bare_tiles or not verdict.sightings:
            return verdict
        bare = dict(self._bare_tiles)
        sightings = tuple(replace(s, tiles=tuple(t for t in s.tiles if t not in bare.get(s.frame_id, ())))
                          for s in verdict.sightings)
        return replace(verdict, sightings=sightings)

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
        self.odometer: Odometer | None = None  # distance since the first frame; `speed` lines when it changes

    def process(self, frame: Frame, wait_ns: int = 0) -> LaneFrameResult:
        slog = self.scheduler.spray_log
        if self._last_capture_ns is None:  # replay scoring measures the pass from here
            kmh0 = self.planner.speed.speed_kmh()
            slog.event("pass_start", t_capture_ns=frame.t_capture_ns, frame=frame.frame_id, speed_kmh=kmh0)
            self.odometer = Odometer(frame.t_capture_ns, kmh0)
        self._last_capture_ns = frame.t_capture_ns
        t0 = time.perf_counter_ns()
        scores, lanes, kmh = self.planner.process(frame)
        t1 = time.perf_counter_ns()
        assert self.odometer is not None
        changed = self.odometer.update(frame.t_capture_ns, self.planner.spray.last_kmh)
        if changed is not None:  # replay scoring integrates the speed over the pass
            slog.event("speed", frame=frame.frame_id, **changed)
        decision, agg = _aggregate(frame, lanes, scores, self.planner.classifier.labels)
        gate_ns = self.planner.gate_ns
        classify_ns = agg.preprocess_ns + agg.inference_ns + gate_ns
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=(gate_ns + agg.preprocess_ns) / 1e6,  # the vegetation gate and the tiles' preprocessing
            inference=agg.inference_ns / 1e6,
            decision=max(0, t1 - t0 - classify_ns) / 1e6,  # tiling, deciding and scheduling
            actuation=0.0,  # the scheduler thread switches the valves at their planned times
            end_to_end=max(0, self.clock.now_ns() - frame.t_capture_ns) / 1e6,
        )
        return LaneFrameResult(frame, agg, decision, self.outputs(), timings, lanes=tuple(lanes), speed_kmh=kmh,
                               gate_ms=gate_ns / 1e6, distance_cm=self.odometer.distance_cm,
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

    def at_end_of_source(self, stop: threading.Event, beat: Callable[[], None]) -> None:
        """A video or image folder ended: let the sprays already planned happen (so a dry run's spray log
        is complete), unless a stop is requested. Bounded by the last planned close time."""
        while not stop.is_set():
            nxt = self.scheduler.run_due()
            if nxt is None:
                return
            self.clock.sleep(min(0.01, max(0.0, (nxt - self.clock.now_ns()) / 1e9)) or 0.001)
            beat()

    def max_speed(self, e2e_p95_ms: float, fps: float) -> MaxSpeed:
        """From this run's measured latency (p95 capture -> scheduled, + p95 switching delay) and the geometry."""
        latency = e2e_p95_ms + self.scheduler.summary()["switch_delay_p95_ms"]
        return max_speed(self.planner.geometry, latency, 1000.0 / fps if fps > 0 else None, self.planner.debounce_n)

    def finish(self, e2e_p95_ms: float, fps: float) -> dict:
        """The pass's end in the spray log, and the run's spray figures (scheduler, max speed, GPS)."""
        if self._last_capture_ns is not None:
            dist = {} if self.odometer is None else {"distance_cm": round(self.odometer.distance_cm, 2)}
            self.scheduler.spray_log.event("pass_end", t_capture_ns=self._last_capture_ns, **dist)
        m = self.max_speed(e2e_p95_ms, fps)
        spray = {**self.scheduler.summary(), "too_slow_frames": self.planner.too_slow_frames,
                 "disabled_frames": self.planner.disabled_frames,
                 "max_speed_kmh": round(m.max_kmh, 2), "landing_kmh": round(m.landing_kmh, 2),
                 "coverage_kmh": round(m.coverage_kmh, 2), "limited_by": m.limited_by,
                 "latency_ms": round(m.latency_ms, 2)}
        link = self.planner.speed.link()
        if link is not None:
            spray.update(gps_losses=link.losses, gps_reconnects=link.reconnects)
        return spray
