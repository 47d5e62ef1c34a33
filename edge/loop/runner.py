"""The run loop: read -> process -> record, failing safe.

``RunLoop`` knows nothing of how a frame is decided: a :class:`~edge.loop.processor.FrameProcessor`
(whole frame or per lane) classifies, decides and actuates it. The loop owns the safety
rules that span stages:

- every output is off before the first frame and after the last, whatever happened
  (``try/finally``), including an exception in any stage and a stop request (signal);
- when no frame has arrived within ``stall_timeout_s`` the outputs go off and the
  decision history is dropped (old frames say nothing about the ground below now);
- a live source that fails (``SourceLost``, from ``edge.sources.reconnecting``) switches
  the outputs off at once; it reconnects by itself, and frames resume when it is back;
- time-based rules (max on-time, due sprays) run between frames too;
- ``heartbeat`` gets the run's status whenever the loop makes progress, including while
  waiting for a lost camera (the systemd watchdog hooks in there); ``maintain`` callbacks
  (e.g. the serial output's reconnect) run on every loop turn;
- ``give_up_s`` without a frame ends the run with ``StallError`` (exit code 8);
- an ``observer`` (the live view) is handed each processed frame and a way to take a stats
  snapshot (called, if at all, in the loop's thread); it must return at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import StallError
from edge.core.metrics import RollingStats
from edge.core.reconnect import LinkState
from edge.loop.processor import FrameProcessor, ProcessedFrame
from edge.loop.stats import RunStats
from edge.service.records import JsonlLog, TriggerSaver, wall_time
from edge.sources.base import FrameSource, FrameTimeout, SourceLost

log = logging.getLogger(__name__)


class RunLoop:
    def __init__(
        self,
        source: FrameSource,
        processor: FrameProcessor,
        *,
        jsonl: JsonlLog | None = None,
        saver: TriggerSaver | None = None,
        stop: threading.Event | None = None,
        clock: Clock = SYSTEM_CLOCK,
        stall_timeout_s: float = 1.0,
        stats_interval_s: float = 5.0,
        max_frames: int | None = None,
        on_frame: Callable[[ProcessedFrame], None] | None = None,
        heartbeat: Callable[[dict], None] | None = None,
        maintain: Sequence[Callable[[], None]] = (),
        controller: Callable[[], LinkState | None] | None = None,
        give_up_s: float = 0.0,
        observer: Callable[[ProcessedFrame, Callable[[], RunStats]], None] | None = None,
    ):
        self.source = source
        self.processor = processor
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
        self.controller = controller  # the output's link state (a reconnecting serial controller)
        self.give_up_ns = int(give_up_s * 1e9)
        self.observer = observer  # the live view's hub: O(1), never blocks (edge.web.hub.LiveHub.publish)
        self.timing = RollingStats()
        self.stalls = 0
        self._stalled = False
        self._last_frame_ns = 0
        self._latency_cache: tuple[int, tuple[float, float]] | None = None

    # -- the loop --------------------------------------------------------------------
    def run(self) -> RunStats:
        self.processor.fail_safe("start")
        stopped_by = "stop requested"
        poll_s = min(0.1, self.stall_timeout_s / 4)
        self._last_frame_ns = last_stats_ns = self.clock.now_ns()
        try:
            while not self.stop.is_set():
                for fn in self.maintain:
                    fn()
                t_wait = time.perf_counter_ns()
                try:
                    frame = self.source.read(timeout=poll_s)
                except FrameTimeout:
                    self._no_frame()
                    self._beat()
                    continue
                except SourceLost:
                    self._lost()
                    self._beat()
                    continue
                wait_ns = time.perf_counter_ns() - t_wait
                if frame is None:
                    stopped_by = "end of source"
                    self.processor.at_end_of_source(self.stop, self._beat)
                    break
                if self.stop.is_set():  # asked to stop while the read waited: the frame is not acted on
                    break
                if self._stalled:
                    log.warning("frames are back from %s", self.source.name)
                    self._stalled = False
                self._last_frame_ns = self.clock.now_ns()
                result = self.processor.process(frame, wait_ns)
                self._record(result)
                if self.on_frame is not None:
                    self.on_frame(result)
                if self.observer is not None:
                    self.observer(result, self.stats)
                self._beat()
                if self._last_frame_ns - last_stats_ns >= self.stats_interval_ns:
                    last_stats_ns = self._last_frame_ns
                    log.info(self.stats().line())
                if self.max_frames is not None and self.timing.frames >= self.max_frames:
                    stopped_by = "max frames"
                    break
        finally:
            self.processor.fail_safe("exit")
            self.jsonl.close()
        log.info(self.stats().line())
        e2e = self.timing.stage("end_to_end")["p95"]
        spray = self.processor.finish(0.0 if e2e != e2e else e2e, self.timing.fps())  # nan: no frames
        return self.stats(stopped_by, spray)

    def _record(self, r: ProcessedFrame) -> None:
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
            "crop_score": round(r.decision.crop_score, 4),
            "vetoed": r.decision.vetoed,
            "spray": r.decision.spray,
            "outputs": [int(x) for x in r.outputs],
            "ms": r.timings.as_dict(),
            **r.log_fields(),
        })
        kind = self.saver.choose(r.frame, r.decision)
        if kind is not None:
            self.saver.save(kind, r.frame, r.decision, r.saved_tiles(), r.place())
        self.timing.add(r.frame.t_capture_ns, r.timings, r.decision.weed_frame, r.sprayed)

    # -- no frame ----------------------------------------------------------------------
    def _no_frame(self) -> None:
        """No frame this turn: time-based rules, the stall switch-off, giving up."""
        self.processor.between_frames()
        now = self.clock.now_ns()
        silent_ns = now - self._last_frame_ns
        if silent_ns >= self.stall_timeout_s * 1e9 and not self._stalled:
            self._stall()
            log.warning("no frame for %.1f s from %s: all outputs off until frames return",
                        self.stall_timeout_s, self.source.name)
            self.processor.fail_safe("stall")
            self.processor.forget()
        if self.give_up_ns and silent_ns >= self.give_up_ns:
            link = self.source.link()
            losses, reconnects = (link.losses, link.reconnects) if link is not None else (0, 0)
            raise StallError(
                f"no frame from {self.source.name} for {silent_ns / 1e9:.0f} s "
                f"({losses} losses, {reconnects} reconnects)",
                "check the camera and its cable; systemd restarts edge-run (service.give_up_s sets how long "
                "to wait, 0 = forever)")

    def _lost(self) -> None:
        """The live source failed (it reconnects by itself): everything off now."""
        self.processor.fail_safe("source lost")
        self.processor.forget()
        self._stall()

    def _stall(self) -> None:
        if not self._stalled:
            self._stalled = True
            self.stalls += 1

    # -- what the run looks like -------------------------------------------------------
    def stats(self, stopped_by: str = "", spray: dict | None = None) -> RunStats:
        dropped = self.source.dropped
        link = self.source.link()
        camera = "lost" if link is not None and not link.connected else "stalled" if self._stalled else "ok"
        return RunStats(
            timing=self.timing.summary(dropped),
            spray_frames=self.timing.sprays,
            stalls=self.stalls,
            source_losses=link.losses if link is not None else 0,
            reconnects=link.reconnects if link is not None else 0,
            stalled=self._stalled,
            camera=camera,
            outputs=self.processor.outputs(),
            counts=self.processor.counts(),
            controller=self.controller() if self.controller is not None else None,
            fps=self.timing.fps(),
            latency_ms=self._latency(),
            stopped_by=stopped_by,
            spray=spray,
        )

    def _latency(self) -> tuple[float, float]:
        """End-to-end p50/p95 for the status, refreshed at most once a second."""
        now = self.clock.now_ns()
        if self._latency_cache is None or now - self._latency_cache[0] >= 1_000_000_000:
            e2e = self.timing.stage("end_to_end")
            self._latency_cache = (now, (e2e["p50"], e2e["p95"]))
        return self._latency_cache[1]

    def status(self) -> dict:
        """What the service status shows."""
        return self.stats().status()

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat(self.status())
