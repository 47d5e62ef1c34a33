"""Ground cells (edge.spray.cells): placement, the decision deadline, the rule over views, the plant's extent;
and the per-lane planner on them (a stop, a speed change, a pure-ground pass). Injected clock, no sleeps."""

import json
import math

import numpy as np
import pytest

from edge.core.clock import ManualClock
from edge.core.frame import Frame
from edge.decide.rule import SprayRule, log_odds
from edge.inference import Classifier
from edge.inference.config import GateConfig
from edge.inference.vegetation import VegetationGate
from edge.loop.per_lane import LanePlanner
from edge.outputs.dryrun import DryRunOutput
from edge.spray.cells import Cell, CellGrid, TileView
from edge.spray.config import SprayConfig
from edge.spray.geometry import Geometry, kmh_to_cm_s
from edge.spray.scheduler import SprayScheduler
from edge.spray.spray_log import SprayLog
from tests.conftest import BROWN, GREEN, TOY_BUNDLE

MS = 1_000_000
RULE = SprayRule(0.5, 0.8, labels=("weed", "crop", "soil"), weed_labels=("weed",), crop_labels=("crop",))


def geom(**kw):
    base = dict(lanes=1, footprint_across_cm=10.0, footprint_along_cm=30.0, nozzle_distance_cm=50.0,
                margin_before_cm=5.0, margin_after_cm=5.0, valve_open_lag_ms=30.0, valve_close_lag_ms=30.0,
                speed_kmh=10.0, tile_rows=3)
    base.update(kw)
    return Geometry.from_config(SprayConfig(**base))


def ev(weed, crop=0.0):
    """One view's evidence, as the rule reads it off (weed, crop, soil) probabilities."""
    return RULE.view(np.array([weed, crop, 1.0 - weed - crop]))


def test_a_tiles_view_lands_on_the_cells_its_plant_covers():
    g = geom()
    grid = CellGrid(RULE, g, 5.0)
    top, middle, bottom = g.tiles(3)  # 15..5, 5..-5, -5..-15 cm ahead of the centre
    # travelled 100 cm: the middle tile covers ground 95..105; its plant 97..101 (two cells: 95-100, 100-105)
    grid.place(100.0, [TileView(middle, ev(0.9), (-3.0, 1.0)), TileView(bottom, None), TileView(top, ev(0.2), None)],
               frame_id=7)
    cells = {c.index: c for c in grid.cells()}
    assert sorted(cells) == [19, 20, 21, 22]  # the top tile's whole extent (gate off): 105..115
    assert cells[19].plant == (97.0, 100.0) and cells[20].plant == (100.0, 101.0)
    assert cells[19].first_frame == 7 and len(cells[19].views) == 1
    assert cells[21].plant == (105.0, 110.0) and cells[22].plant == (110.0, 115.0)
    # the next frame, 5 cm further: the middle tile is bare now; the plant's cells get a bare view, no evidence
    grid.place(105.0, [TileView(bottom, None), TileView(middle, None), TileView(top, None)], frame_id=8)
    cells = {c.index: c for c in grid.cells()}
    assert cells[19].bare == 1 and cells[20].bare == 1 and len(cells[19].views) == 1
    assert 18 not in cells  # a cell only bare views saw is not tracked


@pytest.mark.parametrize("views, sprays, vetoed", [
    ([0.9], True, False),  # one view: the rule's fires
    ([0.4], False, False),
    ([0.9, 0.4], True, False),  # two views: mean log-odds (2.20 - 0.41) / 2 > 0
    ([0.6, 0.2], False, False),  # (0.41 - 1.39) / 2 < 0
    ([(0.9, 0.0), (0.1, 0.85)], False, True),  # a vetoed view holds the cell back
    ([(0.55, 0.45)], True, False),  # under the veto
])
def test_one_and_two_views_per_cell_are_decided_by_the_rule(views, sprays, vetoed):
    grid = CellGrid(RULE, geom(), 5.0)
    cell = Cell(0, 0, views=tuple(ev(*((v,) if isinstance(v, float) else v)) for v in views), plant=(0.0, 5.0))
    d = grid.decide(cell, "leaving")
    assert (d.spray, d.vetoed) == (sprays, vetoed)
    mean = np.mean([v.weed_log_odds for v in cell.views])
    if not vetoed:
        assert sprays == (mean >= log_odds(0.5))


