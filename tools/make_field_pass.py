#!/usr/bin/env python3
"""Build a test pass for spray timing: a camera driving over plants at known lanes and distances.

Real plant photos (``<class>__<id>.jpg``, e.g. ``samples/images`` or the plant-seedlings
data) are cut out by excess green (ExG = 2G - R - B) and placed on a gravel background
(plant-free patches of the same photos, as in ``make_sample_video.py``) at random lanes
and distances along a strip. A window the size of the camera's ground footprint scrolls
over the strip at the chosen speed and frame rate, like a camera on a moving boom whose
image top points ahead. Writes:

- the video (MJPG AVI);
- the ground truth for ``python -m edge.tools.replay`` (JSON lines: ``lane``, ``distance_cm`` of
  the plant's centre from the ground point under the image centre at the first frame,
  ``length_cm``, ``kind`` weed/crop, ``class``);
- a config with the matching ``[spray]`` section (lanes, footprint, speed).

Deterministic for a given seed. ``--images`` defaults to the repository's
``samples/images`` (found from this script's location, so it runs from any directory)::

    python tools/make_field_pass.py --out pass.avi --truth pass_truth.jsonl --config-out pass.toml
    edge-run --config pass.toml --video pass.avi --realtime
    python -m edge.tools.replay --config pass.toml --spray-log pass_spray.jsonl --truth pass_truth.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import cv2
import numpy as np

from make_sample_video import CROPS, EXG_THRESHOLD, PATCH, gravel_tile, plant_free_patches, plant_pixels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO / "samples" / "images"


def cutout(photo: np.ndarray, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo resized to size_px square and its plant mask (excess green, closed and slightly grown)."""
    img = cv2.resize(photo, (size_px, size_px), interpolation=cv2.INTER_AREA)
    mask = plant_pixels(img).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    mask = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k), k)
    return img, mask.astype(bool)


