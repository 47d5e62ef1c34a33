"""What the run loop asks of a frame processor, and what a processed frame gives back.

Two processors implement :class:`FrameProcessor`: ``edge.loop.whole_frame`` (one
decision per frame, every channel together) and ``edge.loop.per_lane`` (a decision per
lane, sprays scheduled for the moment each nozzle passes the weed). Each has its own
result type, a :class:`ProcessedFrame`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from edge.core.frame import Frame
from edge.core.metrics import FrameTimings
from edge.core.reconnect import LinkState
from edge.decide.decider import Decision
from edge.decide.rule import SprayRule
from edge.inference.classifier import Scores
from edge.inference.config import GateParams
from edge.service.records import FramePlace, SavedTile


@dataclass(frozen=True)
class ProcessedFrame:
    """One frame's outcome: what the log, the stats and ``--print`` need. Each processor has
    its own subclass (``FrameResult``, ``LaneFrameResult``)."""

    frame: Frame
    scores: Scores
    decision: Decision
    outputs: tuple[bool, ...]
    timings: FrameTimings

    @property
    def sprayed(self) -> bool:
        """Whether the frame counts as spraying in the stats."""
        raise NotImplementedError

    @property
    def gated(self) -> bool:
        """The vegetation gate found no plant: nothing of the frame was classified (``--print`` says ``bare``)."""
        return False

    def log_fields(self) -> dict:
        """Fields this kind of result adds to the frame's JSONL line."""
        return {}

    def saved_tiles(self) -> tuple[SavedTile, ...]:
        """The frame's tiles as a saved frame's sidecar records them (whole frame: one tile)."""
        raise NotImplementedError

    def place(self) -> FramePlace:
        """Where the frame was captured, as far as the processor knows (speed, odometer, GPS)."""
        return FramePlace()


@dataclass(frozen=True)
class GpsState:
    link: LinkState
    has_speed: bool

    @property
    def text(self) -> str:
        return "lost, reopening" if not self.link.connected else "ok" if self.has_speed else "no speed"


@dataclass(frozen=True)
class GateCounts:
    """What the vegetation gate saw: ``seen`` frames or tiles (``unit``), ``bare`` of them not classified."""

    unit: str  # "frames" (whole frame) or "tiles" (per lane)
    seen: int
    bare: int

    @property
    def text(self) -> str:
        return f"bare ground (gate) {self.bare}/{self.seen} {self.unit}"


@dataclass(frozen=True)
class ProcessorCounts:
    """What a processor adds to the run's statistics (``edge.loop.stats.RunStats``)."""

    max_on_trips: int = 0
    blocked_frames: int = 0  # whole frame: spray decisions the enable switch kept from opening
    unavailable_frames: int = 0  # whole frame: spray decisions not sprayed, the controller was lost
    blocked_openings: int = 0  # per lane: planned openings refused by the enable switch
    unavailable_openings: int = 0  # per lane: planned openings not sprayed, the controller was lost
    gps: GpsState | None = None  # per lane with a GPS speed source
    gate: GateCounts | None = None  # with the vegetation gate on


class FrameProcessor(Protocol):
    """One frame in, one result out, plus the hooks the loop's safety rules need."""

    def process(self, frame: Frame, wait_ns: int = 0) -> ProcessedFrame:
        """Classify, decide and actuate (or plan) one frame."""

    def between_frames(self) -> None:
        """Called on every turn without a frame: time-based rules (max on-time, due sprays)."""

    def fail_safe(self, reason: str) -> None:
        """Every output off, now (start, exit, stall, lost source). Never raises on a healthy output."""

    def forget(self) -> None:
        """Drop the decision history (after a stall or a lost source: old frames say nothing now)."""

    def outputs(self) -> tuple[bool, ...]:
        """The commanded state of every output channel."""

    def counts(self) -> ProcessorCounts: ...

    def retune(self, rule: SprayRule | None = None, gate: GateParams | None = None) -> None:
        """From the next frame on, decide by ``rule`` and gate by ``gate`` (None: unchanged; a gate that is
        off stays off). Only the loop's thread calls it, between frames (``edge.loop.tuning``)."""

    def tuning(self) -> tuple[SprayRule, GateParams | None]:
        """The rule in force and the vegetation gate's numbers (None: the gate is off)."""

    def at_end_of_source(self, stop: threading.Event, beat: Callable[[], None]) -> None:
        """A file source ended, before the outputs go off (planned sprays may finish; ``beat`` keeps the watchdog fed)."""

    def finish(self, e2e_p95_ms: float, fps: float) -> dict | None:
        """The end of the run: a summary of this processor's own (per lane: the spray figures), or None."""