@pytest.mark.parametrize("views, bare, share, sprays, sparse", [
    (1, 0, 1.0, True, False),  # one view, the only one: a plant
    (1, 1, 0.5, True, False),  # at the share itself
    (1, 2, 1 / 3, False, True),  # a plant in one view of three: a speck, not sprayed although the rule says so
    (3, 7, 0.3, False, True),
    (6, 4, 0.6, True, False),
])
def test_a_cell_sprays_only_if_enough_of_its_views_saw_a_plant(views, bare, share, sprays, sparse):
    from edge.spray.cells import plant_share

    grid = CellGrid(RULE, geom(), 5.0, min_plant_share=0.5)
    cell = Cell(0, 0, views=(ev(0.9),) * views, bare=bare, plant=(0.0, 5.0))
    assert plant_share(cell) == pytest.approx(share)
    d = grid.decide(cell, "leaving")
    assert (d.spray, d.sparse) == (sprays, sparse)
    assert CellGrid(RULE, geom(), 5.0).decide(cell, "leaving").spray  # min_plant_share 0: the rule alone
    # a cell the rule does not spray is not "sparse", whatever its share
    assert not grid.decide(Cell(0, 0, views=(ev(0.1),), bare=bare, plant=(0.0, 5.0)), "leaving").sparse


def test_bare_views_before_a_cells_first_plant_view_count_and_are_forgotten_when_it_leaves():
    g = geom()
    grid = CellGrid(RULE, g, 5.0, min_plant_share=0.5)
    top, middle, bottom = g.tiles(3)
    bare = [TileView(t, None) for t in (top, middle, bottom)]
    grid.place(100.0, bare, frame_id=1)  # ground 85..115 seen bare
    grid.place(102.0, bare, frame_id=2)  # 87..117
    assert len(grid) == 0  # nothing tracked: only bare views
    # frame 3 sees a speck at 106..107 (the middle tile covers 99..109 now)
    grid.place(104.0, [TileView(top, None), TileView(middle, ev(0.9), (2.0, 3.0)), TileView(bottom, None)], 3)
    (cell,) = grid.cells()
    # 105..110, bare in tile views: frame 1's top tile; frame 2's top and middle (the cell straddles their border);
    # frame 3's top tile (placed before the middle one saw the speck)
    assert (cell.index, len(cell.views), cell.bare) == (21, 1, 4)
    # the vehicle drives on: the speck's cell leaves the image and is decided: one plant view of three or more
    decided = []
    for k, d in enumerate(range(106, 150, 2)):
        grid.place(float(d), bare, frame_id=4 + k)
        decided += grid.due(float(d), (4 + k) * 66 * MS, kmh_to_cm_s(1.1), 66 * MS, 20 * MS)
    (dec,) = decided
    assert dec.cell.index == 21 and not dec.spray and dec.sparse and dec.cell.bare >= 2
    # bare ground that left the image is forgotten (the last frame's rear edge: 148 - 15 = 133 cm)
    assert grid._bare_before and all((j + 1) * 5.0 > 133.0 for _, j in grid._bare_before)


