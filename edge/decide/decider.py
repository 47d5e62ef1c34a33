"""Scores -> spray or not, per frame. No I/O: a table of inputs tests it fully.

A frame is a *weed frame* when the spray rule fires on it (``edge.decide.rule``: its weed
mass -- the probability mass on the weed labels -- reaches the threshold, and no crop veto
holds it back). Spraying starts when at least N of the last M frames were weed frames
(debounce against one-frame flickers) and, once started, lasts at least ``min_hold_s``
after the last time that held (so a valve does not chatter).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge.core.errors import ConfigError
from edge.decide.rule import SprayRule, ViewEvidence, log_odds


@dataclass(frozen=True)
class Decision:
    frame_id: int
    t_capture_ns: int
    weed_score: float  # weed mass
    weed_frame: bool  # the rule fires on this frame alone (over the threshold, not vetoed)
    spray: bool  # after debounce and hold
    label: str  # most probable label
    label_prob: float
    crop_score: float = 0.0  # crop mass
    vetoed: bool = False  # the crop veto held this frame back
    weed_log_odds: float | None = None  # the rule's evidence; None: log_odds(weed_score)

    def __post_init__(self) -> None:
        if self.weed_log_odds is None:
            object.__setattr__(self, "weed_log_odds", log_odds(self.weed_score))


class Decider:
    """Whole-frame decisions by ``rule`` (built from the arguments: see ``SprayRule``), N-of-M, hold."""

    def __init__(self, labels: Sequence[str], weed_labels: Sequence[str], threshold: float,
                 debounce_n: int = 1, debounce_m: int = 1, min_hold_s: float = 0.0, *,
                 crop_labels: Sequence[str] = (), crop_veto: float | None = None):
        self.rule = SprayRule(threshold, crop_veto, labels=tuple(labels), weed_labels=tuple(weed_labels),
                              crop_labels=tuple(crop_labels))
        if not 1 <= debounce_n <= debounce_m:
            raise ConfigError(f"debounce {debounce_n}-of-{debounce_m} is impossible", "use 1 <= N <= M, e.g. 2 of 3")
        if min_hold_s < 0:
            raise ConfigError(f"decision.min_hold_ms {min_hold_s * 1000:g} is negative", "use 0 or more")
        self.labels, self.weed_labels, self.threshold = self.rule.labels, self.rule.weed_labels, self.rule.threshold
        self.n, self.m = debounce_n, debounce_m
        self.min_hold_ns = int(min_hold_s * 1e9)
        self._window: deque[bool] = deque(maxlen=debounce_m)
        self._hold_until_ns: int | None = None

    @classmethod
    def from_rule(cls, rule: SprayRule, debounce_n: int = 1, debounce_m: int = 1,
                  min_hold_s: float = 0.0) -> "Decider":
        return cls(rule.labels, rule.weed_labels, rule.threshold, debounce_n, debounce_m, min_hold_s,
                   crop_labels=rule.crop_labels, crop_veto=rule.crop_veto)

    def set_rule(self, rule: SprayRule) -> None:
        """Decide by ``rule`` from the next frame on (its labels must be this decider's); the debounce window and
        the hold are kept. Called between frames by the thread that calls ``update`` (``edge.loop.tuning``)."""
        if rule.labels != self.rule.labels:
            raise ConfigError("a new spray rule must be for the same model labels", "build it from the running bundle")
        self.rule = rule
        self.weed_labels, self.threshold = rule.weed_labels, rule.threshold

    def weed_score(self, probs: np.ndarray) -> float:
        return self.rule.weed_mass(probs)

    def reset(self) -> None:
        """Forget history (after a stall or reconnect: old frames say nothing about now)."""
        self._window.clear()
        self._hold_until_ns = None

    def update(self, probs: np.ndarray, t_capture_ns: int, frame_id: int,
               evidence: ViewEvidence | None = None) -> Decision:
        """The decision on one frame (``evidence``: ``rule.view(probs)``, when the caller has it already)."""
        ev = self.rule.view(probs) if evidence is None else evidence
        weed = self.rule.fires(ev)
        self._window.append(weed)
        if sum(self._window) >= self.n:
            self._hold_until_ns = t_capture_ns + self.min_hold_ns
            spray = True
        else:
            spray = self._hold_until_ns is not None and t_capture_ns < self._hold_until_ns
            if not spray:
                self._hold_until_ns = None
        i = int(np.argmax(probs))
        return Decision(frame_id, t_capture_ns, ev.weed_mass, weed, spray, self.labels[i], float(probs[i]),
                        crop_score=ev.crop_mass, vetoed=ev.vetoed, weed_log_odds=ev.weed_log_odds)
