"""The spray log: lane and GPS position on executed lines, rotation that never splits an open/close pair."""

import json

import pytest

from edge.core.clock import ManualClock
from edge.outputs.dryrun import DryRunOutput
from edge.spray.scheduler import SprayScheduler
from edge.spray.speed import NmeaSpeed
from edge.spray.spray_log import SprayLog, channel_lanes
from tests.edge.test_speed import nmea

MS = 1_000_000


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_channel_lanes():
    assert channel_lanes([0, 1, 2]) == {0: 0, 1: 1, 2: 2}
    assert channel_lanes([2, 0, 1]) == {2: 0, 0: 1, 1: 2}
    assert channel_lanes([0, 0, 1]) == {0: [0, 1], 1: 2}  # two lanes on one boom section


def test_executed_lines_carry_lane_and_gps_position(tmp_path):
    path = tmp_path / "spray.jsonl"
    clock = ManualClock(start_ns=0)
    gps = NmeaSpeed("unused", clock=clock)
    out = DryRunOutput(channels=2, clock=clock)
    slog = SprayLog(path, clock=clock, lanes=channel_lanes([1, 0]), position=gps.position)
    s = SprayScheduler(out, clock=clock, spray_log=slog)
    s.plan(1, 10 * MS, 30 * MS, lane=0)
    clock.advance(0.01)
    s.run_due()  # opens channel 1 before any fix: no position
    gps.feed(nmea("GPRMC,1,A,4807.038,N,01131.000,E,3.0,0,230394,,,A"))
    clock.advance(0.02)
    s.run_due()  # closes it with a fix
    s.close()
    ev = {e["event"]: e for e in lines(path)}
    assert ev["open"]["channel"] == 1 and ev["open"]["lane"] == 0 and "lat" not in ev["open"]
    assert ev["close"]["lane"] == 0
    assert ev["close"]["lat"] == pytest.approx(48.1173) and ev["close"]["lon"] == pytest.approx(11.516667)
    assert ev["planned"]["lane"] == 0  # the planner's own lane is kept


def test_a_failing_position_provider_never_stops_the_log(tmp_path):
    path = tmp_path / "spray.jsonl"

    def broken():
        raise OSError("GPS gone")

    slog = SprayLog(path, clock=ManualClock(), lanes={0: 3}, position=broken)
    slog.event("open", channel=0, at_ns=1)
    slog.event("close", channel=0, at_ns=2)
    slog.close()
    assert [(e["event"], e["lane"], "lat" in e) for e in lines(path)] == [("open", 3, False), ("close", 3, False)]


def test_rotation_waits_until_every_channel_is_closed(tmp_path):
    path = tmp_path / "spray.jsonl"
    slog = SprayLog(path, clock=ManualClock(), max_bytes=400, backups=5, hard_max_bytes=100_000)
    slog.event("pass_start", t_capture_ns=0)
    slog.event("open", channel=0, at_ns=1)
    slog.event("open", channel=1, at_ns=2)
    for i in range(10):  # well past max_bytes with valves open: no rotation
        slog.event("planned", lane=0, channel=0, open_ns=i, close_ns=i + 1)
    slog.event("close", channel=0, at_ns=3)
    assert slog.rotations == 0
    slog.event("close", channel=1, at_ns=4)  # the last close still goes into the same file
    assert slog.rotations == 0
    slog.event("planned", lane=0, channel=0, open_ns=5, close_ns=6)  # all closed: rotated before this line
    assert slog.rotations == 1 and slog.forced_rotations == 0
    slog.close()
    old = [e["event"] for e in lines(tmp_path / "spray.jsonl.1")]
    assert old.count("open") == old.count("close") == 2 and old[-1] == "close"
    assert [e["event"] for e in lines(path)] == ["planned"]


def test_rotation_before_an_open_keeps_the_pair_in_the_new_file(tmp_path):
    path = tmp_path / "spray.jsonl"
    slog = SprayLog(path, clock=ManualClock(), max_bytes=300)
    slog.event("planned", lane=0, channel=0, open_ns=1, close_ns=2)
    slog.event("planned", lane=0, channel=0, open_ns=1, close_ns=2)
    assert slog.rotations == 0 and path.stat().st_size > 220  # nearly full: the open line does not fit
    slog.event("open", channel=0, at_ns=1)
    slog.event("close", channel=0, at_ns=2)
    slog.close()
    assert slog.rotations == 1
    assert [e["event"] for e in lines(path)] == ["open", "close"]


def test_a_valve_stuck_open_is_rotated_at_the_hard_cap(tmp_path):
    path = tmp_path / "spray.jsonl"
    slog = SprayLog(path, clock=ManualClock(), max_bytes=300, backups=2)
    assert slog.hard_max_bytes == 600  # default: twice max_bytes
    slog.event("open", channel=0, at_ns=1)
    for i in range(20):
        slog.event("planned", lane=0, channel=0, open_ns=i, close_ns=i + 1)
    slog.close()
    assert slog.forced_rotations >= 1
    assert all(p.stat().st_size <= 600 for p in tmp_path.iterdir())


def test_without_max_bytes_nothing_rotates(tmp_path):
    path = tmp_path / "spray.jsonl"
    slog = SprayLog(path, clock=ManualClock())
    for i in range(50):
        slog.event("planned", lane=0, channel=0, open_ns=i, close_ns=i + 1)
    slog.close()
    assert slog.rotations == 0 and len(lines(path)) == 50


def test_edge_run_logs_the_lane_of_each_executed_spray(tmp_path, capsys):
    """Wiring: the lanes of [spray] lane_channels reach the spray log's open/close lines. (Real time: the
    nozzles are 0.6 s behind the camera at 36 km/h, so a loaded machine still plans before the weed passes.)"""
    import cv2

    from edge.cli import main
    from tests.conftest import TOY_BUNDLE
    from tests.edge.test_lanes import field

    d = tmp_path / "frames"
    d.mkdir()
    for i, weed_lanes in enumerate([(), (0,), (0,), ()]):
        cv2.imwrite(str(d / f"{i:03d}.png"), field(weed_lanes, h=64, w=128))
    path = tmp_path / "spray.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[spray]
lanes = 4
lane_channels = [3, 2, 1, 0]
footprint_across_cm = 100
footprint_along_cm = 40
nozzle_distance_cm = 600
speed_kmh = 36
valve_open_lag_ms = 0
tile_rows = 1
log_jsonl = "{path}"
""")
    assert main(["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "-q"]) == 0, \
        capsys.readouterr().out
    executed = [e for e in lines(path) if e["event"] in ("open", "close")]
    assert executed and {(e["channel"], e["lane"]) for e in executed} == {(3, 0)}
    assert all("lat" not in e for e in executed)  # a fixed speed knows no position
