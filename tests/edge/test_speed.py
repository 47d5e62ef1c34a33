"""Travel speed: fixed, and NMEA RMC/VTG from a GPS (pure parser, staleness on a manual clock, a real pty)."""

import os
import queue
import threading
import time

import pytest

from edge.core.clock import ManualClock
from edge.config import load_config
from edge.spray.config import SprayConfig
from edge.core.errors import ConfigError, SourceError
from edge.core.reconnect import Backoff
from edge.spray.speed import FixedSpeed, NmeaSpeed, build_speed_source, parse_nmea


def nmea(body: str) -> str:
    x = 0
    for ch in body:
        x ^= ord(ch)
    return f"${body}*{x:02X}\r\n"


@pytest.mark.parametrize("line, sentence, kmh, lat, lon", [
    # the classic NMEA reference sentences (checksums as published)
    ("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A", "RMC", 22.4 * 1.852, 48.1173, 11.516667),
    ("$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48", "VTG", 10.2, None, None),
    # other talkers, NMEA 2.3 mode field, southern/western hemisphere
    (nmea("GNRMC,083559.00,A,3351.000,S,15112.000,W,3.24,,091202,,,A"), "RMC", 3.24 * 1.852, -33.85, -151.2),
    (nmea("GNVTG,,T,,M,2.0,N,,K,A"), "VTG", 3.704, None, None),  # no km/h field: from knots
    # no fix: the receiver says so -> speed unknown
    (nmea("GPRMC,123519,V,,,,,,,230394,,"), "RMC", None, None, None),
    (nmea("GPRMC,123519,A,4807.038,N,01131.000,E,1.0,0,230394,,,N"), "RMC", None, None, None),
    (nmea("GPVTG,,T,,M,0.0,N,0.0,K,N"), "VTG", None, None, None),
    # figures that cannot be a speed or a position: that field unknown, the rest kept (they crashed the cell
    # grid: 1e308 knots is inf km/h; "nan" degrees went into the spray log as NaN, not JSON)
    (nmea("GPRMC,123519,A,4807.038,N,01131.000,E,1e308,0,230394,,"), "RMC", None, 48.1173, 11.516667),
    (nmea("GPRMC,123519,A,4807.038,N,01131.000,E,inf,0,230394,,"), "RMC", None, 48.1173, 11.516667),
    (nmea("GPRMC,123519,A,4807.038,N,01131.000,E,300,0,230394,,"), "RMC", None, 48.1173, 11.516667),  # 556 km/h
    (nmea("GPRMC,123519,A,48nan,N,01131.000,E,1.0,0,230394,,"), "RMC", 1.852, None, 11.516667),
    (nmea("GPRMC,123519,A,9999.0,N,18100.000,E,1.0,0,230394,,"), "RMC", 1.852, None, None),  # 100 deg 39', 181 deg
    (nmea("GPRMC,123519,A,4875.0,N,011-1.000,E,1.0,0,230394,,"), "RMC", 1.852, None, None),  # 75 minutes; -1
    (nmea("GPVTG,,T,,M,inf,N,nan,K,A"), "VTG", None, None, None),
    (nmea("GPVTG,,T,,M,2.0,N,1e400,K,A"), "VTG", None, None, None),  # km/h given but not one: unknown
    (nmea("GPVTG,,T,,M,0.5,N,9999,K,A"), "VTG", None, None, None),  # not the knots' 0.9 km/h
])
def test_parse_rmc_vtg(line, sentence, kmh, lat, lon):
    fix = parse_nmea(line)
    assert fix is not None and fix.sentence == sentence
    assert fix.speed_kmh == (None if kmh is None else pytest.approx(kmh))
    assert fix.lat == (None if lat is None else pytest.approx(lat, abs=1e-5))
    assert fix.lon == (None if lon is None else pytest.approx(lon, abs=1e-5))


