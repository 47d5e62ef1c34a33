"""Output backends: dry-run, gpiozero (MockFactory pins), Jetson (missing library), factory."""

from __future__ import annotations

import json
import logging
import sys
import threading

import pytest
from pydantic import ValidationError

from edge.core.clock import ManualClock
from edge.core.errors import EXIT_OUTPUT, OutputError
from edge.config import load_config
from edge.outputs import (
    DryRunOutput,
    DryRunOutputConfig,
    GpioOutputConfig,
    JetsonOutputConfig,
    SerialOutputConfig,
    build_output,
    output_config,
)
from edge.outputs.base import Output
from edge.outputs.dryrun import state_time_ns
from tests.edge.test_enable import jetson  # noqa: F401 - the fake Jetson.GPIO fixture

gpiozero = pytest.importorskip("gpiozero")
from gpiozero.pins.mock import MockFactory  # noqa: E402


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def pin_levels(factory, pins):
    return [factory.pin(p).state for p in pins]


# -- dry-run ------------------------------------------------------------------------------


def test_dryrun_logs_every_change_and_keeps_state():
    lines = []
    out = DryRunOutput(3, log=lines.append)
    assert isinstance(out, Output)
    assert out.state() == (False, False, False)
    out.set(0, True)
    out.set(0, True)  # already on: a refresh, not a change
    out.set(2, True)
    out.set(1, False)  # already off: nothing to log
    assert out.state() == (True, False, True)
    out.set(0, False)
    out.all_off()
    assert out.state() == (False, False, False)
    assert lines == ["valve 0 ON", "valve 2 ON", "valve 0 OFF", "valve 2 OFF"]


def test_dryrun_accepts_a_logger(caplog):
    logger = logging.getLogger("test.dryrun")
    with caplog.at_level(logging.INFO, logger="test.dryrun"):
        with DryRunOutput(1, log=logger) as out:
            out.set(0, True)
    assert [r.getMessage() for r in caplog.records] == ["valve 0 ON", "valve 0 OFF"]


def test_dryrun_state_file_records_changes_as_json_lines(tmp_path):
    path = tmp_path / "state.jsonl"
    clock = ManualClock(start_ns=5_000)
    out = DryRunOutput(2, log=lambda _msg: None, state_file=path, clock=clock)
    out.set(1, True)
    clock.advance(1e-6)
    out.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["event"], r["channel"], r["on"]) for r in records] == [
        ("open", None, None),
        ("set", 1, True),
        ("close", 1, False),
        ("closed", None, None),
    ]
    assert records[1]["state"] == [False, True]
    assert records[-1]["state"] == [False, False]
    assert [r["t_mono_ns"] for r in records] == [5_000, 5_000, 6_000, 6_000]


def test_a_state_file_line_with_the_old_time_key_still_reads():
    old = json.loads('{"t_ns": 790, "event": "closed", "channel": null, "on": null, "state": [false, false]}')
    assert state_time_ns(old) == 790
    assert state_time_ns({"t_mono_ns": 5, "event": "open"}) == 5
    with pytest.raises(KeyError, match="neither t_mono_ns nor t_ns"):
        state_time_ns({"event": "open"})


def test_dryrun_state_file_unwritable_is_an_output_error(tmp_path):
    with pytest.raises(OutputError) as err:
        DryRunOutput(1, state_file=tmp_path / "missing-dir" / "state.jsonl")
    assert "state_file" in str(err.value)
    assert err.value.exit_code == EXIT_OUTPUT


def test_close_is_idempotent_switches_off_and_refuses_to_switch_on():
    lines = []
    out = DryRunOutput(2, log=lines.append)
    out.set(0, True)
    out.close()
    out.close()
    assert out.closed and out.state() == (False, False)
    out.all_off()  # safe paths stay quiet after close
    out.set(0, False)
    with pytest.raises(OutputError):
        out.set(0, True)
    assert lines == ["valve 0 ON", "valve 0 OFF"]


