"""Metrics on hand-made examples: species accuracy, sprayer rates, CIs, thresholds, gate."""

from __future__ import annotations

import numpy as np
import pytest

from train import evaluate as ev
from train.data import Roles
from train.evaluate import quant_gate
from train.export import gate_record

LABELS = ["background", "maize", "charlock", "fat_hen"]
ROLES = Roles(weed=("charlock", "fat_hen"), crop=("maize",), background=("background",))


def onehot(i, p=0.9):
    v = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1), np.float32)
    v[i] = p
    return v


def test_hand_made_confusion():
    # true:      maize maize charlock charlock fat_hen  background background
    # predicted: maize fat_hen charlock fat_hen maize background charlock
    y = np.array([1, 1, 2, 2, 3, 0, 0])
    pred = [1, 3, 2, 3, 1, 0, 2]
    probs = np.stack([onehot(i) for i in pred])
    m = ev.evaluate(probs, y, LABELS, ROLES, threshold=0.5)
    # species accuracy counts only the 5 plant photos: maize, charlock right -> 2/5
    assert m["species_accuracy"] == pytest.approx(2 / 5)
    assert m["n_plant_photos"] == 5 and m["n_background"] == 2
    # sprayed = weed score >= 0.5: maize->fat_hen sprayed (crop sprayed 1/2);
    # weeds: charlock, charlock->fat_hen flagged; fat_hen->maize missed (weed miss 1/3)
    assert m["crop_sprayed"]["k"] == 1 and m["crop_sprayed"]["n"] == 2
    assert m["weed_miss"]["k"] == 1 and m["weed_miss"]["n"] == 3
    assert m["crop_vs_weed_accuracy"] == pytest.approx(3 / 5)
    # background: one of two fired a valve, one recognised
    assert m["background"]["fired"]["k"] == 1 and m["background"]["recall"] == pytest.approx(0.5)
    cm = np.array(m["confusion_matrix"])
    assert cm[1, 3] == 1 and cm[0, 2] == 1 and cm.sum() == 7
    assert m["per_class"]["maize"]["precision"] == pytest.approx(0.5)  # predicted maize twice, right once
    assert m["per_class"]["charlock"]["recall"] == pytest.approx(0.5)
    text = ev.confusion_text(m["confusion_matrix"], LABELS)
    assert "maize" in text and text.count("\n") == len(LABELS)


def test_weed_score_sums_weed_classes():
    probs = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    assert ev.weed_score(probs, LABELS, ROLES)[0] == pytest.approx(0.7)


def test_wilson_interval_known_values():
    r = ev.wilson(0, 100)
    assert r.low == 0.0 and r.high == pytest.approx(0.0370, abs=5e-4)
    r = ev.wilson(3, 100)  # 3 % with n=100: 1.03 % .. 8.45 %
    assert (r.low, r.high) == (pytest.approx(0.0103, abs=5e-4), pytest.approx(0.0845, abs=5e-4))
    assert ev.wilson(0, 0).n == 0


