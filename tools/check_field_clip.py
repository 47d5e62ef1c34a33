#!/usr/bin/env python3
"""Score a bundle frame by frame on ``samples/field.avi`` against ``samples/field_truth.csv``.

A sanity check for field-like frames that the photo test split does not contain: bare
gravel seen from a camera's height (mosaics of plant-free windows), and plants with gravel
around them. Every frame is classified on its own with the edge runtime (no debounce); a
frame "fires" when the bundle's rule fires on it (``edge.decide.rule``), as ``edge-run`` decides.
Only frames where one tile covers at least ``--coverage`` of the view are scored.

    python tools/check_field_clip.py models/plant-seedlings-mnv2 [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2

from edge.decide.rule import SprayRule
from edge.inference.classifier import Classifier

ROOT = Path(__file__).resolve().parents[1]


def score(bundle: str, video: Path, truth: Path, coverage: float) -> dict:
    rows = {int(r["frame"]): r for r in csv.DictReader(truth.open())}
    counts = {role: [0, 0] for role in ("background", "crop", "weed")}  # [fired, frames]
    with Classifier(bundle) as clf:
        m = clf.bundle.manifest
        rule = SprayRule.from_manifest(m)  # the bundle's own rule, as edge-run applies it to one frame
        cap = cv2.VideoCapture(str(video))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            r = rows.get(i)
            if r is not None and float(r["coverage"]) >= coverage:
                fired = rule.fires(rule.view(clf.classify(frame, "BGR").probs))
                counts[r["role"]][0] += int(fired)
                counts[r["role"]][1] += 1
            i += 1
        cap.release()
    return {"video_frames": i, "truth_rows": len(rows),
            "roles": {role: {"fired": f, "frames": n} for role, (f, n) in counts.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?", default=str(ROOT / "models" / "plant-seedlings-mnv2"))
    ap.add_argument("--video", type=Path, default=ROOT / "samples" / "field.avi")
    ap.add_argument("--truth", type=Path, default=ROOT / "samples" / "field_truth.csv")
    ap.add_argument("--coverage", type=float, default=0.85, help="score frames where one tile covers this share")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = score(a.bundle, a.video, a.truth, a.coverage)
    if a.json:
        print(json.dumps(res))
    else:
        for role, r in res["roles"].items():
            print(f"{role:10s} fired on {r['fired']:3d} of {r['frames']:3d} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
