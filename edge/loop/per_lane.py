"""The per-lane processor: frame -> lane tiles -> scores -> a decision per lane -> scheduled sprays.

Used instead of the whole-frame processor when the config has a ``[spray]`` section.

Each frame is cut into a grid: one column per lane (boom section / nozzle, left to right),
``tile_rows`` rows along travel (0 = as many as make the tiles about square, so the
model's centre crop loses little). All tiles of a frame are classified as one batch, in
one interpreter invoke (``Classifier.classify_many``; a model that cannot run a batch
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
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.frame import Frame
from edge.core.metrics import FrameTimings
from edge.core.tile import Tile
from edge.decide.decider import Decider, Decision
from edge.decide.lanes import LaneDecisions
from edge.inference.classifier import Classifier, Scores
from edge.loop.processor import GpsState, ProcessedFrame, ProcessorCounts
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


@dataclass(frozen=True)
class LaneFrameResult(ProcessedFrame):
    """A per-lane result: ``scores`` are the most weed-like tile's (with the stage times of all
    tiles), ``decision`` the most weed-like lane's (weed_frame / spray: any lane's)."""

    lanes: tuple[LaneResult, ...]
    speed_kmh: float | None

    @property
    def sprayed(self) -> bool:
        """A lane decided to spray (its valve opens later, at the planned time; the scheduler counts the opens)."""
        return self.decision.spray

    def log_fields(self) -> dict:
        return {
            "speed_kmh": self.speed_kmh,
            "lanes": [{"lane": x.lane, "channel": x.channel, "weed_score": round(x.decision.weed_score, 4),
                       "tiles": list(x.tile_scores), "weed_frame": x.decision.weed_frame, "vetoed": x.decision.vetoed,
                       "spray": x.decision.spray, "scheduled": x.scheduled, "late": x.late} for x in self.lanes],
        }


class LanePlanner:
    """Cuts a frame into tiles, classifies them as one batch, decides per lane, plans the sprays. Owns no thread."""

    def __init__(self, classifier: Classifier, make_decider: Callable[[], Decider], geometry: Geometry,
                 scheduler: SprayScheduler, speed: SpeedSource, *, min_speed_kmh: float = 1.0,
                 tile_rows: int = 0, enable: Callable[[], bool] | None = None):
        self.classifier = classifier
        self.geometry = geometry
        self.scheduler = scheduler
        self.tile_rows = tile_rows
        self.decisions = LaneDecisions(make_decider, geometry.lanes)
        self.spray = SprayPlanner(geometry, scheduler, speed, min_speed_kmh=min_speed_kmh, enable=enable)
        self.debounce_n = self.decisions.debounce_n
        self._grid: tuple[tuple[int, int], int, tuple[Tile, ...]] | None = None

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

    @property
    def grid(self) -> tuple[int, int] | None:
        """(tile rows, tiles per frame) of the frames seen so far; None before the first frame."""
        return None if self._grid is None else (self._grid[1], len(self._grid[2]))

    def tiles_for(self, width: int, height: int) -> tuple[int, tuple[Tile, ...]]:
        if self._grid is None or self._grid[0] != (width, height):
            rows = self.tile_rows or self.geometry.auto_rows(width, height)
            self._grid = ((width, height), rows, self.geometry.tiles(rows))
        return self._grid[1], self._grid[2]

    def cut(self, image: np.ndarray) -> tuple[int, tuple[Tile, ...], list[np.ndarray]]:
        h, w = image.shape[:2]
        rows, tiles = self.tiles_for(w, h)
        crops = []
        for t in tiles:
            x0, x1, y0, y1 = t.pixels(w, h)
            crops.append(image[y0:y1, x0:x1])
        return rows, tiles, crops

    def process(self, frame: Frame) -> tuple[list[Scores], list[LaneResult], float | None]:
        rows, tiles, crops = self.cut(frame.image)
        scores = self.classifier.classify_many(crops, frame.colour_order)  # one batch: one invoke for all tiles
        gate = self.spray.gate()
        self.decisions.next_frame()
        probs = np.stack([s.probs for s in scores])  # one row per tile, lane by lane
        results = []
        for lane in range(self.geometry.lanes):
            first, end = lane * rows, (lane + 1) * rows
            verdict = self.decisions.decide(lane, probs[first:end], tiles[first:end], frame)
            planned = self.spray.plan(verdict, frame.frame_id, gate)
            results.append(LaneResult(lane, self.geometry.channels[lane], verdict.decision, verdict.weed_scores,
                                      planned.scheduled, planned.late, verdict.decided_tile))
        return scores, results, gate.kmh


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
        classify_ns = agg.preprocess_ns + agg.inference_ns
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=agg.preprocess_ns / 1e6,
            inference=agg.inference_ns / 1e6,
            decision=max(0, t1 - t0 - classify_ns) / 1e6,  # deciding and scheduling
            actuation=0.0,  # the scheduler thread switches the valves at their planned times
            end_to_end=max(0, self.clock.now_ns() - frame.t_capture_ns) / 1e6,
        )
        return LaneFrameResult(frame, agg, decision, self.outputs(), timings, lanes=tuple(lanes), speed_kmh=kmh)

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
                               unavailable_openings=self.scheduler.unavailable, gps=gps)

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
