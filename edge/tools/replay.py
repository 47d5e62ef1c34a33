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
``weed`` (default) or anything else (a crop: spraying it is counted as waste). Other keys
(e.g. ``class``) are notes and ignored.

Times are turned into distances along the pass with the speed the run logged: its
``pass_start`` line and a ``speed`` line at every change, integrated from the first frame
(``edge.spray.odometer.PassTrack``; a log without any speed is taken at the config's
``speed_kmh``). Each executed open/close on a channel sprays the ground strip of its lane
between where the spray line was when the liquid arrived (open + opening lag) and when it
stopped (close + closing lag). A weed is **hit** when that covers all of it, **partly hit** when some of it,
**missed** otherwise. Sprayed area off the weeds is the waste; *saved* compares the sprayed
area with spraying the whole boom width for the whole pass.

A spray log appends: one file may hold several runs. Each run's lines are those from its
``pass_start`` to the next ``pass_start``; one pass is scored, never a mix (``--pass N``,
1 = the first, -1 = the last, the default), and the output says which of how many.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from edge.spray.config import SprayConfig
from edge.core.errors import ConfigError, WeedDetectorError
from edge.spray.geometry import Geometry
from edge.spray.odometer import PassTrack


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

    @property
    def saved(self) -> float:
        return 0.0 if self.blanket_m2 <= 0 else max(0.0, 1.0 - self.sprayed_m2 / self.blanket_m2)

    def line(self) -> str:
        return (f"pass {self.pass_no} of {self.passes}: weeds {self.weeds}: {self.hits} hit, {self.partial} partly, "
                f"{self.misses} missed | {self.late} late sprays | crops sprayed {self.crops_sprayed} | "
                f"sprayed {self.sprayed_m2:.2f} m² ({self.wasted_m2:.2f} m² off weeds) over a {self.pass_m:.1f} m pass; herbicide saved vs blanket "
                f"{self.saved:.0%}")


def _union_len(segs: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of [lo, hi] covered by the (sorted, merged) segments."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in segs)


def _merge(segs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(segs):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def sprayed_segments(events: Sequence[dict], geom: Geometry, track: PassTrack) -> dict[int, list]:
    """Per channel: the merged ground segments (cm along the pass) the executed sprays covered."""
    segs: dict[int, list[tuple[float, float]]] = {}
    opened: dict[int, int] = {}
    last_ns = track.t0_ns

    def pos(t_ns: float) -> float:  # where the spray line was at t (it trails the image centre)
        return track.distance_at_ns(t_ns) - geom.nozzle_distance_cm

    def seg(o_ns: float, c_ns: float) -> tuple[float, float]:
        a = pos(o_ns)
        return a, max(a, pos(c_ns))

    for e in events:
        last_ns = max(last_ns, int(e.get("t_mono_ns", last_ns)))
        if e["event"] == "open":
            opened[e["channel"]] = e["at_ns"]
        elif e["event"] == "close" and e["channel"] in opened:
            o = opened.pop(e["channel"])
            segs.setdefault(e["channel"], []).append(seg(o + geom.open_lag_ns, e["at_ns"] + geom.close_lag_ns))
    for ch, o in opened.items():  # never closed in the log: count it open to the end
        segs.setdefault(ch, []).append(seg(o + geom.open_lag_ns, last_ns))
    return {ch: _merge(s) for ch, s in segs.items()}


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
    segs = sprayed_segments(events, geom, track)
    widths = [(b - a) * cfg.footprint_across_cm for a, b in zip(geom.lane_edges, geom.lane_edges[1:])]
    hits = partial = misses = crops = 0
    weed_area = 0.0
    for p in (p.placed(track.distance_at) for p in plants):
        if not 0 <= p.lane < geom.lanes:
            raise ConfigError(f"ground truth names lane {p.lane}, the config has {geom.lanes}",
                              "number lanes from 0, left to right in the image")
        lo, hi = p.span
        covered = _union_len(segs.get(geom.channels[p.lane], []), lo, hi)
        if p.kind != "weed":
            crops += covered > 0
            continue
        weed_area += covered * widths[p.lane]
        if covered >= (hi - lo) - 1e-6:
            hits += 1
        elif covered > 0:
            partial += 1
        else:
            misses += 1
    # a channel sprays every lane mapped to it
    sprayed = sum(sum(b - a for a, b in segs.get(geom.channels[lane], [])) * widths[lane] for lane in range(geom.lanes))
    pass_cm = max(0.0, track.distance_at_ns(t_end))
    late = sum(1 for e in events if e["event"] in ("late", "missed"))
    weeds = sum(1 for p in plants if p.kind == "weed")
    return Score(weeds, hits, partial, misses, crops, late, sprayed / 1e4, max(0.0, sprayed - weed_area) / 1e4,
                 pass_cm * cfg.footprint_across_cm / 1e4, pass_cm / 100, number, passes)


def read_jsonl(path: str | Path, what: str) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror or e}", "check the path") from None
    out = []
    for i, ln in enumerate(lines, 1):
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{what} {path} line {i} is not JSON ({e.msg})", "one JSON object per line") from None
    return out


def _number(d: dict, key: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key} must be a number, got {v!r}")
    return float(v)


def read_truth(path: str | Path) -> list[Plant]:
    """The ground-truth file: one plant per line, placed by ``distance_cm`` or by ``time_s``."""
    plants = []
    for i, d in enumerate(read_jsonl(path, "ground-truth file"), 1):
        try:
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if "lane" not in d:
                raise ValueError("no lane")
            lane = d["lane"]
            if isinstance(lane, bool) or not isinstance(lane, (int, float)) or not math.isfinite(lane) \
                    or lane != int(lane):
                raise ValueError(f"lane must be a whole number, got {lane!r}")
            lane = int(lane)
            length = _number(d, "length_cm")
            plants.append(Plant(lane, _number(d, "distance_cm"), 5.0 if length is None else length,
                                str(d.get("kind") or "weed"), _number(d, "time_s")))
        except ValueError as e:
            raise ConfigError(f"ground-truth file {path} line {i}: {e}",
                              'each line needs "lane" and one of "distance_cm" or "time_s" (seconds from the start '
                              'of the video), and may give "length_cm" and "kind"') from None
    return plants


def main(argv: Sequence[str] | None = None) -> int:
    from edge.config import load_config

    p = argparse.ArgumentParser(prog="python -m edge.tools.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the edge-run config of the pass (its [spray] section)")
    p.add_argument("--spray-log", required=True, nargs="+", metavar="FILE",
                   help="the [spray] log_jsonl of the pass; a rotated log: every part, oldest first "
                        "(spray.jsonl.1 spray.jsonl)")
    p.add_argument("--truth", required=True,
                   help="ground truth: JSON lines with lane, distance_cm or time_s[, length_cm, kind]")
    p.add_argument("--pass", dest="pass_no", type=int, default=-1, metavar="N",
                   help="which run of the spray log to score when it holds several (it appends): 1 = the first, "
                        "-1 = the last (default)")
    p.add_argument("--json", action="store_true", help="print the score as JSON")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
        if cfg.spray is None:
            raise ConfigError(f"config {a.config} has no [spray] section", "score the config the pass was run with")
        events = [e for part in a.spray_log for e in read_jsonl(part, "spray log")]
        s = score(events, read_truth(a.truth), cfg.spray, a.pass_no)
    except WeedDetectorError as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return e.exit_code
    if a.json:
        print(json.dumps({**s.__dict__, "saved": round(s.saved, 4)}))
    else:
        print(s.line())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
