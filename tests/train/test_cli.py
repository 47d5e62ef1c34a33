"""`weed-train` wiring that needs no training: parsing, errors, background, weights list, gate exit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from train import cli

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"


def test_train_needs_data(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train"])
    assert e.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_missing_folder_is_a_config_error(tmp_path, capsys):
    rc = cli.main(["background", "--data", str(tmp_path / "none"), "--weeds", "x", "--out", str(tmp_path / "bg")])
    assert rc == 3
    err = capsys.readouterr().err
    assert "does not exist" in err and "one sub-folder per class" in err


def _rotated_set(root: Path) -> Path:
    """Grass photos (which have plant-free gravel) x 4 rotations: 8 photos per class."""
    import cv2
    import numpy as np

    for cls in ("black_grass", "loose_silky_bent", "common_wheat"):
        (root / cls).mkdir(parents=True)
        for p in sorted((PHOTOS / cls).glob("*.jpg")):
            img = cv2.imread(str(p))
            for k in range(4):
                cv2.imwrite(str(root / cls / f"{p.stem}_r{k}.png"), np.rot90(img, k))
    return root


def test_background_command_writes_patches_per_split(tmp_path, capsys):
    out = tmp_path / "bg"
    data = _rotated_set(tmp_path / "data")
    rc = cli.main([
        "background", "--data", str(data), "--roles", str(PHOTOS / "classes.csv"), "--input-size", "48",
        "--val", "0.25", "--test", "0.25", "--background-fraction", "2", "--out", str(out),
    ])
    assert rc == 0
    rows = list(csv.DictReader((out / "patches.csv").open()))
    assert rows and all((out / r["path"]).is_file() for r in rows)
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    assert "background patches" in capsys.readouterr().out


def test_weights_list(capsys):
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "torchvision-imagenet1k-v1" in out and "NOT shippable" in out  # xception's source


def test_gate_failure_exits_nonzero():
    from edge.core.errors import WeedDetectorError
    from train.export import EXIT_QUANT_GATE
    from train.runs import RunResult

    res = RunResult(bundle_dir=Path("x"), metrics={}, gate_passed=False, gate_message="species 2.00 points")
    with pytest.raises(WeedDetectorError) as e:
        cli.check_gate(res, allow_quant_drop=False)
    assert e.value.exit_code == EXIT_QUANT_GATE and "--allow-quant-drop" in str(e.value)
    cli.check_gate(res, allow_quant_drop=True)  # allowed: no error


def test_refit_runs_the_epochs_validation_chose():
    from train.fit import FitConfig, chosen_epochs, refit_config

    history = {
        "phase": ["head"] * 4 + ["finetune"] * 6,
        "val_loss": [1.0, 0.8, 0.7, 0.75, 0.9, 0.6, 0.5, 0.55, 0.58, 0.6],
    }
    assert chosen_epochs(history) == {"head": 3, "finetune": 3}
    rc = refit_config(FitConfig(epochs=12, embedding_head_epochs=60, refit=True), history)
    assert (rc.embedding_head_epochs, rc.epochs, rc.refit) == (3, 3, False)
    rc = refit_config(FitConfig(head_on_embeddings=False, head_epochs=5), history)
    assert (rc.head_epochs, rc.epochs) == (3, 3)
    with pytest.raises(Exception, match="--refit works with"):
        refit_config(FitConfig(mode="logreg"), history)


@pytest.mark.parametrize("text,value", [("1", 0.01), ("3%", 0.03), ("0.5 %", 0.005), ("0", 0.0)])
def test_percent_limits(text, value):
    assert cli._percent(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["one", "101", "-1"])
def test_percent_limits_refuse_nonsense(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="percent"):
        cli._percent(text)


@pytest.mark.parametrize("words,refit", [(["train", "--data", "d"], False), (["train", "--data", "d", "--refit"], True),
                                         (["compare", "--data", "d"], False)])
def test_fit_config_of_every_training_command_says_whether_to_refit(words, refit):
    assert cli._fit_config(cli.build_parser().parse_args(words)).refit is refit


def _garbage_set(root: Path) -> Path:
    """Two classes whose every 'photo' is a .jpg of random bytes."""
    for cls in ("charlock", "maize"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg %d" % i)
    return root


LATIN1 = "class,role\nma\xefze,crop\ncharlock,weed\n".encode("latin-1")


def _case_undecodable(tmp: Path) -> list[str]:
    return ["--data", str(_garbage_set(tmp / "d")), "--weeds", "charlock"]


def _case_roles_not_utf8(tmp: Path) -> list[str]:
    (tmp / "roles.csv").write_bytes(LATIN1)
    return ["--data", str(_rotated_set(tmp / "d")), "--roles", str(tmp / "roles.csv")]


def _case_list_csv_not_utf8(tmp: Path) -> list[str]:
    _rotated_set(tmp / "d")
    (tmp / "list.csv").write_bytes("path,label\nd/black_grass/x.png,bl\xe4ck\n".encode("latin-1"))
    return ["--csv", str(tmp / "list.csv"), "--weeds", "black_grass"]


def _case_groups_not_utf8(tmp: Path) -> list[str]:
    data = _rotated_set(tmp / "d")
    (data / "groups.csv").write_bytes("path,group\nblack_grass/a.png,gr\xfcn\n".encode("latin-1"))
    return ["--data", str(data), "--weeds", "black_grass,loose_silky_bent"]


def _case_single_class(tmp: Path) -> list[str]:
    data = _rotated_set(tmp / "d")
    for cls in ("loose_silky_bent", "common_wheat"):
        for f in (data / cls).iterdir():
            f.unlink()
        (data / cls).rmdir()
    return ["--data", str(data), "--weeds", "black_grass", "--background", "none"]


def _case_weights_missing(tmp: Path) -> list[str]:
    # the weights are checked before the photos are even scanned: these are all undecodable
    return ["--data", str(_garbage_set(tmp / "d")), "--weeds", "charlock", "--weights", "default"]


def _case_option(*words: str):
    def case(tmp: Path) -> list[str]:
        return ["--data", str(tmp / "never-read"), "--weeds", "charlock", *words]

    case.__name__ = "_case" + "".join(words)
    return case


@pytest.mark.parametrize("setup,code,phrase", [
    (_case_undecodable, 3, "none of the 6 photos could be decoded"),
    (_case_roles_not_utf8, 3, "is not UTF-8 text"),
    (_case_list_csv_not_utf8, 3, "is not UTF-8 text"),
    (_case_groups_not_utf8, 3, "is not UTF-8 text"),
    (_case_single_class, 3, "needs at least two classes, a weed and a crop or background"),
    (_case_weights_missing, 3, "weed-train weights install mobilenet_v2"),
    (_case_option("--input-size", "0"), 2, "--input-size: 0 is out of range: use a value >= 1"),
    (_case_option("--input-size", "16"), 3, "--input-size 16 is too small for mobilenet_v2"),
    (_case_option("--epochs", "-1"), 2, "--epochs: -1 is out of range: use a value >= 1"),
    (_case_option("--batch-size", "0"), 2, "--batch-size: 0 is out of range"),
    (_case_option("--head-epochs", "two"), 2, "--head-epochs: 'two' is not a whole number"),
    (_case_option("--lr", "nan"), 2, "--lr: nan is out of range: use a value > 0"),
    (_case_option("--val", "0.5"), 2, "--val: 0.5 is out of range: use a value > 0 and < 0.5"),
    (_case_option("--dropout", "1"), 2, "--dropout: 1 is out of range"),
], ids=lambda v: v.__name__[len("_case"):] if callable(v) else None)
def test_bad_training_input_is_one_line_with_its_exit_code(setup, code, phrase, tmp_path, monkeypatch, capsys):
    """Each bad input fails before any model is built or trained: one stderr line naming it, its exit code."""
    monkeypatch.setenv("WEED_DETECTOR_CACHE", str(tmp_path / "empty-weights-cache"))
    argv = ["train", "--weights", "none", "--val", "0.25", "--test", "0.25", "--quiet", "--out", str(tmp_path / "m")]
    argv += setup(tmp_path)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse: usage error
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("weed-train") and phrase in last, err
