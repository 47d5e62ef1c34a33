"""The perturbation functions (train.perturb), table-driven: shape, dtype, seeds, strength 0, what each does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train import perturb as P

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"

# (function, the suite's strength at a 160-px input, draws from the seed)
FUNCTIONS = [
    (P.gaussian_blur, 1.5, False),
    (P.motion_blur, 9.0, True),
    (P.sensor_noise, 8.0, True),
    (P.shift, 40.0, True),
    (P.zoom_out, 0.3, True),  # the ground mosaic's windows and turns
    (P.warm_cast, 0.25, False),
    (P.darken, 0.4, False),
    (P.jpeg, 75.0, False),
    # the other conditions (P.OTHER)
    (P.saturate, 0.5, False),
    (P.haze, 0.4, False),
    (P.soil_gains, 0.15, False),
    (P.chroma_shift, 3.0, True),  # the direction
    (P.low_light, 7.0, True),  # the smear's direction and the noise
    (P.harsh_sun, 0.45, False),
    (P.row_noise, 11.0, True),
    (P.zoom_in, 0.8, False),
]
IDS = [f.__name__ for f, _, _ in FUNCTIONS]


def _photo(size: int = 160) -> np.ndarray:
    """A real seedling photo (a charlock on gravel) at the model's input size."""
    from train.data import load_rgb

    return load_rgb(sorted((PHOTOS / "charlock").glob("*.jpg"))[0], size)


def _scene(h: int = 160, w: int = 160, plant: tuple[int, int, int, int] | None = (60, 60, 40, 40), seed: int = 0) -> np.ndarray:
    """Brown gravel-like noise with a green square 'plant' at (x, y, w, h)."""
    rng = np.random.default_rng(seed)
    shade = rng.normal(1.0, 0.2, (h, w, 1))  # stones lighter and darker, the same brown hue
    img = np.clip(np.array([130, 95, 70]) * shade + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    if plant is not None:
        x, y, pw, ph = plant
        img[y:y + ph, x:x + pw] = (40, 160, 30)
    return img


def _green(img: np.ndarray) -> np.ndarray:
    f = img.astype(int)
    return f[..., 1] - (f[..., 0] + f[..., 2]) // 2 > 60  # the square's green, not gravel


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("fn, strength, seeded", FUNCTIONS, ids=IDS)
@pytest.mark.parametrize("shape", [(160, 160), (48, 64)])
def test_shape_and_dtype_kept_input_untouched(fn, strength, seeded, shape):
    img = _scene(*shape, plant=(10, 10, 12, 12))
    before = img.copy()
    out = fn(img, strength, seed=7)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)


@pytest.mark.parametrize("fn, strength, seeded", FUNCTIONS, ids=IDS)
def test_deterministic_for_a_seed(fn, strength, seeded):
    img = _photo()
    assert np.array_equal(fn(img, strength, seed=3), fn(img, strength, seed=3))
    assert np.array_equal(fn(img, strength, seed=(3, 1)), fn(img, strength, seed=(3, 1)))
    other = fn(img, strength, seed=4)
    # a random direction, noise or mosaic differs with the seed; the others ignore it
    assert np.array_equal(fn(img, strength, seed=3), other) is (not seeded)


@pytest.mark.parametrize("fn, strength, seeded", FUNCTIONS + [(P.identity, 0.0, False)], ids=IDS + ["identity"])
def test_strength_zero_is_the_identity(fn, strength, seeded):
    img = _photo()
    out = fn(img, 0.0, seed=11)
    assert np.array_equal(out, img) and out is not img


@pytest.mark.parametrize("fn, strength, seeded", FUNCTIONS, ids=IDS)
def test_changes_the_image_at_the_named_strength(fn, strength, seeded):
    img = _photo()
    out = fn(img, strength, seed=5)
    assert np.abs(out.astype(int) - img).mean() > 0.5


@pytest.mark.parametrize("fn, bad", [(P.gaussian_blur, -1.0), (P.sensor_noise, float("nan")), (P.darken, 1.5),
                                      (P.zoom_out, 1.0), (P.haze, 1.5), (P.harsh_sun, 1.0),
                                      (P.saturate, 1.5)])
def test_out_of_range_strengths_are_refused(fn, bad):
    with pytest.raises(ValueError):
        fn(_photo(32), bad)


