"""[model] scoring = "frame": pooling boxes, the frame scorer against the tile classifier, the planner's scorer,
config validation, bundle checks and edge-bench's --scoring / reference ratio."""

import json
import shutil
from contextlib import ExitStack

import numpy as np
import pytest

from edge.config import load_config
from edge.core.clock import ManualClock
from edge.core.errors import BundleError, ConfigError
from edge.core.frame import Frame
from edge.decide.rule import SprayRule
from edge.inference import Classifier
from edge.inference.bundle import load_bundle
from edge.inference.frame_features import FrameFeatureScorer, pool_weights
from edge.inference.scoring import TileClassifier
from edge.loop.per_lane import LanePlanner
from edge.outputs.dryrun import DryRunOutput
from edge.spray.config import SprayConfig
from edge.spray.geometry import Geometry
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import FixedSpeed
from edge.spray.spray_log import SprayLog
from tests.conftest import BLUE, BROWN, DATA, GREEN, TOY_BUNDLE

FRAME_BUNDLE = DATA / "bundles" / "colour-toy-frame"  # colour-toy + `weed-train frame-features` (stride 1 px)
STEP = 1 / 256  # the toy's output quantisation step


def _grid(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32).ravel()


def _block(cells_w: int, cells_h: int, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    g = np.zeros((cells_h, cells_w), np.float32)
    g[y0:y1, x0:x1] = 1.0
    return (g / g.sum()).ravel()


# (what, boxes, frame w x h, model input w x h, stride, cells w x h, expected rows)
POOL_CASES = [
    ("the whole frame, one cell per pixel", [(0, 4, 0, 2)], (4, 2), (4, 2), 1, (4, 2), [_grid([[1 / 8] * 4] * 2)]),
    ("left and right halves", [(0, 2, 0, 2), (2, 4, 0, 2)], (4, 2), (4, 2), 1, (4, 2),
     [_grid([[.25, .25, 0, 0]] * 2), _grid([[0, 0, .25, .25]] * 2)]),
    ("a box across half a cell weighs that cell by half", [(0, 3, 0, 2)], (4, 2), (2, 1), 1, (2, 1),
     [_grid([[2 / 3, 1 / 3]])]),
    ("640x480 at full scale: a 160-px tile is 5 x 5 cells of 32 px", [(160, 320, 160, 320)], (640, 480), (640, 480),
     32, (20, 15), [_block(20, 15, 5, 10, 5, 10)]),
    ("640x480 at 0.5: the first 160-px tile covers 2.5 x 2.5 cells", [(0, 160, 0, 160)], (640, 480), (320, 240),
     32, (10, 8), [(np.outer([1, 1, .5, 0, 0, 0, 0, 0], [1, 1, .5] + [0] * 7) / 6.25).ravel()]),
    ("640x480 at 0.5: the bottom-right tile; the 240-px input ends half-way through the last cell row",
     [(480, 640, 320, 480)], (640, 480), (320, 240), 32, (10, 8),
     [(np.outer([0, 0, 0, 0, 0, 1, 1, .5], [0] * 7 + [.5, 1, 1]) / 6.25).ravel()]),
]


@pytest.mark.parametrize("what, boxes, frame, inp, stride, cells, expected", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_weights_map_tile_boxes_to_feature_cells(what, boxes, frame, inp, stride, cells, expected):
    m = pool_weights(boxes, *frame, *inp, stride, *cells)
    assert m.shape == (len(boxes), cells[0] * cells[1])
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m, np.stack(expected), atol=1e-6)


def test_a_box_outside_the_frame_is_refused():
    with pytest.raises(ValueError, match="outside the 4x2 frame"):
        pool_weights([(2, 6, 0, 2)], 4, 2, 4, 2, 1, 4, 2)


def _patchwork(w: int = 160, h: int = 96, cols: int = 4, rows: int = 3, seed: int = 0):
    """A frame of solid tiles of the toy's three colours, and the tile boxes."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    boxes = []
    for c in range(cols):
        for r in range(rows):
            box = (c * w // cols, (c + 1) * w // cols, r * h // rows, (r + 1) * h // rows)
            img[box[2]:box[3], box[0]:box[1]] = (GREEN, BLUE, BROWN)[rng.integers(3)]
            boxes.append(box)
    return img, boxes


@pytest.mark.parametrize("size", [(128, 96), (160, 96), (100, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_frame_scorer_gives_the_tile_classifiers_scores(size):
    """The toy's answer is a box's mean colour: one run over the frame (stride 1) pooled per box reproduces each
    tile classified on its own, also for non-square tiles (the centre crop the classifier takes)."""
    img, boxes = _patchwork(*size)
    bundle = load_bundle(FRAME_BUNDLE)
    with Classifier(bundle, num_threads=1) as c, FrameFeatureScorer(bundle, 1, scale=1.0) as f:
        tiles = TileClassifier(c).score(img, boxes)
        frame = f.score(img, boxes)
        assert f.invokes == 1
    assert len(frame) == len(boxes)
    for a, b in zip(tiles, frame):
        assert a.top[0] == b.top[0]
        np.testing.assert_allclose(a.probs, b.probs, atol=2 * STEP)


def test_no_box_no_invoke():
    with FrameFeatureScorer(load_bundle(FRAME_BUNDLE), 1) as f:
        assert f.score(np.zeros((32, 32, 3), np.uint8), []) == []
        assert f.invokes == 0


def test_the_planner_scores_its_kept_tiles_through_the_scorer():
    """The same frame through a LanePlanner with each scorer: the same tile scores and per-lane results, one
    invoke for frame (the weed tile scores as a weed through both)."""
    spray = SprayConfig(lanes=4, footprint_across_cm=100.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                        speed_kmh=3.6, tile_rows=2)
    img = np.empty((64, 128, 3), np.uint8)
    img[:] = BROWN
    img[0:32, 32:64] = GREEN  # lane 1, top row: a weed
    img[32:64, 96:128] = BLUE  # lane 3, bottom row: a crop
    bundle = load_bundle(FRAME_BUNDLE)
    results = {}
    with Classifier(bundle, num_threads=1) as c, FrameFeatureScorer(bundle, 1, scale=1.0) as f:
        for name, scorer in (("tiles", None), ("frame", f)):
            clock = ManualClock(start_ns=0)
            out = DryRunOutput(channels=4, clock=clock, max_on_s=30.0)
            with SprayScheduler(out, clock=clock, spray_log=SprayLog(None, clock=clock)) as sched:
                rule = SprayRule(0.5, None, labels=tuple(c.labels), weed_labels=("weed",))
                p = LanePlanner(c, rule, Geometry.from_config(spray), sched, FixedSpeed(3.6), tile_rows=2,
                                scorer=scorer)
                _, lanes, _ = p.process(Frame(image=img, frame_id=1, t_capture_ns=0, source="test"))
                results[name] = [(x.decision.spray, x.tile_scores) for x in lanes]
        assert f.invokes == 1
    weed_tiles = [max(t) >= 0.5 for _, t in results["tiles"]]
    assert weed_tiles == [False, True, False, False]
    assert [s for s, _ in results["frame"]] == [s for s, _ in results["tiles"]]
    np.testing.assert_allclose([t for _, t in results["frame"]], [t for _, t in results["tiles"]], atol=2 * STEP)


SPRAY_TOML = {"spray": {"lanes": 2, "footprint_across_cm": 40.0, "footprint_along_cm": 30.0,
                        "nozzle_distance_cm": 50.0, "speed_kmh": 6.0}}
# (what, overrides, error text or None when valid)
CONFIG_CASES = [
    ("tiles is the default", {}, None),
    ("frame with [spray]", {"model": {"scoring": "frame", "frame_scale": 0.75}, **SPRAY_TOML}, None),
    ("frame_scale at its ends", {"model": {"scoring": "frame", "frame_scale": 0.1}, **SPRAY_TOML}, None),
    ("an unknown scoring", {"model": {"scoring": "pixels"}, **SPRAY_TOML}, r"\[model\] scoring: Input should be"),
    ("frame without [spray]", {"model": {"scoring": "frame"}}, r"needs|no \[spray\] section"),
    ("frame_scale 0", {"model": {"frame_scale": 0.0}}, r"\[model\] frame_scale"),
    ("frame_scale above 1", {"model": {"frame_scale": 1.5}}, r"\[model\] frame_scale"),
    ("an unknown [model] key", {"model": {"scorer": "frame"}}, r"\[model\] scorer: unknown key"),
]


@pytest.mark.parametrize("what, overrides, error", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_scoring_config(what, overrides, error):
    if error is None:
        cfg = load_config(None, overrides)
        assert cfg.model.scoring == overrides.get("model", {}).get("scoring", "tiles")
    else:
        with pytest.raises(ConfigError, match=error):
            load_config(None, overrides)


def _corrupt_head(folder):
    (folder / "frame_head.npz").write_bytes(b"not the head")


def _drop_section(folder):
    m = json.loads((folder / "manifest.json").read_text())
    del m["frame_features"]
    (folder / "manifest.json").write_text(json.dumps(m))


def _rehash_head(folder):
    from edge.inference.bundle import sha256_file

    m = json.loads((folder / "manifest.json").read_text())
    m["frame_features"]["head_sha256"] = sha256_file(folder / "frame_head.npz")
    (folder / "manifest.json").write_text(json.dumps(m))


def _rewrite_head(folder, change):
    """The head's arrays changed by ``change(arrays)``, its hash made to match (a broken export, not a damaged copy)."""
    head = folder / "frame_head.npz"
    with np.load(head) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(head, "wb") as f:
        np.savez(f, **arrays)
    _rehash_head(folder)


def _nan_head(folder):
    """A head whose weights are NaN."""
    _rewrite_head(folder, lambda a: a.update(weight=np.full_like(a["weight"], np.nan)))


def _head_with(**changes):
    """A head with these arrays replaced."""
    return lambda folder: _rewrite_head(
        folder, lambda a: a.update({k: np.asarray(v, np.float32) for k, v in changes.items()}))


def _cut_head(folder):
    """A head cut short (a copy that stopped), with its hash made to match: not a zip, or a member cut."""
    head = folder / "frame_head.npz"
    data = head.read_bytes()
    head.write_bytes(data[: len(data) // 2])
    _rehash_head(folder)


# (what, change to a copy of the bundle, error text)
BUNDLE_CASES = [
    ("a head with NaN weights", _nan_head, "not finite numbers"),
    ("a head cut short", _cut_head, "is not a frame-features head"),
    ("pool_quant of three values", _head_with(pool_quant=[0.1, 0.0, 1.0]),
     r"pool_quant holds 3 value\(s\) of shape \(3,\), not the two \[scale, zero point\]"),
    ("logit_quant of one value", _head_with(logit_quant=[0.1]), r"logit_quant holds 1 value\(s\)"),
    ("a bias of the wrong length", _head_with(bias=[0.0]), r"head weight \(\d+, \d+\) and bias \(1,\) do not fit"),
    ("no frame-features export", _drop_section, "has no frame-features export"),
    ("a head that does not match its hash", _corrupt_head, "frame_head.npz does not match its sha256"),
    ("a missing feature graph", lambda d: (d / "model_features.tflite").unlink(), "model_features.tflite named in"),
]


@pytest.mark.parametrize("what, change, error", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_a_bundle_the_frame_scorer_cannot_use_is_refused_with_the_fix(tmp_path, what, change, error):
    folder = tmp_path / "b"
    shutil.copytree(FRAME_BUNDLE, folder)
    change(folder)
    with pytest.raises(BundleError, match=error) as e:
        FrameFeatureScorer(load_bundle(folder), 1)
    assert "weed-train frame-features" in str(e.value)


def test_a_stride_that_does_not_fit_the_graph_is_refused_at_the_first_frame(tmp_path):
    """A hand-edited frame_features.stride would pool the wrong cells (NaN weights, nothing ever sprays)."""
    folder = tmp_path / "b"
    shutil.copytree(FRAME_BUNDLE, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["frame_features"]["stride"] = 7
    (folder / "manifest.json").write_text(json.dumps(m))
    img, boxes = _patchwork(64, 48)
    with FrameFeatureScorer(load_bundle(folder), 1, scale=1.0) as f, \
            pytest.raises(BundleError, match=r"frame_features.stride = 7 does not fit its graph .* a stride of about 1 px"):
        f.score(img, boxes)


def test_wiring_builds_the_configured_scorer():
    from edge.app.wiring import make_tile_scorer

    with Classifier(TOY_BUNDLE, num_threads=1) as c, ExitStack() as stack:
        cfg = load_config(None, {"model": {"bundle": str(FRAME_BUNDLE), "scoring": "frame", "frame_scale": 0.5},
                                 **SPRAY_TOML})
        with pytest.raises(BundleError, match="colour-toy' has no frame-features export"):
            make_tile_scorer(cfg, c, stack)  # the toy without the export
    with Classifier(FRAME_BUNDLE, num_threads=1) as c, ExitStack() as stack:
        scorer = make_tile_scorer(cfg, c, stack)
        assert isinstance(scorer, FrameFeatureScorer) and scorer.scale == 0.5
        tiles = make_tile_scorer(load_config(None, SPRAY_TOML), c, stack)
        assert isinstance(tiles, TileClassifier)
