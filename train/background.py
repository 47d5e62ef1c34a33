"""A "background" (bare soil / gravel, no plant) class cut from the plant photos themselves.

A real camera mostly sees bare ground, which must never fire a valve. For each photo an
excess-green vegetation mask (ExG = 2g - r - b on chromaticity coordinates, Woebbecke et
al. 1995; the runtime's vegetation gate uses the same index: ``edge.inference.vegetation``)
marks plant pixels; the mask is dilated so thin leaves and their edges are avoided, and a
square window with no plant pixel at all is cut out and resized to the model's input size
(exactly as the runtime resizes a frame). Some patches are mosaics of small windows from
several photos instead (see :class:`Patch`): ground seen from a
camera's height. Patches of a split come only
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
from typing import Callable, Sequence

import numpy as np

from edge.inference.vegetation import vegetation_mask
from train.augment import EXG_THRESHOLD
from train.data import BACKGROUND, SPLITS, DataError, Sample, decode_rgb, resize_rgb

log = logging.getLogger(__name__)

# Window side, as a fraction of the photo's shorter side, tried from large to small.
DEFAULT_SCALES = (0.75, 0.6, 0.5, 0.4, 0.33)


@dataclass(frozen=True)
class PatchParams:
    exg_threshold: float = EXG_THRESHOLD  # chromatic ExG above this is "plant" (plants here reach 0.3-0.8)
    dilate_px: int = 7  # grow the plant mask by this many pixels before looking for free windows
    scales: tuple[float, ...] = DEFAULT_SCALES
    min_side_px: int = 40  # never cut a window smaller than this (in photo pixels)
    stride_fraction: float = 0.125  # window positions are tried on a grid of this fraction of its side
    grids: tuple[int, ...] = (1, 2, 3, 3)  # the j-th patch of a split is a grids[j % len] square mosaic
    piece_scale: float = 0.33  # side of a mosaic's windows, as a fraction of the photo's shorter side
    ground_only: bool = True  # mosaic windows: ground only (no tray wall, ruler, deep shadow)


@dataclass(frozen=True)
class Piece:
    """A plant-free square window of one photo, turned by ``turn`` (0-3 quarter turns, +4 mirrored)."""

    source: Path
    x: int
    y: int
    side: int
    turn: int = 0

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        out = rgb[self.y : self.y + self.side, self.x : self.x + self.side]
        out = np.rot90(out, self.turn % 4)
        if self.turn >= 4:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


@dataclass(frozen=True)
class Patch:
    """A background image: one plant-free window, or a ``grid`` x ``grid`` mosaic of them.

    A photo here is a close-up (a few cm of ground); a field camera sees tens of cm, where
    gravel looks finer and busier. Mosaics of small windows from several photos stand in
    for that wider view, so bare ground seen from a boom is background too.
    """

    split: str
    pieces: tuple[Piece, ...]
    grid: int = 1

    def __post_init__(self):
        if len(self.pieces) != self.grid * self.grid:
            raise ValueError(f"a {self.grid}x{self.grid} patch needs {self.grid ** 2} pieces, got {len(self.pieces)}")

    @property
    def source(self) -> Path:
        """The first piece's photo (names and split checks; all pieces share the split)."""
        return self.pieces[0].source

    @property
    def sources(self) -> tuple[Path, ...]:
        return tuple(p.source for p in self.pieces)

    def render(self, decode: Callable[[Path], np.ndarray | None] | None = None) -> np.ndarray:
        """The patch in photo pixels (a mosaic's cells all take the smallest piece's side)."""
        import cv2

        decode = decode or decode_rgb
        cell = min(p.side for p in self.pieces)
        crops = []
        for p in self.pieces:
            rgb = decode(p.source)
            if rgb is None:
                raise DataError(f"{p.source} can no longer be decoded", "rebuild the background patches")
            c = p.crop(rgb)
            if c.shape[0] != cell:
                c = cv2.resize(c, (cell, cell), interpolation=cv2.INTER_AREA)
            crops.append(c)
        if self.grid == 1:
            return crops[0]
        rows = [np.concatenate(crops[r * self.grid : (r + 1) * self.grid], axis=1) for r in range(self.grid)]
        return np.ascontiguousarray(np.concatenate(rows, axis=0))


def plant_mask(rgb: np.ndarray, threshold: float = 0.05, dilate_px: int = 7) -> np.ndarray:
    """Boolean HxW mask of plant pixels (chromatic excess green above ``threshold``: the project's one
    vegetation index, ``edge.inference.vegetation``), dilated by ``dilate_px``."""
    import cv2

    mask = vegetation_mask(rgb, threshold).astype(np.uint8)
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


def ground_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of pixels that are not bare ground: smooth surfaces (tray walls,
    labels), near-black (shadows, tray edges) and near-white (barcode rulers)."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    local_var = cv2.blur(gray * gray, (7, 7)) - cv2.blur(gray, (7, 7)) ** 2
    return (local_var < 6.0) | (gray < 40) | (gray > 235)