def test_blurs_remove_detail():
    img = _photo()
    detail = lambda x: cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    for fn, s in ((P.gaussian_blur, 1.5), (P.motion_blur, 9.0)):
        assert detail(fn(img, s, seed=1)) < 0.5 * detail(img), fn.__name__


def test_motion_blur_smears_along_its_direction_only():
    # stripes that change along y only: a smear along x leaves them (away from nothing), one along y wipes them
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[::4] = 255
    along_x = P.motion_blur(stripes, 9.0, angle_deg=0.0)
    along_y = P.motion_blur(stripes, 9.0, angle_deg=90.0)
    assert np.array_equal(along_x, stripes)
    assert along_y.std() < 0.3 * stripes.std()


@pytest.mark.parametrize("length, angle", [(9.0, 0.0), (9.0, 33.0), (1.8, 90.0), (0.4, 120.0)])
def test_motion_kernel_is_a_normalised_segment_of_that_length(length, angle):
    k = P.motion_kernel(length, angle).astype(np.float64)
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and (k >= 0).all()
    r = k.shape[0] // 2
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
    # rms displacement: L / sqrt(12) for a uniform segment, plus at most the bilinear splat's 1/6 px^2
    spread = np.sqrt((k * (xs ** 2 + ys ** 2)).sum())
    assert 0.95 * length / np.sqrt(12) <= spread <= 1.05 * np.sqrt(length ** 2 / 12 + 1 / 6)
    if angle == 0.0:  # a horizontal smear: the 9 taps of a box, its end taps shared with their neighbours
        row = k[r]
        assert np.allclose(row[r - 3:r + 4], 1 / 9, atol=1e-6) and row[r - 4] == pytest.approx(0.875 / 9, abs=1e-6)
        assert k.sum() == pytest.approx(row.sum())


def test_sensor_noise_has_the_named_sigma_and_no_bias():
    grey = np.full((200, 200, 3), 128, np.uint8)
    diff = P.sensor_noise(grey, 8.0, seed=2).astype(float) - 128
    assert diff.std() == pytest.approx(8.0, rel=0.03) and abs(diff.mean()) < 0.2


def test_shift_moves_the_plant_and_the_ground_continues():
    img = _scene()
    for seed in range(6):
        out = P.shift(img, 40.0, seed=seed)
        moved = _centroid(_green(out)) - _centroid(_green(img))
        assert np.hypot(*moved) == pytest.approx(40.0, abs=1.0)
        assert _green(out).sum() == _green(img).sum()  # the plant is whole, none pasted into the uncovered ground
        # what came into view is more of the gravel: no black border, the same mean colour
        assert np.abs(out.mean(axis=(0, 1)) - img.mean(axis=(0, 1))).max() < 3 and out.sum(axis=2).min() > 0
    assert P.ground_windows(img).kind == "bare ground"


def test_shift_does_not_mirror_a_plant_at_the_border_into_view():
    img = _scene(plant=(0, 60, 30, 40))  # a plant touching the left border
    right = 0
    for seed in range(12):
        out = P.shift(img, 40.0, seed=seed)
        if _centroid(_green(out))[0] > _centroid(_green(img))[0] + 20:  # moved right: all of it still in view
            right += 1
            assert _green(out).sum() == _green(img).sum()  # a mirrored border would show it twice
    assert right >= 3


def test_zoom_out_shrinks_the_plant_about_the_centre_with_ground_all_round():
    img = _scene(plant=(50, 50, 60, 60))
    out = P.zoom_out(img, 0.3, seed=0)
    assert _green(out).sum() == pytest.approx(0.49 * _green(img).sum(), rel=0.08)
    assert _centroid(_green(out)) == pytest.approx(_centroid(_green(img)), abs=1.5)
    border = np.ones((160, 160), bool)
    border[24:136, 24:136] = False  # outside the 112-px view the scene shrank into
    assert not _green(out)[border].any()
    assert np.abs(out[border].mean(axis=0) - img.mean(axis=(0, 1))).max() < 25  # the same gravel colour


def test_a_photo_without_plant_free_ground_is_mirrored():
    full = _scene(plant=(0, 0, 160, 160))  # all plant
    assert P.ground_windows(full) == P.Ground(0, [], "mirrored")
    assert np.array_equal(P.shift(full, 40.0, seed=1), full)  # a uniform plant mirrored is the same plant
    assert P.ground_mosaic(full, 20, 20) is None


