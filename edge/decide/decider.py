"""Scores -> spray or not, per frame. No I/O: a table of inputs tests it fully.

Weed score = probability mass on the weed labels. A frame is a *weed frame* when the
score reaches the threshold. Spraying starts when at least N of the last M frames were
weed frames (debounce against one-frame flickers) and, once started, lasts at least
``min_hold_s`` after the last time that held (so a valve does not chatter).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge.core.errors import ConfigError


@dataclass(frozen=True)
class Decision:
    frame_id: int
    t_capture_ns: int
    weed_score: float
    weed_frame: bool  # this frame alone is over the threshold
    spray: bool  # after debounce and hold
    label: str  # most probable label
    label_prob: float


class Decider:
    def __init__(self, labels: Sequence[str], weed_labels: Sequence[str], threshold: float,
                 debounce_n: int = 1, debounce_m: int = 1, min_hold_s: float = 0.0):
        unknown = [w for w in weed_labels if w not in labels]
        if unknown:
            raise ConfigError(
                f"decision.weed_labels names {unknown}, which the model does not have",
                f"use labels from the model: {', '.join(labels)}",
            )
        if not weed_labels:
            raise ConfigError("decision.weed_labels is empty: nothing would ever be sprayed",
                              "list at least one weed label, or leave it out to use the model's")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"decision.threshold {threshold} is outside 0..1", "use a probability, e.g. 0.5")
        if not 1 <= debounce_n <= debounce_m:
            raise ConfigError(f"debounce {debounce_n}-of-{debounce_m} is impossible", "use 1 <= N <= M, e.g. 2 of 3")
        if min_hold_s < 0:
            raise ConfigError(f"decision.min_hold_ms {min_hold_s * 1000:g} is negative", "use 0 or more")
        self.labels = tuple(labels)
        self.weed_labels = tuple(weed_labels)
        self._mask = np.array([lbl in weed_labels for lbl in labels], dtype=bool)
        self.threshold = float(threshold)
        self.n, self.m = debounce_n, debounce_m
        self.min_hold_ns = int(min_hold_s * 1e9)
        self._window: deque[bool] = deque(maxlen=debounce_m)
        self._hold_until_ns: int | None = None

    def weed_score(self, probs: np.ndarray) -> float:
        return float(np.asarray(probs, dtype=np.float64)[self._mask].sum())

    def reset(self) -> None:
        """Forget history (after a stall or reconnect: old frames say nothing about now)."""
        self._window.clear()
        self._hold_until_ns = None

    def update(self, probs: np.ndarray, t_capture_ns: int, frame_id: int) -> Decision:
        score = self.weed_score(probs)
        weed = score >= self.threshold
        self._window.append(weed)
        if sum(self._window) >= self.n:
            self._hold_until_ns = t_capture_ns + self.min_hold_ns
            spray = True
        else:
            spray = self._hold_until_ns is not None and t_capture_ns < self._hold_until_ns
            if not spray:
                self._hold_until_ns = None
        i = int(np.argmax(probs))
        return Decision(frame_id, t_capture_ns, score, weed, spray, self.labels[i], float(probs[i]))
