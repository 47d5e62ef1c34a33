"""Per-lane spraying: tiles, a decision per lane, scheduled sprays; the loop and edge-run with [spray]."""

import json
import threading

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.spray.config import SprayConfig
from edge.decide.rule import SprayRule
from edge.core.frame import Frame
from edge.spray.geometry import Geometry
from edge.inference import Classifier
from edge.loop.per_lane import LanePlanner, LaneProcessor
from edge.loop.runner import RunLoop
from edge.outputs.dryrun import DryRunOutput
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import FixedSpeed
from edge.spray.spray_log import SprayLog
from tests.conftest import BROWN, GREEN, TOY_BUNDLE

MS = 1_000_000


@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


def field(weed_lanes=(), lanes=4, h=64, w=128, rows_weed=None):
    """Soil, with a green (weed) patch filling the given lanes (all rows, or only row ``rows_weed`` of 2)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BROWN
    lw = w // lanes
    for lane in weed_lanes:
        y0, y1 = (0, h) if rows_weed is None else (rows_weed * h // 2, (rows_weed + 1) * h // 2)
        img[y0:y1, lane * lw:(lane + 1) * lw] = GREEN
    return img


def spray_cfg(**kw):
    base = dict(lanes=4, footprint_across_cm=100.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                margin_before_cm=0.0, margin_after_cm=0.0, valve_open_lag_ms=0.0, valve_close_lag_ms=0.0,
                speed_kmh=3.6, tile_rows=1)  # 3.6 km/h = 100 cm/s
    base.update(kw)
    return SprayConfig(**base)


def make(classifier, kmh=3.6, path=None, **kw):
    """4 lanes, gate off (each tile is a view of every cell it covers), 5 cm cells."""
    c = spray_cfg(**kw)  # the geometry; the speed is FixedSpeed(kmh)
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=c.channels_needed, clock=clock, max_on_s=30.0)
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(path, clock=clock))
    planner = LanePlanner(classifier, SprayRule(0.5, None, labels=classifier.labels, weed_labels=("weed",)),
                          Geometry.from_config(c), sched, FixedSpeed(kmh), min_speed_kmh=1.0, tile_rows=c.tile_rows)
    return clock, out, sched, planner


def test_tiles_cover_the_image_and_auto_rows_are_square(classifier):
    _, _, _, p = make(classifier, tile_rows=0)
    rows, tiles, crops = p.cut(field(h=96, w=128))  # lanes 32 px wide, 96 px tall -> 3 rows
    assert rows == 3 and len(tiles) == 12
    assert sum(c.shape[0] * c.shape[1] for c in crops) == 96 * 128
    assert {c.shape[:2] for c in crops} == {(32, 32)}


@pytest.mark.parametrize("h, w, tile_rows", [(2, 2, 0), (2, 2, 1), (1, 1, 1), (16, 2, 1)])
def test_a_frame_too_small_for_the_tile_grid_is_a_source_error_not_a_traceback(classifier, h, w, tile_rows):
    from edge.core.errors import SourceError

    _, _, _, p = make(classifier, tile_rows=tile_rows)  # 4 lanes
    with pytest.raises(SourceError, match=rf"a {w}x{h} frame is too small for 4 lane\(s\)") as e:
        p.cut(field(h=h, w=w))
    assert e.value.exit_code == 5 and "lanes / tile_rows" in str(e.value)


def test_classify_many_matches_classify(classifier):
    imgs = [field((0,), lanes=1, h=32, w=32), field((), lanes=1, h=32, w=32)]
    many = classifier.classify_many(imgs)
    for img, s in zip(imgs, many):
        assert np.allclose(s.probs, classifier.classify(img).probs)
    assert [s.top[0] for s in many] == ["weed", "soil"]


def test_a_frames_tiles_are_batched_with_the_same_lane_decisions():
    """4 lanes x 3 rows: two invokes per frame (batches of 8 and 4), and every lane decides as it would one
    tile at a time."""
    batched, single = Classifier(TOY_BUNDLE, num_threads=1), Classifier(TOY_BUNDLE, num_threads=1, batch=False)
    image = field((1, 3), h=96, w=128)
    image[64:, 0:32] = GREEN  # lane 0: weed in the bottom row only
    results = []
    for c in (batched, single):
        clock, _, sched, p = make(c, tile_rows=3)
        p.process(Frame(image, 1, clock.now_ns(), "test"))  # first frame: the batch interpreter is made and checked
        before = c.invokes
        scores, lanes, _ = p.process(Frame(image, 2, clock.now_ns(), "test"))
        p.finish_cells()  # every cell decided now: the same plans either way
        decisions = [(r.decision.weed_frame, r.tile_scores) for r in lanes]
        results.append((c.invokes - before, [s.probs for s in scores], decisions, [sched.pending(ch) for ch in range(4)]))
    (n_batched, probs_b, lanes_b, plans_b), (n_single, probs_s, lanes_s, plans_s) = results
    assert n_batched == 2 and n_single == 12 and batched.batch_mode == "batched"
    assert all(np.max(np.abs(a - b)) <= batched._out_scale for a, b in zip(probs_b, probs_s))
    assert lanes_b == lanes_s and plans_b == plans_s
    assert [spray for spray, _ in lanes_b] == [True, True, False, True]


def test_the_first_frame_of_each_size_warms_the_scorer_up_and_no_later_frame_makes_an_interpreter(monkeypatch):
    """A new frame size (the first frame, or a camera that changed mode) warms the scorer up for its grid: every
    batch size its tiles can need is made and checked then, so no later frame of that size makes one."""
    from edge.inference import classifier as mod

    made, warmed = [], []
    real_make = mod.batch_interpreter
    monkeypatch.setattr(mod, "batch_interpreter", lambda like, path, threads, n: made.append(n) or
                        real_make(like, path, threads, n))
    c = Classifier(TOY_BUNDLE, num_threads=1)
    clock, _, _, p = make(c, tile_rows=3)
    real_warm = p.scorer.warm_up
    monkeypatch.setattr(p.scorer, "warm_up", lambda w, h, n: warmed.append((w, h, n)) or real_warm(w, h, n))
    rng = np.random.default_rng(5)
    for k in range(6):  # green patches in varying lanes and rows: the batch sizes of the gated-out frames vary
        p.process(Frame(field(tuple(rng.choice(4, k % 4, replace=False)), h=96, w=128), k, clock.now_ns(), "test"))
        assert sorted(made) == [2, 4, 8] and (p.warm_up_ns > 0) == (k == 0)
    p.process(Frame(field((1,), h=48, w=128), 7, clock.now_ns(), "test"))  # another size: warmed up once more
    assert warmed == [(128, 96, 12), (128, 48, 12)] and sorted(made) == [2, 4, 8]


def test_a_weed_lane_sprays_its_own_nozzle_at_the_right_time(classifier):
    clock, out, sched, p = make(classifier)
    clock.advance(1.0)
    t0 = clock.now_ns()
    _, lanes, kmh = p.process(Frame(field((1,)), 1, t0, "test"))
    assert kmh == 3.6
    assert [r.decision.weed_frame for r in lanes] == [False, True, False, False]
    # the first frame: no cell is due yet (the next frame may still see them); 8 cells of 5 cm in each lane
    assert [r.cells.pending for r in lanes] == [8] * 4 and not any(r.decision.spray for r in lanes)
    assert p.finish_cells() == 8  # the source ended: lane 1's 8 cells spray, merged into one interval
    # whole strip: rear edge 20 cm behind the centre -> 80 cm to the nozzle = 800 ms; front edge 1200 ms
    assert sched.pending(1) == [(t0 + 800 * MS, t0 + 1200 * MS)]
    assert all(sched.pending(ch) == [] for ch in (0, 2, 3))


def test_weed_in_one_row_schedules_only_that_tile(classifier):
    clock, out, sched, p = make(classifier, tile_rows=2)
    t0 = clock.now_ns()
    p.process(Frame(field((2,), rows_weed=0), 1, t0, "test"))  # top row = ahead: 0..20 cm ahead
    p.finish_cells()
    assert sched.pending(2) == [(t0 + 1000 * MS, t0 + 1200 * MS)]


def test_lane_channels_map_lanes_to_outputs(classifier):
    clock, out, sched, p = make(classifier, lane_channels=[3, 2, 1, 0])
    p.process(Frame(field((0,)), 1, clock.now_ns(), "test"))
    p.finish_cells()
    assert sched.pending(3) and not sched.pending(0)


def test_below_min_speed_nothing_sprays(classifier, tmp_path):
    clock, out, sched, p = make(classifier, kmh=0.5, path=tmp_path / "s.jsonl")
    _, lanes, kmh = p.process(Frame(field((0, 1, 2, 3)), 1, clock.now_ns(), "test"))
    assert kmh is None and p.too_slow_frames == 1
    assert len(p.cells) == 0 and p.finish_cells() == 0  # nothing is placed on the ground
    assert all(sched.pending(ch) == [] for ch in range(4))
    clock.advance(2.0)
    sched.run_due()
    assert out.state() == (False,) * 4 and sched.planned == 0


def test_slow_pipeline_sprays_late_and_says_so(classifier):
    clock, out, sched, p = make(classifier, nozzle_distance_cm=30.0)  # rear edge 10 cm from the nozzle: 100 ms
    t0 = clock.now_ns()
    clock.advance(0.25)  # classified 250 ms after capture
    p.process(Frame(field((0,)), 1, t0, "test"))
    p.finish_cells()
    assert sched.late >= 1
    sched.run_due()
    assert out.state()[0] is True  # sprays the rest of the target


class Frames:
    """A finite source of frames on a manual clock, 50 ms apart."""

    live = False
    name = "frames"
    dropped = 0

    def __init__(self, images, clock):
        self.images, self.clock, self.i = list(images), clock, 0

    def link(self):
        return None

    def read(self, timeout=None):
        if not self.images:
            return None
        self.clock.advance(0.05)
        self.i += 1
        return Frame(self.images.pop(0), self.i, self.clock.now_ns(), self.name)

    def close(self):
        pass


def test_spray_pipeline_runs_records_lanes_and_reports_max_speed(classifier, tmp_path):
    """A weed strip along lane 1 under a camera moving 5 cm a frame: its cells are decided as they leave the
    image (8 frames after they entered), sprayed; the frame log says per lane what happened to the cells."""
    from edge.service.records import JsonlLog

    clock, out, sched, p = make(classifier)
    src = Frames([field((1,))] * 12, clock)
    pipe = RunLoop(src, LaneProcessor(p, clock=clock), clock=clock, jsonl=JsonlLog(tmp_path / "f.jsonl"))
    summary = pipe.run()
    assert summary.frames == 12 and summary.spray_frames >= 1
    spray = summary.stats["spray"]
    assert spray["planned"] > 0 and spray["late"] == 0 and spray["cells_dropped"] == 0
    assert spray["max_speed_kmh"] > 0 and spray["limited_by"] in ("latency", "frame rate")
    # the frame period is 50 ms and the footprint 40 cm long: every ground point seen once up to 28.8 km/h
    assert spray["coverage_kmh"] == pytest.approx(28.8)
    lines = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    cells = [ln["lanes"][1]["cells"] for ln in lines]
    assert cells[0] == {"decided": 0, "sprayed": 0, "vetoed": 0, "sparse": 0, "small": 0, "pending": 8}
    assert sum(c["sprayed"] for c in cells) == sum(c["decided"] for c in cells) > 0  # every weed cell sprays
    assert all(ln["lanes"][0]["cells"]["sprayed"] == 0 for ln in lines) and lines[1]["speed_kmh"] == 3.6
    # the file ended: the pending cells were decided, the planned sprays carried out (merged: one open), all off
    assert spray["opens"] == 1 and spray["closes"] == 1 and spray["cancelled"] == 0
    assert out.state() == (False,) * 4


def test_edge_run_with_spray_section(tmp_path, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    for i, lanes in enumerate([(), (0,), (0, 3), ()]):
        cv2.imwrite(str(d / f"{i:03d}.png"), field(lanes, h=64, w=128))
    states, slog = tmp_path / "states.jsonl", tmp_path / "spray.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[outputs]
state_file = "{states}"
[spray]
lanes = 4
footprint_across_cm = 100
footprint_along_cm = 40
nozzle_distance_cm = 100
speed_kmh = 36
valve_open_lag_ms = 0
tile_rows = 1
log_jsonl = "{slog}"
min_plant_share = 0
""")  # min_plant_share 0: the frames are not one pass (lane 3's weed is in one frame of those that cover its ground)
    code = main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    import re

    planned = int(re.search(r"sprays: (\d+) planned", out).group(1))
    assert "max speed:" in out and planned > 0  # lanes 0 and 3's weed cells (how many: the pacing of the reads)
    assert int(re.search(r"(\d+) opens", out).group(1)) >= 2  # carried out before exit (merging depends on pacing)
    events = [json.loads(x) for x in slog.read_text().splitlines()]
    sprayed = [e for e in events if e["event"] in ("planned", "late", "missed")]
    assert len(sprayed) == planned and {e["lane"] for e in sprayed} == {0, 3}
    # 4 dry-run channels (one per lane), all off at the end
    last = json.loads(states.read_text().splitlines()[-1])
    assert last["state"] == [False] * 4


