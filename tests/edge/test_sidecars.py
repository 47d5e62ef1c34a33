"""Saved frames (triggered and sampled) carry a sidecar: their tiles, scores, time and place."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.core.frame import Frame
from edge.decide.decider import Decision
from edge.inference import Classifier
from edge.loop.per_lane import LaneProcessor
from edge.loop.runner import RunLoop
from edge.service.records import SIDECAR_SCHEMA, TriggerSaver
from tests.conftest import BROWN, GREEN, TOY_BUNDLE, solid
from tests.edge.test_lanes import Frames, field, make

SCRIPT = "SWWSSWSW"  # per frame: S soil, W weed


def sidecars(folder: Path, kind: str) -> list[dict]:
    out = []
    for img in sorted((folder / kind).glob("*.jpg")):
        side = img.with_suffix(".json")
        assert side.is_file(), f"{img.name} has no sidecar"
        doc = json.loads(side.read_text())
        assert doc["image"] == img.name and doc["kind"] == kind
        out.append(doc)
    return out


def test_edge_run_writes_a_sidecar_for_every_triggered_and_sampled_frame(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, c in enumerate(SCRIPT):
        cv2.imwrite(str(frames / f"{i:03d}_{c}.png"), solid(GREEN if c == "W" else BROWN, 60, 80))
    d = tmp_path / "saved"
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--save-triggers", str(d),
                 "--sample-rate", "1", "-q"]) == 0
    sprayed, sampled = sidecars(d, "spray"), sidecars(d, "sample")
    assert len(sprayed) == SCRIPT.count("W") and len(sampled) == SCRIPT.count("S")
    runs = {doc["run"] for doc in sprayed + sampled}
    assert len(runs) == 1  # one run id for the whole run
    for doc, spray in [(x, True) for x in sprayed] + [(x, False) for x in sampled]:
        assert doc["schema"] == SIDECAR_SCHEMA and doc["bundle"] == "colour-toy"
        assert set(doc["labels"]) == {"soil", "crop", "weed"} and doc["spray"] is spray
        assert isinstance(doc["t_mono_ns"], int) and doc["wall"].endswith("Z") and doc["source"]
        assert (doc["speed_kmh"], doc["distance_cm"], doc["gps"]) == (None, None, None)  # whole frame: not known
        [tile] = doc["tiles"]  # whole-frame mode: the frame is one tile
        assert tile["box"] == [0, 0, 80, 60] and tile["sprayed"] is spray
        assert tile["label"] == ("weed" if spray else "soil")
        assert (tile["weed_score"] > 0.5) is spray and 0.0 <= tile["crop_score"] <= 1.0
        assert tile["vegetation"] is None and tile["gated"] is False


def test_sample_every_s_keeps_one_frame_per_period_on_the_capture_clock(tmp_path):
    saver = TriggerSaver(tmp_path / "saved", sample_rate=0.0, sample_every_s=0.1, run_id="r1")
    saver.describe_model("toy", ("soil", "weed"))
    img = solid(BROWN, 16, 16)
    saved = []
    for i in range(10):  # 40 ms apart: saved at 0, 120, 240, 360 ms
        frame = Frame(img, i, i * 40_000_000, "test")
        no = Decision(i, frame.t_capture_ns, 0.1, False, False, "soil", 0.9)
        saved.append(saver.maybe_save(frame, no) is not None)
    assert [i for i, s in enumerate(saved) if s] == [0, 3, 6, 9]
    docs = sidecars(tmp_path / "saved", "sample")
    assert [d["frame"] for d in docs] == [0, 3, 6, 9] and {d["run"] for d in docs} == {"r1"}
    assert docs[0]["bundle"] == "toy" and docs[0]["labels"] == ["soil", "weed"]
    # a frame that fires is always kept, in spray/, whatever the sampling period
    frame = Frame(img, 10, 10 * 40_000_000 + 1, "test")
    assert "/spray/" in saver.maybe_save(frame, Decision(10, frame.t_capture_ns, 0.9, True, True, "weed", 0.9))


def test_the_size_cap_deletes_a_frames_sidecar_with_it(tmp_path):
    saver = TriggerSaver(tmp_path / "saved", max_bytes=6000, run_id="r")
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for i in range(8):
        frame = Frame(noise, i, i, "t")
        saver.maybe_save(frame, Decision(i, i, 0.9, True, True, "weed", 0.9))
    assert saver.deleted > 0
    jpgs = {p.stem for p in (tmp_path / "saved" / "spray").glob("*.jpg")}
    sides = {p.stem for p in (tmp_path / "saved" / "spray").glob("*.json")}
    assert jpgs == sides and len(jpgs) == 8 - saver.deleted


@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


def test_per_lane_sidecars_give_each_tile_its_box_scores_and_spray_and_the_odometer(classifier, tmp_path):
    """A weed strip along lane 1 under a camera moving 5 cm a frame (as test_lanes): its cells are decided as
    they leave the image; a frame that sprays marks the lane-1 tiles over the plants it planned."""
    clock, out, sched, p = make(classifier, tile_rows=2)  # 4 lanes x 2 rows, 100 cm/s
    saver = TriggerSaver(tmp_path / "saved", sample_every_s=0.1, run_id="pass1")
    saver.describe_model(classifier.bundle.name, classifier.labels)
    src = Frames([field((1,))] * 12, clock)  # 50 ms apart
    RunLoop(src, LaneProcessor(p, clock=clock), clock=clock, saver=saver).run()
    sprayed, sampled = sidecars(tmp_path / "saved", "spray"), sidecars(tmp_path / "saved", "sample")
    assert sprayed and sampled
    assert all(b["frame"] - a["frame"] >= 2 for a, b in zip(sampled, sampled[1:]))  # >= 0.1 s apart
    for doc in sprayed + sampled:
        assert doc["speed_kmh"] == 3.6 and doc["gps"] is None and doc["run"] == "pass1"
        assert doc["distance_cm"] == pytest.approx(5.0 * (doc["frame"] - 1))  # 50 ms at 100 cm/s a frame
        tiles = doc["tiles"]
        assert [(t["lane"], t["row"]) for t in tiles] == [(lane, row) for lane in range(4) for row in range(2)]
        assert [t["box"] for t in tiles[:3]] == [[0, 0, 32, 32], [0, 32, 32, 32], [32, 0, 32, 32]]
        for t in tiles:
            weed = t["lane"] == 1
            assert t["label"] == ("weed" if weed else "soil") and (t["weed_score"] > 0.5) is weed
            assert t["crop_score"] < 0.5 and t["vegetation"] is None and t["gated"] is False
            assert not t["sprayed"] or weed  # only the weed lane's tiles are ever sprayed
            front, rear = t["ground_cm"]
            assert front > rear  # the tile's front edge is further ahead of the camera
        assert any(t["sprayed"] for t in tiles) is (doc["kind"] == "spray")


def test_write_atomic_replaces_whole_or_leaves_the_old_file(tmp_path):
    from edge.core.files import write_atomic

    target = tmp_path / "a.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new", durable=False)
    assert target.read_bytes() == b"new"
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "dir.json", b"x")  # a folder in the way: refused ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "dir.json"]  # ... and no temporary file left
