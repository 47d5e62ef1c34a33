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


BIG_FIELD = "n" * 200_000  # over the csv module's 131,072-character field limit


def _case_roles_field_too_big(tmp: Path) -> list[str]:
    (tmp / "roles.csv").write_text(f"class,role\n{BIG_FIELD},weed\n")
    return ["--data", str(_rotated_set(tmp / "d")), "--roles", str(tmp / "roles.csv")]


def _case_list_csv_field_too_big(tmp: Path) -> list[str]:
    _rotated_set(tmp / "d")
    (tmp / "list.csv").write_text(f"path,label\nd/black_grass/x.png,black_grass\n{BIG_FIELD},x\n")
    return ["--csv", str(tmp / "list.csv"), "--weeds", "black_grass"]


def _case_groups_field_too_big(tmp: Path) -> list[str]:
    data = _rotated_set(tmp / "d")
    (data / "groups.csv").write_text(f'path,group\nblack_grass/a.png,"{BIG_FIELD}\n')  # a quote left open
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
    (_case_roles_field_too_big, 3, "roles.csv line 2: field larger than field limit (131072)"),
    (_case_list_csv_field_too_big, 3, "list.csv line 3: field larger than field limit (131072)"),
    (_case_groups_field_too_big, 3, "groups.csv line 2: field larger than field limit (131072)"),
    (_case_single_class, 3, "needs at least two classes, a weed and a crop or background"),
    (_case_weights_missing, 3, "weed-train weights install mobilenet_v2"),
    (_case_option("--input-size", "0"), 2, "--input-size: 0 is out of range: use a value >= 1"),
    (_case_option("--input-size", "16"), 3, "--input-size 16 is too small for mobilenet_v2"),
    (_case_option("--input-size", "100000"), 2, "--input-size: 100000 is out of range: use a value >= 1 and <= 1024"),
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


# --------------------------------------------------------------------------- weed-train threshold: metrics.json

TOY_BUNDLE = PHOTOS.parent / "bundles" / "colour-toy"
EXIT_BUNDLE = 4


def _metrics(**over) -> dict:
    """A metrics.json with what `weed-train threshold` reads (the toy's labels), ``over`` replacing parts."""
    model = {"threshold": 0.5, "val": {}, "test": {}}
    doc = {"labels": ["soil", "crop", "weed"], "main_model": "int8", "models": {"int8": model, "float32": model},
           "gate": {"allowed": False}, "training": {"command": "weed-train train --data d --weeds weed"}}
    return {**doc, **over}


def _json(doc) -> bytes:
    import json

    return json.dumps(doc).encode()


@pytest.mark.parametrize("content, phrase", [
    (None, "metrics.json is missing"),
    (_json(_metrics())[:-9], "metrics.json is not valid JSON"),
    (b"[]", "metrics.json must hold a JSON object, not list"),
    (b'{"labels": ' + b"9" * 5000 + b"}", "metrics.json is not valid JSON (Exceeds the limit"),
    (b"{}", "metrics.json: field 'labels': Field required"),
    (b"[" * 100_000 + b"]" * 100_000, "metrics.json nests arrays or objects too deeply"),
    (b'{"labels": ["w\xe4ed"]}', "metrics.json is not UTF-8 text"),
    (_json(_metrics(training={"command": 5})), "field 'training.command': Input should be a valid string"),
    (_json(_metrics(main_model="float16")), "no record of the model(s) ['float16']"),
    (_json({"training": {"command": "weed-train train --data d --weeds weed"}}), "field 'labels': Field required"),
    (_json(_metrics(training={"command": "weed-train train --data 'd --weeds weed"})),
     "the recorded training command cannot be split into words (No closing quotation)"),
    (_json(_metrics(training={"command": "weed-train train --weeds weed"})),
     "not one this weed-train takes (weed-train train: error: one of the arguments --data --csv is required)"),
], ids=["missing", "truncated", "list", "huge-int", "empty", "deep", "latin1", "command-5", "no-main-model", "no-labels",
        "open-quote", "no-data"])