def test_threshold_sweep_and_choice():
    # weeds score 0.6..0.9, crops 0.1..0.3: any threshold in (0.3, 0.6] separates them
    y = np.array([2, 2, 2, 1, 1, 1])
    ws = [0.6, 0.75, 0.9, 0.1, 0.2, 0.3]
    probs = np.array([[0.0, 1 - w, w, 0.0] for w in ws], np.float32)
    sweep = ev.threshold_sweep(probs, y, LABELS, ROLES)
    perfect = [r["threshold"] for r in sweep if r["weed_miss"] == 0 and r["crop_sprayed"] == 0]
    assert perfect == [0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    assert ev.choose_threshold(sweep) in (0.45, 0.5)  # middle of the flat optimum
    # weighting misses heavily moves the choice towards catching every weed
    y2 = np.array([2, 1])
    probs2 = np.array([[0, 0.6, 0.4, 0], [0, 0.55, 0.45, 0]], np.float32)
    s2 = ev.threshold_sweep(probs2, y2, LABELS, ROLES)
    assert ev.choose_threshold(s2, miss_weight=10.0) <= 0.4


def test_threshold_limits_pick_among_the_thresholds_that_meet_them():
    """The shipped model's situation: the cost alone picks a threshold with no crop sprayed
    and 1.2 % weed miss; limits of 1 % / 3 % move it to where both are met."""
    rows = [
        {"threshold": 0.35, "weed_miss": 0.004, "crop_sprayed": 0.041, "background_fired": 0.0},
        {"threshold": 0.4, "weed_miss": 0.008, "crop_sprayed": 0.027, "background_fired": 0.0},
        {"threshold": 0.45, "weed_miss": 0.008, "crop_sprayed": 0.027, "background_fired": 0.0},
        {"threshold": 0.5, "weed_miss": 0.012, "crop_sprayed": 0.027, "background_fired": 0.0},
        {"threshold": 0.7, "weed_miss": 0.012, "crop_sprayed": 0.0, "background_fired": 0.0},
        {"threshold": 0.8, "weed_miss": 0.024, "crop_sprayed": 0.0, "background_fired": 0.0},
    ]
    assert ev.choose_threshold(rows) == 0.7
    assert ev.choose_threshold(rows, max_weed_miss=0.01, max_crop_sprayed=0.03) == 0.4
    assert ev.choose_threshold(rows, max_weed_miss=0.005) == 0.35  # one limit alone
    assert "among the thresholds with weed miss <= 1 % and crop sprayed <= 3 %" in ev.threshold_rule(
        1.0, 0.01, 0.03, rows, 0.4)
    # limits nobody meets: the weighted rule alone decides, and says so
    assert ev.choose_threshold(rows, max_weed_miss=0.001, max_crop_sprayed=0.001) == 0.7
    assert "no threshold met" in ev.threshold_rule(1.0, 0.001, 0.001, rows, 0.7)
    assert ev.threshold_rule(2.0, None, None, rows, 0.7).startswith("lowest 2 x weed miss")


def _paired(n: int, float_only: int, int8_only: int, metric: str = "species") -> tuple[dict, dict]:
    """float32 and int8 test metrics over ``n`` plant photos; in ``metric`` the models disagree on
    ``float_only`` (float32 right, int8 wrong) + ``int8_only`` photos, both right on the rest."""
    both = n - float_only - int8_only
    f = "1" * both + "1" * float_only + "0" * int8_only
    q = "1" * both + "0" * float_only + "1" * int8_only
    other = "1" * n

    def metrics(bits: str) -> dict:
        correct = {"species": other, "crop_vs_weed": other, metric: bits}
        return {"n_plant_photos": n, "correct": correct, "species_accuracy": correct["species"].count("1") / n,
                "crop_vs_weed_accuracy": correct["crop_vs_weed"].count("1") / n}
    return metrics(f), metrics(q)


@pytest.mark.parametrize("n,float_only,int8_only,metric,passed,test", [
    (300, 3, 0, "species", True, "points"),  # 1.00 point: not more than 1
    (300, 4, 0, "crop_vs_weed", False, "points"),  # 1.33 points
    (300, 3, 1, "species", True, "points"),  # 0.67 point
    (200, 0, 5, "species", True, "points"),  # int8 better
    (13, 1, 0, "species", True, "mcnemar"),  # 7.7 points, one photo: p = 1
    (100, 5, 1, "species", True, "mcnemar"),  # 4 points but p = 0.22
    (100, 8, 0, "crop_vs_weed", False, "mcnemar"),  # p = 0.008: significantly worse
    (150, 0, 8, "species", True, "mcnemar"),  # significant, but int8 is the better one
], ids=lambda v: str(v))
def test_quant_gate(n, float_only, int8_only, metric, passed, test):
    f, q = _paired(n, float_only, int8_only, metric)
    gate = quant_gate(f, q, max_drop=1.0)
    assert (gate.passed, gate.test) == (passed, test)
    assert gate.n_photos == n
    drop = 100.0 * (float_only - int8_only) / n
    assert (gate.species_drop if metric == "species" else gate.crop_vs_weed_drop) == pytest.approx(drop)
    assert ("McNemar" if test == "mcnemar" else "1-point rule") in gate.message()
    assert gate_record(gate, allowed=False)["test"] == test  # metrics.json says which one decided
    if test == "mcnemar":
        assert gate.discordant[metric] == [float_only, int8_only]
        assert f"{metric} {float_only} photos right only in float32, {int8_only} only in int8" in gate.message()


def test_confusion_png(tmp_path):
    p = ev.confusion_png([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
