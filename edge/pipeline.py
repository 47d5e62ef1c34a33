"""The loop: source -> classify -> decide -> actuate -> record, failing safe.

The pipeline owns only the wiring and the safety rules that span stages:
- every output is off before the first frame and after the last, whatever happened
  (``try/finally``), including an exception in any stage and a stop request (signal);
- when no frame has arrived within ``stall_timeout_s`` the outputs go off and the
  decision history is dropped (old frames say nothing about the ground below now);
- max on-time is checked between frames too;
- ``heartbeat`` is called whenever the loop makes progress, including while waiting
  for a lost camera (the systemd watchdog hooks in there).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from edge.actuation import Actuator
from edge.clock import SYSTEM_CLOCK, Clock
from edge.decision import Decider, Decision
from edge.frame import Frame
from edge.inference.classifier import Classifier, Scores
from edge.metrics import FrameTimings, RollingStats
from edge.recorder import JsonlLog, TriggerSaver, wall_time
from edge.sources.base import FrameSource, FrameTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    scores: Scores
    decision: Decision
    outputs: tuple[bool, ...]
    timings: FrameTimings


@dataclass(frozen=True)
class RunSummary:
    frames: int
    weed_frames: int
    spray_frames: int
    dropped: int
    stalls: int
    max_on_trips: int
    stopped_by: str  # "end of source" | "stop requested" | "max frames"
    stats: dict


class Pipeline:
    def __init__(
        self,
        source: FrameSource,
        classifier: Classifier,
        decider: Decider,
        actuator: Actuator,
        *,
        jsonl: JsonlLog | None = None,
        saver: TriggerSaver | None = None,
        stop: threading.Event | None = None,
        clock: Clock = SYSTEM_CLOCK,
        stall_timeout_s: float = 1.0,
        stats_interval_s: float = 5.0,
        max_frames: int | None = None,
        on_frame: Callable[[FrameResult], None] | None = None,
        heartbeat: Callable[[dict], None] | None = None,
    ):
        self.source = source
        self.classifier = classifier
        self.decider = decider
        self.actuator = actuator
        self.jsonl = jsonl or JsonlLog(None)
        self.saver = saver or TriggerSaver(None)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.stall_timeout_s = stall_timeout_s
        self.stats_interval_ns = int(stats_interval_s * 1e9)
        self.max_frames = max_frames
        self.on_frame = on_frame
        self.heartbeat = heartbeat
        self.stats = RollingStats()
        self.stalls = 0
        self._stalled = False

    # -- one frame -------------------------------------------------------------------
    def process(self, frame: Frame, wait_ns: int = 0) -> FrameResult:
        scores = self.classifier.classify(frame.image, frame.colour_order)
        t0 = time.perf_counter_ns()
        decision = self.decider.update(scores.probs, frame.t_capture_ns, frame.frame_id)
        t1 = time.perf_counter_ns()
        self.actuator.apply(decision)
        t2 = time.perf_counter_ns()
        t_switched = self.clock.now_ns()
        outputs = tuple(self.actuator.output.state())
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=scores.preprocess_ns / 1e6,
            inference=scores.inference_ns / 1e6,
            decision=(t1 - t0) / 1e6,
            actuation=(t2 - t1) / 1e6,
            end_to_end=max(0, t_switched - frame.t_capture_ns) / 1e6,
        )
        return FrameResult(frame, scores, decision, outputs, timings)

    def _record(self, r: FrameResult) -> None:
        self.jsonl.write({
            "t_mono_ns": r.frame.t_capture_ns,
            "wall": wall_time(),
            "frame": r.frame.frame_id,
            "source": r.frame.source,
            **({"name": r.frame.name} if r.frame.name else {}),
            "label": r.decision.label,
            "probs": {lbl: round(float(p), 4) for lbl, p in zip(r.scores.labels, r.scores.probs)},
            "weed_score": round(r.decision.weed_score, 4),
            "weed_frame": r.decision.weed_frame,
            "spray": r.decision.spray,
            "outputs": [int(x) for x in r.outputs],
            "ms": r.timings.as_dict(),
        })
        self.saver.maybe_save(r.frame, r.decision)
        self.stats.add(r.frame.t_capture_ns, r.timings, r.decision.weed_frame, r.decision.spray)

    # -- the loop --------------------------------------------------------------------
    def _on_timeout(self, last_frame_ns: int) -> None:
        self.actuator.check_max_on()
        if self.clock.now_ns() - last_frame_ns >= self.stall_timeout_s * 1e9 and not self._stalled:
            self._stalled = True
            self.stalls += 1
            log.warning("no frame for %.1f s from %s: all outputs off until frames return",
                        self.stall_timeout_s, self.source.name)
            self.actuator.fail_safe("stall")
            self.decider.reset()

    def run(self) -> RunSummary:
        self.actuator.fail_safe("start")
        stopped_by = "stop requested"
        poll_s = min(0.1, self.stall_timeout_s / 4)
        last_frame_ns = self.clock.now_ns()
        last_stats_ns = last_frame_ns
        try:
            while not self.stop.is_set():
                t_wait = time.perf_counter_ns()
                try:
                    frame = self.source.read(timeout=poll_s)
                except FrameTimeout:
                    self._on_timeout(last_frame_ns)
                    self._beat()
                    continue
                wait_ns = time.perf_counter_ns() - t_wait
                if frame is None:
                    stopped_by = "end of source"
                    break
                if self._stalled:
                    log.info("frames are back from %s", self.source.name)
                    self._stalled = False
                last_frame_ns = self.clock.now_ns()
                result = self.process(frame, wait_ns)
                self._record(result)
                if self.on_frame is not None:
                    self.on_frame(result)
                self._beat()
                if last_frame_ns - last_stats_ns >= self.stats_interval_ns:
                    last_stats_ns = last_frame_ns
                    log.info(self.stats.line(self.source.dropped))
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    stopped_by = "max frames"
                    break
        finally:
            self.actuator.fail_safe("exit")
            self.jsonl.close()
        log.info(self.stats.line(self.source.dropped))
        return RunSummary(
            frames=self.stats.frames,
            weed_frames=self.stats.weed_frames,
            spray_frames=self.stats.sprays,
            dropped=self.source.dropped,
            stalls=self.stalls,
            max_on_trips=self.actuator.max_on_trips,
            stopped_by=stopped_by,
            stats=self.stats.summary(self.source.dropped),
        )

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat({"frames": self.stats.frames, "fps": self.stats.fps(), "stalled": self._stalled})
