"""Tuning at run time: the spray threshold and the vegetation gate's preset, changed between frames.

Another thread (the live view's request handler) only *posts* a request (``request``); the
loop's thread takes it between two frames (``apply``, one of ``RunLoop``'s ``maintain``
callbacks) and hands the processor a new ``SprayRule`` (the running rule with the new
threshold: the one spray rule, ``edge.decide.rule``) and/or the preset's gate numbers
(``[gate]``'s own numbers still win over the preset's, as at start). A frame is decided
wholly by the old rule or wholly by the new one. Every change is logged; what is in force
is ``state()`` (a value, safe to read from any thread).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable

from edge.core.errors import ConfigError
from edge.core.schema import tunable_threshold_problem
from edge.inference.config import PRESETS, GateParams
from edge.loop.processor import FrameProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningState:
    """What is in force: the rule's threshold, the gate's preset (None: the gate is off), how many requests were
    applied (``applied``: posts merged into one change between two frames count as applied together) of how many
    were posted (``posted``)."""

    threshold: float
    sensitivity: str | None
    applied: int = 0
    posted: int = 0


@dataclass(frozen=True)
class _Request:
    threshold: float | None = None
    sensitivity: str | None = None
    posted: int = 0  # the posts it merges, up to and including this one


class Tuning:
    """The mailbox between a requesting thread and the loop (see the module docstring).

    ``gate_params(sensitivity)`` gives a preset's numbers with the config's explicit ones over them."""

    def __init__(self, processor: FrameProcessor, sensitivity: str | None,
                 gate_params: Callable[[str], GateParams]):
        self.processor = processor
        self.gate_params = gate_params
        rule, gate = processor.tuning()
        self._lock = threading.Lock()
        self._pending: _Request | None = None
        self._state = TuningState(rule.threshold, sensitivity if gate is not None else None)

    def state(self) -> TuningState:
        return self._state

    def target(self) -> TuningState:
        """What will be in force once the pending request (if any) is applied: what "save" keeps."""
        with self._lock:
            st, req = self._state, self._pending
        if req is None:
            return st
        return replace(st, threshold=st.threshold if req.threshold is None else float(req.threshold),
                       sensitivity=req.sensitivity or st.sensitivity)

    def request(self, *, threshold: float | None = None, sensitivity: str | None = None) -> TuningState:
        """Post a change (any thread): checked here, applied by the loop before its next frame.
        ``ConfigError`` when a value is not valid or the gate is off."""
        problem = None if threshold is None else tunable_threshold_problem(threshold)
        if problem:
            raise ConfigError(problem, "use e.g. 0.5 (0 would spray everything, 1 nothing; other values go in "
                                       "[decision] threshold)")
        if sensitivity is not None:
            if sensitivity not in PRESETS:
                raise ConfigError(f"sensitivity {sensitivity!r} is not a preset", f"use one of {', '.join(PRESETS)}")
            if self._state.sensitivity is None:
                raise ConfigError("the vegetation gate is off: there is no sensitivity to switch",
                                  "turn it on in the config ([gate] enabled = true) and restart")
        with self._lock:
            old = self._pending or _Request()
            self._state = replace(self._state, posted=self._state.posted + 1)
            self._pending = _Request(threshold if threshold is not None else old.threshold,
                                     sensitivity if sensitivity is not None else old.sensitivity, self._state.posted)
            return self._state

    def apply(self) -> None:
        """The loop's thread, between frames: take the pending request, if any, and retune the processor."""
        if self._pending is None:  # the usual case: no lock taken
            return
        with self._lock:
            req, self._pending = self._pending, None
        if req is None:
            return
        rule, _gate = self.processor.tuning()
        new_rule = replace(rule, threshold=float(req.threshold)) if req.threshold is not None else None
        params = self.gate_params(req.sensitivity) if req.sensitivity is not None else None
        self.processor.retune(rule=new_rule, gate=params)
        st = self._state
        changes = []
        if new_rule is not None:
            changes.append(f"threshold {st.threshold:.2f} -> {new_rule.threshold:.2f}")
        if params is not None:
            changes.append(f"vegetation gate {st.sensitivity} -> {req.sensitivity} ({params.describe()})")
        with self._lock:
            self._state = replace(self._state, threshold=new_rule.threshold if new_rule else st.threshold,
                                  sensitivity=req.sensitivity or st.sensitivity, applied=req.posted)
        log.info("tuning (live view): %s; rule now: %s", "; ".join(changes), self.processor.tuning()[0].describe())
