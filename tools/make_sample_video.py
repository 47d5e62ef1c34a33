#!/usr/bin/env python3
"""Build ``samples/field.avi``: a camera panning over seedlings and bare gravel.

The shipped sample photos (``samples/images/<class>__<id>.jpg``) are laid side by side
in a strip, with plain gravel tiles in between, and a square window slides along the
strip at constant speed like a camera on a moving boom. So the video has weed, crop and
bare-ground moments, in a known order.

Gravel tiles: the photos are close-ups with little bare ground, so each gravel tile is a
3x3 mosaic of 50x50 patches cut from photo areas where no pixel's excess green
(2G - R - B, through the project's one vegetation index, ``edge.inference.vegetation``)
exceeds a threshold, i.e. where there is no plant.

Next to the video, ``samples/field_truth.csv`` names the tile that covers most of each
frame, its class and role (weed / crop / background) and the share of the frame it
covers, so a demo or a test can compare decisions with the truth.

Needs OpenCV and the ``edge`` package (the checkout's, or installed). Deterministic: the same inputs give
the same video. Run from the repository root::

    python tools/make_sample_video.py
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.inference.vegetation import vegetation_mask

CROPS = {"maize", "common_wheat", "sugar_beet"}  # the dataset's crop classes; others are weeds
PATCH = 50  # gravel patch side in photo pixels (photos are 150x150)
EXG_THRESHOLD = 30  # plain excess green 2G - R - B above this = plant pixel
SOIL = "soil"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # the defaults, wherever the tool is run from


def plant_pixels(image: np.ndarray, threshold: float = EXG_THRESHOLD) -> np.ndarray:
    """Boolean mask of the pixels whose excess green 2G - R - B exceeds ``threshold``."""
    return vegetation_mask(image, exg_threshold=0.0, exg_min=threshold)


def plant_free_patches(images: list[np.ndarray], size: int, threshold: int) -> list[np.ndarray]:
    """All size x size windows (on a size/2 grid) with no plant pixel and no tray/ruler.

    Very dark pixels (tray edges, shadows) and high-contrast black/white (barcode rulers)
    are excluded too, so the patches look like plain gravel.
    """
    patches = []
    step = size // 2
    for image in images:
        plant = plant_pixels(image, threshold)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        g32 = gray.astype(np.float32)
        local_var = cv2.blur(g32 * g32, (7, 7)) - cv2.blur(g32, (7, 7)) ** 2
        flat = local_var < 6.0  # smooth surfaces: tray walls, ruler, not gravel
        h, w = gray.shape
        for y in range(0, h - size + 1, step):
            for x in range(0, w - size + 1, step):
                if plant[y : y + size, x : x + size].any():
                    continue
                g = gray[y : y + size, x : x + size]
                if (g < 40).mean() > 0.02 or (g > 235).mean() > 0.05:
                    continue
                if flat[y : y + size, x : x + size].mean() > 0.03:
                    continue
                patches.append(image[y : y + size, x : x + size].copy())
    return patches


def gravel_tile(patches: list[np.ndarray], rng: random.Random, grid: int = 3) -> np.ndarray:
    """A grid x grid mosaic of gravel patches, each randomly flipped/rotated."""
    rows = []
    for _ in range(grid):
        row = []
        for _ in range(grid):
            p = rng.choice(patches)
            p = np.rot90(p, rng.randrange(4))
            if rng.random() < 0.5:
                p = p[:, ::-1]
            row.append(np.ascontiguousarray(p))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def tile_order(names: list[str], n_soil: int) -> list[str]:
    """One photo per class, crops and weeds interleaved, gravel tiles spread between.

    Starts and ends on gravel so the video opens and closes on bare ground.
    """
    by_class: dict[str, str] = {}
    for name in sorted(names):
        by_class.setdefault(name.split("__")[0], name)
    crops = [n for c, n in sorted(by_class.items()) if c in CROPS]
    weeds = [n for c, n in sorted(by_class.items()) if c not in CROPS]
    plants: list[str] = []
    while crops or weeds:  # two weeds, one crop, ...
        for _ in range(2):
            if weeds:
                plants.append(weeds.pop(0))
        if crops:
            plants.append(crops.pop(0))
    order = [SOIL]
    gaps = max(1, n_soil - 2)  # gravel tiles between plants
    every = max(1, len(plants) // (gaps + 1))
    used = 1
    for i, name in enumerate(plants, 1):
        order.append(name)
        if i % every == 0 and used < n_soil - 1 and i < len(plants):
            order.append(SOIL)
            used += 1
    order.append(SOIL)
    return order


def role_of(tile: str) -> tuple[str, str]:
    if tile == SOIL:
        return "soil", "background"
    cls = tile.split("__")[0]
    return cls, ("crop" if cls in CROPS else "weed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(SAMPLES / "images"), help="folder of <class>__<id>.jpg photos")
    ap.add_argument("--out", default=str(SAMPLES / "field.avi"), help="output video (MJPG AVI)")
    ap.add_argument("--truth", default=str(SAMPLES / "field_truth.csv"), help="per-frame truth CSV")
    ap.add_argument("--size", type=int, default=240, help="frame width and height in pixels")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--soil-tiles", type=int, default=5, help="gravel tiles in the strip")
    ap.add_argument("--quality", type=int, default=85, help="MJPG quality 1-100")
    ap.add_argument("--seed", type=int, default=1711)
    args = ap.parse_args(argv)
    if not 16 <= args.size <= 4096 or not 1 <= args.fps <= 240 or not 0 < args.seconds <= 3600:
        ap.error("--size is 16..4096 pixels, --fps 1..240, --seconds above 0 and at most 3600")
    if not os.path.isdir(args.images):
        ap.error(f"--images {args.images!r} is not a folder")

    names = sorted(n for n in os.listdir(args.images) if n.lower().endswith((".jpg", ".png")) and "__" in n)
    if not names:
        print(f"no <class>__<id>.jpg photos in {args.images}", file=sys.stderr)
        return 1
    photos = {n: cv2.imread(os.path.join(args.images, n)) for n in names}
    patches = plant_free_patches(list(photos.values()), PATCH, EXG_THRESHOLD)
    if len(patches) < 4:
        print(f"only {len(patches)} plant-free patches found; cannot build gravel tiles", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)

    s = args.size
    order = tile_order(names, args.soil_tiles)
    tiles = []
    for name in order:
        tile = gravel_tile(patches, rng) if name == SOIL else photos[name]
        tiles.append(cv2.resize(tile, (s, s), interpolation=cv2.INTER_CUBIC))
    strip = np.hstack(tiles)

    n_frames = int(round(args.seconds * args.fps))
    travel = strip.shape[1] - s
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), args.fps, (s, s))
    if not writer.isOpened():
        print(f"cannot write {args.out} (OpenCV without an MJPG writer?)", file=sys.stderr)
        return 1
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, args.quality)
    with open(args.truth, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["frame", "t_s", "tile", "class", "role", "coverage"])
        for i in range(n_frames):
            x = int(round(i * travel / max(1, n_frames - 1)))
            writer.write(np.ascontiguousarray(strip[:, x : x + s]))
            k, offset = divmod(x, s)  # tile k covers (s - offset) px, tile k+1 the rest
            main_k, cover = (k, s - offset) if s - offset >= offset else (k + 1, offset)
            tile = order[main_k]
            cls, role = role_of(tile)
            out.writerow([i, f"{i / args.fps:.3f}", tile, cls, role, f"{cover / s:.2f}"])
    writer.release()
    size_kb = os.path.getsize(args.out) / 1024
    print(f"wrote {args.out}: {n_frames} frames {s}x{s} at {args.fps:g} fps, {size_kb:.0f} KiB; "
          f"{len(order)} tiles: " + " ".join(role_of(t)[1][0].upper() for t in order))
    print(f"wrote {args.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
