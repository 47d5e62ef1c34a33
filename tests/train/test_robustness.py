"""The robustness suite (train.robustness): per-row metrics, the worst row, the table, `weed-train robustness`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from train import robustness as rb
from train.cli import main
from train.data import Roles
from train.perturb import SUITE

DATA = Path(__file__).resolve().parent.parent / "data"
PHOTOS = DATA / "photos"
TOY = DATA / "bundles" / "colour-toy"
METRIC_KEYS = [m.key for m in rb.METRICS]


def _rate(k: int, n: int) -> dict:
    from train.evaluate import wilson

    return wilson(k, n).as_dict()


def _row(cvw: tuple[int, int], species: tuple[int, int], miss: tuple[int, int], sprayed: tuple[int, int],
         bg: tuple[int, int] = (0, 0)) -> dict:
    return {"crop_vs_weed_accuracy": _rate(*cvw), "species_accuracy": _rate(*species), "weed_miss": _rate(*miss),
            "crop_sprayed": _rate(*sprayed), "background_fired": _rate(*bg)}


# A hand-made table: clean is worst at species (it must not count), blur and noise tie on weed miss.
HAND_MADE = {
    "clean": _row((98, 100), (50, 100), (1, 50), (1, 50)),
    "blur": _row((90, 100), (80, 100), (3, 50), (10, 50), (1, 10)),
    "noise": _row((95, 100), (70, 100), (3, 50), (20, 50), (0, 10)),
    "dark": _row((97, 100), (90, 100), (2, 50), (5, 50), (0, 10)),
}


@pytest.mark.parametrize("metric, value, row", [
    ("crop_vs_weed_accuracy", 0.90, "blur"),  # the lowest accuracy
    ("species_accuracy", 0.70, "noise"),  # clean's 0.50 is the reference, not a candidate
    ("weed_miss", 0.06, "blur"),  # a tie: the first in table order
    ("crop_sprayed", 0.40, "noise"),  # the highest error rate
    ("background_fired", 0.10, "blur"),
])
def test_worst_over_the_perturbed_rows_of_a_hand_made_table(metric, value, row):
    assert rb.worst(HAND_MADE)[metric] == {"value": pytest.approx(value), "row": row}


def test_worst_skips_rows_without_photos_for_a_metric():
    rows = {"clean": _row((1, 1), (1, 1), (0, 1), (0, 0)), "blur": _row((1, 1), (0, 0), (1, 1), (0, 0))}
    w = rb.worst(rows)
    assert w["species_accuracy"] == {"value": None, "row": None}  # blur had no species to score
    assert w["crop_sprayed"] == {"value": None, "row": None}
    assert w["weed_miss"] == {"value": 1.0, "row": "blur"}


def test_row_metrics_of_hand_made_scores_count_unknown_classes_in_the_sprayer_rates_only():
    labels = ["background", "maize", "charlock"]
    roles = Roles(weed=("charlock",), crop=("maize",), background=("background",))
    # maize -> sprayed; charlock -> sprayed; an unknown weed -> missed; an unknown crop -> not sprayed; background -> fired
    probs = np.array([[0.1, 0.3, 0.6], [0.0, 0.2, 0.8], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.1, 0.7]], np.float32)
    photos = rb.Photos([], np.array([1, 2, -1, -1, 0]), np.array([0, 1, 1, 0, -1]), "hand-made")
    m = rb.row_metrics(probs, photos, labels, roles, threshold=0.5)
    assert (m["species_accuracy"]["k"], m["species_accuracy"]["n"]) == (1, 2)  # maize called charlock, charlock right
    assert (m["crop_vs_weed_accuracy"]["k"], m["crop_vs_weed_accuracy"]["n"]) == (2, 4)
    assert (m["weed_miss"]["k"], m["weed_miss"]["n"]) == (1, 2)
    assert (m["crop_sprayed"]["k"], m["crop_sprayed"]["n"]) == (1, 2)
    assert (m["background_fired"]["k"], m["background_fired"]["n"]) == (1, 1)


def test_table_has_a_line_per_row_and_the_worst_line():
    rob = {"rows": {k: {"title": f"{k} title", **v} for k, v in HAND_MADE.items()}, "worst": rb.worst(HAND_MADE)}
    lines = rb.table(rob).splitlines()
    assert lines[0].startswith("| condition | crop-vs-weed | species | weed miss | crop sprayed | background fired |")
    assert lines[2] == "| clean title | 98.00 % | 50.00 % | 2.00 % (1/50) | 2.00 % (1/50) | n/a |"
    assert len(lines) == 2 + len(HAND_MADE) + 1
    assert lines[-1] == ("| **worst perturbed row** | 90.00 % (blur) | 70.00 % (noise) | 6.00 % (blur) | "
                         "40.00 % (noise) | 10.00 % (blur) |")


def _solid_set(root: Path) -> Path:
    """Photos the colour-toy bundle classifies by their mean colour: weeds green enough in full light only."""
    colours = {"weed": [(80, 140, 80), (90, 145, 85)], "crop": [(50, 60, 200), (60, 70, 190)]}  # RGB
    for label, rgbs in colours.items():
        (root / label).mkdir(parents=True)
        for i, rgb in enumerate(rgbs):
            cv2.imwrite(str(root / label / f"{i}.png"), np.full((40, 48, 3), rgb[::-1], np.uint8))
    return root


def test_the_suite_runs_through_the_edge_runtime_and_names_the_row_that_fails(tmp_path, capsys):
    """The toy calls a view a weed when G - (R + B) / 2 > 40: x0.6 light takes these weeds below that."""
    data = _solid_set(tmp_path / "data")
    assert main(["robustness", "--model", str(TOY), "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    rob = json.loads((tmp_path / "out" / "robustness.json").read_text())["robustness"]
    rows = rob["rows"]
    assert rows["clean"]["weed_miss"]["k"] == 0 and rows["clean"]["species_accuracy"]["rate"] == 1.0
    assert rows["dark"]["weed_miss"]["k"] == 2 and rows["dark"]["crop_sprayed"]["k"] == 0
    assert rob["worst"]["weed_miss"] == {"value": 1.0, "row": "dark"}
    assert rob["worst"]["species_accuracy"] == {"value": 0.5, "row": "dark"}  # the weeds called soil, the crops right
    # uniform colours keep their class under blur, noise, shift, scale, the warm cast and JPEG
    assert all(rows[name]["crop_vs_weed_accuracy"]["rate"] == 1.0 for name in rows if name != "dark")
    assert "| dark (x0.6) | 50.00 % | 50.00 % | 100.00 % (2/2) | 0.00 % (0/2) | n/a |" in capsys.readouterr().out


def test_command_on_the_toy_bundle_and_the_test_photos(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["robustness", "--model", str(TOY), "--data", str(PHOTOS), "--roles", str(PHOTOS / "classes.csv"),
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert all(f"| {p.title} |" in printed for p in SUITE) and "| **worst perturbed row** |" in printed
    doc = json.loads((out / "robustness.json").read_text())
    assert doc["bundle"] == "colour-toy" and doc["command"].startswith("weed-train robustness --model")
    rob = doc["robustness"]
    assert {"photos", "n_photos", "model_file", "threshold", "input", "seed", "strengths", "ground", "rows",
            "worst"} <= set(rob)
    assert list(rob["rows"]) == [p.name for p in SUITE] and list(rob["worst"]) == METRIC_KEYS
    assert rob["n_photos"] == 24 and rob["threshold"] == 0.5 and rob["input"] == [32, 32]
    for row in rob["rows"].values():
        assert set(METRIC_KEYS) <= set(row) and row["crop_sprayed"]["n"] == 6 and row["weed_miss"]["n"] == 18
        assert row["species_accuracy"]["n"] == 0  # no photo's class is a label of the toy
    assert rob["rows"]["shift"]["strength"] == pytest.approx(8.0)  # 40 px at 160 px is 8 px at its 32 px
    assert sum(rob["ground"].values()) == 24
    assert (out / "robustness.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--data", str(PHOTOS)], "are not labels of bundle 'colour-toy'"),
    (["--data", str(PHOTOS), "--split", "test"], "records no `weed-train train` command"),
    (["--data", str(PHOTOS), "--split", "test", "--roles", str(PHOTOS / "classes.csv")], "--roles is for --split all"),
])
def test_command_errors_say_what_to_do(args, message, capsys):
    assert main(["robustness", "--model", str(TOY), *args]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar: one line
    assert last.startswith("weed-train: error: ") and message in last


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_a_threshold_that_is_not_a_probability_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["robustness", "--model", str(TOY), "--data", str(PHOTOS), "--threshold", value])
    assert e.value.code == 2 and "a probability, e.g. 0.4" in capsys.readouterr().err
