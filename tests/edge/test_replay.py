"""Replay scoring: table-driven on hand-written spray logs, and end to end on a synthetic scrolling field."""

import json

import numpy as np
import pytest

from edge.core.clock import ManualClock
from edge.spray.config import SprayConfig
from edge.decide.rule import SprayRule
from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.spray.geometry import Geometry
from edge.inference import Classifier
from edge.loop.per_lane import LanePlanner, LaneProcessor
from edge.loop.runner import RunLoop
from edge.outputs.dryrun import DryRunOutput
from edge.tools.replay import Plant, main, read_spray_log, read_truth, score
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import FixedSpeed
from edge.spray.spray_log import SprayLog
from tests.conftest import BLUE, BROWN, GREEN, TOY_BUNDLE
from tests.edge.helpers import spray_toml

MS = 1_000_000


def cfg(**kw):
    base = dict(lanes=2, footprint_across_cm=100.0, footprint_along_cm=40.0, nozzle_distance_cm=100.0,
                valve_open_lag_ms=0.0, valve_close_lag_ms=0.0, speed_kmh=3.6, margin_before_cm=0, margin_after_cm=0)
    base.update(kw)
    return SprayConfig(**base)


def log(*sprays, end_s=10.0):
    """pass_start at t=0, then (channel, open_s, close_s) executed sprays."""
    ev = [{"event": "pass_start", "t_capture_ns": 0, "speed_kmh": 3.6, "t_mono_ns": 0}]
    for ch, o, c in sprays:
        ev.append({"event": "open", "channel": ch, "at_ns": int(o * 1e9), "t_mono_ns": int(o * 1e9)})
        ev.append({"event": "close", "channel": ch, "at_ns": int(c * 1e9), "t_mono_ns": int(c * 1e9)})
    ev.append({"event": "pass_end", "t_capture_ns": int(end_s * 1e9), "t_mono_ns": int(end_s * 1e9)})
    return ev


# 100 cm/s, spray line 100 cm behind: at t seconds the nozzles are over pass distance 100 t - 100 cm
@pytest.mark.parametrize("sprays, plants, expect", [
    ([(0, 2.0, 2.2)], [Plant(0, 110, 10)], dict(hits=1)),  # sprays 100..120 cm: covers 105..115
    ([(0, 2.0, 2.2)], [Plant(1, 110, 10)], dict(misses=1)),  # the other lane
    ([(0, 2.1, 2.3)], [Plant(0, 110, 10)], dict(partial=1)),  # 110..130: half of it
    ([(0, 2.0, 2.1), (0, 2.1, 2.2)], [Plant(0, 110, 10)], dict(hits=1)),  # two abutting sprays
    ([(0, 2.0, 2.2)], [Plant(0, 110, 10, "crop")], dict(crops_sprayed=1)),
    ([], [Plant(0, 110, 10)], dict(misses=1)),
])
def test_score_table(sprays, plants, expect):
    s = score(log(*sprays), plants, cfg())
    got = dict(hits=s.hits, partial=s.partial, misses=s.misses, crops_sprayed=s.crops_sprayed)
    assert got == {**dict(hits=0, partial=0, misses=0, crops_sprayed=0), **expect}


@pytest.mark.parametrize("distance_plant, time_plant", [
    (Plant(0, 110, 10), Plant(0, None, 10, time_s=1.1)),  # 100 cm/s: 1.1 s after the first frame = 110 cm
    (Plant(0, 125, 10), Plant(0, time_s=1.25, length_cm=10)),  # partly: 120..130 vs sprayed 100..120
    (Plant(1, 110, 10), Plant(1, time_s=1.1, length_cm=10)),  # the other lane: missed
    (Plant(0, 110, 10, "crop"), Plant(0, time_s=1.1, length_cm=10, kind="crop")),
])
def test_truth_by_time_scores_like_truth_by_distance(distance_plant, time_plant):
    ev = log((0, 2.0, 2.2))
    by_distance, by_time = score(ev, [distance_plant], cfg()), score(ev, [time_plant], cfg())
    assert by_time == by_distance
    assert by_time.hits + by_time.partial + by_time.misses + by_time.crops_sprayed == 1


def test_truth_by_time_uses_the_recorded_speed_then_the_configured_one():
    # the log says 3.6 km/h (100 cm/s): 1.1 s = 110 cm, sprayed 100..120 -> hit
    assert score(log((0, 2.0, 2.2)), [Plant(0, time_s=1.1, length_cm=10)], cfg(speed_kmh=7.2)).hits == 1
    # no speed in the log: the config's 7.2 km/h (200 cm/s): 1.1 s = 220 cm, sprayed 300..340 -> missed...
    ev = [{**e, "speed_kmh": None} if e["event"] == "pass_start" else e for e in log((0, 2.0, 2.2))]
    assert score(ev, [Plant(0, time_s=1.1, length_cm=10)], cfg(speed_kmh=7.2)).misses == 1
    # ... and 1.6 s = 320 cm: hit
    assert score(ev, [Plant(0, time_s=1.6, length_cm=10)], cfg(speed_kmh=7.2)).hits == 1


def test_read_truth_both_forms(tmp_path):
    p = tmp_path / "truth.jsonl"
    p.write_text('{"lane": 1, "distance_cm": 250.0, "length_cm": 8.0, "kind": "weed", "class": "fat_hen"}\n'
                 '\n{"lane": 0, "time_s": 4.2}\n{"lane": 2.0, "time_s": 1, "length_cm": 3, "kind": "crop"}\n')
    assert read_truth(p) == [Plant(1, 250.0, 8.0, "weed"), Plant(0, time_s=4.2), Plant(2, time_s=1.0, length_cm=3.0,
                                                                                          kind="crop")]


@pytest.mark.parametrize("line, words", [
    ('{"lane": 0}', "one of \"distance_cm\" or \"time_s\""),
    ('{"lane": 0, "distance_cm": 10, "time_s": 1}', "exactly one of distance_cm and time_s"),
    ('{"distance_cm": 10}', "no lane"),
    ('{"lane": 0.5, "time_s": 1}', "lane should be a valid integer, got 0.5"),
    ('{"lane": -1, "time_s": 1}', "lane should be greater than or equal to 0, got -1"),
    ('{"lane": true, "time_s": 1}', "lane should be a valid integer, got true"),
    ('{"lane": null, "time_s": 1}', "lane should be a valid integer, got null"),
    ('{"lane": 0, "time_s": "1.2"}', 'time_s should be a valid number, got "1.2"'),
    ('{"lane": 0, "time_s": 1e300}', "time_s should be less than or equal to 1000000"),  # was scored as a hit
    ('{"lane": 0, "time_s": NaN}', "time_s should be a finite number, got NaN"),
    ('{"lane": 0, "distance_cm": -Infinity}', "distance_cm should be a finite number, got -Infinity"),
    ('{"lane": 0, "time_s": 1, "length_cm": -2}', "length_cm should be greater than or equal to 0"),
    ('{"lane": 0, "time_s": 1, "kind": "tree"}', "kind should be 'weed' or 'crop', got \"tree\""),  # was a crop
    ('{"lane": 0, "time_s": 1, "kind": 1}', "kind should be 'weed' or 'crop'"),
    ('{"lane": [0], "time_s": {"s": 1}}', "lane should be a valid integer, got [0]; time_s should be a valid number"),
    ('[0, 1.2]', "not a JSON object but [0, 1.2]"),
    ('"lane"', 'not a JSON object but "lane"'),
    ('{"lane": 0, "time_s": 1', "line 2 is not JSON"),
])
def test_bad_truth_lines_say_which_line_and_how_to_fix_it(tmp_path, line, words):
    p = tmp_path / "truth.jsonl"
    p.write_text('{"lane": 0, "time_s": 1}\n' + line + "\n")
    with pytest.raises(ConfigError, match="line 2") as e:
        read_truth(p)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_truth_keys_are_warned_about_once_and_ignored(tmp_path, caplog):
    p = tmp_path / "truth.jsonl"
    p.write_text('{"lane": 0, "time_s": 1, "lenght_cm": 9, "class": "fat_hen", "note": "by the gate"}\n'
                 '{"lane": 1, "time_s": 2, "lenght_cm": 3}\n')
    assert read_truth(p) == [Plant(0, time_s=1.0), Plant(1, time_s=2.0)]
    [warning] = [r.getMessage() for r in caplog.records]
    assert '"lenght_cm" (2 line(s))' in warning and "class" not in warning.split("known:")[0]