def _due_after(kmh, period_ms, latency_ms, frames=20):
    """Place one plant at the image's front edge, advance frame by frame at ``kmh``; per cell, (the frame it was
    decided on, why, its rear edge's offset from the image centre then, its views)."""
    g = geom()
    grid = CellGrid(RULE, g, 5.0)
    cm_s = kmh_to_cm_s(kmh)
    out = {}
    for k in range(frames):
        d, t = cm_s * k * period_ms / 1000, int(k * period_ms * MS)
        if k == 0:  # a 10 cm plant filling the top tile (5..15 cm ahead)
            grid.place(d, [TileView(g.tiles(3)[0], ev(0.9), (5.0, 15.0))], k)
        else:
            grid.place(d, [TileView(tile, ev(0.9), (max(tile.rear_cm, 5.0 - cm_s * k * period_ms / 1000),
                                                     min(tile.front_cm, 15.0 - cm_s * k * period_ms / 1000)))
                           for tile in g.tiles(3)
                           if tile.rear_cm < 15.0 - cm_s * k * period_ms / 1000
                           and tile.front_cm > 5.0 - cm_s * k * period_ms / 1000], k)
        for dec in grid.due(d, t, cm_s, int(period_ms * MS), int(latency_ms * MS)):
            rear = grid.bounds(dec.cell)[0] - d
            out[dec.cell.index] = (k, dec.why, rear, len(dec.cell.views), t, d)
        if not len(grid):
            break
    return g, out


@pytest.mark.parametrize("kmh", [5.0, 10.0, 15.0, 20.0])
def test_each_cell_is_decided_once_in_time_for_the_nozzle(kmh):
    """Whatever the speed, every cell is decided on the last frame that can still plan its opening in time:
    the next frame would be too late (deadline) or would not see it (leaving)."""
    period_ms, latency_ms = 1000 / 30, 25.0
    g, out = _due_after(kmh, period_ms, latency_ms)
    cm_s = kmh_to_cm_s(kmh)
    assert sorted(out) == [1, 2]  # the plant's two cells (5..10, 10..15), each decided exactly once
    for k, why, rear, views, t, d in out.values():
        t_open = t + (rear + g.nozzle_distance_cm - g.margin_before_cm) / cm_s * 1e9 - g.open_lag_ns
        assert t + latency_ms * MS <= t_open  # planned in time on this frame ...
        if why == "deadline":  # ... and the next frame would have been late
            assert t + period_ms * MS + latency_ms * MS > t_open
        else:  # ... or would not have seen it (the cell's front behind its rear edge)
            assert why == "leaving" and rear - cm_s * period_ms / 1000 + 5.0 <= -g.footprint_along_cm / 2
        assert views >= k + 1  # seen by every frame until then (twice when it straddles two tiles)


@pytest.mark.parametrize("nozzle_cm, kmh, why", [(50.0, 5.0, "leaving"), (25.0, 10.0, "deadline"),
                                                 (20.0, 15.0, "deadline"), (200.0, 15.0, "leaving")])
def test_near_nozzles_decide_by_the_deadline_far_ones_when_the_cell_leaves(nozzle_cm, kmh, why):
    g = geom(nozzle_distance_cm=nozzle_cm)
    grid = CellGrid(RULE, g, 5.0)
    cm_s, period = kmh_to_cm_s(kmh), int(MS * 1000 / 30)
    grid.place(0.0, [TileView(g.tiles(3)[2], ev(0.9), None)], 1)  # -15..-5 cm: the image's rear tile
    decided = []
    for k in range(30):
        decided += [(k, d.why) for d in grid.due(cm_s * k * period / 1e9, k * period, cm_s, period, 25 * MS)]
    assert {w for _, w in decided} == {why} and len(decided) == 2


def test_the_views_per_cell_fall_with_speed():
    views = {kmh: max(v[3] for v in _due_after(kmh, 1000 / 30, 25.0)[1].values()) for kmh in (5.0, 10.0, 15.0)}
    assert views[5.0] > views[10.0] > views[15.0] >= 1


