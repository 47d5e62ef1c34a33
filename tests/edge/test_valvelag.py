"""``--measure-valve-lag``: one channel pulsed at chosen lengths, exact command times logged; paper-strip maths."""

from __future__ import annotations

import json
import threading

import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.config import load_config
from edge.core.errors import EXIT_CONFIG, EXIT_OUTPUT, ConfigError
from edge.outputs import OutputBlocked
from edge.outputs.dryrun import DryRunOutput
from edge.app.valvelag import measure_valve_lag, run, strip_lag

MS = 1_000_000


@pytest.fixture
def gated_output(mock_pins):
    """``make(channels)`` -> (enable pin, clock, dry-run output gated by an enable switch on GPIO22, on)."""
    from edge.inputs.enable import EnableSwitch

    switches = []

    def make(channels: int):
        switches.append(EnableSwitch(22))
        pin = mock_pins.pin(22)
        pin.drive_high()
        clock = ManualClock(start_ns=0)
        out = DryRunOutput(channels, clock=clock)
        out.set_enable(switches[-1])
        return pin, clock, out

    yield make
    for sw in switches:
        sw.close()


def test_pulses_one_channel_at_each_length_with_monotonic_command_times(tmp_path):
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(3, clock=clock)
    said = []
    pulses = measure_valve_lag(out, 1, [20, 100], repeats=2, gap_ms=500, clock=clock, wait=clock.sleep,
                               log_path=tmp_path / "lag.jsonl", say=said.append)
    changes = [(t // MS, ch, on) for t, ev, ch, on in out.events if ev == "set"]
    assert changes == [(0, 1, True), (20, 1, False), (520, 1, True), (620, 1, False),
                       (1120, 1, True), (1140, 1, False), (1640, 1, True), (1740, 1, False)]
    assert [(p.pulse_ms, p.repeat, p.on_cmd_ns // MS, p.commanded_ms) for p in pulses] == [
        (20, 1, 0, 20.0), (100, 1, 520, 100.0), (20, 2, 1120, 20.0), (100, 2, 1640, 100.0)]
    lines = [json.loads(x) for x in (tmp_path / "lag.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["start", "pulse", "pulse", "pulse", "pulse", "end"]
    assert lines[2] == {**lines[2], "channel": 1, "pulse_ms": 100, "on_cmd_ns": 520 * MS, "off_cmd_ns": 620 * MS,
                        "commanded_ms": 100.0}
    assert lines[0]["pulses_ms"] == [20, 100] and lines[-1]["pulses"] == 4
    assert "LED" in said[0] and "paper strip" in said[0].lower() and said[-1].startswith("done: 4 pulse(s)")
    assert out.state() == (False,) * 3


def test_a_stop_request_ends_the_pulse_at_once_with_everything_off():
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(1, clock=clock)
    stop = threading.Event()

    def wait(s):  # Ctrl-C during the second pulse
        clock.sleep(s / 2 if len(out.events) > 3 else s)
        if len(out.events) > 3:
            stop.set()

    pulses = measure_valve_lag(out, 0, [100], repeats=5, gap_ms=100, clock=clock, wait=wait, stop=stop,
                               say=lambda _: None)
    assert len(pulses) == 2 and pulses[1].commanded_ms == 50.0
    assert out.state() == (False,)


def test_prompt_can_cancel_before_any_pulse():
    out = DryRunOutput(1)
    pulses = measure_valve_lag(out, 0, [10], prompt=lambda _: "q", say=lambda _: None)
    assert pulses == [] and not [e for e in out.events if e[1] == "set"]


@pytest.mark.parametrize("kw, match", [
    ({"channel": 2}, "channel 2 does not exist"),
    ({"pulses_ms": [0]}, "out of range"),
    ({"pulses_ms": [0.0001]}, "use 1 to 10000 ms"),  # was accepted
    ({"pulses_ms": [float("nan")]}, "out of range"),
    ({"pulses_ms": [2000]}, "on-time bound"),  # the dry-run output closes a valve after 2 s
    ({"repeats": 0}, "--repeats"),
])
def test_bad_requests_are_refused_before_anything_switches(kw, match):
    out = DryRunOutput(2)
    args = {"channel": 0, "pulses_ms": [50], **kw}
    with pytest.raises(ConfigError, match=match):
        measure_valve_lag(out, args.pop("channel"), args.pop("pulses_ms"), say=lambda _: None, **args)
    assert not [e for e in out.events if e[1] == "set"]


def test_the_enable_switch_going_off_stops_the_measurement(gated_output):
    pin, clock, out = gated_output(1)

    def wait(s):
        clock.sleep(s)
        if s > 0.5:  # the gap after the first pulse: the operator switches off
            pin.drive_low()

    said = []
    with pytest.raises(OutputBlocked):
        measure_valve_lag(out, 0, [50], repeats=3, gap_ms=1000, clock=clock, wait=wait, say=said.append)
    assert said[-1].startswith("stopped: dryrun channel 0 not switched on: the enable switch (GPIO22) is off")
    assert [on for _, ev, _, on in out.events if ev == "set"] == [True, False] and out.state() == (False,)


def test_a_pulse_cut_by_the_enable_switch_is_logged_as_cut_with_its_real_length(gated_output, tmp_path):
    pin, clock, out = gated_output(1)

    def wait(s):  # the operator switches off 30 ms into the second (100 ms) pulse
        if s == pytest.approx(0.1):
            clock.sleep(0.03)
            pin.drive_low()
            clock.sleep(s - 0.03)
        else:
            clock.sleep(s)

    said = []
    with pytest.raises(OutputBlocked, match="cut after 30.0 ms of 100"):
        measure_valve_lag(out, 0, [50, 100, 200], repeats=1, gap_ms=10, clock=clock, wait=wait,
                          log_path=tmp_path / "lag.jsonl", say=said.append)
    lines = [json.loads(x) for x in (tmp_path / "lag.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["start", "pulse", "pulse", "stopped", "end"]
    full, cut = lines[1], lines[2]
    assert full["cut"] is False and full["cut_ns"] is None and full["commanded_ms"] == 50.0
    assert cut["cut"] is True and cut["commanded_ms"] == 30.0 and cut["cut_ns"] == cut["on_cmd_ns"] + 30 * MS
    assert cut["off_cmd_ns"] - cut["on_cmd_ns"] == 100 * MS  # the off command came at the planned time
    assert lines[-1] == {**lines[-1], "pulses": 2, "stopped": True, "reason": "enable switch off"}
    assert "CUT SHORT" in said[-2] and said[-1].startswith("stopped: pulse 2 on channel 0 was cut after 30.0 ms")
    assert out.state() == (False,)


def test_the_log_ends_with_an_end_line_whatever_stops_it(tmp_path):
    clock = ManualClock(start_ns=0)
    out = DryRunOutput(1, clock=clock)

    def wait(s):  # Ctrl-C as a KeyboardInterrupt during the first pulse
        clock.sleep(s / 2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_valve_lag(out, 0, [100], repeats=2, clock=clock, wait=wait, log_path=tmp_path / "lag.jsonl",
                          say=lambda _: None)
    lines = [json.loads(x) for x in (tmp_path / "lag.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["start", "end"]
    assert lines[-1] == {**lines[-1], "pulses": 0, "stopped": True, "reason": "interrupted"}
    assert out.state() == (False,)


def test_test_outputs_says_on_only_for_a_channel_that_opened(gated_output, capsys):
    from edge.app import checks

    pin, clock, out = gated_output(2)

    def wait(s):  # switched off during the first pulse: channel 1 is refused
        pin.drive_low()
        clock.sleep(s)

    with pytest.raises(OutputBlocked):
        checks.pulse_outputs(load_config(), pulse_s=0.1, gap_s=0.1, output=out, wait=wait)
    printed = capsys.readouterr().out
    assert "channel 0: ON" in printed and "channel 1: ON" not in printed


def test_edge_run_measure_valve_lag(tmp_path, capsys):
    log = tmp_path / "lag.jsonl"
    states = tmp_path / "states.jsonl"
    rc = main(["--measure-valve-lag", "1", "--channels", "2", "--lag-pulses-ms", "1,2", "--repeats", "1",
               "--gap-ms", "0", "--yes", "--lag-log", str(log), "--state-file", str(states)])
    assert rc == 0 and "done: 2 pulse(s), all outputs off" in capsys.readouterr().out
    pulses = [json.loads(x) for x in log.read_text().splitlines() if json.loads(x)["event"] == "pulse"]
    assert [p["pulse_ms"] for p in pulses] == [1.0, 2.0]
    assert all(p["commanded_ms"] >= p["pulse_ms"] and p["off_cmd_ns"] > p["on_cmd_ns"] for p in pulses)
    ons = [json.loads(x)["channel"] for x in states.read_text().splitlines() if json.loads(x)["on"]]
    assert ons == [1, 1]
    assert main(["--measure-valve-lag", "5", "--channels", "2", "--yes"]) == EXIT_CONFIG
    assert "channel 5 does not exist" in capsys.readouterr().err


def test_edge_run_measure_valve_lag_refuses_with_the_switch_off(mock_pins, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[safety]\nenable_pin = 22\n")
    assert main(["--config", str(cfg), "--measure-valve-lag", "0", "--yes"]) == EXIT_OUTPUT
    assert "enable switch (GPIO22) is off: refusing to pulse a valve" in capsys.readouterr().err


def test_run_without_a_terminal_answer_pulses_nothing(monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # input() -> EOFError
    out = DryRunOutput(1)
    from edge.core.errors import OutputError

    with pytest.raises(OutputError, match="--yes"):
        run(load_config(), 0, [10], interactive=True, output=out)
    assert not [e for e in out.events if e[1] == "set"] and out.closed


def test_strip_lag_from_marks():
    # 50 cm/s, close lag 40 ms, open lag 25 ms: a P ms pulse leaves 0.05 * (P + 15) cm
    marks = [0.05 * (p + 15) for p in (50, 100, 200)]
    r = strip_lag(50.0, [50, 100, 200], marks)
    assert r.close_minus_open_ms == pytest.approx(15.0) and r.implied_speed_cm_s == pytest.approx(50.0)
    assert r.residual_cm == pytest.approx(0.0, abs=1e-9)
    assert strip_lag(50.0, [100], [4.0]).implied_speed_cm_s is None  # one length: no slope
    with pytest.raises(ValueError):
        strip_lag(0, [100], [4.0])


def test_strip_command(capsys):
    from edge.app.valvelag import main as strip_main

    args = ["strip", "--speed-kmh", "1.8", "--pulses-ms", "50,100,200", "--marks-cm", "3.25,5.75,10.75"]
    assert strip_main(args) == 0
    assert "valve_close_lag_ms - valve_open_lag_ms = 15.0 ms" in capsys.readouterr().out
    assert strip_main(["strip", "--speed-cm-s", "50", "--pulses-ms", "50,100", "--marks-cm", "3"]) == 2
    assert "one mark length per pulse length" in capsys.readouterr().err