def find_piece(rgb: np.ndarray, rng: np.random.Generator, params: PatchParams = PatchParams()) -> tuple[int, int, int] | None:
    """(x, y, side) of a random plant-free window of the mosaic size, or None.

    With ``params.ground_only`` the window must also be bare ground (at most 3 % of its
    pixels smooth, near-black or near-white), so a mosaic looks like a stretch of field.
    """
    mask = plant_mask(rgb, params.exg_threshold, params.dilate_px)
    side = max(params.min_side_px, int(round(params.piece_scale * min(mask.shape))))
    cands = free_windows(mask, side, max(1, int(round(side * params.stride_fraction))))
    if cands and params.ground_only:
        other = np.pad(ground_mask(rgb).astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        limit = 0.03 * side * side
        cands = [(x, y) for x, y in cands
                 if other[y + side, x + side] - other[y, x + side] - other[y + side, x] + other[y, x] <= limit]
    if not cands:
        return None
    x, y = cands[int(rng.integers(len(cands)))]
    return x, y, side


def plan_patches(
    samples: Sequence[Sample],
    per_split: dict[str, int],
    seed: int = 42,
    params: PatchParams = PatchParams(),
    progress: bool = True,
) -> list[Patch]:
    """Choose up to ``per_split[split]`` patches for each split, from that split's photos.

    Photos are visited in an order fixed by the seed and their names. A single-window patch
    takes the largest plant-free window of the next photo (each photo gives at most one);
    a mosaic takes one small window from each of the next photos of a second stream, each
    turned and mirrored at random, so one mosaic mixes several photos' ground.
    """
    from tqdm.auto import tqdm

    plan: list[Patch] = []
    for split in SPLITS:
        want = per_split.get(split, 0)
        if want <= 0:
            continue
        pool = [s for s in samples if s.split == split]
        pool.sort(key=lambda s: _rng_for(s.key(), seed).integers(1 << 62))
        singles = _single_windows(pool, seed, params)
        pieces = _mosaic_pieces(pool, seed, params)
        got = 0
        bar = tqdm(total=want, desc=f"background {split}", unit="patch", disable=not progress, leave=False)
        for j in range(want):
            grid = params.grids[j % len(params.grids)]
            if grid == 1:
                one = next(singles, None)
                if one is None:
                    continue
                plan.append(Patch(split=split, pieces=(one,), grid=1))
            else:
                cells = [p for p in (next(pieces, None) for _ in range(grid * grid)) if p is not None]
                if len(cells) < grid * grid:
                    continue
                plan.append(Patch(split=split, pieces=tuple(cells), grid=grid))
            got += 1
            bar.update(1)
        bar.close()
        if got < want:
            log.warning("background: only %d of %d %s patches found (photos too full of plants)", got, want, split)
    return plan


def _single_windows(pool: Sequence[Sample], seed: int, params: PatchParams):
    for s in pool:
        rgb = decode_rgb(s.path)
        if rgb is None:
            continue
        found = find_patch(rgb, _rng_for(s.key(), seed), params)
        if found is not None:
            yield Piece(s.path, *found)


def _mosaic_pieces(pool: Sequence[Sample], seed: int, params: PatchParams, max_rounds: int = 8):
    """Small windows, one per photo per round, in reverse pool order (unlike the singles)."""
    for r in range(max_rounds):
        any_found = False
        for s in reversed(pool):
            rgb = decode_rgb(s.path)
            if rgb is None:
                continue
            rng = _rng_for(f"{s.key()}:mosaic:{r}", seed)
            found = find_piece(rgb, rng, params)
            if found is not None:
                any_found = True
                yield Piece(s.path, *found, turn=int(rng.integers(8)))
        if not any_found:
            return


def cut_patch(patch: Patch, size: int, mode: str = "center_crop") -> np.ndarray:
    return resize_rgb(patch.render(), size, mode)


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
        kind = "bg" if p.grid == 1 else f"mosaic{p.grid}"
        name = f"{p.source.parent.name}_{p.source.stem}_{kind}_{i:04d}.png"
        img = cut_patch(p, size, mode)
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"path": f"{p.split}/{BACKGROUND}/{name}", "split": p.split, "grid": p.grid,
                     "pieces": json.dumps([[str(c.source), c.x, c.y, c.side, c.turn] for c in p.pieces])})
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "patches.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "split", "grid", "pieces"])
        w.writeheader()
        w.writerows(rows)
    (out_dir / "background.json").write_text(json.dumps({"size": size, "resize": mode, **(meta or {})}, indent=2) + "\n")
    return out_dir / "patches.csv"


def read_patches(patches_csv: Path) -> list[Patch]:
    """Read a ``patches.csv`` written by :func:`write_patches`."""
    patches_csv = Path(patches_csv)
    if not patches_csv.is_file():
        raise DataError(f"{patches_csv} does not exist", "run `weed-train background` first or use --background auto")
    from train.data import _csv_rows

    _, rows = _csv_rows(patches_csv, "patches file", csv.DictReader)  # UTF-8, the field limit: one-line errors
    patches = []
    for line, r in enumerate(rows, start=2):
        try:
            patches.append(_patch_from_row(r))
        except (KeyError, TypeError, ValueError, RecursionError) as e:  # a hand-edited or cut row
            raise DataError(f"patches file {patches_csv} line {line} is not a patch ({e.__class__.__name__}: {e})",
                            "run `weed-train background` again to rewrite it") from None
    return patches


def _patch_from_row(r: dict) -> Patch:
    if "pieces" in r:
        pieces = tuple(Piece(Path(src), int(x), int(y), int(side), int(turn)) for src, x, y, side, turn in json.loads(r["pieces"]))
        return Patch(split=r["split"], pieces=pieces, grid=int(r["grid"]))
    # the first format: one window per patch
    return Patch(split=r["split"], pieces=(Piece(Path(r["source"]), int(r["x"]), int(r["y"]), int(r["side"])),))


def check_patch_splits(plan: Sequence[Patch], samples: Sequence[Sample]) -> None:
    """Refuse patches whose source photo sits in another split now (a leak)."""
    split_of = {str(s.path.resolve()): s.split for s in samples}
    for p in plan:
        for src in p.sources:
            now = split_of.get(str(Path(src).resolve()))
            if now is not None and now != p.split:
                raise DataError(
                    f"background patch from {src} is in {p.split} but its photo is now in {now}",
                    "rebuild the patches with the same --seed/--val/--test as training (or use --background auto)",
                )
