"""Stage timings and rolling statistics (fps, latency percentiles, drops)."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

STAGES = ("capture_wait", "preprocess", "inference", "decision", "actuation", "end_to_end")


@dataclass(frozen=True)
class FrameTimings:
    """Milliseconds per stage for one frame. ``end_to_end`` runs from the frame's
    capture timestamp to the moment the outputs were switched."""

    capture_wait: float
    preprocess: float
    inference: float
    decision: float
    actuation: float
    end_to_end: float

    def as_dict(self) -> dict[str, float]:
        """Stage -> milliseconds (3 decimals), in the order of ``STAGES``."""
        return {k: round(v, 3) for k, v in asdict(self).items()}


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``; nan when there are none.

    The one definition every latency figure uses (the stats line, the service status, the
    scheduler's switching delay, edge-bench): numpy's default, linear interpolation
    between the closest ranks.
    """
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` (one ``percentile`` per ``q`` in ``qs``)."""
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": percentile(arr, q) for q in qs}


@dataclass
class RollingStats:
    """Timings of the last ``window`` frames, for the periodic stats line."""

    window: int = 300
    _t: deque = field(default_factory=deque)
    _stages: dict = field(default_factory=dict)
    frames: int = 0
    weed_frames: int = 0
    sprays: int = 0

    def add(self, t_ns: int, timings: FrameTimings, weed: bool, spray: bool) -> None:
        self.frames += 1
        self.weed_frames += int(weed)
        self.sprays += int(spray)
        self._t.append(t_ns)
        if len(self._t) > self.window:
            self._t.popleft()
        for k, ms in asdict(timings).items():
            self._stages.setdefault(k, deque(maxlen=self.window)).append(ms)

    def fps(self) -> float:
        if len(self._t) < 2:
            return 0.0
        span = (self._t[-1] - self._t[0]) / 1e9
        return (len(self._t) - 1) / span if span > 0 else 0.0

    def stage(self, name: str) -> dict[str, float]:
        return percentiles(list(self._stages.get(name, ())))

    def summary(self, dropped: int) -> dict:
        e2e = self.stage("end_to_end")
        return {
            "frames": self.frames,
            "fps": round(self.fps(), 2),
            "e2e_p50_ms": round(e2e["p50"], 2),
            "e2e_p95_ms": round(e2e["p95"], 2),
            "inference_p50_ms": round(self.stage("inference")["p50"], 2),
            "dropped": dropped,
            "weed_frames": self.weed_frames,
        }