SPRAY_TOML = """
[spray]
lanes = 4
footprint_across_cm = 100
footprint_along_cm = 40
nozzle_distance_cm = 100
speed_kmh = 6
valve_open_lag_ms = 0
"""


def test_validate_config_with_spray(tmp_path, capsys):
    from edge.core.errors import EXIT_CONFIG

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n" + SPRAY_TOML)
    assert main(["--config", str(cfg), "--validate-config"]) == 0
    out = capsys.readouterr().out
    # 100 - 20 (rear edge) - 5 (default margin) = 75 cm in 100 ms = 27 km/h
    assert "4 channel(s)" in out and "channels [0, 1, 2, 3]" in out and "27.0 km/h at 100 ms" in out
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n[outputs]\nchannels = 2\n" + SPRAY_TOML)
    assert main(["--config", str(cfg), "--validate-config"]) == EXIT_CONFIG
    assert "output channel 3 but the output has 2" in capsys.readouterr().err


def test_gps_speed_and_position_go_into_the_spray_log(classifier, tmp_path):
    from edge.spray.speed import NmeaSpeed
    from tests.edge.test_speed import nmea

    clock, out, sched, p = make(classifier, path=tmp_path / "s.jsonl")
    gps = NmeaSpeed("unused", clock=clock)
    p.spray.speed = gps
    p.process(Frame(field((0,)), 1, clock.now_ns(), "test"))  # no fix yet: nothing sprays
    assert sched.pending(0) == []
    gps.feed(nmea("GPRMC,1,A,4807.038,N,01131.000,E,1.9438,0,230394,,,A"))  # 1.9438 kn = 3.6 km/h
    t0 = clock.now_ns()
    _, lanes, kmh = p.process(Frame(field((0,)), 2, t0, "test"))
    assert kmh == pytest.approx(3.6, abs=1e-3)
    p.finish_cells()
    [(o, c)] = sched.pending(0)
    assert (o - t0) / MS == pytest.approx(800, abs=0.1) and (c - t0) / MS == pytest.approx(1200, abs=0.1)
    sched.close()
    planned = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    planned = [e for e in planned if e["event"] == "planned"]
    assert planned[0]["lat"] == pytest.approx(48.1173) and planned[0]["lon"] == pytest.approx(11.516667)


