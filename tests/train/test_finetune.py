"""Fine-tuning from a bundle (``weed-train train --from-bundle``): saved frames -> labels -> a new bundle.

A tiny model (32 px, random-init frozen backbone, head on cached embeddings, as in
test_pipeline) is exported as bundle B, with its Keras model. Photos of a class B does not
know are "driven" (saved as frames with sidecars), labelled through the labelling store, and
B is fine-tuned on them mixed with its original photos: the new bundle knows the new class.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.errors import EXIT_BUNDLE
from edge.core.frame import Frame
from edge.decide.decider import Decision
from edge.inference.bundle import load_bundle, read_manifest
from edge.labelling.store import ROLES_FILE, LabelStore
from edge.service.records import TriggerSaver
from tests.conftest import TOY_BUNDLE
from train import cli
from train.finetune import initial_head

pytest.importorskip("tensorflow")

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"
CLASSES = ("maize", "sugar_beet", "charlock", "fat_hen")  # 2 crops, 2 weeds
NEW = "cleavers"  # a weed the bundle does not know, labelled under a name of the user's


def _rotations(root: Path, classes) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for p in sorted((PHOTOS / cls).glob("*.jpg")):
            img = cv2.imread(str(p))
            for k in range(4):
                cv2.imwrite(str(root / cls / f"{p.stem}_r{k}.png"), np.rot90(img, k))
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(bundle B with its Keras model, the photos it was trained on).

    B is a real, loadable bundle written with train.export's own pieces, float32 only (the
    int8 conversion is the slow part of an export, and the fine-tuned bundle below goes
    through the whole export path, int8 and gate included)."""
    from tests.train.bundles import write_float_bundle
    from train.augment import Augment
    from train.fit import FitConfig
    from train.pipeline import train_model
    from train.runs import DataConfig

    tmp = tmp_path_factory.mktemp("ft")
    orig = _rotations(tmp / "orig", CLASSES)
    roles = tmp / "roles.csv"
    roles.write_text("class,role\n" + "".join(f"{c},{'crop' if c in ('maize', 'sugar_beet') else 'weed'}\n"
                                              for c in CLASSES))
    dc = DataConfig(data=orig, roles_file=roles, val_fraction=0.25, test_fraction=0.25)
    fc = FitConfig(mode="features", weights="none", input_size=32, embedding_head_epochs=3, batch_size=16,
                   verbose=0, augment=Augment.off())
    t = train_model(dc, fc, progress=False)
    folder = write_float_bundle(t, tmp / "models" / "base", ["train", "--data", str(orig)])
    return folder, orig


def _drive_and_label(tmp: Path, bundle: Path) -> Path:
    """Frames of the new weed (and of charlock) saved with sidecars, then labelled tile by tile."""
    saver = TriggerSaver(tmp / "saved", run_id="field-pass")
    saver.describe_model("base", CLASSES)
    i = 0
    for cls in (NEW, "charlock"):
        for p in sorted((PHOTOS / cls).glob("*.jpg")):
            img = cv2.resize(cv2.imread(str(p)), (96, 96))
            for k in range(4):
                i += 1
                t = i * 5_000_000_000  # 5 s apart: a group each (2 s windows)
                frame = Frame(np.ascontiguousarray(np.rot90(img, k)), i, t, "camera 0")
                saver.save("sample", frame, Decision(i, t, 0.2, False, False, "maize", 0.5))
    store = LabelStore(tmp / "saved", tmp / "labelled", read_manifest(bundle))
    for f in store.frames():
        truth = NEW if f.sidecar.frame <= 8 else "charlock"
        store.label(f.key, 0, "wild_cleavers" if truth == NEW else truth, "weed" if truth == NEW else None)
    return tmp / "labelled"