def test_areas_and_saving():
    s = score(log((0, 2.0, 2.2), end_s=10.0), [Plant(0, 110, 10)], cfg())
    # 20 cm x 50 cm lane = 0.1 m2 sprayed, 10 x 50 of it on the weed; the pass is 10 m x 1 m
    assert s.sprayed_m2 == pytest.approx(0.1) and s.wasted_m2 == pytest.approx(0.05)
    assert s.pass_m == pytest.approx(10.0) and s.blanket_m2 == pytest.approx(10.0)
    assert s.saved == pytest.approx(0.99)


def test_valve_lags_shift_the_sprayed_ground():
    # opens at 1.95 s + 50 ms lag = 2.0 s on the ground: covers from 100 cm
    s = score(log((0, 1.95, 2.15)), [Plant(0, 110, 10)], cfg(valve_open_lag_ms=50, valve_close_lag_ms=50))
    assert s.hits == 1


def _shifted(events, s):
    keys = ("t_capture_ns", "at_ns", "t_mono_ns")
    return [{k: (v + int(s * 1e9) if k in keys else v) for k, v in e.items()} for e in events]


def test_a_log_with_several_runs_scores_one_pass_never_a_mix(tmp_path, capsys):
    """A spray log appends: run 1 sprayed lane 0, run 2 (100 s later, slowing down) lane 1. Each pass is
    scored from its own lines only; the default is the last one and the output says which."""
    run1 = log((0, 2.0, 2.2))
    run2 = _shifted(log((1, 2.0, 2.2)), 100.0)
    run2.insert(1, {"event": "speed", "t_capture_ns": int(105e9), "speed_kmh": 1.8, "distance_cm": 500.0,
                    "t_mono_ns": int(105e9)})  # run 2 halves its speed after 5 s: 5 m + 5 s x 0.5 m/s = 7.5 m
    plants = [Plant(0, 110, 10), Plant(1, 110, 10)]
    last = score(run1 + run2, plants, cfg())
    assert (last.pass_no, last.passes, last.hits, last.misses) == (2, 2, 1, 1)
    assert last.pass_m == pytest.approx(7.5)
    first = score(run1 + run2, plants, cfg(), pass_no=1)
    assert (first.pass_no, first.hits, first.misses) == (1, 1, 1) and first.pass_m == pytest.approx(10.0)
    assert score(run1 + run2, plants, cfg(), pass_no=-2) == first
    assert score(run1, plants, cfg()).line().startswith("pass 1 of 1: weeds 2: 1 hit")
    # a run that died with a valve open (no close, no pass_end) stays within its own pass
    crashed = log((0, 2.0, 2.2))[:-1] + [{"event": "open", "channel": 1, "at_ns": int(3e9), "t_mono_ns": int(3e9)}]
    s = score(crashed + run2, [Plant(1, 300, 10)], cfg())
    assert s.misses == 1 and s.sprayed_m2 == pytest.approx(0.2 * 0.5)  # only run 2's 20 cm of lane 1
    # the command line
    slog = tmp_path / "spray.jsonl"
    slog.write_text("".join(json.dumps(e) + "\n" for e in run1 + run2))
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps(p.__dict__) + "\n" for p in plants))
    conf = tmp_path / "c.toml"
    conf.write_text(spray_toml(cfg()))
    args = ["--config", str(conf), "--spray-log", str(slog), "--truth", str(truth)]
    assert main(args) == 0 and capsys.readouterr().out.startswith("pass 2 of 2: weeds 2: 1 hit")
    assert main(args + ["--pass", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(first.as_dict()))
    # the keys edge-replay --json always had, unchanged (the per-plant rows and the ideal came on top)
    old = ("weeds", "hits", "partial", "misses", "crops_sprayed", "late", "sprayed_m2", "wasted_m2", "blanket_m2",
           "pass_m", "pass_no", "passes", "lines_lost")
    assert {k: out[k] for k in old + ("saved",)} == {**{k: first.__dict__[k] for k in old}, "saved": 0.99}
    assert [p["result"] for p in out["plants"]] == ["hit", "missed"]
    assert main(args + ["--pass", "3"]) == 3
    assert "--pass 3: the spray log holds 2 pass(es)" in capsys.readouterr().err


def _replay_files(tmp_path, spray_lines: bytes):
    """A config, a truth file and a spray log holding ``spray_lines``: the arguments of edge-replay."""
    conf = tmp_path / "c.toml"
    conf.write_text(spray_toml(cfg()))
    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"lane": 0, "distance_cm": 110, "length_cm": 10}\n')
    slog = tmp_path / "spray.jsonl"
    slog.write_bytes(spray_lines)
    return ["--config", str(conf), "--spray-log", str(slog), "--truth", str(truth)], slog


def _lines(events) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


