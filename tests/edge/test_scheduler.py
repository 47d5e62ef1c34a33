"""Spray timing: the interval maths (table-driven), the scheduler on a manual clock, the [spray] config."""

import json
import math
import threading

import pytest

from edge.core.clock import ManualClock
from edge.config import load_config
from edge.spray.config import SprayConfig
from edge.core.errors import EXIT_OUTPUT, ConfigError, OutputError
from edge.spray.geometry import Geometry, kmh_to_cm_s, max_speed
from edge.outputs.dryrun import DryRunOutput
from edge.spray.scheduler import SprayScheduler
from edge.spray.spray_log import SprayLog

MS = 1_000_000


def cfg(**kw):
    base = dict(lanes=4, footprint_across_cm=100.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                margin_before_cm=0.0, margin_after_cm=0.0, valve_open_lag_ms=0.0, valve_close_lag_ms=0.0,
                speed_kmh=3.6)
    base.update(kw)
    return SprayConfig(**base)


# -- geometry ------------------------------------------------------------------------------

def test_equal_and_custom_lanes():
    g = Geometry.from_config(cfg())
    assert g.lane_edges == pytest.approx((0, 0.25, 0.5, 0.75, 1.0))
    assert g.channels == (0, 1, 2, 3)
    g = Geometry.from_config(cfg(lanes=3, lane_widths_cm=[20, 50, 30], lane_channels=[2, 0, 1]))
    assert g.lane_edges == pytest.approx((0, 0.2, 0.7, 1.0))
    assert g.channels == (2, 0, 1)


@pytest.mark.parametrize("image_top, rows, expect", [
    # (front_cm, rear_cm) of lane 0's tiles, top row first; footprint 40 cm along travel
    ("ahead", 1, [(20, -20)]),
    ("ahead", 2, [(20, 0), (0, -20)]),
    ("behind", 2, [(0, -20), (20, 0)]),
    ("ahead", 4, [(20, 10), (10, 0), (0, -10), (-10, -20)]),
])
def test_tiles_along_travel(image_top, rows, expect):
    tiles = Geometry.from_config(cfg(image_top=image_top)).tiles(rows)
    assert len(tiles) == 4 * rows
    lane0 = [(t.front_cm, t.rear_cm) for t in tiles if t.lane == 0]
    assert lane0 == [pytest.approx(e) for e in expect]


# speed 3.6 km/h = 100 cm/s; nozzle 100 cm behind the image centre; footprint 40 cm along travel
@pytest.mark.parametrize("kw, rear, front, expect_ms", [
    ({}, -20, 20, (800, 1200)),  # whole strip: rear edge needs 80 cm, front edge 120 cm
    ({}, 0, 20, (1000, 1200)),  # the front half only
    ({"margin_before_cm": 5, "margin_after_cm": 10}, -20, 20, (750, 1300)),
    ({"valve_open_lag_ms": 40, "valve_close_lag_ms": 25}, -20, 20, (760, 1175)),
    ({"speed_kmh": 7.2}, -20, 20, (400, 600)),  # twice as fast: half the time
    ({"nozzle_distance_cm": 20, "margin_before_cm": 5}, -20, 20, (-50, 400)),  # nozzle too close: opens "before" capture
    ({"speed_kmh": 36, "valve_close_lag_ms": 50}, 0, 10, (100, 101)),  # 10 ms target, slow closing: 1 ms pulse
])
def test_interval_maths(kw, rear, front, expect_ms):
    c = cfg(**kw)
    g = Geometry.from_config(c)
    t0 = 5_000 * MS
    o, cl = g.interval_ns(rear, front, t0, kmh_to_cm_s(c.speed_kmh))
    assert ((o - t0) / MS, (cl - t0) / MS) == pytest.approx(expect_ms, abs=1e-3)


def test_interval_needs_speed():
    with pytest.raises(ValueError, match="speed"):
        Geometry.from_config(cfg()).interval_ns(-20, 20, 0, 0.0)


@pytest.mark.parametrize("kw, latency_ms, period_ms, views, landing, coverage", [
    # room = -20 + 100 - 0 = 80 cm; 80 cm in 100 ms = 800 cm/s = 28.8 km/h
    ({}, 100, None, 1, 28.8, math.inf),
    ({"valve_open_lag_ms": 60}, 100, None, 1, 18.0, math.inf),  # 80 cm / 160 ms
    ({"margin_before_cm": 40}, 100, None, 1, 14.4, math.inf),  # 40 cm / 100 ms
    ({}, 50, 50, 2, 57.6, 14.4),  # 2 views a spot: 40 cm in 2 frames of 50 ms -> 400 cm/s (no frame counting wait)
    ({"nozzle_distance_cm": 15}, 10, None, 1, 0.0, math.inf),  # nozzle inside the footprint: never in time
])
def test_max_speed(kw, latency_ms, period_ms, views, landing, coverage):
    m = max_speed(Geometry.from_config(cfg(**kw)), latency_ms, period_ms, views)
    assert m.landing_kmh == pytest.approx(landing)
    assert m.coverage_kmh == pytest.approx(coverage)
    assert m.max_kmh == pytest.approx(min(landing, coverage))


