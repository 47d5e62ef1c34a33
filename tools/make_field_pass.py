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
- a config with the matching ``[spray]`` section (lanes, footprint, nozzle distance, speed,
  and the valve lags when given).

Deterministic for a given seed: the same options give a byte-identical truth file and the
same frames. ``--images`` defaults to the repository's ``samples/images`` (found from this
script's location, so it runs from any directory)::

    python tools/make_field_pass.py --out pass.avi --truth pass_truth.jsonl --config-out pass.toml
    edge-run --config pass.toml --video pass.avi --realtime
    python -m edge.tools.replay --config pass.toml --spray-log pass_spray.jsonl --truth pass_truth.jsonl

Passes to measure with (docs/spray-timing.md, "Passes to measure with"):

- ``--preset boom-4x10cm``: a 640x480 camera at 30 fps covering 40 x 30 cm, 4 lanes of 10 cm,
  nozzles 50 cm behind the image centre, valve lags 30 ms; a 10 m pass with 6 plants per
  metre (over the 4 lanes), one crop in four, 8 cm plant photos on gravel of the same scale,
  and each plant's truth ``length_cm`` and ``distance_cm`` from its pasted excess-green mask
  (``--truth-length mask``: the extent along travel of what is pasted, specks under 0.1 cm²
  left out) instead of the photo square. Any option given on the command line wins over it.
- ``--blur-px N`` (motion blur along travel, N px) and ``--noise SIGMA`` (Gaussian sensor noise,
  grey levels, seeded by ``--seed`` and the frame number): pure functions of each frame.
- ``--split test --split-of BUNDLE``: plants only from the test split of the photos a weed-train
  bundle was trained on, split exactly as ``weed-train train`` split them (its recorded
  command: the same data, groups, fractions and seed, through ``train.pipeline.prepare``);
  ``--split-args "--data DIR --roles FILE ..."`` gives the ``weed-train train`` data options
  directly instead. ``--list-split`` prints that split's photos (``class/file``) and stops.
