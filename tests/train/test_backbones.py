"""Backbone builders, table-driven over BACKBONES with small inputs, and the port proofs:
with the real offline ImageNet weights installed (``weed-train weights install``), known
photos get their known ImageNet classes and the Xception port reproduces its source."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from train import weights
from train.backbones import BACKBONES, Built, build_backbone
from train.weights import KERAS_IMAGENET, SOURCES, WeightsError

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = 96  # >= Xception's minimum of 71, a multiple of 32
NUM_CLASSES = {"mobilenet_v2": 1000, "efficientnet_lite0": 1000, "mobilenet_v1": 1001, "xception": 1000}

# ImageNet-1k indices checked (0-based, 1000 classes; the 1001-class head puts background at 0)
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967
CATS = {EGYPTIAN_CAT, TABBY, TIGER_CAT}


@pytest.fixture(scope="module")
def built_none():
    return {name: build_backbone(name, SMALL, weights="none") for name in BACKBONES}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_builds_without_weights(name, built_none):
    spec = BACKBONES[name]
    built = built_none[name]
    assert isinstance(built, Built)
    assert built.weights_source == "none"
    assert built.preprocessing
    assert tuple(built.model.input_shape) == (None, SMALL, SMALL, 3)
    assert tuple(built.model.output_shape) == (None, spec.feature_dim)
    assert built.base.output_shape[-1] == spec.feature_dim
    assert built.base in built.model.layers
    assert built.model.get_layer("preprocess") is not None
    x = np.random.default_rng(0).uniform(0, 255, (2, SMALL, SMALL, 3)).astype(np.float32)
    out = built.model(x, training=False).numpy()
    assert out.shape == (2, spec.feature_dim) and np.isfinite(out).all()


@pytest.mark.parametrize("name", list(BACKBONES))
def test_spec_lists_known_sources(name):
    spec = BACKBONES[name]
    assert spec.name == name
    for source in spec.weight_sources:
        assert name in SOURCES[source].backbones
    assert spec.shippable == SOURCES[spec.weight_sources[0]].shippable
    assert spec.default_input_size >= spec.min_input_size


def test_only_xception_is_not_shippable():
    assert [n for n, s in BACKBONES.items() if not s.shippable] == ["xception"]


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "mobilenet_v1"])
def test_include_top_has_the_source_head(name):
    built = build_backbone(name, 64, weights="none", include_top=True)
    assert tuple(built.model.output_shape) == (None, NUM_CLASSES[name])


def test_base_layers_run_input_to_output(built_none):
    base = built_none["mobilenet_v2"].base
    assert base.layers[0].name == "preprocessed"
    assert base.layers[-1].output.shape[-1] == 1280  # "unfreeze the top N" = base.layers[-N:]


def test_weights_h5_round_trip(tmp_path):
    first = build_backbone("mobilenet_v2", 64, weights="none")
    path = tmp_path / "base.weights.h5"
    first.base.save_weights(path)
    second = build_backbone("mobilenet_v2", 64, weights=str(path))
    assert second.weights_source == "file:base.weights.h5"
    for a, b in zip(first.base.get_weights(), second.base.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "resnet50", "input_size": 96}, "unknown backbone 'resnet50'"),
        ({"name": "xception", "input_size": 64}, "too small for xception.*at least 71"),
        ({"name": "efficientnet_lite0", "input_size": 96, "weights": "keras-imagenet"}, "not available for efficientnet_lite0"),
        ({"name": "mobilenet_v2", "input_size": 96, "weights": "lite0-imagenet"}, "not available for mobilenet_v2"),
        ({"name": "mobilenet_v2", "input_size": 96, "weights": "/nope/base.weights.h5"}, "does not exist"),
    ],
)
def test_bad_requests_say_what_to_do(kwargs, match):
    with pytest.raises(WeightsError, match=match):
        build_backbone(**kwargs)


def test_missing_weights_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match=r"run `weed-train weights install mobilenet_v2`"):
        build_backbone("mobilenet_v2", 96)


def _online() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        return True
    except OSError:
        return False


def test_keras_imagenet_offline_fails_with_the_offline_command():
    if _online():
        pytest.skip("storage.googleapis.com resolves: this checks the offline message only")
    with pytest.raises(WeightsError, match=r"could not download Keras ImageNet weights.*weights install mobilenet_v2"):
        build_backbone("mobilenet_v2", 96, weights=KERAS_IMAGENET)


# --- port proofs with the real weights ------------------------------------------------


def _need(source: str) -> None:
    if not weights.is_installed(source):
        pytest.skip(f"weights {source!r} not installed: run `weed-train weights install {SOURCES[source].backbones[0]}`")


def _photo(name: str, size: int) -> np.ndarray:
    bgr = cv2.imread(str(DATA / f"{name}.jpg"))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.fixture(scope="module")
def photos():
    return np.stack([_photo("chelsea", 224), _photo("coffee", 224)])


@pytest.mark.weights
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, cat_min, espresso_min",
    [
        ("mobilenet_v2", 0.6, 0.95),  # torchvision: Egyptian cat 0.716, espresso 0.994
        ("efficientnet_lite0", 0.7, 0.85),  # 0.808, 0.909
        ("mobilenet_v1", 0.85, 0.95),  # 0.937, 0.991 (identical to the source graph)
    ],
)
def test_known_photos_get_their_imagenet_class(name, cat_min, espresso_min, photos):
    _need(BACKBONES[name].weight_sources[0])
    built = build_backbone(name, 224, include_top=True)
    probs = built.model(photos, training=False).numpy()
    offset = NUM_CLASSES[name] - 1000  # 1001-class head: index 0 is background
    assert probs.shape == (2, NUM_CLASSES[name])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    cat, coffee = probs[0], probs[1]
    assert int(cat.argmax()) - offset == EGYPTIAN_CAT
    assert cat[EGYPTIAN_CAT + offset] > cat_min
    assert {int(i) - offset for i in np.argsort(cat)[-3:]} == CATS
    assert int(coffee.argmax()) - offset == ESPRESSO
    assert coffee[ESPRESSO + offset] > espresso_min


@pytest.mark.weights
@pytest.mark.slow
def test_xception_port_reproduces_the_source_model_features():
    _need("kitchenware-xception")
    arrays = weights.load("kitchenware-xception")
    probe, expected = arrays[weights.PROBE_INPUT], arrays[weights.PROBE_FEATURES]
    built = build_backbone("xception", probe.shape[1])
    assert built.weights_source == "kitchenware-xception"
    got = built.model(probe, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.weights
@pytest.mark.slow
def test_features_from_default_weights_match_npz_path():
    _need("torchvision-imagenet1k-v1")
    npz = weights.cache_dir() / "torchvision-imagenet1k-v1.npz"
    x = _photo("chelsea", SMALL)[None]
    a = build_backbone("mobilenet_v2", SMALL).model(x, training=False).numpy()
    b_built = build_backbone("mobilenet_v2", SMALL, weights=str(npz))
    assert b_built.weights_source == "file:torchvision-imagenet1k-v1.npz"
    np.testing.assert_array_equal(a, b_built.model(x, training=False).numpy())
