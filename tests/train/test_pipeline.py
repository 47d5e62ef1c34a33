"""A tiny end-to-end run: train -> export int8/float32 -> load with edge -> classify.

Small images (32 px), a few photos (the committed ones, rotated to make more), random
initial weights (no weight package needed), a few epochs of a head: it checks the
wiring, not the accuracy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"
CLASSES = ("maize", "sugar_beet", "charlock", "fat_hen")  # 2 crops, 2 weeds


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """4 classes x 2 photos x 4 rotations; a roles file; one corrupt file."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for p in sorted((PHOTOS / cls).glob("*.jpg")):
            img = cv2.imread(str(p))
            for k in range(4):
                cv2.imwrite(str(root / cls / f"{p.stem}_r{k}.png"), np.rot90(img, k))
    (root / "fat_hen" / "truncated.jpg").write_bytes((PHOTOS / "fat_hen").glob("*.jpg").__next__().read_bytes()[:40])
    with (root.parent / "roles.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "role"])
        for cls in CLASSES:
            w.writerow([cls, "crop" if cls in ("maize", "sugar_beet") else "weed"])
    return root


@pytest.fixture(scope="module")
def trained(tiny_set):
    """One tiny training run shared by the tests below (the slow part: ~10-20 s)."""
    from train.augment import Augment
    from train.fit import FitConfig
    from train.pipeline import train_model
    from train.runs import DataConfig

    dc = DataConfig(data=tiny_set, roles_file=tiny_set.parent / "roles.csv", val_fraction=0.25, test_fraction=0.25)
    # frozen random-init backbone + a Keras head trained on its cached embeddings: the
    # whole fit path in seconds (the finetune/scratch schedules run in the default-model build)
    fc = FitConfig(mode="features", weights="none", input_size=32, embedding_head_epochs=3, batch_size=16,
                   verbose=0, augment=Augment(rotation=0.25))
    return train_model(dc, fc, progress=False)


def metrics_threshold(folder: Path) -> float:
    """The threshold metrics.json records for the bundle's main model."""
    doc = json.loads((folder / "metrics.json").read_text())
    return doc["models"][doc["main_model"]]["threshold"]


def _export(trained, out: Path, **kw):
    from train.export import export_bundle
    from train.runs import ExportConfig

    ec = ExportConfig(out=out, name="tiny", representative=16, latency_runs=3, **kw)
    return export_bundle(trained, ec, argv=["train", "--data", str(trained.dc.data), "--input-size", "32"])


@pytest.mark.slow
def test_train_export_load_classify(trained, tmp_path):
    from edge.inference.bundle import load_bundle, sha256_file
    from edge.inference import Classifier
    from train.perturb import SUITE
    from train.rulechoice import read_rows

    assert trained.val_probs is None  # no refit: the exported model chose its own threshold on val
    res = _export(trained, tmp_path, extra_variants=("float16",), allow_quant_drop=True)
    folder = tmp_path / "tiny"
    assert res.bundle_dir == folder
    for f in ("manifest.json", "model.tflite", "model_float32.tflite", "model_float16.tflite", "report.md",
              "metrics.json", "confusion_matrix.png", "confusion_matrix.txt", "robustness.png"):
        assert (folder / f).is_file(), f

    bundle = load_bundle(folder)
    m = bundle.manifest
    assert m.quantization == "int8" and m.input.dtype == "uint8" and m.input.height == 32
    assert set(m.weed_labels) == {"charlock", "fat_hen"} and set(m.crop_labels) == {"maize", "sugar_beet"}
    assert m.training["command"].startswith("weed-train train --data")
    assert m.training["corrupt_skipped"] == 1
    assert 0.0 <= m.threshold <= 1.0 and m.metrics["threshold_chosen_on"] == "validation"
    # the decision rule: format 2, threshold and crop veto chosen on validation and its perturbed copies
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["format_version"] == 2 and "threshold" not in on_disk
    assert m.rule.threshold == m.threshold == metrics_threshold(folder)
    e = json.loads((folder / "metrics.json").read_text())["models"]["int8"]
    assert m.rule.chosen_on == "validation+perturbed" and m.rule.crop_veto == e["crop_veto"]
    assert m.rule.notes == e["threshold_rule"] == e["rule_choice"]["how"] and "split model" not in m.rule.notes
    assert list(e["rule_choice"]["rows"]) == [p.name for p in SUITE]
    assert e["test"]["crop_veto"] == m.rule.crop_veto
    # the bundle carries its Keras model and the validation rows the rule was chosen on
    assert m.trained_weights is not None and m.trained_weights.file == "model.keras"
    assert m.trained_weights.sha256 == sha256_file(folder / "model.keras")
    y_val, rows, source = read_rows(folder / "validation_rows.npz")
    assert list(rows) == [p.name for p in SUITE] and "through the edge runtime" in source
    assert all(r.shape == (len(y_val), len(m.labels)) for r in rows.values())
    assert m.training["validation_rows"] == "validation_rows.npz"
    assert set(m.variants) == {"float32", "float16"}

    photo = cv2.cvtColor(cv2.imread(str(next((PHOTOS / "maize").glob("*.jpg")))), cv2.COLOR_BGR2RGB)
    for variant in (None, "float32", "float16"):
        with Classifier(load_bundle(folder, variant=variant), num_threads=1) as clf:
            probs = clf.classify_rgb(photo)
            assert probs.shape == (len(m.labels),) and probs.dtype == np.float32
            assert abs(float(probs.sum()) - 1.0) < 0.05

    metrics = json.loads((folder / "metrics.json").read_text())
    test = metrics["models"]["int8"]["test"]
    assert test["n_plant_photos"] > 0
    assert 0.0 <= test["species_accuracy"] <= 1.0
    assert test["weed_miss"]["ci95"][0] <= test["weed_miss"]["rate"] <= test["weed_miss"]["ci95"][1]
    report = (folder / "report.md").read_text()
    assert m.training["command"] in report and "Quantisation gate" in report
    assert "The manifest's `rule` records it" in report and "| validation row | weed miss |" in report

    # the robustness suite: the main model on the same test split, under every named perturbation
    from train.robustness import METRICS

    rob = metrics["robustness"]
    assert list(rob["rows"]) == [p.name for p in SUITE] and list(rob["worst"]) == [k.key for k in METRICS]
    assert rob["n_photos"] == test["n_photos"] and rob["model_file"] == "model.tflite"
    assert rob["threshold"] == metrics["models"]["int8"]["threshold"]
    clean = rob["rows"]["clean"]  # the unperturbed row is the test evaluation itself
    assert clean["species_accuracy"]["rate"] == pytest.approx(test["species_accuracy"])
    assert clean["crop_sprayed"]["k"] == test["crop_sprayed"]["k"] and clean["weed_miss"]["k"] == test["weed_miss"]["k"]
    for key, w in rob["worst"].items():
        if clean[key]["n"] == 0:  # e.g. no background patch in this tiny test split
            assert w == {"value": None, "row": None}
            continue
        assert w["row"] in rob["rows"] and w["row"] != "clean"
        assert w["value"] == rob["rows"][w["row"]][key]["rate"]
    assert "## Robustness (test split under camera conditions)" in report and "](robustness.png)" in report
    assert all(f"| {p.title} |" in report for p in SUITE)
    # and the other camera conditions, the same photos at the same rule, beside it
    from train.perturb import OTHER

    other = metrics["robustness_other"]
    assert list(other["rows"]) == [p.name for p in OTHER] and other["n_photos"] == rob["n_photos"]
    assert other["threshold"] == rob["threshold"] and other["rows"]["clean"] == clean
    assert "## Other camera conditions (test split)" in report and "](robustness_other.png)" in report
    assert all(f"| {p.title} |" in report for p in OTHER) and (folder / "robustness_other.png").stat().st_size > 1000

    # `weed-train evaluate`: the bundle on a folder of photos (here the training set itself)
    from train.cli import main

    assert main(["evaluate", "--model", str(folder), "--data", str(trained.dc.data), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["n_plant_photos"] == 32 and ev["threshold"] == pytest.approx(m.threshold)


@pytest.mark.slow
def test_failed_gate_keeps_float_as_main_model(trained, tmp_path, monkeypatch):
    from edge.inference.bundle import load_bundle
    from train import evaluate

    # an impossible allowance (int8 must beat float by 100 points) forces the gate to fail; the points rule
    # judges even this tiny test split (it would get the paired test)
    monkeypatch.setattr(evaluate, "GATE_POINTS_MIN_PHOTOS", 0)
    res = _export(trained, tmp_path, max_quant_drop=-100.0)
    assert not res.gate_passed and "crop-vs-weed" in res.gate_message
    b = load_bundle(tmp_path / "tiny")
    assert b.manifest.quantization == "float32" and b.model_path.name == "model_float32.tflite"
    assert "int8" in b.manifest.variants and (tmp_path / "tiny" / "model_int8.tflite").is_file()
    assert not (tmp_path / "tiny" / "model.tflite").exists()
    assert b.manifest.metrics["quant_gate_passed"] is False


@pytest.mark.slow
def test_refit_trains_on_train_and_val_and_keeps_the_split_models_threshold(tiny_set, tmp_path):
    """--refit: a second model on train+val for the epochs validation chose; val stays the split model's (trained
    with --group-loss: the loss compiles in every phase and the bundle exports and loads)."""
    from edge.inference.bundle import load_bundle
    from train.augment import Augment
    from train.fit import FitConfig, chosen_epochs
    from train.pipeline import train_model
    from train.runs import DataConfig

    dc = DataConfig(data=tiny_set, roles_file=tiny_set.parent / "roles.csv", val_fraction=0.25, test_fraction=0.25)
    fc = FitConfig(mode="finetune", weights="none", input_size=32, embedding_head_epochs=3, epochs=2, batch_size=16,
                   verbose=0, augment=Augment(rotation=0.25), refit=True, group_loss=1.0)
    t = train_model(dc, fc, progress=False)  # both phases, split and refit, on the grouped loss
    n = chosen_epochs(t.result.history)
    assert set(n) == {"head", "finetune"} and 1 <= n["head"] <= 3 and 1 <= n["finetune"] <= 2
    assert t.val_probs.shape == (len(t.y["val"]), len(t.prep.labels))
    assert np.allclose(t.val_probs.sum(axis=1), 1.0, atol=1e-3)
    assert any(note.startswith("refit: trained again on train+val") for note in t.result.notes)

    res = _export(t, tmp_path, allow_quant_drop=True)
    int8, f32 = res.metrics["models"]["int8"], res.metrics["models"]["float32"]
    # one set of validation probabilities (the split model's) chose both thresholds
    assert int8["threshold"] == f32["threshold"] and int8["val"] == f32["val"]
    assert int8["test"]["n_plant_photos"] == len([v for v in t.y["test"] if t.prep.labels[v] in CLASSES])
    assert "scored by the split model before the refit" in (tmp_path / "tiny" / "report.md").read_text()
    assert "plus 1 x the weed/crop/background cross-entropy" in (tmp_path / "tiny" / "report.md").read_text()
    rule = load_bundle(tmp_path / "tiny").manifest.rule
    assert rule.threshold == int8["threshold"] and "the validation probabilities are the split model's" in rule.notes


@pytest.mark.slow
@pytest.mark.parametrize("rule_on", ["validation", "validation+perturbed"])
def test_threshold_command_rechooses_on_validation_and_rescores_the_same_test_split(trained, tmp_path, rule_on):
    from edge.inference.bundle import load_bundle
    from train.cli import main
    from train.export import export_bundle
    from train.runs import ExportConfig

    data = trained.dc.data
    argv = ["train", "--data", str(data), "--roles", str(data.parent / "roles.csv"), "--val", "0.25", "--test", "0.25",
            "--input-size", "32"]
    before = export_bundle(trained, ExportConfig(out=tmp_path, name="tiny", representative=16, latency_runs=3,
                                                 allow_quant_drop=True), argv=argv).metrics
    folder = tmp_path / "tiny"
    assert main(["threshold", "--model", str(folder), "--rule-on", rule_on, "--max-weed-miss", "0", "--quiet"]) == 0

    after = json.loads((folder / "metrics.json").read_text())
    manifest = load_bundle(folder).manifest  # hashes still check out
    main_model = after["main_model"]
    e = after["models"][main_model]
    assert manifest.threshold == manifest.rule.threshold == e["threshold"]
    assert manifest.rule.chosen_on == rule_on and "weed miss <= 0 %" in manifest.rule.notes
    assert manifest.rule.crop_veto == e["crop_veto"] == e["test"]["crop_veto"]
    assert after["training"]["rethreshold"]["previous"] == before["models"][main_model]["threshold"]
    assert after["training"]["rethreshold"]["command"].startswith("weed-train threshold --model")
    assert "weed miss <= 0 %" in e["threshold_rule"]
    # the recorded training command rebuilt the same split: the same test photos, the same argmax
    for key in ("n_photos", "species_accuracy", "confusion_matrix"):
        assert e["test"][key] == before["models"][main_model]["test"][key]
    if rule_on == "validation":  # validation numbers follow the validation sweep at the new threshold
        row = next(r for r in e["val"]["sweep"] if r["threshold"] == e["threshold"])
        assert e["val"]["weed_miss"]["rate"] == pytest.approx(row["weed_miss"])
        assert e["val"]["crop_vs_weed_accuracy"] == pytest.approx(row["crop_vs_weed_accuracy"])
        assert manifest.rule.crop_veto is None
    else:  # chosen on the stored validation rows: the rule choice says which, with their rates
        from train.rulechoice import RuleLimits, choose_rule, read_rows

        y_val, rows, _ = read_rows(folder / "validation_rows.npz")
        again = choose_rule(rows, y_val, after["labels"], trained.prep.roles, RuleLimits(max_weed_miss=0.0))
        assert (again.threshold, again.crop_veto) == (e["threshold"], e["crop_veto"])
        assert e["rule_choice"]["rows"]["clean"]["weed_miss"] == pytest.approx(e["val"]["weed_miss"]["rate"])
    assert "re-chosen after training" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_robustness_on_the_validation_split_under_the_other_conditions(trained, tmp_path, capsys):
    """`weed-train robustness --split val --conditions other`: the bundle's own validation photos (its recorded
    training command's split), every row of train.perturb.OTHER, written beside the suite's record, not over it."""
    from train.cli import main
    from train.export import export_bundle
    from train.perturb import OTHER
    from train.runs import ExportConfig

    data = trained.dc.data
    argv = ["train", "--data", str(data), "--roles", str(data.parent / "roles.csv"), "--val", "0.25", "--test", "0.25",
            "--input-size", "32"]
    res = export_bundle(trained, ExportConfig(out=tmp_path, name="tiny", representative=16, latency_runs=3,
                                              allow_quant_drop=True), argv=argv)
    folder, out = tmp_path / "tiny", tmp_path / "rob"
    assert main(["robustness", "--model", str(folder), "--data", str(data), "--split", "val", "--conditions", "other",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert all(f"| {p.title} |" in printed for p in OTHER) and "validation split of" in printed
    doc = json.loads((out / "robustness_other_val.json").read_text())  # never the test record's name
    assert doc["conditions"] == "other" and doc["split"] == "val"
    assert list(doc["robustness"]["rows"]) == [p.name for p in OTHER]
    assert (out / "robustness_other_val.png").stat().st_size > 1000 and sorted(p.name for p in out.iterdir()) == [
        "robustness_other_val.json", "robustness_other_val.png"]
    val_photos = res.metrics["models"][res.metrics["main_model"]]["val"]["n_photos"]
    assert doc["robustness"]["n_photos"] == val_photos


def test_a_bundle_split_rebuilt_from_too_few_photos_names_the_fix_of_that_command(tmp_path):
    """weed-train robustness/threshold rebuild a bundle's split: 'lower --val/--test' (weed-train train's flags)
    is not their fix."""
    from train.data import DataError
    from train.pipeline import test_split
    from train.runs import DataConfig

    for cls in ("charlock", "maize"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "d" / cls / "0.png"), np.full((40, 40, 3), 90, np.uint8))
    (tmp_path / "roles.csv").write_text("class,role\ncharlock,weed\nmaize,crop\n")
    dc = DataConfig(data=tmp_path / "d", roles_file=tmp_path / "roles.csv", background="none")
    with pytest.raises(DataError) as e:
        test_split(dc, ["charlock", "maize"], progress=False)
    assert "split is empty when the bundle's split is rebuilt" in str(e.value) and "--split all" in str(e.value)
    assert "--val/--test" not in str(e.value)