def test_decide_all_and_clear():
    grid = CellGrid(RULE, geom(), 5.0)
    grid.place(0.0, [TileView(geom().tiles(3)[1], ev(0.9), None)], 1)
    assert len(grid) == 2 and grid.pending(0) == 2
    assert [d.why for d in grid.decide_all("end")] == ["end", "end"] and len(grid) == 0
    grid.place(0.0, [TileView(geom().tiles(3)[1], ev(0.9), None)], 1)
    assert grid.clear() == 2 and len(grid) == 0


# -- the per-lane planner on cells: a ManualClock, frames captured 50 ms apart ------------------------------


@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


class Speed:
    """A speed source the test sets frame by frame (None: unknown)."""

    def __init__(self, kmh):
        self.kmh = kmh

    def speed_kmh(self):
        return self.kmh

    def position(self):
        return None

    def link(self):
        return None

    def close(self):
        pass


def ground(h=80, w=32):
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BROWN
    return img


def make(classifier, kmh=7.2, path=None, **kw):
    """One lane, 40 cm along (80 px: 2 px a cm), 2 tiles of 20 cm; nozzles 100 cm behind; no lags, no margins."""
    c = SprayConfig(**{**dict(lanes=1, footprint_across_cm=16.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                              margin_before_cm=0.0, margin_after_cm=0.0, valve_open_lag_ms=0.0,
                              valve_close_lag_ms=0.0, speed_kmh=3.6, tile_rows=2), **kw})
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=1, clock=clock, max_on_s=30.0)
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(path, clock=clock))
    speed = Speed(kmh)
    planner = LanePlanner(classifier, SprayRule(0.5, None, labels=classifier.labels, weed_labels=("weed",)),
                          Geometry.from_config(c), sched, speed, tile_rows=c.tile_rows,
                          vegetation=VegetationGate(GateConfig().params()), cell_length_cm=5.0)
    return clock, sched, planner, speed


def drive(planner, clock, speed, plant_cm=None, speeds=(7.2,) * 8, period_s=0.05):
    """Frames of a pass, 50 ms apart, one per entry of ``speeds`` (km/h, set on the speed source before each;
    7.2 km/h = 10 cm a frame, half a tile); a 10 cm weed across the lane whose rear edge is ``plant_cm`` ahead
    of the image centre at the first frame (None: no plant)."""
    pos = 0.0
    results = []
    for k, kmh in enumerate(speeds):
        speed.kmh = kmh
        img = ground()
        if plant_cm is not None:
            rear = plant_cm - pos  # its offset now; the image top is +20 cm, 2 px a cm
            y0, y1 = int(round((20 - rear - 10) * 2)), int(round((20 - rear) * 2))
            if y1 > 0 and y0 < img.shape[0]:
                img[max(0, y0):min(img.shape[0], y1)] = GREEN
        if k:
            clock.advance(period_s)
        results.append(planner.process(Frame(img, k + 1, clock.now_ns(), "test"))[1][0])
        pos += kmh_to_cm_s(kmh or 0.0) * period_s
    return results


