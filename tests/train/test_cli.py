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
