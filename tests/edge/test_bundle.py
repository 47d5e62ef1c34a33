import json
import os
import stat
from pathlib import Path

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


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def _relink(bundle, name, target):
    """``name`` in the bundle becomes a symlink to ``target`` (its manifest hash made to match)."""
    (bundle / name).unlink()
    (bundle / name).symlink_to(target)


def _replace(bundle, name, make):
    (bundle / name).unlink()
    make(bundle / name)


def test_loads_and_verifies(toy_bundle):
    b = load_bundle(toy_bundle)
    assert b.manifest.labels == ["soil", "crop", "weed"]
    assert b.model_path.name == "model.tflite"
    f = load_bundle(toy_bundle, variant="float32")
    assert f.model_path.name == "model_float32.tflite" and f.quantization == "float32"


def test_an_upper_case_model_hash_is_the_same_hash(toy_bundle):
    m = _manifest(toy_bundle)
    _edit(toy_bundle, model_sha256=m["model_sha256"].upper())
    assert load_bundle(toy_bundle).manifest.model_sha256 == m["model_sha256"].upper()


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda b: (b / "model.tflite").unlink(), "is missing"),
        (lambda b: (b / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda b: (b / "model.tflite").write_bytes((b / "model.tflite").read_bytes()[:500]), "does not match its manifest"),
        (lambda b: (b / "model.tflite").write_bytes(b""), "is empty"),
        (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda b: _edit(b, labels=["soil", "weed"]), "which are not in labels"),
        (lambda b: _edit(b, labels=["soil", "weed", " "]), "labels contain an empty name"),
        (lambda b: _edit(b, weed_labels=["thistle"]), "'thistle'"),
        (lambda b: _edit(b, colour="RGB"), "field 'colour': unknown field"),
        (lambda b: _edit(b, format_version=99), "format_version 99"),
        (lambda b: _edit(b, threshold=1.5), "field 'threshold'"),
        (lambda b: _edit(b, input=None), "field 'input'"),
        # files outside the bundle folder are never read (nor hashed)
        (lambda b: _edit(b, model_file="../../etc/passwd"), "field 'model_file': '../../etc/passwd' is not a file inside"),
        (lambda b: _edit(b, model_file="/etc/passwd"), "field 'model_file': '/etc/passwd' is not a file inside"),
        (lambda b: _edit(b, variants={"float32": {"file": "../x.tflite", "quantization": "float32"}}),
         "field 'variants.float32.file': '../x.tflite' is not a file inside"),
        (lambda b: _relink(b, "model.tflite", "/etc/passwd"), "names 'model.tflite', which resolves to outside"),
        (lambda b: _relink(b, "model_float32.tflite", "../../outside.tflite"),
         "names 'model_float32.tflite', which resolves to outside"),
        # strict types: no string for a number, no boolean for an integer
        (lambda b: _edit(b, threshold="0.4"), "field 'threshold': Input should be a valid number"),
        (lambda b: _edit(b, format_version=True), "field 'format_version': Input should be a valid integer"),
        (lambda b: _edit(b, input={**_manifest(b)["input"], "height": "32"}), "field 'input.height'"),
        (lambda b: _edit(b, untrained_demo="yes"), "field 'untrained_demo'"),
        (lambda b: _edit(b, labels=["soil", "crop", 3]), "field 'labels.2'"),
        # numbers finite and in range
        (lambda b: _edit(b, threshold=float("nan")), "field 'threshold': Input should be a finite number"),
        (lambda b: _edit(b, output={**_manifest(b)["output"], "scale": float("inf")}), "field 'output.scale'"),
        (lambda b: _edit(b, input={**_manifest(b)["input"], "width": 10**9}), "field 'input.width'"),
        (lambda b: _edit(b, output={**_manifest(b)["output"], "zero_point": 1000}), "field 'output.zero_point'"),
        # names and labels are printed in log lines: plain text only
        (lambda b: _edit(b, name="toy\nERROR edge: FAKE"), "field 'name': holds a control character"),
        (lambda b: _edit(b, labels=["soil", "crop", "we\x1b[2Jed"]), "field 'labels.2': holds a control character"),
        # what the model or the manifest is when it is not a file
        (lambda b: _replace(b, "model.tflite", lambda p: p.mkdir()), "model.tflite is a folder, not a regular file"),
        (lambda b: _replace(b, "manifest.json", lambda p: p.mkdir()), "manifest.json is a folder, not a regular file"),
        (lambda b: (b / "manifest.json").write_text(" " * 1_000_001), "more than the 1,000,000 bytes"),
        (lambda b: (b / "manifest.json").write_text('{"metrics": ' + "[" * 100_000 + "]" * 100_000 + "}"),
         "nests arrays or objects too deeply to read"),
        (lambda b: (b / "manifest.json").write_text('{"format_version": ' + "9" * 5000 + "}"),
         "manifest.json is not valid JSON (Exceeds the limit"),
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
        # a softmax output called logits would be squashed by a second softmax (every score near 1/N)
        ({"output": {"kind": "logits", "dtype": "uint8", "scale": 0.00390625, "zero_point": 0}},
         'says output.kind = "logits", but the output is quantised as a softmax'),
        ({"output": {"kind": "probabilities", "dtype": "uint8", "scale": 1e6, "zero_point": 0}},
         "output scale 1000000.0 / zero point 0 are not the model's (0.00390625 / 0)"),
        ({"output": {"kind": "probabilities", "dtype": "uint8", "scale": 0.00390625, "zero_point": 7}},
         "zero point 7 are not the model's"),
    ],
)
def test_manifest_disagreeing_with_the_model_fails_before_use(toy_bundle, change, words):
    _edit(toy_bundle, **change)
    with pytest.raises(BundleError) as e:
        Classifier(load_bundle(toy_bundle), num_threads=1)
    assert words in str(e.value)