def test_a_bad_metrics_json_is_a_bundle_error(content, phrase, tmp_path, capsys):
    """`weed-train threshold` reads the bundle's metrics.json first: what is wrong with it, one line, exit 4."""
    import shutil

    bundle = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, bundle)
    if content is not None:
        (bundle / "metrics.json").write_bytes(content)
    rc = cli.main(["threshold", "--model", str(bundle), "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_BUNDLE and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("weed-train: error: ") and str(bundle / "metrics.json") in last and phrase in last, err


def test_a_fifo_as_metrics_json_is_named_and_never_opened(tmp_path):
    """A real weed-train: opening the FIFO would block it forever (the timeout fails the test instead)."""
    import os
    import shutil
    import subprocess
    import sys

    bundle = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, bundle)
    os.mkfifo(bundle / "metrics.json")
    proc = subprocess.run([sys.executable, "-m", "train.cli", "threshold", "--model", str(bundle)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BUNDLE and "Traceback" not in proc.stderr, proc.stderr
    assert "metrics.json is a FIFO (named pipe), not a regular file" in proc.stderr


# --------------------------------------------------------------------------- --out, --seed, the bundle folder


def _toy_set(root: Path) -> Path:
    """Photos the colour-toy bundle classifies by their mean colour (tests/conftest.py)."""
    import cv2

    from tests.conftest import BLUE, GREEN, solid

    for label, colour in (("weed", GREEN), ("crop", BLUE)):
        (root / label).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / label / f"{i}.png"), solid(colour, 40 + i, 40))
    return root


@pytest.mark.parametrize("command", ["evaluate", "robustness"])
@pytest.mark.parametrize("out, phrase", [
    ("plainfile", "is a regular file, not a folder"),
    ("plainfile/sub", "cannot be created (Not a directory)"),
    ("/proc/nope", "cannot be created (No such file or directory)"),
])
def test_an_out_that_cannot_be_created_is_refused_before_the_work(command, out, phrase, tmp_path, capsys):
    (tmp_path / "plainfile").write_text("")
    out = out if out.startswith("/") else str(tmp_path / out)
    rc = cli.main([command, "--model", str(TOY_BUNDLE), "--data", str(_toy_set(tmp_path / "d")), "--out", out])
    captured = capsys.readouterr()
    assert rc == 3 and "Traceback" not in captured.err, captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("weed-train: error: --out ") and phrase in last, captured.err
    assert "crop sprayed" not in captured.out  # nothing was scored


@pytest.mark.parametrize("command, make, phrase", [
    ("compare", lambda p: p.write_text(""), "--out {p} is a regular file, not a folder"),
    ("augment-bench", lambda p: p.mkdir(), "cannot write the --out file '{p}': it is a folder"),
])
def test_compare_and_augment_bench_check_their_out_first(command, make, phrase, tmp_path, capsys):
    out = tmp_path / "out"
    make(out)
    rc = cli.main([command, "--data", str(_toy_set(tmp_path / "d")), "--weeds", "weed", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and phrase.format(p=out) in err and "Traceback" not in err, err


@pytest.mark.parametrize("row", ["train,a.jpg,1,2", "train,a.jpg,x,2,3", 'train,,,,,"[[1]]",3'])
def test_a_patches_file_with_a_bad_row_says_which_line(row, tmp_path):
    from train.background import read_patches
    from train.data import DataError

    f = tmp_path / "patches.csv"
    f.write_text("split,source,x,y,side,pieces,grid\n" if "[[" in row else "split,source,x,y,side\n")
    f.write_text(f.read_text() + row + "\n")
    with pytest.raises(DataError, match="line 2 is not a patch"):
        read_patches(f)


@pytest.mark.parametrize("extra, draw", [([], 7), (["--train-seed", "3"], 3)])
def test_train_seed_changes_the_training_draws_only(extra, draw):
    a = cli.build_parser().parse_args(["train", "--data", "d", "--weeds", "w", "--seed", "7", *extra])
    fc, dc = cli._fit_config(a), cli._data_config(a)
    assert dc.seed == 7 and fc.seed == 7  # the split, the background patches, the evaluation's perturbed copies
    assert fc.draw_seed == draw and fc.as_dict()["train_seed"] == (None if not extra else 3)


@pytest.mark.parametrize("words, phrase", [
    (["robustness", "--model", "m", "--data", "d", "--seed", "-1"], "--seed: -1 is out of range: use a value >= 0"),
    (["train", "--data", "d", "--weeds", "w", "--seed", "-1"], "--seed: -1 is out of range: use a value >= 0"),
    (["train", "--data", "d", "--weeds", "w", "--train-seed", "-2"], "--train-seed: -2 is out of range: use a value >= 0"),
    (["background", "--data", "d", "--weeds", "w", "--out", "o", "--input-size", "1025"],
     "--input-size: 1025 is out of range: use a value >= 1 and <= 1024 (pixels)"),
    (["train", "--data", "d", "--weeds", "w", "--export", "int8,fp16"],
     "--export: unknown format fp16: use int8, float16, float32"),
])
def test_seeds_and_input_sizes_are_checked_at_parse_time(words, phrase, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(words)
    assert e.value.code == 2 and phrase in capsys.readouterr().err


def _bundle_folder(tmp_path: Path) -> Path:
    """models/plant-seedlings-mnv2 under tmp_path, holding a bundle (the toy's files): a checkout's default."""
    import shutil

    folder = tmp_path / "models" / "plant-seedlings-mnv2"
    shutil.copytree(TOY_BUNDLE, folder)
    return folder


@pytest.mark.parametrize("flags, phrase", [
    ([], "models/plant-seedlings-mnv2 already holds a bundle or other files"),  # the defaults: the shipped bundle
    (["--out", "models", "--name", "plant-seedlings-mnv2"], "pass --overwrite to replace it"),
    (["--overwrite"], "none of the 6 photos could be decoded"),  # past the check: the data's own error
], ids=["defaults", "named", "overwrite"])
def test_training_into_a_folder_that_holds_a_bundle_needs_overwrite(flags, phrase, tmp_path, monkeypatch, capsys):
    """Run from a checkout's root without --out/--name, weed-train train would replace the shipped bundle: refused
    before anything is read or removed; --overwrite lets it run (here into bad data: nothing removed either)."""
    folder = _bundle_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["train", "--data", str(_garbage_set(tmp_path / "d")), "--weeds", "charlock", "--weights", "none",
                   "--quiet", *flags])
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert phrase in err.strip().splitlines()[-1], err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("make, phrase", [
    (lambda f: f.mkdir(parents=True), "none of the 6 photos could be decoded"),  # an empty folder holds no bundle
    (lambda f: (f.parent.mkdir(parents=True), f.write_text(""))[0], "is a regular file, not a folder"),
], ids=["empty-folder", "a-file"])
def test_the_bundle_folder_is_checked_before_the_run(make, phrase, tmp_path, capsys):
    make(tmp_path / "m" / "b")
    rc = cli.main(["train", "--data", str(_garbage_set(tmp_path / "d")), "--weeds", "charlock", "--weights", "none",
                   "--quiet", "--out", str(tmp_path / "m"), "--name", "b"])
    err = capsys.readouterr().err
    assert rc == 3 and phrase in err.strip().splitlines()[-1], err


# --------------------------------------------------------------------------- photos OpenCV will not decode


def test_a_photo_declaring_more_than_2_30_pixels_is_skipped_like_any_undecodable_one(tmp_path, caplog, capsys):
    from tests.train.test_data import png_declaring

    data = _toy_set(tmp_path / "d")
    png_declaring(data / "weed" / "huge.png", 100_000, 100_000)
    assert cli.main(["evaluate", "--model", str(TOY_BUNDLE), "--data", str(data)]) == 0
    assert "species accuracy (plants only): 100.00 % over 4 photos" in capsys.readouterr().out
    assert f"skipping {data / 'weed' / 'huge.png'}: not a decodable image" in caplog.text


@pytest.mark.parametrize("name, content, phrase", [
    ("typo.npz", None, "typo.npz does not exist"),
    ("junk.npz", b"not a zip", "junk.npz is not an .npz (zip) archive"),
    ("junk.weights.h5", b"not hdf5 at all", "junk.weights.h5 is not an HDF5 file"),
], ids=["missing-npz", "junk-npz", "junk-h5"])
def test_a_bad_weights_file_is_named_before_the_photos_are_scanned(name, content, phrase, tmp_path, capsys):
    """The photos here cannot be decoded: the weights' error coming first shows it is checked before the scan."""
    weights = tmp_path / name
    if content is not None:
        weights.write_bytes(content)
    rc = cli.main(["train", "--data", str(_garbage_set(tmp_path / "d")), "--weeds", "charlock", "--weights",
                   str(weights), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert phrase in err.strip().splitlines()[-1], err


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_a_damaged_weights_archive_is_a_weights_error(compressed, tmp_path):
    """An .npz that looks like a zip (its directory intact) but whose data is cut or overwritten fails when read: a
    WeightsError naming the file (a compressed member fails in zlib)."""
    import numpy as np

    from train.weights import WeightsError, arrays_from_npz, read_weights_file

    full = tmp_path / "full.npz"
    (np.savez_compressed if compressed else np.savez)(full, a=np.random.default_rng(0).normal(size=100_000))
    data = bytearray(full.read_bytes())
    bad = tmp_path / "bad.npz"
    if compressed:
        data[200:2200] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()  # zlib.error
        bad.write_bytes(bytes(data))
    else:
        bad.write_bytes(bytes(data[:1000] + data[-200:]))
    with pytest.raises(WeightsError, match="bad.npz cannot be used"):
        read_weights_file(bad, arrays_from_npz)


@pytest.mark.parametrize("flags, phrase", [
    (["--name", "../../x"], "--name '../../x' is not a folder name"),
    (["--background-fraction", "1e9"], "--background-fraction 1e+09 is out of range"),
])
def test_a_bundle_name_or_background_share_a_run_cannot_use_is_refused_before_the_scan(flags, phrase, tmp_path,
                                                                                       capsys):
    """Checked by cmd_train, not the parser: weed-train threshold/robustness parse a bundle's recorded command again,
    and an older bundle may record --name sub/x (accepted then)."""
    rc = cli.main(["train", "--data", str(_garbage_set(tmp_path / "d")), "--weeds", "charlock", "--weights", "none",
                   "--out", str(tmp_path / "runs"), "--quiet", *flags])
    err = capsys.readouterr().err
    assert rc == 3 and phrase in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()
    words = ["weed-train", "train", "--data", "d", "--weeds", "w", "--name", "sub/x", "--background-fraction", "25"]
    recorded = cli._recorded_train_args(" ".join(words), tmp_path / "metrics.json", "why")
    assert recorded.name == "sub/x" and recorded.background_fraction == 25
