"""Evaluation decides a photo exactly as edge-run decides a view: one rule (edge.decide.rule) for both."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.decide.decider import Decider
from train import evaluate as ev
from train.data import Roles
from tests.conftest import BLUE, GREEN, TOY_BUNDLE, solid

LABELS = ["background", "maize", "charlock", "fat_hen", "sugar_beet", "black_grass", "cleavers", "chickweed",
          "mayweed", "purse", "cranesbill", "silky_bent", "wheat"]
ROLES = Roles(weed=("charlock", "fat_hen", "black_grass", "cleavers", "chickweed", "mayweed", "purse", "cranesbill",
                    "silky_bent"), crop=("maize", "sugar_beet", "wheat"), background=("background",))

rows = st.lists(st.floats(0, 1, width=32), min_size=len(LABELS), max_size=len(LABELS)).map(
    lambda xs: np.array(xs, np.float32) / np.float32(max(sum(xs), 1e-6)))


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, min_size=1, max_size=20), st.floats(0, 1), st.none() | st.floats(0, 1), st.data())
def test_evaluation_sprays_what_the_edge_decider_sprays(photos, threshold, veto, data):
    probs = np.stack(photos)
    # a threshold on a photo's exact weed mass now and then: the boundary is where they could differ
    if data.draw(st.booleans()):
        threshold = float(ev.weed_score(probs, LABELS, ROLES)[data.draw(st.integers(0, len(photos) - 1))])
    decider = Decider(LABELS, ROLES.weed, threshold, crop_labels=ROLES.crop, crop_veto=veto)  # 1 of 1: no history
    edge = [decider.update(p, i, i).weed_frame for i, p in enumerate(probs)]
    assert list(ev.sprayed(probs, LABELS, ROLES, threshold, veto)) == edge
    y = np.array(data.draw(st.lists(st.integers(0, len(LABELS) - 1), min_size=len(photos), max_size=len(photos))))
    rates = ev.sprayer_rates(probs, y, LABELS, ROLES, threshold, veto)
    crop = np.isin(np.array(LABELS)[y], ROLES.crop)
    assert rates["crop_sprayed"].k == int((crop & np.array(edge)).sum())


@pytest.mark.parametrize("veto, crop_sprayed, weed_miss", [
    (None, 2, 0),  # both weed-looking crops sprayed
    (0.3, 1, 0),  # the one with crop probability 0.35 is vetoed; the weeds (crop probability <= 0.1) are not
    (0.05, 1, 1),  # a low veto holds back a weed as well
])
def test_evaluate_with_a_crop_veto(veto, crop_sprayed, weed_miss):
    def row(**p):
        v = np.zeros(len(LABELS), np.float32)
        for k, x in p.items():
            v[LABELS.index(k)] = x
        return v

    probs = np.stack([row(maize=0.35, charlock=0.65), row(maize=0.02, charlock=0.98),  # two crops
                      row(charlock=0.9, maize=0.1), row(fat_hen=0.97, background=0.03)])  # two weeds
    y = np.array([LABELS.index(c) for c in ("maize", "sugar_beet", "charlock", "fat_hen")])
    m = ev.evaluate(probs, y, LABELS, ROLES, 0.5, veto)
    assert (m["crop_sprayed"]["k"], m["weed_miss"]["k"], m["crop_veto"]) == (crop_sprayed, weed_miss, veto)


@pytest.mark.parametrize("veto, weed_miss, crop_sprayed", [
    (None, 0.0, 0.0),
    (0.0, 1.0, 0.0),  # a veto at 0 holds every photo back, in evaluation as at the edge
])
def test_evaluate_bundle_applies_the_bundles_own_rule(tmp_path, veto, weed_miss, crop_sprayed):
    bundle = tmp_path / "toy"
    bundle.mkdir()
    for f in TOY_BUNDLE.iterdir():
        (bundle / f.name).write_bytes(f.read_bytes())
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("threshold")
    m.update(format_version=2, rule={"threshold": 0.5, "crop_veto": veto, "chosen_on": "hand-set", "notes": ""})
    (bundle / "manifest.json").write_text(json.dumps(m))
    data = tmp_path / "photos"
    for label, colour in (("weed", GREEN), ("crop", BLUE)):
        (data / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / label / f"{i}.png"), solid(colour, 40 + i, 40))
    metrics = ev.evaluate_bundle(bundle, data)
    assert metrics["crop_veto"] == veto and metrics["threshold"] == 0.5
    assert (metrics["weed_miss"]["rate"], metrics["crop_sprayed"]["rate"]) == (weed_miss, crop_sprayed)


def test_a_new_crop_class_can_be_evaluated_with_its_role(tmp_path):
    """A class the bundle does not know, a crop in the roles file: the bundle's own weeds are the weeds (the roles
    file need not list the bundle's classes); the new class counts in the sprayer rates."""
    from edge.inference.bundle import read_manifest
    from train import robustness as rb

    data = tmp_path / "photos"
    for label, colour in (("weed", GREEN), ("crop", BLUE), ("nettle", BLUE)):
        (data / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / label / f"{i}.png"), solid(colour, 40 + i, 40))
    roles = tmp_path / "roles.csv"
    roles.write_text("class,role\nnettle,crop\n")
    metrics = ev.evaluate_bundle(TOY_BUNDLE, data, roles_file=roles)
    new = metrics["unknown_classes"]
    assert new["classes"] == ["nettle"] and (new["not_weed_sprayed"]["k"], new["not_weed_sprayed"]["n"]) == (0, 3)
    assert new["weed_miss"]["n"] == 0 and metrics["weed_miss"]["n"] == 3
    photos = rb.folder_photos(read_manifest(TOY_BUNDLE), data, roles)  # weed-train robustness --split all
    assert sorted(photos.true_role.tolist()) == [0] * 6 + [1] * 3
