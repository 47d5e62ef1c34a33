#!/usr/bin/env python3
"""Score a bundle frame by frame on ``samples/field.avi`` against ``samples/field_truth.csv``.

A sanity check for field-like frames that the photo test split does not contain: bare
gravel seen from a camera's height (mosaics of plant-free windows), and plants with gravel
around them. Every frame is classified on its own with the edge runtime (no debounce); a
frame "fires" when the bundle's rule fires on it (``edge.decide.rule``), as ``edge-run`` decides.
Only frames where one tile covers at least ``--coverage`` of the view are scored.

A soil frame is **bare** (role ``background``) when the edge's own vegetation mask (the ``[gate]``
preset ``--sensitivity``, medium by default) finds less of the model's view vegetated than that preset's
bare fraction (0.15 %). A soil frame with more holds a sliver of the neighbouring plant tile that is
coming into or leaving the view; it takes the role of the nearest plant frame: ``crop_sliver`` (a crop
alone is a crop view: it must not fire) or ``weed_sliver`` (a view on which a weed shows is a weed view,
the rule the training's composite tiles follow: firing is right, not firing is not wrong either; reported,
not judged).

    python tools/check_field_clip.py models/plant-seedlings-mnv2 [--json]

Exit 0 when the clip passes (what ``tests/edge/test_default_model.py`` asks: ``clip_failures``), 1 when it fails;
a bundle, video or truth file that cannot be used: its exit code (3 config, 4 bundle, 5 source), one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.core.errors import ConfigError, SourceError, WeedDetectorError
from edge.decide.rule import SprayRule
from edge.inference.bundle import read_manifest, resolve_bundle
from edge.inference.classifier import Classifier
from edge.inference.config import PRESETS
from edge.inference.preprocess import crop_box
from edge.inference.vegetation import VegetationGate

ROOT = Path(__file__).resolve().parents[1]
VIDEO, TRUTH = ROOT / "samples" / "field.avi", ROOT / "samples" / "field_truth.csv"  # the shipped sample clip
COVERAGE = 0.85  # frames scored: one tile covers at least this share of the view


ROLES = ("background", "crop_sliver", "weed_sliver", "crop", "weed")


def _nearest_plant_role(rows: dict[int, dict], i: int) -> str:
    """The role of the plant frame nearest to frame ``i`` (ties: the earlier one)."""
    for d in range(1, len(rows) + 1):
        for j in (i - d, i + d):
            r = rows.get(j)
            if r is not None and r["role"] != "background":
                return r["role"]
    return "background"


def _model_box(frame: np.ndarray, inp) -> tuple[int, int, int, int]:
    """The (x0, x1, y0, y1) of ``frame`` the model sees: the classifier's centre crop (``crop_box``) for
    ``center_crop``, else all of it."""
    h, w = frame.shape[:2]
    if inp.resize != "center_crop":
        return 0, w, 0, h
    y0, y1, x0, x1 = crop_box(h, w, inp.height, inp.width)
    return x0, x1, y0, y1


def clip_frames(bundle: str, video: Path = VIDEO, truth: Path = TRUTH, coverage: float = COVERAGE,
                sensitivity: str = "medium") -> tuple[int, int, list[tuple[str, np.ndarray]]]:
    """(frames read, truth rows, the scored frames as (role, the model's probabilities)): every frame where one
    tile covers at least ``coverage`` of the view, classified once, so that any number of rules can be scored."""
    rows = read_truth_rows(truth)
    gate = VegetationGate(PRESETS[sensitivity])  # the edge's own bare-ground decision
    out: list[tuple[str, np.ndarray]] = []
    with Classifier(bundle) as clf:
        m = clf.bundle.manifest
        cap = cv2.VideoCapture(str(video))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            r = rows.get(i)
            if r is not None and r["coverage"] >= coverage:
                role = r["role"]
                if role == "background" and not gate.measure(frame, [_model_box(frame, m.input)])[0].gated:
                    near = _nearest_plant_role(rows, i)
                    if near != "background":  # a clip of soil alone stays bare
                        role = f"{near}_sliver"
                out.append((role, clf.classify(frame, "BGR").probs))
            i += 1
        cap.release()
    if i == 0:
        raise SourceError(f"no frame could be read from {video}", "give --video a video file OpenCV reads")
    beyond = sorted(f for f in rows if f >= i)
    if beyond:  # a clip shorter than its truth: the frames it lacks would pass unjudged
        raise ConfigError(f"{truth} has rows for frames {beyond[0]}..{beyond[-1]} but {video} has only {i} frame(s)",
                          "give the clip's own --truth (samples/field_truth.csv is samples/field.avi's)")
    if not out:  # "the clip passes" on nothing scored would be a pass nobody earned
        raise ConfigError(f"no frame of {video} was scored: none of the {len(rows)} truth rows of {truth} has a "
                          f"frame in the video with coverage >= {coverage:g}",
                          "give the clip's own --truth, or a lower --coverage")
    return i, len(rows), out


TRUTH_FIX = "give --truth a CSV with frame, role (background, crop, weed) and coverage (0..1) columns " \
            "(samples/field_truth.csv)"


def read_truth_rows(truth: Path) -> dict[int, dict]:
    """The clip's truth by frame: every row a whole frame number, a role of ``background``/``crop``/``weed`` and a
    coverage from 0 to 1 (``ConfigError`` naming the row otherwise: a bad row was a traceback, exit 1 = "fails")."""
    try:
        with truth.open(encoding="utf-8", newline="") as f:
            raw = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as e:  # missing, a folder, not UTF-8, not CSV
        raise ConfigError(f"cannot read the clip's truth {truth} ({e.__class__.__name__}: {e})", TRUTH_FIX) from None
    rows = {}
    for n, r in enumerate(raw, start=2):  # line 1 is the header
        try:
            frame, role, coverage = int(r["frame"]), r["role"], float(r["coverage"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{truth} line {n}: needs a whole frame number, a role and a coverage", TRUTH_FIX) from None
        if role not in ("background", "crop", "weed") or not 0.0 <= coverage <= 1.0:  # also refuses nan
            raise ConfigError(f"{truth} line {n}: role {role!r}, coverage {coverage!r}", TRUTH_FIX)
        rows[frame] = {**r, "coverage": coverage}
    return rows


def role_counts(frames: list[tuple[str, np.ndarray]], rule: SprayRule) -> dict:
    """Per role: how many of its frames the rule fires on (each frame on its own, as edge-run decides one)."""
    counts = {role: [0, 0] for role in ROLES}  # [fired, frames]
    for role, probs in frames:
        counts[role][0] += int(rule.fires(rule.view(probs)))
        counts[role][1] += 1
    return {role: {"fired": f, "frames": n} for role, (f, n) in counts.items()}


def clip_failures(roles: dict) -> list[str]:
    """What ``tests/edge/test_default_model.py`` asks of the shipped bundle, as the roles that break it: a
    bare-gravel, crop-sliver or crop frame that fires, a weed frame that does not (weed slivers are not judged).
    Empty: the clip passes."""
    return [f"{k} fired on {v['fired']} of {v['frames']}" for k, v in roles.items()
            if (k == "weed" and v["fired"] < v["frames"]) or (k in ("background", "crop_sliver", "crop") and v["fired"])]


def score(bundle: str, video: Path, truth: Path, coverage: float, sensitivity: str = "medium") -> dict:
    """The bundle's own rule on the clip, as edge-run applies it to one frame."""
    n, n_truth, frames = clip_frames(bundle, video, truth, coverage, sensitivity)
    rule = SprayRule.from_manifest(read_manifest(resolve_bundle(bundle)))
    return {"video_frames": n, "truth_rows": n_truth, "sensitivity": sensitivity, "roles": role_counts(frames, rule)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?", default=str(ROOT / "models" / "plant-seedlings-mnv2"))
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--truth", type=Path, default=TRUTH)
    ap.add_argument("--coverage", type=float, default=COVERAGE, help="score frames where one tile covers this share")
    ap.add_argument("--sensitivity", choices=tuple(PRESETS), default="medium",
                    help="the [gate] preset that tells a bare soil frame from one with a plant's sliver (default medium)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not 0.0 < a.coverage <= 1.0:
        ap.error("--coverage is a share of the view, above 0 and at most 1")
    try:
        res = score(a.bundle, a.video, a.truth, a.coverage, a.sensitivity)
    except WeedDetectorError as e:
        print(f"check_field_clip: error: {e}", file=sys.stderr)
        return e.exit_code
    failures = clip_failures(res["roles"])
    if a.json:
        print(json.dumps(res))
    else:
        for role, r in res["roles"].items():
            print(f"{role:12s} fired on {r['fired']:3d} of {r['frames']:3d} frames")
        print("the clip passes" if not failures else f"the clip FAILS: {'; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
