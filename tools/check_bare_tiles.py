#!/usr/bin/env python3
"""How often the model alone (no vegetation gate in front of it) fires on bare-ground lane tiles.

A pass with no plants is made by ``tools/make_field_pass.py`` (``--density-per-m 0``): gravel
of the chosen photos only. Every frame of it is cut into the lane tiles ``edge-run`` cuts
in ``[spray]`` mode (the config's geometry, ``edge.spray.geometry.Geometry.tiles``, as
``edge.loop.per_lane`` cuts them), each **condition** (``train.perturb``: clean, the warm
colour cast and the dark rows of the robustness suite, at their strengths, applied to the
whole frame) is applied, and every tile is classified by the bundle's model through
``edge.inference.Classifier`` and decided by the bundle's rule (``edge.decide.rule``,
threshold and crop veto): a tile that would spray is a bare-ground tile fired. Printed per
condition: fired / tiles with the Wilson 95 % interval and the labels it fired as.

    python tools/make_field_pass.py --preset boom-4x10cm --density-per-m 0 --split test \\
        --split-of plant-seedlings-mnv2 --out /tmp/bare.avi --truth /tmp/bare.jsonl --config-out /tmp/bare.toml
    python tools/check_bare_tiles.py --video /tmp/bare.avi --config /tmp/bare.toml [--model BUNDLE] [--every 3]

Target (issue 14): under 0.5 % of bare tiles, clean and under both conditions.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.config import load_config
from edge.core.errors import WeedDetectorError
from edge.decide.rule import SprayRule
from edge.inference import Classifier
from edge.inference.bundle import load_bundle
from edge.spray.geometry import Geometry
from train.evaluate import wilson
from train.perturb import SUITE
from run_pass_clocked import number

CONDITIONS = ("clean", "warm_cast", "dark")


def frames(video: Path, every: int):
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}: make it with tools/make_field_pass.py (see --help)")
    i = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            if i % every == 0:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, required=True, help="a pass with no plants (make_field_pass --density-per-m 0)")
    ap.add_argument("--config", type=Path, required=True, help="its config (make_field_pass --config-out): the [spray] geometry")
    ap.add_argument("--model", default="plant-seedlings-mnv2", help="bundle folder or shipped name")
    ap.add_argument("--every", type=number(int, 1, 10_000, "a frame step"), default=1,
                    help="use every N-th frame (default 1: all)")
    ap.add_argument("--seed", type=int, default=42, help="the conditions' seed (those here draw nothing at random)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(a.config)
        bundle = load_bundle(a.model)
    except WeedDetectorError as e:
        print(f"check_bare_tiles: error: {e}", file=sys.stderr)
        return e.exit_code
    if cfg.spray is None:
        raise SystemExit(f"{a.config} has no [spray] section: use the config make_field_pass --config-out wrote")
    geometry = Geometry.from_config(cfg.spray)
    rule = SprayRule.from_manifest(bundle.manifest)
    by_name = {p.name: p for p in SUITE}
    result = {}
    with Classifier(bundle, num_threads=2) as clf:
        counts = {c: [0, 0, collections.Counter()] for c in CONDITIONS}
        for i, rgb in frames(a.video, max(1, a.every)):
            try:  # the runtime's grid, and its own refusal of a frame too small for it
                _, _, boxes = geometry.tile_grid(rgb.shape[1], rgb.shape[0], cfg.spray.tile_rows)
            except WeedDetectorError as e:
                print(f"check_bare_tiles: error: {a.video}: {e}", file=sys.stderr)
                return e.exit_code
            for c in CONDITIONS:
                img = by_name[c].apply(rgb, (a.seed, i))
                tiles = [img[y0:y1, x0:x1] for x0, x1, y0, y1 in boxes]
                scores = clf.classify_many(tiles, "RGB")
                probs = np.stack([s.probs for s in scores])
                fired = np.atleast_1d(np.asarray(rule.fires(rule.view(probs)), bool))
                counts[c][0] += int(fired.sum())
                counts[c][1] += len(tiles)
                counts[c][2].update(clf.labels[int(k)] for k in probs[fired].argmax(axis=1))
    for c, (k, n, labels) in counts.items():
        r = wilson(k, n)
        result[c] = {"fired": k, "tiles": n, "rate": r.value if n else None, "ci95": [r.low, r.high],
                     "as": dict(labels.most_common())}
    if a.json:
        print(json.dumps({"model": str(bundle.dir), "rule": {"threshold": rule.threshold, "crop_veto": rule.crop_veto},
                          "video": str(a.video), "conditions": result}, indent=2))
        return 0
    print(f"{bundle.manifest.name}: threshold {rule.threshold:g}, crop veto {rule.crop_veto}, no vegetation gate; "
          f"bare-ground lane tiles of {a.video}")
    print("| condition | fired | rate (95 % CI) | fired as |\n|---|---:|---:|---|")
    for c, d in result.items():
        rate = "n/a" if d["rate"] is None else f"{100 * d['rate']:.2f} % ({100 * d['ci95'][0]:.2f}-{100 * d['ci95'][1]:.2f})"
        print(f"| {by_name[c].title} | {d['fired']}/{d['tiles']} | {rate} | "
              + ", ".join(f"{k} {v}" for k, v in d["as"].items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
