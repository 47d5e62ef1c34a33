"""Faults an unattended sprayer meets, one test each; timing through a ManualClock, no sleeps.

- the camera disappears mid-run / sends nothing: outputs off within one stall timeout,
  reopened with backoff, detection resumes, counted in the summary and the status;
- the serial controller is unplugged: no crash, the loss is logged, reconnect with backoff;
- a corrupt model: a clear error before any output energises, non-zero exit;
- an exception in a stage: all off, logged, non-zero exit; SIGINT: all off, clean exit;
- a log file named but not writable at start: its exit code; a full disk mid-run: whole lines lost and
  counted, one warning, writing resumes; logs rotate under a cap;
- no network listener is opened.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.loop.actuator import Actuator
from edge.cli import main
from edge.core.clock import ManualClock
from edge.decide.decider import Decider, Decision
from edge.core.errors import EXIT_BUNDLE, EXIT_INTERNAL, EXIT_STALL, OutputError, SourceError
from edge.core.frame import Frame
from edge.inference import Classifier
from edge.outputs import OutputUnavailable
from edge.outputs.dryrun import DryRunOutput
from edge.outputs.serial_out import SerialOutput
from edge.loop.runner import RunLoop
from edge.loop.whole_frame import WholeFrameProcessor
from edge.sources.reconnecting import ReconnectingSource
from edge.core.reconnect import Backoff
from edge.outputs.reconnecting import ReconnectingOutput
from edge.service.records import JsonlLog, TriggerSaver
from tests.conftest import GREEN, TOY_BUNDLE, solid

RUN_HERE = lambda work: work()  # noqa: E731  a reconnect attempt run in the caller's thread: deterministic steps
from tests.edge.helpers import ScriptedSource, spray_toml, start_edge_run, stop_edge_run


class FlakyCamera(ScriptedSource):
    """A live source on a script: 'W'/'S' frames, '.' a poll without a frame (the manual
    clock advances by the poll timeout), 'E' the device fails (unplugged). ``reopen()``
    consumes ``reopens`` (True: the device is back, False: still gone) and records when.
    At the end of the script it asks the pipeline to stop (a live source never ends)."""

    name = "flaky camera"

    def __init__(self, script, clock, reopens=()):
        super().__init__(script, clock)
        self.reopens = list(reopens)
        self.reopened_at = []
        self.gone = False
        self.stop = threading.Event()

    def read(self, timeout=None):
        assert not self.gone, "read() on a failed device before reopen()"
        if not self.script:
            self.stop.set()
            return None
        step = self.script.pop(0)
        if step == "E":
            self.gone = True
            raise SourceError("flaky camera stopped delivering frames (3 failed reads in a row)", "check the cable")
        return self._play(step, timeout)

    def reopen(self):
        self.reopened_at.append(self.clock.now_ns())
        if not self.reopens.pop(0):
            raise SourceError("camera 0 could not be opened", "check `ls /dev/video*`")
        self.gone = False


@pytest.fixture(scope="module")
def classifier():
    return Classifier(TOY_BUNDLE, num_threads=1)


def make(source, clock, classifier, out=None, stop=None, **kw):
    out = out or DryRunOutput(channels=2, clock=clock)
    beats = []
    kw.setdefault("stall_timeout_s", 1.0)
    stop = stop or source.stop
    camera = ReconnectingSource(source, backoff=kw.pop("reconnect", Backoff(0.5, 4.0)), silence_s=kw["stall_timeout_s"],
                                clock=clock, stop=stop)
    p = RunLoop(camera, WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5),
                                            Actuator(out, 10.0, clock), clock=clock),
                clock=clock, stop=stop, heartbeat=lambda info: beats.append((clock.now_ns(), info)), **kw)
    return p, out, beats


# -- camera ----------------------------------------------------------------------------
def test_unplugged_camera_goes_off_at_once_reopens_with_backoff_and_resumes(classifier, caplog):
    clock = ManualClock()
    cam = FlakyCamera("WWWE" + "WW", clock, reopens=[False, False, True])
    p, out, beats = make(cam, clock, classifier)
    t0 = clock.now_ns()
    summary = p.run()

    # every beat after the failure shows everything off and the camera lost, until it is back
    fail = next(i for i, (_, b) in enumerate(beats) if b["camera"] == "lost")
    assert beats[fail - 1][1]["outputs"] == "2/2 on"  # it was spraying when the camera went
    lost = [b for _, b in beats if b["camera"] == "lost"]
    assert len(lost) >= 3 and all(b["outputs"] == "0/2 on" for b in lost)  # heartbeats while waiting
    t_fail = beats[fail][0]
    # attempts after 0.5 s, then 1 s, then 2 s more (backoff), measured on the injected clock
    gaps = np.diff([t_fail] + cam.reopened_at) / 1e9
    assert gaps == pytest.approx([0.5, 1.0, 2.0], abs=0.11)
    assert summary.source_losses == 1 and summary.reconnects == 1
    assert summary.frames == 5 and summary.stats["reconnects"] == 1
    assert beats[-1][1]["camera"] == "ok" and beats[-1][1]["outputs"] == "2/2 on"  # resumed spraying
    assert out.state() == (False, False)  # and all off at the end
    assert "all outputs off; reopening in 0.5 s" in caplog.text
    assert clock.now_ns() - t0 < 5e9


def test_silent_camera_goes_off_within_the_stall_timeout_then_is_reopened(classifier):
    clock = ManualClock()
    cam = FlakyCamera("WW" + "." * 20 + "WW", clock, reopens=[True])
    p, out, beats = make(cam, clock, classifier, stall_timeout_s=1.0)  # polls of 0.1 s
    summary = p.run()
    stalled = next(i for i, (_, b) in enumerate(beats) if b["camera"] == "stalled")
    last_on = beats[stalled - 1][0]
    assert beats[stalled - 1][1]["outputs"] == "2/2 on" and beats[stalled][1]["outputs"] == "0/2 on"
    first_off = beats[stalled][0]
    assert (first_off - last_on) / 1e9 <= 1.0 + 0.1  # within one stall timeout (+ one poll)
    assert summary.stalls == 1 and summary.source_losses == 1 and summary.reconnects == 1
    assert len(cam.reopened_at) == 1 and (cam.reopened_at[0] - first_off) / 1e9 == pytest.approx(0.5, abs=0.11)
    assert beats[-1][1]["outputs"] == "2/2 on"  # frames returned: detection resumed


def test_a_live_source_that_ends_counts_as_lost(classifier):
    clock = ManualClock()
    cam = FlakyCamera("WW", clock, reopens=[True])
    cam.stop = threading.Event()  # not set by the end of the script this time
    ended = []

    def read(timeout=None):
        if cam.script:
            return FlakyCamera.read(cam, timeout)
        if not ended:
            ended.append(clock.now_ns())
            return None  # e.g. picamera2 closed underneath us
        stop.set()
        return None

    stop = threading.Event()
    cam.read = read
    p, out, beats = make(cam, clock, classifier, stop=stop)
    summary = p.run()
    assert summary.source_losses == 1 and summary.reconnects == 1 and summary.stopped_by == "end of source"
    assert any(b["camera"] == "lost" and b["outputs"] == "0/2 on" for _, b in beats)


def test_a_camera_that_never_returns_gives_up_with_exit_code_8_when_configured(classifier):
    clock = ManualClock()
    cam = FlakyCamera("WE", clock, reopens=[False] * 50)
    p, out, _ = make(cam, clock, classifier, give_up_s=10.0)
    with pytest.raises(Exception) as info:
        p.run()
    assert info.value.exit_code == EXIT_STALL and "no frame from flaky camera" in str(info.value)
    assert 3 <= len(cam.reopened_at) <= 6  # 0.5, 1, 2, 4, 4 ... within 10 s
    assert out.state() == (False, False)


def test_a_real_stream_source_that_ends_is_reopened(classifier, tmp_path):
    """OpenCV's stream source on a video file: at its end the reads fail (like a camera
    pulled out); the pipeline reopens it and frames resume. Real threads, bounded time."""
    from edge.sources.stream import StreamSource

    path = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(5):
        w.write(solid(GREEN))
    w.release()
    src = StreamSource(path, first_frame_timeout=5.0)
    src.start()
    stop = threading.Event()

    def beat(info):
        if info["reconnects"] >= 2 and info["camera"] == "ok":
            stop.set()

    out = DryRunOutput(channels=1)
    camera = ReconnectingSource(src, backoff=Backoff(0.01, 0.02), silence_s=1.0, stop=stop)
    p = RunLoop(camera, WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5), Actuator(out)),
                stop=stop, stall_timeout_s=1.0, heartbeat=beat, give_up_s=20.0)
    try:
        summary = p.run()
    finally:
        src.close()
    assert summary.reconnects >= 2 and summary.source_losses >= 2 and summary.frames >= 3
    assert out.state() == (False,)


# -- serial controller ---------------------------------------------------------------
@pytest.fixture
def plug(tmp_path):
    """A symlink standing in for /dev/ttyACM0 that points at whichever pty peer is 'plugged in'."""
    from tests.edge.test_serial_protocol import ControllerPeer

    link = tmp_path / "ttyPICO"
    peers = []

    def plug_in():
        peer = ControllerPeer(channels=2)
        peers.append(peer)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(peer.path)
        return peer

    def unplug(peer):
        link.unlink()
        peer.close()
        peers.remove(peer)

    yield link, plug_in, unplug
    for peer in peers:
        peer.close()


def test_unplugged_serial_controller_reconnects_with_backoff(plug, caplog):
    link, plug_in, unplug = plug
    clock = ManualClock()
    peer = plug_in()
    out = ReconnectingOutput(lambda: SerialOutput(str(link), heartbeat_s=5.0, ack_timeout_s=0.05, retries=1),
                             backoff=Backoff(0.5, 2.0), clock=clock, spawn=RUN_HERE)
    try:
        out.set(0, True)
        assert peer.ctl.pins == [True, False]
        unplug(peer)
        with pytest.raises(OutputUnavailable):  # the command fails: nothing opened, the output counts as lost
            out.set(1, True)
        assert not out.connected and out.state() == (False, False) and out.losses == 1
        assert out.off_reason(0) == "controller lost"  # channel 0 was on when it was lost
        with pytest.raises(OutputUnavailable, match="not switched on: the controller is lost"):
            out.set(0, True)  # still lost: a distinct outcome, not a silent success
        out.set(0, False)  # switching off a lost output is fine: everything is off
        out.maintain()  # too early: no attempt
        assert out.failed_attempts == 0
        clock.advance(0.5)
        out.maintain()  # still unplugged: one failed attempt, the next one 1 s later
        assert out.failed_attempts == 1 and not out.connected
        peer = plug_in()
        clock.advance(0.5)
        out.maintain()
        assert not out.connected  # backoff: not yet
        clock.advance(0.5)
        out.maintain()
        assert out.connected and out.reconnects == 1
        out.set(1, True)
        assert peer.ctl.pins == [False, True]
    finally:
        out.close()
    assert peer.ctl.pins == [False, False]
    assert "output lost" in caplog.text and "reconnected" in caplog.text


def test_controller_lost_between_frames_is_noticed_by_the_heartbeat(plug):
    link, plug_in, unplug = plug
    clock = ManualClock()
    peer = plug_in()
    inner = []

    def factory():
        inner.append(SerialOutput(str(link), heartbeat_s=5.0, ack_timeout_s=0.05, retries=1))
        return inner[-1]

    out = ReconnectingOutput(factory, backoff=Backoff(0.5, 2.0), clock=clock)
    try:
        unplug(peer)
        with pytest.raises(OutputError):
            inner[-1].heartbeat()  # what the heartbeat thread does every heartbeat_s
        out.maintain()
        assert out.losses == 1 and not out.connected
    finally:
        out.close()


def test_a_reconnect_attempt_never_holds_up_the_caller_and_a_late_one_is_closed():
    """A handshake with a silent controller waits retries x ack_timeout_s (seconds with a long timeout): it runs
    in a thread of its own; the loop's maintain() and set() return at once, and the next maintain() after it
    ended takes the new output in. Closed meanwhile: what the attempt builds is closed, never used."""
    clock = ManualClock()
    release, built, threads = threading.Event(), [], []
    first = [True]

    def factory():
        if first[0]:
            first[0] = False
            return _LostOnce(channels=2, clock=clock)
        assert release.wait(10), "the test never released the attempt"
        built.append(DryRunOutput(channels=2, clock=clock))
        return built[-1]

    def spawn(work):
        threads.append(threading.Thread(target=work, daemon=True))
        threads[-1].start()

    for close_early in (False, True):
        release.clear()
        first[0], started = True, len(threads)
        out = ReconnectingOutput(factory, backoff=Backoff(0.5, 2.0), clock=clock, spawn=spawn)
        with pytest.raises(OutputUnavailable):
            out.set(0, True)  # the device fails: lost
        clock.advance(0.5)
        out.maintain()  # starts the attempt; returns while the factory is still blocked
        with pytest.raises(OutputUnavailable):
            out.set(0, True)  # still lost while the attempt runs: nothing opened
        assert not out.connected and len(threads) == started + 1  # one attempt, in its own thread
        if close_early:
            out.close()
        release.set()
        threads[-1].join(10)
        out.maintain()
        if close_early:
            assert not out.connected and built[-1].closed  # built after the close: closed, not used
        else:
            assert out.connected and out.reconnects == 1
            out.set(1, True)
            assert built[-1].state() == (False, True)
            out.close()
            assert built[-1].closed


@pytest.mark.parametrize("fault", ["factory", "spawn"])
def test_an_attempt_that_dies_or_cannot_start_is_a_failed_attempt_and_the_next_one_follows(fault):
    """The review's case: a factory raising a BaseException (or no thread to be had) left the attempt pending
    forever: no reconnect for the rest of the run."""
    clock = ManualClock()
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            return _LostOnce(channels=2, clock=clock)
        if fault == "factory" and len(calls) == 2:
            raise SystemExit("a library calling sys.exit")
        return DryRunOutput(channels=2, clock=clock)

    spawned = []

    def spawn(work):
        spawned.append(1)
        if fault == "spawn" and len(spawned) == 1:
            raise RuntimeError("can't start new thread")
        try:
            work()
        except SystemExit:
            pass  # a thread's SystemExit ends only that thread

    out = ReconnectingOutput(factory, backoff=Backoff(0.5, 2.0), clock=clock, spawn=spawn)
    with pytest.raises(OutputUnavailable):
        out.set(0, True)
    clock.advance(0.5)
    out.maintain()  # the attempt dies (or never starts): counted as failed, the next one scheduled
    assert out.failed_attempts == 1 and not out.connected
    clock.advance(1.0)
    out.maintain()
    assert out.connected and out.reconnects == 1
    out.close()


class _LostOnce(DryRunOutput):
    """A device that fails at its first switch-on (unplugged) and says so by turning unhealthy."""

    def set(self, channel, on, max_on_s=None):
        if on:
            self.healthy = False
            raise OutputError("no answer to ON within 1 s after 3 attempt(s)", "check the cable")
        super().set(channel, on, max_on_s=max_on_s)


def test_pipeline_keeps_detecting_while_the_controller_is_unplugged(plug, classifier):
    link, plug_in, unplug = plug
    clock = ManualClock()
    peers = [plug_in()]

    inner = []

    def factory():
        inner.append(SerialOutput(str(link), heartbeat_s=5.0, ack_timeout_s=0.05, retries=1))
        return inner[-1]

    def bang():
        if peers[0] is not None:
            unplug(peers.pop())
            peers.append(None)
            with pytest.raises(OutputError):
                inner[-1].heartbeat()  # the heartbeat thread's next beat, made deterministic
        else:
            peers[:] = [plug_in()]
            clock.advance(1.0)

    out = ReconnectingOutput(factory, backoff=Backoff(0.5, 2.0), clock=clock, spawn=RUN_HERE)
    seen = []
    src = ScriptedSource("WW!WWW!WW", clock, on_bang=bang)
    p = RunLoop(src, WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5),
                                         Actuator(out, 10.0, clock), clock=clock),
                clock=clock, on_frame=lambda r: seen.append(r.outputs), maintain=[out.maintain])
    try:
        summary = p.run()  # no exception
    finally:
        out.close()
    assert summary.frames == 7
    assert seen == [(True, True)] * 2 + [(False, False)] * 3 + [(True, True)] * 2
    assert out.losses == 1 and out.reconnects == 1
    # the 3 weed frames while it was lost did not spray: counted as such, not as spraying
    assert summary.spray_frames == 4 and summary.stats["unavailable_frames"] == 3
    assert p.processor.actuator.unavailable_frames == 3
    assert peers[0].ctl.pins == [False, False]


def _spray_events(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_scheduler_logs_no_spray_while_the_controller_is_lost(plug, tmp_path):
    """Lost mid-spray: the open valve gets a close line, the rest of its interval and any new one are
    logged as blocked (controller lost); nothing counts as opened until it is back."""
    from edge.spray.scheduler import SprayScheduler
    from edge.spray.spray_log import SprayLog

    link, plug_in, unplug = plug
    clock = ManualClock(start_ns=0)
    peer = plug_in()
    inner = []

    def factory():
        inner.append(SerialOutput(str(link), heartbeat_s=5.0, ack_timeout_s=0.05, retries=1, max_on_s=30.0,
                                  clock=clock))
        return inner[-1]

    out = ReconnectingOutput(factory, backoff=Backoff(0.5, 2.0), clock=clock)
    log_path = tmp_path / "spray.jsonl"
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(log_path, clock=clock), refresh_s=0.1)
    MS = 1_000_000
    try:
        sched.plan(0, 10 * MS, 500 * MS)
        clock.advance(0.01)
        sched.run_due()
        assert peer.ctl.pins == [True, False] and sched.opens == 1
        unplug(peer)
        with pytest.raises(OutputError):
            inner[-1].heartbeat()  # the heartbeat thread notices, deterministically
        out.maintain()
        assert not out.connected
        clock.advance(0.1)
        sched.run_due()  # the valve was closed under us; reopening it is refused
        assert sched.state == (False, False) and sched.pending(0) == []
        sched.plan(1, 200 * MS, 300 * MS)
        clock.advance(0.1)
        sched.run_due()  # still lost (backoff: no reconnect yet): a new interval is not sprayed either
        assert sched.opens == 1 and sched.unavailable == 2 and sched.state == (False, False)
        summary = sched.summary()
        assert summary["opens"] == 1 and summary["unavailable"] == 2 and summary["output_closed"] == 1
    finally:
        sched.close()
        out.close()
    events = _spray_events(log_path)
    executed = [(e["event"], e["channel"], e.get("reason") or e.get("why")) for e in events
                if e["event"] in ("open", "close", "blocked")]
    assert executed == [("open", 0, None), ("close", 0, "controller lost"), ("blocked", 0, "controller lost"),
                        ("blocked", 1, "controller lost")]


def test_a_restarted_controller_closes_the_valves_in_the_state_and_the_log(tmp_path):
    """NAK SYNC + a new handshake: the controller closed every valve, so the output says off, the
    scheduler logs the close and reopens the valve whose interval goes on (not as a switching delay)."""
    from edge.spray.scheduler import SprayScheduler
    from edge.spray.spray_log import SprayLog
    from tests.edge.test_serial_protocol import ControllerPeer

    peer = ControllerPeer(channels=2)
    clock = ManualClock(start_ns=0)
    out = SerialOutput(peer.path, heartbeat_s=10.0, ack_timeout_s=1.0, max_on_s=30.0, clock=clock)
    log_path = tmp_path / "spray.jsonl"
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(log_path, clock=clock), refresh_s=0.1)
    MS = 1_000_000
    try:
        sched.plan(0, 0, 1000 * MS)
        sched.plan(1, 0, 50 * MS)
        sched.run_due()
        assert peer.ctl.pins == [True, True]
        peer.restart()  # power-cycled: every valve closed, not synced
        out.heartbeat()  # NAK SYNC -> handshake again
        assert out.restarts == 1 and out.state() == (False, False)
        assert out.off_reason(0) == out.off_reason(1) == "controller restarted"
        clock.advance(0.1)
        sched.run_due()
        assert peer.ctl.pins == [True, False] and sched.state == (True, False)
        assert sched.opens == 3 and sched.output_closed == 2
        assert list(sched.delays_ns) == [0, 0]  # the two first opens: the reopen is not a switching delay
    finally:
        sched.close()
        out.close()
        peer.close()
    events = [(e["event"], e["channel"], e.get("reason"), e.get("reopen")) for e in _spray_events(log_path)
              if e["event"] in ("open", "close")]
    assert events[:6] == [("open", 0, None, None), ("open", 1, None, None),
                          ("close", 0, "controller restarted", None), ("open", 0, None, True),
                          ("close", 1, "controller restarted", None), ("close", 0, "close", None)]


# -- corrupt model, exceptions, signals ------------------------------------------------
def test_truncated_model_fails_before_any_output(toy_bundle, tmp_path, capsys):
    model = toy_bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[:100])
    state = tmp_path / "state.jsonl"
    rc = main(["--model", str(toy_bundle), "--images", str(tmp_path), "--state-file", str(state)])
    assert rc == EXIT_BUNDLE
    assert not state.exists()  # the outputs were never built
    err = capsys.readouterr().err
    assert err.startswith("edge-run: error:") and "Traceback" not in err


def test_manifest_that_disagrees_with_the_model_fails_before_any_output(toy_bundle, tmp_path, capsys):
    manifest = json.loads((toy_bundle / "manifest.json").read_text())
    manifest["labels"].append("maize")  # 4 labels for a model with 3 outputs
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    state = tmp_path / "state.jsonl"
    rc = main(["--model", str(toy_bundle), "--images", str(tmp_path), "--state-file", str(state)])
    assert rc == EXIT_BUNDLE and not state.exists()
    err = capsys.readouterr().err
    assert err.count("edge-run: error:") == 1 and "Traceback" not in err and "4 labels" in err


def test_exception_in_a_stage_switches_off_logs_and_exits_non_zero(tmp_path, monkeypatch, caplog):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames / f"{i}.png"), solid(GREEN))
    calls = []
    orig = Decider.update

    def update(self, *a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise ZeroDivisionError("a bug in the decision stage")
        return orig(self, *a, **kw)

    monkeypatch.setattr(Decider, "update", update)
    state = tmp_path / "state.jsonl"
    rc = main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--channels", "2", "--state-file", str(state)])
    assert rc == EXIT_INTERNAL
    states = [json.loads(x)["state"] for x in state.read_text().splitlines()]
    assert [True, True] in states and states[-1] == [False, False]
    assert "internal error (all outputs were switched off)" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_sigint_switches_everything_off_and_exits_cleanly(tmp_path):
    proc, state = start_edge_run([], tmp_path)
    err = stop_edge_run(proc, state, signal.SIGINT)
    assert "SIGINT received" in err and "Traceback" not in err


def _listening_sockets(pid: int) -> list[str]:
    """Sockets of ``pid`` that listen (TCP) or are bound to a port (UDP), from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[9] in inodes and (proto.startswith("udp") or f[3] == "0A"):
                found.append(f"{proto} {f[1]}")
    return found


