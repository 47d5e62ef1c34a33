"""Per-lane spraying: frame -> lane tiles -> scores -> a decision per lane -> scheduled sprays.

Used instead of the whole-frame decision when the config has a ``[spray]`` section.

Each frame is cut into a grid: one column per lane (boom section / nozzle, left to right),
``tile_rows`` rows along travel (0 = as many as make the tiles about square, so the
model's centre crop loses little). All tiles of a frame are classified as one batch, in
one interpreter invoke (``Classifier.classify_many``; a model that cannot run a batch
falls back to one invoke per tile, logged once). Each lane has its own ``Decider``
(threshold, N-of-M debounce, hold), fed with the lane's most weed-like tile. When a lane's decision says
spray, every weed tile of that lane is scheduled (``edge.spray.geometry`` -> ``edge.spray.scheduler``)
— including those of the earlier weed frames the debounce was still waiting on, so the
first frame that fired sets the time; a frame without weed tiles that still sprays
schedules its whole lane strip if a hold (``min_hold_ms``) is set, else nothing. Below the
minimum working speed, or with the speed unknown, nothing is scheduled and pending sprays
are cancelled.

The spray log gets a ``speed`` line whenever the travel speed changes (``edge.spray.odometer``),
so replay scoring can place a pass driven at a varying speed.

``SprayPipeline`` is the ``edge.loop.runner.Pipeline`` loop (stall check, fail-safe, logs)
with this per-lane processing; ``SprayActuator`` gives the loop its fail-safe hooks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from edge.decide.decider import Decider, Decision
from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.spray.geometry import Geometry, MaxSpeed, Tile, kmh_to_cm_s, max_speed
from edge.inference.classifier import Classifier, Scores
from edge.core.metrics import FrameTimings
from edge.spray.odometer import Odometer
from edge.loop.runner import FrameResult, Pipeline, RunSummary
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import NmeaSpeed, SpeedSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneResult:
    lane: int
    channel: int
    decision: Decision
    tile_scores: tuple[float, ...]  # weed score per tile along travel, top row first
    scheduled: int  # intervals handed to the scheduler for this lane on this frame
    late: int  # ... of which late or missed


@dataclass(frozen=True)
class LaneFrameResult(FrameResult):
    lanes: tuple[LaneResult, ...]
    speed_kmh: float | None


@dataclass
class _Pending:
    t_capture_ns: int
    frame_id: int
    tiles: list[Tile]
    seq: int = 0  # the planner's frame count when it was seen (the debounce window is M frames)


class LanePlanner:
    """Classifies a frame's tiles, decides per lane, plans the sprays. Owns no thread."""

    def __init__(self, classifier: Classifier, make_decider: Callable[[], Decider], geometry: Geometry,
                 scheduler: SprayScheduler, speed: SpeedSource, *, min_speed_kmh: float = 1.0,
                 tile_rows: int = 0, enable: Callable[[], bool] | None = None):
        self.classifier = classifier
        self.geometry = geometry
        self.scheduler = scheduler
        self.speed = speed
        self.min_speed_kmh = min_speed_kmh
        self.tile_rows = tile_rows
        self.enable = enable  # the enable switch: off -> nothing sprays
        self._disabled = False
        self.disabled_frames = 0
        self.deciders = [make_decider() for _ in range(geometry.lanes)]
        first = self.deciders[0]
        self.threshold, self.labels, self.weed_labels = first.threshold, first.labels, first.weed_labels
        self.debounce_n = first.n
        self.debounce_m = first.m
        self._pending: list[deque[_Pending]] = [deque(maxlen=first.m) for _ in range(geometry.lanes)]
        self._seq = 0
        self._grid: tuple[tuple[int, int], int, tuple[Tile, ...]] | None = None
        self._too_slow = False
        self.too_slow_frames = 0
        self.last_kmh: float | None = None  # the speed source's reading at the last frame (None: unknown)
        for ch in geometry.channels:
            if ch >= scheduler.output.channels:
                raise ConfigError(
                    f"[spray] maps a lane to output channel {ch} but the output has {scheduler.output.channels} "
                    "channel(s)", "configure one output channel per nozzle (outputs.channels / outputs.pins) "
                    "or fix [spray] lane_channels")

    # Decider-like: the pipeline resets history after a stall or a lost camera
    def reset(self) -> None:
        for d in self.deciders:
            d.reset()
        for p in self._pending:
            p.clear()

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

    def _speed(self) -> float | None:
        kmh = self.last_kmh = self.speed.speed_kmh()
        slow = kmh is None or kmh < self.min_speed_kmh or kmh <= 0
        if slow and not self._too_slow:
            if kmh is None:
                log.warning("travel speed unknown (no GPS fix yet, or stale): nothing sprays")
            else:
                log.warning("travel speed %.1f km/h is below min_speed_kmh=%.1f: nothing sprays", kmh,
                            self.min_speed_kmh)
            self.scheduler.cancel_all("speed below minimum or unknown")
        elif not slow and self._too_slow:
            log.warning("travel speed %.1f km/h: spraying again", kmh)
        self._too_slow = slow
        return None if slow else kmh

    def _position(self) -> tuple[float, float] | None:
        position = getattr(self.speed, "position", None)  # a GPS speed source knows where we are
        return position() if callable(position) else None

    def process(self, frame: Frame) -> tuple[list[Scores], list[LaneResult], float | None]:
        rows, tiles, crops = self.cut(frame.image)
        scores = self.classifier.classify_many(crops, frame.colour_order)  # one batch: one invoke for all tiles
        kmh = self._speed()
        if kmh is None:
            self.too_slow_frames += 1
        disabled = self.enable is not None and not self.enable()
        if disabled:
            self.disabled_frames += 1
            if not self._disabled:
                self.scheduler.cancel_all("enable switch off")
        self._disabled = disabled
        go = kmh is not None and not disabled
        why = "enable switch off" if disabled else "speed below minimum or unknown"
        results = []
        self._seq += 1
        for pending in self._pending:  # weed frames that left the debounce window no longer count
            while pending and pending[0].seq <= self._seq - self.debounce_m:
                pending.popleft()
        for lane in range(self.geometry.lanes):
            decider = self.deciders[lane]
            idx = range(lane * rows, (lane + 1) * rows)
            ws = [decider.weed_score(scores[i].probs) for i in idx]
            best = lane * rows + int(np.argmax(ws))
            decision = decider.update(scores[best].probs, frame.t_capture_ns, frame.frame_id)
            weed_tiles = [tiles[i] for i, s in zip(idx, ws) if s >= decider.threshold]
            channel = self.geometry.channels[lane]
            scheduled = late = 0
            pending = self._pending[lane]
            if decision.spray and go:
                # this frame's weed tiles; none: it sprays because of the debounce window (its weed frames
                # are scheduled already) or the hold (min_hold_ms: the whole lane strip, to bridge gaps)
                own = weed_tiles or (list(tiles[lane * rows:(lane + 1) * rows]) if decider.min_hold_ns > 0 else [])
                todo = list(pending) + [_Pending(frame.t_capture_ns, frame.frame_id, own, self._seq)]
                pending.clear()
                reason = "weed" if weed_tiles else "hold"
                pos = self._position()
                extra = {"lat": round(pos[0], 7), "lon": round(pos[1], 7)} if pos is not None else None
                for p in todo:
                    for t in p.tiles:
                        o, c = self.geometry.tile_interval_ns(t, p.t_capture_ns, kmh_to_cm_s(kmh))  # type: ignore[arg-type]
                        outcome = self.scheduler.plan(channel, o, c, lane=lane, frame_id=p.frame_id,
                                                      reason=reason if p.frame_id == frame.frame_id else "weed (debounced)",
                                                      extra=extra)
                        scheduled += 1
                        late += outcome.status in ("late", "missed")
            else:
                if decision.spray:  # too slow or switched off: counted, logged, not sprayed
                    self.scheduler.spray_log.event("not_sprayed", lane=lane, channel=channel, frame=frame.frame_id,
                                                   why=why)
                    pending.clear()
                elif decision.weed_frame:
                    pending.append(_Pending(frame.t_capture_ns, frame.frame_id, weed_tiles, self._seq))
                else:
                    self.scheduler.release(channel)
            results.append(LaneResult(lane, channel, decision, tuple(round(s, 4) for s in ws), scheduled, late))
        return scores, results, kmh