def test_bad_channel_is_a_value_error():
    with DryRunOutput(2, log=lambda _m: None) as out:
        for bad in (-1, 2, True, "0"):
            with pytest.raises(ValueError):
                out.set(bad, True)


def _advance_and_expire(out, clock, seconds):
    # Hold the output's lock so its own max-on thread cannot expire the channel between
    # the clock moving and this check (the thread runs on the same manual clock).
    with out._lock:
        clock.advance(seconds)
        return out.expire_due()


def test_max_on_time_switches_a_channel_off_unless_refreshed():
    clock = ManualClock()
    lines = []
    with DryRunOutput(2, log=lines.append, max_on_s=1.0, clock=clock) as out:
        out.set(0, True)
        out.set(1, True, max_on_s=0.25)  # a shorter bound for this call
        assert _advance_and_expire(out, clock, 0.5) == [1]
        out.set(0, True)  # refresh: the bound counts from now
        assert _advance_and_expire(out, clock, 0.75) == []
        assert out.state() == (True, False)
        assert _advance_and_expire(out, clock, 0.25) == [0]
        assert out.state() == (False, False)
        assert out.expired == 2
        out.set(0, True, max_on_s=30.0)  # never longer than the output's own bound
        assert _advance_and_expire(out, clock, 1.0) == [0]
    assert "valve 1 OFF (max on-time elapsed without refresh)" in lines


def test_expiry_thread_switches_off_without_anyone_calling():
    done = threading.Event()
    out = DryRunOutput(1, log=lambda m: done.set() if "max on-time" in m else None, max_on_s=0.02)
    out.set(0, True)
    assert done.wait(5.0), "the max-on thread never switched the channel off"
    assert out.state() == (False,)
    out.close()


def test_set_and_all_off_are_thread_safe():
    out = DryRunOutput(4, log=lambda _m: None)
    errors = []

    def worker(k):
        try:
            for i in range(300):
                out.set((k + i) % 4, i % 3 != 0)
                if i % 50 == 0:
                    out.all_off()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every logged change alternates ON/OFF per channel: no lost or doubled transition
    per_channel = {}
    for _t, event, ch, on in out.events:
        if ch is not None:
            assert per_channel.get(ch, False) != on, (ch, on)
            per_channel[ch] = on
    assert tuple(per_channel.get(ch, False) for ch in range(4)) == out.state()
    out.close()
    assert out.state() == (False,) * 4


# -- gpio (gpiozero MockFactory) -------------------------------------------------------------


@pytest.mark.parametrize("active_high", [True, False], ids=["active-high", "active-low"])
def test_gpio_pins_follow_set_all_off_and_close(factory, active_high):
    from edge.outputs.gpio import GpioOutput

    pins = [17, 27, 22]
    on, off = active_high, not active_high  # active-low inverts the electrical level
    out = GpioOutput(pins, active_high=active_high, pin_factory=factory)
    assert isinstance(out, Output)
    assert out.channels == 3
    assert pin_levels(factory, pins) == [off, off, off]
    out.set(1, True)
    assert pin_levels(factory, pins) == [off, on, off]
    out.set(0, True)
    out.set(1, False)
    assert pin_levels(factory, pins) == [on, off, off]
    out.set(2, True)
    out.all_off()
    assert pin_levels(factory, pins) == [off, off, off]
    assert out.state() == (False, False, False)
    out.set(2, True)
    out.close()
    out.close()
    assert pin_levels(factory, pins) == [off, off, off]
    assert [factory.pin(p).function for p in pins] == ["input"] * 3  # released
    # released pins can be claimed again
    GpioOutput(pins, pin_factory=factory).close()


