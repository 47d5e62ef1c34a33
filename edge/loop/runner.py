"""The loop: source -> classify -> decide -> actuate -> record, failing safe.

The pipeline owns only the wiring and the safety rules that span stages:
- every output is off before the first frame and after the last, whatever happened
  (``try/finally``), including an exception in any stage and a stop request (signal);
- when no frame has arrived within ``stall_timeout_s`` the outputs go off and the
  decision history is dropped (old frames say nothing about the ground below now);
- max on-time is checked between frames too;
- a live source (camera, stream, picamera2) that fails or stays silent is reopened with
  backoff (its ``reopen()``) while the outputs stay off; frames resume when it is back.
  Losses and reconnects are counted in the summary and the status;
- ``heartbeat`` is called whenever the loop makes progress, including while waiting
  for a lost camera (the systemd watchdog hooks in there); ``maintain`` callbacks
  (e.g. the serial output's reconnect) run on every loop turn.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from edge.loop.actuator import Actuator
from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.decide.decider import Decider, Decision
from edge.core.frame import Frame
from edge.inference.classifier import Classifier, Scores
from edge.core.errors import SourceError, StallError
from edge.core.metrics import FrameTimings, RollingStats
from edge.outputs.reconnecting import Backoff
from edge.service.records import JsonlLog, TriggerSaver, wall_time
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
    source_losses: int  # the live source failed or stayed silent and was reopened
    reconnects: int  # ... and came back
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
        maintain: Sequence[Callable[[], None]] = (),
        reconnect: Backoff | None = None,
        give_up_s: float = 0.0,
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
        self.maintain = tuple(maintain)
        self.backoff = reconnect if reconnect is not None else Backoff()
        self.give_up_ns = int(give_up_s * 1e9)
        self.stats = RollingStats()
        self.stalls = 0
        self.source_losses = 0
        self.reconnects = 0
        self._stalled = False
        self._lost: BaseException | None = None  # the live source failed; reopen pending
        self._silence_counted = False
        self._next_reopen_ns: int | None = None
        self._latency_cache: tuple[int, dict] | None = None
        reopen = getattr(source, "reopen", None)
        self._can_reopen = bool(getattr(source, "live", False)) and callable(reopen)

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
            **self._extra_record(r),
        })
        self.saver.maybe_save(r.frame, r.decision)
        self.stats.add(r.frame.t_capture_ns, r.timings, r.decision.weed_frame, self._sprayed(r))

    def _sprayed(self, r: FrameResult) -> bool:
        """Whether the frame counts as spraying: its decision said so AND the outputs are on (not
        refused by the enable switch or a lost controller, not latched off by the max on-time)."""
        return r.decision.spray and any(r.outputs)

    def _at_end_of_source(self) -> None:
        """A file source has ended, before the outputs go off (the spray pipeline lets planned sprays finish)."""

    def _extra_record(self, r: FrameResult) -> dict:
        """More fields for the frame's JSONL line (the per-lane pipeline adds its lanes)."""
        return {}

    # -- the loop --------------------------------------------------------------------
    def _on_timeout(self, last_frame_ns: int) -> None:
        self.actuator.check_max_on()
        now = self.clock.now_ns()
        if now - last_frame_ns >= self.stall_timeout_s * 1e9 and not self._stalled:
            self._stalled = True
            self.stalls += 1
            log.warning("no frame for %.1f s from %s: all outputs off until frames return",
                        self.stall_timeout_s, self.source.name)
            self.actuator.fail_safe("stall")
            self.decider.reset()
            if self._can_reopen:
                self.backoff.reset()
                self._next_reopen_ns = now + int(self.backoff.next_delay() * 1e9)
                self._silence_counted = False
        if self.give_up_ns and now - last_frame_ns >= self.give_up_ns:
            raise StallError(
                f"no frame from {self.source.name} for {(now - last_frame_ns) / 1e9:.0f} s "
                f"({self.source_losses} losses, {self.reconnects} reconnects)",
                "check the camera and its cable; systemd restarts edge-run (service.give_up_s sets how long "
                "to wait, 0 = forever)")

    def _source_failed(self, error: SourceError) -> None:
        """The live source raised: everything off now, reopen with backoff."""
        self._lost = error
        self.source_losses += 1
        self.actuator.fail_safe("source lost")
        self.decider.reset()
        if not self._stalled:
            self._stalled = True
            self.stalls += 1
        self.backoff.reset()
        delay = self.backoff.next_delay()
        self._next_reopen_ns = self.clock.now_ns() + int(delay * 1e9)
        log.error("%s: %s — all outputs off; reopening in %.1f s", self.source.name, error, delay)

    def _maybe_reopen(self) -> None:
        now = self.clock.now_ns()
        if self._next_reopen_ns is None or now < self._next_reopen_ns:
            return
        if self._lost is None:  # a silent source (no error): count it as lost, once per silence
            if not self._silence_counted:
                self._silence_counted = True
                self.source_losses += 1
            log.warning("%s: still no frame; reopening it", self.source.name)
        try:
            self.source.reopen()  # type: ignore[attr-defined]
        except SourceError as e:
            self._lost = e
            delay = self.backoff.next_delay()
            self._next_reopen_ns = self.clock.now_ns() + int(delay * 1e9)
            log.warning("%s still unavailable (%s); next attempt in %.1f s", self.source.name, e.what, delay)
            return
        self._lost = None
        self.reconnects += 1
        # if it stays silent, the next attempt comes after a longer wait (reset when frames return)
        self._next_reopen_ns = self.clock.now_ns() + int(self.backoff.next_delay() * 1e9)
        log.warning("%s reopened; waiting for frames", self.source.name)

    def _wait_lost(self, poll_s: float) -> None:
        """Between reopen attempts of a failed source: short waits on the injected clock."""
        now = self.clock.now_ns()
        if self._next_reopen_ns is not None and now < self._next_reopen_ns:
            self.clock.sleep(min(poll_s, (self._next_reopen_ns - now) / 1e9))

    def _tick(self) -> None:
        for fn in self.maintain:
            fn()

    def run(self) -> RunSummary:
        self.actuator.fail_safe("start")
        stopped_by = "stop requested"
        poll_s = min(0.1, self.stall_timeout_s / 4)
        last_frame_ns = self.clock.now_ns()
        last_stats_ns = last_frame_ns
        try:
            while not self.stop.is_set():
                self._tick()
                if self._lost is not None:
                    self._on_timeout(last_frame_ns)
                    self._maybe_reopen()
                    if self._lost is not None:
                        self._wait_lost(poll_s)
                    self._beat()
                    continue
                t_wait = time.perf_counter_ns()
                try:
                    frame = self.source.read(timeout=poll_s)
                except FrameTimeout:
                    self._on_timeout(last_frame_ns)
                    if self._can_reopen and self._stalled:
                        self._maybe_reopen()
                    self._beat()
                    continue
                except SourceError as e:
                    if not self._can_reopen:
                        raise
                    self._source_failed(e)
                    self._beat()
                    continue
                wait_ns = time.perf_counter_ns() - t_wait
                if frame is None and self._can_reopen and not self.stop.is_set():
                    # a camera or stream does not end by itself: treat it as lost
                    self._source_failed(SourceError(f"{self.source.name} ended unexpectedly",
                                                    "check the device or connection"))
                    self._beat()
                    continue
                if frame is None:
                    stopped_by = "end of source"
                    self._at_end_of_source()
                    break
                if self._stalled:
                    log.warning("frames are back from %s", self.source.name)
                    self._stalled = False
                    self._next_reopen_ns = None
                    self.backoff.reset()
                last_frame_ns = self.clock.now_ns()
                result = self.process(frame, wait_ns)
                self._record(result)
                if self.on_frame is not None:
                    self.on_frame(result)
                self._beat()
                if last_frame_ns - last_stats_ns >= self.stats_interval_ns:
                    last_stats_ns = last_frame_ns
                    log.info(self._stats_line())
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    stopped_by = "max frames"
                    break
        finally:
            self.actuator.fail_safe("exit")
            self.jsonl.close()
        log.info(self._stats_line())
        return RunSummary(
            frames=self.stats.frames,
            weed_frames=self.stats.weed_frames,
            spray_frames=self.stats.sprays,
            dropped=self.source.dropped,
            stalls=self.stalls,
            max_on_trips=self.actuator.max_on_trips,
            source_losses=self.source_losses,
            reconnects=self.reconnects,
            stopped_by=stopped_by,
            stats={**self.stats.summary(self.source.dropped), "stalls": self.stalls,
                   "source_losses": self.source_losses, "reconnects": self.reconnects,
                   **({"blocked_frames": self.actuator.blocked_frames}
                      if getattr(self.actuator, "blocked_frames", 0) else {}),
                   **({"unavailable_frames": self.actuator.unavailable_frames}
                      if getattr(self.actuator, "unavailable_frames", 0) else {})},
        )

    def _counters(self) -> str:
        """More of the stats line: counters that are only shown when they say something."""
        blocked = getattr(self.actuator, "blocked_frames", 0)  # whole-frame mode (the spray actuator has none)
        lost = getattr(self.actuator, "unavailable_frames", 0)
        return ((f", enable switch blocked {blocked} spray frame(s)" if blocked else "")
                + (f", {lost} spray frame(s) not sprayed: controller lost" if lost else ""))

    def _stats_line(self) -> str:
        line = self.stats.line(self.source.dropped)
        if self.stalls or self.source_losses:
            line += f", stalls {self.stalls}, source lost {self.source_losses}x, reopened {self.reconnects}x"
        return line + self._counters()

    @property
    def camera_state(self) -> str:
        """``ok``, ``stalled`` (no frames within the stall timeout) or ``lost`` (failed, reopening)."""
        return "lost" if self._lost is not None else "stalled" if self._stalled else "ok"

    def status(self) -> dict:
        """What the service status shows; latency percentiles are refreshed at most once a second."""
        now = self.clock.now_ns()
        if self._latency_cache is None or now - self._latency_cache[0] >= 1_000_000_000:
            e2e = self.stats.stage("end_to_end")
            self._latency_cache = (now, {"latency_p50_ms": e2e["p50"], "latency_p95_ms": e2e["p95"]})
        state = self.actuator.output.state()
        return {
            "frames": self.stats.frames,
            "fps": self.stats.fps(),
            "stalled": self._stalled,
            "camera": self.camera_state,
            "stalls": self.stalls,
            "source_losses": self.source_losses,
            "reconnects": self.reconnects,
            "dropped": self.source.dropped,
            "outputs": f"{sum(state)}/{len(state)} on",
            **self._latency_cache[1],
        }

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat(self.status())