def test_ground_mosaic_prefers_bare_ground_over_a_white_tray():
    img = _scene(plant=(60, 60, 40, 40))
    img[:50] = 230  # a white tray wall across the top: plant-free, but not ground
    g = P.ground_windows(img)
    assert g.kind == "bare ground" and all(y >= 50 for _, y in g.corners)
    mosaic = P.ground_mosaic(img, 100, 100, seed=3)
    assert mosaic.shape == (100, 100, 3) and (mosaic.max(axis=2) < 225).mean() > 0.99


@pytest.mark.parametrize("grey, fn, strength, expected", [
    (100, P.warm_cast, 0.25, (125, 100, 80)),
    (200, P.warm_cast, 0.25, (250, 200, 160)),
    (250, P.warm_cast, 0.25, (255, 250, 200)),  # clipped, not wrapped
    (200, P.darken, 0.4, (120, 120, 120)),
    (101, P.darken, 0.5, (50, 50, 50)),  # 50.5 rounds to even
])
def test_colour_and_exposure_gains(grey, fn, strength, expected):
    out = fn(np.full((4, 4, 3), grey, np.uint8), strength)
    assert tuple(int(v) for v in out[0, 0]) == expected


def test_jpeg_quality_25_loses_more_than_quality_90():
    img = _photo()
    err = lambda s: np.abs(P.jpeg(img, s).astype(int) - img).mean()  # noqa: E731
    assert 0 < err(10.0) < err(75.0)


@pytest.mark.parametrize("name, at_160, at_32", [
    ("gaussian_blur", 1.5, 0.3), ("motion_blur", 9.0, 1.8), ("sensor_noise", 8.0, 8.0), ("shift", 40.0, 8.0),
    ("zoom_out", 0.3, 0.3), ("warm_cast", 0.25, 0.25), ("dark", 0.4, 0.4), ("jpeg", 75.0, 75.0), ("clean", 0.0, 0.0),
])
def test_suite_strengths_are_at_a_160_px_input_and_scale_with_the_side(name, at_160, at_32):
    row = {p.name: p for p in P.SUITE}[name]
    assert row.strength_at(160) == pytest.approx(at_160) and row.strength_at(32) == pytest.approx(at_32)
    img = _photo(32)
    assert np.array_equal(row.apply(img, seed=1), row.fn(img, at_32, 1))


def test_saturation_and_haze_keep_grey_and_soil_gains_keep_the_plant():
    grey = np.full((16, 16, 3), 90, np.uint8)
    assert np.array_equal(P.saturate(grey, 0.75, vivid=True), grey) and np.array_equal(P.saturate(grey, 0.5), grey)
    img = _photo()
    chroma = lambda x: np.abs(x.astype(float) - x.mean(axis=2, keepdims=True)).mean()  # noqa: E731
    assert chroma(P.saturate(img, 0.5)) < chroma(img) < chroma(P.saturate(img, 0.75, vivid=True))
    assert np.all(P.haze(grey, 0.5, level=240.0) == 165)  # 90 * 0.5 + 240 * 0.5
    scene = _scene()
    out = P.soil_gains(scene, 0.15)
    inside = (slice(64, 96), slice(64, 96))  # the plant square, away from its softened edge
    assert np.array_equal(out[inside], scene[inside])
    soil = scene[:40, :40].astype(float).mean((0, 1)), out[:40, :40].astype(float).mean((0, 1))
    assert soil[1][0] < soil[0][0] and soil[1][2] > soil[0][2]  # bluer: red down, blue up
    redder = P.soil_gains(scene, 0.15, blue=False)[:40, :40].astype(float).mean((0, 1))
    assert redder[0] > soil[0][0] and redder[2] < soil[0][2]


def test_chroma_shift_moves_red_and_blue_but_not_green():
    img = _photo()
    out = P.chroma_shift(img, 3.0, seed=2)
    assert np.array_equal(out[..., 1], img[..., 1])
    assert not np.array_equal(out[..., 0], img[..., 0]) and not np.array_equal(out[..., 2], img[..., 2])


def test_other_conditions_are_named_once_and_start_with_clean():
    names = [p.name for p in P.OTHER]
    assert names[0] == "clean" and len(set(names)) == len(names)
    assert not (set(names) - {"clean"}) & {p.name for p in P.SUITE}  # a row's key means one condition
    img = _photo()
    for row in P.OTHER[1:]:
        assert np.abs(row.apply(img, seed=1).astype(int) - img).mean() > 0.5, row.name