def test_test_outputs_pulses_each_channel_in_turn(tmp_path, capsys):
    from edge.app import checks
    from edge.config import load_config

    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=3, clock=clock)
    assert checks.pulse_outputs(load_config(), pulse_s=0.2, gap_s=0.1, output=out, wait=clock.sleep) == 0
    changes = [(t // MS, ch, on) for t, ev, ch, on in out.events if ev == "set"]
    assert changes == [(0, 0, True), (200, 0, False), (300, 1, True), (500, 1, False),
                       (600, 2, True), (800, 2, False)]
    assert out.closed and "done: all outputs off" in capsys.readouterr().out


def test_test_outputs_stops_on_request_with_everything_off():
    from edge.app import checks
    from edge.config import load_config

    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=3, clock=clock)
    stop = threading.Event()

    def wait(s):  # a signal arrives during the first pulse
        stop.set()
        clock.sleep(s)

    checks.pulse_outputs(load_config(), pulse_s=0.2, output=out, wait=wait, stop=stop)
    assert [(ch, on) for _, ev, ch, on in out.events if ev == "set"] == [(0, True), (0, False)]
    assert out.state() == (False,) * 3


def test_edge_run_test_outputs(tmp_path, capsys):
    states = tmp_path / "s.jsonl"
    assert main(["--test-outputs", "--pulse-ms", "1", "--channels", "2", "--state-file", str(states)]) == 0
    assert "channel 1: off" in capsys.readouterr().out
    ons = [json.loads(x)["channel"] for x in states.read_text().splitlines() if json.loads(x)["on"]]
    assert ons == [0, 1]


def test_frame_debounce_and_hold_are_refused_with_spray(tmp_path):
    """Per-lane N-of-M and the hold were replaced by the ground cells: a config asking for them says so."""
    from edge.config import load_config
    from edge.core.errors import ConfigError

    for extra in ("debounce_n = 2\ndebounce_m = 3\n", "min_hold_ms = 200\n"):
        cfg = tmp_path / "c.toml"
        cfg.write_text("[decision]\n" + extra + SPRAY_TOML)
        with pytest.raises(ConfigError, match="whole-frame mode only.*cell_length_cm"):
            load_config(cfg)
    cfg.write_text("[decision]\ndebounce_n = 2\ndebounce_m = 3\nmin_hold_ms = 200\n")  # whole frame: kept
    assert load_config(cfg).decision.debounce_n == 2


def test_enable_switch_off_nothing_sprays(classifier, tmp_path):
    clock, out, sched, p = make(classifier, path=tmp_path / "s.jsonl")
    switch = {"on": False}
    p.spray.enable = lambda: switch["on"]
    p.process(Frame(field((0,)), 1, clock.now_ns(), "test"))
    p.finish_cells()  # lane 0's cells spray, but the switch is off
    assert sched.pending(0) == [] and p.disabled_frames == 1
    switch["on"] = True
    p.process(Frame(field((0,)), 2, clock.now_ns(), "test"))
    p.finish_cells()
    assert sched.pending(0) != []
    switch["on"] = False
    p.process(Frame(field(()), 3, clock.now_ns(), "test"))  # switched off: the pending spray is cancelled
    assert sched.pending(0) == [] and sched.cancelled == 1
    sched.close()
    events = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert events[0] == {**events[0], "event": "not_sprayed", "why": "enable switch off"}




@pytest.mark.parametrize("pull_up", [False, True])
def test_enable_switch_on_gpio_cancels_at_once(mock_pins, pull_up):
    from edge.inputs.enable import EnableSwitch

    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=2, clock=clock)
    sched = SprayScheduler(out, clock=clock)
    sw = EnableSwitch(22, pull_up=pull_up, on_off=lambda: sched.cancel_all("enable switch off"))
    pin = mock_pins.pin(22)
    assert not sw.is_on()
    (pin.drive_low if pull_up else pin.drive_high)()
    assert sw.is_on()
    sched.plan(0, 0, 1_000 * MS)
    sched.run_due()
    assert out.state() == (True, False)
    (pin.drive_high if pull_up else pin.drive_low)()  # switched off mid-spray: off now, not at the next frame
    assert out.state() == (False, False) and sched.pending(0) == []
    sw.close()
    sw.close()
    assert not sw.is_on()


