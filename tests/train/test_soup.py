"""A weight soup (``weed-train soup A B``): two tiny bundles trained on one split -> the mean of their weights,
exported and evaluated as a training run's model; parents that cannot be averaged are refused, naming why."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edge.core.errors import EXIT_BUNDLE, BundleError
from tests.train.test_pipeline import tiny_set  # noqa: F401 - the shared fixture

pytest.importorskip("tensorflow")


def _train_argv(data, train_seed):
    return ["train", "--data", str(data), "--roles", str(data.parent / "roles.csv"), "--val", "0.25", "--test", "0.25",
            "--input-size", "32", "--mode", "features", "--weights", "none", "--representative", "16",
            "--allow-quant-drop", "--train-seed", str(train_seed)]


@pytest.fixture(scope="module")
def parents(tiny_set, tmp_path_factory):  # noqa: F811 - the imported fixture
    """A folder with two tiny bundles p1, p2 of one split and model, trained with two draws (``--train-seed``)."""
    from tests.train.bundles import write_float_bundle
    from train.augment import Augment
    from train.fit import FitConfig
    from train.pipeline import train_model
    from train.runs import DataConfig

    out = tmp_path_factory.mktemp("soup")
    dc = DataConfig(data=tiny_set, roles_file=tiny_set.parent / "roles.csv", val_fraction=0.25, test_fraction=0.25)
    for k in (1, 2):
        fc = FitConfig(mode="features", weights="none", input_size=32, embedding_head_epochs=3, batch_size=16,
                       verbose=0, augment=Augment.off(), train_seed=k)
        write_float_bundle(train_model(dc, fc, progress=False), out / f"p{k}", _train_argv(tiny_set, k))
    return out


def _parent(folder):
    from edge.inference.bundle import MANIFEST
    from train import cli
    from train.finetune import open_start
    from train.soup import Parent

    start = open_start(folder)
    t = cli._recorded_train_args(start.manifest.training["command"], folder / MANIFEST, "")
    return Parent(start, cli._data_config(t), cli._fit_config(t))


@pytest.mark.slow
def test_a_soup_is_the_mean_of_its_parents_weights_exported_and_evaluated_as_a_run(parents, tmp_path):
    import keras

    from edge.inference.bundle import load_bundle
    from edge.inference.classifier import Classifier
    from train.cli import main

    assert main(["soup", str(parents / "p1"), str(parents / "p2"), "--out", str(tmp_path), "--name", "soup",
                 "--quiet"]) == 0
    folder = tmp_path / "soup"
    b = load_bundle(folder)  # a bundle the edge loads, hashes checked
    m = b.manifest
    p1, p2 = (load_bundle(parents / n).manifest for n in ("p1", "p2"))
    assert m.labels == p1.labels and m.weed_labels == p1.weed_labels
    soup = m.training["soup"]
    assert [p["bundle"] for p in soup["parents"]] == ["p1", "p2"]
    assert [p["keras_sha256"] for p in soup["parents"]] == [p1.trained_weights.sha256, p2.trained_weights.sha256]
    assert soup["command"].startswith("weed-train soup ") and " --name soup" in soup["command"]
    from train.provenance import command_base
    words = soup["command"].split()
    assert [(command_base() / w).resolve() for w in words[2:4]] == [parents / "p1", parents / "p2"]  # portable
    assert m.training["command"] == p1.training["command"]  # the split the others share: robustness --split rebuilds it
    assert any("weight soup: the mean of the weights of 2 bundles" in n for n in m.training["notes"])

    models = [keras.saving.load_model(f / "model.keras", compile=False) for f in (parents / "p1", parents / "p2", folder)]
    w1, w2, ws = (mod.get_layer("probabilities").get_weights() for mod in models)
    assert not np.array_equal(w1[0], w2[0])  # two draws: two different kernels (from two initial draws)
    for a, b_, s in zip(w1, w2, ws):
        np.testing.assert_allclose(s, (a.astype(np.float64) + b_) / 2, rtol=1e-6, atol=1e-7)

    doc = json.loads((folder / "metrics.json").read_text())
    assert doc["models"]["int8"]["test"]["n_photos"] > 0 and doc["models"][doc["main_model"]]["val"]["n_photos"] > 0
    report = (folder / "report.md").read_text()
    assert "A weight soup: the mean of the weights of 2 bundles" in report and p1.training["command"] in report
    with Classifier(b, num_threads=1) as c:
        probs = c.classify(np.full((48, 48, 3), 90, np.uint8)).probs
    assert probs.shape == (len(m.labels),) and abs(float(np.sum(probs)) - 1.0) < 0.02
    assert "split model" not in m.rule.notes  # the soup scored validation itself
    with np.load(folder / "validation_rows.npz") as z:
        assert "through the edge runtime" in str(z["source"])

    # its threshold chosen again: still the soup's own validation, though its recorded command is a parent's
    assert main(["threshold", "--model", str(folder), "--quiet"]) == 0
    assert "split model" not in load_bundle(folder).manifest.rule.notes
    # a soup is not a parent (its recorded command is its first parent's, not how it was made)
    assert main(["soup", str(folder), str(parents / "p2"), "--out", str(tmp_path), "--name", "again"]) == EXIT_BUNDLE


def _with(parent, data=None, fit=None, start=None):
    return dataclasses.replace(parent, data=dataclasses.replace(parent.data, **(data or {})),
                               fit=dataclasses.replace(parent.fit, **(fit or {})),
                               start=dataclasses.replace(parent.start, **(start or {})))


# (what, the second parent changed so, words of the refusal)
REFUSALS = [
    ("another split seed", dict(data={"seed": 7}), "its data/split setting seed is 7 against 42"),
    ("another validation share", dict(data={"val_fraction": 0.3}), "val_fraction is 0.3 against 0.25"),
    ("another input size", dict(fit={"input_size": 48}), "--input-size 48 against 32"),
    ("another backbone", dict(fit={"backbone": "mobilenet_v1"}), "--backbone 'mobilenet_v1' against 'mobilenet_v2'"),
    ("the same Keras model twice", dict(start={"sha256": "same"}), "hold the same Keras model"),
    ("other photos", dict(data={"data": "elsewhere"}), "its data/split setting data is 'elsewhere'"),
    ("another starting bundle", dict(fit={"from_bundle": "base"}), "--from-bundle 'base' against ''"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what, change, words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_parents_that_cannot_be_averaged_are_refused_naming_what_differs(parents, what, change, words):
    from train.soup import check_parents

    first, second = _parent(parents / "p1"), _parent(parents / "p2")
    if what == "the same Keras model twice":
        first = _with(first, start={"sha256": "same"})
    with pytest.raises(BundleError, match=words) as e:
        check_parents([first, _with(second, **change)])
    assert e.value.exit_code == EXIT_BUNDLE


def test_a_soup_needs_two_bundles(capsys):
    from train.cli import main

    assert main(["soup", "models/plant-seedlings-mnv2", "--name", "s"]) == EXIT_BUNDLE
    assert "a soup needs 2 to 8 bundles, got 1" in capsys.readouterr().err


def test_average_is_the_mean_of_every_weight_and_refuses_other_shapes():
    import keras

    from train.soup import average

    def model(value, units=3):
        m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)])
        m.set_weights([np.full(w.shape, value, np.float32) for w in m.get_weights()])
        return m

    mean = average([model(1.0), model(2.0), model(6.0)])
    assert all(np.allclose(w, 3.0) for w in mean.get_weights())
    with pytest.raises(BundleError, match="do not have the same weights"):
        average([model(1.0), model(1.0, units=4)])

    def counted(value):
        """A model with an integer weight (a counter, as an optimizer or a seed generator holds)."""
        m = model(1.0)
        m.counter = keras.Variable(np.int32(value), trainable=False, name="counter")
        return m

    assert int(average([counted(3), counted(3)]).counter.numpy()) == 3
    with pytest.raises(BundleError, match="is not a float and differs between them"):
        average([counted(3), counted(4)])


def test_a_bundle_without_its_keras_model_cannot_be_averaged(tmp_path, capsys):
    from tests.conftest import TOY_BUNDLE
    from train.cli import main

    rc = main(["soup", str(TOY_BUNDLE), "models/plant-seedlings-mnv2", "--out", str(tmp_path), "--name", "s"])
    err = capsys.readouterr().err
    assert rc == EXIT_BUNDLE and "carries no trained Keras model" in err and "it cannot be averaged" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_the_soup_is_not_written_over_a_parent(parents, capsys):
    from edge.core.errors import EXIT_CONFIG
    from train.cli import main

    before = (parents / "p1" / "model.keras").read_bytes()
    rc = main(["soup", str(parents / "p1"), str(parents / "p2"), "--out", str(parents), "--name", "p1", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == EXIT_CONFIG and "is the folder of bundle p1, one of the soup's parents" in err, err
    assert (parents / "p1" / "model.keras").read_bytes() == before


@pytest.mark.slow
def test_photos_that_do_not_rebuild_the_parents_split_are_refused(parents, tiny_set, tmp_path):  # noqa: F811
    """--data pointing at other photos (here one fewer): the test photos might be some a parent trained on."""
    import shutil

    from train.runs import ExportConfig
    from train.soup import run_soup

    other = tmp_path / "data"
    shutil.copytree(tiny_set, other)
    next((other / "maize").glob("*.png")).unlink()
    first, second = _parent(parents / "p1"), _parent(parents / "p2")
    with pytest.raises(BundleError, match="is not the one bundle p1 was trained on"):
        run_soup([first, second], ExportConfig(out=tmp_path, name="s"), data=dataclasses.replace(first.data, data=other),
                 progress=False)
    assert not (tmp_path / "s").exists()


def test_a_bundle_that_is_not_there_is_named_as_the_soups_argument(tmp_path, capsys):
    from train.cli import main

    rc = main(["soup", str(tmp_path / "nope"), "models/plant-seedlings-mnv2", "--out", str(tmp_path), "--name", "s"])
    err = capsys.readouterr().err
    assert rc == EXIT_BUNDLE and "not found" in err and "pass a bundle folder as BUNDLE" in err, err