@pytest.mark.parametrize("bad, words", [
    (b'[{"event": "open"}]', "line 2: not a JSON object but [{\"event\": \"open\"}]"),
    (b'{"event": "open", "channel": null, "at_ns": 1, "t_mono_ns": 1}', "line 2: channel should be a valid integer, "
                                                                       "got null"),
    (b'{"event": null, "t_mono_ns": 1}', "line 2: event should be a valid string, got null"),
    (b'{"event": "open", "channel": 0, "t_mono_ns": 1}', "line 2: no at_ns"),
    (b'{"event": "open", "channel": true, "at_ns": 1, "t_mono_ns": 1}', "channel should be a valid integer, got true"),
    (b'{"event": "open", "channel": 0, "at_ns": 1.5, "t_mono_ns": 1}', "at_ns should be a valid integer, got 1.5"),
    (b'{"event": "speed", "t_capture_ns": 1, "speed_kmh": "3.6", "t_mono_ns": 1}',
     'line 2: speed_kmh should be a valid number, got "3.6"'),
    (b'{"event": "speed", "t_capture_ns": 1, "speed_kmh": NaN, "t_mono_ns": 1}', "speed_kmh should be a finite number"),
    (b'{"event": "speed", "t_capture_ns": 1, "speed_kmh": 1e308, "t_mono_ns": 1}',
     "speed_kmh should be less than or equal to 1000"),
    (b'{"event": "speed", "t_capture_ns": 1, "distance_cm": -Infinity, "t_mono_ns": 1}',
     "distance_cm should be a finite number, got -Infinity"),
    (b'{"event": "pass_end", "t_capture_ns": -5, "t_mono_ns": 1}', "t_capture_ns should be greater than or equal to 0"),
    (b'{"event": "close", "channel": 0, "at_ns": 1, "t_mono_ns": 99999999999999999999}',
     "t_mono_ns should be less than or equal to 9223372036854775807"),
    (b'{"event": "late"}', "line 2: no t_mono_ns"),
    (b'{"event": "gap", "lines_lost": "many", "t_mono_ns": 1}', 'lines_lost should be a valid integer, got "many"'),
    (b'{"event": "open", "channel": {"a": [[[[1]]]]}, "at_ns": 1, "t_mono_ns": 1}',
     'channel should be a valid integer, got {"a": [[[[1]]]]}'),
    (b'{"event": "open\x01"}', "line 2 is not JSON: Invalid control character at (column 16)"),
    (b'{"event": "open", "note": "\xff\xfe"}', "line 2 is not UTF-8 (byte 28)"),
    (b'[' * 50_000 + b']' * 50_000, "line 2 is not JSON: nested too deeply"),
    (b'{"event": "open", "x": ' + b'[' * 200 + b']' * 200 + b', "t_mono_ns": 1}', "line 2: no channel; no at_ns"),
    (b'{"event": "open", "channel": 0, "at_ns": 1, "t_mono_ns": 1', "line 2 is not JSON"),  # cut, but in the middle
])
def test_a_bad_spray_log_line_is_one_line_naming_the_file_and_line_and_exit_3(tmp_path, capsys, bad, words):
    good = log((0, 2.0, 2.2))
    args, slog = _replay_files(tmp_path, _lines(good[:1]) + bad + b"\n" + _lines(good[1:]))
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"edge-replay: error: spray log {slog} line 2") and err.count("\n") == 1, err
    assert words in err, err


def test_a_spray_log_cut_mid_line_by_a_full_disk_still_scores(tmp_path, capsys, caplog):
    """The last line cut mid-object without a newline (what a full disk used to leave): skipped with a warning,
    the pass scored from the whole lines before it."""
    events = log((0, 2.0, 2.2))[:-1]  # the run was still going: no pass_end
    args, slog = _replay_files(tmp_path, _lines(events) + b'{"event":"planned","lane":0,"chan')
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == 1
    assert f"spray log {slog}: the last line (line {len(events) + 1}) is cut" in caplog.text


def test_lines_lost_to_a_full_disk_are_counted_in_the_score(tmp_path, capsys):
    events = log((0, 2.0, 2.2))
    events.insert(3, {"event": "gap", "t_mono_ns": int(3e9), "wall": "x", "lines_lost": 4, "lost_from_ns": int(2.5e9)})
    args, _ = _replay_files(tmp_path, _lines(events))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 hit" in out and "4 spray-log line(s) of this pass were lost (disk full)" in out
    assert main(args + ["--json"]) == 0 and json.loads(capsys.readouterr().out)["lines_lost"] == 4


def test_replay_help_lists_its_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 scored, 2 bad arguments, 3 a config, spray log or ground-truth file" in out


def test_log_without_pass_start_is_an_error():
    with pytest.raises(ConfigError, match="pass_start"):
        score([{"event": "open", "channel": 0, "at_ns": 0, "t_mono_ns": 0}], [], cfg())


def test_lines_before_the_first_pass_start_are_warned_about(caplog):
    """Rotated parts given newest first: the pass's first lines come before its pass_start and were dropped silently."""
    ev = log((0, 2.0, 2.2))
    newest_first = ev[3:] + ev[:3]  # the end of the pass, then its start (the older part)
    with caplog.at_level("WARNING"):
        score(newest_first, [Plant(0, 110, 10)], cfg())
    assert any("before any pass_start" in r.getMessage() and "oldest first" in r.getMessage() for r in caplog.records)


# -- per plant, the ideal, the picture -------------------------------------------------------

# 100 cm/s, spray line 100 cm behind: lane 0 sprayed over 100..120 and 305..315 cm, lane 1 over 500..530 cm
SPRAYS = [(0, 2.0, 2.2), (0, 4.05, 4.15), (1, 6.0, 6.3)]
PLANTS = [  # (plant, result, covered_cm, covered share, nearest spray cm)
    (Plant(0, 110, 10), "hit", 10.0, 1.0, 0.0),
    (Plant(0, 310, 20), "partly", 10.0, 0.5, 0.0),
    (Plant(0, 200, 10), "missed", 0.0, 0.0, -75.0),  # the nearest spray (100..120) landed short of it
    (Plant(1, 50, 4), "missed", 0.0, 0.0, 448.0),  # ... and here beyond it (500..530)
    (Plant(0, 310, 0), "hit", 0.0, 1.0, 0.0),  # a weed of length 0 is a point: inside a spray...
    (Plant(0, 250, 0), "missed", 0.0, 0.0, 55.0),  # ... or not (it used to count as hit); 305..315 is nearest
    (Plant(1, 520, 10, "crop"), "sprayed", 10.0, 1.0, 0.0),
    (Plant(1, 700, 10, "crop"), "spared", 0.0, 0.0, -165.0),
]


def test_every_plant_gets_its_row():
    s = score(log(*SPRAYS), [p for p, *_ in PLANTS], cfg())
    assert [(r.result, r.covered_cm, r.covered, r.nearest_spray_cm) for r in s.plants] == [tuple(x) for _, *x in PLANTS]
    assert [(r.lane, r.distance_cm, r.length_cm, r.kind) for r in s.plants] == [
        (p.lane, p.distance_cm, p.length_cm, p.kind) for p, *_ in PLANTS]
    assert (s.weeds, s.hits, s.partial, s.misses, s.crops_sprayed, s.crops) == (6, 2, 1, 3, 1, 2)
    assert s.sprayed_by_lane == (((100.0, pytest.approx(120.0)), (pytest.approx(305.0), pytest.approx(315.0))),
                                 ((500.0, pytest.approx(530.0)),))
    # a lane that was never sprayed has no nearest spray
    assert score(log((0, 2.0, 2.2)), [Plant(1, 110, 10)], cfg()).plants[0].nearest_spray_cm is None


def test_the_ideal_is_each_weed_plus_both_margins_across_its_lane():
    s = score(log(*SPRAYS), [p for p, *_ in PLANTS], cfg(margin_before_cm=3, margin_after_cm=2))
    # lane 0: 102..117, 297..322 (the point weed at 310 inside it: counted once), 192..207, 247..252 = 60 cm;
    # lane 1: 45..54 = 9 cm; crops are not in it. x 50 cm lanes = 0.345 m² of a 10 m x 1 m pass
    assert s.ideal_m2 == pytest.approx(0.345) and s.ideal_saved == pytest.approx(1 - 0.0345)
    assert s.sprayed_m2 == pytest.approx(0.3) and s.wasted_m2 == pytest.approx(0.2)  # 20 cm of weeds sprayed
    assert s.saved == pytest.approx(0.97)
    assert score(log(*SPRAYS), [p for p, *_ in PLANTS], cfg()).ideal_m2 == pytest.approx(0.22)  # no margins: 44 cm
    assert "herbicide saved vs blanket 97%, ideal 97% (each weed + margins: 0.34 m²)" in s.line()
    assert "crops sprayed 1 of 2 |" in s.line()
    assert score(log(), [], cfg()).ideal_m2 == 0.0 and score(log(), [], cfg()).sprayed_m2 == 0.0


