"""Replay scoring: a dry run's spray log + where the weeds really were -> hits, misses, waste.

    python -m edge.tools.replay --config field.toml --spray-log spray.jsonl --truth truth.jsonl

The spray log is the ``[spray] log_jsonl`` of an ``edge-run`` over a recorded pass (a
video read with ``--realtime``, so capture times match the recording). The ground-truth
file has one JSON object per line, each plant placed by distance or by time::

    {"lane": 1, "distance_cm": 250.0, "length_cm": 8.0, "kind": "weed"}
    {"lane": 0, "time_s": 4.2, "length_cm": 6.0}

``distance_cm``: the plant's centre, along travel, from the ground point under the image
centre at the first frame; ``time_s``: when the plant's centre passed under the image
centre, in seconds from the start of the video (its first frame), converted to a distance
with the pass's speed over that time; ``length_cm`` (default 5): its extent along travel; ``kind``:
``weed`` (default) or ``crop`` (spraying it is counted as waste). ``class`` and ``note`` are
notes for people; any other key is warned about and ignored. Every line is checked
(``TruthRow``: types, finite numbers in sane ranges), and so is every spray-log line
replay reads (``spray_line``): a bad line is an error naming the file and the line (exit
3); a cut last line of a spray log (the run stopped, or its disk filled, mid-line) is
skipped with a warning. ``gap`` lines (lines lost to a full disk) are counted in the score.

Times are turned into distances along the pass with the speed the run logged: its
``pass_start`` line and a ``speed`` line at every change, integrated from the first frame
(``edge.spray.odometer.PassTrack``; a log without any speed is taken at the config's
``speed_kmh``). Each executed open/close on a channel sprays the ground strip of its lane
between where the spray line was when the liquid arrived (open + opening lag) and when it
stopped (close + closing lag). A weed is **hit** when that covers all of it, **partly hit** when some of it,
**missed** otherwise. Sprayed area off the weeds is the waste; *saved* compares the sprayed
area with spraying the whole boom width for the whole pass, and *ideal* is what a perfect
spot sprayer would save: spraying each weed's length along travel plus both configured
margins (``margin_before_cm``, ``margin_after_cm``) across its lane, nothing else. Every plant
gets its own row (``PlantScore``: how much of it was sprayed, and how far the nearest spray
of its lane landed from it); ``--plants`` prints them, ``--json`` always has them, and
``--plot FILE.png`` draws the pass (matplotlib, the ``plot`` extra, imported only then).

**Why** (``explain``): a weed not wholly hit, or a crop sprayed, gets a ``cause`` and a
sentence (``why``) from the pass's cell lines (``planned``, ``late``, ``missed``,
``not_sprayed``, ``spared``: every decided cell's views, agreed weed probability and plant
extent, ``edge.spray.planner.cell_fields``) whose plant overlaps it in its lane (by more than
``MATCH_CM``; else, within ``OVERLAP_CM``, those no other plant owns: ``plant_cells``). A weed:
``unseen`` (no cell saw a plant there, or only the part that was sprayed: the vegetation gate
called the rest ground), ``rule`` (the
views agreed on too low a weed probability), ``veto``, ``sparse``, ``small`` (below ``min_plant_cm2``), ``gate`` (too slow, enable
switch off, max on-time latched), ``late``, ``dropped`` (its cells were planned to spray, and a
``blocked``, ``max_on`` or ``cancelled`` line dropped the spray over it: ``dropped_segments``),
``placement`` (its cells were sprayed, the spray landed off what they saw); a crop: ``model`` (a cell on it sprayed: the model called it a weed) or
``neighbour`` (a spray for a neighbouring weed covered it). A log written before the cell
lines, or with ``[spray] log_spared = false``, gives ``unknown`` where it cannot tell.

A spray log appends: one file may hold several runs. Each run's lines are those from its
``pass_start`` to the next ``pass_start``; one pass is scored, never a mix (``--pass N``,
1 = the first, -1 = the last, the default), and the output says which of how many.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable, Generic, Iterable, Literal, Sequence, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge.core.errors import EXIT_USAGE, ConfigError, WeedDetectorError
from edge.core.jsonl import cannot_write, read_jsonl
from edge.core.stdout import EXIT_BROKEN_PIPE, stdout_to_devnull
from edge.core.text import OneLineFormatter, one_line
from edge.spray.config import MAX_CELL_LENGTH_CM, SprayConfig
from edge.spray.geometry import Geometry
from edge.spray.odometer import PassTrack

log = logging.getLogger("edge.tools.replay")


@dataclass(frozen=True)
class Plant:
    """A plant of the ground truth, placed by ``distance_cm`` or by ``time_s`` (exactly one of them)."""

    lane: int
    distance_cm: float | None = None
    length_cm: float = 5.0
    kind: str = "weed"
    time_s: float | None = None  # when its centre passed under the image centre, from the first frame

    def __post_init__(self) -> None:
        if (self.distance_cm is None) == (self.time_s is None):
            raise ValueError("give exactly one of distance_cm and time_s")
        if not self.length_cm >= 0:
            raise ValueError(f"length_cm must be >= 0, got {self.length_cm!r}")
        if self.kind not in ("weed", "crop"):
            raise ValueError(f'kind must be "weed" or "crop", got {self.kind!r}')

    def placed(self, distance_at: Callable[[float], float]) -> "Plant":
        """The same plant by distance: ``distance_at(seconds from the first frame)`` -> cm along the pass."""
        if self.distance_cm is not None:
            return self
        assert self.time_s is not None
        return Plant(self.lane, distance_at(self.time_s), self.length_cm, self.kind)

    @property
    def span(self) -> tuple[float, float]:
        if self.distance_cm is None:
            raise ValueError("a plant given by time_s has no distance yet: use placed(distance_at)")
        return self.distance_cm - self.length_cm / 2, self.distance_cm + self.length_cm / 2


WEED_RESULTS = ("hit", "partly", "missed")
CROP_RESULTS = ("sprayed", "spared")


@dataclass(frozen=True)
class PlantScore:
    """One plant of the ground truth after the pass, placed by distance (cm along the pass)."""

    lane: int
    distance_cm: float
    length_cm: float
    kind: str  # weed or crop
    covered_cm: float  # of its length along travel, how much its lane's sprays covered
    covered: float  # the same as a share of its length, 0..1 (a plant of length 0: 1 when a spray holds it)
    result: str  # a weed: hit, partly, missed; a crop: sprayed, spared
    nearest_spray_cm: float | None  # 0: sprayed; < 0 the nearest spray of its lane landed short of it
    # (too early), > 0 beyond it (too late); None: its lane was never sprayed
    cause: str | None = None  # a weed not wholly hit, a crop sprayed: why (WEED_CAUSES, CROP_CAUSES); else None
    why: str = ""  # the same in a sentence, with the numbers the spray log gave

    @property
    def span(self) -> tuple[float, float]:
        return self.distance_cm - self.length_cm / 2, self.distance_cm + self.length_cm / 2


@dataclass(frozen=True)
class Score:
    weeds: int
    hits: int
    partial: int
    misses: int
    crops_sprayed: int
    late: int  # late or missed sprays the run logged (the pipeline was too slow)
    sprayed_m2: float
    wasted_m2: float  # sprayed area not on a weed
    blanket_m2: float  # the whole boom width over the whole pass
    pass_m: float
    pass_no: int = 1  # which pass of the spray log was scored (1-based)
    passes: int = 1  # how many passes the spray log holds
    lines_lost: int = 0  # spray-log lines of this pass lost to a full disk (its gap lines): sprays may be missing
    crops: int = 0  # crops in the ground truth
    ideal_m2: float = 0.0  # each weed's length + both margins, across its lane (overlaps once): a perfect spot sprayer
    plants: tuple[PlantScore, ...] = ()  # every plant of the ground truth, in its order
    sprayed_by_lane: tuple[tuple[tuple[float, float], ...], ...] = ()  # per lane: the sprayed ground (cm from, to)

    @property
    def saved(self) -> float:
        return 0.0 if self.blanket_m2 <= 0 else max(0.0, 1.0 - self.sprayed_m2 / self.blanket_m2)

    @property
    def ideal_saved(self) -> float:
        """What spraying exactly ``ideal_m2`` would save against blanket spraying."""
        return 0.0 if self.blanket_m2 <= 0 else max(0.0, 1.0 - self.ideal_m2 / self.blanket_m2)

    def line(self) -> str:
        return (f"pass {self.pass_no} of {self.passes}: weeds {self.weeds}: {self.hits} hit, {self.partial} partly, "
                f"{self.misses} missed | {self.late} late sprays | crops sprayed {self.crops_sprayed} of "
                f"{self.crops} | sprayed {self.sprayed_m2:.2f} m² ({self.wasted_m2:.2f} m² off weeds) over a "
                f"{self.pass_m:.1f} m pass; herbicide saved vs blanket {self.saved:.0%}, ideal "
                f"{self.ideal_saved:.0%} (each weed + margins: {self.ideal_m2:.2f} m²)"
                + (f" | {self.lines_lost} spray-log line(s) of this pass were lost (disk full): sprays in the gap "
                   f"are not scored" if self.lines_lost else "") + self._causes_line())

    def causes(self) -> dict[str, dict[str, int]]:
        """How many weeds not wholly hit, and crops sprayed, have each cause (``explain``)."""
        return {"weed": causes(self.plants, "weed"), "crop": causes(self.plants, "crop")}

    def _causes_line(self) -> str:
        c = self.causes()
        parts = [f"{what} by cause: " + ", ".join(f"{k} {n}" for k, n in c[kind].items())
                 for kind, what in (("weed", "weeds not wholly hit"), ("crop", "crops sprayed")) if c[kind]]
        return "".join(f" | {x}" for x in parts)

    def as_dict(self) -> dict:
        """What ``--json`` prints: every field, ``saved`` and ``ideal_saved``, each plant with its ``covered``."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("plants", "sprayed_by_lane")}
        return {**out, "saved": round(self.saved, 4), "ideal_saved": round(self.ideal_saved, 4),
                "causes": self.causes(), "plants": [asdict(p) for p in self.plants],
                "sprayed_by_lane": [[[round(a, 2), round(b, 2)] for a, b in lane] for lane in self.sprayed_by_lane]}

    def table(self) -> str:
        """The plants, one row each (``--plants``)."""
        rows = [f"{'#':>3} {'lane':>4} {'at cm':>8} {'length':>6} {'kind':<4} {'result':<7} {'sprayed':>7} "
                f"{'nearest spray cm (-short/+beyond)':>33}  why"]
        for i, p in enumerate(self.plants, 1):
            near = ("never sprayed" if p.nearest_spray_cm is None else "0.0" if p.nearest_spray_cm == 0
                    else f"{p.nearest_spray_cm:+.1f}")
            rows.append(f"{i:>3} {p.lane:>4} {p.distance_cm:>8.1f} {p.length_cm:>6.1f} {p.kind:<4} {p.result:<7} "
                        f"{p.covered:>7.0%} {near:>33}" + (f"  {p.cause}: {one_line(p.why)}" if p.cause else ""))
        return "\n".join(rows)


