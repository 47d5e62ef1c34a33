"""Decision -> outputs, with the time-based safety rules.

Whole-frame decisions switch every configured channel together (per-lane timing comes
with the spray scheduler). A channel that has been on longer than ``max_on_s`` is
switched off and stays off until the decision drops (a camera stuck on one image must
not empty the tank). ``fail_safe()`` switches everything off and is what the pipeline
calls on a stall, an error, a signal and at exit.

With an enable switch the output itself refuses to open (``OutputBlocked``, see
``edge.inputs.enable``): a spray decision while the switch is off leaves every channel off, is
counted in ``blocked_frames`` and logged once per off period; spraying resumes with the
next weed decision after it is switched back on. A lost serial controller refuses the
same way (``OutputUnavailable``, from ``edge.outputs.reconnecting.ReconnectingOutput``): counted in
``unavailable_frames``, logged once per loss, and the outputs do not count as on.
"""

from __future__ import annotations

import logging

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.decide.decider import Decision
from edge.outputs.base import Output
from edge.outputs.channels import OutputBlocked, OutputUnavailable

log = logging.getLogger(__name__)


class Actuator:
    def __init__(self, output: Output, max_on_s: float = 10.0, clock: Clock = SYSTEM_CLOCK):
        self.output = output
        self.max_on_ns = int(max_on_s * 1e9)
        self.max_on_s = max_on_s
        self.clock = clock
        self._on_since_ns: int | None = None
        self._latched = False  # max on-time hit: wait for the decision to drop
        self.max_on_trips = 0
        self.fail_safes = 0
        self.blocked_frames = 0  # spray decisions the enable switch kept from opening
        self.unavailable_frames = 0  # spray decisions not sprayed: the output (serial controller) was lost
        self._blocked = False
        self._lost = False

    @property
    def on(self) -> bool:
        return self._on_since_ns is not None

    def _switch(self, on: bool) -> bool:
        """Every channel on or off; False when the enable switch or a lost controller kept them from
        opening (all off then)."""
        try:
            for ch in range(self.output.channels):
                self.output.set(ch, on, max_on_s=self.max_on_s if on else None)
        except OutputBlocked as e:
            self.blocked_frames += 1
            if not self._blocked:
                log.warning("weed: not sprayed, blocked by the enable switch (%s)", e.what)
            self._blocked = True
            self.output.all_off()  # a channel opened before the refusal goes off too
            return False
        except OutputUnavailable as e:
            self.unavailable_frames += 1
            if not self._lost:
                log.warning("weed: not sprayed, %s", e.what)
            self._lost = True
            self.output.all_off()
            return False
        if on and self._blocked:
            log.warning("enable switch on again: spraying")
            self._blocked = False
        if on and self._lost:
            log.warning("controller back: spraying")
            self._lost = False
        return True

    def apply(self, decision: Decision) -> bool:
        """Switch outputs for a decision; returns whether they are on afterwards."""
        now = self.clock.now_ns()
        want = decision.spray
        if not want:
            self._latched = False
        if want and self._latched:
            want = False
        if want and self._on_since_ns is not None and now - self._on_since_ns > self.max_on_ns:
            log.warning("outputs on for more than max_on_s=%.1f s: switching off until the weed signal drops "
                        "(camera stuck or threshold too low?)", self.max_on_s)
            self.max_on_trips += 1
            self._latched = True
            want = False
        if want:
            # Refresh every frame: a serial controller bounds each ON by its duration.
            if not self._switch(True):
                self._on_since_ns = None
            elif self._on_since_ns is None:
                self._on_since_ns = now
        elif self._on_since_ns is not None or any(self.output.state()):
            self._switch(False)
            self._on_since_ns = None
        return self.on

    def check_max_on(self) -> None:
        """Called between frames too, so max on-time holds when frames are slow."""
        if self._on_since_ns is not None and self.clock.now_ns() - self._on_since_ns > self.max_on_ns:
            log.warning("max on-time %.1f s reached between frames: outputs off", self.max_on_s)
            self.max_on_trips += 1
            self._latched = True
            self.fail_safe("max on-time")

    def fail_safe(self, reason: str) -> None:
        """Every output off, now. Never raises on a healthy output."""
        if self._on_since_ns is not None or any(self.output.state()):
            log.warning("fail-safe (%s): all outputs off", reason)
        self.fail_safes += 1
        self._on_since_ns = None
        self.output.all_off()
