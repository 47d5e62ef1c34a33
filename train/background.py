"""A "background" (bare soil / gravel, no plant) class cut from the plant photos themselves.

A real camera mostly sees bare ground, which must never fire a valve. For each photo an
excess-green vegetation mask (ExG = 2g - r - b on chromaticity coordinates, Woebbecke et
al. 1995) marks plant pixels; the mask is dilated so thin leaves and their edges are
avoided, and a square window with no plant pixel at all is cut out and resized to the
model's input size (exactly as the runtime resizes a frame). Patches of a split come only
from that split's photos, so no test photo leaks into training. Which photos give a patch,
the window size and position are drawn from a seed and the photo's own name: the same
command gives the same patches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from train.data import BACKGROUND, SPLITS, DataError, Sample, decode_rgb, resize_rgb

log = logging.getLogger(__name__)

# Window side, as a fraction of the photo's shorter side, tried from large to small.
DEFAULT_SCALES = (0.75, 0.6, 0.5, 0.4, 0.33)


@dataclass(frozen=True)
class PatchParams:
    exg_threshold: float = 0.05  # chromatic ExG above this is "plant" (plants here reach 0.3-0.8)
    dilate_px: int = 7  # grow the plant mask by this many pixels before looking for free windows
    scales: tuple[float, ...] = DEFAULT_SCALES
    min_side_px: int = 40  # never cut a window smaller than this (in photo pixels)
    stride_fraction: float = 0.125  # window positions are tried on a grid of this fraction of its side


@dataclass(frozen=True)
class Patch:
    source: Path
    split: str
    x: int
    y: int
    side: int


def plant_mask(rgb: np.ndarray, threshold: float = 0.05, dilate_px: int = 7) -> np.ndarray:
    """Boolean HxW mask of plant pixels (excess green), dilated by ``dilate_px``."""
    import cv2

    f = rgb.astype(np.float32)
    s = f.sum(axis=2) + 1e-6
    r, g, b = f[..., 0] / s, f[..., 1] / s, f[..., 2] / s
    exg = 2.0 * g - r - b
    mask = (exg > threshold).astype(np.uint8)
    if dilate_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        mask = cv2.dilate(mask, k)
    return mask.astype(bool)


def free_windows(mask: np.ndarray, side: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of ``side`` x ``side`` windows with no True pixel."""
    h, w = mask.shape
    if side > h or side > w:
        return []
    integral = np.pad(mask.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    ys = np.arange(0, h - side + 1, stride)
    xs = np.arange(0, w - side + 1, stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    total = (
        integral[yy + side, xx + side] - integral[yy, xx + side] - integral[yy + side, xx] + integral[yy, xx]
    )
    free = np.argwhere(total == 0)
    return [(int(xs[j]), int(ys[i])) for i, j in free]


def _rng_for(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"background:{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def find_patch(rgb: np.ndarray, rng: np.random.Generator, params: PatchParams = PatchParams()) -> tuple[int, int, int] | None:
    """(x, y, side) of the largest plant-free square window (random among equals), or None."""
    mask = plant_mask(rgb, params.exg_threshold, params.dilate_px)
    short = min(mask.shape)
    for scale in params.scales:
        side = int(round(scale * short))
        if side < params.min_side_px:
            break
        stride = max(1, int(round(side * params.stride_fraction)))
        cands = free_windows(mask, side, stride)
        if cands:
            x, y = cands[int(rng.integers(len(cands)))]
            return x, y, side
    return None


def plan_patches(
    samples: Sequence[Sample],
    per_split: dict[str, int],
    seed: int = 42,
    params: PatchParams = PatchParams(),
    progress: bool = True,
) -> list[Patch]:
    """Choose up to ``per_split[split]`` patches for each split, from that split's photos.

    Photos are visited in an order fixed by the seed and their names; each gives at most
    one patch.
    """
    from tqdm.auto import tqdm

    plan: list[Patch] = []
    for split in SPLITS:
        want = per_split.get(split, 0)
        if want <= 0:
            continue
        pool = [s for s in samples if s.split == split]
        pool.sort(key=lambda s: _rng_for(s.key(), seed).integers(1 << 62))
        got = 0
        bar = tqdm(total=want, desc=f"background {split}", unit="patch", disable=not progress, leave=False)
        for s in pool:
            if got >= want:
                break
            rgb = decode_rgb(s.path)
            if rgb is None:
                continue
            found = find_patch(rgb, _rng_for(s.key(), seed), params)
            if found is None:
                continue
            x, y, side = found
            plan.append(Patch(source=s.path, split=split, x=x, y=y, side=side))
            got += 1
            bar.update(1)
        bar.close()
        if got < want:
            log.warning("background: only %d of %d %s patches found (photos too full of plants)", got, want, split)
    return plan


def cut_patch(patch: Patch, size: int, mode: str = "center_crop") -> np.ndarray:
    rgb = decode_rgb(patch.source)
    if rgb is None:
        raise DataError(f"{patch.source} can no longer be decoded", "rebuild the background patches")
    crop = rgb[patch.y : patch.y + patch.side, patch.x : patch.x + patch.side]
    return resize_rgb(np.ascontiguousarray(crop), size, mode)


def patch_counts(samples: Sequence[Sample], fraction: float) -> dict[str, int]:
    """Patches per split: ``fraction`` x the mean photos per class in that split."""
    out = {}
    labels = sorted({s.label for s in samples})
    for split in SPLITS:
        n = sum(1 for s in samples if s.split == split)
        out[split] = int(round(fraction * n / max(1, len(labels))))
    return out


def write_patches(plan: Sequence[Patch], out_dir: Path, size: int, mode: str = "center_crop", meta: dict | None = None) -> Path:
    """Write ``out_dir/<split>/background/<name>.png`` plus ``patches.csv`` and ``background.json``."""
    import cv2

    out_dir = Path(out_dir)
    rows = []
    for i, p in enumerate(plan):
        folder = out_dir / p.split / BACKGROUND
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{p.source.parent.name}_{p.source.stem}_bg.png"
        img = cut_patch(p, size, mode)
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append(
            {"path": f"{p.split}/{BACKGROUND}/{name}", "split": p.split, "source": str(p.source), "x": p.x, "y": p.y, "side": p.side}
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "patches.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "split", "source", "x", "y", "side"])
        w.writeheader()
        w.writerows(rows)
    (out_dir / "background.json").write_text(json.dumps({"size": size, "resize": mode, **(meta or {})}, indent=2) + "\n")
    return out_dir / "patches.csv"


def read_patches(patches_csv: Path) -> list[Patch]:
    """Read a ``patches.csv`` written by :func:`write_patches`."""
    patches_csv = Path(patches_csv)
    if not patches_csv.is_file():
        raise DataError(f"{patches_csv} does not exist", "run `weed-train background` first or use --background auto")
    with patches_csv.open(newline="") as fh:
        return [
            Patch(source=Path(r["source"]), split=r["split"], x=int(r["x"]), y=int(r["y"]), side=int(r["side"]))
            for r in csv.DictReader(fh)
        ]


def check_patch_splits(plan: Sequence[Patch], samples: Sequence[Sample]) -> None:
    """Refuse patches whose source photo sits in another split now (a leak)."""
    split_of = {str(s.path.resolve()): s.split for s in samples}
    for p in plan:
        now = split_of.get(str(Path(p.source).resolve()))
        if now is not None and now != p.split:
            raise DataError(
                f"background patch from {p.source} is in {p.split} but its photo is now in {now}",
                "rebuild the patches with the same --seed/--val/--test as training (or use --background auto)",
            )
