#!/usr/bin/env python3
"""Run a made pass through the per-lane path on a manual clock: the decisions without the machine's load.

``edge-run --realtime`` measures what a run on this machine does, latency spikes and dropped
frames included. This runs the same ``[spray]`` path (``edge.app.wiring``'s classifier, rule,
gate and geometry; ``LanePlanner`` / ``LaneProcessor``; the scheduler switching a dry-run
output) on an ``edge.core.clock.ManualClock``: frame ``k`` of the video is captured at
``k / fps``, processed in no time, and the scheduler switches at exactly its planned times.
Every frame is seen, nothing is late: the score is the decision side's alone (the cells, the
rule, the model, the extents). It writes the pass's spray log (the config's ``[spray]
log_jsonl`` or ``--spray-log``) and prints ``edge-replay``'s line for it::

    python tools/run_pass_clocked.py --config pass.toml --video pass.avi --truth pass_truth.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import ExitStack
from pathlib import Path

import cv2

from edge.app.wiring import load_classifier, make_lane_planner
from edge.config import load_config
from edge.core.clock import ManualClock
from edge.core.errors import WeedDetectorError
from edge.core.files import check_output
from edge.core.frame import Frame
from edge.loop.per_lane import LaneProcessor
from edge.outputs.dryrun import DryRunOutput
from edge.spray.config import MAX_PLANT_CM2, MAX_PLANT_JOIN_CM
from edge.spray.geometry import Geometry
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import FixedSpeed
from edge.spray.spray_log import SprayLog
from edge.tools.replay import Score, read_spray_log, read_truth, score


def run_clocked(config: Path, video: Path, truth: Path, spray_log: Path | None = None,
                model: str | None = None, decision: dict | None = None, spray: dict | None = None,
                gate: dict | None = None) -> Score:
    """The pass on a manual clock (see the module docstring); its score. ``decision``: ``[decision]`` overrides
    (``threshold``, ``crop_veto``: a probability or ``"none"``), as edge-run's ``--threshold`` / ``--crop-veto``;
    ``spray``: ``[spray]`` overrides (``min_plant_share``, ``min_plant_cm2``); ``gate``: ``[gate]`` overrides (``min_fraction``)."""
    overrides: dict = {"model": {"bundle": model}} if model else {}
    for table, values in (("decision", decision), ("spray", spray), ("gate", gate)):
        if values:
            overrides[table] = dict(values)
    cfg = load_config(config, overrides or None)
    s = cfg.spray
    if s is None or s.speed_source != "fixed":
        raise SystemExit(f"{config}: needs a [spray] section with a fixed speed (a made pass's config)")
    log_path = spray_log or Path(s.log_jsonl)
    log_path.unlink(missing_ok=True)
    clock = ManualClock(start_ns=1_000_000_000)
    geometry = Geometry.from_config(s)
    out = DryRunOutput(channels=s.channels_needed, clock=clock, max_on_s=600.0)
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(log_path, clock=clock), max_on_s=s.max_on_s,
                           merge_gap_ns=geometry.open_lag_ns + geometry.close_lag_ns)
    stack = ExitStack()
    classifier = load_classifier(cfg)
    stack.callback(classifier.close)
    stack.callback(sched.close)
    planner = make_lane_planner(cfg, classifier, geometry, sched, FixedSpeed(s.speed_kmh), stack)
    proc = LaneProcessor(planner, clock=clock)

    def switch_until(t_ns: int | None) -> None:
        """Every switching time before ``t_ns`` (None: all of them), each at its planned time."""
        while (nxt := sched.run_due()) is not None and (t_ns is None or nxt < t_ns):
            clock.advance(max(0, nxt - clock.now_ns()) / 1e9)
        if t_ns is not None:
            clock.advance(max(0, t_ns - clock.now_ns()) / 1e9)

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    t0, k = clock.now_ns(), 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            t = t0 + round(k * 1e9 / fps)
            switch_until(t)
            proc.process(Frame(image, k + 1, t, str(video)))
            k += 1
        planner.finish_cells()
        switch_until(None)
        proc.finish(0.0, fps)
    finally:
        cap.release()
        stack.close()
    if k == 0:
        raise SystemExit(f"{video}: no frame could be read")
    return score(read_spray_log(log_path), read_truth(truth), s)


def number_list(kind: type, lo: float, hi: float, what: str, keep_text: bool = True, one: bool = False):
    """An argparse type: comma-separated ``kind`` values in [lo, hi] (finite), checked when parsed (exit 2) instead of a
    ValueError traceback (or a late refusal after minutes of passes); the text itself (``keep_text``) or the list;
    ``one``: exactly one value."""
    def check(text: str):
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values or (one and len(values) > 1) or not all(math.isfinite(v) and lo <= v <= hi for v in values):
            shown = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")
            raise argparse.ArgumentTypeError(f"expected {what} from {shown(lo)} to {shown(hi)}"
                                             f"{'' if one else ', comma-separated'}, got {text!r}")
        return ",".join(x.strip() for x in text.split(",") if x.strip()) if keep_text else values  # "5,10," -> "5,10"
    return check


def number(kind: type, lo: float, hi: float, what: str):
    """An argparse type: one ``kind`` value in [lo, hi] (finite)."""
    check = number_list(kind, lo, hi, what, keep_text=False, one=True)
    return lambda text: check(text)[0]


PROBABILITY = number(float, 0.0, 1.0, "a probability")
SPEEDS = number_list(float, 1.0, 100.0, "speeds in km/h")  # 1: [spray] min_speed_kmh's default (slower never sprays)
SEEDS = number_list(int, 0, 999_999_999, "whole-number seeds")
BLUR_PX = number(int, 0, 31, "motion blur in pixels")
NOISE = number(float, 0.0, 40.0, "sensor noise sigma in grey levels")
AREA_CM2 = number(float, 0.0, MAX_PLANT_CM2, "an area in cm²")  # [spray] min_plant_cm2's range
JOIN_CM = number(float, 0.0, MAX_PLANT_JOIN_CM, "a distance in cm")  # [spray] plant_join_cm's range


def crop_veto(text: str) -> str:
    """``--crop-veto``: a probability or ``none``."""
    if text.strip() != "none":
        PROBABILITY(text)
    return text.strip()


def add_rule_options(ap: argparse.ArgumentParser) -> None:
    """``--threshold`` and ``--crop-veto P|none``: the rule overrides edge-run takes, for a run of a pass."""
    ap.add_argument("--threshold", type=PROBABILITY,
                    help="weed threshold (default: the config's, else the bundle's rule)")
    ap.add_argument("--crop-veto", metavar="P|none", type=crop_veto,
                    help="crop veto probability, or none (default: the config's, else the bundle's rule)")
    ap.add_argument("--min-plant-share", type=PROBABILITY, metavar="S",
                    help="[spray] min_plant_share: a cell sprays only if this share of its views saw a plant in it "
                         "(default: the config's)")
    ap.add_argument("--min-plant-cm2", type=AREA_CM2, metavar="A",
                    help="[spray] min_plant_cm2: ... and one of them saw a plant (a connected patch of vegetation) of at least A cm² "
                         "(default: the config's)")
    ap.add_argument("--plant-join-cm", type=JOIN_CM, metavar="J",
                    help="[spray] plant_join_cm: parts of the gate's mask at most J cm apart are one plant "
                         "(default: the config's)")
    ap.add_argument("--gate-min-fraction", type=PROBABILITY, metavar="F",
                    help="[gate] min_fraction: a tile with a smaller vegetated fraction is bare ground "
                         "(default: the config's preset's)")


def spray_overrides(a: argparse.Namespace) -> dict:
    """The ``[spray]`` overrides the options of ``add_rule_options`` ask for (empty: the config's)."""
    given = {"min_plant_share": a.min_plant_share, "min_plant_cm2": a.min_plant_cm2, "plant_join_cm": a.plant_join_cm}
    return {k: v for k, v in given.items() if v is not None}


def gate_overrides(a: argparse.Namespace) -> dict:
    """The ``[gate]`` overrides the options of ``add_rule_options`` ask for (empty: the config's)."""
    return {} if a.gate_min_fraction is None else {"min_fraction": a.gate_min_fraction}


def rule_overrides(a: argparse.Namespace) -> dict:
    """The ``[decision]`` overrides the options of ``add_rule_options`` ask for (empty: the bundle's rule)."""
    out: dict = {}
    if a.threshold is not None:
        out["threshold"] = a.threshold
    if a.crop_veto is not None:
        out["crop_veto"] = "none" if a.crop_veto == "none" else float(a.crop_veto)
    return out


def edge_run_rule_args(decision: dict) -> list[str]:
    """The same overrides as edge-run options."""
    args = ["--threshold", str(decision["threshold"])] if "threshold" in decision else []
    if "crop_veto" in decision:
        v = decision["crop_veto"]
        args += ["--no-crop-veto"] if v == "none" else ["--crop-veto", str(v)]
    return args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path, help="the pass's config (tools/make_field_pass.py)")
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--truth", required=True, type=Path)
    ap.add_argument("--spray-log", type=Path, help="write the spray log here (default: the config's log_jsonl)")
    ap.add_argument("--model", help="a bundle folder or shipped name (default: the config's or the default)")
    add_rule_options(ap)
    a = ap.parse_args(argv)
    try:
        if a.spray_log is not None:
            check_output("--spray-log", str(a.spray_log))  # a folder was an IsADirectoryError traceback
        print(run_clocked(a.config, a.video, a.truth, a.spray_log, a.model, rule_overrides(a),
                          spray_overrides(a), gate_overrides(a)).line())
    except WeedDetectorError as e:
        print(f"run_pass_clocked: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