# -- config --------------------------------------------------------------------------------

def test_no_spray_section_keeps_whole_frame_mode():
    assert load_config().spray is None


def test_spray_section_loads(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[spray]\nlanes = 2\nfootprint_across_cm = 60\nfootprint_along_cm = 45\n"
                 "nozzle_distance_cm = 120\nspeed_kmh = 6\n")
    c = load_config(p)
    assert c.spray.lanes == 2 and c.spray.speed_kmh == 6 and c.spray.channel_of(1) == 1


@pytest.mark.parametrize("extra, words", [
    ("lanez = 3\n", "unknown key(s) lanez"),
    ("lanes = 2\nlane_widths_cm = [10, 10]\n", "add up to 20"),
    ("lanes = 2\nlane_widths_cm = [60]\n", "one width per lane"),
    ("lanes = 2\nlane_channels = [0]\n", "one output channel per lane"),
    ("speed_kmh = 0\n", "speed_kmh = 0: speed_source = 'fixed' needs your working speed"),
    ("valve_open_lag_ms = -1\n", "[spray] valve_open_lag_ms"),
])
def test_bad_spray_configs_name_the_key(tmp_path, extra, words):
    base = {"footprint_across_cm": "60", "footprint_along_cm": "45", "nozzle_distance_cm": "120", "speed_kmh": "6"}
    lines = [f"{k} = {v}" for k, v in base.items() if f"{k} =" not in extra]
    p = tmp_path / "c.toml"
    p.write_text("[spray]\n" + "\n".join(lines) + "\n" + extra)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert words in str(e.value)


# -- the scheduler -------------------------------------------------------------------------

def make(channels=2, max_on_s=10.0, merge_gap_ns=0, path=None):
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=channels, clock=clock, max_on_s=30.0)
    slog = SprayLog(path, clock=clock)
    return clock, out, SprayScheduler(out, clock=clock, spray_log=slog, max_on_s=max_on_s,
                                      merge_gap_ns=merge_gap_ns, refresh_s=0.5)