def test_a_weed_is_sprayed_over_its_extent_only(classifier, tmp_path):
    clock, sched, p, speed = make(classifier, path=tmp_path / "s.jsonl")
    t0 = clock.now_ns()
    res = drive(p, clock, speed, plant_cm=0.0)  # 200 cm/s: seen at 0..10, -10..0, -20..-10 cm
    # the gate's smoothing grows the mask by a pixel (0.5 cm here): the cells beside the plant get a sliver,
    # seen once as weed and once as soil (the other tile's classified sliver): not sprayed
    assert [r.cells.sprayed for r in res[:4]] == [0, 0, 2, 0] and sum(r.cells.sprayed for r in res) == 2
    [(o, c)] = sched.pending(0)
    # the plant lies 0..10 cm ahead at t0: the spray line (-100 cm) reaches it 500..550 ms later (the mask's
    # extent: not the 20 cm tile; margins 0)
    assert (o - t0) / MS == pytest.approx(500, abs=6) and (c - t0) / MS == pytest.approx(550, abs=6)
    events = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    planned = [e for e in events if e["event"] == "planned"]
    assert [(e["views"], e["decided"], e["first_frame"]) for e in planned] == [(3, "leaving", 1)] * 2
    # each cell's line says what it saw: the weed probability its views agreed on, where the plant was (cm of
    # distance travelled: 0..10), and the slivers beside it are logged spared, by the rule (not vetoed, not sparse)
    assert [(e["plant_cm"], e["weed"] > 0.9, e["plant_share"]) for e in planned] == [([0.0, 5.0], True, 1.0),
                                                                                   ([5.0, 10.0], True, 1.0)]
    spared = [e for e in events if e["event"] == "spared"]
    assert [(e["cell"], e["plant_cm"], e["weed"] < 0.5, e["vetoed"], e["sparse"]) for e in spared] == [
        (-1, [-0.5, 0.0], True, False, False), (2, [10.0, 10.5], True, False, False)]
    assert spared[1]["views"] == 3 and spared[1]["plant_share"] == 0.75  # 3 of the 4 views that covered it
    # the frame result says where the plants to spray are (for a live view): -20..-10 cm at the third frame
    assert [(round(a), round(b)) for a, b in res[2].targets_cm] == [(-20, -15), (-15, -10)]
    assert res[2].log_fields()["targets_cm"] == [[round(a, 2), round(b, 2)] for a, b in res[2].targets_cm]


@pytest.mark.parametrize("log_spared, to_file", [(True, True), (False, True), (True, False)])
def test_a_vetoed_weed_is_logged_spared_unless_switched_off(classifier, tmp_path, log_spared, to_file):
    clock, sched, p, speed = make(classifier, path=tmp_path / "s.jsonl" if to_file else None)
    p.spray.log_spared = log_spared
    p.retune(SprayRule(0.5, 0.0, labels=classifier.labels, weed_labels=("weed",), crop_labels=("crop",)), None)
    drive(p, clock, speed, plant_cm=0.0)  # a crop veto at crop probability 0: every view is vetoed
    if not to_file:  # no spray log file: the spared cells are not even counted (their fields cost per cell)
        assert sched.planned == 0 and sched.spray_log.counts["spared"] == 0
        return
    events = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert sched.planned == 0 and not [e for e in events if e["event"] != "spared"]
    spared = [(e["cell"], e["plant_cm"], e["vetoed"], e["weed"] > 0.9) for e in events]
    assert spared == ([(-1, [-0.5, 0.0], True, False), (0, [0.0, 5.0], True, True), (1, [5.0, 10.0], True, True),
                       (2, [10.0, 10.5], True, False)] if log_spared else [])


def test_margins_widen_the_plants_interval(classifier):
    clock, sched, p, speed = make(classifier, margin_before_cm=5.0, margin_after_cm=3.0)
    t0 = clock.now_ns()
    drive(p, clock, speed, plant_cm=0.0)
    [(o, c)] = sched.pending(0)
    assert (o - t0) / MS == pytest.approx(475, abs=6) and (c - t0) / MS == pytest.approx(565, abs=6)


def test_a_pure_ground_pass_classifies_and_sprays_nothing(classifier):
    clock, sched, p, speed = make(classifier)
    before = classifier.invokes
    res = drive(p, clock, speed, None)
    assert classifier.invokes == before and p.tiles_gated == p.tiles_seen == 16
    assert all(r.cells.decided == 0 and r.cells.pending == 0 for r in res) and sched.planned == 0