def place(n_lanes: int, n_plants: int, lo_cm: float, hi_cm: float, length_cm: float, rng: random.Random) -> list:
    """(lane, distance_cm) for up to n_plants plants, at least one plant length apart in a lane."""
    spots: list[tuple[int, float]] = []
    for _ in range(n_plants * 50):
        if len(spots) == n_plants:
            break
        lane, d = rng.randrange(n_lanes), rng.uniform(lo_cm, hi_cm)
        if all(ln != lane or abs(x - d) >= 2 * length_cm for ln, x in spots):
            spots.append((lane, round(d, 1)))
    return sorted(spots, key=lambda s: s[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES),
                    help="folder of <class>__<id>.jpg photos (default: the repository's samples/images)")
    ap.add_argument("--out", default="field_pass.avi", help="output video (MJPG AVI)")
    ap.add_argument("--truth", default="field_pass_truth.jsonl", help="ground truth (JSON lines)")
    ap.add_argument("--config-out", default="", help="also write an edge-run config with the matching [spray]")
    ap.add_argument("--width", type=int, default=320, help="frame width in pixels")
    ap.add_argument("--height", type=int, default=240, help="frame height in pixels")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--speed-kmh", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--across-cm", type=float, default=80.0, help="ground width the image covers")
    ap.add_argument("--along-cm", type=float, default=60.0, help="ground length the image covers")
    ap.add_argument("--plant-cm", type=float, default=15.0, help="plant size on the ground")
    ap.add_argument("--gravel-cm", type=float, default=20.0, help="ground size of one gravel tile")
    ap.add_argument("--weeds", type=int, default=8)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1711)
    a = ap.parse_args(argv)

    try:
        listing = os.listdir(a.images)
    except OSError as e:
        print(f"cannot read the photo folder {a.images}: {e.strerror or e} (give --images FOLDER)", file=sys.stderr)
        return 1
    names = sorted(n for n in listing if n.lower().endswith((".jpg", ".png")) and "__" in n)
    if not names:
        print(f"no <class>__<id>.jpg photos in {a.images}", file=sys.stderr)
        return 1
    photos = {n: cv2.imread(os.path.join(a.images, n)) for n in names}
    weeds = [n for n in names if n.split("__")[0] not in CROPS]
    crops = [n for n in names if n.split("__")[0] in CROPS]
    patches = plant_free_patches(list(photos.values()), PATCH, EXG_THRESHOLD)
    if len(patches) < 4 or (a.weeds and not weeds) or (a.crops and not crops):
        print("not enough photos: need plant-free gravel, weed and crop photos", file=sys.stderr)
        return 1
    rng = random.Random(a.seed)

    v_cm_s = a.speed_kmh * 100_000 / 3600
    n_frames = int(round(a.seconds * a.fps))
    pass_cm = v_cm_s * (n_frames - 1) / a.fps  # the image centre moves this far
    px_x, px_y = a.width / a.across_cm, a.height / a.along_cm  # pixels per cm
    top_cm = pass_cm + a.along_cm / 2  # the strip spans [-along/2, top_cm] along travel
    strip_h = int(np.ceil((top_cm + a.along_cm / 2) * px_y)) + 1
    strip = np.empty((strip_h, a.width, 3), np.uint8)
    t = max(8, int(round(a.gravel_cm * px_x)))  # a gravel tile (3x3 patches) covers gravel_cm on the ground
    for y in range(0, strip_h, t):
        for x in range(0, a.width, t):
            g = cv2.resize(gravel_tile(patches, rng), (t, t), interpolation=cv2.INTER_AREA)
            strip[y:y + t, x:x + t] = g[:strip_h - y, :a.width - x]

    size_px = max(4, int(round(a.plant_cm * min(px_x, px_y))))
    lane_w = a.across_cm / a.lanes
    kinds = ["weed"] * a.weeds + ["crop"] * a.crops
    rng.shuffle(kinds)
    spots = place(a.lanes, len(kinds), a.plant_cm, pass_cm - a.along_cm / 2, a.plant_cm, rng)
    truth = []
    for (lane, d), kind in zip(spots, kinds):
        name = rng.choice(weeds if kind == "weed" else crops)
        img, mask = cutout(photos[name], size_px)
        cy, cx = int(round((top_cm - d) * px_y)), int(round((lane + 0.5) * lane_w * px_x))
        y0, x0 = cy - size_px // 2, cx - size_px // 2
        region = strip[y0:y0 + size_px, x0:x0 + size_px]
        region[mask[:region.shape[0], :region.shape[1]]] = img[:region.shape[0], :region.shape[1]][
            mask[:region.shape[0], :region.shape[1]]]
        truth.append({"lane": lane, "distance_cm": d, "length_cm": round(size_px / px_y, 1), "kind": kind,
                      "class": name.split("__")[0]})

    writer = cv2.VideoWriter(a.out, cv2.VideoWriter_fourcc(*"MJPG"), a.fps, (a.width, a.height))
    if not writer.isOpened():
        print(f"cannot write {a.out} (OpenCV without an MJPG writer?)", file=sys.stderr)
        return 1
    for i in range(n_frames):
        centre = v_cm_s * i / a.fps
        y0 = int(round((top_cm - (centre + a.along_cm / 2)) * px_y))
        writer.write(np.ascontiguousarray(strip[y0:y0 + a.height]))
    writer.release()
    with open(a.truth, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in truth)
    if a.config_out:
        spray_log = os.path.splitext(a.out)[0] + "_spray.jsonl"
        with open(a.config_out, "w", encoding="utf-8") as f:
            f.write(f"# made by tools/make_field_pass.py for {a.out}\n[spray]\nlanes = {a.lanes}\n"
                    f"footprint_across_cm = {a.across_cm}\nfootprint_along_cm = {a.along_cm}\n"
                    f"nozzle_distance_cm = {a.along_cm + 40.0}\nspeed_kmh = {a.speed_kmh}\n"
                    f"log_jsonl = {json.dumps(spray_log)}\n")
    print(f"wrote {a.out}: {n_frames} frames {a.width}x{a.height} at {a.fps:g} fps, a {pass_cm / 100:.1f} m pass at "
          f"{a.speed_kmh:g} km/h; {len(truth)} plants ({sum(p['kind'] == 'weed' for p in truth)} weeds) in {a.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
