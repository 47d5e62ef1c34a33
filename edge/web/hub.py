"""What the loop hands the live view, and the thread that turns it into a stream.

The detection loop never waits for the web:

- ``publish(result, stats)`` is the ``RunLoop``'s observer, called in the loop's thread after
  each frame. It is O(1) and takes no lock a web thread can hold: it keeps a reference to the
  newest ``(seq, ProcessedFrame)`` (one attribute assignment, newest wins), notes spray starts
  in the event list, refreshes the ``RunStats`` snapshot at most ``STATS_EVERY_NS`` (the loop
  computes it), and sets an ``Event`` for the encoder when a client watches.
- The **encoder thread** runs only while at least one stream client is connected: at most
  ``stream_fps`` times a second it draws the overlay on the newest frame (``edge.web.overlay``),
  JPEG-encodes it and wakes the stream clients. On Linux it runs at nice 19 (``ENCODER_NICE``),
  so the loop's threads get the CPU first.
- Each **stream client** (``stream()``, one generator per HTTP response) waits for a JPEG newer
  than the one it sent and sends the newest: a slow client skips frames; a client that stops
  reading blocks in its own socket write, holding nothing.

The **events** (``EventLog``): the loop's own log records at WARNING and above (late and missed
sprays, lost and reopened cameras, controllers and GPS, errors) and the live view's actions
(tuning, pause), formatted by the one log formatter (``edge.core.text.OneLineFormatter``), plus
the frames where spraying starts; the last ``[web] events`` of them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import cv2

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.text import OneLineFormatter
from edge.inference.config import GateParams
from edge.loop.per_lane import LaneFrameResult
from edge.loop.processor import ProcessedFrame
from edge.loop.stats import RunStats
from edge.web.config import WebConfig
from edge.web.overlay import paint

ENCODER_NICE = 19  # the encoder thread's nice value (Linux): the loop's threads come first
STATS_EVERY_NS = 500_000_000  # the stats snapshot the page shows is at most this old
INFO_LOGGERS = ("edge.loop.tuning", "edge.inputs.pause", "edge.app.live", "edge.web")  # their INFO lines are events too
BOUNDARY = b"frame"


@dataclass(frozen=True)
class Event:
    wall: float  # time.time(), for people
    kind: str  # spray | late | reconnect | error | warning | info
    text: str


class EventLog(logging.Handler):
    """The last ``size`` events; a logging handler on the ``edge`` logger feeds it (any thread; ``deque`` appends
    are atomic)."""

    def __init__(self, size: int):
        super().__init__(logging.INFO)
        self.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
        self._events: deque[Event] = deque(maxlen=size)

    def add(self, kind: str, text: str) -> None:
        self._events.append(Event(time.time(), kind, text))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not record.name.startswith(INFO_LOGGERS):
            return
        try:
            text = self.format(record)
        except Exception:  # a bad format string must not break the run's logging
            return
        msg = record.getMessage().lower()
        kind = ("error" if record.levelno >= logging.ERROR and "reopen" not in msg and "reconnect" not in msg else
                "late" if " late" in msg or "missed" in msg else
                "reconnect" if any(w in msg for w in ("reopen", "reconnect", "lost", "back from")) else
                "warning" if record.levelno >= logging.WARNING else "info")
        self._events.append(Event(record.created, kind, text))

    def last(self) -> list[Event]:
        return list(self._events)


def _lower_priority(nice: int = ENCODER_NICE) -> None:
    """This thread (Linux: a thread's own nice value) yields the CPU to the detection loop's threads."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):  # not Linux, or not allowed: the caps still bound the encoder
        pass


class LiveHub:
    """See the module docstring. ``gate()`` gives the vegetation gate's numbers in force (None: off),
    ``outputs()`` each valve's state now, ``extras(stats)`` figures of the processor's own (the max speed),
    computed with each stats snapshot in the loop's thread."""

    def __init__(self, cfg: WebConfig, *, gate: Callable[[], GateParams | None] = lambda: None,
                 outputs: Callable[[], Sequence[bool]] | None = None,
                 extras: Callable[[RunStats], dict] | None = None, clock: Clock = SYSTEM_CLOCK):
        self.cfg = cfg
        self.clock = clock
        self.gate = gate
        self.outputs = outputs
        self.extras = extras
        self.events = EventLog(cfg.events)
        self.min_interval_ns = int(1e9 / cfg.stream_fps)
        self._newest: tuple[int, ProcessedFrame] | None = None
        self._seq = 0
        self._stats: tuple[RunStats, dict] | None = None
        self._stats_ns: int | None = None
        self._spraying: frozenset[int] = frozenset()
        self._clients = 0
        self._clients_lock = threading.Lock()  # the loop never takes it
        self._wake = threading.Event()
        self._jpeg: tuple[int, bytes] | None = None
        self._jpeg_cond = threading.Condition()  # the loop never takes it
        self._encoded_seq = 0
        self.encoded = 0  # JPEGs made (the benchmark and tests read it)
        self.encode_ms: deque[float] = deque(maxlen=1000)  # drawing + encoding each of the last JPEGs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop's side ---------------------------------------------------------------
    def publish(self, result: ProcessedFrame, stats: Callable[[], RunStats]) -> None:
        """After each frame, in the loop's thread: O(1), never blocks (see the module docstring)."""
        self._seq += 1
        self._newest = (self._seq, result)
        self._note_sprays(result)
        now = self.clock.now_ns()
        if self._stats_ns is None or now - self._stats_ns >= STATS_EVERY_NS:
            self._stats_ns = now
            s = stats()
            self._stats = (s, self.extras(s) if self.extras is not None else {})
        if self._clients:
            self._wake.set()

    def _note_sprays(self, r: ProcessedFrame) -> None:
        if isinstance(r, LaneFrameResult):
            now = frozenset(x.lane for x in r.lanes if x.decision.spray)  # a cell of the lane decided to spray
            new = sorted(now - self._spraying)
            if new:
                lanes = ", ".join(f"{x + 1} ({r.lanes[x].decision.weed_score:.2f})" for x in new)
                self.events.add("spray", f"frame {r.frame.frame_id}: spray planned, lane {lanes}")
        else:
            now = frozenset((0,)) if r.sprayed else frozenset()
            if now and not self._spraying:
                self.events.add("spray", f"frame {r.frame.frame_id}: spraying, {r.decision.label} "
                                f"(weed {r.decision.weed_score:.2f})")
        self._spraying = now

    # -- what the page reads ------------------------------------------------------------
    def newest(self) -> ProcessedFrame | None:
        n = self._newest
        return None if n is None else n[1]

    def stats(self) -> tuple[RunStats, dict] | None:
        return self._stats

    @property
    def clients(self) -> int:
        return self._clients

    # -- encoding ----------------------------------------------------------------------
    def encode_newest(self) -> bool:
        """Draw and encode the newest frame if it is new (the encoder thread; a test calls it directly).
        Returns whether a JPEG was made."""
        n = self._newest
        if n is None or n[0] == self._encoded_seq:
            return False
        seq, result = n
        t0 = time.perf_counter_ns()
        outputs = tuple(self.outputs()) if self.outputs is not None else result.outputs
        img = paint(result, width=self.cfg.stream_width, gate=self.gate(), outputs=outputs)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(self.cfg.jpeg_quality)])
        if not ok:
            return False
        self._encoded_seq = seq
        self.encode_ms.append((time.perf_counter_ns() - t0) / 1e6)
        with self._jpeg_cond:
            self._jpeg = (seq, buf.tobytes())
            self._jpeg_cond.notify_all()
        self.encoded += 1
        return True

    def jpeg(self) -> tuple[int, bytes] | None:
        return self._jpeg

    def start(self) -> "LiveHub":
        if self._thread is None:
            self._thread = threading.Thread(target=self._encoder, name="live-view-encoder", daemon=True)
            self._thread.start()
        return self

    def _encoder(self) -> None:
        log = logging.getLogger(__name__)
        _lower_priority()
        next_ns = 0
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._clients or self._stop.is_set():
                continue
            wait_ns = next_ns - self.clock.now_ns()
            if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):  # the cap: at most stream_fps a second
                break
            try:
                if self.encode_newest():
                    next_ns = self.clock.now_ns() + self.min_interval_ns
            except Exception:  # a drawing bug must not end the live view (nor touch the loop)
                log.exception("live view: drawing or encoding a frame failed")
                self._stop.wait(1.0)

    # -- the stream clients -------------------------------------------------------------
    def stream(self, timeout_s: float = 1.0) -> Iterator[bytes]:
        """One client's MJPEG parts (multipart/x-mixed-replace), newest frame each time; counted as a watcher
        from its first ``next()`` until it is closed (the client went away) or the hub closes."""
        with self._clients_lock:
            self._clients += 1
        self._wake.set()
        last = -1
        try:
            while not self._stop.is_set():
                with self._jpeg_cond:
                    self._jpeg_cond.wait_for(lambda: self._stop.is_set() or (self._jpeg is not None and
                                                                              self._jpeg[0] != last), timeout_s)
                    jpeg = self._jpeg
                if jpeg is None or jpeg[0] == last:
                    continue
                last = jpeg[0]
                yield (b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                       + str(len(jpeg[1])).encode() + b"\r\n\r\n" + jpeg[1] + b"\r\n")
        finally:
            with self._clients_lock:
                self._clients -= 1

    def close(self) -> None:
        """Stop the encoder and end every stream (idempotent)."""
        self._stop.set()
        self._wake.set()
        with self._jpeg_cond:
            self._jpeg_cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