def test_gpio_max_on_time_releases_the_pin(factory):
    from edge.outputs.gpio import GpioOutput

    clock = ManualClock()
    with GpioOutput([5], pin_factory=factory, max_on_s=0.5, clock=clock) as out:
        out.set(0, True)
        assert factory.pin(5).state is True
        clock.advance(0.5)
        out.expire_due()
        assert factory.pin(5).state is False


@pytest.mark.parametrize(
    ("pins", "words"),
    [
        ([99], ["99", "BCM"]),
        ([17, 17], ["17", "more than once"]),
        ([-3], ["-3", "BCM"]),
        ([], ["no pins"]),
    ],
)
def test_gpio_bad_pins_are_output_errors(factory, pins, words):
    from edge.outputs.gpio import GpioOutput

    with pytest.raises(OutputError) as err:
        GpioOutput(pins, pin_factory=factory)
    for word in words:
        assert word in str(err.value)


def test_gpio_busy_pin_names_the_pin_and_releases_the_others(factory):
    from edge.outputs.gpio import GpioOutput

    first = GpioOutput([23], pin_factory=factory)
    with pytest.raises(OutputError) as err:
        GpioOutput([24, 23], pin_factory=factory)
    assert "23" in str(err.value) and "already in use" in str(err.value)
    GpioOutput([24], pin_factory=factory).close()  # 24 was given back
    first.close()


def test_gpio_without_a_working_pin_library_is_an_output_error(monkeypatch):
    from edge.outputs.gpio import GpioOutput

    monkeypatch.setattr(gpiozero.Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    with pytest.raises(OutputError) as err:
        GpioOutput([17])
    assert "pin 17" in str(err.value) and "weed-detector[pi]" in str(err.value)


def test_gpio_without_gpiozero_tells_how_to_install(monkeypatch):
    from edge.outputs.gpio import GpioOutput

    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import gpiozero -> ImportError
    with pytest.raises(OutputError) as err:
        GpioOutput([17])
    assert "pip install 'weed-detector[pi]'" in str(err.value)


def test_jetson_without_library_tells_how_to_install(monkeypatch):
    from edge.outputs.jetson import JetsonGpioOutput

    monkeypatch.setitem(sys.modules, "Jetson", None)
    monkeypatch.setitem(sys.modules, "Jetson.GPIO", None)
    with pytest.raises(OutputError) as err:
        JetsonGpioOutput([29, 31])
    assert "pip install 'weed-detector[jetson]'" in str(err.value)
    with pytest.raises(OutputError):
        JetsonGpioOutput([29], numbering="SOC")


# -- factory -------------------------------------------------------------------------------


def test_build_output_defaults_to_one_dryrun_channel():
    out = build_output()
    assert isinstance(out, DryRunOutput) and out.channels == 1
    out.close()


def test_build_output_gpio_with_injected_factory(factory):
    spec = GpioOutputConfig(pins=(6, 13), active_high=False, max_on_s=1.5)
    with build_output(spec, pin_factory=factory) as out:
        assert out.name == "gpio" and out.max_on_s == 1.5
        out.set(1, True)
        assert pin_levels(factory, [6, 13]) == [True, False]


def test_build_output_dryrun_state_file(tmp_path):
    spec = DryRunOutputConfig(channels=2, state_file=str(tmp_path / "s.jsonl"))
    with build_output(spec, log=lambda _m: None) as out:
        out.set(1, True)
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 4


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"kind": "gpio"}, "pins"),
        ({"kind": "jetson", "pins": (1, 1)}, "twice"),
        ({"kind": "gpio", "pins": (17,), "channels": 2}, "channels"),
        ({"kind": "serial"}, "port"),
        ({"kind": "serial", "port": "loop://", "acks": False}, "channels"),
        ({"kind": "relay"}, "kind"),
        ({"pin": 17}, "pin"),  # unknown keys are rejected by name
        ({"max_on_s": 0}, "max_on_s"),
    ],
)
def test_output_config_rejects_bad_combinations(fields, needle):
    with pytest.raises(ValidationError) as err:
        output_config(fields)
    assert needle in str(err.value)


