"""Training augmentation (train.augment): each op on a tiny batch, composite tiles' labels,
augmentation on training batches only, and the --aug-... options reaching the pipeline.

Tiny batches (4-12 images of 32-48 px): the ops' contracts, not their looks or speed.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from train import augment as A  # noqa: E402
from train.augment import Augment  # noqa: E402

SIZE = 32


def _images(n: int = 4, size: int = SIZE, seed: int = 0) -> tf.Tensor:
    """Textured photos (a colour gradient plus noise) as float32 0..255."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 230, size, dtype=np.float32)
    base = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 90.0)], -1)
    return tf.constant(np.clip(base[None] + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.float32))


GROUND = tf.constant(np.full((4, SIZE, SIZE, 3), (120.0, 90.0, 60.0), np.float32))

# name, the op with (images, seed, strength), a strength that does something; strength 0 must be the identity
OPS = [
    ("motion_blur", lambda x, s, v: A.motion_blur(x, s, v, 1.0), 9.0),
    ("gaussian_blur", lambda x, s, v: A.gaussian_blur(x, s, v, 1.0), 1.5),
    ("sensor_noise", lambda x, s, v: A.sensor_noise(x, s, v, 1.0), 8.0),
    ("jpeg", lambda x, s, v: A.jpeg(x, s, int(v), 1.0), 25),
    ("exposure", lambda x, s, v: A.channel_gains(x, s, v, 0.0), 0.75),
    ("colour_cast", lambda x, s, v: A.channel_gains(x, s, 0.0, v), 0.25),
    ("gamma", lambda x, s, v: A.gamma(x, s, v), 0.25),
    ("contrast", lambda x, s, v: A.contrast(x, s, v), 0.15),
    ("saturation", lambda x, s, v: A.saturation(x, s, v), 0.6),
    ("haze", lambda x, s, v: A.haze(x, s, v, 1.0), 0.4),
    ("soil_cast", lambda x, s, v: A.soil_cast(x, s, v), 0.2),
    ("chroma_shift", lambda x, s, v: A.chroma_shift(x, s, v, 1.0), 3.0),
    ("low_light", lambda x, s, v: A.low_light(x, s, v, 8.0, 9.0), 1.0),
    ("flip", lambda x, s, v: A.geometry(x, GROUND, s, flip=bool(v)), 1),
    ("rotation", lambda x, s, v: A.geometry(x, GROUND, s, rotation=v), 0.5),
    ("scale", lambda x, s, v: A.geometry(x, GROUND, s, scale=(1.0 - v, 1.0 + v)), 0.4),
    ("translate", lambda x, s, v: A.geometry(x, GROUND, s, translate=v), 0.25),
    ("translate, no ground (mirrored)", lambda x, s, v: A.geometry(x, None, s, translate=v), 0.25),
]
SEED, OTHER = tf.constant([1, 2], tf.int64), tf.constant([3, 4], tf.int64)


@pytest.mark.parametrize("name,op,strength", OPS, ids=[o[0] for o in OPS])
def test_op_keeps_shape_dtype_range_repeats_for_a_seed_and_is_the_identity_at_0(name, op, strength):
    x = _images()
    out = op(x, SEED, strength)
    assert out.shape == x.shape and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    assert not np.array_equal(out.numpy(), x.numpy()), "the op changed nothing"
    np.testing.assert_array_equal(op(x, SEED, strength).numpy(), out.numpy())  # same seed, same images
    assert not np.array_equal(op(x, OTHER, strength).numpy(), out.numpy())  # another seed, others
    np.testing.assert_array_equal(op(x, SEED, 0).numpy(), x.numpy())


def test_camera_effects_reach_only_their_share_of_the_batch():
    x = _images(12)
    out = A.sensor_noise(x, SEED, 8.0, 0.5).numpy()
    changed = [not np.array_equal(o, i) for o, i in zip(out, x.numpy())]
    assert 0 < sum(changed) < 12
    np.testing.assert_array_equal(A.sensor_noise(x, SEED, 8.0, 0.0).numpy(), x.numpy())