@pytest.mark.slow
def test_fine_tune_from_a_bundle_on_labelled_frames_mixed_with_the_original_photos(bundle, tmp_path, capsys):
    b, orig = bundle
    m = read_manifest(b)
    assert m.trained_weights is not None and (b / m.trained_weights.file).is_file()
    new = _drive_and_label(tmp_path, b)
    roles = {r["class"]: r["role"] for r in csv.DictReader((new / ROLES_FILE).open())}
    assert roles == {"wild_cleavers": "weed", "charlock": "weed"}  # the new class's role, and the bundle's
    argv = ["train", "--from-bundle", str(b), "--data", str(new), "--mix-with", str(orig), "--roles",
            str(new / ROLES_FILE), "--mode", "features", "--val", "0.25", "--test", "0.25", "--batch-size", "16",
            "--out", str(tmp_path / "models"), "--name", "tuned", "--representative", "16", "--allow-quant-drop",
            "--no-augment", "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    tuned = load_bundle(tmp_path / "models" / "tuned")
    t = tuned.manifest
    assert t.labels == sorted([*CLASSES, "background", "wild_cleavers"])
    assert "wild_cleavers" in t.weed_labels and set(t.crop_labels) == {"maize", "sugar_beet"}
    assert t.background_labels == ["background"] and t.input.height == m.input.height == 32
    assert t.backbone == m.backbone and t.trained_weights is not None  # it can be fine-tuned again
    rec = t.training
    assert rec["from_bundle"]["bundle"] == "base" and rec["from_bundle"]["keras_sha256"] == m.trained_weights.sha256
    assert rec["command"].startswith("weed-train train --from-bundle ") and "--mix-with" in rec["command"]
    assert rec["mix_with"] and rec["counts"]["train"]["wild_cleavers"] > 0
    assert any("fine-tuned from bundle base" in n for n in rec["notes"])
    assert any("head started from the bundle's" in n for n in rec["notes"])
    doc = json.loads((tmp_path / "models" / "tuned" / "metrics.json").read_text())
    assert "wild_cleavers" in doc["labels"] and doc["models"][doc["main_model"]]["test"]["n_plant_photos"] > 0
    assert "bundle written" in capsys.readouterr().out and (tmp_path / "models" / "tuned" / "report.md").is_file()


def test_initial_head_copies_the_known_classes_rows_and_starts_new_ones_at_zero():
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)  # 2 features, classes a b c
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    k, b = initial_head(("a", "b", "c"), kernel, bias, ("a", "c", "new", "b"))
    assert k.tolist() == [[0, 2, 0, 1], [3, 5, 0, 4]] and b.tolist() == [0.5, 2.0, -1.0, -1.0]


def _new_data(tmp: Path) -> Path:
    return _rotations(tmp / "new", ("charlock", "maize"))


@pytest.mark.parametrize("damage, words", [
    (None, "carries no trained Keras model"),  # the colour-toy bundle has none
    ("missing", "does not exist"),
    ("changed", "the manifest says"),
])
def test_a_bundle_without_its_keras_model_cannot_be_fine_tuned(bundle, tmp_path, damage, words, capsys):
    if damage is None:
        b = TOY_BUNDLE
    else:
        b = tmp_path / "b"
        shutil.copytree(bundle[0], b)
        if damage == "missing":
            (b / "model.keras").unlink()
        else:
            with (b / "model.keras").open("ab") as f:
                f.write(b"x")
    rc = cli.main(["train", "--from-bundle", str(b), "--data", str(_new_data(tmp_path)), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == EXIT_BUNDLE and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_the_bundles_classes_need_photos(bundle, tmp_path, capsys):
    """Without the original photos mixed in, the new model would forget fat_hen and sugar_beet: refused."""
    rc = cli.main(["train", "--from-bundle", str(bundle[0]), "--data", str(_new_data(tmp_path)), "--val", "0.25",
                   "--test", "0.25", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_BUNDLE and "'fat_hen'" in err and "--mix-with" in err, err


def test_scratch_mode_does_not_go_with_from_bundle(bundle, tmp_path, capsys):
    rc = cli.main(["train", "--from-bundle", str(bundle[0]), "--data", str(_new_data(tmp_path)), "--mode", "scratch"])
    assert rc == 3 and "--mode scratch" in capsys.readouterr().err