def test_no_network_listener_is_opened(tmp_path):
    proc, _ = start_edge_run([], tmp_path)
    try:
        listening = _listening_sockets(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert listening == []


# -- logs ------------------------------------------------------------------------------
def _spray_toml(spray_log: Path) -> str:
    from tests.edge.test_lanes import spray_cfg

    return spray_toml(spray_cfg(lanes=2, speed_kmh=36.0, log_jsonl=str(spray_log)))


def _weed_folder(tmp_path: Path) -> Path:
    from tests.edge.test_lanes import field

    d = tmp_path / "frames"
    d.mkdir()
    for i, weed_lanes in enumerate([(), (0,), (0, 1), (1,)]):
        cv2.imwrite(str(d / f"{i:03d}.png"), field(weed_lanes, lanes=2, h=64, w=128))
    return d


@pytest.mark.parametrize("named, what, code", [
    ("--log-jsonl", "frame log", 3),
    ("--save-triggers", "trigger-frame folder", 3),
    ("[spray] log_jsonl", "spray log", 3),
    ("--state-file", "dry-run state file", 6),
    ("--lag-log", "valve-lag log", 3),
])
def test_a_named_file_that_cannot_be_written_at_start_is_an_error_with_its_exit_code(tmp_path, capsys, named,
                                                                                   what, code):
    """One rule for every file the user names: unwritable at start -> the documented exit code and one line."""
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "x"  # under a regular file: cannot be created, even as root
    args = ["--model", str(TOY_BUNDLE), "--images", str(_weed_folder(tmp_path)), "--threads", "1", "-q"]
    if named == "[spray] log_jsonl":
        conf = tmp_path / "c.toml"
        conf.write_text(_spray_toml(blocked))
        args += ["--config", str(conf)]
    elif named == "--lag-log":
        args = ["--measure-valve-lag", "0", "--lag-pulses-ms", "1", "--repeats", "1", "--yes", named, str(blocked)]
    else:
        args += [named, str(blocked)]
    assert main(args) == code
    [line] = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert line.startswith(f"edge-run: error: cannot write the {what} '{blocked}': "), line


def test_every_log_on_a_full_disk_loses_whole_lines_warns_once_naming_itself_and_resumes(tmp_path, monkeypatch,
                                                                                       caplog):
    """The frame log, the spray log and the dry-run state file on a disk that fills and empties again: each
    warns once naming itself and what goes on, the valves go on switching, and each resumes with a gap line."""
    from edge.core import jsonl
    from edge.outputs.dryrun import read_state_file
    from edge.spray.spray_log import SprayLog
    from tests.edge.test_jsonl import FullDisk

    disk = FullDisk(free=200)
    monkeypatch.setattr(jsonl, "open_append", disk.opener)
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(1, log=lambda _m: None, state_file=tmp_path / "state.jsonl", clock=clock)
    slog = SprayLog(tmp_path / "spray.jsonl", clock=clock)
    frames = JsonlLog(tmp_path / "frames.jsonl", clock=clock)
    slog.event("pass_start", t_capture_ns=0, frame=0, speed_kmh=3.6)
    for i in range(5):  # the disk fills up on the way
        out.set(0, True)
        slog.event("open", channel=0, at_ns=clock.now_ns(), planned_ns=clock.now_ns())
        frames.write({"t_mono_ns": clock.now_ns(), "frame": i})
        out.set(0, False)
        slog.event("close", channel=0, at_ns=clock.now_ns(), planned_ns=clock.now_ns())
        clock.advance(0.1)
    assert out.state() == (False,) and slog.counts["open"] == 5
    disk.free = 100_000
    clock.advance(60.0)  # past any retry delay
    out.set(0, True)
    slog.event("pass_end", t_capture_ns=clock.now_ns(), distance_cm=0.0)
    frames.write({"t_mono_ns": clock.now_ns(), "frame": 5})
    out.close()
    slog.close()
    frames.close()
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 3, warnings
    for what, goes_on in [("dry-run state file", "the outputs go on without it"),
                          ("spray log", "spraying goes on without it"), ("frame log", "detection goes on without it")]:
        [w] = [w for w in warnings if w.startswith(what)]
        assert "No space left on device" in w and goes_on in w
    resumed = [r.getMessage() for r in caplog.records if "writing resumed after" in r.getMessage()]
    assert len(resumed) == 3
    states = read_state_file(tmp_path / "state.jsonl")  # whole lines only, every one with a time
    gap = next(x for x in states if x["event"] == "gap")
    assert gap["state"] == [True] and gap["lines_lost"] > 0  # the state as the gap line is written and states[-1]["event"] == "closed"
    events = jsonl.read_jsonl(tmp_path / "spray.jsonl", "spray log")
    assert [e["event"] for e in events][-2:] == ["gap", "pass_end"] and slog.lines_lost == events[-2]["lines_lost"]
    assert [x.get("frame") for x in jsonl.read_jsonl(tmp_path / "frames.jsonl", "frame log")][-2:] == [None, 5]


def test_edge_run_on_a_file_size_limit_keeps_whole_lines_and_the_pass_scores(tmp_path):
    """A real edge-run whose files may not grow past 4 KiB (RLIMIT_FSIZE; SIGXFSZ ignored, so a write past
    it fails with EFBIG, like a full disk): it runs to the end with exit 0, both logs hold whole lines only,
    each log warns once and counts what it lost, and edge-replay scores the cut-short spray log."""
    import resource
    import subprocess
    import sys

    from edge.core.jsonl import read_jsonl
    from edge.tools.replay import main as replay

    limit = 4096  # the spray log's size over a run follows the wall clock (cells decided as the frames come):
    # 60 frames wrote 3.7-22 KB here, 240 frames 9-12 KB on a quiet machine; 300 frames pass the limit either way
    frames_log, spray_log = tmp_path / "frames.jsonl", tmp_path / "spray.jsonl"
    conf = tmp_path / "c.toml"
    conf.write_text(_spray_toml(spray_log))
    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"lane": 0, "distance_cm": 10.0}\n')

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "--config", str(conf), "--model", str(TOY_BUNDLE),
                           "--images", str(_weed_folder(tmp_path)), "--loop", "--max-frames", "300", "--threads", "1",
                           "--log-jsonl", str(frames_log), "-q"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for path, what in [(frames_log, "frame log"), (spray_log, "spray log")]:
        data = path.read_bytes()
        assert len(data) <= limit and data.endswith(b"\n")
        assert read_jsonl(path, what)  # every line whole
        assert proc.stderr.count(f"{what} {path} cannot be written (File too large)") == 1, proc.stderr
        assert f"{what} {path}: " in proc.stderr and "line(s) lost at the end of the run" in proc.stderr
    assert len(read_jsonl(frames_log, "frame log")) < 300
    assert replay(["--config", str(conf), "--spray-log", str(spray_log), "--truth", str(truth)]) == 0