def test_a_stop_mid_pass_drops_the_pending_cells_unsprayed(classifier, tmp_path):
    clock, sched, p, speed = make(classifier, path=tmp_path / "s.jsonl")
    t0 = clock.now_ns()
    # one frame moving (the weed at 0..10 cm), stopped for three (the weed under the camera), then moving again
    res = drive(p, clock, speed, plant_cm=0.0, speeds=[7.2, 0.0, 0.0, 0.0, 7.2, 7.2, 7.2])
    stopped = res[1].cells
    assert stopped.sprayed >= 2 and stopped.pending == 0 and res[1].scheduled == 0  # decided at once, not sprayed
    assert all(r.cells.decided == 0 and r.cells.pending == 0 for r in res[2:4])  # nothing gathered while stopped
    events = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [e["why"] for e in events if e["event"] == "not_sprayed"] == \
        ["speed below minimum or unknown"] * stopped.sprayed
    # moving again at 200 ms: the weed, still in view (-10..0 cm), is seen afresh and sprayed where it is
    assert sum(r.cells.sprayed for r in res[4:]) >= 2
    [(o, c)] = sched.pending(0)
    assert (o - t0) / MS == pytest.approx(200 + 450, abs=6) and (c - t0) / MS == pytest.approx(200 + 500, abs=6)


def test_an_unknown_speed_sprays_nothing(classifier):
    clock, sched, p, speed = make(classifier)
    res = drive(p, clock, speed, plant_cm=0.0, speeds=[None] * 6)
    assert sched.planned == 0 and len(p.cells) == 0 and p.too_slow_frames == 6
    assert all(r.cells.decided == 0 for r in res)


def test_a_speed_change_mid_pass_keeps_the_cells_on_the_ground(classifier):
    """Seen at 14.4 km/h (20 cm a frame), decided after slowing to 7.2: the cells stay where the odometer put
    them, and the spray is timed from there at the new speed."""
    clock, sched, p, speed = make(classifier)
    t0 = clock.now_ns()
    drive(p, clock, speed, plant_cm=0.0, speeds=[14.4, 7.2, 7.2, 7.2])
    # frame 2 (50 ms) is 20 cm on: the plant at -20..-10; at 200 cm/s the spray line is 80..90 cm behind it
    [(o, c)] = sched.pending(0)
    assert (o - t0) / MS == pytest.approx(50 + 400, abs=6) and (c - t0) / MS == pytest.approx(50 + 450, abs=6)


@pytest.mark.parametrize("areas, minimum, sprays, small", [
    ([0.2, 0.18], 0.0, True, False),  # off: the rule alone
    ([0.2, 0.18], 0.5, False, True),  # a speck seen twice, never as big as a plant: not sprayed
    ([0.1, 1.4], 0.5, True, False),  # a plant entering as a sliver, then seen whole: its largest view counts
    ([0.5], 0.5, True, False),  # at the minimum itself
    ([None], 0.5, True, False),  # the gate off: nothing measured, never "small"
])
def test_a_cell_sprays_only_if_one_view_saw_enough_vegetation(areas, minimum, sprays, small):
    g = geom()
    grid = CellGrid(RULE, g, 5.0, min_plant_cm2=minimum)
    _, middle, _ = g.tiles(3)  # -5..5 cm around the centre
    for k, area in enumerate(areas):  # the same ground (100..101 cm travelled + the tile's offsets) in each frame
        grid.place(100.0 + k, [TileView(middle, ev(0.9), (-1.0 - k, 0.0 - k), area)], frame_id=k + 1)
    (cell,) = grid.cells()
    assert cell.peak_cm2 == max(math.inf if a is None else a for a in areas)
    d = grid.decide(cell, "leaving")
    assert (d.spray, d.small, d.sparse) == (sprays, small, False)
    # a cell the rule does not spray is not "small"
    assert not grid.decide(Cell(0, 0, views=(ev(0.1),), plant=(0.0, 5.0), peak_cm2=0.1), "leaving").small


def test_min_plant_cm2_is_checked():
    with pytest.raises(ValueError, match="min_plant_cm2"):
        CellGrid(RULE, geom(), 5.0, min_plant_cm2=-1.0)
    with pytest.raises(ValueError, match="min_plant_cm2"):
        CellGrid(RULE, geom(), 5.0, min_plant_cm2=math.inf)
