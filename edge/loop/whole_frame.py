"""The whole-frame processor: a frame is classified once, decided once (threshold, N-of-M
debounce, hold: ``edge.decide.decider``) and its decision switches every channel together
(``edge.loop.actuator``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.frame import Frame
from edge.core.metrics import FrameTimings
from edge.decide.decider import Decider
from edge.inference.classifier import Classifier
from edge.loop.actuator import Actuator
from edge.loop.processor import ProcessedFrame, ProcessorCounts


@dataclass(frozen=True)
class FrameResult(ProcessedFrame):
    """A whole-frame result: one decision for every channel."""

    @property
    def sprayed(self) -> bool:
        """The decision said spray AND the outputs are on (not refused by the enable switch or a lost
        controller, not latched off by the max on-time)."""
        return self.decision.spray and any(self.outputs)


class WholeFrameProcessor:
    """Classify -> decide -> actuate, one frame at a time (a ``FrameProcessor``)."""

    def __init__(self, classifier: Classifier, decider: Decider, actuator: Actuator, *, clock: Clock = SYSTEM_CLOCK):
        self.classifier = classifier
        self.decider = decider
        self.actuator = actuator
        self.clock = clock

    def process(self, frame: Frame, wait_ns: int = 0) -> FrameResult:
        scores = self.classifier.classify(frame.image, frame.colour_order)
        t0 = time.perf_counter_ns()
        decision = self.decider.update(scores.probs, frame.t_capture_ns, frame.frame_id)
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
        return FrameResult(frame, scores, decision, self.outputs(), timings)

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
        return ProcessorCounts(max_on_trips=a.max_on_trips, blocked_frames=a.blocked_frames,
                               unavailable_frames=a.unavailable_frames)

    def at_end_of_source(self, stop: threading.Event, beat: Callable[[], None]) -> None:
        """Nothing is planned ahead: the outputs go off with the loop's fail-safe."""

    def finish(self, e2e_p95_ms: float, fps: float) -> None:
        return None
