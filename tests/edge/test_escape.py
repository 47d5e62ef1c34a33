"""No input forges a line: file names, bundle names, labels and config keys are escaped by the one
escaping function (edge.core.text.one_line) in every log line, the --print line and the error line."""

import logging
import os
import subprocess
import sys

import cv2
import pytest

from edge.cli import main
from edge.core.errors import EXIT_CONFIG, EXIT_SOURCE
from edge.core.text import OneLineFormatter, one_line
from tests.conftest import BROWN, GREEN, TOY_BUNDLE, solid


@pytest.mark.parametrize(
    "text, shown",
    [
        ("field-01.png", "field-01.png"),
        ("é 😀 a  b", "é 😀 a  b"),  # printable text and spaces stay as they are
        ("x\nERROR edge: FAKE", "x\\nERROR edge: FAKE"),
        ("a\r\tb", "a\\r\\tb"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),  # terminal escapes
        ("\x00\x7f\x85", "\\x00\\x7f\\x85"),  # NUL, DEL, a C1 control (NEL)
        ("a\u2028b\u202e", "a\\u2028b\\u202e"),  # line separator, right-to-left override
        (os.fsdecode(b"y\xff.png"), "y\\xff.png"),  # a byte that is not UTF-8, as Python reads it from a file name
    ],
)
def test_one_line_escapes_what_is_not_printable(text, shown):
    assert one_line(text) == shown
    assert one_line(text).isprintable()
    one_line(text).encode("utf-8", "strict")  # printable on a strict UTF-8 stream


def test_the_log_formatter_escapes_the_message_and_keeps_a_traceback():
    fmt = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    rec = logging.LogRecord("edge.sources", logging.WARNING, __file__, 1, "skipping %s: %s", ("x\nERROR edge: FAKE",
                            "cannot be decoded"), None)
    assert fmt.format(rec) == "WARNING edge.sources: skipping x\\nERROR edge: FAKE: cannot be decoded"
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("edge", logging.ERROR, __file__, 1, "internal error in %s", ("a\nb",), sys.exc_info())
    lines = fmt.format(rec).splitlines()
    assert lines[0] == "ERROR edge: internal error in a\\nb" and lines[1].startswith("Traceback")


def _write_image(folder: bytes, name: bytes, image=None, data: bytes | None = None) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if data is not None else cv2.imencode(".png", image)[1].tobytes())


def test_odd_file_names_print_escaped_under_a_strict_utf8_stdout(tmp_path):
    """A real edge-run with --print on photos named with a newline, a non-UTF-8 byte and a terminal escape:
    exit 0, every name escaped on its line, no forged line, no traceback (UnicodeEncodeError before)."""
    folder = os.fsencode(tmp_path / "photos")
    os.mkdir(folder)
    _write_image(folder, b"a_x\nERROR edge: FAKE.png", solid(GREEN))
    _write_image(folder, b"b_y\xff.png", solid(BROWN))
    _write_image(folder, b"c_z\x1b[31m.png", data=b"not a png")  # skipped with a warning naming it
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "--model", str(TOY_BUNDLE), "--images", os.fsdecode(folder),
                           "--print", "--threads", "1"], capture_output=True, env=env, timeout=120)
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "\x1b" not in out + err
    frames = [ln for ln in out.splitlines() if ln.startswith("frame ")]
    assert len(frames) == 2
    assert "a_x\\nERROR edge: FAKE.png" in frames[0] and "SPRAY" in frames[0]
    assert "b_y\\xff.png" in frames[1]
    assert not any(ln.startswith("ERROR edge: FAKE") for ln in (out + err).splitlines())
    assert "skipping c_z\\x1b[31m.png: its header is not" in err  # not decoded: its size cannot be checked


@pytest.mark.parametrize(
    "argv, code, shown",
    [
        (["--config", "CONFIG", "--validate-config"], EXIT_CONFIG, "[model] x\\nERROR edge: FAKE: unknown key"),
        (["--images", "/no/such\nERROR edge: FAKE"], EXIT_SOURCE, "/no/such\\nERROR edge: FAKE does not exist"),
    ],
)
def test_the_error_line_is_one_escaped_line(tmp_path, capsys, argv, code, shown):
    config = tmp_path / "c.toml"
    config.write_text('[model]\n"x\\nERROR edge: FAKE" = 1\n')
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    assert main(["--model", str(TOY_BUNDLE), "-q", *argv]) == code
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("edge-run: error: ")]
    assert len(errors) == 1 and shown in errors[0], err
    assert not any(ln.startswith("ERROR edge: FAKE") for ln in err.splitlines())
