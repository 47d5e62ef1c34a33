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


def test_example_config_is_valid():
    from pathlib import Path

    c = load_config(Path(__file__).parents[2] / "deploy" / "config.example.toml")
    assert c.outputs.kind in ("dryrun", "gpio", "serial", "jetson")


@pytest.mark.parametrize(
    "text, words",
    [
        ("[outputs]\npinz = [17]\n", "[outputs] pinz: unknown key"),
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
    