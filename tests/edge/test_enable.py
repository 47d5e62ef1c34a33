"""The enable switch gates the moment a valve opens, in every mode; Jetson.GPIO inputs.

gpiozero inputs use the ``mock_pins`` MockFactory fixture (real gpiozero devices, fake
pins). Jetson.GPIO has no mock factory: a small fake of its module API (the calls edge
makes) is injected into ``sys.modules`` the way the Jetson output tests hide the library.
"""

from __future__ import annotations

import json
import sys
import types

import cv2
import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.config import load_config
from edge.decide.decider import Decision
from edge.core.errors import EXIT_OUTPUT, ConfigError, OutputError
from edge.outputs import OutputBlocked, build_output
from edge.outputs.dryrun import DryRunOutput
from edge.spray.scheduler import SprayScheduler
from edge.spray.spray_log import SprayLog
from tests.conftest import GREEN, TOY_BUNDLE, solid

MS = 1_000_000
PIN = 22


@pytest.fixture
def switch(mock_pins):
    from edge.inputs.enable import EnableSwitch

    sw = EnableSwitch(PIN)
    yield sw, mock_pins.pin(PIN)
    sw.close()


def decision(spray: bool) -> Decision:
    return Decision(frame_id=1, t_capture_ns=0, weed_score=1.0 if spray else 0.0, weed_frame=spray, spray=spray,
                    label="weed" if spray else "soil", label_prob=1.0)


def test_closing_is_idempotent_and_a_failing_input_close_is_logged_not_raised(switch, caplog):
    from edge.inputs.digital import close_input

    sw, pin = switch
    pin.drive_high()
    assert sw.is_on()
    sw.close()
    sw.close()
    assert not sw.is_on()  # a closed switch never reports "on", even with the pin still high

    class PinGone:
        def close(self):
            raise OSError("pin released by another process")

    close_input(PinGone(), "the enable switch input")
    assert "closing the enable switch input failed: pin released by another process" in caplog.text


# -- the output gate -----------------------------------------------------------------------


def test_gated_output_refuses_to_open_while_the_switch_is_off(switch):
    sw, pin = switch
    out = build_output(enable=sw)
    assert not sw.is_on()
    with pytest.raises(OutputBlocked) as err:
        out.set(0, True)
    assert err.value.exit_code == EXIT_OUTPUT and "enable switch (GPIO22) is off" in str(err.value)
    assert out.state() == (False,) and out.blocked == 1
    out.set(0, False)  # switching off is always allowed
    pin.drive_high()
    out.set(0, True)
    assert out.state() == (True,)
    pin.drive_low()  # off: the valve closes at once, from the switch's edge, not at the next command
    assert out.state() == (False,)
    out.close()
    pin.drive_high()
    pin.drive_low()  # a closed output is no longer a listener
    assert sw.switched_off == 2


def test_gating_an_open_output_with_the_switch_off_closes_it(switch):
    sw, _ = switch
    out = DryRunOutput(2)
    out.set(1, True)
    out.set_enable(sw)
    assert out.state() == (False, False) and out.enable is sw
    out.set_enable(None)
    out.set(1, True)
    assert out.state() == (False, True)
    out.close()


def test_off_listeners_all_run_even_if_one_fails(switch):
    sw, pin = switch
    calls = []

    def broken():
        raise RuntimeError("boom")

    sw.add_off_listener(broken)
    sw.add_off_listener(lambda: calls.append("second"))
    pin.drive_high()
    pin.drive_low()
    assert calls == ["second"]
    sw.remove_off_listener(broken)
    sw.remove_off_listener(broken)  # twice: no error


# -- whole-frame mode (no [spray]) ---------------------------------------------------------