class SprayActuator:
    """What the pipeline loop needs from an actuator, backed by the scheduler."""

    def __init__(self, scheduler: SprayScheduler):
        self.scheduler = scheduler
        self.output = scheduler.output

    @property
    def max_on_trips(self) -> int:
        return self.scheduler.max_on_trips

    def check_max_on(self) -> None:
        self.scheduler.check()
        self.scheduler.run_due()

    def fail_safe(self, reason: str) -> None:
        if any(self.output.state()) or any(self.scheduler.pending(c) for c in range(self.output.channels)):
            log.warning("fail-safe (%s): all sprays cancelled, all outputs off", reason)
        self.scheduler.cancel_all(reason)


def _aggregate(frame: Frame, lanes: list[LaneResult], scores: list[Scores], labels) -> tuple[Decision, Scores]:
    top = max(lanes, key=lambda r: r.decision.weed_score)
    d = top.decision
    decision = Decision(frame.frame_id, frame.t_capture_ns, d.weed_score, any(r.decision.weed_frame for r in lanes),
                        any(r.decision.spray for r in lanes), d.label, d.label_prob)
    rows = len(scores) // len(lanes)
    best = scores[top.lane * rows + int(np.argmax(top.tile_scores))]
    agg = Scores(probs=best.probs, labels=tuple(labels), preprocess_ns=sum(s.preprocess_ns for s in scores),
                 inference_ns=sum(s.inference_ns for s in scores))
    return decision, agg