def _union_len(segs: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of [lo, hi] covered by the (sorted, merged) segments."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in segs)


def _nearest(segs: Sequence[tuple[float, float]], lo: float, hi: float) -> float | None:
    """Signed distance from [lo, hi] to the nearest segment: 0 when one touches it, < 0 when it lies before
    ``lo``, > 0 after ``hi``; None without segments."""
    best: float | None = None
    for a, b in segs:
        d = 0.0 if a <= hi and b >= lo else (b - lo if b < lo else a - hi)
        if best is None or abs(d) < abs(best):
            best = d
    return best


def _merge(segs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(segs):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


# -- why a weed was missed, why a crop was sprayed ---------------------------------------------

CELL_EVENTS = ("planned", "late", "missed", "not_sprayed", "spared")  # the lines that tell a decided cell
WEED_CAUSES = ("unseen", "rule", "veto", "sparse", "small", "gate", "late", "dropped", "placement", "unknown")
CROP_CAUSES = ("model", "neighbour", "unknown")
MATCH_CM = 0.5  # a cell whose plant overlaps a plant of the truth by more (or by half its length) is its cell
OVERLAP_CM = 1.0  # ... and, when none does, cells whose plant is this close are taken to be it (mask vs truth)


@dataclass(frozen=True)
class CellLine:
    """One decided cell of the pass as its spray-log line tells it (``edge.spray.planner.cell_fields``)."""

    event: str  # one of CELL_EVENTS
    lane: int
    plant_cm: tuple[float, float]  # (rear, front) of the plant it saw, cm along the pass
    weed: float  # the weed probability its views agreed on
    views: int
    vetoed: bool = False
    sparse: bool = False
    plant_share: float = 1.0
    why: str = ""  # not_sprayed: the gate's reason
    small: bool = False
    plant_cm2: float | None = None  # the largest vegetation one of its views saw (None: not measured, an older log)

    @property
    def cause(self) -> str:
        """``sprayed`` or the weed cause this cell gives (WEED_CAUSES)."""
        if self.event == "planned":
            return "sprayed"
        if self.event in ("late", "missed"):
            return "late"
        if self.event == "not_sprayed":
            return "gate"
        return "sparse" if self.sparse else "small" if self.small else "veto" if self.vetoed else "rule"

    @classmethod
    def from_line(cls, e: dict) -> "CellLine | None":
        """The cell of a (checked: ``_CellSprayLine``) spray-log line; None for a line without one (another
        event, an older log)."""
        if e["event"] not in CELL_EVENTS or e.get("lane") is None or e.get("plant_cm") is None:
            return None
        rear, front = sorted(float(x) for x in e["plant_cm"])
        return cls(e["event"], int(e["lane"]), (rear, front), float(e.get("weed", 0.0)) + 0.0,  # not -0.00
                   int(e.get("views", 0)), bool(e.get("vetoed", False)), bool(e.get("sparse", False)),
                   float(e.get("plant_share", 1.0)), " ".join(str(e.get("why", "")).split())[:80],  # escaped in
                   bool(e.get("small", False)), None if e.get("plant_cm2") is None else float(e["plant_cm2"]))
        # ``Score.table``, where it is printed


def cell_lines(events: Sequence[dict]) -> dict[int, list[CellLine]]:
    """Per lane: the pass's decided cells that saw a plant."""
    out: dict[int, list[CellLine]] = {}
    for e in events:
        c = CellLine.from_line(e)
        if c is not None:
            out.setdefault(c.lane, []).append(c)
    return out


T = TypeVar("T")


class ByPlace(Generic[T]):
    """One lane's things along travel (cell lines, plants of the truth), found by where they are: by bisection
    on their rear edge (a pass of an hour has some 10^5 cells a lane, and a plant for every metre)."""

    def __init__(self, items: Iterable[T], span: Callable[[T], tuple[float, float]]):
        self._items = sorted(items, key=span)
        self._rears = [span(x)[0] for x in self._items]
        self._longest = max((span(x)[1] - span(x)[0] for x in self._items), default=0.0)

    def near(self, lo: float, hi: float, reach: float) -> list[T]:
        """Every item whose span lies within ``reach`` of [lo, hi] (and a few more: the caller picks)."""
        first = bisect.bisect_left(self._rears, lo - reach - self._longest)
        return self._items[first:bisect.bisect_right(self._rears, hi + reach)]


def _views(c: CellLine) -> str:
    return f"{c.views} view{'s' if c.views != 1 else ''}"


def _overlap(c: CellLine, lo: float, hi: float) -> float:
    """How far a cell's plant overlaps [lo, hi] (cm; negative: the gap between them)."""
    return min(c.plant_cm[1], hi) - max(c.plant_cm[0], lo)


def _owns(c: CellLine, lo: float, hi: float) -> bool:
    """The cell's plant overlaps [lo, hi] by more than ``MATCH_CM`` (or half the plant's length)."""
    return _overlap(c, lo, hi) > min(MATCH_CM, (hi - lo) / 2)


def plant_cells(cells: Sequence[CellLine], lo: float, hi: float,
                others: Sequence[tuple[float, float]] = ()) -> tuple[list[CellLine], bool]:
    """The cells that saw the plant at [lo, hi], and whether they overlap it (False: only near it): those whose
    plant overlaps it by more than ``MATCH_CM`` (or half its length), else those within ``OVERLAP_CM`` of it that
    are no other plant's (``others``: the spans of the lane's other plants) — so a neighbour's cell a sliver into
    it, or just beside it, does not count."""
    own = [c for c in cells if _owns(c, lo, hi)]
    if own:
        return own, True
    return [c for c in cells if _overlap(c, lo, hi) > -OVERLAP_CM
            and not any(_owns(c, a, b) for a, b in others)], False


def _intersection_len(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """Length covered by both sorted, merged segment lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def explain(row: PlantScore, cells: Sequence[CellLine], spared_logged: bool | None,
            dropped: Sequence[tuple[float, float, str]] = (), sprayed: Sequence[tuple[float, float]] = (),
            others: Sequence[tuple[float, float]] = ()) -> tuple[str | None, str]:
    """Why a weed was not wholly hit, or a crop sprayed: (cause, sentence); (None, "") for the others.

    ``cells``: the decided cells of its lane near it; ``spared_logged``: the pass logged its spared cells (None: the log
    does not say, it predates the cell lines); ``dropped``: the ground of its channel where planned sprays were
    dropped or cut (``dropped_segments``); ``sprayed``: the lane's sprayed ground (sorted, merged cm); ``others``: the spans of the
    lane's other plants (``plant_cells``)."""
    weed = row.kind == "weed"
    if (row.result == "hit") if weed else (row.result == "spared"):
        return None, ""
    lo, hi = row.span
    mine, own = plant_cells(cells, lo, hi, others)
    if spared_logged is None and not mine:
        return "unknown", ("no cell line for it, and the pass does not say whether its spared cells were logged "
                           "(pass_start without log_spared: written before edge-run logged them)")
    if not weed:
        hot = [c for c in mine if c.cause in ("sprayed", "late")]
        if hot:
            c = max(hot, key=lambda c: c.weed)
            return "model", f"read as a weed: its views agreed on weed {c.weed:.2f} ({_views(c)})"
        return "neighbour", "no cell on it sprayed: the spray (and its margins) for a weed next to it covered it"
    not_sprayed = [c for c in mine if c.cause != "sprayed"]
    if not_sprayed:
        counts: dict[str, int] = {}
        for c in not_sprayed:
            counts[c.cause] = counts.get(c.cause, 0) + 1
        cause = max(counts, key=lambda k: (counts[k], -WEED_CAUSES.index(k)))
        c = max((c for c in not_sprayed if c.cause == cause), key=lambda c: c.weed)
        n = f" ({counts[cause]} of its {len(mine)} cells)" if len(mine) > 1 else ""
        text = {"rule": f"the views agreed on weed {c.weed:.2f}, below the threshold ({_views(c)})",
                "veto": f"a view's crop probability reached the crop veto (weed {c.weed:.2f}, {_views(c)})",
                "sparse": f"a plant in only {c.plant_share:.0%} of the views that covered it (weed {c.weed:.2f}, "
                          f"{_views(c)}): below [spray] min_plant_share",
                "small": f"its views saw a plant of at most {c.plant_cm2 or 0:.2f} cm² (weed {c.weed:.2f}, "
                         f"{_views(c)}): below [spray] min_plant_cm2",
                "gate": f"decided to spray, not sprayed: {c.why or 'the speed or enable gate'}",
                "late": "decided to spray too late for the nozzle (the pipeline was slower than the speed allows)"}
        return cause, text[cause] + n
    # every cell on it sprayed: the spray landed off what they saw, or part of the weed was in no cell
    seen = _merge((max(c.plant_cm[0], lo), min(c.plant_cm[1], hi)) for c in mine if _overlap(c, lo, hi) > 0)
    seen_cm = _union_len(seen, lo, hi)
    missed_seen = seen_cm - _intersection_len(seen, sprayed)  # seen, and not sprayed
    if mine and (not own or missed_seen > min(MATCH_CM, seen_cm / 2) or (hi - lo) - seen_cm <= MATCH_CM):
        cut = sorted({what for a, b, what in dropped if a < hi + MATCH_CM and b > lo - MATCH_CM})
        if cut:
            return "dropped", (f"its {len(mine)} cell(s) were planned to spray, the spray covered {row.covered:.0%} "
                               f"of it: planned sprays over it were dropped or cut ({', '.join(cut)})")
        near = "" if row.nearest_spray_cm in (None, 0) else f"; the nearest spray {row.nearest_spray_cm:+.1f} cm"
        return "placement", (f"its {len(mine)} cell(s) were sprayed, the spray covered {row.covered:.0%} of it"
                             f"{near}: check nozzle_distance_cm, the speed and the valve lags")
    if spared_logged is not True:
        return "unknown", ("no cell line for " + ("the rest of it" if mine else "it") + ", and the pass did not log "
                           "its spared cells ([spray] log_spared = false, the vegetation gate off, or an older log)")
    if mine:
        return "unseen", (f"the vegetation gate saw {seen_cm / (hi - lo):.0%} of it, and that was sprayed; no cell "
                          "saw the rest")
    return "unseen", "no cell saw a plant here: the vegetation gate called it bare ground"


def causes(rows: Iterable[PlantScore], kind: str) -> dict[str, int]:
    """How many plants of ``kind`` have each cause, in the causes' order."""
    order = WEED_CAUSES if kind == "weed" else CROP_CAUSES
    n = {c: 0 for c in order}
    for r in rows:
        if r.kind == kind and r.cause is not None:
            n[r.cause] += 1
    return {c: k for c, k in n.items() if k}



def _spray_line_cm(geom: Geometry, track: PassTrack, t_ns: float) -> float:
    """Where the spray line was at ``t_ns`` (cm along the pass: it trails the image centre)."""
    return track.distance_at_ns(t_ns) - geom.nozzle_distance_cm


def sprayed_segments(events: Sequence[dict], geom: Geometry, track: PassTrack) -> dict[int, list]:
    """Per channel: the merged ground segments (cm along the pass) the executed sprays covered."""
    segs: dict[int, list[tuple[float, float]]] = {}
    opened: dict[int, int] = {}
    last_ns = track.t0_ns
    pos = partial(_spray_line_cm, geom, track)

    def seg(o_ns: float, c_ns: float) -> tuple[float, float]:
        a = pos(o_ns)
        return a, max(a, pos(c_ns))

    channels = set(geom.channels)
    for e in events:
        last_ns = max(last_ns, int(e.get("t_mono_ns", last_ns)))
        if e["event"] in ("open", "close") and e["channel"] not in channels:
            raise ConfigError(f"the spray log switches channel {e['channel']}, the config's lanes use channels "
                              f"{sorted(channels)}", "score the pass with the config it was run with")
        if e["event"] == "open":
            opened[e["channel"]] = e["at_ns"]
        elif e["event"] == "close" and e["channel"] in opened:
            o = opened.pop(e["channel"])
            segs.setdefault(e["channel"], []).append(seg(o + geom.open_lag_ns, e["at_ns"] + geom.close_lag_ns))
    for ch, o in opened.items():  # never closed in the log: count it open to the end
        segs.setdefault(ch, []).append(seg(o + geom.open_lag_ns, last_ns))
    return {ch: _merge(s) for ch, s in segs.items()}


def dropped_segments(events: Sequence[dict], geom: Geometry, track: PassTrack) -> dict[int, list]:
    """Per channel: (from, to, what) — the ground (cm along the pass) of sprays planned and then dropped or cut:
    a refused opening (``blocked``: its planned interval), a max on-time trip (from the trip to the channel's next
    opening), a cancel (every channel: the ground between the spray line and the image's front edge then)."""
    pos = partial(_spray_line_cm, geom, track)
    out: dict[int, list[tuple[float, float, str]]] = {}
    last_ns = max(int(e["t_mono_ns"]) for e in events)
    reopen: dict[int, list[int]] = {}  # channel -> its openings, in log order
    for e in events:
        if e["event"] == "open":
            reopen.setdefault(e["channel"], []).append(int(e["at_ns"]))
    for e in events:
        t = int(e["t_mono_ns"])
        if e["event"] == "blocked" and e.get("planned_ns") is not None and e.get("until_ns") is not None:
            a = pos(int(e["planned_ns"]) + geom.open_lag_ns)
            out.setdefault(e["channel"], []).append(
                (a, max(a, pos(int(e["until_ns"]) + geom.close_lag_ns)), f"blocked: {e.get('why') or 'refused'}"))
        elif e["event"] == "max_on":
            until = min((o for o in reopen.get(e["channel"], []) if o > t), default=last_ns)
            out.setdefault(e["channel"], []).append((pos(t), max(pos(t), pos(until)), "max on-time tripped"))
        elif e["event"] == "cancelled":
            a = pos(t)
            for ch in set(geom.channels):
                out.setdefault(ch, []).append((a, a + geom.nozzle_distance_cm + geom.footprint_along_cm / 2,
                                               f"cancelled: {e.get('reason') or 'no reason given'}"))
    return out


def split_passes(events: Sequence[dict]) -> list[list[dict]]:
    """The runs of a spray log: each from its ``pass_start`` line up to the next one (lines before the
    first ``pass_start`` belong to no pass and are left out)."""
    passes: list[list[dict]] = []
    for e in events:
        if e.get("event") == "pass_start":
            passes.append([e])
        elif passes:
            passes[-1].append(e)
    return passes


def select_pass(events: Sequence[dict], number: int = -1) -> tuple[list[dict], int, int]:
    """The lines of pass ``number`` (1-based; negative: from the end, -1 = the last), its 1-based
    number and how many passes there are."""
    passes = split_passes(events)
    if not passes:
        raise ConfigError("the spray log has no pass_start line",
                          "score a spray log written by edge-run with [spray] log_jsonl over a whole pass")
    before = next(i for i, e in enumerate(events) if e.get("event") == "pass_start")
    if before:
        log.warning("the first %d spray-log line(s) come before any pass_start and belong to no pass: left out (a "
                    "rotated log's parts are given oldest first: spray.jsonl.2 spray.jsonl.1 spray.jsonl)", before)
    n = len(passes)
    if number == 0 or not -n <= number <= n:
        raise ConfigError(f"--pass {number}: the spray log holds {n} pass(es)",
                          f"give 1..{n} (1 = the first), or -1..-{n} (-1 = the last, the default)")
    index = number - 1 if number > 0 else n + number
    return passes[index], index + 1, n


def score(events: Sequence[dict], plants: Sequence[Plant], cfg: SprayConfig, pass_no: int = -1) -> Score:
    """Score pass ``pass_no`` of the spray log (default: the last one; see ``select_pass``)."""
    geom = Geometry.from_config(cfg)
    events, number, passes = select_pass(events, pass_no)
    track = PassTrack.from_events(events, cfg.speed_kmh)
    if track is None:
        raise ConfigError("the spray log does not say how fast the pass was", "set [spray] speed_kmh in the config")
    end = next((e for e in reversed(events) if e["event"] == "pass_end"), None)
    t_end = int(end["t_capture_ns"]) if end is not None else max(int(e["t_mono_ns"]) for e in events)
    ran = events[0].get("lane_channels")
    if ran is not None and list(ran) != list(geom.channels):
        raise ConfigError(f"the pass was run with {len(ran)} lane(s) on channels {list(ran)}, the config has "
                          f"{geom.lanes} lane(s) on channels {list(geom.channels)}", "score the pass with the config it was run with")
    segs = sprayed_segments(events, geom, track)
    widths = [(b - a) * cfg.footprint_across_cm for a, b in zip(geom.lane_edges, geom.lane_edges[1:])]
    lane_segs = tuple(tuple(segs.get(geom.channels[lane], [])) for lane in range(geom.lanes))  # a channel sprays
    # every lane mapped to it
    rows: list[PlantScore] = []
    cells = {lane: ByPlace(cs, lambda c: c.plant_cm) for lane, cs in cell_lines(events).items()}
    for lane in cells:
        if not 0 <= lane < geom.lanes:
            raise ConfigError(f"the spray log has cell lines for lane {lane}, the config has {geom.lanes} lanes",
                              "score the pass with the config it was run with")
    spared_logged = events[0].get("log_spared")  # None: a log from before the cell lines
    dropped = dropped_segments(events, geom, track)
    weed_area = 0.0
    ideal: dict[int, list[tuple[float, float]]] = {}
    placed = [p.placed(track.distance_at) for p in plants]
    spans = {lane: ByPlace([p.span for p in placed if p.lane == lane], lambda s: s)
             for lane in {p.lane for p in placed}}
    for p in placed:
        if not 0 <= p.lane < geom.lanes:
            raise ConfigError(f"ground truth names lane {p.lane}, the config has {geom.lanes}",
                              "number lanes from 0, left to right in the image")
        assert p.distance_cm is not None
        lo, hi = p.span
        covered = _union_len(list(lane_segs[p.lane]), lo, hi)
        share = (min(1.0, covered / (hi - lo)) if hi > lo
                 else float(any(a <= lo <= b for a, b in lane_segs[p.lane])))  # a point: inside a spray or not
        if p.kind == "weed":
            weed_area += covered * widths[p.lane]
            ideal.setdefault(p.lane, []).append((lo - cfg.margin_before_cm, hi + cfg.margin_after_cm))
            whole = covered >= (hi - lo) - 1e-6 if hi > lo else share > 0
            result = "hit" if whole else "partly" if covered > 0 else "missed"
        else:
            result = "sprayed" if covered > 0 or share > 0 else "spared"
        near = _nearest(lane_segs[p.lane], lo, hi)
        row = PlantScore(p.lane, round(p.distance_cm, 2), p.length_cm, p.kind, round(covered, 2),
                         round(share, 4), result, None if near is None else round(near, 2))  # to 0.1 mm
        others = spans[p.lane].near(lo, hi, OVERLAP_CM + MAX_CELL_LENGTH_CM)  # a near cell may overlap these
        others.remove((lo, hi))  # ... but this plant (once: a twin at the same place stays)
        cause, why = explain(row, cells[p.lane].near(lo, hi, OVERLAP_CM) if p.lane in cells else (), spared_logged,
                             dropped.get(geom.channels[p.lane], ()), lane_segs[p.lane], others)
        rows.append(replace(row, cause=cause, why=why))
    count = {r: sum(1 for x in rows if x.result == r) for r in WEED_RESULTS + CROP_RESULTS}
    sprayed = sum(sum(b - a for a, b in lane_segs[lane]) * widths[lane] for lane in range(geom.lanes))
    ideal_cm2 = sum(sum(b - a for a, b in _merge(s)) * widths[lane] for lane, s in ideal.items())
    pass_cm = max(0.0, track.distance_at_ns(t_end))
    late = sum(1 for e in events if e["event"] in ("late", "missed"))
    lost = sum(int(e["lines_lost"]) for e in events if e["event"] == "gap")
    return Score(count["hit"] + count["partly"] + count["missed"], count["hit"], count["partly"], count["missed"],
                 count["sprayed"], late, sprayed / 1e4, max(0.0, sprayed - weed_area) / 1e4,
                 pass_cm * cfg.footprint_across_cm / 1e4, pass_cm / 100, number, passes, lost,
                 count["sprayed"] + count["spared"], ideal_cm2 / 1e4, tuple(rows), lane_segs)


# -- the input files ----------------------------------------------------------------------
# Both files are read by edge.core.jsonl.read_jsonl (a cut last line is skipped with a warning, any
# other bad line is an error naming the file and the line) and every line is checked against the
# schema below: a wrong type, a null, a non-finite or absurd number is a ConfigError (exit 3).

MAX_KMH = 1000.0  # no sprayer drives faster; a larger logged speed is garbage
MAX_CM = 1e9  # 10 000 km along a pass
MAX_NS = 2 ** 63 - 1  # monotonic nanoseconds fit an int64
MAX_LANES = 1000
MAX_TIME_S = 1e6  # about 11 days from the first frame
MAX_LENGTH_CM = 10_000.0  # a plant 100 m long is a typo

_Ns = Annotated[int, Field(ge=0, le=MAX_NS)]
_Kmh = Annotated[float, Field(ge=0, le=MAX_KMH, allow_inf_nan=False)]
_Cm = Annotated[float, Field(ge=-MAX_CM, le=MAX_CM, allow_inf_nan=False)]


class _SprayLine(BaseModel):
    """Every spray-log line: its event and when it was written; other keys are the event's own."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    event: str
    t_mono_ns: _Ns


class _PassStart(_SprayLine):
    t_capture_ns: _Ns
    speed_kmh: _Kmh | None = None
    log_spared: bool | None = None  # the pass logs a line for every cell it spared (None: an older log)
    lane_channels: list[Annotated[int, Field(ge=0, le=63)]] | None = None  # the output channel of each lane (None: older)


class _SpeedLine(_SprayLine):
    t_capture_ns: _Ns
    speed_kmh: _Kmh | None = None
    distance_cm: _Cm | None = None


class _Switched(_SprayLine):
    channel: Annotated[int, Field(ge=0, le=MAX_LANES)]
    at_ns: _Ns


class _Blocked(_SprayLine):
    channel: Annotated[int, Field(ge=0, le=MAX_LANES)]
    planned_ns: _Ns | None = None
    until_ns: _Ns | None = None
    why: str = ""


class _MaxOn(_SprayLine):
    channel: Annotated[int, Field(ge=0, le=MAX_LANES)]


class _Cancelled(_SprayLine):
    reason: str = ""


class _PassEnd(_SprayLine):
    t_capture_ns: _Ns


class _Gap(_SprayLine):
    lines_lost: Annotated[int, Field(ge=0)]


_Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Area = Annotated[float, Field(ge=0, le=MAX_CM, allow_inf_nan=False)]  # cm²


def _whole(v: Any) -> Any:
    """A lane written as 2.0 is lane 2."""
    return int(v) if isinstance(v, float) and math.isfinite(v) and v.is_integer() else v


class _CellSprayLine(_SprayLine):
    """A decided cell's line (CELL_EVENTS): what ``explain`` reads, each optional (older logs lack them)."""

    lane: Annotated[int, BeforeValidator(_whole), Field(ge=0, le=MAX_LANES)] | None = None  # None: lanes share it
    plant_cm: Annotated[list[_Cm], Field(min_length=2, max_length=2)] | None = None  # None: an older log
    weed: _Share = 0.0
    views: Annotated[int, Field(ge=0, le=MAX_NS)] = 0
    vetoed: bool = False
    sparse: bool = False
    small: bool = False
    plant_share: _Share = 1.0
    plant_cm2: _Area | None = None
    why: str = ""

    @model_validator(mode="after")
    def _what_it_saw(self) -> "_CellSprayLine":
        missing = [k for k in ("weed", "views") if k not in self.model_fields_set]
        if self.plant_cm is not None and missing:  # edge-run writes them with plant_cm: not a default to explain
            raise ValueError(f"a cell line with plant_cm needs {' and '.join(missing)} too")
        if self.plant_cm is not None and abs(self.plant_cm[1] - self.plant_cm[0]) > MAX_CELL_LENGTH_CM:
            raise ValueError(f"plant_cm {self.plant_cm} is longer than a cell can be ({MAX_CELL_LENGTH_CM:.0f} cm)")
        return self


# the keys replay reads, by event; any other event only needs the common two
_SPRAY_LINES: dict[str, type[_SprayLine]] = {"pass_start": _PassStart, "speed": _SpeedLine, "open": _Switched,
                                             "close": _Switched, "pass_end": _PassEnd, "gap": _Gap,
                                             "blocked": _Blocked, "max_on": _MaxOn, "cancelled": _Cancelled,
                                             **{e: _CellSprayLine for e in CELL_EVENTS}}


def _shown(value: Any) -> str:
    """A value from a file, short and on one line (control characters escaped)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _explain(e: ValidationError) -> str:
    """pydantic's errors as one line: ``no lane; time_s should be a finite number, got Infinity``."""
    parts = []
    for err in e.errors(include_url=False):
        where = ".".join(str(x) for x in err["loc"])
        if err["type"] == "missing":
            parts.append(f"no {where}")
        else:
            msg = err["msg"].replace("Input should", "should")
            parts.append(f"{where} {msg}, got {_shown(err['input'])}" if where else msg)
    return "; ".join(parts)


def _object(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {_shown(value)}")
    return value


def spray_line(value: Any) -> dict:
    """One spray-log line, checked (``ValueError`` saying what is wrong); returned as it was."""
    line = _object(value)
    event = line.get("event")
    model = _SPRAY_LINES.get(event, _SprayLine) if isinstance(event, str) else _SprayLine
    try:
        model.model_validate(line)
    except ValidationError as e:
        raise ValueError(_explain(e)) from None
    return line


def read_spray_log(path: str | Path) -> list[dict]:
    return read_jsonl(path, "spray log", spray_line,
                      fix="give the [spray] log_jsonl written by edge-run (each line a JSON object with event and "
                          "t_mono_ns; see docs/spray-timing.md)", logger=log)


class TruthRow(BaseModel):
    """One line of the ground-truth file (docs/spray-timing.md, "Replay scoring")."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    lane: Annotated[int, BeforeValidator(_whole), Field(ge=0, le=MAX_LANES)]
    distance_cm: _Cm | None = None
    time_s: Annotated[float, Field(ge=0, le=MAX_TIME_S, allow_inf_nan=False)] | None = None
    length_cm: Annotated[float, Field(ge=0, le=MAX_LENGTH_CM, allow_inf_nan=False)] | None = None
    kind: Literal["weed", "crop"] | None = None

    def plant(self) -> Plant:
        return Plant(self.lane, self.distance_cm, 5.0 if self.length_cm is None else self.length_cm,
                     self.kind or "weed", self.time_s)


TRUTH_NOTES = ("class", "note", "photo")  # keys for people, not read (photo: the one make_field_pass pasted)


def read_truth(path: str | Path) -> list[Plant]:
    """The ground-truth file: one plant per line, placed by ``distance_cm`` or by ``time_s``. Keys other
    than those of ``TruthRow`` and ``TRUTH_NOTES`` are warned about (a typo) and ignored."""
    unknown: dict[str, int] = {}

    def plant(value: Any) -> Plant:
        try:
            row = TruthRow.model_validate(_object(value))
        except ValidationError as e:
            raise ValueError(_explain(e)) from None
        for key in row.model_extra or {}:
            if key not in TRUTH_NOTES:
                unknown[key] = unknown.get(key, 0) + 1
        return row.plant()

    plants = read_jsonl(path, "ground-truth file", plant, logger=log, written_by_a_run=False,
                        fix='each line needs "lane" and one of "distance_cm" or "time_s" (seconds from the start of '
                            'the video), and may give "length_cm" and "kind" ("weed" or "crop")')
    if unknown:
        log.warning("ground-truth file %s: key(s) %s are not known and were ignored (known: %s; notes: %s)", path,
                    ", ".join(f"{_shown(k)} ({n} line(s))" for k, n in unknown.items()),
                    ", ".join(TruthRow.model_fields), ", ".join(TRUTH_NOTES))
    return plants



# -- the picture of a pass (--plot) -------------------------------------------------------
# matplotlib is the ``plot`` extra (pip install 'weed-detector[plot]'): imported here only, when --plot is given.

ROW_M = 2.5  # metres of the pass per row of the picture (a 10 m pass: four rows)
FIG_WIDTH_IN, DPI = 16.0, 100  # 1600 px wide
ROW_IN, LANE_IN, FRAME_IN = 0.45, 0.3, 1.35  # inches per row, per lane within a row, title + legend + x label
MAX_PLOT_PX = 32768  # the tallest picture --plot draws (4 lanes: about 500 m of pass)
KIND_COLOUR = {"weed": "#d62728", "crop": "#2ca02c"}
SPRAY_COLOUR = "#1f77b4"


class PlotUnavailable(WeedDetectorError):
    """--plot without matplotlib installed."""

    exit_code = EXIT_USAGE


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed",
                              "pip install 'weed-detector[plot]' (or pip install 'matplotlib>=3.7'), or leave --plot "
                              "out") from None
    return Figure


Window = tuple[float, float]  # a stretch of the pass to draw, cm along travel (``--plot-m``)


def plot_rows(s: Score, window: Window | None = None) -> tuple[float, float, int]:
    """The stretch of ground the picture shows (cm from, to: ``window``, or else the pass and any plant or spray
    beyond it) and in how many rows of about ``ROW_M`` (a row stretches up to 5 % rather than start one more for
    the rest)."""
    if window is not None:
        lo, hi = window
    else:
        lows = [0.0] + [p.span[0] for p in s.plants] + [a for lane in s.sprayed_by_lane for a, _ in lane]
        highs = [s.pass_m * 100] + [p.span[1] for p in s.plants] + [b for lane in s.sprayed_by_lane for _, b in lane]
        lo = min(lows)
        hi = max(max(highs), lo + 1.0)
    return lo, hi, max(1, math.ceil((hi - lo) / (ROW_M * 100) - 0.05))


def plot_rows_fit(lanes: int) -> int:
    """How many rows of ``ROW_M`` fit in ``MAX_PLOT_PX``."""
    return int((MAX_PLOT_PX / DPI - FRAME_IN) // (ROW_IN + LANE_IN * lanes))


def plot_size_px(s: Score, window: Window | None = None) -> tuple[int, int]:
    """Width and height of the PNG ``plot_pass`` writes for this score."""
    lanes = max(1, len(s.sprayed_by_lane))
    rows = plot_rows(s, window)[2]
    return int(FIG_WIDTH_IN * DPI), int(round((FRAME_IN + rows * (ROW_IN + LANE_IN * lanes)) * DPI))


def plot_title(s: Score) -> str:
    return (f"pass {s.pass_no} of {s.passes}, {s.pass_m:.1f} m: weeds {s.weeds}: {s.hits} hit, {s.partial} partly, "
            f"{s.misses} missed | crops sprayed {s.crops_sprayed} of {s.crops} | {s.late} late sprays\n"
            f"sprayed {s.sprayed_m2:.2f} m² ({s.wasted_m2:.2f} m² off weeds); herbicide saved vs blanket "
            f"{s.saved:.0%}, ideal {s.ideal_saved:.0%}")


def plot_labels(s: Score) -> list[tuple[float, int, str]]:
    """The cause written beside each weed not wholly hit and each crop sprayed: (metres along travel, lane,
    text), the text edge-replay's cause (``explain``)."""
    return [(p.distance_cm / 100, p.lane, p.cause) for p in s.plants if p.cause]


def plot_pass(s: Score, path: str | Path, window: Window | None = None) -> None:
    """Draw the pass: x = distance along travel (m), one band per lane (lane 0, the image's left, on top);
    plants as rectangles coloured by kind, sprayed ground as translucent bars, missed and partly hit weeds
    and sprayed crops marked, each with its cause (``plot_labels``); the summary (of the whole pass) in the title;
    ``window``: only that stretch. Raises ``PlotUnavailable`` without matplotlib and ``ConfigError`` when the file
    cannot be written or the picture would be taller than ``MAX_PLOT_PX``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    figure = _figure_class()
    lanes = max(1, len(s.sprayed_by_lane))
    if window is not None:
        whole_lo, whole_hi, _ = plot_rows(s)
        if window[1] <= whole_lo or window[0] >= whole_hi:  # an empty picture is not what was asked for
            raise ConfigError(f"--plot-m {window[0] / 100:g}:{window[1] / 100:g} lies outside the pass "
                              f"({whole_lo / 100:g} to {whole_hi / 100:g} m, its plants and sprays included)",
                              f"give a stretch within it, e.g. --plot-m {whole_lo / 100:g}:{whole_hi / 100:g}")
    lo, hi, rows = plot_rows(s, window)
    width_px, height_px = plot_size_px(s, window)
    if height_px > MAX_PLOT_PX:
        fit = ROW_M * plot_rows_fit(lanes)
        raise ConfigError(f"--plot: {'the stretch' if window else 'the pass'} spans {(hi - lo) / 100:.0f} m, a picture "
                          f"{height_px} px tall (at most {MAX_PLOT_PX} px: about {fit:.0f} m of {lanes} lanes)",
                          f"draw a stretch of it, e.g. --plot-m 0:{fit:.0f}, or score it without --plot; a plant or "
                          "spray far beyond the pass (a wrong distance_cm in the truth) also stretches it")
    fig = figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    top, bottom = 0.95 * DPI / height_px, 0.4 * DPI / height_px  # title + legend above, the x label below
    fig.subplots_adjust(left=0.05, right=0.99, top=1 - top, bottom=bottom, hspace=ROW_IN / (LANE_IN * lanes))
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    span = (hi - lo) / rows
    marks = {"missed": ("X", "black"), "partly": ("o", "black"), "sprayed": ("v", "#9467bd")}
    for r, ax in enumerate(axes):
        x0 = lo + r * span
        x1 = x0 + span
        ax.set_xlim(x0 / 100, x1 / 100)
        ax.set_ylim(lanes, 0)
        ax.set_yticks([i + 0.5 for i in range(lanes)], [f"lane {i}" for i in range(lanes)], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for i in range(1, lanes):
            ax.axhline(i, color="0.8", lw=0.6)
        for lane, segs in enumerate(s.sprayed_by_lane):
            for a, b in (seg for seg in segs if seg[1] >= x0 and seg[0] <= x1):  # this row's only
                ax.add_patch(Rectangle((a / 100, lane + 0.08), (b - a) / 100, 0.84, color=SPRAY_COLOUR, alpha=0.3,
                                       lw=0))
        for p in (p for p in s.plants if p.span[1] + 0.3 >= x0 and p.span[0] <= x1):
            a, b = p.span
            ax.add_patch(Rectangle((a / 100, p.lane + 0.3), max(b - a, 0.3) / 100, 0.4,
                                   facecolor=KIND_COLOUR[p.kind], edgecolor="black", lw=0.4))
            if p.result in marks:
                shape, colour = marks[p.result]
                ax.scatter([p.distance_cm / 100], [p.lane + 0.17], marker=shape, s=28, zorder=3,
                           facecolors="none" if shape == "o" else colour, edgecolors=colour, linewidths=1.0)
        for x, lane, text in plot_labels(s):
            if x0 / 100 <= x <= x1 / 100:
                ax.annotate(text, (x, lane + 0.17), xytext=(5, 0), textcoords="offset points", fontsize=6,
                            va="center", zorder=4)
    axes[-1].set_xlabel("distance along travel (m, from the ground under the image centre at the first frame)",
                        fontsize=9)
    drawn = "" if window is None else f" (drawn: {lo / 100:g}-{hi / 100:g} m)"
    fig.suptitle(plot_title(s).replace("\n", f"{drawn}\n", 1), fontsize=10, y=1 - 0.08 * DPI / height_px, va="top")
    handles = [Patch(facecolor=KIND_COLOUR["weed"], edgecolor="black", label="weed"),
               Patch(facecolor=KIND_COLOUR["crop"], edgecolor="black", label="crop"),
               Patch(color=SPRAY_COLOUR, alpha=0.3, label="sprayed"),
               Line2D([], [], ls="", marker="X", color="black", label="weed missed"),
               Line2D([], [], ls="", marker="o", mfc="none", color="black", label="weed partly hit"),
               Line2D([], [], ls="", marker="v", color="#9467bd", label="crop sprayed")]
    fig.legend(handles=handles, loc="upper center", ncols=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.55 * DPI / height_px))
    try:
        fig.savefig(path, format="png", dpi=DPI)
    except OSError as e:
        raise cannot_write("plot", path, e, ConfigError, "give --plot a PNG file in a folder you can write") from None


def _metres(text: str) -> Window:
    """``--plot-m FROM:TO`` (metres) as a window in cm; argparse says what is wrong with a bad one."""
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FROM:TO in metres, e.g. 100:200") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b and b - a <= 1e5 and abs(a) <= 1e7):
        raise argparse.ArgumentTypeError(f"{text!r}: FROM must be below TO, both finite metres")
    return a * 100, b * 100


EPILOG = """exit codes: 0 scored, 2 bad arguments, 3 a config, spray log or ground-truth file that cannot be
read or is not valid (one line naming the file and the line; a pass run with other lanes or channels than
the config's), or a
--plot file that cannot be written or a pass too long to draw; 141 stdout closed (--json | head);
--plot without matplotlib installed is a bad argument (2). A cut last line of a spray log (the run
was stopped, or its disk was full, while writing it) is skipped with a warning."""


def _pass_number(text: str) -> int:
    """--pass N: a whole number other than 0 (1 = the first pass, -1 = the last)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n == 0:
        raise argparse.ArgumentTypeError(f"expected 1, 2, ... (from the first) or -1, -2, ... (from the last), "
                                         f"got {text!r}")
    return n


def _png_path(text: str) -> str:
    """--plot FILE.png: a path ending .png (the picture is a PNG; an empty path drew nothing)."""
    if not text.strip() or not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"expected a file name ending .png, got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    from edge.config import load_config

    p = argparse.ArgumentParser(prog="edge-replay", description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--config", required=True, help="the edge-run config of the pass (its [spray] section)")
    p.add_argument("--spray-log", required=True, nargs="+", metavar="FILE",
                   help="the [spray] log_jsonl of the pass; a rotated log: every part, oldest first "
                        "(spray.jsonl.1 spray.jsonl)")
    p.add_argument("--truth", required=True,
                   help="ground truth: JSON lines with lane, distance_cm or time_s[, length_cm, kind]")
    p.add_argument("--pass", dest="pass_no", type=_pass_number, default=-1, metavar="N",
                   help="which run of the spray log to score when it holds several (it appends): 1 = the first, "
                        "-1 = the last (default)")
    p.add_argument("--json", action="store_true", help="print the score as JSON (every plant included)")
    p.add_argument("--plants", action="store_true", help="also print one row per plant (the text output)")
    p.add_argument("--plot", metavar="FILE.png", type=_png_path, help="draw the pass into a PNG: lanes along travel, plants, sprays, "
                                                      "misses (needs matplotlib: pip install 'weed-detector[plot]')")
    p.add_argument("--plot-m", metavar="FROM:TO", type=_metres,
                   help="--plot draws only this stretch of the pass, metres along travel (e.g. 100:200; default: "
                        "the whole pass, up to about 500 m of 4 lanes; a negative start as --plot-m=-5:5)")
    a = p.parse_args(argv)
    if a.plot_m and not a.plot:
        p.error("--plot-m needs --plot FILE.png")
    if not logging.getLogger().handlers:  # the warnings, one line each (set up already: left as it is)
        handler = logging.StreamHandler()
        handler.setFormatter(OneLineFormatter("edge-replay: %(levelname)s: %(message)s"))
        logging.basicConfig(handlers=[handler])
    try:
        if a.plot:
            _figure_class()  # before the work: without matplotlib, say so at once
        cfg = load_config(a.config)
        if cfg.spray is None:
            raise ConfigError(f"config {a.config} has no [spray] section", "score the config the pass was run with")
        events = [e for part in a.spray_log for e in read_spray_log(part)]
        s = score(events, read_truth(a.truth), cfg.spray, a.pass_no)
        if a.plot:
            plot_pass(s, a.plot, a.plot_m)
    except WeedDetectorError as e:
        print(f"edge-replay: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    try:
        if a.json:
            print(json.dumps(s.as_dict()))
        else:
            print(s.line())
            if a.plants:
                print(s.table())
        sys.stdout.flush()  # here, not at exit: a closed pipe is one more way to end
    except BrokenPipeError:  # edge-replay --json | head: the reader has what it wanted
        stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