def test_whole_frame_actuator_is_gated(switch):
    from edge.loop.actuator import Actuator

    sw, pin = switch
    clock = ManualClock()
    out = DryRunOutput(2, clock=clock)
    out.set_enable(sw)
    act = Actuator(out, clock=clock)
    assert act.apply(decision(True)) is False  # switch off: nothing opens
    assert out.state() == (False, False) and act.blocked_frames == 1
    act.apply(decision(True))
    assert act.blocked_frames == 2
    pin.drive_high()
    assert act.apply(decision(True)) is True and out.state() == (True, True)
    pin.drive_low()  # mid-spray: off at once
    assert out.state() == (False, False)
    assert act.apply(decision(True)) is False and not act.on
    out.close()


def test_whole_frame_blocked_frames_are_in_the_summary_and_the_stats_line(switch, caplog):
    from edge.loop.actuator import Actuator
    from edge.decide.decider import Decider
    from edge.inference import Classifier
    from edge.loop.runner import RunLoop
    from edge.loop.whole_frame import WholeFrameProcessor
    from tests.edge.helpers import ScriptedSource

    sw, pin = switch
    clock = ManualClock()
    out = DryRunOutput(2, clock=clock)
    out.set_enable(sw)
    classifier = Classifier(TOY_BUNDLE, num_threads=1)
    pipe = RunLoop(ScriptedSource("WWSW", clock),
                   WholeFrameProcessor(classifier, Decider(classifier.labels, ["weed"], 0.5), Actuator(out, clock=clock),
                                       clock=clock), clock=clock)
    with caplog.at_level("INFO", logger="edge.loop.runner"):
        summary = pipe.run()
    assert summary.stats["blocked_frames"] == 3
    stats = [r.getMessage() for r in caplog.records if r.name == "edge.loop.runner"][-1]
    assert "enable switch blocked 3 spray frame(s)" in stats


def frames_dir(tmp_path, n=3):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:03d}.png"), solid(GREEN))
    return d


def test_edge_run_without_spray_honours_the_enable_switch(mock_pins, tmp_path, capsys):
    d = frames_dir(tmp_path)
    states = tmp_path / "states.jsonl"
    cfg = tmp_path / "c.toml"
    args = ["--config", str(cfg), "--images", str(d), "--model", str(TOY_BUNDLE), "--state-file", str(states), "-q"]
    cfg.write_text("[safety]\nenable_pin = 22\n")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 weed frames" in out and "3 spray frames blocked by the enable switch" in out
    assert not [e for e in map(json.loads, states.read_text().splitlines()) if e["on"]]  # nothing ever opened
    cfg.write_text("")  # without the switch the same frames do spray
    states.unlink()
    assert main(args) == 0
    assert [e for e in map(json.loads, states.read_text().splitlines()) if e["on"]]


# -- the spray scheduler -------------------------------------------------------------------


def test_scheduler_open_is_blocked_and_logged(switch, tmp_path):
    sw, pin = switch
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(2, clock=clock)
    out.set_enable(sw)
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(tmp_path / "s.jsonl", clock=clock))
    sched.plan(0, 10 * MS, 100 * MS)  # planned while on (or in the race window), opened while off
    clock.advance(0.02)
    assert sched.run_due() is None  # the interval is dropped: no busy retry
    assert out.state() == (False, False) and sched.state == (False, False)
    assert sched.blocked == 1 and sched.opens == 0 and sched.pending(0) == []
    pin.drive_high()
    sched.plan(1, 30 * MS, 60 * MS)
    clock.advance(0.02)
    sched.run_due()
    assert out.state() == (False, True) and sched.summary()["blocked"] == 1
    sched.close()
    events = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    blocked = [e for e in events if e["event"] == "blocked"]
    assert blocked == [{**blocked[0], "channel": 0, "planned_ns": 10 * MS, "at_ns": 20 * MS, "until_ns": 100 * MS,
                        "why": "enable switch off"}]


