"""From lane verdicts to planned valve intervals.

Each frame is first gated (``gate``): below the minimum working speed, with the speed
unknown, or with the enable switch off, nothing is scheduled and sprays already planned
are cancelled (once, when the condition starts). Then each lane's cells decided on this
frame (``edge.spray.cells``) are planned (``plan``): a cell that sprays becomes one valve
interval on the monotonic clock, over the extent of the plant seen in it plus the margins
(``edge.spray.geometry`` -> ``edge.spray.scheduler``), a spray that the gate refused is
logged ``not_sprayed``, and a lane with nothing to spray releases its valve's refresh.

Every cell's line says what the cell saw (``cell_fields``): its views, the weed probability
they agree on (``edge.decide.rule.agreed_weed``), its plant share and the plant's extent on
the ground (``plant_cm``, cm of distance travelled: replay's coordinate). A cell that saw a
plant and was not sprayed — the rule said no, a view's crop veto, too sparse, too small — is logged
``spared`` (``log_spared``, default on), so that replay can say why a weed was missed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from edge.core.errors import ConfigError
from edge.decide.rule import agreed_weed
from edge.spray.cells import CellDecision, plant_share
from edge.spray.geometry import Geometry, kmh_to_cm_s
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import SpeedSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """Whether this frame may spray: the travel speed (None: too slow or unknown) and why not."""

    kmh: float | None
    go: bool
    why: str  # the reason logged for a refused spray


@dataclass(frozen=True)
class Planned:
    scheduled: int  # intervals handed to the scheduler for the lane on this frame
    late: int  # ... of which late or missed


def cell_fields(d: CellDecision) -> dict:
    """What a spray-log line says about a decided cell (docs/spray-timing.md, "The spray log")."""
    c = d.cell
    out = {"cell": c.index, "views": len(c.views), "first_frame": c.first_frame, "decided": d.why,
           "weed": round(agreed_weed(c.views), 4), "plant_share": round(plant_share(c), 3)}
    if c.plant is not None:
        out["plant_cm"] = [round(c.plant[0], 2), round(c.plant[1], 2)]
    if c.views and math.isfinite(c.peak_cm2):  # the gate measured it
        out["plant_cm2"] = round(c.peak_cm2, 3)
    return out


def require_channels(geometry: Geometry, channels: int) -> None:
    """``ConfigError`` unless the output has a channel for every lane's nozzle."""
    highest = max(geometry.channels)
    if highest >= channels:
        raise ConfigError(
            f"[spray] maps a lane to output channel {highest} but the output has {channels} "
            "channel(s)", "configure one output channel per nozzle (outputs.channels / outputs.pins) "
            "or fix [spray] lane_channels")


class SprayPlanner:
    """Speed and enable gate, and the scheduling of the cells decided to spray; owns no thread."""

    def __init__(self, geometry: Geometry, scheduler: SprayScheduler, speed: SpeedSource, *,
                 min_speed_kmh: float = 1.0, enable: Callable[[], bool] | None = None, log_spared: bool = True):
        self.geometry = geometry
        self.scheduler = scheduler
        self.speed = speed
        self.min_speed_kmh = min_speed_kmh
        self.enable = enable  # the enable switch: off -> nothing sprays
        self.log_spared = log_spared  # a ``spared`` line for every cell that saw a plant and was not sprayed
        self._disabled = False
        self._too_slow = False
        self.disabled_frames = 0
        self.too_slow_frames = 0
        self.last_kmh: float | None = None  # the speed source's reading at the last frame (None: unknown)
        require_channels(geometry, scheduler.output.channels)

    def gate(self) -> Gate:
        """This frame's speed and enable switch; counts and logs the frames that may not spray."""
        kmh = self._speed()
        if kmh is None:
            self.too_slow_frames += 1
        disabled = self.enable is not None and not self.enable()
        if disabled:
            self.disabled_frames += 1
            if not self._disabled:
                self.scheduler.cancel_all("enable switch off")
        self._disabled = disabled
        return Gate(kmh, kmh is not None and not disabled,
                    "enable switch off" if disabled else "speed below minimum or unknown")

    def _speed(self) -> float | None:
        kmh = self.last_kmh = self.speed.speed_kmh()
        slow = kmh is None or kmh < self.min_speed_kmh or kmh <= 0
        if slow and not self._too_slow:
            if kmh is None:
                log.warning("travel speed unknown (no GPS fix yet, or stale): nothing sprays")
            else:
                log.warning("travel speed %.1f km/h is below min_speed_kmh=%.1f: nothing sprays", kmh,
                            self.min_speed_kmh)
            self.scheduler.cancel_all("speed below minimum or unknown")
        elif not slow and self._too_slow:
            log.warning("travel speed %.1f km/h: spraying again", kmh)
        self._too_slow = slow
        return None if slow else kmh

    def plan(self, lane: int, decisions: Sequence[CellDecision], frame_id: int, gate: Gate,
             distance_cm: float, t_capture_ns: int, *, weed_seen: bool = False) -> Planned:
        """Schedule a lane's cells decided to spray on this frame (or log why not), each cut to its plant's
        extent (``Cell.plant``); a lane with nothing to spray and no weed in sight (``weed_seen``: a tile of
        this frame fires) releases its valve. ``distance_cm`` and ``t_capture_ns`` are this frame's: the
        cells' ground positions become times from there, at this frame's speed."""
        channel = self.geometry.channels[lane]
        spray = [d for d in decisions if d.spray]
        if spray and gate.go:
            assert gate.kmh is not None
            planned = self._schedule(lane, spray, channel, frame_id, distance_cm, t_capture_ns,
                                     kmh_to_cm_s(gate.kmh))
        else:
            for d in spray:  # too slow or switched off: counted, logged, not sprayed
                self.scheduler.spray_log.event("not_sprayed", lane=lane, channel=channel, frame=frame_id,
                                               **cell_fields(d), why=gate.why)
            if not spray and not weed_seen:
                self.scheduler.release(channel)
            planned = Planned(0, 0)
        self._log_spared(lane, channel, decisions, frame_id)  # after the valves: the record waits, they do not
        return planned

    def _log_spared(self, lane: int, channel: int, decisions: Sequence[CellDecision], frame_id: int) -> None:
        spray_log = self.scheduler.spray_log
        if not (self.log_spared and spray_log.writes):  # nothing to write to: not worth the fields
            return
        for d in decisions:
            if not d.spray and d.cell.views:
                spray_log.event("spared", lane=lane, channel=channel, frame=frame_id, **cell_fields(d),
                                vetoed=d.vetoed, sparse=d.sparse, small=d.small)

    def _schedule(self, lane: int, decisions: Sequence[CellDecision], channel: int, frame_id: int,
                  distance_cm: float, t_capture_ns: int, cm_s: float) -> Planned:
        position = self.speed.position()  # a GPS knows where we are: lat/lon on the spray log
        extra = {"lat": round(position[0], 7), "lon": round(position[1], 7)} if position is not None else {}
        scheduled = late = 0
        for d in decisions:
            assert d.cell.plant is not None  # a cell sprays only on views that saw a plant in it
            rear, front = d.cell.plant
            open_ns, close_ns = self.geometry.interval_ns(rear - distance_cm, front - distance_cm, t_capture_ns,
                                                          cm_s)
            outcome = self.scheduler.plan(channel, open_ns, close_ns, lane=lane, frame_id=frame_id, reason="weed",
                                          extra={**cell_fields(d), **extra})
            scheduled += 1
            late += outcome.status in ("late", "missed")
        return Planned(scheduled, late)
