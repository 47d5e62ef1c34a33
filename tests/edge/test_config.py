import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import build_parser, overrides_from_args
from edge.config import load_config
from edge.core.errors import EXIT_CONFIG, ConfigError


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
        ("[outputs]\nkind='gpio'\npins = [17, 17]\n", "a pin twice"),
        ("[decision]\nthreshold = 2\n", "[decision] threshold"),
        ("[decision]\ndebounce_n = 3\ndebounce_m = 2\n", "must not exceed"),
        ("[source]\nkind = 'video'\n", "needs path"),
        ("[model]\nthreads = 0\n", "[model] threads"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert words in str(e.value)
    assert e.value.exit_code == EXIT_CONFIG


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


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
