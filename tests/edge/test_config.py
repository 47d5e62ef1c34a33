import argparse
import itertools
import json
import logging
import math
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from edge.cli import FLAG_KEYS, build_parser, main, overrides_from_args
from edge.config import load_config
from edge.core.errors import EXIT_CONFIG, ConfigError
from tests.conftest import TOY_BUNDLE


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_are_safe():
    c = load_config()
    assert c.outputs.kind == "dryrun" and c.source.kind == "camera"
    assert c.safety.stall_timeout_s > 0 and c.safety.max_spray_s > 0


EXAMPLE = Path(__file__).parents[2] / "deploy" / "config.example.toml"


def test_example_config_is_valid(caplog):
    from edge.outputs import DryRunOutputConfig

    with caplog.at_level(logging.WARNING):
        c = load_config(EXAMPLE)
    assert c.outputs.kind in ("dryrun", "gpio", "serial", "jetson")
    # kind = "dryrun" beside the keys of the other kinds: those are named and ignored, not an error
    assert isinstance(c.outputs, DryRunOutputConfig) and c.outputs.max_on_s == 2.0
    assert ("[outputs] pins, active_high, baud, heartbeat_s, ack_timeout_s, retries, acks do not apply to kind "
            "'dryrun'; ignored") in caplog.text