def test_scheduler_refresh_blocked_counts_as_a_close(switch, tmp_path):
    sw, pin = switch
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(1, clock=clock)
    out.set_enable(sw)
    pin.drive_high()
    sched = SprayScheduler(out, clock=clock, spray_log=SprayLog(tmp_path / "s.jsonl", clock=clock), refresh_s=0.1)
    sched.plan(0, 0, 1000 * MS)
    sched.run_due()
    assert out.state() == (True,)
    pin.drive_low()  # only the output listens here (no cancel_all): it closes itself
    assert out.state() == (False,)
    clock.advance(0.2)
    sched.run_due()  # the refresh is refused: the scheduler records the close
    assert sched.state == (False,) and sched.pending(0) == [] and sched.closes == 1
    sched.close()
    closes = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [e.get("reason") for e in closes if e["event"] == "close"] == ["enable switch off"]


# -- --test-outputs ------------------------------------------------------------------------


def test_test_outputs_refuses_with_the_switch_off(mock_pins, tmp_path, capsys):
    states = tmp_path / "s.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text("[safety]\nenable_pin = 22\nenable_pull_up = true\n")
    rc = main(["--config", str(cfg), "--test-outputs", "--pulse-ms", "1", "--channels", "2",
               "--state-file", str(states)])
    assert rc == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "enable switch (GPIO22) is off: refusing to pulse the outputs" in err and "switch it on" in err
    assert not states.exists()  # the output was never even built


def test_test_outputs_stops_when_the_switch_goes_off(switch):
    from edge.app import checks

    sw, pin = switch
    pin.drive_high()
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(3, clock=clock)
    out.set_enable(sw)

    def wait(s):  # the operator switches off during the first pulse
        pin.drive_low()
        clock.sleep(s)

    with pytest.raises(OutputBlocked):
        checks.pulse_outputs(load_config(), pulse_s=0.1, gap_s=0.1, output=out, wait=wait)
    assert [(ch, on) for _, ev, ch, on in out.events if ev in ("set", "enable switch off")] == [(0, True), (0, False)]
    assert out.closed


# -- config ---------------------------------------------------------------------------------


SPRAY = "[spray]\nfootprint_across_cm = 50\nfootprint_along_cm = 40\nnozzle_distance_cm = 100\nspeed_kmh = 5\n"


def test_enable_pin_in_safety_and_moved_from_spray(tmp_path, caplog):
    p = tmp_path / "c.toml"
    p.write_text("[safety]\nenable_pin = 5\nenable_pull_up = true\n")
    c = load_config(p)
    assert (c.safety.enable_pin, c.safety.enable_pull_up, c.safety.input_kind) == (5, True, "auto")
    p.write_text(SPRAY + "enable_pin = 22\nenable_pull_up = true\n")  # the old place still works, with a warning
    c = load_config(p)
    assert (c.safety.enable_pin, c.safety.enable_pull_up) == (22, True)
    assert "[spray] enable_pin has moved to [safety] enable_pin" in caplog.text
    p.write_text(SPRAY + "enable_pin = 22\n[safety]\nenable_pin = 23\n")
    with pytest.raises(ConfigError, match="has moved to \\[safety\\] enable_pin"):
        load_config(p)
    p.write_text("[safety]\nenable_pin = 17\n[outputs]\nkind = 'gpio'\npins = [17, 27]\n")
    with pytest.raises(ConfigError, match="also an output pin"):
        load_config(p)
    p.write_text("[safety]\ninput_kind = 'rpi'\n")
    with pytest.raises(ConfigError, match="input_kind"):
        load_config(p)


@pytest.mark.parametrize("toml, kind", [
    ("", "gpio"),
    ("[outputs]\nkind = 'jetson'\npins = [29]\n", "jetson"),
    ("[outputs]\nkind = 'serial'\nport = 'loop://'\n[safety]\ninput_kind = 'jetson'\n", "jetson"),
    ("[outputs]\nkind = 'jetson'\npins = [29]\n[safety]\ninput_kind = 'gpio'\n", "gpio"),
])
def test_input_kind_comes_from_the_config(tmp_path, toml, kind):
    from edge.inputs.digital import input_spec

    p = tmp_path / "c.toml"
    p.write_text(toml)
    assert input_spec(load_config(p)).kind == kind


