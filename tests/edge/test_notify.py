"""sd_notify against a real Unix datagram socket set in NOTIFY_SOCKET (path and abstract)."""

import os
import socket
import uuid

import cv2
import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.service.notify import SdNotify, ServiceNotifier, status_text
from tests.conftest import GREEN, TOY_BUNDLE, solid


class FakeSystemd:
    """The receiving end systemd would hold: a bound AF_UNIX datagram socket."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def messages(self):
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = FakeSystemd(path)
    yield path, s
    s.close()


def test_ready_status_watchdog_stopping_over_a_path_socket(systemd):
    path, sd = systemd
    n = SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
    assert n.enabled and n.watchdog_s == 20.0
    assert n.ready("model loaded") and n.status("1 fps") and n.watchdog() and n.stopping()
    n.close()
    assert sd.messages() == [{"READY": "1", "STATUS": "model loaded"}, {"STATUS": "1 fps"},
                             {"WATCHDOG": "1"}, {"STOPPING": "1"}]


def test_abstract_namespace_socket():
    name = f"weed-detector-test-{uuid.uuid4().hex}"
    sd = FakeSystemd("\0" + name)
    try:
        n = SdNotify(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sd.messages() == [{"READY": "1"}]
    finally:
        sd.close()


def test_without_notify_socket_nothing_is_sent():
    n = SdNotify(env={})
    assert not n.enabled and not n.ready() and n.watchdog_s is None
    ServiceNotifier(n, clock=ManualClock()).beat({"frames": 1})  # no error


def test_watchdog_of_another_process_is_ignored(systemd):
    path, _ = systemd
    n = SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.watchdog_s is None


def test_an_unreachable_socket_warns_once_and_never_raises(tmp_path, caplog):
    n = SdNotify(env={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not n.ready() and not n.watchdog() and not n.status("x")
    assert caplog.text.count("cannot notify systemd") == 1


def test_a_full_socket_queue_drops_messages_instead_of_blocking(systemd):
    path, sd = systemd
    n = SdNotify(env={"NOTIFY_SOCKET": path})
    results = [n.watchdog() for _ in range(200)]  # nobody reads: the kernel queue fills up
    assert results[0] and not all(results) and n.dropped == results.count(False)
    sd.messages()
    assert n.watchdog()  # room again


def test_beats_are_rate_limited_on_the_injected_clock(systemd):
    path, sd = systemd
    clock = ManualClock()
    notifier = ServiceNotifier(SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}), clock=clock,
                               status_interval_s=2.0)
    info = {"frames": 1, "fps": 10.0, "camera": "ok", "latency_p50_ms": 40.0, "latency_p95_ms": 60.0,
            "outputs": "0/1 on"}
    for _ in range(40):  # 4 s of frames at 10 fps: a ping every second (a quarter of 4 s)
        notifier.beat(info)
        clock.advance(0.1)
    msgs = sd.messages()
    assert sum("WATCHDOG" in m for m in msgs) == 4 and notifier.pings == 4
    assert sum("STATUS" in m for m in msgs) == 2
    notifier.beat({**info, "camera": "lost"})  # a camera change is reported at once
    status = [m["STATUS"] for m in sd.messages() if "STATUS" in m]
    assert status == [status_text({**info, "camera": "lost"})] and "camera lost" in status[0]
    assert "10.0 fps, latency p50 40 ms p95 60 ms" in status_text(info)
    assert "latency p50 - ms" in status_text({"latency_p50_ms": float("nan")})


def test_edge_run_notifies_ready_status_watchdog_and_stopping(systemd, tmp_path, monkeypatch):
    path, sd = systemd
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        cv2.imwrite(str(frames / f"{i}.png"), solid(GREEN))
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "-q"]) == 0
    msgs = sd.messages()
    assert msgs[0]["READY"] == "1" and "colour-toy" in msgs[0]["STATUS"] and "outputs off" in msgs[0]["STATUS"]
    assert any("WATCHDOG" in m for m in msgs[1:])
    assert any("fps" in m.get("STATUS", "") and "camera ok" in m["STATUS"] for m in msgs)
    assert msgs[-1]["STOPPING"] == "1"


def test_a_failing_run_reports_its_error_in_the_status(systemd, tmp_path, monkeypatch):
    path, sd = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    rc = main(["--model", str(TOY_BUNDLE), "--images", str(tmp_path / "nowhere")])
    assert rc != 0
    msgs = sd.messages()
    assert msgs[0]["READY"] == "1"  # the model and outputs were fine
    assert msgs[-1]["STATUS"].startswith("failed: ") and "nowhere" in msgs[-1]["STATUS"]


def test_watchdog_pings_continue_while_a_lost_camera_is_reopened(systemd):
    """The loop waits for a camera for 3.5 s (backoff 0.5 + 1 + 2): a hung-process watchdog
    of 2 s must still be fed all along (a ping every 0.5 s), and the STATUS says so."""
    from edge.loop.actuator import Actuator
    from edge.decide.decider import Decider
    from edge.inference import Classifier
    from edge.outputs.dryrun import DryRunOutput
    from edge.loop.runner import RunLoop
    from edge.loop.whole_frame import WholeFrameProcessor
    from edge.sources.reconnecting import ReconnectingSource
    from edge.core.reconnect import Backoff
    from tests.edge.test_faults import FlakyCamera

    path, sd = systemd
    clock = ManualClock()
    notifier = ServiceNotifier(SdNotify(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}), clock=clock)
    cam = FlakyCamera("WE" + "W", clock, reopens=[False, False, True])
    clf = Classifier(TOY_BUNDLE, num_threads=1)
    out = DryRunOutput(channels=1, clock=clock)
    pings = []
    msgs = []
    sent = notifier.notify.watchdog

    def watchdog():
        pings.append(clock.now_ns())
        msgs.extend(sd.messages())  # systemd reads its socket promptly (its queue holds ~10)
        return sent()

    notifier.notify.watchdog = watchdog
    camera = ReconnectingSource(cam, backoff=Backoff(0.5, 4.0), clock=clock, stop=cam.stop)
    RunLoop(camera, WholeFrameProcessor(clf, Decider(clf.labels, ["weed"], 0.5), Actuator(out, 10.0, clock), clock=clock),
            clock=clock, stop=cam.stop, heartbeat=notifier.beat).run()
    clf.close()
    assert (pings[-1] - pings[0]) / 1e9 >= 3.5
    assert max(b - a for a, b in zip(pings, pings[1:])) / 1e9 <= 0.6  # never close to the 2 s timeout
    msgs.extend(sd.messages())
    assert sum("WATCHDOG" in m for m in msgs) == len(pings)
    assert any("camera lost" in m.get("STATUS", "") for m in msgs)


def test_gps_losses_and_reconnects_in_the_status_stats_line_and_summary(systemd, tmp_path, caplog):
    """A GPS on a pty behind a symlink (like /dev/serial/by-id/...), unplugged and plugged back in."""
    from edge.inference import Classifier
    from edge.loop.per_lane import LaneProcessor
    from edge.loop.runner import RunLoop
    from edge.loop.stats import max_speed_line
    from edge.core.reconnect import Backoff
    from edge.spray.speed import NmeaSpeed
    from tests.edge.test_lanes import Frames, field, make
    from tests.edge.test_speed import _until, nmea

    path, sd = systemd
    classifier = Classifier(TOY_BUNDLE, num_threads=1)
    clock, out, sched, planner = make(classifier)
    notifier = ServiceNotifier(SdNotify(env={"NOTIFY_SOCKET": path}), clock=clock, status_interval_s=60.0)
    link = tmp_path / "gps"
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    gps = planner.spray.speed = NmeaSpeed(str(link), stale_s=60.0, clock=clock, backoff=Backoff(0.01, 0.05)).start()
    try:
        os.write(master, nmea("GPVTG,,T,,M,,N,3.6,K,A").encode())
        assert _until(lambda: gps.speed_kmh() == 3.6)
        pipe = RunLoop(Frames([field((1,)), field(())], clock), LaneProcessor(planner, clock=clock), clock=clock)
        notifier.beat(pipe.status())
        assert pipe.stats().line().endswith(", GPS lost 0x, reopened 0x")
        os.close(master)  # unplugged
        os.close(slave)
        link.unlink()
        master = slave = None
        assert _until(lambda: gps.losses == 1)
        notifier.beat(pipe.status())  # the GPS state changed: a STATUS at once
        master, slave = os.openpty()  # plugged back in
        link.symlink_to(os.ttyname(slave))
        assert _until(lambda: gps.reconnects == 1)
        notifier.beat(pipe.status())
        status = [m["STATUS"] for m in sd.messages() if "STATUS" in m]
        assert [s[s.index(", GPS"):] for s in status] == [
            ", GPS ok (lost 0x, reopened 0x)", ", GPS lost, reopening (lost 1x, reopened 0x)",
            ", GPS no speed (lost 1x, reopened 1x)"]
        os.write(master, nmea("GPVTG,,T,,M,,N,3.6,K,A").encode())
        assert _until(lambda: gps.speed_kmh() == 3.6)
        with caplog.at_level("INFO", logger="edge.loop.runner"):
            spray = pipe.run().stats["spray"]
        assert (spray["gps_losses"], spray["gps_reconnects"]) == (1, 1) and spray["planned"] == 1
        assert max_speed_line(spray).endswith(", GPS lost 1x (reopened 1x)")
        stats = [r.getMessage() for r in caplog.records if r.name == "edge.loop.runner"][-1]
        assert stats.endswith(", GPS lost 1x, reopened 1x")
    finally:
        gps.close()
        sched.close()
        notifier.close()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
