"""edge-run end to end: the real entry point on real files, real LiteRT, real library fakes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.cli import main
from edge.core.errors import EXIT_BUNDLE, EXIT_CONFIG, EXIT_OUTPUT, EXIT_SOURCE
from tests.conftest import BROWN, GREEN, TOY_BUNDLE, solid

SCRIPT = "SWWSSWSW"  # per frame: S soil, W weed


@pytest.fixture
def frames(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i, c in enumerate(SCRIPT):
        cv2.imwrite(str(d / f"{i:03d}_{c}.png"), solid(GREEN if c == "W" else BROWN, 60, 80))
    (d / "notes.txt").write_text("not an image")
    return d


def _changes(states):
    out = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


def test_gpio_pins_follow_weed_frames(frames, mock_pins, tmp_path, capsys):
    log = tmp_path / "frames.jsonl"
    rc = main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--output", "gpio", "--pins", "17,27",
               "--log-jsonl", str(log), "--print", "--threads", "1"])
    assert rc == 0
    for pin in (17, 27):
        states = [bool(s.state) for s in mock_pins.pin(pin).states]
        expected = _changes([False] + [c == "W" for c in SCRIPT] + [False])
        assert _changes(states) == expected, pin
        assert mock_pins.pin(pin).state == 0  # off at the end
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["spray"] for r in records] == [c == "W" for c in SCRIPT]
    assert [r["outputs"] for r in records] == [[int(c == "W")] * 2 for c in SCRIPT]
    r = records[1]
    assert r["label"] == "weed" and set(r["probs"]) == {"soil", "crop", "weed"} and r["frame"] == 1
    assert set(r["ms"]) == {"capture_wait", "preprocess", "inference", "decision", "actuation", "end_to_end"}
    assert isinstance(r["t_mono_ns"], int) and r["wall"].endswith("Z")
    out = capsys.readouterr().out
    assert out.count("SPRAY") == SCRIPT.count("W") and "all outputs off" in out


def test_active_low_relays(frames, mock_pins):
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--output", "gpio", "--pins", "5",
                 "--active-low", "-q"]) == 0
    states = [s.state for s in mock_pins.pin(5).states]
    assert states[-1] == 1  # high = relay released
    assert 0 in states  # driven low while spraying


def test_weed_labels_and_threshold_overrides(frames, tmp_path):
    log = tmp_path / "f.jsonl"
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--weed-labels", "soil", "--log-jsonl", str(log),
                 "-q"]) == 0
    assert [json.loads(x)["spray"] for x in log.read_text().splitlines()] == [c == "S" for c in SCRIPT]
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--threshold", "1.0", "--log-jsonl",
                 str(log := tmp_path / "g.jsonl"), "-q"]) == 0
    assert not any(json.loads(x)["spray"] for x in log.read_text().splitlines())


def test_save_triggers(frames, tmp_path):
    d = tmp_path / "saved"
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--save-triggers", str(d), "--sample-rate", "1",
                 "-q"]) == 0
    assert len(list((d / "spray").glob("*.jpg"))) == SCRIPT.count("W")
    assert len(list((d / "sample").glob("*.jpg"))) == SCRIPT.count("S")


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["--images", "/no/such/dir"], EXIT_SOURCE, "/no/such/dir"),
        (["--video", "/no/such.avi"], EXIT_SOURCE, "/no/such.avi"),
        (["--model", "/no/bundle"], EXIT_BUNDLE, "not found"),
        (["--config", "/no/config.toml"], EXIT_CONFIG, "not found"),
        (["--output", "serial", "--images", "."], EXIT_CONFIG, "port is required"),
        (["--output", "gpio", "--pins", "17,17", "--images", "."], EXIT_CONFIG, "twice"),
    ],
)
def test_user_errors_are_one_line_and_an_exit_code(argv, code, words, capsys):
    if "--model" not in argv:
        argv = ["--model", str(TOY_BUNDLE), *argv]
    else:
        argv = [*argv, "--images", "."]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("edge-run: error:")]


def test_corrupt_model_fails_before_any_output(toy_bundle, frames, tmp_path, capsys):
    (toy_bundle / "model.tflite").write_bytes(b"truncated")
    state = tmp_path / "state.jsonl"
    assert main(["--model", str(toy_bundle), "--images", str(frames), "--state-file", str(state)]) == EXIT_BUNDLE
    assert not state.exists()  # the outputs were never even opened
    assert "does not match its manifest" in capsys.readouterr().err


def test_bad_pin_is_an_output_error(frames, mock_pins, capsys):
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--output", "gpio", "--pins", "200"]) == EXIT_OUTPUT
    assert "200" in capsys.readouterr().err


def test_validate_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n[outputs]\nkind = 'dryrun'\nchannels = 3\n")
    assert main(["--config", str(cfg), "--validate-config"]) == 0
    out = capsys.readouterr().out
    assert "config ok" in out and "3 channel(s)" in out
    cfg.write_text("[outputs]\nkind = 'dryrun'\nchanels = 3\n")
    assert main(["--config", str(cfg), "--validate-config"]) == EXIT_CONFIG
    assert "chanels: unknown key" in capsys.readouterr().err


SPRAY_2 = ("[spray]\nlanes = 2\nfootprint_across_cm = 40\nfootprint_along_cm = 30\nnozzle_distance_cm = 100\n"
           "speed_kmh = 3\n")


# What the run refuses at start, --validate-config (the unit's ExecStartPre) refuses too, with the same code.
@pytest.mark.parametrize("toml, code, words", [
    ("[log]\njsonl = '/proc/no/such/dir/f.jsonl'\n", EXIT_CONFIG, "cannot write the frame log"),
    ("[log]\nsave_triggers = '/proc/no/such/dir'\n", EXIT_CONFIG, "cannot write the trigger-frame folder"),
    (SPRAY_2 + "log_jsonl = '/proc/no/such/dir/s.jsonl'\n", EXIT_CONFIG, "cannot write the spray log"),
    (SPRAY_2 + "speed_source = 'nmea'\ngps_port = '/dev/no-such-gps'\n", EXIT_SOURCE,
     "cannot open the GPS port"),
    ("[model]\nscoring = 'frame'\n" + SPRAY_2, EXIT_BUNDLE, "has no frame-features export"),  # the toy bundle has none
    ("[web]\nlisten = '127.0.0.1:0'\n[labelling]\ndataset = '/proc/no/such/dataset'\n", EXIT_CONFIG,
     "labelling needs the saved frames' folder"),
], ids=["frame-log", "trigger-folder", "spray-log", "gps-port", "frame-scoring", "labelling"])
def test_validate_config_refuses_what_the_run_refuses(toml, code, words, frames, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    base = ["--config", str(cfg), "--model", str(TOY_BUNDLE)]
    for argv in (base + ["--validate-config"], base + ["--images", str(frames), "--max-frames", "1"]):
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err


def test_validate_config_binds_the_live_view_address_as_the_run_does(frames, tmp_path, capsys):
    pytest.importorskip("flask")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"[web]\nlisten = '127.0.0.1:{taken.getsockname()[1]}'\n")
        base = ["--config", str(cfg), "--model", str(TOY_BUNDLE)]
        for argv in (base + ["--validate-config"], base + ["--images", str(frames), "--max-frames", "1"]):
            assert main(argv) == EXIT_CONFIG, argv
            assert "cannot listen" in capsys.readouterr().err
    cfg.write_text("[web]\nlisten = '127.0.0.1:0'\n")
    assert main(["--config", str(cfg), "--model", str(TOY_BUNDLE), "--validate-config"]) == 0
    assert "live view: 127.0.0.1:0" in capsys.readouterr().out


def test_a_bad_file_value_a_flag_replaces_is_still_an_error(tmp_path, capsys):
    """-q replaces [log] level for the run; a misspelt level in the file would fail once -q is dropped."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n[log]\nlevel = 'LOUD'\n")
    assert main(["--config", str(cfg), "-q", "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "[log] level" in err and "a command-line flag replaces it" in err
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n[log]\nlevel = 'error'\n")
    assert main(["--config", str(cfg), "-q", "--validate-config"]) == 0


@pytest.mark.parametrize("toml, flags, key", [
    ("[outputs]\nchannels = 0\n", ["--channels", "2"], "[outputs] channels"),
    ("[outputs]\nkind = 'gpoi'\npins = [17]\n", ["--output", "dryrun"], "[outputs] kind"),
], ids=["outputs-key", "outputs-kind"])
def test_a_bad_outputs_value_a_flag_replaces_is_still_an_error(toml, flags, key, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n" + toml)
    assert main(["--config", str(cfg), *flags, "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert key in err and "a command-line flag replaces it" in err, err


def test_checking_the_replaced_values_repeats_no_warning(tmp_path, caplog):
    """The file is validated twice (merged, then alone): its warnings are given once, for the config in force."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[model]\nbundle = '{TOY_BUNDLE}'\n[outputs]\npins = [17]\n")
    from edge.config import load_config

    with caplog.at_level("WARNING"):
        load_config(cfg, {"log": {"level": "WARNING"}})
    assert [r.getMessage() for r in caplog.records].count(
        "config: [outputs] pins do not apply to kind 'dryrun'; ignored") == 1


def test_version_names_the_runtime(capsys):
    assert main(["--version"]) == 0
    assert "ai_edge_litert" in capsys.readouterr().out


def test_serial_controller_follows_weed_frames(frames):
    """edge-run talking the line protocol over a real pty to the reference controller."""
    from tests.edge.test_serial_protocol import ControllerPeer

    peer = ControllerPeer(channels=2)
    changes = []
    peer.ctl._on_change = lambda ch, on: changes.append((ch, on))
    try:
        rc = main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--output", "serial", "--serial-port", peer.path,
                   "-q"])
        assert rc == 0
        assert peer.ctl.pins == [False, False]  # all off at exit
        cmds = peer.commands()
    finally:
        peer.close()
    assert cmds[:2] == ["HELLO", "ALLOFF"] and cmds[-1] == "ALLOFF"
    ch0 = [on for ch, on in changes if ch == 0]
    # on at each run of weed frames, off at each run of soil frames after one
    expected = _changes([c == "W" for c in SCRIPT])
    assert ch0 == (expected if expected[0] else expected[1:]) + ([] if not expected[-1] else [False])


# -- flags -> config keys (edge.cli.FLAG_KEYS) ----------------------------------------------
RUN_FLAGS = {"help", "config", "version", "validate_config", "list_models", "test_outputs", "pulse_ms", "all_off",
             "measure_valve_lag", "lag_pulses_ms", "repeats", "gap_ms", "lag_log", "yes", "max_frames"}


def test_every_flag_is_a_run_flag_or_in_the_one_table():
    from edge.cli import FLAG_KEYS, build_parser

    dests = [dest for dest, _section, _key in FLAG_KEYS]
    assert len(dests) == len(set(dests))
    assert {a.dest for a in build_parser()._actions} == RUN_FLAGS | set(dests)


def test_every_plain_row_names_a_config_key():
    from edge.cli import FLAG_KEYS
    from edge.config import Config
    from edge.outputs.config import OUTPUT_KEYS

    for dest, section, key in FLAG_KEYS:
        fields = OUTPUT_KEYS if section == "outputs" else Config.model_fields[section].annotation.model_fields
        assert not isinstance(key, str) or key in fields, dest


@pytest.mark.parametrize(
    "argv, overrides",
    [
        ([], {}),
        (["--camera", "0"], {"source": {"kind": "camera", "camera": 0}}),
        (["--picamera", "--width", "320"], {"source": {"kind": "picamera", "width": 320}}),
        (["--video", "v.avi", "--realtime"], {"source": {"kind": "video", "path": "v.avi", "realtime": True}}),
        (["--stream", "rtsp://cam/1"], {"source": {"kind": "stream", "url": "rtsp://cam/1"}}),
        (["--debounce", "2of3", "--hold-ms", "0"], {"decision": {"debounce_n": 2, "debounce_m": 3, "min_hold_ms": 0}}),
        (["--output", "gpio", "--pins", "17,27", "--active-low"],
         {"outputs": {"kind": "gpio", "pins": [17, 27], "active_high": False}}),
        (["--serial-port", "loop://", "--max-on", "3"], {"outputs": {"port": "loop://"}, "safety": {"max_spray_s": 3}}),
        (["--threads", "0", "--weed-labels", ""], {"model": {"threads": 0}, "decision": {"weed_labels": []}}),
        (["-q"], {"log": {"level": "WARNING"}}),
        (["-q", "-v", "--print"], {"log": {"level": "DEBUG", "print_frames": True}}),  # -v wins over -q
        (["--max-frames", "3", "--yes"], {}),  # run flags set no config key
        (["--web", "0.0.0.0:8080"], {"web": {"listen": "0.0.0.0:8080"}}),
    ],
)
def test_flags_set_their_config_keys(argv, overrides):
    from edge.cli import build_parser, overrides_from_args

    assert overrides_from_args(build_parser().parse_args(argv)) == overrides


@pytest.mark.parametrize(
    "fifo, code, words",
    [
        ("config.toml", EXIT_CONFIG, "config.toml is a FIFO (named pipe), not a regular file"),
        ("colour-toy/model.tflite", EXIT_BUNDLE, "model.tflite is a FIFO (named pipe), not a regular file"),
    ],
)
def test_a_fifo_as_config_or_model_is_named_and_never_opened(toy_bundle, tmp_path, fifo, code, words):
    """A real edge-run: opening a FIFO would block it forever (the timeout fails the test instead)."""
    path = tmp_path / fifo
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    argv = ["--model", str(toy_bundle), "--validate-config"] + (["--config", str(path)] if code == EXIT_CONFIG else [])
    proc = subprocess.run([sys.executable, "-m", "edge.cli", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