- ``--images DIR`` on a weed-train data folder (``<class>/<photo>``, e.g. photos kept aside from training): every
  photo of it, each truth row naming its ``photo``; ``--roles classes.csv`` says which classes are crops (default:
  maize, common wheat and sugar beet; every other class a weed; background classes are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from make_sample_video import CROPS, EXG_THRESHOLD, PATCH, gravel_tile, plant_free_patches, plant_pixels

from edge.core.args import given
from edge.core.errors import ConfigError, WeedDetectorError
from edge.core.files import check_output
from edge.sources.config import DEFAULT_MAX_IMAGE_PIXELS
from edge.sources.image_header import ImageRefused, read_image
from edge.spray.config import SprayConfig
from edge.spray.geometry import Geometry

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO / "samples" / "images"
SPECK_CM2 = 0.1  # --truth-length mask: green specks smaller than this (on the ground) are neither pasted nor measured

# --preset: option defaults (the command line still wins)
PRESETS = {
    "boom-4x10cm": dict(width=640, height=480, fps=30.0, across_cm=40.0, along_cm=30.0, lanes=4, nozzle_cm=50.0,
                        valve_lag_ms=30.0, length_m=10.0, density_per_m=6.0, crop_share=0.25, plant_cm=8.0,
                        gravel_cm=8.0, truth_length="mask"),
}


def cutout(photo: np.ndarray, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo resized to size_px square and its plant mask (excess green, closed and slightly grown)."""
    img = cv2.resize(photo, (size_px, size_px), interpolation=cv2.INTER_AREA)
    mask = plant_pixels(img).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    mask = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k), k)
    return img, mask.astype(bool)


def without_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """The mask without its connected parts smaller than ``min_px`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


def mask_extent(mask: np.ndarray, y0: int, top_cm: float, px_y: float) -> tuple[float, float]:
    """(centre, length) in cm along travel of a mask pasted at strip row ``y0``: strip row ``y`` is the ground
    ``top_cm - y / px_y`` (its pixel's front edge), so the mask's rows r0..r1 cover from ``top_cm - (y0 + r1 + 1)
    / px_y`` to ``top_cm - (y0 + r0) / px_y``."""
    rows = np.flatnonzero(mask.any(axis=1))
    front, rear = top_cm - (y0 + rows[0]) / px_y, top_cm - (y0 + rows[-1] + 1) / px_y
    return (front + rear) / 2, front - rear


def motion_blur(frame: np.ndarray, px: int) -> np.ndarray:
    """The frame blurred along travel (the image's vertical) over ``px`` pixels, as the ground moving that far
    during the exposure smears it; ``px`` <= 1: unchanged."""
    if px <= 1:
        return frame
    kernel = np.full((px, 1), 1.0 / px, np.float32)
    return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT)


def sensor_noise(frame: np.ndarray, sigma: float, seed: tuple[int, ...]) -> np.ndarray:
    """The frame with Gaussian noise of ``sigma`` grey levels, the same for the same ``seed``; 0: unchanged."""
    if sigma <= 0:
        return frame
    noise = np.random.default_rng(list(seed)).normal(0.0, sigma, frame.shape)
    return np.clip(np.rint(frame.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def split_photos(words: list[str], split: str) -> list[tuple[Path, str, str]]:
    """(path, class, role) of every photo in ``split`` of the data set ``weed-train train WORDS`` would use:
    weed-train's own parser and ``train.pipeline.prepare`` (without the background class, as
    ``weed-train background`` does), so the same seed, groups and fractions give the same photos."""
    from train.cli import _data_config, build_parser
    from train.pipeline import prepare

    dc = _data_config(build_parser().parse_args(["train", *words]))
    prep = prepare(replace(dc, background="none"), progress=False)
    return [(s.path, s.label, prep.roles.role_of(s.label)) for s in prep.samples if s.split == split]


def bundle_split_args(bundle: str) -> list[str]:
    """The data options of the ``weed-train train`` command a bundle records, with its paths (written from the
    root of the checkout it was trained in) made relative to the working directory."""
    from edge.inference.bundle import resolve_bundle
    from train.provenance import command_base, rebase_paths

    from edge.core.files import FileRefused, read_regular
    from train.evaluate import MAX_METRICS_BYTES, METRICS

    folder = resolve_bundle(bundle)
    try:  # a regular file (a FIFO named metrics.json would block a plain read)
        command = json.loads(read_regular(folder / METRICS, MAX_METRICS_BYTES))["training"]["command"]
    except (FileRefused, RecursionError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"bundle {folder} records no training command in metrics.json ({e})",
                          "give --split-args with the weed-train train data options instead") from None
    words = shlex.split(command)
    if words[:2] != ["weed-train", "train"]:
        raise ConfigError(f"bundle {folder} was not made by weed-train train ({command!r})", "give --split-args")
    return rebase_paths(words[2:], command_base(folder.resolve()), Path.cwd())


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


MAX_STRIP_BYTES = 2_000_000_000  # the pass is painted on one strip in memory
ABOVE_ZERO = {"--seconds", "--length-m"}  # their range's 0 is left out: a pass of no length


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS))
    preset = pre.parse_known_args(argv)[0].preset
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="boom-4x10cm: 640x480 at 30 fps over 40 x 30 cm, 4 lanes, nozzles 50 cm behind the image "
                         "centre, valve lags 30 ms, a 10 m pass, 6 plants/m, one crop in four, truth from the masks")
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), type=given("a folder of photos"),
                    help="folder of <class>__<id>.jpg photos, or a weed-train data folder (<class>/<photo>), every "
                         "photo of it used (default: the repository's samples/images)")
    ap.add_argument("--roles", metavar="FILE", type=Path,
                    help="with --images: a class,role CSV (weed-train's --roles, e.g. plant-seedlings' classes.csv); "
                         f"default: {', '.join(sorted(CROPS))} are crops, every other class a weed")
    ap.add_argument("--split", choices=("train", "val", "test"),
                    help="take the plants from this split only of a weed-train data set (--split-of or --split-args)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--split-of", metavar="BUNDLE",
                     help="the data set and split of this weed-train bundle (folder or shipped name): its recorded "
                          "training command")
    src.add_argument("--split-args", metavar="ARGS",
                     help='the weed-train train data options, e.g. "--data DIR --roles classes.csv --seed 42"')
    ap.add_argument("--list-split", action="store_true", help="print the split's photos (class/file) and stop")
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
    ap.add_argument("--length-m", type=float, default=None,
                    help="the pass length (the image centre moves this far; instead of --seconds)")
    ap.add_argument("--density-per-m", type=float, default=None,
                    help="plants per metre of pass over all lanes (instead of --weeds/--crops)")
    ap.add_argument("--crop-share", type=float, default=0.25, help="with --density-per-m: the share of crops")
    ap.add_argument("--nozzle-cm", type=float, default=None,
                    help="nozzles this far behind the image centre (default: footprint along + 40 cm)")
    ap.add_argument("--valve-lag-ms", type=float, default=None,
                    help="valve opening and closing lag to write into the config (default: left out)")
    ap.add_argument("--blur-px", type=int, default=0, help="motion blur along travel, in pixels (0: none)")
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian sensor noise, sigma in grey levels (0: none)")
    ap.add_argument("--truth-length", choices=("square", "mask"), default="square",
                    help="a plant's length_cm and distance_cm: its photo square (default, as the shipped sample) "
                         "or the extent along travel of its pasted excess-green mask")
    if preset:
        ap.set_defaults(**PRESETS[preset])
    a = ap.parse_args(argv)
    if (a.split is None) != (a.split_of is None and a.split_args is None):
        ap.error("--split goes with --split-of BUNDLE or --split-args ARGS (and they need --split)")
    if a.list_split and a.split is None:
        ap.error("--list-split needs --split and --split-of or --split-args")
    if a.roles is not None and a.split is not None:
        ap.error("--roles goes with --images (a split takes its roles from its weed-train data options)")
    ranges = {"--fps": (a.fps, 1, 240), "--across-cm": (a.across_cm, 1, 1000), "--along-cm": (a.along_cm, 1, 1000),
              "--plant-cm": (a.plant_cm, 0.1, 100), "--gravel-cm": (a.gravel_cm, 0.1, 1000),
              "--seconds": (a.seconds, 0, 3600), "--length-m": (a.length_m, 0, 1000),
              "--noise": (a.noise, 0, 255), "--crop-share": (a.crop_share, 0, 1),
              "--density-per-m": (a.density_per_m, 0, 1000), "--nozzle-cm": (a.nozzle_cm, 0, 10000),
              "--valve-lag-ms": (a.valve_lag_ms, 0, 2000)}
    for name, (value, lo, hi) in ranges.items():  # the comparisons also refuse nan; inf is above hi
        if value is None:
            continue
        above_zero = name in ABOVE_ZERO
        if not (lo < value <= hi if above_zero else lo <= value <= hi):
            ap.error(f"{name} is {f'above {lo:g} and at most {hi:g}' if above_zero else f'{lo:g}..{hi:g}'}, "
                     f"got {value!r}")
    slowest = SprayConfig.model_fields["min_speed_kmh"].default  # the pass's config keeps the default
    if not slowest <= a.speed_kmh <= 100:
        ap.error(f"--speed-kmh is {slowest:g}..100 ([spray] min_speed_kmh = {slowest:g} by default: slower, the "
                 "pass's config would never spray)")
    if not 16 <= a.width <= 8192 or not 16 <= a.height <= 8192 or not 1 <= a.lanes <= 64:
        ap.error("--width and --height are 16..8192 pixels, --lanes 1..64")
    try:  # the pass's config must be one edge-run can cut these frames with
        Geometry.from_config(SprayConfig(lanes=a.lanes, footprint_across_cm=a.across_cm, footprint_along_cm=a.along_cm,
                                         nozzle_distance_cm=a.along_cm, speed_kmh=a.speed_kmh)).tile_grid(a.width, a.height)
    except WeedDetectorError as e:
        ap.error(f"--lanes {a.lanes} on {a.width}x{a.height} frames: {e.what} — use fewer --lanes or a larger "
                 "--width / --height")
    if min(a.weeds, a.crops) < 0 or max(a.weeds, a.crops) > 10000:
        ap.error("--weeds and --crops are 0..10000")
    if not 0 <= a.blur_px <= 255:
        ap.error("--blur-px is 0..255")
    for flag, path in (("--out", a.out), ("--truth", a.truth), ("--config-out", a.config_out or None)):
        if path is not None:
            try:  # before any photo is read or frame made
                check_output(flag, path)
            except ConfigError as e:
                ap.error(str(e))
    if a.split_args is not None:
        try:
            shlex.split(a.split_args)
        except ValueError as e:
            ap.error(f"--split-args {a.split_args!r} cannot be split into words: {e}")
    return a


def readable_photos(paths: Sequence[Path], tool: str) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR image) of each of ``paths`` that ``read_image`` reads (its size checked before decoding); the
    others are left out and counted once on stderr, with the first one and why (every tool reading photos)."""
    refused = []
    for i, path in enumerate(paths):
        try:
            yield i, read_image(path, DEFAULT_MAX_IMAGE_PIXELS)
        except ImageRefused as why:
            refused.append(f"{path} ({why})")
    if refused:
        print(f"{tool}: skipped {len(refused)} photo(s) that cannot be used, e.g. {refused[0]}", file=sys.stderr)


def photo_pool(a: argparse.Namespace) -> list[tuple[str, np.ndarray, str, str, str | None]]:
    """(name, image, class, weed|crop, photo id in the data set or None) of every photo to take plants
    (and gravel) from: the --images folder, or the chosen split of a weed-train data set."""
    if a.split is not None:
        listed = [(path, label, role) for path, label, role in split_photos(split_words(a), a.split)
                  if role in ("weed", "crop")]
    else:
        listed = folder_photos(Path(a.images), a.roles)
    pool = []
    for i, image in readable_photos([path for path, _, _ in listed], "make_field_pass"):
        path, label, role = listed[i]
        flat = path.parent == Path(a.images) and a.split is None and "__" in path.name
        pool.append((path.name if flat else f"{label}/{path.name}", image, label, role,
                     None if flat else f"{label}/{path.name}"))
    return pool


def folder_photos(folder: Path, roles_file: Path | None) -> list[tuple[Path, str, str]]:
    """(path, class, weed|crop) of every photo of ``folder``: flat ``<class>__<id>.jpg`` files, or else a weed-train
    data folder (``<class>/<photo>``, listed as ``weed-train`` lists it). Roles from ``roles_file`` (weed-train's
    reader; background classes left out), else the data set's crops (``CROPS``) and every other class a weed."""
    try:
        listing = sorted(os.listdir(folder))
    except OSError as e:
        raise ConfigError(f"cannot read the photo folder {folder}: {e.strerror or e}", "give --images FOLDER")
    flat = [(folder / n, n.split("__")[0]) for n in listing if n.lower().endswith((".jpg", ".png")) and "__" in n]
    if flat:
        found = flat
    elif any((folder / n).is_dir() for n in listing):
        from train.data import scan_folder

        found = [(s.path, s.label) for s in scan_folder(folder)]
    else:
        raise ConfigError(f"no <class>__<id>.jpg photos and no class folders in {folder}",
                          "give --images FOLDER (flat <class>__<id>.jpg photos or one sub-folder per class)")
    if roles_file is None:
        return [(path, label, "crop" if label in CROPS else "weed") for path, label in found]
    from train.data import read_roles

    roles = read_roles({label for _, label in found}, roles_file=roles_file)
    return [(path, label, roles.role_of(label)) for path, label in found if roles.role_of(label) != "background"]


def split_words(a: argparse.Namespace) -> list[str]:
    return shlex.split(a.split_args) if a.split_args is not None else bundle_split_args(a.split_of)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        if a.list_split:
            for path, label, _ in split_photos(split_words(a), a.split):
                print(f"{label}/{path.name}")
            return 0
        return make_pass(a, photo_pool(a))
    except WeedDetectorError as e:
        print(f"make_field_pass: error: {e}", file=sys.stderr)
        return 1


def make_pass(a: argparse.Namespace, pool: list[tuple[str, np.ndarray, str, str, str | None]]) -> int:
    weeds = [p for p in pool if p[3] == "weed"]
    crops = [p for p in pool if p[3] == "crop"]
    patches = plant_free_patches([p[1] for p in pool], PATCH, EXG_THRESHOLD)
    v_cm_s = a.speed_kmh * 100_000 / 3600
    if a.length_m is not None:  # the image centre moves length_m from the first frame to the last
        n_frames = int(round(a.length_m * 100 / v_cm_s * a.fps)) + 1
    else:
        n_frames = int(round(a.seconds * a.fps))
    if n_frames < 2:
        raise ConfigError(f"the pass would be {n_frames} frame(s) at {a.fps:g} fps: nothing moves",
                          "give a longer --seconds or --length-m")
    pass_cm = v_cm_s * (n_frames - 1) / a.fps  # the image centre moves this far
    if a.density_per_m is not None:
        n_plants = int(round(a.density_per_m * pass_cm / 100))
        n_crops = int(round(n_plants * a.crop_share))
        n_weeds = n_plants - n_crops
    else:
        n_weeds, n_crops = a.weeds, a.crops
    if len(patches) < 4 or (n_weeds and not weeds) or (n_crops and not crops):
        raise ConfigError("not enough photos: need plant-free gravel, weed and crop photos",
                          "give a folder (or split) with both weed and crop photos")
    rng = random.Random(a.seed)

    px_x, px_y = a.width / a.across_cm, a.height / a.along_cm  # pixels per cm
    top_cm = pass_cm + a.along_cm / 2  # the strip spans [-along/2, top_cm] along travel
    strip_h = int(np.ceil((top_cm + a.along_cm / 2) * px_y)) + 1
    if strip_h * a.width * 3 > MAX_STRIP_BYTES:
        raise ConfigError(f"the pass's ground strip would take {strip_h * a.width * 3 / 1e9:.1f} GB "
                          f"({strip_h}x{a.width} pixels at {px_y:.1f} px/cm)",
                          "give a shorter pass, a smaller --height or a longer --along-cm")
    strip = np.empty((strip_h, a.width, 3), np.uint8)
    t = max(8, int(round(a.gravel_cm * px_x)))  # a gravel tile (3x3 patches) covers gravel_cm on the ground
    for y in range(0, strip_h, t):
        for x in range(0, a.width, t):
            g = cv2.resize(gravel_tile(patches, rng), (t, t), interpolation=cv2.INTER_AREA)
            strip[y:y + t, x:x + t] = g[:strip_h - y, :a.width - x]

    size_px = max(4, int(round(a.plant_cm * min(px_x, px_y))))
    speck_px = max(1, int(round(SPECK_CM2 * px_x * px_y)))
    lane_w = a.across_cm / a.lanes
    kinds = ["weed"] * n_weeds + ["crop"] * n_crops
    rng.shuffle(kinds)
    spots = place(a.lanes, len(kinds), a.plant_cm, pass_cm - a.along_cm / 2, a.plant_cm, rng)
    truth = []
    for (lane, d), kind in zip(spots, kinds):
        choices = weeds if kind == "weed" else crops
        name, photo, label, _, photo_id = rng.choice(choices)
        img, mask = cutout(photo, size_px)
        if a.truth_length == "mask":
            mask = without_specks(mask, speck_px)
            while not mask.any():  # no plant left in this photo: another one (the same for the same seed)
                name, photo, label, _, photo_id = rng.choice(choices)
                img, mask = cutout(photo, size_px)
                mask = without_specks(mask, speck_px)
        cy, cx = int(round((top_cm - d) * px_y)), int(round((lane + 0.5) * lane_w * px_x))
        y0, x0 = cy - size_px // 2, cx - size_px // 2
        ys, xs = max(0, y0), max(0, x0)  # a plant wider than its lane's side of the strip is cut at the edge
        ye, xe = min(strip_h, y0 + size_px), min(a.width, x0 + size_px)  # (a negative start wrapped around)
        region = strip[ys:ye, xs:xe]
        shown = mask[ys - y0:ye - y0, xs - x0:xe - x0]
        region[shown] = img[ys - y0:ye - y0, xs - x0:xe - x0][shown]
        row = {"lane": lane, "distance_cm": d, "length_cm": round(size_px / px_y, 1), "kind": kind, "class": label}
        if a.truth_length == "mask":
            if not shown.any():
                raise ConfigError(f"a {a.plant_cm:g} cm plant in lane {lane} falls outside the "
                                  f"{a.across_cm:g} cm strip", "give a smaller --plant-cm or fewer --lanes")
            centre, length = mask_extent(shown, ys, top_cm, px_y)
            row.update(distance_cm=round(centre, 2), length_cm=round(length, 2))
        if photo_id is not None:
            row["photo"] = photo_id
        truth.append(row)

    writer = cv2.VideoWriter(a.out, cv2.VideoWriter_fourcc(*"MJPG"), a.fps, (a.width, a.height))
    if not writer.isOpened():
        raise ConfigError(f"cannot write {a.out}", "check the folder (and that OpenCV has an MJPG writer)")
    for i in range(n_frames):
        centre = v_cm_s * i / a.fps
        y0 = int(round((top_cm - (centre + a.along_cm / 2)) * px_y))
        frame = motion_blur(np.ascontiguousarray(strip[y0:y0 + a.height]), a.blur_px)
        writer.write(sensor_noise(frame, a.noise, (a.seed, i)))
    writer.release()
    with open(a.truth, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in truth)
    if a.config_out:
        spray_log = os.path.splitext(a.out)[0] + "_spray.jsonl"
        nozzle = a.along_cm + 40.0 if a.nozzle_cm is None else a.nozzle_cm
        lags = ("" if a.valve_lag_ms is None else
                f"valve_open_lag_ms = {a.valve_lag_ms}\nvalve_close_lag_ms = {a.valve_lag_ms}\n")
        with open(a.config_out, "w", encoding="utf-8") as f:
            f.write(f"# made by tools/make_field_pass.py for {a.out}\n[spray]\nlanes = {a.lanes}\n"
                    f"footprint_across_cm = {a.across_cm}\nfootprint_along_cm = {a.along_cm}\n"
                    f"nozzle_distance_cm = {nozzle}\nspeed_kmh = {a.speed_kmh}\n{lags}"
                    f"log_jsonl = {json.dumps(spray_log)}\n")
    print(f"wrote {a.out}: {n_frames} frames {a.width}x{a.height} at {a.fps:g} fps, a {pass_cm / 100:.1f} m pass at "
          f"{a.speed_kmh:g} km/h; {len(truth)} plants ({sum(p['kind'] == 'weed' for p in truth)} weeds) in {a.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