def cell(event, lane, rear, front, weed=0.3, views=3, **kw):
    """A decided cell's spray-log line, as ``edge.spray.planner.cell_fields`` writes it."""
    return {"event": event, "t_mono_ns": 1, "lane": lane, "channel": lane, "plant_cm": [rear, front], "weed": weed,
            "views": views, "cell": int(rear // 5), "plant_share": kw.pop("plant_share", 1.0), **kw}


def why_log(*cells, spared=True, sprays=((0, 2.0, 2.2),)):
    """``log`` (100..120 cm of lane 0 sprayed) with a pass_start that says whether spared cells were logged."""
    ev = log(*sprays)
    ev[0] = {**ev[0], "log_spared": spared} if spared is not None else ev[0]
    return [ev[0], *cells, *ev[1:]]


# lane 0 is sprayed over 100..120 cm (100 cm/s, spray line 100 cm behind); every plant is 10 cm long
@pytest.mark.parametrize("plant, cells, spared, cause, words", [
    (Plant(0, 110, 10), [cell("planned", 0, 105, 115, 0.9)], True, None, ""),  # hit: nothing to explain
    (Plant(0, 200, 10), [], True, "unseen", "vegetation gate"),
    (Plant(0, 200, 10), [cell("spared", 0, 196, 204, 0.31)], True, "rule", "weed 0.31, below the threshold (3 views)"),
    (Plant(0, 200, 10), [cell("spared", 0, 195, 200, 0.2), cell("spared", 0, 200, 205, 0.45)], True, "rule",
     "weed 0.45, below the threshold (3 views) (2 of its 2 cells)"),  # the cell closest to spraying is named
    (Plant(0, 200, 10), [cell("spared", 0, 196, 204, 0.7, vetoed=True)], True, "veto", "crop veto"),
    (Plant(0, 200, 10), [cell("spared", 0, 196, 204, 0.9, views=1, sparse=True, plant_share=0.25)], True, "sparse",
     "only 25% of the views"),
    (Plant(0, 200, 10), [cell("not_sprayed", 0, 196, 204, 0.9, why="enable switch off")], True, "gate",
     "enable switch off"),
    (Plant(0, 200, 10), [cell("missed", 0, 196, 204, 0.9)], True, "late", "too late"),
    (Plant(0, 200, 10), [cell("planned", 0, 196, 204, 0.9)], True, "placement", "the nearest spray -75.0 cm"),
    (Plant(0, 200, 10), [cell("spared", 1, 196, 204, 0.3)], True, "unseen", ""),  # another lane's cell
    (Plant(0, 200, 10), [cell("spared", 0, 170, 180, 0.3)], True, "unseen", ""),  # ground not overlapping it
    (Plant(0, 200, 10), [cell("spared", 0, 205.5, 210, 0.3)], True, "rule", ""),  # 0.5 cm off: the same plant
    (Plant(0, 200, 10), [], False, "unknown", "log_spared"),
    (Plant(0, 200, 10), [], None, "unknown", "does not say whether its spared cells were logged"),
    (Plant(0, 200, 10), [cell("spared", 0, 196, 204, 0.3)], None, "rule", ""),  # a line is a line, logged or not
    (Plant(0, 110, 10, "crop"), [cell("planned", 0, 105, 115, 0.83, views=2)], True, "model",
     "weed 0.83 (2 views)"),
    (Plant(0, 110, 10, "crop"), [cell("spared", 0, 105, 115, 0.1)], True, "neighbour", "a weed next to it"),
    (Plant(0, 300, 10, "crop"), [cell("planned", 0, 295, 305, 0.9)], True, None, ""),  # not sprayed: spared
    # a neighbour's weed cell 0.5 cm into the crop is not the crop's: its own cell was spared
    (Plant(0, 110, 10, "crop"), [cell("spared", 0, 105, 115, 0.1), cell("planned", 0, 114.5, 125, 0.9)], True,
     "neighbour", "a weed next to it"),
    # a crop's spared cell just beside a weed does not explain the weed: its own cells were all sprayed
    (Plant(0, 200, 10), [cell("planned", 0, 195, 205, 0.9), cell("spared", 0, 205.5, 210, 0.1)], True, "placement",
     "1 cell(s) were sprayed"),
    # half the weed (115..120) was seen and sprayed, no cell saw the rest
    (Plant(0, 120, 10), [cell("planned", 0, 115, 120, 0.9)], True, "unseen", "saw 50% of it"),
    (Plant(0, 120, 10), [cell("planned", 0, 115, 120, 0.9)], False, "unknown", "no cell line for the rest of it"),
    (Plant(0, 200, 10), [cell("spared", 0, 204, 196, 0.31)], True, "rule", "weed 0.31"),  # rear, front reversed
    # the half its cell saw (95..100) is the half not sprayed: the spray, not the gate
    (Plant(0, 100, 10), [cell("planned", 0, 95, 100, 0.9)], True, "placement", "covered 50%"),
    # seen whole, the spray ends 0.4 cm short of it: placement, not "no cell saw the rest"
    (Plant(0, 115.4, 10), [cell("planned", 0, 110.4, 120.4, 0.9)], True, "placement", "covered 96%"),
    (Plant(0, 200, 0.8), [cell("planned", 0, 199.6, 200.4, 0.9)], True, "placement", ""),  # a tiny weed, sprayed off
])
def test_each_weed_missed_and_crop_sprayed_says_why(plant, cells, spared, cause, words):
    [row] = score(why_log(*cells, spared=spared), [plant], cfg()).plants
    assert row.cause == cause and words in row.why, row


@pytest.mark.parametrize("spared", [True, False])
def test_a_neighbours_cell_just_beside_a_plant_is_the_neighbours(spared):
    # a sprayed crop 110..120 beside a weed whose planned cell ends 0.5 cm short of the crop; the crop's own
    # spared cells were not logged: the spray was the weed's (not "the model read the crop as a weed")
    plants = [Plant(0, 105, 10), Plant(0, 115, 10, "crop")]
    s = score(why_log(cell("planned", 0, 100, 109.5, 0.95), spared=spared), plants, cfg())
    assert [(r.kind, r.cause) for r in s.plants] == [("weed", None), ("crop", "neighbour")]
    # an unseen weed 0.6 cm from a vetoed crop's spared cell is not "vetoed"
    plants = [Plant(0, 205, 10, "crop"), Plant(0, 220.6, 10)]
    s = score(why_log(cell("spared", 0, 200, 210, 0.02, vetoed=True)), plants, cfg())
    assert [r.cause for r in s.plants] == [None, "unseen"]


S = 1_000_000_000  # ns


# the weed at 195..205 cm is under the spray line at 2.95..3.05 s; its cell planned a spray that never came
@pytest.mark.parametrize("drop, cause, words", [
    ({"event": "blocked", "channel": 0, "lane": 0, "planned_ns": int(2.95 * S), "at_ns": int(2.95 * S),
      "until_ns": int(3.05 * S), "why": "enable switch off", "t_mono_ns": int(2.95 * S)}, "dropped",
     "planned sprays over it were dropped or cut (blocked: enable switch off)"),
    ({"event": "max_on", "channel": 0, "on_since_ns": int(1.0 * S), "t_mono_ns": int(2.9 * S)}, "dropped",
     "(max on-time tripped)"),
    ({"event": "cancelled", "plans": 3, "reason": "stall", "t_mono_ns": int(2.5 * S)}, "dropped", "(cancelled: stall)"),
    # on another channel, or elsewhere on this one: not this weed's; the spray simply is not on it
    ({"event": "blocked", "channel": 1, "lane": 1, "planned_ns": int(2.95 * S), "at_ns": int(2.95 * S),
      "until_ns": int(3.05 * S), "why": "enable switch off", "t_mono_ns": int(2.95 * S)}, "placement", "nearest spray"),
    ({"event": "blocked", "channel": 0, "lane": 0, "planned_ns": int(5.0 * S), "at_ns": int(5.0 * S),
      "until_ns": int(5.1 * S), "why": "controller lost", "t_mono_ns": int(5.0 * S)}, "placement", "nearest spray"),
    ({"event": "cancelled", "plans": 3, "reason": "exit", "t_mono_ns": int(3.5 * S)}, "placement", "nearest spray"),
])
def test_a_spray_dropped_after_planning_is_said_with_what_dropped_it(drop, cause, words):
    ev = why_log(cell("planned", 0, 196, 204, 0.9))
    ev.insert(2, drop)
    [row] = score(ev, [Plant(0, 200, 10)], cfg()).plants
    assert row.cause == cause and words in row.why, row


def test_the_score_counts_the_causes():
    cells = [cell("spared", 0, 196, 204, 0.3), cell("spared", 0, 396, 404, 0.3), cell("planned", 0, 105, 115, 0.9)]
    s = score(why_log(*cells), [Plant(0, 200, 10), Plant(0, 400, 10), Plant(0, 600, 10), Plant(0, 110, 10, "crop")],
              cfg())
    assert s.causes() == {"weed": {"unseen": 1, "rule": 2}, "crop": {"model": 1}}
    assert s.line().endswith("| weeds not wholly hit by cause: unseen 1, rule 2 | crops sprayed by cause: model 1")
    assert s.as_dict()["causes"] == s.causes()


@pytest.mark.parametrize("bad, words", [
    ({"plant_cm": [1.0]}, "plant_cm"), ({"plant_cm": "1..2"}, "plant_cm"), ({"weed": 1.5}, "weed"),
    ({"views": -1}, "views"), ({"vetoed": "yes"}, "vetoed"), ({"lane": -2}, "lane"),
    ({"weed": None}, "weed"), ({"views": None}, "views"), ({"lane": 1.5}, "lane"),
    ({"plant_cm": [0, 1e6]}, "longer than a cell can be"),  # would make every plant look at half the lane
])
def test_a_bad_cell_line_is_an_error_naming_the_key(tmp_path, capsys, bad, words):
    line = {**cell("spared", 0, 196, 204), **bad}
    args, _ = _replay_files(tmp_path, _lines(why_log(line)))
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "line 2" in err and words in err, err


def test_cell_lines_of_a_lane_the_config_has_not_are_an_error(tmp_path, capsys):
    args, _ = _replay_files(tmp_path, _lines(why_log(cell("spared", 7, 196, 204))))  # another config's log
    assert main(args) == 3
    assert "cell lines for lane 7, the config has 2 lanes" in capsys.readouterr().err


@pytest.mark.parametrize("drop", ["weed", "views"])
def test_a_cell_line_with_a_plant_and_nothing_it_saw_is_an_error(tmp_path, capsys, drop):
    line = {k: v for k, v in cell("spared", 0, 196, 204).items() if k != drop}
    args, _ = _replay_files(tmp_path, _lines(why_log(line)))
    assert main(args) == 3
    assert f"needs {drop} too" in capsys.readouterr().err


def test_a_why_from_the_file_is_printed_escaped(tmp_path, capsys):
    # a lone surrogate would not encode; an escape sequence would drive the terminal
    why = r"\ud800 \u001b[31mred\u0007\u202e"  # JSON escapes, as a file holds them
    args, slog = _replay_files(tmp_path, b"")
    lines = _lines(why_log({**cell("not_sprayed", 0, 105, 115, 0.9), "why": "WHY"}, sprays=()))
    slog.write_bytes(lines.replace(b'"WHY"', f'"{why}"'.encode()))
    assert main(args + ["--plants"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.endswith(r"gate: decided to spray, not sprayed: \ud800 \x1b[31mred\x07\u202e"), row


def test_the_cells_near_a_plant_are_found_by_bisection():
    from edge.tools.replay import OVERLAP_CM, ByPlace, CellLine

    def near(cs, lo, hi):  # a lane's cells by where their plant is, as score() looks them up
        return ByPlace(cs, lambda c: c.plant_cm).near(lo, hi, OVERLAP_CM)

    cells = [CellLine("spared", 0, (a, a + 5.0), 0.3, 3, False, False, 1.0, "") for a in range(0, 1000, 5)]
    found = near(cells[::-1], 200.0, 210.0)  # any order
    # within 1 cm of 200..210: the cells 190..195 (its front 1 cm short: no), 195..200, .., 210..215
    assert [c.plant_cm[0] for c in found if c.plant_cm[1] > 199 and c.plant_cm[0] < 211] == \
        [195.0, 200.0, 205.0, 210.0]
    assert all(c in found for c in cells if c.plant_cm[1] > 199 and c.plant_cm[0] < 211)
    assert len(found) <= 6 and near([], 0.0, 1.0) == []
    long = CellLine("spared", 0, (100.0, 199.5), 0.3, 3, False, False, 1.0, "")  # a 100 cm cell ending near it
    assert long in near(cells + [long], 200.0, 210.0)


def test_a_pass_too_long_to_draw_is_exit_3(tmp_path, capsys):
    args = _plant_files(tmp_path)
    truth = tmp_path / "truth.jsonl"
    truth.write_text(truth.read_text() + '{"lane": 0, "distance_cm": 100000, "length_cm": 10}\n')  # 1 km on
    png = tmp_path / "pass.png"
    assert main(args + ["--plot", str(png)]) == 3
    err = capsys.readouterr().err
    assert "--plot: the pass spans 1000 m" in err and "--plot-m 0:" in err and not png.exists(), err
    # a stretch of it draws: the first 2.5 m, one row of 2 lanes (1.35 + 0.45 + 2 x 0.3 in at 100 dpi)
    assert main(args + ["--plot", str(png), "--plot-m", "0:2.5"]) == 0
    assert _png_size(png) == (1600, 240)


def test_a_stretch_outside_the_pass_is_exit_3_not_an_empty_picture(tmp_path, capsys):
    args = _plant_files(tmp_path)
    png = tmp_path / "pass.png"
    assert main(args + ["--plot", str(png), "--plot-m", "100:200"]) == 3
    err = capsys.readouterr().err
    assert "--plot-m 100:200 lies outside the pass" in err and not png.exists(), err


@pytest.mark.parametrize("extra", [["--plot-m", "5:1"], ["--plot-m", "a:b"], ["--plot-m", "0:nan"], ["--plot-m", "0:1"]])
def test_a_bad_plot_stretch_is_exit_2(tmp_path, capsys, extra):
    plot = ["--plot", str(tmp_path / "p.png")] if extra[1] != "0:1" else []  # the last: --plot-m without --plot
    with pytest.raises(SystemExit) as e:
        main(_plant_files(tmp_path) + plot + extra)
    assert e.value.code == 2 and "--plot-m" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--plot", ""], "--plot: expected a file name ending .png"),  # drew nothing, exit 0
    (["--plot", "pass.jpg"], "--plot: expected a file name ending .png"),  # PNG bytes in a .jpg
    (["--pass", "0"], "--pass: expected 1, 2, ..."),  # was exit 3 after reading the whole log
])
def test_bad_replay_arguments_are_exit_2(tmp_path, capsys, extra, words):
    with pytest.raises(SystemExit) as e:
        main(_plant_files(tmp_path) + extra)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_spray_on_a_channel_the_config_lacks_is_refused():
    """An older log (no lane_channels) scored with a config of fewer channels: its sprays were ignored silently."""
    with pytest.raises(ConfigError, match=r"switches channel 3, the config's lanes use channels \[0, 1\]"):
        score(log((3, 2.0, 2.2)), [Plant(0, 110, 10)], cfg())


def test_a_closed_stdout_ends_edge_replay_with_141_and_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    from edge.core.stdout import EXIT_BROKEN_PIPE

    r, w = os.pipe()
    os.close(r)  # edge-replay --plants | head, once head has gone: every write fails
    try:
        proc = subprocess.run([sys.executable, "-m", "edge.tools.replay", *_plant_files(tmp_path), "--plants"],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == EXIT_BROKEN_PIPE == 141
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_a_cell_line_with_a_whole_float_lane_is_read(tmp_path, capsys):
    args, _ = _replay_files(tmp_path, _lines(why_log({**cell("spared", 0, 196, 204), "lane": 0.0}, sprays=())))
    assert main(args + ["--json"]) == 0, capsys.readouterr().err
    [row] = json.loads(capsys.readouterr().out)["plants"]  # the truth's weed at 105..115, not sprayed
    assert row["cause"] == "unseen"  # the cell at 196..204 is read, on lane 0, and is not this weed's
    args, _ = _replay_files(tmp_path, _lines(why_log({**cell("spared", 0, 105, 115, 0.2), "lane": 0.0}, sprays=())))
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plants"][0]["cause"] == "rule"


def _plant_files(tmp_path, **spray):
    conf, truth, slog = tmp_path / "c.toml", tmp_path / "truth.jsonl", tmp_path / "spray.jsonl"
    conf.write_text(spray_toml(cfg(**spray)))
    truth.write_text("".join(json.dumps(p.__dict__) + "\n" for p, *_ in PLANTS))
    slog.write_bytes(_lines(log(*SPRAYS)))
    return ["--config", str(conf), "--spray-log", str(slog), "--truth", str(truth)]


def test_plants_on_the_command_line(tmp_path, capsys):
    args = _plant_files(tmp_path)
    assert main(args + ["--plants"]) == 0
    line, header, *rows = capsys.readouterr().out.splitlines()
    assert line.startswith("pass 1 of 1: weeds 6: 2 hit, 1 partly, 3 missed") and "kind" in header
    assert [r.split()[5] for r in rows] == [result for _, result, *_ in PLANTS]
    assert rows[2].split()[7] == "-75.0" and rows[1].split()[6] == "50%"
    # a log without cell lines cannot say why: the rows say so, the hit weed and the spared crop say nothing
    assert [r.split("  ")[-1].split(":")[0] if "unknown" in r else None for r in rows] == \
        [None, "unknown", "unknown", "unknown", None, "unknown", "unknown", None]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["result"] for p in out["plants"]] == [result for _, result, *_ in PLANTS]
    assert out["plants"][1] == {"lane": 0, "distance_cm": 310.0, "length_cm": 20.0, "kind": "weed", "covered_cm": 10.0,
                                "covered": 0.5, "result": "partly", "nearest_spray_cm": 0.0, "cause": "unknown",
                                "why": ("no cell line for it, and the pass does not say whether its spared cells "
                                        "were logged (pass_start without log_spared: written before edge-run "
                                        "logged them)")}
    assert out["causes"] == {"weed": {"unknown": 4}, "crop": {"unknown": 1}}
    assert out["sprayed_by_lane"] == [[[100.0, 120.0], [305.0, 315.0]], [[500.0, 530.0]]]
    assert out["ideal_m2"] == pytest.approx(0.22) and out["ideal_saved"] == 0.978


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_draws_the_pass_as_a_png(tmp_path, capsys):
    import cv2

    from edge.tools.replay import plot_labels, plot_size_px

    png = tmp_path / "pass.png"
    assert main(_plant_files(tmp_path) + ["--plot", str(png)]) == 0
    assert capsys.readouterr().out.startswith("pass 1 of 1: weeds 6")
    # 10 m in rows of 2.5 m: 4 rows of 2 lanes; 16 in x (1.35 + 4 x (0.45 + 2 x 0.3)) in at 100 dpi
    assert _png_size(png) == (1600, 555) == plot_size_px(score(log(*SPRAYS), [p for p, *_ in PLANTS], cfg()))
    img = cv2.imread(str(png))
    assert img.shape == (555, 1600, 3)

    def pixels(bgr):  # how many pixels have this colour
        return int((np.abs(img.astype(int) - bgr).max(axis=2) <= 3).sum())

    assert pixels((40, 39, 214)) > 100  # the weeds (#d62728)
    assert pixels((44, 160, 44)) > 50  # the crops (#2ca02c)
    assert pixels((233, 214, 188)) > 1000  # sprayed ground: #1f77b4 at 30 % on white
    # each weed not wholly hit and the crop sprayed carry their cause beside the mark (a log without cell lines:
    # unknown); a log with them names each
    assert plot_labels(score(log(*SPRAYS), [p for p, *_ in PLANTS], cfg())) == [
        (3.1, 0, "unknown"), (2.0, 0, "unknown"), (0.5, 1, "unknown"), (2.5, 0, "unknown"), (5.2, 1, "unknown")]
    s = score(why_log(cell("spared", 0, 196, 204, 0.3)), [Plant(0, 200, 10), Plant(0, 110, 10)], cfg())
    assert plot_labels(s) == [(2.0, 0, "rule")]


def test_plot_without_matplotlib_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an install without the extra does
    png = tmp_path / "pass.png"
    assert main(_plant_files(tmp_path) + ["--plot", str(png)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and not png.exists()
    assert err.startswith("edge-replay: error: --plot needs matplotlib") and "pip install 'weed-detector[plot]'" in err


def test_a_plot_that_cannot_be_written_is_exit_3(tmp_path, capsys):
    assert main(_plant_files(tmp_path) + ["--plot", str(tmp_path / "no" / "such" / "pass.png")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("edge-replay: error: cannot write the plot") and err.count("\n") == 1, err


# -- end to end: a synthetic pass over a field of coloured patches ---------------------------

PX_PER_CM = 1.6  # 40 cm along travel = 64 px; 100 cm across = 128 px


def field_canvas(plants, top_cm=650.0, bottom_cm=-150.0):
    """The ground as one tall image: top = furthest ahead; lane i = a 64 px column."""
    h = int((top_cm - bottom_cm) * PX_PER_CM)
    img = np.empty((h, 128, 3), np.uint8)
    img[:] = BROWN
    for p in plants:
        lo, hi = p.span
        r0, r1 = int((top_cm - hi) * PX_PER_CM), int((top_cm - lo) * PX_PER_CM)
        img[r0:r1, p.lane * 64:(p.lane + 1) * 64] = GREEN if p.kind == "weed" else BLUE
    return img, top_cm


class Pass:
    """Frames of a pass at 100 cm/s, 10 frames/s, on a manual clock; between frames the scheduler runs
    every millisecond (what its thread does in a real run)."""

    live = False
    name = "pass"
    dropped = 0

    def __init__(self, canvas, top_cm, clock, scheduler, frames):
        self.canvas, self.top_cm, self.clock, self.sched, self.n = canvas, top_cm, clock, scheduler, frames
        self.i = 0
        self.t0 = clock.now_ns()
        self.centre_cm = 0.0

    def speed(self, i):
        return 100.0  # cm/s from frame i to the next

    def at_frame(self):
        """Called as each frame is taken (a GPS reports the speed here)."""

    def link(self):
        return None

    def read(self, timeout=None):
        if self.i >= self.n:
            return None
        if self.i:
            for _ in range(100):
                self.clock.advance(0.001)
                self.sched.run_due()
            self.centre_cm += 0.1 * self.speed(self.i - 1)
        self.at_frame()
        r0 = int(round((self.top_cm - (self.centre_cm + 20)) * PX_PER_CM))
        self.i += 1
        return Frame(self.canvas[r0:r0 + 64].copy(), self.i, self.clock.now_ns(), self.name)

    def close(self):
        pass


def test_a_synthetic_pass_hits_every_weed_and_spares_the_crop(tmp_path, capsys):
    classifier = Classifier(TOY_BUNDLE, num_threads=1)
    plants = [Plant(1, 150, 16), Plant(0, 300, 16), Plant(1, 320, 16, "crop")]
    c = cfg(tile_rows=2, margin_before_cm=3, margin_after_cm=3, valve_open_lag_ms=20, valve_close_lag_ms=20)
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=2, clock=clock)
    slog = tmp_path / "spray.jsonl"
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(slog, clock=clock),
                           merge_gap_ns=40 * MS)
    planner = LanePlanner(classifier, SprayRule(0.5, None, labels=classifier.labels, weed_labels=("weed",)), Geometry.from_config(c),
                          sched, FixedSpeed(3.6), tile_rows=2)
    canvas, top = field_canvas(plants)
    summary = RunLoop(Pass(canvas, top, clock, sched, frames=46), LaneProcessor(planner, clock=clock), clock=clock).run()
    sched.close()
    assert summary.stats["spray"]["late"] == 0
    events = read_spray_log(slog)
    assert not [e for e in events if e["event"] == "speed"]  # a fixed speed: no speed lines
    s = score(events, plants, c)
    assert (s.hits, s.partial, s.misses, s.crops_sprayed) == (2, 0, 0, 0), s.line()
    assert s.saved > 0.8 and s.late == 0
    # the same log scored as if the nozzles were 50 cm further back: the sprays would have landed short
    off = score(events, plants, c.model_copy(update={"nozzle_distance_cm": 150.0}))
    assert off.hits == 0 and off.misses == 2
    # ... and each miss says so: its cells were sprayed, the spray landed short of it
    assert [(r.cause, "check nozzle_distance_cm" in r.why) for r in off.plants if r.kind == "weed"] == \
        [("placement", True)] * 2
    # without the vegetation gate no cell line says "spared" (every cell would be one): a weed where nothing
    # sprayed cannot be explained, and the pass says why
    assert events[0]["log_spared"] is False and not [e for e in events if e["event"] == "spared"]
    [again] = score(events, [Plant(1, 320, 16)], c).plants
    assert again.cause == "unknown" and "log_spared" in again.why
    # and the command line over the same files, with the truth by distance and by time (100 cm/s)
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(p.__dict__) + "\n" for p in plants))
    (tmp_path / "truth_t.jsonl").write_text("".join(json.dumps(
        {"lane": p.lane, "time_s": p.distance_cm / 100.0, "length_cm": p.length_cm, "kind": p.kind}) + "\n"
        for p in plants))
    (tmp_path / "c.toml").write_text(spray_toml(c))
    results = []
    for truth in ("truth.jsonl", "truth_t.jsonl"):
        assert main(["--config", str(tmp_path / "c.toml"), "--spray-log", str(slog),
                     "--truth", str(tmp_path / truth), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1] and (results[0]["hits"], results[0]["misses"]) == (2, 0)
    # a rotated log scores the same when every part is given, oldest first
    text = slog.read_text().splitlines(keepends=True)
    (tmp_path / "spray.jsonl.1").write_text("".join(text[:len(text) // 2]))
    (tmp_path / "spray_now.jsonl").write_text("".join(text[len(text) // 2:]))
    assert main(["--config", str(tmp_path / "c.toml"), "--spray-log", str(tmp_path / "spray.jsonl.1"),
                 str(tmp_path / "spray_now.jsonl"), "--truth", str(tmp_path / "truth_t.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == results[0]


def test_field_pass_generator(tmp_path):
    """tools/make_field_pass.py: frames scroll at the set speed; every plant in the truth file is where it says."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    root = Path(__file__).parents[2]
    out, truth, conf = tmp_path / "p.avi", tmp_path / "t.jsonl", tmp_path / "p.toml"
    proc = subprocess.run([sys.executable, str(root / "tools" / "make_field_pass.py"), "--images",
                           str(root / "samples" / "images"), "--out", str(out), "--truth", str(truth),
                           "--config-out", str(conf), "--width", "160", "--height", "120", "--fps", "10",
                           "--seconds", "4", "--speed-kmh", "3.6", "--weeds", "3", "--crops", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plants = [json.loads(x) for x in truth.read_text().splitlines()]
    assert sorted(p["kind"] for p in plants) == ["crop", "crop", "weed", "weed", "weed"]
    from edge.config import load_config

    c = load_config(conf).spray
    assert c.lanes == 4 and c.speed_kmh == 3.6 and c.footprint_along_cm == 60.0
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 40 and frames[0].shape == (120, 160, 3)
    for p in plants:  # the frame whose centre is nearest the plant: green at the centre of its lane
        i = int(round(p["distance_cm"] / 10.0))  # 100 cm/s at 10 fps
        img = frames[i].astype(int)
        y = int(round(60 - (p["distance_cm"] - 10.0 * i) * 2.0))  # 2 px per cm along travel
        x = int((p["lane"] + 0.5) * 40)
        patch = img[max(0, y - 8):y + 8, x - 8:x + 8]
        exg = 2 * patch[..., 1] - patch[..., 2] - patch[..., 0]
        assert (exg > 30).mean() > 0.05, p


def test_field_pass_generator_finds_its_photos_from_any_directory(tmp_path):
    """Without --images it uses the repository's samples/images, wherever it is run from."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    proc = subprocess.run([sys.executable, str(root / "tools" / "make_field_pass.py"), "--out", "p.avi",
                           "--truth", "t.jsonl", "--width", "80", "--height", "60", "--fps", "5", "--seconds", "1",
                           "--weeds", "1", "--crops", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.avi").stat().st_size > 0 and len((tmp_path / "t.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run([sys.executable, str(root / "tools" / "make_field_pass.py"), "--images", "nowhere"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "cannot read the photo folder nowhere" in bad.stderr


# -- a speed that varies over the pass (GPS, wheel encoder) ---------------------------------

def test_odometer_logs_a_speed_line_only_when_the_speed_changes():
    from edge.spray.odometer import Odometer

    odo = Odometer(0, 3.6, min_change_kmh=0.1, every_s=0.5)  # 100 cm/s
    assert [odo.update(i * 100 * MS, 3.6) for i in range(20)] == [None] * 20  # a fixed speed: no line at all
    assert odo.distance_cm == pytest.approx(190.0)
    line = odo.update(2000 * MS, 1.8)  # halved: logged with the run's own distance
    assert line == {"t_capture_ns": 2000 * MS, "speed_kmh": 1.8, "distance_cm": 200.0}
    assert odo.update(2100 * MS, 1.85) is None  # a small change: not yet...
    at = 200.0 + 0.1 * 50.0 + 0.4 * 1.85 / 0.036  # each frame's speed held until the next frame
    assert odo.update(2500 * MS, 1.85) == {"t_capture_ns": 2500 * MS, "speed_kmh": 1.85, "distance_cm": round(at, 2)}
    unknown = odo.update(2600 * MS, None)  # ... after every_s it is; unknown is logged, the last speed held
    assert unknown["speed_kmh"] is None and odo.update(2700 * MS, None) is None
    assert odo.update(2800 * MS, 1.85)["distance_cm"] == pytest.approx(at + 3 * 0.1 * 1.85 / 0.036, abs=0.01)
    # unknown at the first frame: the first known speed is taken back to it (as replay does)
    late = Odometer(0, None)
    assert late.update(100 * MS, None) is None
    assert late.update(500 * MS, 3.6) == {"t_capture_ns": 500 * MS, "speed_kmh": 3.6, "distance_cm": 50.0}


def slowed_log(*sprays, speed_lines=True, distance=True):
    """100 cm/s until 2 s, then 50 cm/s (logged at the change); spray line 100 cm behind the image centre."""
    ev = log(*sprays)
    if speed_lines:
        ev.insert(1, {"event": "speed", "t_capture_ns": 2_000 * MS, "speed_kmh": 1.8, "t_mono_ns": 2_000 * MS,
                      **({"distance_cm": 200.0} if distance else {})})
    return ev


@pytest.mark.parametrize("distance", [True, False])
def test_a_speed_change_mid_pass_is_integrated(distance):
    # at 5.0..5.2 s the nozzles were over 200 + 50 x 3 - 100 = 250 cm .. 260 cm (at a constant 100 cm/s: 400..420)
    plants = [Plant(0, 255, 10), Plant(1, time_s=3.1, length_cm=10)]  # 3.1 s: 200 + 50 x 1.1 = 255 cm
    sprays = [(0, 5.0, 5.2), (1, 5.0, 5.2)]
    s = score(slowed_log(*sprays, distance=distance), plants, cfg())
    assert (s.hits, s.partial, s.misses) == (2, 0, 0), s.line()
    assert s.pass_m == pytest.approx(6.0)  # 2 s at 1 m/s + 8 s at 0.5 m/s
    constant = score(slowed_log(*sprays, speed_lines=False), plants, cfg())  # the pass_start speed throughout
    assert (constant.hits, constant.misses) == (0, 2) and constant.pass_m == pytest.approx(10.0)


def test_an_unknown_speed_holds_the_last_known_one():
    ev = slowed_log((0, 5.0, 5.2))
    ev.insert(2, {"event": "speed", "t_capture_ns": 3_000 * MS, "speed_kmh": None, "distance_cm": 250.0,
                  "t_mono_ns": 3_000 * MS})
    assert score(ev, [Plant(0, 255, 10)], cfg()).hits == 1
    # unknown at the first frame: the first known speed (50 cm/s at 2 s) is taken back to it
    ev = [{**e, "speed_kmh": None} if e["event"] == "pass_start" else e for e in slowed_log((0, 5.0, 5.2))]
    assert score(ev, [Plant(0, 255, 10)], cfg(speed_kmh=7.2)).hits == 1


class SlowingPass(Pass):
    """Like ``Pass``, but the vehicle slows from 100 to 50 cm/s after 1 s; a GPS (a real ``NmeaSpeed`` on the
    manual clock) reports the speed of each frame."""

    def __init__(self, canvas, top_cm, clock, scheduler, frames, gps):
        super().__init__(canvas, top_cm, clock, scheduler, frames)
        self.gps = gps

    def at_frame(self):
        from tests.edge.test_speed import nmea

        self.gps.feed(nmea(f"GPVTG,,T,,M,,N,{self.speed(self.i) * 0.036:.2f},K,A"))

    def speed(self, i):
        return 100.0 if i < 10 else 50.0


def test_a_pass_that_slows_down_scores_its_hits_with_the_logged_speed(tmp_path):
    from edge.spray.speed import NmeaSpeed

    classifier = Classifier(TOY_BUNDLE, num_threads=1)
    plants = [Plant(1, 200, 16), Plant(0, 290, 16), Plant(1, 330, 16, "crop")]
    c = cfg(tile_rows=2, margin_before_cm=3, margin_after_cm=3, valve_open_lag_ms=20, valve_close_lag_ms=20)
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(channels=2, clock=clock)
    slog = tmp_path / "spray.jsonl"
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(slog, clock=clock), merge_gap_ns=40 * MS)
    gps = NmeaSpeed("unused", clock=clock)
    planner = LanePlanner(classifier, SprayRule(0.5, None, labels=classifier.labels, weed_labels=("weed",)), Geometry.from_config(c),
                          sched, gps, tile_rows=2)
    canvas, top = field_canvas(plants)
    summary = RunLoop(SlowingPass(canvas, top, clock, sched, 75, gps), LaneProcessor(planner, clock=clock),
                      clock=clock).run()
    sched.close()
    assert summary.stats["spray"]["late"] == 0
    events = read_spray_log(slog)
    [change] = [e for e in events if e["event"] == "speed"]
    assert change["speed_kmh"] == 1.8 and change["distance_cm"] == pytest.approx(100.0)
    assert events[-1]["event"] == "pass_end" and events[-1]["distance_cm"] == pytest.approx(100 + 64 * 5.0)
    s = score(events, plants, c)
    assert (s.hits, s.partial, s.misses, s.crops_sprayed) == (2, 0, 0, 0), s.line()
    assert s.pass_m == pytest.approx(4.2)
    # the truth by time (when each plant passed under the image centre) scores the same
    by_time = [Plant(p.lane, time_s=1.0 + (p.distance_cm - 100.0) / 50.0, length_cm=p.length_cm, kind=p.kind)
               for p in plants]
    assert score(events, by_time, c) == s
    # taken at the first frame's speed throughout, the same sprays land far from the weeds
    constant = score([e for e in events if e["event"] != "speed"], plants, c)
    assert constant.hits == 0 and constant.misses == 2


def test_a_pass_scored_with_other_lanes_than_it_ran_with_is_refused():
    """A 4-lane pass scored with a 2-lane config would put every spray and plant in the wrong strip, silently."""
    ran = [{**e, "lane_channels": [0, 1, 2, 3]} if e["event"] == "pass_start" else e for e in log((0, 2.0, 2.2))]
    with pytest.raises(ConfigError, match=r"run with 4 lane\(s\) on channels \[0, 1, 2, 3\], the config has 2 lane\(s\) on channels \[0, 1\]"):
        score(ran, [Plant(0, 110, 10)], cfg())
    assert score(ran, [Plant(0, 110, 10)], cfg(lanes=4)).hits == 1
    assert score(log((0, 2.0, 2.2)), [Plant(0, 110, 10)], cfg()).hits == 1  # an older log: nothing to check
