#!/usr/bin/env python3
"""Measure the vegetation gate on labelled photos: the weeds it hides, the bare ground it lets through.

The gate (``edge.inference.vegetation``, ``[gate]``) calls a tile bare ground, never classified
and never sprayed, when its vegetated fraction is below ``min_fraction``. Measured here, for
each preset (and any numbers given on the command line), under each **condition** (the
photos as they are, darker, colour-cast, motion-blurred, noisy, and combinations):

- **bare ground let through**: plant-free windows (48 x 48 px, side by side) of the photos
  whose vegetated fraction reaches the minimum (they would go to the model, as without a
  gate: a cost, not an error). The windows are **not chosen by excess green**, the index
  under test: a pixel is "plant" for choosing them when its HSV hue is green to yellow
  (OpenCV H 20..100, S >= 30, V >= 30), and a window keeps 12 px away from every such pixel.
  So greenish stones, tray walls, rulers and shadows stay in the set, and the gate is judged
  on them;
- **weeds hidden** (the false-negative rate, an error: that weed is never sprayed): weed
  photos whose vegetated fraction is below the minimum, the photo as one tile (``x1``: the
  plant fills the tile, as in these close-ups) and the photo shrunk to 1/2 and 1/3 of the
  tile's side on bare ground (a smaller plant in a field tile: its fraction shrinks with the
  area and thin leaves get thinner); with the class that loses the most;
- **crops hidden** (photo scale): not an error (a hidden crop is not sprayed), for information.

Conditions are applied to the whole photo before anything is cut; noise is seeded by the
photo's name, so the same command prints the same table. The time of the gate on a
640x480 frame (mask, integral image, 12 tiles) is printed too (p50 / p95 of 200 runs).

    python tools/check_vegetation_gate.py                                    # tests/data/photos (a smoke run)
    python tools/check_vegetation_gate.py /path/to/plant-seedlings/dev --roles /path/to/plant-seedlings/classes.csv
    python tools/check_vegetation_gate.py DATA --exg-threshold 0.09 --min-fraction 0.003   # also these numbers
    python tools/check_vegetation_gate.py DATA --json

DATA holds one folder of photos per class (``DATA/<class>/*.jpg``); ``--roles`` is a
``class,role`` CSV (default: ``DATA/classes.csv``, else ``DATA/../classes.csv``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from pydantic import ValidationError

from make_field_pass import readable_photos

from edge.core.errors import WeedDetectorError
from edge.inference.config import PRESETS, GateConfig, GateParams
from edge.inference.vegetation import VegetationGate, vegetation_mask
from train.background import free_windows
from train.data import DataError, read_roles, scan_folder

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 48  # bare-ground window side, photo pixels
MARGIN = 12  # ... kept this far from every HSV-green pixel
SCALES = (1.0, 0.5, 1 / 3)  # the plant photo's side, as a share of the tile's side
NOISE = 8.0  # sensor noise, standard deviation in 0..255 units per channel
BLUR = 7  # motion blur along travel (image rows), pixels


def _scaled(gains_bgr: tuple[float, float, float]) -> Callable[[np.ndarray, int], np.ndarray]:
    gains = np.array(gains_bgr, np.float32)
    return lambda img, seed: np.clip(img.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, seed: int) -> np.ndarray:
    kernel = np.zeros((BLUR, BLUR), np.float32)
    kernel[:, BLUR // 2] = 1.0 / BLUR  # along the image's rows: the direction of travel
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _noise(img: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) + rng.normal(0.0, NOISE, img.shape), 0, 255).astype(np.uint8)


def _then(*steps: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(img: np.ndarray, seed: int) -> np.ndarray:
        for step in steps:
            img = step(img, seed)
        return img
    return run


# name -> (BGR uint8 image, seed) -> perturbed image
CONDITIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "as photographed": lambda img, seed: img,
    "darker (x0.6)": _scaled((0.6, 0.6, 0.6)),
    "colour cast (R x1.25, B x0.8)": _scaled((0.8, 1.0, 1.25)),
    "green cast (G x1.1)": _scaled((1.0, 1.1, 1.0)),
    f"motion blur {BLUR} px": _blur,
    f"noise (sd {NOISE:g})": _noise,
    f"blur {BLUR} px + noise": _then(_blur, _noise),
    "darker (x0.6) + noise": _then(_scaled((0.6, 0.6, 0.6)), _noise),
}


@dataclass(frozen=True)
class Photo:
    label: str
    role: str
    key: str  # label/name: seeds the noise
    bgr: np.ndarray


def load_photos(data: Path, roles_csv: Path | None) -> list[Photo]:
    if not data.is_dir():
        raise DataError(f"photo folder {data} does not exist", "give a folder with one sub-folder of photos per class")
    samples = scan_folder(data)
    if roles_csv is None:
        roles_csv = next((p for p in (data / "classes.csv", data.parent / "classes.csv") if p.is_file()), None)
    roles = read_roles({s.label for s in samples}, roles_csv)
    return [Photo(samples[i].label, roles.role_of(samples[i].label), f"{samples[i].label}/{samples[i].path.name}", img)
            for i, img in readable_photos([s.path for s in samples], "check_vegetation_gate")]


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def ground_windows(img: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners of the photo's plant-free windows, chosen by HSV hue (not by excess green)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    plant = cv2.inRange(hsv, (20, 30, 30), (100, 255, 255))
    plant = cv2.dilate(plant, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MARGIN + 1, 2 * MARGIN + 1)))
    return free_windows(plant > 0, WINDOW, WINDOW)


def shrunk_fraction(img: np.ndarray, scale: float, p: GateParams) -> float:
    """The vegetated fraction of a tile holding the photo shrunk to ``scale`` of its side, on bare ground."""
    if scale >= 1.0:
        return float(vegetation_mask(img, p.exg_threshold, p.exg_min, p.smooth_px).mean())
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return float(vegetation_mask(small, p.exg_threshold, p.exg_min, p.smooth_px).sum()) / (h * w)


def measure(photos: list[Photo], params: dict[str, GateParams]) -> dict:
    windows = [ground_windows(ph.bgr) for ph in photos]
    n_windows = sum(len(w) for w in windows)
    weeds = [i for i, ph in enumerate(photos) if ph.role == "weed"]
    crops = [i for i, ph in enumerate(photos) if ph.role == "crop"]
    out: dict = {name: [] for name in params}
    for cond, perturb in CONDITIONS.items():
        images = [perturb(ph.bgr, _seed(ph.key)) for ph in photos]
        for name, p in params.items():
            ground = [float(m[y:y + WINDOW, x:x + WINDOW].mean())
                      for m, wins in ((vegetation_mask(img, p.exg_threshold, p.exg_min, p.smooth_px), wins)
                                      for img, wins in zip(images, windows) if wins)
                      for x, y in wins]
            row = {"condition": cond, "ground_windows": n_windows,
                   "ground_passed": sum(f >= p.min_fraction for f in ground), "weeds": len(weeds), "crops": len(crops)}
            for scale in SCALES:
                hidden = [i for i in weeds if shrunk_fraction(images[i], scale, p) < p.min_fraction]
                by_class: dict[str, int] = {}
                for i in hidden:
                    by_class[photos[i].label] = by_class.get(photos[i].label, 0) + 1
                worst = max(by_class.items(), key=lambda kv: (kv[1], kv[0]), default=None)
                row[f"weeds_hidden_x{scale:.2f}"] = len(hidden)
                row[f"worst_class_x{scale:.2f}"] = None if worst is None else {"class": worst[0], "hidden": worst[1]}
            row["crops_hidden"] = sum(shrunk_fraction(images[i], 1.0, p) < p.min_fraction for i in crops)
            out[name].append(row)
    return out


def gate_ms(photos: list[Photo], p: GateParams, runs: int = 200) -> dict:
    """p50 / p95 ms of the gate on a 640x480 frame tiled from the photos (mask, integral image, 4 x 3 tiles)."""
    tiles = [cv2.resize(ph.bgr, (160, 160), interpolation=cv2.INTER_AREA) for ph in photos[:12]]
    tiles += [tiles[i % len(tiles)] for i in range(12 - len(tiles))]
    frame = np.vstack([np.hstack(tiles[r * 4:(r + 1) * 4]) for r in range(3)])
    boxes = [(x, x + 160, y, y + 160) for x in range(0, 640, 160) for y in range(0, 480, 160)]
    gate = VegetationGate(p)
    took = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        gate.measure(frame, boxes)
        took.append((time.perf_counter_ns() - t0) / 1e6)
    return {"p50": round(float(np.percentile(took, 50)), 3), "p95": round(float(np.percentile(took, 95)), 3)}


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f} % ({k}/{n})" if n else "-"


def markdown(result: dict) -> str:
    lines = []
    for name, rows in result["presets"].items():
        p = result["params"][name]
        t = result["gate_ms"][name]
        lines += ["", f"**{name}**: {GateParams(**p).describe()}; gate on a 640x480 frame {t['p50']} / {t['p95']} ms "
                      "p50 / p95", "",
                  "| condition | bare ground let through | weeds hidden, x1 | x1/2 | x1/3 | crops hidden |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            cells = [r["condition"], _pct(r["ground_passed"], r["ground_windows"])]
            for scale in SCALES:
                k = r[f"weeds_hidden_x{scale:.2f}"]
                worst = r[f"worst_class_x{scale:.2f}"]
                cells.append(_pct(k, r["weeds"]) + (f" — {worst['class']} {worst['hidden']}" if worst else ""))
            cells.append(_pct(r["crops_hidden"], r["crops"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=ROOT / "tests" / "data" / "photos",
                    help="one folder of photos per class (default: the repository's tests/data/photos)")
    ap.add_argument("--roles", type=Path, default=None,
                    help="class,role CSV (default: DATA/classes.csv or DATA/../classes.csv)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="presets to measure, comma-separated")
    ap.add_argument("--exg-threshold", type=float, help="also measure the medium preset with this exg_threshold ...")
    ap.add_argument("--exg-min", type=float, help="... this exg_min ...")
    ap.add_argument("--smooth-px", type=int, help="... this smooth_px ...")
    ap.add_argument("--min-fraction", type=float, help="... and this min_fraction (as [gate] would take them)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead of Markdown tables")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        print(f"check_vegetation_gate: unknown preset(s) {', '.join(unknown)}: use {', '.join(PRESETS)}",
              file=sys.stderr)
        return 2
    params = {n: PRESETS[n] for n in names}
    custom = {k: v for k, v in (("exg_threshold", a.exg_threshold), ("exg_min", a.exg_min),
                                ("smooth_px", a.smooth_px), ("min_fraction", a.min_fraction)) if v is not None}
    if custom:
        try:  # the ranges [gate] takes
            params["custom"] = GateConfig(**custom).params()
        except ValidationError as e:
            err = e.errors()[0]
            print(f"check_vegetation_gate: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']} "
                  "(the ranges are [gate]'s: deploy/config.example.toml)", file=sys.stderr)
            return 2
    try:
        photos = load_photos(a.data, a.roles)
    except WeedDetectorError as e:
        print(f"check_vegetation_gate: {e}", file=sys.stderr)
        return e.exit_code
    result = {"data": str(a.data), "photos": len(photos), "params": {n: asdict(p) for n, p in params.items()},
              "presets": measure(photos, params), "gate_ms": {n: gate_ms(photos, p) for n, p in params.items()}}
    print(json.dumps(result, indent=1) if a.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