def test_edge_run_with_enable_switch_off(mock_pins, tmp_path, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i:03d}.png"), field((1,)))
    slog = tmp_path / "spray.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(SPRAY_TOML + f'enable_pin = 22\ntile_rows = 1\nlog_jsonl = "{slog}"\n')
    assert main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "-q"]) == 0
    assert "3 with the enable switch off" in capsys.readouterr().out
    events = [json.loads(x) for x in slog.read_text().splitlines()]
    whys = [e["why"] for e in events if e["event"] == "not_sprayed"]
    assert whys and set(whys) == {"enable switch off"}  # every weed cell decided, none sprayed
    cfg.write_text(SPRAY_TOML + "enable_pin = 17\n[outputs]\nkind = 'gpio'\npins = [17, 27, 5, 6]\n")
    from edge.core.errors import EXIT_CONFIG

    assert main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "-q"]) == EXIT_CONFIG
    assert "also an output pin" in capsys.readouterr().err


def test_edge_run_with_a_stopped_wheel_encoder(mock_pins, tmp_path, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"{i:03d}.png"), field((1,)))
    cfg = tmp_path / "c.toml"
    cfg.write_text(SPRAY_TOML + "speed_source = 'encoder'\nencoder_pin = 23\nencoder_cm_per_pulse = 2.5\n")
    assert main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "-q"]) == 0
    out = capsys.readouterr().out
    assert "sprays: 0 planned" in out and "2 frames below min speed" in out