def test_example_config_validates(capsys):
    from pathlib import Path

    example = Path(__file__).parents[2] / "deploy" / "config.example.toml"
    assert main(["--config", str(example), "--validate-config", "--model", str(TOY_BUNDLE)]) == 0
    assert "outputs ok" in capsys.readouterr().out


# -- Jetson.GPIO inputs ----------------------------------------------------------------------


class FakeJetsonGPIO(types.ModuleType):
    """The part of Jetson.GPIO's API edge uses, with pins a test drives (``drive(pin, level)``)."""

    BOARD, BCM, IN, OUT, HIGH, LOW = "BOARD", "BCM", 1, 0, 1, 0
    RISING, FALLING, BOTH = 31, 32, 33

    def __init__(self):
        super().__init__("Jetson.GPIO")
        self.mode = None
        self.levels: dict[int, int] = {}
        self.inputs: set[int] = set()
        self.callbacks: dict[int, object] = {}
        self.bounce: dict[int, object] = {}
        self.cleaned: list[int] = []

    def setwarnings(self, _on):
        pass

    def getmode(self):
        return self.mode

    def setmode(self, mode):
        self.mode = mode

    def setup(self, pins, direction, initial=None):
        for p in pins if isinstance(pins, list) else [pins]:
            if p in (1, 2, 4, 6):  # power / ground header pins
                raise ValueError(f"Channel {p} is invalid")
            if direction == self.IN:
                self.inputs.add(p)
                self.levels.setdefault(p, self.LOW)
            else:
                self.levels[p] = initial

    def input(self, pin):
        return self.levels[pin]

    def output(self, pins, level):
        for p in pins if isinstance(pins, list) else [pins]:
            self.levels[p] = level

    def add_event_detect(self, pin, edge, callback=None, bouncetime=None):
        if pin not in self.inputs:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        assert edge == self.BOTH
        self.callbacks[pin] = callback
        self.bounce[pin] = bouncetime

    def remove_event_detect(self, pin):
        self.callbacks.pop(pin, None)

    def cleanup(self, pins=None):
        for p in pins if isinstance(pins, list) else [pins]:
            self.cleaned.append(p)
            self.inputs.discard(p)

    # test side: the outside world changes the pin's level
    def drive(self, pin, level):
        old, self.levels[pin] = self.levels[pin], level
        cb = self.callbacks.get(pin)
        if cb is not None and old != level:
            cb(pin)


@pytest.fixture
def jetson(monkeypatch):
    fake = FakeJetsonGPIO()
    package = types.ModuleType("Jetson")
    package.GPIO = fake
    monkeypatch.setitem(sys.modules, "Jetson", package)
    monkeypatch.setitem(sys.modules, "Jetson.GPIO", fake)
    return fake


@pytest.mark.parametrize("pull_up", [False, True])
def test_jetson_input_reports_edges_like_gpiozero(jetson, pull_up):
    from edge.inputs.digital import InputSpec, open_input

    on, off = (jetson.LOW, jetson.HIGH) if pull_up else (jetson.HIGH, jetson.LOW)
    jetson.levels[15] = off
    inp = open_input(15, pull_up=pull_up, spec=InputSpec(kind="jetson"), purpose="enable switch")
    assert jetson.mode == "BOARD" and 15 in jetson.inputs and not inp.is_active
    seen = []
    inp.when_activated = lambda: seen.append("on")
    inp.when_deactivated = lambda: seen.append("off")
    jetson.drive(15, on)
    assert inp.is_active and inp.value == 1
    jetson.callbacks[15](15)  # a repeated edge (contact bounce) is not reported twice
    jetson.drive(15, off)
    assert seen == ["on", "off"] and not inp.is_active
    inp.close()
    inp.close()
    assert jetson.cleaned == [15] and 15 not in jetson.callbacks and not inp.is_active