@pytest.mark.parametrize(
    "text, words",
    [
        ("[outputs]\npinz = [17]\n", "[outputs] pinz: unknown key"),
        ("[outputs]\nkind = 'gpio'\npins = [17]\npinz = [17]\n", "[outputs] pinz: unknown key"),
        ("[outputs]\nkind = 'serial'\nport = 'loop://'\nbaudrate = 9600\n", "[outputs] baudrate: unknown key"),
        ("[output]\nkind = 'gpio'\n", "output: unknown key"),
        ("[outputs]\nkind = 'gpio'\n", "pins is required"),
        ("[outputs]\nkind = 'relay'\n", "[outputs] kind"),
        ("[outputs]\nkind = 'serial'\n", "port is required"),
        ("[outputs]\nkind = 'serial'\nport = 'socket://127.0.0.1:99999'\n", "needs HOST:PORT with a port of 1-65535"),
        ("[outputs]\nkind = 'serial'\nport = 'socket://nohost'\n", "a socket:// URL needs HOST:PORT"),
        ("[outputs]\nkind = 'serial'\nport = 'rfc2217://:2217'\n", "a rfc2217:// URL needs HOST:PORT"),
        ("[outputs]\nkind='gpio'\npins = [17, 17]\n", "a pin twice"),
        ("[decision]\nthreshold = 2\n", "[decision] threshold"),
        ("[decision]\ndebounce_n = 3\ndebounce_m = 2\n", "must not exceed"),
        ("[source]\nkind = 'video'\n", "needs path"),
        ("[model]\nthreads = 0\n", "[model] threads"),
        ("this is = = not toml", "not valid TOML"),
        ("[safety]\nstall_timeout_s = inf\n", "[safety] stall_timeout_s: Input should be a finite number"),
        ("[safety]\nstall_timeout_s = 1e-9\n", "[safety] stall_timeout_s: Input should be greater than or equal to 0.05"),
        ("[source]\nkind = 'images'\npath = 'x'\nrealtime = true\nfps = 1e-300\n", "[source] fps"),
        ("[spray]\nlanes = 2\nlane_channels = [0, 100000]\nfootprint_across_cm = 100\nfootprint_along_cm = 40\n"
         "nozzle_distance_cm = 100\nspeed_kmh = 6\n", "[spray] lane_channels.1: Input should be less than or equal to 63"),
        ("[outputs]\nkind = 'serial'\nport = 'loop://'\nbaud = 1000000000000\n", "[outputs] baud"),
        ("[model]\nbundle = " + "[" * 50 + "]" * 50 + "\n", "[model] bundle: Input should be a valid string"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nests arrays or tables too deeply to read"),
        ("[model]\nthreads = " + "9" * 5000 + "\n", "holds a value Python cannot read (Exceeds the limit"),
        ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "nests arrays or tables too deeply to read"),
        ("[model]\n\"x\\nERROR edge: FAKE\" = 1\n", "[model] x\nERROR edge: FAKE: unknown key"),
        # a value of the wrong type is refused, not converted (crop_veto = false was a veto at 0.00: nothing sprayed)
        ("[decision]\ncrop_veto = false\n", '[decision] crop_veto: a crop probability (0..1) or "none"'),
        ("[decision]\ncrop_veto = true\n", '[decision] crop_veto: a crop probability (0..1) or "none"'),
        ("[decision]\nthreshold = '0.5'\n", "[decision] threshold: Input should be a valid number"),
        ("[gate]\nenabled = 'yes'\n", "[gate] enabled: Input should be a valid boolean"),
        ("[source]\nkind = 'video'\npath = 'x.avi'\nrealtime = 1\n", "[source] realtime: Input should be a valid boolean"),
        ("[model]\nthreads = 2.0\n", "[model] threads: Input should be a valid integer"),
        ("[outputs]\nkind = 'gpio'\npins = [true]\n", "[outputs] pins.0: Input should be a valid integer"),
        ("[outputs]\nkind = 'gpio'\npins = ['17']\n", "[outputs] pins.0: Input should be a valid integer"),
        ("[spray]\nlanes = true\nfootprint_across_cm = 100\nfootprint_along_cm = 40\nnozzle_distance_cm = 100\n"
         "speed_kmh = 6\n", "[spray] lanes: Input should be a valid integer"),
        ("[spray]\nlanes = '4'\nfootprint_across_cm = 100\nfootprint_along_cm = 40\nnozzle_distance_cm = 100\n"
         "speed_kmh = 6\n", "[spray] lanes: Input should be a valid integer"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert words in str(e.value)
    assert e.value.exit_code == EXIT_CONFIG


PATH_KEYS = [("log", None, "jsonl"), ("log", None, "save_triggers"), ("service", None, "state_dir"),
             ("source", None, "path"), ("source", None, "url"), ("model", None, "bundle"),
             ("labelling", None, "dataset"), ("labelling", None, "frames"), ("web", None, "token_file"),
             ("spray", None, "gps_port"), ("spray", None, "log_jsonl"), ("outputs", "dryrun", "state_file"),
             ("outputs", "serial", "port")]


@pytest.mark.parametrize("section, kind, key", PATH_KEYS, ids=[f"{s}.{k}" for s, _, k in PATH_KEYS])
def test_a_path_holding_a_nul_byte_is_exit_3_naming_the_key(section, kind, key, tmp_path, capsys):
    """No system call takes a NUL byte: it was a traceback (exit 1) where the file was opened."""
    table = {**BASE.get(kind or section, {}), **({"kind": kind} if kind else {}), key: "a\x00b"}
    text = f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
    assert main(["--config", str(write(tmp_path, text)), "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"[{section}] {key}: holds a NUL byte" in err, err


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d, "is a folder, not a regular file"),
        (lambda d: Path("/dev/urandom"), "is a character device, not a regular file"),
        (lambda d: Path("/dev/null"), "is a character device, not a regular file"),
        (lambda d: (d / "big.toml", (d / "big.toml").write_text("#" * 1_000_001))[0],
         "is 1,000,001 bytes, more than the 1,000,000 bytes"),
        (lambda d: (d / "bin.toml", (d / "bin.toml").write_bytes(b"\xff\xfe[model]"))[0], "save it as UTF-8 text"),
    ],
)
def test_a_config_that_is_not_a_small_text_file_is_refused_before_it_is_read(tmp_path, capsys, make, words):
    """--config /dev/urandom would read forever, a folder was 'cannot be read (Is a directory)'."""
    assert main(["--config", str(make(tmp_path)), "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("edge-run: error: config file ") and words in err and err.count("\n") == 1, err


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_max_frames_below_one_is_a_usage_error(value, capsys):
    """--max-frames 0 or -1 used to process a frame and exit 0."""
    with pytest.raises(SystemExit) as e:
        main(["--model", str(TOY_BUNDLE), "--images", ".", f"--max-frames={value}"])
    assert e.value.code == 2
    assert "--max-frames: expected a whole number of frames of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag, what", [("--video", "a video file"), ("--images", "a folder of images"),
                                        ("--stream", "a stream URL"), ("--config", "a config file"),
                                        ("--model", "a bundle folder or name"), ("--variant", "an export name"),
                                        ("--serial-port", "a serial device"), ("--state-file", "a file path"),
                                        ("--log-jsonl", "a file path"), ("--save-triggers", "a folder"),
                                        ("--lag-log", "a file path"), ("--web", "a port or HOST:PORT")])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_source_is_a_usage_error(flag, what, value, capsys):
    """--video "$UNSET" used to run the config's source: by default the live camera, with the real outputs;
    --config "$UNSET" --all-off the built-in dry-run defaults (exit 0, no real valve switched off)."""
    with pytest.raises(SystemExit) as e:
        main(["--model", str(TOY_BUNDLE), f"{flag}={value}", "--validate-config"])
    assert e.value.code == 2 and f"{flag}: expected {what}" in capsys.readouterr().err


@pytest.mark.parametrize("modes", [["--validate-config", "--test-outputs"], ["--all-off", "--test-outputs"],
                                   ["--list-models", "--version"], ["--all-off", "--measure-valve-lag", "0"],
                                   ["--measure-valve-lag", "0", "--validate-config"]])
def test_two_modes_at_once_are_a_usage_error(modes, capsys):
    """--all-off --test-outputs used to only switch off, silently."""
    with pytest.raises(SystemExit) as e:
        main(modes)
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_byte_order_mark_and_a_lower_case_log_level_are_read(tmp_path):
    """What a Windows editor saves (a UTF-8 byte-order mark) and [log] level = "debug" are accepted as meant."""
    p = tmp_path / "bom.toml"
    p.write_bytes("\ufeff[log]\nlevel = 'debug'\n".encode("utf-8"))
    assert load_config(p).log.level == "DEBUG"


def test_flags_override_file(tmp_path):
    p = write(tmp_path, "[outputs]\nkind = 'gpio'\npins = [17]\n[model]\nthreads = 4\n[source]\nkind='camera'\ncamera=1\n")
    args = build_parser().parse_args(["--pins", "5,6", "--active-low", "--images", "x", "--debounce", "2/3", "--threshold", "0.7"])
    c = load_config(p, overrides_from_args(args))
    assert tuple(c.outputs.pins) == (5, 6) and c.outputs.active_high is False and c.outputs.kind == "gpio"
    assert c.model.threads == 4
    assert c.source.kind == "images" and c.source.path == "x"
    assert (c.decision.debounce_n, c.decision.debounce_m, c.decision.threshold) == (2, 3, 0.7)
    

@pytest.mark.parametrize(
    "table, own, other",
    [
        ({}, "channels, kind, max_on_s, pin_numbering, state_file", "pins"),
        ({"kind": "gpio", "pins": [17]}, "active_high, channels, kind, max_on_s, pin_numbering, pins", "port"),
        ({"kind": "jetson", "pins": [29]}, "active_high, channels, kind, max_on_s, pin_numbering, pins", "baud"),
        ({"kind": "serial", "port": "loop://"}, "ack_timeout_s, acks, baud, channels, heartbeat_s, kind, max_on_s, "
         "pin_numbering, port, retries", "state_file"),
    ],
)
def test_a_truly_unknown_output_key_is_an_error_naming_it_and_the_valid_keys(table, own, other):
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"outputs": {**table, "bogus": 1, "pins": [17], "baud": 9600}})
    assert "[outputs] bogus: unknown key" in str(e.value)
    assert e.value.fix.startswith(f"check the spelling; valid keys here: {own} (other output kinds also take: ")
    assert other in e.value.fix.split("also take: ")[1]


def test_enable_pin_clash_is_checked_for_the_pin_kinds_only():
    clash = {"safety": {"enable_pin": 17}}
    for kind in ("gpio", "jetson"):
        with pytest.raises(ConfigError, match="enable_pin 17 is also an output pin"):
            load_config(overrides={**clash, "outputs": {"kind": kind, "pins": [17]}})
    c = load_config(overrides={**clash, "outputs": {"kind": "serial", "port": "loop://", "pins": [17]}})
    assert c.safety.enable_pin == 17  # serial ignores pins (with a warning): no clash


def test_stage_config_modules_do_not_import_edge_config():
    """Data flows one way: edge.config assembles the stages' sections, never the reverse."""
    code = ("import sys, edge.inference.config, edge.sources.config, edge.decide.config, edge.outputs.config, "
            "edge.loop.config, edge.service.config, edge.spray.config; "
            "assert 'edge.config' not in sys.modules, 'a stage config imports edge.config'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_sections_are_the_stages_own():
    from edge.config import Config
    from edge.decide.config import DecisionConfig
    from edge.inference.config import ModelConfig
    from edge.loop.config import SafetyConfig
    from edge.service.config import LogConfig, ServiceConfig
    from edge.sources.config import SourceConfig
    from edge.spray.config import SprayConfig

    c = load_config()
    assert [type(getattr(c, k)) for k in ("model", "source", "decision", "safety", "log", "service")] == [
        ModelConfig, SourceConfig, DecisionConfig, SafetyConfig, LogConfig, ServiceConfig]
    assert c.spray is None and Config.model_fields["spray"].annotation == SprayConfig | None


# -- every number finite and in its documented range (edge.core.schema) ---------------------------
def _sections():
    """(section, kind, model) for every table of the config; [outputs] once per kind, for the keys it adds."""
    from edge.config import Config
    from edge.outputs.config import OUTPUT_TYPES, OutputConfigBase, PinOutputConfig

    for name, f in Config.model_fields.items():
        if name != "outputs":
            yield name, None, f.annotation if name != "spray" else Config.model_fields["spray"].annotation.__args__[0]
    seen = set()
    for kind, model in OUTPUT_TYPES.items():
        owner = {k: ("dryrun" if k in OutputConfigBase.model_fields else
                     "gpio" if k in PinOutputConfig.model_fields else kind) for k in model.model_fields}
        fields = {k for k, o in owner.items() if o == kind and k not in seen}
        seen |= fields
        yield "outputs", kind, type(kind, (), {"model_fields": {k: model.model_fields[k] for k in fields}})


def _bounds(metadata):
    lo = hi = None
    for m in metadata:
        lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
    return lo, hi


def _numeric(annotation):
    """(number type, item annotation or None, is a list) of a field's annotation; None: not a number."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        inner = _numeric(args[0])
        return (inner[0], args[0], True) if inner else None
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _numeric(args[0])
    if origin is typing.Annotated:
        return (args[0], annotation, False) if args[0] in (int, float) else None
    return (annotation, None, False) if annotation in (int, float) else None


def numeric_keys():
    """Every numeric key of every section: (section, kind, key, type, lo, hi, is_list, field)."""
    for section, kind, model in _sections():
        for key, f in model.model_fields.items():
            num = _numeric(f.annotation)
            if num is None:
                continue
            typ, inner, is_list = num
            meta = [*f.metadata, *(m for fi in typing.get_args(inner)[1:] for m in fi.metadata)]
            yield section, kind, key, typ, *_bounds(meta), is_list, f


NUMERIC = list(numeric_keys())
# A valid table around a key: the keys a section or an output kind needs
BASE = {
    "spray": {"footprint_across_cm": 100, "footprint_along_cm": 40, "nozzle_distance_cm": 100, "speed_kmh": 6},
    "gpio": {"kind": "gpio", "pins": [17]},
    "serial": {"kind": "serial", "port": "loop://"},
}


def _toml(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return repr(v)


def _just_outside(typ, lo, hi):
    """The numbers just below and just above the range (a missing end fails the documented-range test)."""
    step = (lambda b: 1) if typ is int else (lambda b: max(abs(b) * 1e-3, 1e-3))
    return [*([lo - step(lo)] if lo is not None else []), *([hi + step(hi)] if hi is not None else [])]


BAD_NUMBERS = [(s, k, key, v) for s, k, key, typ, lo, hi, _l, _f in NUMERIC
               for v in [math.inf, -math.inf, math.nan, 1e300, -1e300, *_just_outside(typ, lo, hi)]]


def test_the_table_finds_the_numeric_keys():
    keys = {(s, key) for s, _k, key, *_ in NUMERIC}
    assert {("safety", "stall_timeout_s"), ("outputs", "baud"), ("outputs", "pins"), ("spray", "lane_channels"),
            ("spray", "margin_before_cm"), ("source", "fps"), ("decision", "threshold")} <= keys
    assert len(keys) == len(NUMERIC) > 40


@pytest.mark.parametrize("section, kind, key, typ, lo, hi, is_list, field", NUMERIC,
                         ids=[f"{s}.{key}" for s, _k, key, *_ in NUMERIC])
def test_every_numeric_key_has_a_documented_range(section, kind, key, typ, lo, hi, is_list, field):
    """Both ends set in the schema, floats finite, the range written beside the key in the example."""
    assert lo is not None and hi is not None, f"[{section}] {key} needs ge= and le= (edge.core.schema)"
    if typ is float:
        adapter = TypeAdapter(typing.Annotated[field.annotation, field])
        with pytest.raises(ValidationError, match="finite"):
            adapter.validate_python([math.inf] if is_list else math.inf)
    for end in (lo, hi):  # the ends themselves are in range
        value = typ(end)
        TypeAdapter(typing.Annotated[field.annotation, field]).validate_python([value] if is_list else value)
    fmt = "{:g}".format
    text = f"{fmt(lo) if lo != int(lo) else int(lo)}..{fmt(hi) if hi != int(hi) else int(hi)}"
    assert text in _example_entry(section, key), f"[{section}] {key}: write ({text}) beside it in {EXAMPLE.name}"


def _example_entry(section: str, key: str) -> str:
    """The example's line for ``[section] key`` (set or commented out) and the comment lines under it."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^#? ?\[{section}\]\s*$", ln))
    for i in range(start + 1, len(lines)):
        if re.match(r"^#? ?\[", lines[i]):
            break
        if re.match(rf"^#? ?{key} *=", lines[i]):
            entry = [lines[i]]
            entry += itertools.takewhile(lambda ln: re.match(r"^ +#", ln), lines[i + 1:])
            return "\n".join(entry)
    raise AssertionError(f"[{section}] {key} is not in {EXAMPLE.name}")


@pytest.mark.parametrize("section, kind, key, value", BAD_NUMBERS,
                         ids=[f"{s}.{key}={v!r}" for s, _k, key, v in BAD_NUMBERS])
def test_a_number_out_of_range_is_exit_3_naming_the_key(section, kind, key, value, tmp_path, capsys):
    table = {**BASE.get(kind or section, {}), key: value}
    if key in ("pins", "lane_channels", "lane_widths_cm"):
        table[key] = [value]
    text = f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
    assert main(["--config", str(write(tmp_path, text)), "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge-run: error: config ") and " — " in err, err
    assert f"[{section}] {key}" in err, err


# The flags that set a numeric key (edge.cli.FLAG_KEYS), with the table they need
NUMERIC_BY_KEY = {(s, key): (kind, typ, lo, hi) for s, kind, key, typ, lo, hi, *_ in NUMERIC}
FLAG_CASES = []
for _dest, _section, _key in FLAG_KEYS:
    if isinstance(_key, str) and (_section, _key) in NUMERIC_BY_KEY:
        _kind, _typ, _lo, _hi = NUMERIC_BY_KEY[(_section, _key)]
        _flag = next(a.option_strings[0] for a in build_parser()._actions if a.dest == _dest)
        for _v in ["inf", "-inf", "nan", "1e300", "1000000000000", *map(repr, _just_outside(_typ, _lo, _hi))]:
            FLAG_CASES.append((_flag, _v, _section, _key, _kind))


@pytest.mark.parametrize("flag, value, section, key, kind", FLAG_CASES, ids=[f"{c[0]} {c[1]}" for c in FLAG_CASES])
def test_a_flag_out_of_range_is_refused_naming_the_key(flag, value, section, key, kind, capsys):
    """exit 3 naming the key the flag sets; a value that is not a number of the flag's type is a usage error (2)."""
    context = {"gpio": ["--output", "gpio"], "serial": ["--output", "serial", "--serial-port", "loop://"]}.get(kind, [])
    argv = ["--model", str(TOY_BUNDLE), "--images", ".", *context, f"{flag}={value}", "--validate-config"]
    action = next(a for a in build_parser()._actions if flag in a.option_strings)
    try:
        action.type(value)
    except (ValueError, argparse.ArgumentTypeError):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and flag in capsys.readouterr().err
        return
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"[{section}] {key}" in err, err


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--camera=-1", "[source] camera"),
        ("--camera=1024", "[source] camera"),
        ("--debounce=0/1", "[decision] debounce_n"),
        ("--debounce=101/101", "[decision] debounce_n"),
        ("--pins=17,256", "[outputs] pins.1"),
    ],
)
def test_the_flags_with_converters_are_range_checked_too(flag, words, capsys):
    """Flags that set their keys through a converter (FLAG_KEYS rows that are not a plain key)."""
    context = ["--output", "gpio"] if flag.startswith("--pins") else []
    assert main(["--model", str(TOY_BUNDLE), *context, flag, "--validate-config"]) == EXIT_CONFIG
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("value", [",", "", "fast"])
def test_lag_pulses_that_name_no_pulse_are_a_usage_error(value, capsys):
    """'--lag-pulses-ms ,' used to measure the default pulses instead, silently."""
    with pytest.raises(SystemExit) as e:
        main(["--measure-valve-lag", "0", f"--lag-pulses-ms={value}", "--yes"])
    assert e.value.code == 2 and "give milliseconds like 20,50,100,200" in capsys.readouterr().err
