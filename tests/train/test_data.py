"""Listing, roles, corrupt files and the group-aware split (no TensorFlow needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import re
import cv2
import numpy as np
import pytest

from train import data as d

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"


def _samples(n_classes=4, per_class=30, group_size=3):
    out = []
    for c in range(n_classes):
        for i in range(per_class):
            out.append(d.Sample(path=Path(f"/x/c{c}/{i}.jpg"), label=f"c{c}", group=f"c{c}-g{i // group_size}"))
    return out


def test_split_keeps_groups_whole_and_is_stratified():
    samples = _samples()
    split = d.split_samples(samples, 0.15, 0.15, seed=7)
    assert len(split) == len(samples)
    assert d.check_group_leaks(split) == []
    where = {}
    for s in split:
        where.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in where.values())
    counts = Counter((s.label, s.split) for s in split)
    for c in range(4):  # every class in every split
        assert all(counts[(f"c{c}", sp)] > 0 for sp in d.SPLITS)
    frac_test = sum(s.split == "test" for s in split) / len(split)
    assert 0.08 < frac_test < 0.25


def test_split_is_reproducible_and_order_independent():
    samples = _samples()
    a = d.split_samples(samples, seed=3)
    b = d.split_samples(list(reversed(samples)), seed=3)
    assert {(str(s.path), s.split) for s in a} == {(str(s.path), s.split) for s in b}
    c = d.split_samples(samples, seed=4)
    assert {(str(s.path), s.split) for s in a} != {(str(s.path), s.split) for s in c}


def test_real_groups_never_straddle_splits():
    samples = d.scan_folder(PHOTOS)
    groups = d.read_groups(PHOTOS / "groups.csv", PHOTOS)
    # make two photos near-duplicates of each other to see them kept together
    first = samples[0].path.relative_to(PHOTOS).as_posix()
    second = samples[1].path.relative_to(PHOTOS).as_posix()
    groups[str((PHOTOS / second).resolve())] = groups[first]
    s = d.attach_groups(samples, groups, PHOTOS)
    assert s[0].group == s[1].group
    split = d.split_samples(s, 0.25, 0.25, seed=1)
    assert d.check_group_leaks(split) == []
    by_path = {x.path: x.split for x in split}
    assert by_path[samples[0].path] == by_path[samples[1].path]


def test_photos_without_group_get_their_own():
    s = d.attach_groups([d.Sample(Path("/a/x/1.jpg"), "x")], {}, None)
    assert s[0].group == "photo:x/1.jpg"


def test_roles_from_file_and_flags(tmp_path):
    roles = d.read_roles(["maize", "fat_hen", "background"], PHOTOS / "classes.csv")
    assert roles.weed == ("fat_hen",) and roles.crop == ("maize",) and roles.background == ("background",)
    roles = d.read_roles(["a", "b", "soil"], weeds=["a"], background=["soil"])
    assert roles == d.Roles(weed=("a",), crop=("b",), background=("soil",))
    with pytest.raises(d.DataError, match="no class is marked as a weed"):
        d.read_roles(["a", "b"])
    bad = tmp_path / "roles.csv"
    bad.write_text("class,role\na,tree\n")
    with pytest.raises(d.DataError, match="use weed, crop or background"):
        d.read_roles(["a"], bad)


def test_corrupt_and_non_image_files_are_reported_and_skipped(tmp_path, caplog):
    (tmp_path / "weedy").mkdir()
    good = tmp_path / "weedy" / "ok.png"
    cv2.imwrite(str(good), np.full((20, 20, 3), 90, np.uint8))
    (tmp_path / "weedy" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "weedy" / "empty.png").write_bytes(b"")
    (tmp_path / "weedy" / "notes.txt").write_text("hello")
    samples = d.scan_folder(tmp_path)
    assert sorted(s.path.name for s in samples) == ["broken.jpg", "empty.png", "ok.png"]
    rep = d.check_images(samples, progress=False)
    assert [s.path.name for s in rep.good] == ["ok.png"]
    assert sorted(p.name for p, _ in rep.corrupt) == ["broken.jpg", "empty.png"]
    assert "broken.jpg" in caplog.text


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small PNG file whose header declares ``width`` x ``height`` pixels (its data is not that)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    return path


def test_a_photo_declaring_more_pixels_than_opencv_decodes_is_skipped(tmp_path, caplog):
    """OpenCV refuses a header of more than 2^30 pixels with cv2.error (before allocating): not a decodable image."""
    (tmp_path / "weedy").mkdir()
    cv2.imwrite(str(tmp_path / "weedy" / "ok.png"), np.full((20, 20, 3), 90, np.uint8))
    huge = png_declaring(tmp_path / "weedy" / "huge.png", 100_000, 100_000)
    assert d.decode_rgb(huge) is None
    rep = d.check_images(d.scan_folder(tmp_path), progress=False)
    assert [s.path.name for s in rep.good] == ["ok.png"] and rep.corrupt == ((huge, "not a decodable image"),)
    assert f"skipping {huge}: not a decodable image" in caplog.text


def test_csv_listing(tmp_path):
    (tmp_path / "p.png").write_bytes(b"")
    f = tmp_path / "list.csv"
    f.write_text("path,label\np.png,weed_a\n")
    s = d.scan_csv(f)
    assert s == [d.Sample(path=tmp_path / "p.png", label="weed_a")]


def test_missing_data_folder_says_how_to_fix(tmp_path):
    with pytest.raises(d.DataError, match="one sub-folder per class"):
        d.scan_folder(tmp_path / "nope")


def test_resize_matches_the_edge_runtime():
    from edge.inference.preprocess import Preprocessor

    rgb = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    ours = d.resize_rgb(rgb, 48, "center_crop")
    edge = Preprocessor(48, 48, "center_crop", "RGB", np.uint8)(rgb, "RGB")[0]
    assert np.array_equal(ours, edge)


def test_class_weights_are_balanced():
    y = np.array([0] * 30 + [1] * 10)
    w = d.class_weights(y, 3)
    assert w[0] == pytest.approx(40 / (2 * 30)) and w[1] == pytest.approx(40 / (2 * 10)) and w[2] == 1.0


@pytest.mark.parametrize("rows, words", [
    ("class,role\na,weed\nb,crop\na,crop\n", "gives 'a' two roles (weed, crop)"),
    (None, "is not a file"),  # a folder given for the CSV
])
def test_a_roles_file_that_cannot_be_meant_is_refused(rows, words, tmp_path):
    path = tmp_path / "roles.csv"
    path.mkdir() if rows is None else path.write_text(rows)
    with pytest.raises(d.DataError, match=re.escape(words)):
        d.read_roles(["a", "b"], path)


def test_a_repeated_identical_roles_row_is_harmless(tmp_path):
    path = tmp_path / "roles.csv"
    path.write_text("class,role\na,weed\nb,crop\na,weed\n")
    assert d.read_roles(["a", "b"], path).weed == ("a",)
