import json

import pytest

from edge.inference.bundle import DEFAULT_BUNDLE, Manifest, available_bundles, load_bundle, resolve_bundle, write_bundle
from edge.core.errors import EXIT_BUNDLE, BundleError
from edge.inference import Classifier


def _edit(bundle, **changes):
    m = json.loads((bundle / "manifest.json").read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_loads_and_verifies(toy_bundle):
    b = load_bundle(toy_bundle)
    assert b.manifest.labels == ["soil", "crop", "weed"]
    assert b.model_path.name == "model.tflite"
    f = load_bundle(toy_bundle, variant="float32")
    assert f.model_path.name == "model_float32.tflite" and f.quantization == "float32"


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda b: (b / "model.tflite").unlink(), "is missing"),
        (lambda b: (b / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda b: (b / "model.tflite").write_bytes((b / "model.tflite").read_bytes()[:500]), "does not match its manifest"),
        (lambda b: (b / "model.tflite").write_bytes(b""), "is empty"),
        (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda b: _edit(b, labels=["soil", "weed"]), "which are not in labels"),
        (lambda b: _edit(b, weed_labels=["thistle"]), "'thistle'"),
        (lambda b: _edit(b, colour="RGB"), "field 'colour': unknown field"),
        (lambda b: _edit(b, format_version=99), "format_version 99"),
        (lambda b: _edit(b, threshold=1.5), "field 'threshold'"),
        (lambda b: _edit(b, input=None), "field 'input'"),
    ],
)
def test_corrupt_bundles_fail_clearly(toy_bundle, mutate, words):
    mutate(toy_bundle)
    with pytest.raises(BundleError) as e:
        load_bundle(toy_bundle)
    assert words in str(e.value)
    assert " — " in str(e.value)  # every message carries a fix
    assert e.value.exit_code == EXIT_BUNDLE


@pytest.mark.parametrize(
    "change, words",
    [
        ({"labels": ["soil", "crop", "weed", "extra"], "background_labels": ["soil"]}, "does not match the 4 labels"),
        ({"input": {"height": 64, "width": 64, "channels": 3, "dtype": "uint8", "colour_order": "RGB",
                    "resize": "center_crop"}}, "input tensor shape"),
        ({"input": {"height": 32, "width": 32, "channels": 3, "dtype": "float32", "colour_order": "RGB",
                    "resize": "center_crop"}}, "input tensor dtype"),
    ],
)
def test_manifest_disagreeing_with_the_model_fails_before_use(toy_bundle, change, words):
    _edit(toy_bundle, **change)
    with pytest.raises(BundleError) as e:
        Classifier(load_bundle(toy_bundle), num_threads=1)
    assert words in str(e.value)


def test_garbage_model_with_matching_hash_is_a_bundle_error(toy_bundle):
    (toy_bundle / "model.tflite").write_bytes(b"\x00garbage" * 100)
    m = json.loads((toy_bundle / "manifest.json").read_text())
    from edge.inference.bundle import sha256_file

    m["model_sha256"] = sha256_file(toy_bundle / "model.tflite")
    (toy_bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a valid TFLite model"):
        Classifier(load_bundle(toy_bundle), num_threads=1)


def test_unknown_variant_and_bare_tflite(toy_bundle):
    with pytest.raises(BundleError, match="no 'float16' variant"):
        load_bundle(toy_bundle, variant="float16")
    with pytest.raises(BundleError, match="bare .tflite"):
        resolve_bundle(toy_bundle / "nothing.tflite")
    with pytest.raises(BundleError, match="not found"):
        resolve_bundle("no-such-bundle")


def test_names_resolve_through_models_dir(toy_bundle, monkeypatch):
    monkeypatch.setenv("WEED_DETECTOR_MODELS", str(toy_bundle.parent))
    assert available_bundles()["colour-toy"] == toy_bundle
    assert load_bundle("colour-toy").dir == toy_bundle


def test_write_bundle_round_trip(tmp_path, toy_bundle):
    m = load_bundle(toy_bundle).manifest
    out = write_bundle(tmp_path / "copy", m.model_copy(update={"name": "copy", "model_sha256": "", "variants": {}}),
                       toy_bundle / "model.tflite", variants={"float32": toy_bundle / "model_float32.tflite"})
    b = load_bundle(out)
    assert b.manifest.name == "copy" and b.manifest.model_sha256 and b.manifest.variants["float32"].size_bytes > 0
    with pytest.raises(ValueError):
        Manifest.model_validate({**m.model_dump(), "crop_labels": ["weed"]})


def test_default_bundle_is_shipped():
    assert DEFAULT_BUNDLE in available_bundles(), "the default model bundle must ship in models/"
    b = load_bundle()
    assert b.manifest.quantization == "int8"
    assert b.model_path.stat().st_size <= 5 * 1024 * 1024