@pytest.mark.parametrize(
    "quantization, variant, words",
    [
        ("float16", None, "the manifest says quantization float16, but the model's tensors are int32, int8, uint8"),
        ("float32", None, "the manifest says quantization float32, but the model's tensors are int32, int8, uint8"),
        ("int8", "float32", "the manifest says quantization int8, but the model's tensors are float32, int32"),
    ],
)
def test_a_quantisation_label_the_tensors_disagree_with_fails_at_load(toy_bundle, quantization, variant, words):
    """A float16 label on an int8 model (or any other mix-up) is a BundleError before any output is built."""
    if variant is None:
        _edit(toy_bundle, quantization=quantization, variants={})
    else:
        m = _manifest(toy_bundle)
        _edit(toy_bundle, variants={variant: {**m["variants"][variant], "quantization": quantization}})
    with pytest.raises(BundleError) as e:
        Classifier(load_bundle(toy_bundle, variant=variant), num_threads=1)
    assert words in str(e.value) and e.value.exit_code == EXIT_BUNDLE


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: Path("/dev/null"), "--model /dev/null is a character device, not a bundle folder"),
        (lambda d: (d / "fifo", os.mkfifo(d / "fifo"))[0], "fifo is a FIFO (named pipe), not a bundle folder"),
    ],
)
def test_a_model_path_that_is_a_device_or_fifo_says_so(tmp_path, make, words):
    """Not "not found": what the path is (resolve_bundle only stats it, never opens it)."""
    with pytest.raises(BundleError) as e:
        load_bundle(make(tmp_path))
    assert words in str(e.value) and e.value.exit_code == EXIT_BUNDLE


def test_a_character_device_as_the_model_file_says_so(toy_bundle):
    try:
        _replace(toy_bundle, "model.tflite", lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    except PermissionError:  # no CAP_MKNOD here: the folder case above covers the same check
        pytest.skip("creating a device node needs CAP_MKNOD")
    with pytest.raises(BundleError, match="model.tflite is a character device, not a regular file"):
        load_bundle(toy_bundle)


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