def test_blur_kernels_sum_to_one_a_1_px_streak_is_the_identity_and_edges_are_not_darkened():
    length, angle = tf.constant([1.0, 9.0, 9.0]), tf.constant([0.3, 0.0, np.pi / 2])
    k = A.line_kernels(length, angle, 9).numpy()
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert k[0, 4, 4] == pytest.approx(1.0)  # length 1: the centre pixel only
    assert np.count_nonzero(k[1][4]) == 9 and np.count_nonzero(np.delete(k[1], 4, axis=0)) == 0  # horizontal
    assert np.count_nonzero(k[2][:, 4]) == 9  # vertical
    g = A.gaussian_kernels(tf.constant([0.0, 1.5]), 11).numpy()
    np.testing.assert_allclose(g.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert g[0, 5, 5] == pytest.approx(1.0)
    flat = tf.fill((2, SIZE, SIZE, 3), 200.0)  # reflect padding: a flat tile stays flat up to its border
    for blurred in (A.motion_blur(flat, SEED, 15.0, 1.0), A.gaussian_blur(flat, SEED, 3.0, 1.0)):
        np.testing.assert_allclose(blurred.numpy(), 200.0, atol=1e-3)


def test_colour_cast_and_exposure_stay_within_their_gains():
    grey = tf.fill((8, 4, 4, 3), 100.0)
    cast = A.channel_gains(grey, SEED, 0.0, 0.25).numpy()[:, 0, 0]
    assert np.all(cast[:, 1] == 100.0)  # green is the reference
    assert np.all((cast[:, [0, 2]] >= 100 / 1.25 - 1e-3) & (cast[:, [0, 2]] <= 125 + 1e-3))
    lit = A.channel_gains(grey, SEED, 0.75, 0.0).numpy()[:, 0, 0]
    assert np.all((lit >= 100 * 2 ** -0.75 - 1e-3) & (lit <= 100 * 2 ** 0.75 + 1e-3))
    assert np.allclose(lit[:, 0], lit[:, 1])  # exposure alone keeps the colour


def test_saturation_keeps_grey_and_scales_colour_about_it():
    grey = tf.fill((4, 4, 4, 3), 100.0)
    np.testing.assert_allclose(A.saturation(grey, SEED, 0.6).numpy(), 100.0, atol=1e-3)
    x = _images()
    out = A.saturation(x, SEED, 0.6).numpy()
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    inside = (out > 0.5).all(-1) & (out < 254.5).all(-1)  # pixels the clip left alone keep their grey
    np.testing.assert_allclose((out @ luma)[inside], (x.numpy() @ luma)[inside], atol=0.05)


def test_haze_pulls_toward_a_bright_level_and_soil_cast_leaves_the_plant():
    dark = tf.fill((8, 4, 4, 3), 20.0)
    veiled = A.haze(dark, SEED, 0.5, 1.0).numpy()
    assert np.all(veiled >= 20.0) and np.all(veiled <= 20 + 0.5 * 230 + 1e-3)
    leaf, soil = (40.0, 160.0, 40.0), (120.0, 90.0, 60.0)
    tile = np.tile(np.array(soil, np.float32), (4, 16, 16, 1))
    tile[:, 4:12, 4:12] = leaf
    out = A.soil_cast(tf.constant(tile), SEED, 0.3).numpy()
    np.testing.assert_allclose(out[:, 6:10, 6:10], np.broadcast_to(leaf, (4, 4, 4, 3)), atol=1e-3)  # the plant
    assert not np.allclose(out[:, 0, 0], soil)  # the ground took another colour
    assert np.all((out[:, 0, 0, 1] >= 90 / 1.3 - 1e-3) & (out[:, 0, 0, 1] <= 90 * 1.3 + 1e-3))


def test_chroma_shift_moves_red_and_blue_against_green():
    x = _images()
    out = A.chroma_shift(x, SEED, 3.0, 1.0).numpy()
    np.testing.assert_array_equal(out[..., 1], x.numpy()[..., 1])  # green is the reference
    assert not np.array_equal(out[..., 0], x.numpy()[..., 0]) and not np.array_equal(out[..., 2], x.numpy()[..., 2])
    flat = tf.fill((2, SIZE, SIZE, 3), 200.0)  # mirrored borders: a flat tile stays flat
    np.testing.assert_allclose(A.chroma_shift(flat, SEED, 3.0, 1.0).numpy(), 200.0, atol=1e-3)


def test_low_light_darkens_and_adds_noise_to_its_share_only():
    flat = tf.fill((12, SIZE, SIZE, 3), 200.0)
    out = A.low_light(flat, SEED, 0.5, 8.0, 9.0).numpy()
    hit = [not np.all(o == 200.0) for o in out]
    assert 0 < sum(hit) < 12
    dark = out[np.array(hit)]
    assert np.all(dark.mean(axis=(1, 2, 3)) < 200 * 0.75 + 2) and np.all(dark.std(axis=(1, 2, 3)) > 1.0)


def test_scale_leaves_ground_around_a_shrunk_photo():
    x = tf.fill((4, SIZE, SIZE, 3), 30.0)
    out = A.geometry(x, GROUND, SEED, scale=(0.6, 0.6)).numpy()
    assert np.allclose(out[:, 0, 0], (120, 90, 60)) and np.allclose(out[:, SIZE // 2, SIZE // 2], 30.0)


# --------------------------------------------------------------------------- composite tiles

WEED_RGB, CROP_RGB, SOIL_RGB = (30.0, 160.0, 40.0), (150.0, 200.0, 30.0), (120.0, 90.0, 60.0)
ROLES = np.array([0, 1, -1])  # class 0 a crop, 1 a weed, 2 background


def _disc_photos(size: int = 48) -> tuple[tf.Tensor, tf.Tensor]:
    """4 crop photos, 4 weed photos (a disc of the plant's colour on soil), 4 bare-soil tiles."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    photos = np.empty((12, size, size, 3), np.float32)
    photos[:] = SOIL_RGB
    photos[:4][:, disc] = CROP_RGB
    photos[4:8][:, disc] = WEED_RGB
    return tf.constant(photos), tf.one_hot([0] * 4 + [1] * 4 + [2] * 4, 3)


def _count(tile: np.ndarray, rgb) -> int:
    return int(np.all(np.abs(tile - np.array(rgb)) < 2.0, axis=-1).sum())


def test_composite_tiles_are_weed_tiles_when_a_weed_shows_and_crop_tiles_when_only_crops_do():
    images, labels = _disc_photos()
    ground = tf.constant(np.full((12, 48, 48, 3), SOIL_RGB, np.float32))
    several = cut = 0
    for i in range(6):
        out, lab = A.composite(images, labels, ground, tf.constant([i, 7], tf.int64), tf.constant(ROLES, tf.int32),
                               share=1.0, max_plants=3)
        assert out.shape == images.shape and out.dtype == tf.float32 and lab.shape == labels.shape
        out, lab = out.numpy(), lab.numpy()
        np.testing.assert_allclose(lab.sum(axis=1), 1.0, rtol=1e-5)
        for tile, y in zip(out, lab):
            weed, crop = _count(tile, WEED_RGB), _count(tile, CROP_RGB)
            assert weed + crop > 0, "a composite tile without a plant"
            if weed >= 0.01 * 48 * 48:  # a weed shows: a weed tile, all of its label on the weed
                assert y[1] == pytest.approx(1.0)
            elif weed == 0:  # crops alone: a crop tile
                assert y[0] == pytest.approx(1.0)
            assert y[2] == 0.0  # never background any more
            several += weed > 0 and crop > 0
            plant = np.abs(tile - np.array(SOIL_RGB)).sum(-1) > 30
            cut += bool(plant[0].any() or plant[-1].any() or plant[:, 0].any() or plant[:, -1].any())
    assert several > 0, "never a crop and a weed on one tile"
    assert cut > 0, "never a plant cut by the tile border"


def test_composite_off_or_without_plant_photos_changes_nothing():
    images, labels = _disc_photos()
    ground = tf.constant(np.full((12, 48, 48, 3), SOIL_RGB, np.float32))
    roles = tf.constant(ROLES, tf.int32)
    out, lab = A.composite(images, labels, ground, SEED, roles, share=0.0)
    np.testing.assert_array_equal(out.numpy(), images.numpy())
    soil, soil_labels = images[8:], labels[8:]
    out, lab = A.composite(soil, soil_labels, ground[:4], SEED, roles, share=1.0)
    np.testing.assert_array_equal(out.numpy(), soil.numpy())
    np.testing.assert_array_equal(lab.numpy(), soil_labels.numpy())


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_sliver_tiles_show_a_little_of_one_plant_at_a_border_with_its_own_label():
    images, labels = _disc_photos()
    ground = tf.constant(np.full((12, 48, 48, 3), SOIL_RGB, np.float32))
    disc = _count(images[0].numpy(), CROP_RGB)
    made = {0: 0, 1: 0}
    for i in range(8):
        out, lab = A.slivers(images, labels, ground, tf.constant([i, 3], tf.int64), tf.constant(ROLES, tf.int32),
                             share=1.0, max_visible=0.35, scale=(1.0, 1.0))
        assert out.shape == images.shape and out.dtype == tf.float32 and lab.shape == labels.shape
        for before, tile, y_before, y in zip(images.numpy(), out.numpy(), labels.numpy(), lab.numpy()):
            if np.array_equal(tile, before):  # no placement gave a sliver: unchanged, label too
                np.testing.assert_array_equal(y, y_before)
                continue
            plant = np.abs(tile - np.array(SOIL_RGB)).sum(-1) > 30  # resampled edges included
            shown = int(plant.sum())
            assert 0.0025 * 48 * 48 <= shown < 0.35 * disc * 1.3, shown  # a sliver: less than 35 % of the plant
            assert _touches_border(plant), "a sliver lies at a border"
            colour = tile[plant].mean(axis=0)
            role = int(np.abs(colour - WEED_RGB).sum() < np.abs(colour - CROP_RGB).sum())
            assert y[role] == pytest.approx(1.0)  # the plant's own label
            made[role] += 1
    assert made[0] > 0 and made[1] > 0


def test_sliver_plants_are_half_crops_whatever_the_batch_holds():
    images, labels = _disc_photos()
    # 1 crop photo, 4 weed photos, 4 soil: by photo count a crop would be 1 in 5
    images, labels = tf.concat([images[:1], images[4:]], 0), tf.concat([labels[:1], labels[4:]], 0)
    ground = tf.constant(np.full((9, 48, 48, 3), SOIL_RGB, np.float32))
    crops = plants = 0
    for i in range(12):
        out, lab = A.slivers(images, labels, ground, tf.constant([i, 11], tf.int64), tf.constant(ROLES, tf.int32),
                             share=1.0, scale=(1.0, 1.0))
        changed = ~np.all(out.numpy() == images.numpy(), axis=(1, 2, 3))
        crops += int((lab.numpy()[changed].argmax(1) == 0).sum())
        plants += int(changed.sum())
    assert plants >= 40 and 0.35 <= crops / plants <= 0.65, (crops, plants)


def test_slivers_repeat_for_a_seed_and_off_changes_nothing():
    images, labels = _disc_photos()
    ground = tf.constant(np.full((12, 48, 48, 3), SOIL_RGB, np.float32))
    roles = tf.constant(ROLES, tf.int32)
    a = A.slivers(images, labels, ground, SEED, roles, share=0.5)
    b = A.slivers(images, labels, ground, SEED, roles, share=0.5)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    out, lab = A.slivers(images, labels, ground, SEED, roles, share=0.0)
    np.testing.assert_array_equal(out.numpy(), images.numpy())
    out, lab = A.slivers(images[8:], labels[8:], ground[:4], SEED, roles, share=1.0)  # soil alone: no plant to cut
    np.testing.assert_array_equal(out.numpy(), images[8:].numpy())


def test_solid_drops_specks_and_keeps_thin_blades():
    mask = np.zeros((1, 40, 40, 1), np.float32)
    mask[0, 5:35, 20:22] = 1  # a blade 2 px wide
    mask[0, 3, 3] = mask[0, 30, 8] = 1  # two specks
    mask[0, 10:12, 30:31] = 1  # a speck of 2 px
    kept = A.solid(tf.constant(mask)).numpy()
    assert kept[0, 5:35, 20:22].sum() >= 0.9 * 60 and kept[0, :, :18].sum() == 0 and kept[0, :, 25:].sum() == 0


# --------------------------------------------------------------------------- the pipeline


def _uint8_set(n: int = 12, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    x = np.clip(_images(n, size, seed=5).numpy(), 0, 255).astype(np.uint8)
    return x, np.arange(n) % 3


def _all(ds, batches: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds.take(batches)])
    return np.concatenate(xs), np.concatenate(ys)


def _same_set(a: np.ndarray, b: np.ndarray) -> bool:
    return sorted(i.tobytes() for i in a) == sorted(i.astype(np.float32).tobytes() for i in b)


def test_validation_batches_are_never_augmented_and_training_batches_are():
    from train.fit import FitConfig, training_batches

    x, y = _uint8_set()
    cfg = FitConfig(batch_size=4, augment=Augment())
    batches = training_batches(cfg, x, y, x, y, 3, roles=ROLES)
    val_x, val_y = _all(batches.val, 3)
    np.testing.assert_array_equal(val_x, x.astype(np.float32))  # in order, untouched
    np.testing.assert_array_equal(val_y.argmax(axis=1), y)
    train_x, _ = _all(batches.train, 3)
    assert not any(np.array_equal(t, v) for t in train_x for v in x.astype(np.float32))


def test_the_pipeline_repeats_for_a_seed():
    from train.data import make_dataset

    x, y = _uint8_set()
    roles = np.array([0, 1, -1])
    aug = Augment.build(Augment(), composite=1.0)
    a = _all(make_dataset(x, y, 3, 4, training=True, aug=aug, seed=3, roles=roles), 3)
    b = _all(make_dataset(x, y, 3, 4, training=True, aug=aug, seed=3, roles=roles), 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_mixed_labels_need_one_hot():
    from edge.core.errors import ConfigError
    from train.data import make_dataset

    x, y = _uint8_set()
    with pytest.raises(ConfigError, match="one-hot"):
        make_dataset(x, y, 3, 4, training=True, aug=Augment(), one_hot=False)


def test_mixup_and_cutmix_mix_labels():
    x, y = _uint8_set(8)
    labels = tf.one_hot(y, 3)
    for over in ({"mixup": 0.4}, {"cutmix": 1.0}):
        aug = Augment.build(Augment.off(), **over)
        out, lab = A.augment_batch(tf.constant(x, tf.float32), labels, None, SEED, aug, A.keras_mixers(aug, 1), None)
        assert out.shape == x.shape and float(tf.reduce_max(out)) <= 255.0
        np.testing.assert_allclose(lab.numpy().sum(axis=1), 1.0, rtol=1e-5)
        assert np.any((lab.numpy() > 0.01) & (lab.numpy() < 0.99))


# --------------------------------------------------------------------------- the command line


def _fit(argv: list[str]):
    from train import cli

    return cli._fit_config(cli.build_parser().parse_args(["train", "--data", "d", "--weeds", "w", *argv]))


@pytest.mark.parametrize("argv,want", [
    ([], Augment()),
    (["--no-augment"], Augment.off()),
    (["--no-augment", "--aug-noise", "12", "--aug-camera-p", "1"], Augment.build(Augment.off(), noise=12.0, camera_p=1.0)),
    (["--aug-motion-blur", "5", "--aug-jpeg-quality", "0", "--no-aug-flip"],
     Augment.build(Augment(), motion_blur=5.0, jpeg_quality=0, flip=False)),
    (["--aug-scale-min", "0.8", "--aug-scale-max", "1.2", "--aug-composite", "0.5", "--aug-composite-plants", "2"],
     Augment.build(Augment(), scale_min=0.8, scale_max=1.2, composite=0.5, composite_plants=2)),
    (["--aug-mixup", "0.2", "--aug-cutmix", "0.5"], Augment.build(Augment(), mixup=0.2, cutmix=0.5)),
    (["--aug-sliver", "0"], Augment.build(Augment(), sliver=0.0)),
], ids=["defaults", "off", "off-then-noise", "blur-jpeg-flip", "scale-composite", "mixers", "no-slivers"])
def test_aug_options_set_the_augment_config(argv, want):
    assert _fit(argv).augment == want


@pytest.mark.parametrize("argv,says", [
    (["--aug-noise", "41"], "--aug-noise: '41': input should be less than or equal to 40"),
    (["--aug-scale-min", "0.2"], "--aug-scale-min: '0.2': input should be greater than or equal to 0.3"),
    (["--aug-jpeg-quality", "2.5"], "--aug-jpeg-quality: '2.5'"),
    (["--aug-motion-blur", "nan"], "--aug-motion-blur: 'nan'"),
])
def test_aug_option_out_of_range_is_a_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        _fit(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in err


def test_aug_options_reach_the_training_batches():
    from train.fit import training_batches

    x, y = _uint8_set()
    noisy = training_batches(_fit(["--no-augment", "--aug-noise", "20", "--aug-camera-p", "1", "--batch-size", "4"]),
                             x, y, x, y, 3, roles=ROLES)
    train_x, _ = _all(noisy.train, 3)
    assert not any(np.array_equal(t, v) for t in train_x for v in x.astype(np.float32))
    assert np.abs(np.sort(train_x.ravel()) - np.sort(x.astype(np.float32).ravel())).mean() > 1.0
    plain = training_batches(_fit(["--no-augment", "--batch-size", "4"]), x, y, x, y, 3, roles=ROLES)
    assert _same_set(_all(plain.train, 3)[0], x)


def test_augment_bench_command_and_its_arithmetic():
    from train import cli
    from train.augbench import BenchResult, Timing, effects_alone

    a = cli.build_parser().parse_args(["augment-bench", "--data", "d", "--weeds", "w", "--batches", "3",
                                       "--aug-noise", "4"])
    assert a.func is cli.cmd_augment_bench and a.batches == 3 and cli._fit_config(a).augment.noise == 4.0
    res = BenchResult(3, 32, 160, 640, "on", {"plain": Timing(0.1, 0.2), "augmented": Timing(0.15, 0.3)},
                      {"plain": Timing(1.0, 2.0), "augmented": Timing(1.2, 2.1)})
    assert res.ratio(res.pipeline, "wall") == pytest.approx(1.5) and res.ratio(res.training, "cpu") == pytest.approx(1.05)
    assert "| training step (backbone phase) | 1000 / 2000 | 1200 / 2100 | 1.20 | 1.05 | 24 s |" in res.table()
    alone = effects_alone(Augment())
    assert alone["scale"].effects() == {"scale_min": 0.6, "scale_max": 1.4}
    assert set(alone) == {"scale" if k.startswith("scale_") else k for k in Augment().effects()}


def test_every_aug_option_is_documented_with_its_default_and_range():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `--aug-")]
    for name, info in Augment.model_fields.items():
        flag = "--aug-" + name.replace("_", "-")
        row = next((r for r in rows if f"`{flag}`" in r.split("|")[1]), None)  # the option column, not a mention
        assert row is not None, f"{flag} is not in docs/training.md's augmentation table"
        if info.annotation is bool:
            assert ("on" if info.default else "off") in row.split("|")[2], flag
            continue
        lo, hi = Augment.range_of(name)
        assert f"{info.default:g}" in row.split("|")[2] and f"{lo:g}–{hi:g}" in row.split("|")[2], flag


@pytest.mark.parametrize("recorded,says", [
    (Augment().model_dump(), str(Augment())),
    (Augment.off().model_dump(), "off"),
    ({"flip": True, "rotation": 0.5, "zoom": 0.15, "brightness": 0.15, "contrast": 0.15},  # the shipped bundle's
     "(the earlier options) flip True, rotation 0.5, zoom 0.15, brightness 0.15, contrast 0.15"),
], ids=["today", "off", "earlier"])
def test_a_bundles_report_names_the_augmentation_it_was_trained_with(recorded, says):
    assert A.describe_recorded(recorded) == says