def test_jetson_enable_switch_gates_a_jetson_output(jetson, tmp_path):
    from edge.inputs.enable import open_enable_switch

    p = tmp_path / "c.toml"
    p.write_text("[outputs]\nkind = 'jetson'\npins = [29, 31]\n[safety]\nenable_pin = 15\n")
    cfg = load_config(p)
    sw = open_enable_switch(cfg)
    assert sw.describe() == "enable switch (BOARD pin 15)"
    out = build_output(cfg.outputs, enable=sw)
    with pytest.raises(OutputBlocked):
        out.set(0, True)
    jetson.drive(15, jetson.HIGH)
    out.set(0, True)
    assert jetson.levels[29] == jetson.HIGH
    jetson.drive(15, jetson.LOW)  # Jetson.GPIO's edge thread calls back: the pin goes low at once
    assert jetson.levels[29] == jetson.LOW and out.state() == (False, False)
    out.close()
    sw.close()


def test_jetson_input_errors_say_what_to_do(jetson, monkeypatch):
    from edge.inputs.digital import InputSpec, JetsonGpioInput, open_input

    with pytest.raises(OutputError, match="free GPIO-capable BOARD header pin"):
        open_input(2, spec=InputSpec(kind="jetson"))  # a power pin
    assert jetson.cleaned == [2]
    jetson.mode = "BCM"
    with pytest.raises(OutputError, match="same \\[outputs\\] pin_numbering"):
        JetsonGpioInput(15, numbering="BOARD")
    monkeypatch.setitem(sys.modules, "Jetson", None)
    monkeypatch.setitem(sys.modules, "Jetson.GPIO", None)
    with pytest.raises(OutputError, match="pip install 'weed-detector\\[jetson\\]'"):
        open_input(15, spec=InputSpec(kind="jetson"))


def test_gpiozero_input_missing_tells_how_to_install(monkeypatch):
    from edge.inputs.digital import open_input

    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(OutputError, match="input_kind = \"jetson\""):
        open_input(22, purpose="wheel encoder")


def test_validate_config_reports_the_enable_switch(mock_pins, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[safety]\nenable_pin = 22\n")
    assert main(["--config", str(cfg), "--validate-config", "--model", str(TOY_BUNDLE)]) == 0
    assert "enable switch (GPIO22): OFF now (no output opens until it is on)" in capsys.readouterr().out


def test_a_reconnecting_serial_output_is_gated_too(switch, tmp_path):
    from edge.app import wiring
    from edge.outputs.reconnecting import ReconnectingOutput

    sw, pin = switch
    p = tmp_path / "c.toml"
    p.write_text("[outputs]\nkind = 'serial'\nport = 'loop://'\nacks = false\nchannels = 2\n")
    cfg = load_config(p)
    out = wiring.make_output(cfg, cfg.service, sw)
    assert isinstance(out, ReconnectingOutput)
    with pytest.raises(OutputBlocked):
        out.set(1, True)
    pin.drive_high()
    out.set(1, True)
    assert out.state() == (False, True)
    pin.drive_low()
    assert out.state() == (False, False)
    out.close()


def test_jetson_wheel_encoder(jetson):
    from edge.inputs.digital import InputSpec
    from edge.spray.speed import WheelEncoderSpeed

    clock = ManualClock(start_ns=0)
    enc = WheelEncoderSpeed(33, 10.0, stale_s=2.0, clock=clock, inputs=InputSpec(kind="jetson"))
    for _ in range(3):
        jetson.drive(33, jetson.HIGH)
        jetson.drive(33, jetson.LOW)
        clock.advance(0.1)
    assert enc.speed_kmh() == pytest.approx(20 / 0.2 * 0.036)  # 2 gaps of 10 cm in 0.2 s = 100 cm/s
    enc.close()