@pytest.mark.parametrize("line", [
    "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B",  # bad checksum
    "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",  # no checksum
    nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),  # another sentence
    nmea("GPRMC,123519,A"),  # truncated
    "", "garbage", b"\xff\xfe",
])
def test_rejects_other_and_damaged_lines(line):
    assert parse_nmea(line) is None


def test_stale_speed_is_unknown():
    clock = ManualClock()
    gps = NmeaSpeed("unused", stale_s=2.0, clock=clock)
    assert gps.speed_kmh() is None  # no fix yet
    gps.feed(nmea("GPVTG,,T,,M,,N,7.5,K,A"))
    assert gps.speed_kmh() == 7.5
    clock.advance(2.5)
    assert gps.speed_kmh() is None and gps.position() is None
    gps.feed(nmea("GPRMC,1,A,4807.038,N,01131.000,E,2.0,0,230394,,,A"))
    assert gps.speed_kmh() == pytest.approx(3.704) and gps.position() == pytest.approx((48.1173, 11.516667))
    gps.feed("noise")
    assert gps.rejected == 1 and gps.sentences == 2


def test_position_is_timed_by_rmc_alone():
    """RMC gone, VTG still arriving: the speed stays current, the old position goes stale."""
    clock = ManualClock()
    gps = NmeaSpeed("unused", stale_s=2.0, clock=clock)
    gps.feed(nmea("GPRMC,1,A,4807.038,N,01131.000,E,2.0,0,230394,,,A"))
    assert gps.position() == pytest.approx((48.1173, 11.516667))
    for _ in range(3):  # 3 s of VTG only
        clock.advance(1.0)
        gps.feed(nmea("GPVTG,,T,,M,,N,7.5,K,A"))
    assert gps.speed_kmh() == 7.5 and gps.position() is None
    gps.feed(nmea("GPRMC,2,A,4807.038,N,01131.000,E,2.0,0,230394,,,A"))
    assert gps.position() == pytest.approx((48.1173, 11.516667))
    gps.feed(nmea("GPRMC,3,V,,,,,,,230394,,"))  # no fix: no position, whatever the VTG says
    gps.feed(nmea("GPVTG,,T,,M,,N,7.5,K,A"))
    assert gps.position() is None


def test_reads_a_gps_over_a_pty():
    master, slave = os.openpty()
    got = []
    two = threading.Event()

    def on_fix(fix):
        got.append(fix)
        if len(got) >= 2:
            two.set()

    gps = NmeaSpeed(os.ttyname(slave), 9600, on_fix=on_fix).start()
    try:
        os.write(master, ("$GPGSV,ignored*00\r\n" + nmea("GPVTG,,T,,M,,N,12.5,K,A")
                          + nmea("GPRMC,1,A,4807.038,N,01131.000,E,5.0,0,230394,,,A")).encode())
        assert two.wait(5.0)
        assert [f.sentence for f in got] == ["VTG", "RMC"]
        assert gps.speed_kmh() == pytest.approx(9.26)
    finally:
        gps.close()
        gps.close()  # idempotent
        os.close(master)
        os.close(slave)


def _until(predicate, timeout_s=5.0):
    """Bounded wait for the reader thread (polls every 5 ms)."""
    done = threading.Event()
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        done.wait(0.005)
    return predicate()