class SprayPipeline(Pipeline):
    """The pipeline loop with per-lane decisions and scheduled sprays (see the module docstring)."""

    def __init__(self, source, classifier: Classifier, planner: LanePlanner, **kw):
        self.planner = planner
        self.scheduler = planner.scheduler
        super().__init__(source, classifier, planner, SprayActuator(planner.scheduler), **kw)  # type: ignore[arg-type]
        self._last_capture_ns: int | None = None
        self.odometer: Odometer | None = None  # distance since the first frame; `speed` lines when it changes
        gps = planner.speed
        self.gps: NmeaSpeed | None = gps if isinstance(gps, NmeaSpeed) else None

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
        changed = self.odometer.update(frame.t_capture_ns, self.planner.last_kmh)
        if changed is not None:  # replay scoring integrates the speed over the pass
            slog.event("speed", frame=frame.frame_id, **changed)
        decision, agg = _aggregate(frame, lanes, scores, self.classifier.labels)
        classify_ns = agg.preprocess_ns + agg.inference_ns
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=agg.preprocess_ns / 1e6,
            inference=agg.inference_ns / 1e6,
            decision=max(0, t1 - t0 - classify_ns) / 1e6,  # deciding and scheduling
            actuation=0.0,  # the scheduler thread switches the valves at their planned times
            end_to_end=max(0, self.clock.now_ns() - frame.t_capture_ns) / 1e6,
        )
        return LaneFrameResult(frame, agg, decision, tuple(self.actuator.output.state()), timings,
                               lanes=tuple(lanes), speed_kmh=kmh)

    def _sprayed(self, r: FrameResult) -> bool:
        """A lane decided to spray (its valve opens later, at the planned time; the scheduler counts the opens)."""
        return r.decision.spray

    def _extra_record(self, r: FrameResult) -> dict:
        if not isinstance(r, LaneFrameResult):
            return {}
        return {
            "speed_kmh": r.speed_kmh,
            "lanes": [{"lane": x.lane, "channel": x.channel, "weed_score": round(x.decision.weed_score, 4),
                       "tiles": list(x.tile_scores), "weed_frame": x.decision.weed_frame,
                       "spray": x.decision.spray, "scheduled": x.scheduled, "late": x.late} for x in r.lanes],
        }

    def _at_end_of_source(self) -> None:
        """A video or image folder ended: let the sprays already planned happen (so a dry run's spray log
        is complete), unless a stop is requested. Bounded by the last planned close time."""
        while not self.stop.is_set():
            nxt = self.scheduler.run_due()
            if nxt is None:
                return
            self.clock.sleep(min(0.01, max(0.0, (nxt - self.clock.now_ns()) / 1e9)) or 0.001)
            self._beat()

    def max_speed(self) -> MaxSpeed:
        """From this run's measured latency (p95 capture -> scheduled, + p95 switching delay) and the geometry."""
        e2e = self.stats.stage("end_to_end")["p95"]
        e2e = 0.0 if e2e != e2e else e2e  # nan: no frames
        fps = self.stats.fps()
        latency = e2e + self.scheduler.summary()["switch_delay_p95_ms"]
        return max_speed(self.planner.geometry, latency, 1000.0 / fps if fps > 0 else None, self.planner.debounce_n)

    def _counters(self) -> str:
        text = ""
        if self.scheduler.blocked:
            text += f", enable switch blocked {self.scheduler.blocked} opening(s)"
        if self.scheduler.unavailable:
            text += f", controller lost: {self.scheduler.unavailable} opening(s) not sprayed"
        if self.gps is not None:
            text += f", GPS lost {self.gps.losses}x, reopened {self.gps.reconnects}x"
        return text

    def status(self) -> dict:
        info = super().status()
        if self.gps is not None:
            gps = self.gps
            state = "lost, reopening" if not gps.connected else "ok" if gps.speed_kmh() is not None else "no speed"
            info.update(gps=state, gps_losses=gps.losses, gps_reconnects=gps.reconnects)
        return info

    def run(self) -> RunSummary:
        summary = super().run()
        if self._last_capture_ns is not None:
            dist = {} if self.odometer is None else {"distance_cm": round(self.odometer.distance_cm, 2)}
            self.scheduler.spray_log.event("pass_end", t_capture_ns=self._last_capture_ns, **dist)
        m = self.max_speed()
        spray = {**self.scheduler.summary(), "too_slow_frames": self.planner.too_slow_frames,
                 "disabled_frames": self.planner.disabled_frames,
                 "max_speed_kmh": round(m.max_kmh, 2), "landing_kmh": round(m.landing_kmh, 2),
                 "coverage_kmh": round(m.coverage_kmh, 2), "limited_by": m.limited_by,
                 "latency_ms": round(m.latency_ms, 2)}
        if self.gps is not None:
            spray.update(gps_losses=self.gps.losses, gps_reconnects=self.gps.reconnects)
        return replace(summary, stats={**summary.stats, "spray": spray})


def max_speed_line(spray: dict) -> str:
    """The human line edge-run prints at the end of a run with [spray]."""
    cov = "no bound" if spray["coverage_kmh"] == float("inf") else f"{spray['coverage_kmh']:.1f} km/h"
    return (f"max speed: {spray['max_speed_kmh']:.1f} km/h (limited by {spray['limited_by']}; sprays land up to "
            f"{spray['landing_kmh']:.1f} km/h with {spray['latency_ms']:.1f} ms from capture to valve command incl. "
            f"valve lag; frame coverage {cov}) | sprays: {spray['planned']} planned, {spray['late']} late "
            f"({spray['missed']} missed), {spray['opens']} opens, {spray['max_on_trips']} max-on trips, "
            f"{spray['too_slow_frames']} frames below min speed"
            + (f", {spray['disabled_frames']} with the enable switch off" if spray.get("disabled_frames") else "")
            + (f", {spray['blocked']} openings blocked by the enable switch" if spray.get("blocked") else "")
            + (f", {spray['unavailable']} openings not sprayed (controller lost)" if spray.get("unavailable") else "")
            + (f", GPS lost {spray['gps_losses']}x (reopened {spray['gps_reconnects']}x)"
               if spray.get("gps_losses") else ""))