def test_jsonl_log_rotates_under_its_cap(tmp_path):
    path = tmp_path / "frames.jsonl"
    log = JsonlLog(path, max_bytes=1000, backups=2)
    for i in range(200):
        log.write({"frame": i, "label": "weed", "pad": "x" * 20})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["frames.jsonl", "frames.jsonl.1", "frames.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["frame"] == 199 and log.rotations > 2
    # a restart appends to the current file and keeps counting its size
    log = JsonlLog(path, max_bytes=1000, backups=2)
    log.write({"frame": 200, "pad": "x" * 900})
    log.close()
    assert path.stat().st_size <= 1000


def test_trigger_frames_are_capped_oldest_deleted_first(tmp_path):
    folder = tmp_path / "triggers"
    (folder / "spray").mkdir(parents=True)
    old = folder / "spray" / "00000000_old.jpg"
    old.write_bytes(b"\xff" * 3000)  # from an earlier run
    os.utime(old, ns=(1, 1))
    saver = TriggerSaver(folder, max_bytes=6000)
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    spray = Decision(frame_id=0, t_capture_ns=0, label="weed", label_prob=1.0, weed_score=1.0, weed_frame=True, spray=True)
    for i in range(20):
        saver.maybe_save(Frame(noise, i, i, "t"), spray)
    total = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    assert total <= 6000 and not old.exists() and saver.saved == 20 and saver.deleted >= 1
    assert (folder / "spray" / f"{19:08d}_19_weed_1.00.jpg").exists()  # the newest is kept


def test_edge_run_wiring_survives_an_unplugged_controller(plug, tmp_path):
    """The real wiring (config -> ReconnectingOutput(SerialOutput) -> pipeline) on looping
    weed images: the controller is unplugged mid-spray and plugged back in; the run goes
    on, reconnects, sprays again, and ends with everything off. Bounded real time."""
    from edge.app import wiring
    from edge.config import load_config
    from edge.service.notify import SdNotify, ServiceNotifier

    link, plug_in, unplug = plug
    weeds = tmp_path / "weeds"
    weeds.mkdir()
    cv2.imwrite(str(weeds / "w.png"), solid(GREEN))
    cfg = load_config(None, {
        "model": {"bundle": str(TOY_BUNDLE), "threads": 1},
        "source": {"kind": "images", "path": str(weeds), "loop": True},
        # generous ack timeouts: a loaded CI machine must not lose the controller by itself
        "outputs": {"kind": "serial", "port": str(link), "channels": 2, "heartbeat_s": 0.2,
                    "ack_timeout_s": 0.5, "retries": 1},
    })
    beats = []

    class Recorder(ServiceNotifier):
        def beat(self, info):
            beats.append(info)

    stop = threading.Event()
    result = {}
    peer = plug_in()
    t = threading.Thread(target=lambda: result.update(summary=wiring.run(
        cfg, stop=stop, notifier=Recorder(SdNotify(env={})))), daemon=True)
    t.start()

    def wait_for(cond, what, limit=30.0):
        deadline = time.monotonic() + limit
        while not cond():
            assert t.is_alive(), f"edge-run stopped while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    try:
        wait_for(lambda: peer.ctl.pins == [True, True], "spraying")
        unplug(peer)
        wait_for(lambda: beats and beats[-1]["controller"].startswith("lost"), "the loss to be noticed")
        assert beats[-1]["outputs"] == "0/2 on"
        peer = plug_in()
        wait_for(lambda: peer.ctl.pins == [True, True], "spraying after the reconnect")
    finally:
        stop.set()
        t.join(30)
    summary = result["summary"]
    assert summary.frames > 0 and beats[-1]["controller_losses"] == 1 and beats[-1]["controller_reconnects"] == 1
    assert "0 source reconnects, controller lost 1x (reconnected 1x)" in summary.summary_lines()[0]  # "0 reconnects"
    assert peer.ctl.pins == [False, False]  # all off at the end
