"""The spray scheduler: planned valve intervals -> outputs switched at the right millisecond.

``plan(channel, open_ns, close_ns)`` adds an interval (monotonic ns, the *command* times
``edge.spray.geometry`` computed, valve lag already taken off). Per channel, intervals that
overlap — or leave a gap shorter than ``merge_gap_ns`` (by default the valve's close +
open lag, too short to close and reopen) — merge into one. An interval whose opening
time has already passed when it is planned (the pipeline was too slow for this speed) is
a **late** spray: it is counted, logged, and sprayed for whatever is left of it; one that
has entirely passed is a **missed** spray, counted and logged too. Nothing is skipped
silently.

``run_due()`` switches every channel whose state should change now and returns when it
next needs to run; a dedicated thread (``start()``, stopped by an ``Event`` in
``close()``) calls it, sleeping on a condition variable until then, or until a new plan
arrives. Tests drive ``run_due()`` directly with a ``ManualClock``.

Safety: an open channel is refreshed every ``refresh_s`` (outputs bound each ON by their
own ``max_on_s``); a channel open longer than ``max_on_s`` without a break is closed and
stays closed (its plans dropped) until ``release(channel)`` — the lane's decision dropped;
``cancel_all()`` drops every plan and switches everything off (stall, stop, too slow).

The enable switch gates the moment a valve opens: an output gated by it (``edge.inputs.enable``)
refuses ``set(ch, True)`` while it is off (``OutputBlocked``). The scheduler then drops
the interval it was about to open, counts it in ``blocked`` and logs a ``blocked`` spray
log line (``why``: ``enable switch off``); an open channel whose refresh is refused is
counted as closed (a ``close`` line with that reason). Switching the switch off also
cancels every plan (``cancel_all``, registered as the switch's off listener by the wiring).

A lost serial controller (``edge.outputs.reconnecting.ReconnectingOutput``) refuses the same way
(``OutputUnavailable``): the interval is dropped, counted in ``unavailable`` and logged as
``blocked`` with ``why``: ``controller lost``; nothing counts as opened. A channel the
output switched off by itself while a spray was on (the controller lost or restarted, the
output's own on-time bound) is noticed at the next switching turn (at most a refresh period
later): a ``close`` line with the output's reason, then, if the interval goes on, a new
``open`` marked ``reopen`` (not a switching delay).

``delay_ms`` of an ``open`` is the switching delay: from when the opening was due, its
planned time or, for a late interval, the moment it was planned (how late the plan came
is the ``late`` line's ``late_ms``, not a switching delay).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.metrics import percentile
from edge.core.errors import WeedDetectorError
from edge.outputs.base import Output
from edge.outputs.channels import OutputBlocked, OutputUnavailable
from edge.spray.spray_log import SprayLog

log = logging.getLogger(__name__)

_REFUSED = {"blocked": "enable switch off", "unavailable": "controller lost"}  # the `why` of a refused opening


@dataclass
class _Channel:
    # sorted, disjoint [open_ns, close_ns, due_ns]: due_ns = max(open_ns, when it was planned), the time
    # the opening could be switched at the earliest (the switching delay counts from it)
    intervals: list[list[int]] = field(default_factory=list)
    on: bool = False
    on_since_ns: int | None = None
    opened_for_ns: int | None = None  # the planned open time of the interval being sprayed
    last_refresh_ns: int = 0
    latched: bool = False


@dataclass(frozen=True)
class PlanOutcome:
    status: str  # "planned" | "late" | "missed" | "latched"
    late_ns: int = 0  # how far in the past the opening time was (late and missed)


class SprayScheduler:
    def __init__(self, output: Output, *, clock: Clock = SYSTEM_CLOCK, spray_log: SprayLog | None = None,
                 max_on_s: float = 10.0, merge_gap_ns: int = 0, refresh_s: float | None = None):
        if not max_on_s > 0:
            raise ValueError(f"max_on_s must be > 0, got {max_on_s!r}")
        self.output = output
        self.clock = clock
        self.spray_log = spray_log or SprayLog(None, clock=clock)
        self.max_on_s = max_on_s
        self.max_on_ns = int(max_on_s * 1e9)
        self.merge_gap_ns = max(0, int(merge_gap_ns))
        out_bound = output.max_on_s
        if refresh_s is None:
            refresh_s = min(0.5, out_bound / 4) if out_bound else 0.5
        self.refresh_ns = max(1_000_000, int(refresh_s * 1e9))
        self._ch = [_Channel() for _ in range(output.channels)]
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # counters
        self.planned = 0
        self.late = 0
        self.missed = 0
        self.opens = 0
        self.closes = 0
        self.max_on_trips = 0
        self.cancelled = 0
        self.errors = 0
        self.blocked = 0  # openings refused by the enable switch
        self.unavailable = 0  # openings not made because the output (serial controller) was lost
        self.output_closed = 0  # open channels the output switched off by itself (lost, restarted, bound)
        self._blocked_warned = False
        self._lost_warned = False
        self.failure: BaseException | None = None  # set when switching failed; check() raises it
        self.delays_ns: deque[int] = deque(maxlen=2000)  # executed - planned switch time, the latest ones

    # -- planning ------------------------------------------------------------------------
    def _covered(self, ch: _Channel, t_ns: int) -> bool:
        if ch.on and ch.on_since_ns is not None and ch.on_since_ns <= t_ns:
            return True
        return any(iv[0] <= t_ns < iv[1] for iv in ch.intervals)

    def plan(self, channel: int, open_ns: int, close_ns: int, *, lane: int | None = None,
             frame_id: int | None = None, reason: str = "weed", extra: dict | None = None) -> PlanOutcome:
        """Schedule one interval; ``extra`` fields (e.g. the GPS position) go into its log line."""
        self.check()
        if not 0 <= channel < len(self._ch):
            raise ValueError(f"channel must be in 0..{len(self._ch) - 1}, got {channel}")
        if close_ns <= open_ns:
            raise ValueError(f"close ({close_ns}) must come after open ({open_ns})")
        with self._cond:
            if self._closed:
                return PlanOutcome("missed")
            ch = self._ch[channel]
            now = self.clock.now_ns()
            fields = dict(lane=lane, channel=channel, frame=frame_id, reason=reason,
                          open_ns=open_ns, close_ns=close_ns, **(extra or {}))
            if ch.latched:
                self.spray_log.event("not_sprayed", **fields, why="max on-time latched")
                return PlanOutcome("latched")
            if close_ns <= now:
                late_ns = now - open_ns
                self.missed += 1
                self.late += 1
                self.spray_log.event("missed", **fields, late_ms=round(late_ns / 1e6, 3))
                log.warning("lane %s: spray missed entirely, %.0f ms too late (pipeline too slow for this speed?)",
                            lane, late_ns / 1e6)
                return PlanOutcome("missed", late_ns)
            late_ns = now - open_ns if open_ns < now and not self._covered(ch, open_ns) else 0
            self._insert(ch, open_ns, close_ns, max(open_ns, now))
            self.planned += 1
            if late_ns:
                self.late += 1
                self.spray_log.event("late", **fields, late_ms=round(late_ns / 1e6, 3))
                log.warning("lane %s: spray %.0f ms late (opening now; the start of the target is missed)",
                            lane, late_ns / 1e6)
            else:
                self.spray_log.event("planned", **fields)
            self._cond.notify_all()
            return PlanOutcome("late" if late_ns else "planned", late_ns)

    def _insert(self, ch: _Channel, open_ns: int, close_ns: int, due_ns: int) -> None:
        gap = self.merge_gap_ns
        merged = [open_ns, close_ns, due_ns]
        keep = []
        for iv in ch.intervals:
            if iv[0] <= merged[1] + gap and merged[0] <= iv[1] + gap:
                # the opening is the earliest part's, and so is when it became due
                due = min(merged[2], iv[2]) if iv[0] == merged[0] else (merged[2] if merged[0] < iv[0] else iv[2])
                merged = [min(merged[0], iv[0]), max(merged[1], iv[1]), due]
            else:
                keep.append(iv)
        keep.append(merged)
        keep.sort()
        ch.intervals = keep

    def pending(self, channel: int) -> list[tuple[int, int]]:
        with self._lock:
            return [(iv[0], iv[1]) for iv in self._ch[channel].intervals]

    # -- execution -----------------------------------------------------------------------
    def run_due(self) -> int | None:
        """Switch what is due now; returns the monotonic ns of the next thing to do (None = nothing)."""
        with self._cond:
            if self._closed:
                return None
            now = self.clock.now_ns()
            # what the output says: a channel we hold open may have been switched off under us
            out_on = tuple(self.output.state()) if any(ch.on for ch in self._ch) else None
            wake = [self._run_channel(i, ch, now, None if out_on is None else bool(out_on[i]))
                    for i, ch in enumerate(self._ch)]
            due = [w for w in wake if w is not None]
            return min(due) if due else None

    def _switch(self, channel: int, on: bool) -> str:
        """``ok``, ``blocked`` (the enable switch is off: every output is off), ``unavailable`` (the
        output's device is lost: nothing opened) or ``failed``."""
        try:
            self.output.set(channel, on, max_on_s=self.max_on_s if on else None)
            if on:
                self._blocked_warned = self._lost_warned = False
            return "ok"
        except OutputBlocked as e:
            self.blocked += 1
            if not self._blocked_warned:
                self._blocked_warned = True
                log.warning("channel %d not opened: blocked by the enable switch (%s)", channel, e.what)
            return "blocked"
        except OutputUnavailable as e:
            self.unavailable += 1
            if not self._lost_warned:
                self._lost_warned = True
                log.warning("channel %d not opened: %s — sprays are dropped (logged as blocked) until it is back",
                            channel, e.what)
            return "unavailable"
        except Exception as e:  # everything off now; the pipeline raises it at its next step (check())
            self.errors += 1
            if self.failure is None:
                self.failure = e
            log.error("switching channel %d %s failed: %s — all outputs off", channel, "on" if on else "off", e)
            try:
                self.output.all_off()
            except Exception:
                log.exception("all_off failed too")
            return "failed"

    def check(self) -> None:
        """Raise the failure the switching thread met, so the run ends non-zero (systemd restarts it): an error
        the user can fix as it is (an ``OutputError``: exit 6, one line), anything else as an internal error."""
        if isinstance(self.failure, WeedDetectorError):
            raise self.failure
        if self.failure is not None:
            raise RuntimeError(f"spray scheduler failed: {self.failure!r} (all outputs were switched off)") \
                from self.failure

    def _off_reason(self, channel: int) -> str:
        try:
            why = self.output.off_reason(channel)
        except Exception:  # a reason is for the log only
            why = None
        return why or "the output switched it off"

    def _run_channel(self, i: int, ch: _Channel, now: int, out_on: bool | None = None) -> int | None:
        current = next((iv for iv in ch.intervals if iv[0] <= now < iv[1]), None)
        reopen_since: int | None = None
        if ch.on and out_on is False:  # switched off under us: the log must say the valve closed
            why = self._off_reason(i)
            self.closes += 1
            self.output_closed += 1
            log.warning("channel %d was closed by the output while spraying (%s)%s", i, why,
                        "; opening it again" if current is not None else "")
            self.spray_log.event("close", channel=i, planned_ns=now, at_ns=now, delay_ms=0.0, reason=why)
            reopen_since = ch.on_since_ns if current is not None else None  # max on-time counts on
            ch.on, ch.on_since_ns, ch.opened_for_ns = False, None, None
        if ch.on and ch.on_since_ns is not None and now - ch.on_since_ns > self.max_on_ns:
            self.max_on_trips += 1
            ch.latched = True
            ch.intervals.clear()
            log.warning("channel %d open for more than max_on_s=%.1f s: closed until its lane's weed signal drops "
                        "(camera frozen or threshold too low?)", i, self.max_on_s)
            self.spray_log.event("max_on", channel=i, on_since_ns=ch.on_since_ns)
            self._close(i, ch, now, planned=now)
            return None
        if current is not None and not ch.on:
            result = self._switch(i, True)
            if result in ("blocked", "unavailable"):  # this interval will not be sprayed
                ch.intervals.remove(current)
                self.spray_log.event("blocked", channel=i, planned_ns=current[0], at_ns=now, until_ns=current[1],
                                     why=_REFUSED[result])
                current = None
            elif result == "ok":
                ch.on, ch.on_since_ns, ch.last_refresh_ns = True, now, now
                ch.opened_for_ns = current[0]
                self.opens += 1
                if reopen_since is not None:  # not a switching delay: the output had closed it
                    ch.on_since_ns = reopen_since
                    self.spray_log.event("open", channel=i, planned_ns=now, at_ns=now, delay_ms=0.0,
                                         until_ns=current[1], reopen=True)
                else:
                    due = current[2]  # its planned time, or when a late one was planned
                    delay = now - due
                    self.delays_ns.append(max(0, delay))
                    self.spray_log.event("open", channel=i, planned_ns=current[0], at_ns=now,
                                         delay_ms=round(delay / 1e6, 3), until_ns=current[1],
                                         **({"due_ns": due} if due != current[0] else {}))
        elif current is not None and now - ch.last_refresh_ns >= self.refresh_ns:
            result = self._switch(i, True)
            if result in ("blocked", "unavailable"):  # refresh refused: the output is all off
                ch.intervals.remove(current)
                current = None
                self.closes += 1
                self.spray_log.event("close", channel=i, planned_ns=now, at_ns=now, delay_ms=0.0,
                                     reason=_REFUSED[result])
                ch.on, ch.on_since_ns, ch.opened_for_ns = False, None, None
            else:  # refresh: the output bounds each ON
                ch.last_refresh_ns = now
        elif current is None and ch.on:
            ended = max((iv[1] for iv in ch.intervals if iv[1] <= now), default=now)
            self._close(i, ch, now, planned=ended)
        ch.intervals = [iv for iv in ch.intervals if iv[1] > now]
        if ch.on and current is not None:
            return min(current[1], ch.last_refresh_ns + self.refresh_ns, ch.on_since_ns + self.max_on_ns + 1)
        upcoming = [iv[0] for iv in ch.intervals if iv[0] > now]
        return min(upcoming) if upcoming else None

    def _close(self, i: int, ch: _Channel, now: int, planned: int) -> None:
        self._switch(i, False)
        ch.on, ch.on_since_ns, ch.opened_for_ns = False, None, None
        self.closes += 1
        delay = now - planned
        self.delays_ns.append(max(0, delay))
        self.spray_log.event("close", channel=i, planned_ns=planned, at_ns=now, delay_ms=round(delay / 1e6, 3))

    # -- safety --------------------------------------------------------------------------
    def release(self, channel: int) -> None:
        """The lane's weed signal dropped: a max-on latch on its channel is lifted."""
        with self._lock:
            self._ch[channel].latched = False

    def cancel_all(self, reason: str) -> None:
        """Drop every plan and switch everything off, now."""
        with self._cond:
            dropped = sum(len(ch.intervals) for ch in self._ch)
            if dropped:
                self.cancelled += dropped
                self.spray_log.event("cancelled", plans=dropped, reason=reason)
            now = self.clock.now_ns()
            for i, ch in enumerate(self._ch):
                if ch.on:  # the as-applied record needs the close of every open valve
                    self.closes += 1
                    self.spray_log.event("close", channel=i, planned_ns=now, at_ns=now, delay_ms=0.0, reason=reason)
                ch.intervals.clear()
                ch.on, ch.on_since_ns, ch.opened_for_ns = False, None, None
            try:
                self.output.all_off()
            finally:
                self._cond.notify_all()

    @property
    def state(self) -> tuple[bool, ...]:
        with self._lock:
            return tuple(ch.on for ch in self._ch)

    # -- the thread ----------------------------------------------------------------------
    def start(self) -> "SprayScheduler":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="spray-scheduler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        with self._cond:
            while not self._stop.is_set():
                try:
                    nxt = self.run_due()
                except Exception as e:  # the thread must not die with a valve open
                    log.exception("spray scheduler failed: all outputs off")
                    if self.failure is None:
                        self.failure = e
                    self.cancel_all("scheduler error")
                    return  # the pipeline's next check() ends the run non-zero
                timeout = 0.1 if nxt is None else min(0.1, max(0.0, (nxt - self.clock.now_ns()) / 1e9))
                self._cond.wait(timeout)

    def close(self) -> None:
        """Drop every plan, all outputs off, stop the thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            try:
                self.cancel_all("close")
            finally:
                self._closed = True
                self._stop.set()
                self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=1.0)
        self.spray_log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        with self._lock:
            p95 = percentile(self.delays_ns, 95) / 1e6 if self.delays_ns else 0.0
            return {"planned": self.planned, "late": self.late, "missed": self.missed, "opens": self.opens,
                    "closes": self.closes, "max_on_trips": self.max_on_trips, "cancelled": self.cancelled,
                    "blocked": self.blocked, "unavailable": self.unavailable, "output_closed": self.output_closed,
                    "switch_delay_p95_ms": round(p95, 3)}