def test_output_config_is_frozen():
    spec = output_config()
    with pytest.raises(ValidationError):
        spec.kind = "gpio"


# -- one config type per kind ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "config_type", "name", "channels"),
    [
        (None, DryRunOutputConfig, "dryrun", 1),  # no [outputs]: dry-run with its defaults
        ({"channels": 3}, DryRunOutputConfig, "dryrun", 3),  # kind defaults to dryrun
        ({"kind": "gpio", "pins": [17, 27], "active_high": False}, GpioOutputConfig, "gpio", 2),
        ({"kind": "jetson", "pins": [29, 31, 33], "pin_numbering": "BOARD"}, JetsonOutputConfig, "jetson", 3),
        ({"kind": "serial", "port": "loop://", "channels": 2, "acks": False}, SerialOutputConfig, "serial", 2),
    ],
)
def test_each_output_kind_builds_from_its_config(table, config_type, name, channels, factory, jetson):
    import serial

    cfg = load_config(overrides={"outputs": table} if table is not None else None)
    assert type(cfg.outputs) is config_type and cfg.outputs.kind == config_type.model_fields["kind"].default
    port = serial.serial_for_url("loop://", timeout=0.01) if name == "serial" else None
    with build_output(cfg.outputs, pin_factory=factory, serial=port, log=lambda _m: None) as out:
        assert (out.name, out.channels) == (name, channels)
        out.set(0, True)
        assert out.state()[0]
    if name == "jetson":
        assert jetson.mode == "BOARD" and jetson.levels[29] == jetson.LOW  # off after close


def test_build_output_has_a_backend_for_every_kind():
    from edge.outputs.config import KINDS, OUTPUT_TYPES

    assert KINDS == ("dryrun", "gpio", "jetson", "serial") and tuple(OUTPUT_TYPES) == KINDS
    with pytest.raises(TypeError, match="output config"):
        build_output({"kind": "dryrun"})  # a plain table is not a config: output_config() reads it


@pytest.mark.parametrize(
    ("table", "ignored"),
    [
        ({"kind": "dryrun", "pins": [17], "baud": 9600, "heartbeat_s": 0.5}, "pins, baud, heartbeat_s"),
        ({"pins": [], "acks": True}, "pins, acks"),  # kind defaults to dryrun
        ({"kind": "gpio", "pins": [17], "state_file": "s.jsonl", "port": "/dev/ttyACM0"}, "state_file, port"),
        ({"kind": "jetson", "pins": [29], "retries": 3}, "retries"),
        ({"kind": "serial", "port": "loop://", "pins": [5], "active_high": False}, "pins, active_high"),
    ],
)
def test_a_key_of_another_kind_warns_and_is_ignored(caplog, table, ignored):
    kind = table.get("kind", "dryrun")
    with caplog.at_level(logging.WARNING, logger="edge.outputs.config"):
        c = output_config(table)
    assert f"[outputs] {ignored} do not apply to kind '{kind}'; ignored" in caplog.text
    assert c.kind == kind and not set(ignored.split(", ")) & set(type(c).model_fields)


@pytest.mark.parametrize(
    "table",
    [
        {"kind": "dryrun", "channels": 2, "max_on_s": 1.0, "state_file": "s.jsonl"},
        {"kind": "gpio", "pins": [17], "active_high": False, "max_on_s": 1.0},
        # pin_numbering applies to every kind: Jetson inputs ([safety] input_kind) read it too
        {"kind": "serial", "port": "loop://", "baud": 9600, "pin_numbering": "BCM"},
    ],
)
def test_keys_of_the_kind_itself_give_no_warning(caplog, table):
    with caplog.at_level(logging.WARNING, logger="edge.outputs.config"):
        c = output_config(table)
    assert not caplog.records and all(getattr(c, k) == (tuple(v) if isinstance(v, list) else v)
                                      for k, v in table.items())
