"""The whole-frame processor: a frame is classified once, decided once (threshold, N-of-M
debounce, hold: ``edge.decide.decider``) and its decision switches every channel together
(``edge.loop.actuator``).

With the vegetation gate (``[gate] enabled = true``; off by default in this mode) a frame
whose vegetated fraction is below the minimum is bare ground: it is not classified, the
decider sees it as bare ground (all probability on the bundle's background label, or
none: a weed score of 0, so it counts as a frame without a weed in the debounce window),
and it never sprays, even while a hold would keep spraying (the outputs go off); the
frame's JSONL line says ``"gated": true`` and ``--print`` shows ``bare``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.frame import Frame
from edge.core.metrics import FrameTimings
from edge.decide.decider import Decider
from edge.decide.rule import SprayRule
from edge.inference.config import GateParams
from edge.inference.classifier import Classifier, Scores
from edge.inference.vegetation import TileVegetation, VegetationGate, bare_probs
from edge.loop.actuator import Actuator
from edge.loop.processor import GateCounts, ProcessedFrame, ProcessorCounts
from edge.service.records import SavedTile


@dataclass(frozen=True)
class FrameResult(ProcessedFrame):
    """A whole-frame result: one decision for every channel."""

    vegetation: TileVegetation | None = None  # the frame's vegetation (None: the gate is off)

    @property
    def sprayed(self) -> bool:
        """The decision said spray AND the outputs are on (not refused by the enable switch or a lost
        controller, not latched off by the max on-time)."""
        return self.decision.spray and any(self.outputs)

    @property
    def gated(self) -> bool:
        return self.vegetation is not None and self.vegetation.gated

    def log_fields(self) -> dict:
        v = self.vegetation
        return {} if v is None else {"vegetation": round(v.fraction, 4), "gated": v.gated}

    def saved_tiles(self) -> tuple[SavedTile, ...]:
        """The whole frame is one tile."""
        h, w = self.frame.image.shape[:2]
        v, d = self.vegetation, self.decision
        return (SavedTile((0, 0, w, h), "" if self.gated else d.label, d.weed_score, d.crop_score,
                          None if v is None else v.fraction, self.sprayed, gated=self.gated),)


class WholeFrameProcessor:
    """Gate -> classify -> decide -> actuate, one frame at a time (a ``FrameProcessor``)."""

    def __init__(self, classifier: Classifier, decider: Decider, actuator: Actuator, *, clock: Clock = SYSTEM_CLOCK,
                 vegetation: VegetationGate | None = None):
        self.classifier = classifier
        self.decider = decider
        self.actuator = actuator
        self.clock = clock
        self.vegetation = vegetation  # None: every frame is classified
        self._bare = bare_probs(classifier.labels, classifier.bundle.manifest.background_labels)
        self.frames_seen = 0
        self.frames_gated = 0

    def _classify(self, frame: Frame) -> tuple[Scores, TileVegetation | None]:
        """The frame's scores (a bare frame's are the bare view's, without an invoke; the gate's time is part of
        ``preprocess_ns``) and its vegetation."""
        if self.vegetation is None:
            return self.classifier.classify(frame.image, frame.colour_order), None
        t0 = time.perf_counter_ns()
        veg = self.vegetation.frame(frame.image)
        gate_ns = time.perf_counter_ns() - t0
        self.frames_seen += 1
        if veg.gated:
            self.frames_gated += 1
            return Scores(self._bare, self.classifier.labels, preprocess_ns=gate_ns, inference_ns=0), veg
        scores = self.classifier.classify(frame.image, frame.colour_order)
        return replace(scores, preprocess_ns=scores.preprocess_ns + gate_ns), veg

    def process(self, frame: Frame, wait_ns: int = 0) -> FrameResult:
        scores, veg = self._classify(frame)
        t0 = time.perf_counter_ns()
        decision = self.decider.update(scores.probs, frame.t_capture_ns, frame.frame_id)
        if veg is not None and veg.gated:  # bare ground never sprays, whatever a hold says
            decision = replace(decision, spray=False)
        t1 = time.perf_counter_ns()
        self.actuator.apply(decision)
        t2 = time.perf_counter_ns()
        t_switched = self.clock.now_ns()
        timings = FrameTimings(
            capture_wait=wait_ns / 1e6,
            preprocess=scores.preprocess_ns / 1e6,
            inference=scores.inference_ns / 1e6,
            decision=(t1 - t0) / 1e6,
            actuation=(t2 - t1) / 1e6,
            end_to_end=max(0, t_switched - frame.t_capture_ns) / 1e6,
        )
        return FrameResult(frame, scores, decision, self.outputs(), timings, vegetation=veg)

    def between_frames(self) -> None:
        self.actuator.check_max_on()

    def fail_safe(self, reason: str) -> None:
        self.actuator.fail_safe(reason)

    def forget(self) -> None:
        self.decider.reset()

    def outputs(self) -> tuple[bool, ...]:
        return tuple(self.actuator.output.state())

    def counts(self) -> ProcessorCounts:
        a = self.actuator
        gate = None if self.vegetation is None else GateCounts("frames", self.frames_seen, self.frames_gated)
        return ProcessorCounts(max_on_trips=a.max_on_trips, blocked_frames=a.blocked_frames,
                               unavailable_frames=a.unavailable_frames, gate=gate)

    def retune(self, rule: SprayRule | None = None, gate: GateParams | None = None) -> None:
        if rule is not None:
            self.decider.set_rule(rule)
        if gate is not None and self.vegetation is not None:
            self.vegetation.params = gate

    def tuning(self) -> tuple[SprayRule, GateParams | None]:
        return self.decider.rule, None if self.vegetation is None else self.vegetation.params

    def at_end_of_source(self, stop: threading.Event, beat: Callable[[], None]) -> None:
        """Nothing is planned ahead: the outputs go off with the loop's fail-safe."""

    def finish(self, e2e_p95_ms: float, fps: float) -> None:
        return None