def test_openings_blocked_by_the_enable_switch_are_in_the_summary_and_stats_line(classifier, mock_pins, caplog):
    from edge.inputs.enable import EnableSwitch
    from edge.loop.stats import max_speed_line

    clock, out, sched, p = make(classifier)
    sw = EnableSwitch(22)  # off; no planner gate: the sprays were planned in the moment before it went off
    out.set_enable(sw)
    pipe = RunLoop(Frames([field((1,)), field((1,)), field(())], clock), LaneProcessor(p, clock=clock), clock=clock)
    with caplog.at_level("INFO", logger="edge.loop.runner"):
        spray = pipe.run().stats["spray"]
    sw.close()
    assert spray["blocked"] == 1 and spray["opens"] == 0  # the two frames' strips merged into one interval
    assert "1 openings blocked by the enable switch" in max_speed_line(spray)
    stats = [r.getMessage() for r in caplog.records if r.name == "edge.loop.runner"][-1]
    assert "enable switch blocked 1 opening(s)" in stats


def test_validate_config_says_when_the_spray_line_is_inside_the_view(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n" + SPRAY_TOML.replace("nozzle_distance_cm = 100",
                                                                              "nozzle_distance_cm = 20"))
    assert main(["--config", str(cfg), "--validate-config"]) == 0
    out = capsys.readouterr().out
    assert "the spray line is inside the view" in out and "= -5 cm" in out


def test_a_fixed_speed_below_the_minimum_is_refused():
    with pytest.raises(ValueError, match="below min_speed_kmh = 1: with speed_source = 'fixed' nothing would ever"):
        spray_cfg(speed_kmh=0.5)
