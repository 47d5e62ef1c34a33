"""Background patches: excess-green mask, plant-free windows, per-split sourcing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train import background as bg
from train import data as d

GRAVEL = (140, 120, 100)  # RGB, brownish grey
LEAF = (60, 150, 40)


def _photo(size=150, blob=None):
    img = np.empty((size, size, 3), np.uint8)
    img[:] = GRAVEL
    img += np.random.default_rng(0).integers(0, 20, img.shape[:2], dtype=np.uint8)[..., None]  # grey texture
    if blob is not None:
        cx, cy, r = blob
        cv2.circle(img, (cx, cy), r, LEAF, -1)
    return img


def test_plant_mask_finds_green_only():
    img = _photo(blob=(40, 40, 20))
    mask = bg.plant_mask(img, dilate_px=0)
    assert mask[40, 40] and not mask[120, 120]
    assert 0.03 < mask.mean() < 0.08  # ~ pi*20^2 / 150^2
    grown = bg.plant_mask(img, dilate_px=7)
    assert grown.sum() > mask.sum() and grown[40, 64]  # 24 px from centre: inside the dilation


def test_patch_avoids_the_plant():
    img = _photo(blob=(40, 40, 25))
    x, y, side = bg.find_patch(img, np.random.default_rng(1))
    assert side >= 40
    mask = bg.plant_mask(img, dilate_px=0)
    assert not mask[y : y + side, x : x + side].any()


def test_no_patch_when_the_photo_is_all_plant():
    img = np.empty((150, 150, 3), np.uint8)
    img[:] = LEAF
    assert bg.find_patch(img, np.random.default_rng(0)) is None


def test_free_windows_counts_exactly():
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True
    wins = bg.free_windows(mask, 5, 5)
    assert sorted(wins) == [(0, 5), (5, 0), (5, 5)]


def test_each_split_gets_patches_from_its_own_photos(tmp_path):
    samples = []
    for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
        p = tmp_path / "weed" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), cv2.cvtColor(_photo(blob=(30 + 10 * i, 40, 20)), cv2.COLOR_RGB2BGR))
        samples.append(d.Sample(p, "weed", group=str(i), split=split))
    plan = bg.plan_patches(samples, {"train": 3, "val": 1, "test": 2}, seed=5, progress=False)
    split_of = {s.path: s.split for s in samples}
    assert [p.split for p in plan].count("train") == 3
    assert all(split_of[src] == p.split for p in plan for src in p.sources)
    # the default mix: single windows and mosaics of several photos' windows
    train = [p for p in plan if p.split == "train"]
    assert [p.grid for p in train] == [1, 2, 3]
    assert len(set(train[1].sources)) == 4 and len(set(train[2].sources)) == 4  # every train photo
    # reproducible
    again = bg.plan_patches(list(reversed(samples)), {"train": 3, "val": 1, "test": 2}, seed=5, progress=False)
    assert sorted(plan, key=repr) == sorted(again, key=repr)
    # written at the model's input size, with an index
    csv_path = bg.write_patches(plan, tmp_path / "bg", 48)
    back = bg.read_patches(csv_path)
    assert back == plan
    files = sorted((tmp_path / "bg").rglob("*.png"))
    assert len(files) == len(plan) and cv2.imread(str(files[0])).shape == (48, 48, 3)
    # a patch whose photo moved to another split is refused
    moved = [d.Sample(s.path, s.label, s.group, "test" if s.split == "train" else s.split) for s in samples]
    with pytest.raises(d.DataError, match="rebuild the patches"):
        bg.check_patch_splits(back, moved)


def test_real_photos_give_background_patches():
    photos = Path(__file__).resolve().parent.parent / "data" / "photos"
    found = 0
    for p in sorted(photos.glob("*/*.jpg")):
        rgb = d.decode_rgb(p)
        hit = bg.find_patch(rgb, np.random.default_rng(0))
        if hit:
            x, y, side = hit
            found += 1
            assert not bg.plant_mask(rgb)[y : y + side, x : x + side].any()
    assert found >= 3


def test_mosaic_tiles_turned_windows_from_several_photos(tmp_path):
    a, b = np.zeros((60, 60, 3), np.uint8), np.zeros((60, 60, 3), np.uint8)
    a[:] = (100, 90, 80)
    a[0, 0] = (255, 0, 0)  # a marker in the window's top-left corner
    b[:] = (30, 30, 30)
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    for p, img in ((pa, a), (pb, b)):
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    pieces = (bg.Piece(pa, 0, 0, 20), bg.Piece(pb, 0, 0, 20), bg.Piece(pb, 5, 5, 20), bg.Piece(pa, 0, 0, 20, turn=5))
    out = bg.Patch(split="train", pieces=pieces, grid=2).render()
    assert out.shape == (40, 40, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[5, 25]) == (30, 30, 30)
    # turn 5 = a quarter turn counter-clockwise (top-left -> bottom-left), then mirrored left-right
    # (bottom-left -> bottom-right)
    cell = out[20:, 20:]
    assert tuple(cell[19, 19]) == (255, 0, 0) and int((cell == (255, 0, 0)).all(axis=2).sum()) == 1
    with pytest.raises(ValueError, match="needs 4 pieces"):
        bg.Patch(split="train", pieces=pieces[:3], grid=2)


def test_first_format_index_still_reads(tmp_path):
    (tmp_path / "patches.csv").write_text("path,split,source,x,y,side\ntrain/background/a.png,train,/x/a.jpg,1,2,50\n")
    (p,) = bg.read_patches(tmp_path / "patches.csv")
    assert p.grid == 1 and p.pieces == (bg.Piece(Path("/x/a.jpg"), 1, 2, 50),)


def test_mosaic_windows_avoid_rulers_and_tray_walls():
    img = _photo()
    img[:, :75] = (250, 250, 250)  # a white ruler / tray wall over the left half
    rng = np.random.default_rng(3)
    for _ in range(5):
        x, y, side = bg.find_piece(img, rng)
        assert x >= 75 - 1  # only the gravel half
    assert bg.find_piece(img, rng, bg.PatchParams(ground_only=False)) is not None
    img[:, 75:] = (250, 250, 250)
    assert bg.find_piece(img, rng) is None