def test_unplugged_gps_is_reopened_and_speed_returns(tmp_path):
    """A pty behind a symlink (like /dev/serial/by-id/...): unplugged = pty gone and the link removed."""
    link = tmp_path / "gps"
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    fixes = queue.Queue()
    gps = NmeaSpeed(str(link), stale_s=60.0, on_fix=fixes.put, backoff=Backoff(0.01, 0.05)).start()
    try:
        os.write(master, nmea("GPRMC,1,A,4807.038,N,01131.000,E,5.0,0,230394,,,A").encode())
        fixes.get(timeout=5.0)
        assert gps.speed_kmh() == pytest.approx(9.26) and gps.position() is not None
        os.close(master)  # unplugged
        os.close(slave)
        link.unlink()
        master = slave = None
        assert _until(lambda: gps.losses == 1)
        # unknown at once (not only after stale_s = 60 s): nothing sprays while it is gone
        assert gps.speed_kmh() is None and gps.position() is None and not gps.connected
        assert _until(lambda: gps.failed_attempts >= 2)  # retried, with backoff, while the port is missing
        master, slave = os.openpty()  # plugged back in (another pty, the same link)
        link.symlink_to(os.ttyname(slave))
        assert _until(lambda: gps.reconnects == 1)
        assert gps.speed_kmh() is None  # no valid sentence yet since the loss
        os.write(master, nmea("GPVTG,,T,,M,,N,7.5,K,A").encode())
        assert fixes.get(timeout=5.0).speed_kmh == 7.5
        assert gps.speed_kmh() == 7.5 and gps.losses == 1
    finally:
        gps.close()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)


def test_bad_gps_port_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="gps_port"):
        NmeaSpeed(str(tmp_path / "no-such-tty")).start()


def test_build_speed_source_and_config(tmp_path):
    base = dict(footprint_across_cm=50, footprint_along_cm=40, nozzle_distance_cm=100)
    assert isinstance(build_speed_source(SprayConfig(**base, speed_kmh=5)), FixedSpeed)
    p = tmp_path / "c.toml"
    p.write_text("[spray]\nfootprint_across_cm = 50\nfootprint_along_cm = 40\nnozzle_distance_cm = 100\n"
                 "speed_source = 'nmea'\n")
    with pytest.raises(ConfigError, match="gps_port is required"):
        load_config(p)
    master, slave = os.openpty()
    try:
        src = build_speed_source(SprayConfig(**base, speed_source="nmea", gps_port=os.ttyname(slave)))
        assert isinstance(src, NmeaSpeed) and src.speed_kmh() is None
        src.close()
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def mock_factory():
    pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


def test_wheel_encoder_speed(mock_factory):
    from edge.spray.speed import WheelEncoderSpeed

    clock = ManualClock()
    enc = WheelEncoderSpeed(23, cm_per_pulse=2.0, stale_s=0.5, pull_up=False, clock=clock, pin_factory=mock_factory)
    pin = mock_factory.pin(23)
    assert enc.speed_kmh() == 0.0  # no pulses: stopped
    for _ in range(10):  # a pulse every 10 ms, 2 cm each: 200 cm/s = 7.2 km/h
        clock.advance(0.01)
        pin.drive_high()
        pin.drive_low()
    assert enc.pulses == 10 and enc.speed_kmh() == pytest.approx(7.2)
    clock.advance(1.0)  # no pulse for longer than the window: stopped
    assert enc.speed_kmh() == 0.0
    enc.close()
    enc.close()


def test_encoder_config(tmp_path):
    p = tmp_path / "c.toml"
    base = "[spray]\nfootprint_across_cm = 50\nfootprint_along_cm = 40\nnozzle_distance_cm = 100\n"
    p.write_text(base + "speed_source = 'encoder'\nencoder_pin = 23\n")
    with pytest.raises(ConfigError, match="encoder_cm_per_pulse are required"):
        load_config(p)
    p.write_text(base + "speed_source = 'encoder'\nencoder_pin = 23\nencoder_cm_per_pulse = 2\nenable_pin = 23\n")
    with pytest.raises(ConfigError, match="both GPIO23"):
        load_config(p)
    p.write_text(base + "speed_source = 'encoder'\nencoder_pin = 23\nencoder_cm_per_pulse = 2\n")
    assert load_config(p).spray.encoder_cm_per_pulse == 2
    p.write_text(base + "speed_source = 'encoder'\nencoder_pin = 23\nencoder_cm_per_pulse = 2\n"
                 "[outputs]\nkind = 'gpio'\npins = [23, 24]\n")
    with pytest.raises(ConfigError, match="encoder_pin 23 is also an output pin"):
        load_config(p)
