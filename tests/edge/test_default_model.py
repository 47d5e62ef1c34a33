"""The shipped default model on the shipped sample clip: bare gravel and crops must not fire.

``samples/field.avi`` pans over seedlings and stretches of bare gravel seen at camera
height; ``samples/field_truth.csv`` names what fills each frame. Each frame is scored on
its own (no debounce) with the bundle's own threshold, as ``edge-run`` decides.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest

from edge.bundle import DEFAULT_BUNDLE
from edge.decision import Decider
from edge.inference.classifier import Classifier

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def fired_by_role():
    truth = {int(r["frame"]): r for r in csv.DictReader((SAMPLES / "field_truth.csv").open())}
    out: dict[str, list[bool]] = {"background": [], "crop": [], "weed": []}
    with Classifier(DEFAULT_BUNDLE) as clf:
        m = clf.bundle.manifest
        decider = Decider(m.labels, m.weed_labels, m.threshold)
        cap = cv2.VideoCapture(str(SAMPLES / "field.avi"))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            row = truth[i]
            if float(row["coverage"]) >= 0.85:
                out[row["role"]].append(decider.weed_score(clf.classify(frame, "BGR").probs) >= m.threshold)
            i += 1
        cap.release()
    assert i == len(truth)
    return out


def test_bare_gravel_never_fires(fired_by_role):
    assert len(fired_by_role["background"]) >= 10
    assert not any(fired_by_role["background"])


def test_crops_do_not_fire_and_weeds_do(fired_by_role):
    assert len(fired_by_role["crop"]) >= 5 and not any(fired_by_role["crop"])
    assert len(fired_by_role["weed"]) >= 20 and all(fired_by_role["weed"])