def run_until(clock, s, out, t_ms, step_ms=1):
    """Advance the manual clock in steps, running the scheduler; returns the (t_ms, channel, on) changes."""
    changes, last = [], out.state()
    while clock.now_ns() < t_ms * MS:
        clock.advance(step_ms / 1000)
        s.run_due()
        st = out.state()
        changes += [(clock.now_ns() // MS, ch, st[ch]) for ch in range(len(st)) if st[ch] != last[ch]]
        last = st
    return changes


@pytest.mark.parametrize("plans, expect", [
    # one interval
    ([(0, 100, 200)], [(100, 0, True), (200, 0, False)]),
    # overlapping intervals merge into one open/close
    ([(0, 100, 200), (0, 150, 300)], [(100, 0, True), (300, 0, False)]),
    # touching intervals merge
    ([(0, 100, 200), (0, 200, 250)], [(100, 0, True), (250, 0, False)]),
    # disjoint intervals stay apart
    ([(0, 100, 150), (0, 180, 220)], [(100, 0, True), (150, 0, False), (180, 0, True), (220, 0, False)]),
    # channels are independent
    ([(0, 100, 150), (1, 120, 160)], [(100, 0, True), (120, 1, True), (150, 0, False), (160, 1, False)]),
    # planned out of order
    ([(0, 180, 220), (0, 100, 150)], [(100, 0, True), (150, 0, False), (180, 0, True), (220, 0, False)]),
])
def test_scheduler_switches_at_planned_times(plans, expect):
    clock, out, s = make()
    for ch, o, c in plans:
        assert s.plan(ch, o * MS, c * MS, lane=ch).status == "planned"
    assert run_until(clock, s, out, 400) == expect
    assert s.late == 0 and s.missed == 0
    assert max(s.delays_ns) <= 1 * MS  # within one 1 ms step of the manual clock


def test_small_gap_merges_with_merge_gap():
    clock, out, s = make(merge_gap_ns=40 * MS)
    s.plan(0, 100 * MS, 150 * MS)
    s.plan(0, 180 * MS, 220 * MS)
    assert s.pending(0) == [(100 * MS, 220 * MS)]
    assert run_until(clock, s, out, 300) == [(100, 0, True), (220, 0, False)]


def test_run_due_returns_next_wake():
    clock, out, s = make()
    assert s.run_due() is None
    s.plan(0, 100 * MS, 200 * MS)
    assert s.run_due() == 100 * MS
    clock.advance(0.1)
    assert s.run_due() == 200 * MS and out.state() == (True, False)


def test_late_spray_is_counted_logged_and_sprayed(tmp_path):
    clock, out, s = make(path=tmp_path / "spray.jsonl")
    clock.advance(0.15)
    r = s.plan(0, 100 * MS, 200 * MS, lane=0, frame_id=7)
    assert r.status == "late" and r.late_ns == 50 * MS and s.late == 1
    s.run_due()
    assert out.state() == (True, False)  # what is left of it is sprayed
    r = s.plan(1, 50 * MS, 120 * MS, lane=1, frame_id=7)
    assert r.status == "missed" and s.missed == 1 and s.late == 2
    run_until(clock, s, out, 250)
    s.close()
    events = [json.loads(x) for x in (tmp_path / "spray.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["late", "open"] and "missed" in kinds and "close" in kinds
    late = events[0]
    assert late["lane"] == 0 and late["frame"] == 7 and late["late_ms"] == 50.0 and late["reason"] == "weed"


def test_switching_delay_of_a_late_spray_counts_from_when_it_was_planned(tmp_path):
    """Lateness (the plan came after the opening time) is the late line's late_ms; the switching delay
    and so switch_delay_p95_ms (and the max speed) only count from when the scheduler could switch it."""
    clock, out, s = make(path=tmp_path / "spray.jsonl")
    clock.advance(0.15)
    assert s.plan(0, 100 * MS, 300 * MS).late_ns == 50 * MS
    clock.advance(0.002)  # the scheduler thread switches 2 ms after the plan arrived
    s.run_due()
    assert out.state() == (True, False)
    assert list(s.delays_ns) == [2 * MS] and s.summary()["switch_delay_p95_ms"] == 2.0
    s.close()
    events = [json.loads(x) for x in (tmp_path / "spray.jsonl").read_text().splitlines()]
    late, opened = events[0], events[1]
    assert late["event"] == "late" and late["late_ms"] == 50.0
    assert opened == {**opened, "event": "open", "planned_ns": 100 * MS, "due_ns": 150 * MS, "at_ns": 152 * MS,
                      "delay_ms": 2.0}


def test_switch_delay_p95_is_the_same_percentile_as_the_latency_figures():
    """One percentile definition (edge.core.metrics.percentile: numpy's, linear interpolation) for
    both terms max_speed adds: the end-to-end p95 and the switching-delay p95."""
    from edge.core.metrics import percentile, percentiles

    clock, out, s = make()
    assert s.summary()["switch_delay_p95_ms"] == 0.0  # nothing switched yet
    s.delays_ns.extend(i * MS for i in range(1, 11))  # 1..10 ms
    assert s.summary()["switch_delay_p95_ms"] == 9.55  # nearest rank would say 10
    assert percentile(range(1, 11), 95) == pytest.approx(9.55) == percentiles(range(1, 11), (95,))["p95"]
    assert math.isnan(percentile([], 95))  # the stats line shows "-"; the scheduler says 0.0 without delays
    s.close()


def test_a_late_plan_merged_into_a_pending_interval_keeps_the_earliest_due_time():
    clock, out, s = make()
    s.plan(0, 100 * MS, 200 * MS)  # due at 100 ms
    clock.advance(0.12)
    s.plan(0, 110 * MS, 250 * MS)  # late, merges: the opening (100 ms) was due at 100 ms
    s.run_due()
    assert s.pending(0) == [(100 * MS, 250 * MS)] and list(s.delays_ns) == [20 * MS]


def test_past_open_already_covered_is_not_late():
    clock, out, s = make()
    s.plan(0, 100 * MS, 300 * MS)
    run_until(clock, s, out, 150)
    assert s.plan(0, 120 * MS, 400 * MS).status == "planned"  # the valve was already open at 120 ms
    assert run_until(clock, s, out, 500) == [(400, 0, False)]
    assert s.late == 0


def test_max_on_latches_until_release():
    clock, out, s = make(max_on_s=1.0)
    s.plan(0, 0, 5_000 * MS)
    changes = run_until(clock, s, out, 2_000, step_ms=10)
    assert changes[0][1:] == (0, True) and changes[-1][1:] == (0, False)
    assert s.max_on_trips == 1
    assert s.plan(0, 2_100 * MS, 2_200 * MS).status == "latched"
    s.release(0)
    assert s.plan(0, 2_100 * MS, 2_200 * MS).status == "planned"


def test_refresh_keeps_bounded_outputs_on():
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=1, clock=clock, max_on_s=0.3)  # the output drops an ON not refreshed in 0.3 s
    s = SprayScheduler(out, clock=clock)
    s.plan(0, 0, 2_000 * MS)
    for _ in range(150):
        clock.advance(0.01)
        s.run_due()
        out.expire_due()
        assert out.state() == (True,)
    assert out.expired == 0


def test_cancel_all_switches_off_and_logs(tmp_path):
    clock, out, s = make(path=tmp_path / "s.jsonl")
    s.plan(0, 0, 500 * MS)
    s.plan(1, 300 * MS, 500 * MS)
    run_until(clock, s, out, 100)
    s.cancel_all("stall")
    assert out.state() == (False, False) and s.pending(0) == [] and s.cancelled == 2
    assert run_until(clock, s, out, 600) == []
    s.close()
    s.close()  # idempotent
    assert '"reason":"stall"' in (tmp_path / "s.jsonl").read_text()


def test_thread_switches_on_plan_and_close_switches_off():
    clock = ManualClock(start_ns=0)
    switched = threading.Event()
    out = DryRunOutput(channels=1, clock=clock, log=lambda msg: switched.set() if "ON" in msg else None)
    with SprayScheduler(out, clock=clock).start() as s:
        s.plan(0, 0, 10_000 * MS)  # due now: the thread wakes on the plan
        assert switched.wait(5.0)
        assert out.state() == (True,)
    assert out.state() == (False,)


def test_example_config_spray_block_is_valid_when_uncommented():
    import re
    import sys
    from pathlib import Path

    from edge.config import Config

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = (Path(__file__).parents[2] / "deploy" / "config.example.toml").read_text()
    block = text[text.index("# [spray]"):]
    keys = [ln[2:] for ln in block.splitlines() if re.match(r"^# (\[spray\]\s*$|[a-z_][a-z0-9_]* += )", ln)]
    assert keys[0].startswith("[spray]") and len(keys) == len(SprayConfig.model_fields) + 1
    c = Config.model_validate(tomllib.loads(text.replace(block, "") + "\n".join(keys)))
    assert c.spray is not None and c.spray.lanes == 4


class _FailingValve(DryRunOutput):
    """A dry-run output whose channel 1 fails to switch on with ``error``: an OSError (a shorted driver, a dead
    relay board: a bug-like failure) or an OutputError (a controller's NAK: an error the user can fix)."""

    def __init__(self, error, **kw):
        super().__init__(**kw)
        self.error = error

    def set(self, channel, on, max_on_s=None):
        if channel == 1 and on:
            raise self.error
        super().set(channel, on, max_on_s=max_on_s)


@pytest.mark.parametrize("error, raised, words", [
    (OSError("relay board not answering"), RuntimeError, "relay board not answering"),
    # an OutputError keeps its class and exit code 6: it was wrapped in a RuntimeError (exit 1, two tracebacks)
    (OutputError("controller answered NAK CH for channel 1", "check [spray] lane_channels"), OutputError, "NAK CH"),
])
def test_a_switching_failure_ends_the_run_with_everything_off(error, raised, words):
    clock = ManualClock(start_ns=0)
    out = _FailingValve(error, channels=2, clock=clock)
    sch = SprayScheduler(out, clock=clock)
    sch.plan(0, 0, 500_000_000)
    sch.plan(1, 0, 500_000_000)
    sch.run_due()
    assert out.state() == (False, False) and sch.errors == 1
    with pytest.raises(raised, match=words):
        sch.plan(0, 600_000_000, 700_000_000)  # the pipeline's next step fails: non-zero exit, systemd restarts
    with pytest.raises(raised) as e:
        sch.check()
    if raised is OutputError:
        assert e.value.exit_code == EXIT_OUTPUT
    sch.close()


def test_cancelling_an_open_spray_logs_its_close(tmp_path):
    path = tmp_path / "spray.jsonl"
    clock, out, s = make(path=path)
    s.plan(0, 10 * MS, 500 * MS)
    run_until(clock, s, out, 20)
    assert out.state() == (True, False)
    s.cancel_all("speed below minimum or unknown")
    assert out.state() == (False, False)
    s.close()
    events = [json.loads(x) for x in path.read_text().splitlines()]
    closes = [e for e in events if e["event"] == "close"]
    assert len(closes) == 1 and closes[0]["channel"] == 0 and closes[0]["reason"] == "speed below minimum or unknown"
    assert closes[0]["at_ns"] == 20 * MS
