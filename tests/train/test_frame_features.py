"""weed-train frame-features: the int8 graph cut before its pool reproduces the model on tile-sized inputs."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import BundleError
from edge.inference.bundle import load_bundle, read_manifest, sha256_file
from edge.inference.classifier import Classifier
from edge.inference.frame_features import FrameFeatureScorer
from tests.conftest import DATA, TOY_BUNDLE
from train.frame_features import FEATURES_FILE, HEAD_FILE, MAX_STEPS, check_reproduces, cut_model, export_frame_features

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "models" / "reference" / "mnv2-160-int8"  # today's shipped 160-px int8 MobileNetV2


def test_the_toy_export_is_written_and_recorded(tmp_path):
    folder = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, folder)
    spec = export_frame_features(folder)
    assert (spec.file, spec.head_file, spec.stride, spec.channels) == (FEATURES_FILE, HEAD_FILE, 1, 3)
    assert spec.sha256 == sha256_file(folder / FEATURES_FILE) and spec.head_sha256 == sha256_file(folder / HEAD_FILE)
    assert read_manifest(folder).frame_features == spec
    with np.load(folder / HEAD_FILE) as z:  # the toy's hand-set head (tools/make_colour_bundle.py), dequantised
        assert z["weight"].shape == (3, 3)
        np.testing.assert_allclose(z["bias"], [10.0, 0.0, 0.0], atol=0.05)


def test_the_cut_mobilenet_reproduces_the_model_on_tile_sized_photos(tmp_path):
    """The 160-px int8 MobileNetV2 cut before its pool + the head: on the reference kernels the model's own
    probabilities to within int8 rounding, on real photos; through the edge runtime (XNNPACK, whose int8 kernels
    round differently per graph) the same top label and within a few output steps."""
    folder = tmp_path / "ref"
    shutil.copytree(REFERENCE, folder)
    export_frame_features(folder)
    bundle = load_bundle(folder)
    paths = sorted((DATA / "photos").rglob("*.jpg"))[:8] + [DATA / "chelsea.jpg"]
    tiles = [cv2.resize(cv2.imread(str(p)), (160, 160), interpolation=cv2.INTER_AREA) for p in paths]
    assert len(tiles) >= 5
    r = check_reproduces(folder, [cv2.cvtColor(t, cv2.COLOR_BGR2RGB) for t in tiles])
    assert r.pool_steps <= MAX_STEPS and r.logit_steps <= MAX_STEPS and r.prob_diff <= 4 / 256
    with Classifier(bundle, num_threads=1, batch=False) as c, FrameFeatureScorer(bundle, 1, scale=1.0) as f:
        for tile in tiles:
            a, b = c.classify(tile).probs, f.score(tile, [(0, 160, 0, 160)])[0].probs
            assert np.argmax(a) == np.argmax(b)
            assert float(np.max(np.abs(a - b))) <= 10 / 256


def _float_main(folder: Path) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m.update(model_file="model_float32.tflite", quantization="float32", variants={},
             model_sha256=sha256_file(folder / "model_float32.tflite"))
    (folder / "manifest.json").write_text(json.dumps(m))


def _no_pool(folder: Path) -> None:
    """An int8 model without a global pool: the toy's own cut graph (a QUANTIZE only) as the main model."""
    shutil.copytree(folder, folder.parent / "cut")
    export_frame_features(folder.parent / "cut")
    shutil.copyfile(folder.parent / "cut" / FEATURES_FILE, folder / "model.tflite")
    m = json.loads((folder / "manifest.json").read_text())
    m["model_sha256"] = sha256_file(folder / "model.tflite")
    (folder / "manifest.json").write_text(json.dumps(m))


def _not_a_model(folder: Path) -> None:
    """Random bytes as model.tflite, with their sha256 in the manifest (a copy that checks out, of garbage)."""
    (folder / "model.tflite").write_bytes(np.random.default_rng(0).bytes(3000))
    m = json.loads((folder / "manifest.json").read_text())
    m["model_sha256"] = sha256_file(folder / "model.tflite")
    (folder / "manifest.json").write_text(json.dumps(m))


def _one_label_more(folder: Path) -> None:
    """A manifest with a label the model has no output for."""
    m = json.loads((folder / "manifest.json").read_text())
    m["labels"].append("nettle")
    m["crop_labels"].append("nettle")
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("what, change, error", [
    ("a float32 main model", _float_main, "not int8"),
    # a main model whose output is no label vector (edge-run's check; cut_model's own refusal: the test below)
    ("no global average pool", _no_pool, r"output tensor shape \(1, 32, 32, 3\) does not match the 3 labels"),
    ("random bytes as the model", _not_a_model, r"model.tflite is not a valid TFLite model"),
    ("a label the model does not have", _one_label_more, r"output tensor shape \(1, 3\) does not match the 4 labels"),
])
def test_models_that_cannot_be_cut_are_refused(tmp_path, what, change, error):
    """Refused (exit 4) before anything is written: no export files, the manifest as it was."""
    folder = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, folder)
    change(folder)
    manifest = (folder / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match=error) as e:
        export_frame_features(folder)
    assert e.value.exit_code == 4
    assert not (folder / FEATURES_FILE).exists() and not (folder / HEAD_FILE).exists()
    assert (folder / "manifest.json").read_bytes() == manifest


def test_a_graph_without_a_global_pool_cannot_be_cut(tmp_path):
    folder = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, folder)
    _no_pool(folder)
    with pytest.raises(ValueError, match="no MEAN"):
        cut_model(folder / "model.tflite")


@pytest.mark.parametrize("change", [_not_a_model, _one_label_more])
def test_what_frame_features_refuses_edge_run_refuses(tmp_path, change):
    """The same check as edge-run's: its Classifier refuses these bundles with the same words."""
    folder = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, folder)
    change(folder)
    with pytest.raises(BundleError) as edge:
        Classifier(load_bundle(folder), num_threads=1)
    with pytest.raises(BundleError) as train:
        export_frame_features(folder)
    assert str(train.value) == str(edge.value)
    assert not (folder / HEAD_FILE).exists() and "frame_features" not in json.loads((folder / "manifest.json").read_text())


def test_a_head_that_does_not_match_the_model_is_refused(tmp_path):
    """The check compares the numpy head with the int8 graph's own logits: a bias off by 0.5 is caught."""
    folder = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, folder)
    export_frame_features(folder)
    assert check_reproduces(folder).logit_steps <= MAX_STEPS
    with np.load(folder / HEAD_FILE) as z:
        arrays = dict(z)
    arrays["bias"] = arrays["bias"] + np.float32(0.5)
    with open(folder / HEAD_FILE, "wb") as f:
        np.savez(f, **arrays)
    m = json.loads((folder / "manifest.json").read_text())
    m["frame_features"]["head_sha256"] = sha256_file(folder / HEAD_FILE)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not reproduce"):
        check_reproduces(folder)
