"""Distance along a pass from a travel speed that varies: written by a run, read by replay scoring.

A run with ``[spray]`` logs the speed at its first frame (the spray log's ``pass_start``
line) and then a ``speed`` line whenever the speed changes (``Odometer``): by
``min_change_kmh`` or more from the last logged value, by any amount once ``every_s`` has
passed since it, and when it becomes unknown or known again. Both sides take the speed as
constant from one logged point to the next, so a fixed speed writes no ``speed`` line at
all. Each ``speed`` line also carries ``distance_cm``, the run's own odometer (every
frame's speed integrated from the first frame), so the small changes that were not
logged never add up.

``PassTrack`` rebuilds the distance at any time of the pass from those lines: from the
nearest logged point before it, at that point's speed. While the speed is unknown (no
GPS fix) the last known speed is held; before the first known one, that first known
speed is taken. A log without any speed above 0 is taken at one fixed speed (the
config's), as before ``speed`` lines existed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

from edge.spray.geometry import kmh_to_cm_s


class Odometer:
    """The run's distance since the first frame, and when a ``speed`` line is due (the writer side)."""

    def __init__(self, t0_ns: int, kmh: float | None, *, min_change_kmh: float = 0.1, every_s: float = 0.5):
        self.t0_ns = self.t_ns = int(t0_ns)
        self.min_change_kmh = float(min_change_kmh)
        self.every_ns = int(every_s * 1e9)
        self.distance_cm = 0.0
        self._held: float | None = kmh  # the speed integrated until the next frame (the last known)
        self._logged: float | None = kmh
        self._logged_ns = self.t_ns

    def update(self, t_ns: int, kmh: float | None) -> dict | None:
        """The speed read for the frame captured at ``t_ns`` (None: unknown); the fields of a ``speed``
        line (``t_capture_ns``, ``speed_kmh``, ``distance_cm``) when one is due, else None."""
        if self._held is not None:
            self.distance_cm += kmh_to_cm_s(self._held) * (t_ns - self.t_ns) / 1e9
        elif kmh is not None:  # the first known speed: taken back to the first frame (as replay does)
            self.distance_cm = kmh_to_cm_s(kmh) * (t_ns - self.t0_ns) / 1e9
        self.t_ns = t_ns
        if kmh is not None:
            self._held = kmh
        last = self._logged
        if kmh is None or last is None:
            due = (kmh is None) != (last is None)
        else:
            due = abs(kmh - last) >= self.min_change_kmh or (kmh != last and t_ns - self._logged_ns >= self.every_ns)
        if not due:
            return None
        self._logged, self._logged_ns = kmh, t_ns
        return {"t_capture_ns": int(t_ns), "speed_kmh": None if kmh is None else round(kmh, 4),
                "distance_cm": round(self.distance_cm, 2)}


@dataclass(frozen=True)
class _Knot:
    s: float  # seconds from the first frame
    d: float  # cm from the first frame
    cm_s: float  # speed from here to the next knot


class PassTrack:
    """Distance (cm) along the pass at any time, from ``pass_start`` and ``speed`` lines (the reader side)."""

    def __init__(self, t0_ns: int, knots: Sequence[_Knot]):
        self.t0_ns = int(t0_ns)
        self._knots = list(knots)
        self._s = [k.s for k in self._knots]

    @classmethod
    def from_events(cls, events: Sequence[dict], fallback_kmh: float | None) -> "PassTrack | None":
        """The track of the first pass in ``events`` (its ``pass_start`` and the ``speed`` lines after it, up
        to the next ``pass_start``); None when no speed is known at all (not in the log, no ``fallback_kmh``)."""
        first = next((i for i, e in enumerate(events) if e.get("event") == "pass_start"), None)
        if first is None:
            raise ValueError("no pass_start line")
        start = events[first]
        t0 = int(start["t_capture_ns"])
        own: list[dict] = []
        for e in events[first + 1:]:
            if e.get("event") == "pass_start":
                break  # another run: never mixed in
            own.append(e)
        points: list[tuple[float, float | None, float | None]] = [(0.0, start.get("speed_kmh"), 0.0)]
        lines = sorted((e for e in own if e.get("event") == "speed" and int(e["t_capture_ns"]) >= t0),
                       key=lambda e: int(e["t_capture_ns"]))
        points += [((int(e["t_capture_ns"]) - t0) / 1e9, e.get("speed_kmh"), e.get("distance_cm")) for e in lines]
        if not any(v is not None and v > 0 for _, v, _ in points):  # one fixed speed, as the config says
            if not fallback_kmh or fallback_kmh <= 0:
                return None
            return cls(t0, [_Knot(0.0, 0.0, kmh_to_cm_s(fallback_kmh))])
        held = kmh_to_cm_s(next(v for _, v, _ in points if v is not None))
        knots: list[_Knot] = []
        for s, v, d in points:
            if d is None:  # no odometer in the line: integrate the held speed
                d = knots[-1].d + knots[-1].cm_s * (s - knots[-1].s) if knots else 0.0
            if v is not None:
                held = kmh_to_cm_s(v)
            knots.append(_Knot(s, float(d), held))
        return cls(t0, knots)

    def distance_at(self, s: float) -> float:
        """cm from the first frame at ``s`` seconds after it (before it: extrapolated back)."""
        k = self._knots[max(0, bisect.bisect_right(self._s, s) - 1)]
        return k.d + k.cm_s * (s - k.s)

    def distance_at_ns(self, t_ns: float) -> float:
        return self.distance_at((t_ns - self.t0_ns) / 1e9)
