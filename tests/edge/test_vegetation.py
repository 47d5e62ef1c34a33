"""The vegetation gate: the index and mask, tile fractions and extents, [gate] presets, and its use
by the per-lane and the whole-frame processors (bare tiles and frames: no invoke, never sprayed)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_config
from edge.core.clock import ManualClock
from edge.core.errors import EXIT_CONFIG, ConfigError
from edge.core.frame import Frame
from edge.core.tile import Tile
from edge.decide.decider import Decider
from edge.decide.rule import SprayRule
from edge.inference import Classifier
from edge.inference.config import PRESETS, GateConfig, GateParams
from edge.inference.vegetation import VegetationExtent, VegetationGate, bare_probs, vegetation_mask
from edge.loop.actuator import Actuator
from edge.loop.per_lane import LanePlanner, LaneProcessor
from edge.loop.runner import RunLoop
from edge.loop.whole_frame import WholeFrameProcessor
from edge.outputs.dryrun import DryRunOutput
from edge.service.records import JsonlLog
from edge.spray.config import SprayConfig
from edge.spray.geometry import Geometry
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import FixedSpeed
from tests.conftest import BLUE, BROWN, GREEN, TOY_BUNDLE, solid

ROOT = Path(__file__).parents[2]
MEDIUM = VegetationGate(PRESETS["medium"])
EXACT = GateParams(exg_threshold=0.10, exg_min=12, smooth_px=1, min_fraction=0.01)  # no smoothing: exact counts


# -- the index and the mask ----------------------------------------------------------------------
def _cast(bgr, b=1.0, g=1.0, r=1.0):
    return tuple(int(min(255, round(c * k))) for c, k in zip(bgr, (b, g, r)))


LEAF = (40, 160, 30)  # BGR
SOIL = (50, 80, 120)  # brown, BGR
# (what, BGR colour, preset, vegetation?)
PIXELS = [
    ("green leaf", LEAF, "medium", True),
    ("the colour-toy's weed green", GREEN, "medium", True),
    ("pale leaf", (110, 140, 120), "medium", True),  # ExG 0.135, 2G-R-B 50
    ("leaf in shadow", (5, 40, 5), "medium", True),  # dark, but clearly green: ExG 1.4, 2G-R-B 70
    ("brown soil", SOIL, "medium", False),
    ("the colour-toy's soil", BROWN, "medium", False),
    ("black", (0, 0, 0), "medium", False),
    ("dark grey", (30, 30, 30), "medium", False),
    ("mid grey", (128, 128, 128), "medium", False),
    ("white", (255, 255, 255), "medium", False),
    ("soil, darker (x0.6)", _cast(SOIL, 0.6, 0.6, 0.6), "medium", False),
    ("leaf, darker (x0.6)", _cast(LEAF, 0.6, 0.6, 0.6), "medium", True),
    ("soil, colour cast (R x1.25, B x0.8)", _cast(SOIL, b=0.8, r=1.25), "medium", False),
    ("leaf, colour cast (R x1.25, B x0.8)", _cast(LEAF, b=0.8, r=1.25), "medium", True),
    ("dark greenish noise: ExG 0.24 but 2G-R-B only 8", (10, 14, 10), "medium", False),
    ("grey with a green cast (G x1.1): ExG 0.065", (100, 110, 100), "high", False),
    ("grey with a strong green cast (G x1.2): ExG 0.125, a known limit", (100, 120, 100), "medium", True),
    ("blue: the colour-toy's crop is not green", BLUE, "medium", False),
    ("faint green: ExG 0.089, below medium's 0.10 ...", (100, 114, 100), "medium", False),
    ("... and above high's 0.08", (100, 114, 100), "high", True),
]


@pytest.mark.parametrize("what, bgr, preset, green", PIXELS, ids=[p[0] for p in PIXELS])
def test_the_mask_on_uniform_tiles(what, bgr, preset, green):
    p = PRESETS[preset]
    tile = solid(bgr, 24, 24)
    mask = vegetation_mask(tile, p.exg_threshold, p.exg_min, p.smooth_px)
    assert mask.dtype == bool and mask.shape == (24, 24)
    assert mask.all() if green else not mask.any()
    assert np.array_equal(vegetation_mask(tile[..., ::-1].copy(), p.exg_threshold, p.exg_min, p.smooth_px), mask)


def test_a_pixel_exactly_at_the_threshold_is_not_vegetation():
    # R, G, B = 96, 77, 47 (RGB): 2G - R - B = 11 and R + G + B = 220: ExG = 0.05 exactly
    tile = solid((47, 77, 96), 4, 4)
    assert not vegetation_mask(tile, 0.05).any() and vegetation_mask(tile, 0.0499).all()
    # the plain minimum: 2G - R - B = 11 is not above 11, and is above 10
    assert not vegetation_mask(tile, 0.0, 11).any() and vegetation_mask(tile, 0.0, 10).all()


def test_smoothing_drops_speckle_and_keeps_a_thin_leaf():
    img = solid(SOIL, 60, 60)
    ys, xs = np.meshgrid(np.arange(2, 60, 6), np.arange(2, 26, 6), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    img[ys, xs] = LEAF  # 40 single green pixels: a glint on a stone, sensor noise
    img[10:50, 30:32] = LEAF  # a leaf 2 px wide, 40 px long
    p = PRESETS["medium"]
    raw = vegetation_mask(img, p.exg_threshold, p.exg_min, 1)
    smooth = vegetation_mask(img, p.exg_threshold, p.exg_min, p.smooth_px)
    assert raw[ys, xs].all() and raw[10:50, 30:32].all()
    speckle = smooth.copy()
    speckle[9:51, 29:33] = False
    assert not speckle.any()  # every isolated pixel gone
    assert smooth[12:48, 30:32].all()  # the leaf kept


# -- fractions and extents per tile -------------------------------------------------------------
# (green rectangles as (x0, x1, y0, y1), tile box, fraction, extent (top, bottom) or None)
BOXES = [
    ([], (0, 40, 0, 40), 0.0, None),
    ([(0, 40, 0, 40)], (0, 40, 0, 40), 1.0, (0.0, 1.0)),
    ([(0, 10, 0, 10)], (0, 40, 0, 40), 100 / 1600, (0.0, 0.25)),
    ([(5, 15, 30, 40)], (0, 40, 0, 40), 100 / 1600, (0.75, 1.0)),
    ([(5, 15, 10, 12), (20, 21, 25, 29)], (0, 40, 0, 40), 24 / 1600, (0.25, 29 / 40)),
    ([(0, 80, 38, 42)], (0, 40, 0, 40), 80 / 1600, (38 / 40, 1.0)),  # straddles two tiles ...
    ([(0, 80, 38, 42)], (0, 40, 40, 80), 80 / 1600, (0.0, 2 / 40)),  # ... each gets its share
    ([(50, 60, 50, 60)], (0, 40, 0, 40), 0.0, None),  # a plant in another tile
    ([(1, 2, 1, 2)], (0, 40, 0, 40), 1 / 1600, (1 / 40, 2 / 40)),  # one pixel: 0.06 %, below 1 %: gated
    ([(0, 4, 0, 4)], (0, 40, 0, 40), 16 / 1600, (0.0, 0.1)),  # exactly 1 %: not gated
    ([(10, 20, 10, 20)], (8, 24, 12, 16), 40 / 64, (0.0, 1.0)),  # a box that is not a grid cell
]


@pytest.mark.parametrize("rects, box, fraction, extent", BOXES)
def test_fraction_and_extent_of_a_tile_are_exact(rects, box, fraction, extent):
    img = solid(SOIL, 80, 80)
    for x0, x1, y0, y1 in rects:
        img[y0:y1, x0:x1] = LEAF
    (v,) = VegetationGate(EXACT).measure(img, [box])
    assert v.fraction == pytest.approx(fraction, abs=1e-12)
    assert v.gated == (fraction < EXACT.min_fraction)
    assert (None if v.extent is None else (v.extent.top, v.extent.bottom)) == pytest.approx(extent)


def test_one_mask_gives_every_tile_and_the_whole_frame():
    img = solid(SOIL, 48, 64)
    img[0:12, 0:16] = LEAF  # a quarter of tile (lane 0, row 0)
    gate = VegetationGate(EXACT)
    boxes = [(x, x + 32, y, y + 24) for x in (0, 32) for y in (0, 24)]
    assert [v.fraction for v in gate.measure(img, boxes)] == [0.25, 0.0, 0.0, 0.0]
    assert gate.frame(img).fraction == pytest.approx(192 / (48 * 64))
    assert gate.mask(img).sum() == 192
    big = solid(SOIL, 96, 128)  # another frame size: new work buffers
    assert gate.frame(big).fraction == 0.0 and gate.frame(img).fraction == pytest.approx(192 / (48 * 64))


# (leaf rectangles x0, x1, y0, y1 in an 80x80 frame, box, the box's largest connected patch in box pixels)
PLANTS = [
    ([(5, 15, 10, 20)], (0, 40, 0, 40), 100 / 1600),
    ([(0, 80, 38, 42)], (0, 40, 0, 40), 320 / 1600),  # straddles four tiles: each sees all of it, not its share
    ([(0, 80, 38, 42)], (40, 80, 40, 80), 320 / 1600),
    ([(0, 10, 0, 10), (20, 23, 20, 23)], (0, 40, 0, 40), 100 / 1600),  # a plant and a speck: the plant
    ([(0, 10, 0, 10), (10, 13, 10, 13)], (0, 40, 0, 40), 109 / 1600),  # touching at a corner: one patch (8-connected)
    ([(0, 4, 0, 4), (50, 70, 50, 70)], (0, 40, 0, 40), 16 / 1600),  # a larger plant elsewhere does not count
    ([(1, 2, 1, 2)], (0, 40, 0, 40), None),  # gated: not measured
]


# (leaf rectangles, join_px, the box (0, 40, 0, 40)'s plant in box pixels): parts at most join_px apart are one
# plant, counted by their vegetation pixels only
JOINED = [
    ([(0, 10, 0, 10), (12, 15, 0, 10)], 0, 100),  # two px of ground between them: two patches
    ([(0, 10, 0, 10), (12, 15, 0, 10)], 2, 130),  # joined: the ground between is not counted
    ([(0, 10, 0, 10), (14, 17, 0, 10)], 4, 130),  # four px apart, joined at 4
    ([(0, 10, 0, 10), (16, 19, 0, 10)], 2, 100),  # six px apart: not joined at 2
    ([(0, 10, 0, 10), (45, 60, 0, 10)], 40, 250),  # a patch outside the box, joined to one inside: one plant
    ([(0, 10, 0, 10), (12, 15, 0, 10)], 1, 100),  # an odd distance is exact too: a gap of 2 is not joined at 1 ...
    ([(0, 10, 0, 10), (11, 14, 0, 10)], 1, 130),  # ... a gap of 1 is
    ([(0, 10, 0, 10), (13, 16, 0, 10)], 3, 130),
    ([(0, 10, 0, 10), (14, 17, 0, 10)], 3, 100),
    ([(0, 4, 30, 34), (41, 70, 0, 40)], 4, 16),  # a plant 1 px outside the box reaches in only by growing: not its
]


@pytest.mark.parametrize("rects, join_px, plant", JOINED)
def test_parts_of_a_plant_closer_than_join_px_are_one_plant(rects, join_px, plant):
    img = solid(SOIL, 80, 80)
    for x0, x1, y0, y1 in rects:
        img[y0:y1, x0:x1] = LEAF
    (v,) = VegetationGate(EXACT).measure(img, [(0, 40, 0, 40)], plants=True, join_px=join_px)
    assert v.plant == pytest.approx(plant / 1600, abs=1e-12)


@pytest.mark.parametrize("rects, box, plant", PLANTS)
def test_a_tiles_plant_is_its_largest_connected_patch_of_vegetation_all_of_it(rects, box, plant):
    img = solid(SOIL, 80, 80)
    for x0, x1, y0, y1 in rects:
        img[y0:y1, x0:x1] = LEAF
    (v,) = VegetationGate(EXACT).measure(img, [box], plants=True)
    assert v.plant == (None if plant is None else pytest.approx(plant, abs=1e-12))
    (unmeasured,) = VegetationGate(EXACT).measure(img, [box])
    assert unmeasured.plant is None and unmeasured.fraction == v.fraction


# (image top, tile front/rear cm, extent top/bottom, vegetation rear/front cm)
EXTENTS = [
    (True, (20.0, 10.0), (0.0, 1.0), (10.0, 20.0)),
    (True, (20.0, 10.0), (0.0, 0.5), (15.0, 20.0)),  # the top of the tile is its front edge
    (True, (20.0, 10.0), (0.75, 1.0), (10.0, 12.5)),
    (False, (20.0, 10.0), (0.0, 0.5), (10.0, 15.0)),  # mounted the other way: the top is the rear edge
    (False, (-10.0, -20.0), (0.25, 0.5), (-17.5, -15.0)),
]


@pytest.mark.parametrize("top_ahead, front_rear, extent, along", EXTENTS)
def test_an_extent_on_the_ground(top_ahead, front_rear, extent, along):
    tile = Tile(0, 0, 0.0, 1.0, 0.0, 1.0, front_cm=front_rear[0], rear_cm=front_rear[1])
    assert VegetationExtent(*extent).along_cm(tile, top_ahead) == pytest.approx(along)


def test_bare_probs_put_all_mass_on_the_background_label():
    assert bare_probs(("soil", "crop", "weed"), ("soil",)).tolist() == [1.0, 0.0, 0.0]
    assert bare_probs(("a", "weed", "bg", "other"), ("bg", "other")).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert bare_probs(("crop", "weed"), ()).tolist() == [0.0, 0.0]


# -- [gate]: presets, explicit numbers, when it runs ---------------------------------------------
@pytest.mark.parametrize("table, params", [
    ({}, PRESETS["medium"]),
    ({"sensitivity": "low"}, PRESETS["low"]),
    ({"sensitivity": "high"}, PRESETS["high"]),
    ({"sensitivity": "low", "min_fraction": 0.02},
     GateParams(PRESETS["low"].exg_threshold, PRESETS["low"].exg_min, PRESETS["low"].smooth_px, 0.02)),
    ({"exg_threshold": 0.2, "exg_min": 0, "smooth_px": 1, "min_fraction": 0},
     GateParams(exg_threshold=0.2, exg_min=0, smooth_px=1, min_fraction=0.0)),
])
def test_presets_map_to_numbers_and_explicit_numbers_override(table, params):
    assert GateConfig(**table).params() == params
    assert load_config(None, {"gate": table}).gate.params() == params


def test_the_presets_are_ordered_by_sensitivity():
    low, medium, high = PRESETS["low"], PRESETS["medium"], PRESETS["high"]
    for field in ("exg_threshold", "exg_min", "min_fraction"):
        assert getattr(low, field) > getattr(medium, field) > getattr(high, field), field


@pytest.mark.parametrize("enabled, per_lane, active", [
    (None, True, True), (None, False, False), (True, False, True), (False, True, False), (True, True, True)])
def test_on_with_spray_and_off_without_unless_set(enabled, per_lane, active):
    assert GateConfig(enabled=enabled).active(per_lane) is active


@pytest.mark.parametrize("table, words", [
    ({"sensitivity": "extreme"}, "[gate] sensitivity"),
    ({"min_fraction": 1.5}, "[gate] min_fraction"),
    ({"open_px": 3}, "[gate] open_px: unknown key"),
])
def test_a_bad_gate_section_is_exit_3_naming_the_key(table, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"gate": table})
    assert words in str(e.value) and e.value.exit_code == EXIT_CONFIG


# -- per lane -------------------------------------------------------------------------------------
MS = 1_000_000


@pytest.fixture()
def single():
    """One invoke per tile, so invokes count the tiles classified."""
    with Classifier(TOY_BUNDLE, num_threads=1, batch=False) as c:
        yield c


def field(weed_lanes=(), lanes=4, h=64, w=128, rows=2, weed_rows=None, inset=4):
    """Soil, with green (weed) tiles in the given lanes (every row, or only ``weed_rows``), each ``inset`` px
    inside its tile (the gate's 3x3 smoothing would carry a plant that touches a tile's edge 1 px into the next)."""
    img = solid(BROWN, h, w)
    lw, rh = w // lanes, h // rows
    for lane in weed_lanes:
        for row in (range(rows) if weed_rows is None else weed_rows):
            img[row * rh + inset:(row + 1) * rh - inset, lane * lw + inset:(lane + 1) * lw - inset] = GREEN
    return img


def planner(classifier, gate=MEDIUM, threshold=0.5, **kw):
    c = SprayConfig(lanes=4, footprint_across_cm=100.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                    margin_before_cm=0.0, margin_after_cm=0.0, valve_open_lag_ms=0.0, valve_close_lag_ms=0.0,
                    speed_kmh=3.6, tile_rows=2)
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=4, clock=clock, max_on_s=30.0)
    sched = SprayScheduler(out, clock=clock)
    p = LanePlanner(classifier, SprayRule(threshold, None, labels=classifier.labels, weed_labels=("weed",)),
                    Geometry.from_config(c), sched, FixedSpeed(3.6), tile_rows=2, vegetation=gate, **kw)
    return clock, sched, p


def test_bare_tiles_are_not_classified_and_never_sprayed(single):
    clock, sched, p = planner(single)
    before = single.invokes
    scores, lanes, _ = p.process(Frame(field(), 1, clock.now_ns(), "test"))
    assert single.invokes == before  # 8 bare tiles: no invoke
    assert all(v.gated and v.fraction == 0.0 for r in lanes for v in r.vegetation)
    assert all(s.top == ("soil", 1.0) for s in scores)  # the bare view: all mass on the background label
    assert [r.tile_scores for r in lanes] == [(0.0, 0.0)] * 4 and not any(r.decision.spray for r in lanes)
    assert all(sched.pending(ch) == [] for ch in range(4)) and (p.tiles_seen, p.tiles_gated) == (8, 8)


def test_vegetated_tiles_are_classified_as_without_the_gate_and_sprayed_over_the_plant(single):
    image = field((1, 3), weed_rows=(0,))  # lanes 1 and 3: a weed in the top row, soil below
    results = []
    for gate in (MEDIUM, None):
        clock, sched, p = planner(single, gate=gate)
        before = single.invokes
        _, lanes, _ = p.process(Frame(image, 1, clock.now_ns(), "test"))
        p.finish_cells()
        results.append((single.invokes - before, [(r.decision.weed_frame, r.tile_scores) for r in lanes],
                        [sched.pending(ch) for ch in range(4)], lanes))
    (gated_invokes, gated, gated_plans, lanes), (all_invokes, plain, plain_plans, _) = results
    assert (gated_invokes, all_invokes) == (2, 8)  # only the two weed tiles went to the model
    assert gated == plain  # the same views
    assert [r.decision.weed_frame for r in lanes] == [False, True, False, True]
    assert [[v.gated for v in r.vegetation] for r in lanes] == [[True, True], [False, True]] * 2
    # the 24 x 24 px weed, grown by 1 px on every side by the 3x3 smoothing (not at its 4 corners)
    assert lanes[1].vegetation[0].fraction == (26 * 26 - 4) / 32 ** 2
    assert lanes[1].vegetation[0].extent == VegetationExtent(3 / 32, 29 / 32)
    # the top tile is 0..20 cm ahead, 100 cm/s, nozzle 100 cm behind: with the gate the spray covers the plant
    # (rows 3/32 .. 29/32 of the tile: 1.875 .. 18.125 cm ahead); without it, the gate gives no extent: the tile
    assert gated_plans[1] == gated_plans[3] == [(1_018_750_000, 1_181_250_000)]
    assert plain_plans[1] == plain_plans[3] == [(1_000 * MS, 1_200 * MS)]
    assert gated_plans[0] == gated_plans[2] == plain_plans[0] == plain_plans[2] == []


def test_a_bare_view_adds_no_evidence_to_a_plants_cells(single):
    """A weed seen once, then (the next frame, 10 cm on) called bare by the gate, e.g. a sliver at a tile's edge:
    the bare view does not vote, the weed's cells spray (at a plant share of 0.5: one view of two saw the plant).
    Without the gate the same tile is classified soil and its strongly negative log-odds outvote the weed. At the
    default share (0.6) one plant view and one bare view are too few: only the cells no bare view covered spray."""
    sprayed = {}
    for name, gate, share in (("gate", MEDIUM, 0.5), ("no gate", None, 0.5), ("default share", MEDIUM, None)):
        clock, sched, p = planner(single, gate=gate, **({} if share is None else {"min_plant_share": share}))
        p.process(Frame(field((0,)), 1, clock.now_ns(), "test"))
        clock.advance(0.1)
        _, lanes, _ = p.process(Frame(field(), 2, clock.now_ns(), "test"))  # the rear tile's cells leave now
        if gate is not None:  # the cells still in view were seen bare once
            assert [c.bare for c in p.cells.cells() if c.lane == 0] == [1] * 4
        sprayed[name] = lanes[0].cells.sprayed + sum(d.spray for d in p.cells.decide_all("end") if d.cell.lane == 0)
    # no gate: the 6 cells seen again (as soil) do not spray; the default share: those 6 are held back as sparse
    assert sprayed == {"gate": 8, "no gate": 2, "default share": 2}


def test_at_threshold_0_every_classified_tile_fires_but_bare_ones_are_never_sprayed(single):
    clock, sched, p = planner(single, threshold=0.0)
    t1 = clock.now_ns()
    _, lanes, _ = p.process(Frame(field((2,), weed_rows=(1,)), 1, t1, "test"))
    assert [r.decision.weed_frame for r in lanes] == [True] * 4  # a weed score of 0 reaches a threshold of 0
    assert [r.cells.pending for r in lanes] == [0, 0, 4, 0]  # only lane 2's plant is on the ground
    p.finish_cells()
    # the bottom row is 0..20 cm behind the centre, its plant 1.875..18.125 cm behind: 81.875..98.125 cm to go
    assert sched.pending(2) == [(t1 + 818_750_000, t1 + 981_250_000)]
    assert all(sched.pending(ch) == [] for ch in (0, 1, 3))


def test_the_frame_log_has_each_tiles_vegetation(single, tmp_path):
    clock, sched, p = planner(single)

    class Frames:
        live, name = False, "frames"
        images = [field((1,), weed_rows=(1,)), field()]

        def start(self):
            pass

        def read(self, timeout=None):
            if not self.images:
                return None
            clock.advance(0.05)
            return Frame(self.images.pop(0), 2 - len(self.images), clock.now_ns(), self.name)

        dropped = 0

        def link(self):
            return None

        def close(self):
            pass

    stats = RunLoop(Frames(), LaneProcessor(p, clock=clock), clock=clock, jsonl=JsonlLog(tmp_path / "f.jsonl")).run()
    lines = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [ln["lanes"][1]["vegetation"] for ln in lines] == [[0.0, round((26 * 26 - 4) / 32 ** 2, 4)], [0.0, 0.0]]
    assert [ln["lanes"][1]["gated"] for ln in lines] == [[True, False], [True, True]]
    assert all(ln["lanes"][0]["gated"] == [True, True] for ln in lines)
    assert stats.stats["gate"] == {"unit": "tiles", "seen": 16, "bare": 15} and "bare ground (gate) 15/16 tiles" \
        in stats.line()


# -- whole frame ----------------------------------------------------------------------------------
def whole_frame(classifier, gate, hold_s=0.0):
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=2, clock=clock)
    decider = Decider(classifier.labels, ["weed"], 0.5, min_hold_s=hold_s)
    return clock, out, WholeFrameProcessor(classifier, decider, Actuator(out, clock=clock), clock=clock,
                                           vegetation=gate)


@pytest.mark.parametrize("gate, outputs, invokes", [(MEDIUM, [True, False, False], 1), (None, [True, True, True], 3)])
def test_a_gated_frame_never_sprays_even_during_a_hold(single, gate, outputs, invokes):
    clock, out, proc = whole_frame(single, gate, hold_s=10.0)
    before, seen = single.invokes, []
    for i, img in enumerate([solid(GREEN), solid(BROWN), solid(BROWN)]):
        clock.advance(0.05)
        r = proc.process(Frame(img, i, clock.now_ns(), "test"))
        seen.append(r)
    assert [any(r.outputs) for r in seen] == outputs and single.invokes - before == invokes
    if gate is not None:
        assert [r.gated for r in seen] == [False, True, True] and seen[1].log_fields() == {"vegetation": 0.0,
                                                                                           "gated": True}
        assert seen[1].decision.weed_score == 0.0 and seen[1].scores.top == ("soil", 1.0)
        assert proc.counts().gate.text == "bare ground (gate) 2/3 frames"
    else:
        assert seen[1].log_fields() == {} and proc.counts().gate is None


def test_edge_run_whole_frame_with_the_gate_logs_bare_frames(tmp_path, capsys):
    import cv2

    from edge.cli import main

    d = tmp_path / "frames"
    d.mkdir()
    for i, colour in enumerate([BROWN, GREEN, BROWN]):
        cv2.imwrite(str(d / f"{i}.png"), solid(colour))
    log = tmp_path / "frames.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[gate]\nenabled = true\nsensitivity = \"low\"\n")
    assert main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "--print",
                 "--log-jsonl", str(log)]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[7] for ln in out.splitlines() if ln.startswith("frame ")] == ["bare", "SPRAY", "bare"]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(ln["gated"], ln["spray"]) for ln in lines] == [(True, False), (False, True), (True, False)]
    assert main(["--config", str(cfg), "--model", str(TOY_BUNDLE), "--validate-config"]) == 0
    assert "vegetation gate: low (excess green > 0.11 " in capsys.readouterr().out


# -- the measurement tool -------------------------------------------------------------------------
def test_the_check_tool_runs_on_the_test_photos():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_vegetation_gate.py"), "--presets", "medium",
                           "--min-fraction", "0.5", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["photos"] == 24 and set(res["presets"]) == {"medium", "custom"}
    assert res["params"]["custom"] == {**res["params"]["medium"], "min_fraction": 0.5}
    medium, custom = res["presets"]["medium"], res["presets"]["custom"]
    assert [r["condition"] for r in medium][:3] == ["as photographed", "darker (x0.6)", "colour cast (R x1.25, B x0.8)"]
    clean = medium[0]
    assert (clean["weeds"], clean["crops"]) == (18, 6) and clean["ground_windows"] > 0
    assert clean["weeds_hidden_x1.00"] == 0 and clean["ground_passed"] == 0  # test photos, as photographed
    assert custom[0]["weeds_hidden_x1.00"] > 0  # a tile must be half plant: close-ups of small seedlings are not
    assert res["gate_ms"]["medium"]["p50"] > 0
    text = subprocess.run([sys.executable, str(ROOT / "tools" / "check_vegetation_gate.py"), "--presets", "low"],
                          capture_output=True, text=True, timeout=300).stdout
    assert "| condition | bare ground let through | weeds hidden, x1 |" in text and "**low**" in text


@pytest.mark.parametrize("args, code, words", [
    (["--min-fraction", "2"], 2, "--min-fraction: Input should be less than or equal to 1"),
    (["--presets", "extreme"], 2, "unknown preset(s) extreme: use low, medium, high"),
    (["no/such/folder"], EXIT_CONFIG, "photo folder no/such/folder does not exist"),
])
def test_the_check_tool_says_what_is_wrong(args, code, words):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_vegetation_gate.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("minimum, sprayed", [(0.0, 4), (300.0, 4), (400.0, 0)])
def test_a_cell_sprays_only_if_its_views_saw_a_plant_of_min_plant_cm2(single, tmp_path, minimum, sprayed):
    """The weed is one patch of 26 x 26 - 4 pixels (the 3x3 smoothing rounds its corners) in a 32 x 32 px,
    25 x 20 cm tile: 328 cm² on the ground, measured by the gate (only when min_plant_cm2 is set) and carried to
    its 4 cells (5 cm each); below min_plant_cm2 the rule's "spray" is held back as small, and the log says so."""
    from edge.spray.spray_log import SprayLog

    clock, sched, p = planner(single, min_plant_cm2=minimum)
    sched.spray_log = SprayLog(tmp_path / "s.jsonl", clock=clock)
    _, lanes, _ = p.process(Frame(field((1,), weed_rows=(0,)), 1, clock.now_ns(), "test"))
    decided = p.cells.decide_all("end")
    area = math.inf if minimum == 0 else pytest.approx(500.0 * (26 * 26 - 4) / 32 ** 2)  # 0: not measured
    assert decided and all(d.cell.peak_cm2 == area for d in decided)
    assert sum(d.spray for d in decided) == sprayed and all(d.small == (not d.spray) for d in decided)
    p.spray.plan(1, decided, 1, p.spray.gate(), 0.0, clock.now_ns())
    sched.spray_log.close()
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    cells = [ln for ln in lines if ln["event"] in ("planned", "spared")]
    assert len(cells) == 4 and all(ln.get("plant_cm2") == (None if minimum == 0 else pytest.approx(328.125))
                                   for ln in cells)
    assert [ln["small"] for ln in cells if ln["event"] == "spared"] == [True] * (4 - sprayed)
