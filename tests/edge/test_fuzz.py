"""Bad input, fuzzed with hypothesis: random bytes as images, random TOML configs, random
manifests, random serial replies, random spray-log and ground-truth lines for edge-replay. Nothing may escape but the
user-facing errors of edge/core/errors.py (one clear line with a fix); edge-run itself never prints a traceback.
Configs and manifests get nested structures, non-finite and huge numbers and control
characters; what loads has finite numbers only (and a manifest's files are in its folder)."""

import json
import math
import shutil
import string
import tempfile
import threading
from pathlib import Path

import cv2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.inference.bundle import load_bundle
from edge.cli import main, one_line
from edge.config import load_config
from edge.core.errors import BundleError, ConfigError, OutputError, SourceError, WeedDetectorError
from edge.outputs import serial_protocol as proto
from edge.outputs.serial_out import SerialOutput
from edge.sources.images import ImageFolderSource
from tests.conftest import GREEN, TOY_BUNDLE, solid

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_JPEG = cv2.imencode(".jpg", solid(GREEN, 24, 32))[1].tobytes()
_PNG = cv2.imencode(".png", solid(GREEN, 24, 32))[1].tobytes()


def _one_line(err: WeedDetectorError) -> None:
    """What edge-run prints for the error is one line with the fix, and a documented exit code."""
    text = one_line(str(err))
    assert text and text.isprintable() and "Traceback" not in text
    assert err.exit_code > 1 and err.what


# -- images ------------------------------------------------------------------------------
image_bytes = st.one_of(
    st.binary(max_size=300),
    # real headers with damage: truncated, or bytes flipped inside the compressed data
    st.tuples(st.sampled_from([_JPEG, _PNG]), st.integers(0, 400), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]):]),
    st.tuples(st.sampled_from([_JPEG, _PNG]), st.integers(1, 200)).map(lambda t: t[0][: t[1]]),
)


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from([".jpg", ".png", ".bmp", ".txt", ""]), image_bytes), max_size=4))
def test_random_bytes_in_an_images_folder(files):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        cv2.imwrite(str(folder / "zz_good.png"), solid(GREEN, 24, 32))  # one readable image
        for i, (ext, data) in enumerate(files):
            (folder / f"f{i}{ext}").write_bytes(data)
        try:
            with ImageFolderSource(folder) as src:
                frames = []
                while (frame := src.read(timeout=1.0)) is not None:
                    frames.append(frame)
        except SourceError as e:
            _one_line(e)
            return
        assert frames, "the good image must come through"
        assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)


def test_edge_run_on_a_folder_of_garbage_is_one_clear_line(tmp_path, capsys):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(bytes(range(256)) * (i + 1))
    rc = main(["--model", str(TOY_BUNDLE), "--images", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == 0 or (rc == SourceError.exit_code and err.count("edge-run: error:") == 1), err
    assert "Traceback" not in err


# -- configs ----------------------------------------------------------------------------
SECTIONS = ["model", "source", "decision", "outputs", "safety", "log", "service", "spray", "nonsense"]
KEYS = ["bundle", "threads", "kind", "camera", "path", "fps", "threshold", "weed_labels", "debounce_n",
        "debounce_m", "pins", "port", "channels", "active_high", "max_on_s", "stall_timeout_s", "max_spray_s",
        "level", "jsonl", "sample_rate", "acks", "heartbeat_s", "pinz", "baud", "min_hold_ms", "give_up_s",
        "log_max_mb", "lanes", "lane_channels", "lane_widths_cm", "footprint_across_cm", "nozzle_distance_cm",
        "speed_kmh", '"x\\nERROR edge: FAKE"', '"\\u001b[2J"']
toml_scalar = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["1e300", "-1e300", "1e-300", "1000000000000", "99999999999999999999"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # inf, -inf, nan are TOML too
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(alphabet=string.ascii_letters + string.digits + " ./:_-", max_size=12).map(json.dumps),
    st.text(max_size=8).map(json.dumps),  # control characters, as TOML escapes
    st.sampled_from(['"camera"', '"video"', '"serial"', '"gpio"', '"dryrun"', '"DEBUG"', '"loop://"']),
)
toml_value = st.one_of(
    toml_scalar,
    st.recursive(toml_scalar, lambda inner: st.one_of(  # nested arrays and inline tables
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=2, unique_by=lambda kv: kv[0]).map(
            lambda kvs: "{" + ", ".join(f"{k} = {v}" for k, v in kvs) + "}")), max_leaves=6),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),  # nested past what the parser can follow
)


def _finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@st.composite
def toml_documents(draw):
    lines = []
    for section in draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=4)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=4)):
            lines.append(f"{key} = {draw(toml_value)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(toml_documents(), st.text(max_size=200), st.binary(max_size=100)))
def test_random_configs_load_or_fail_with_a_config_error(text, tmp_path):
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(path)
    except ConfigError as e:
        _one_line(e)
        assert str(path) in str(e)
        return
    assert _finite_numbers(cfg.model_dump())


def test_validate_config_on_garbage_is_exit_3(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\x00\xff[[[ = =")
    assert main(["--config", str(path), "--validate-config"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("edge-run: error: config file") and "Traceback" not in err


# -- manifests --------------------------------------------------------------------------
_MANIFEST = json.loads((TOY_BUNDLE / "manifest.json").read_text())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats() | st.text(max_size=8)  # NaN, Infinity
    | st.sampled_from(["0.4", "1", "true", "../model.tflite", "/etc/passwd", "sub/../../x", "x\nERROR edge: FAKE",
                       "\x1b[2J", 10**300, 1e300]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
DEEP = "__deep__"  # a value replaced by arrays nested n deep in the JSON text (json.dumps cannot write them)


def _set_path(doc, path, value):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _paths(doc, prefix=()):
    for key, value in doc.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


MANIFEST_PATHS = list(_paths(_MANIFEST))


@st.composite
def manifests(draw):
    kind = draw(st.sampled_from(["mutate", "delete", "extra", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    doc = json.loads(json.dumps(_MANIFEST))
    path = draw(st.sampled_from(MANIFEST_PATHS))
    if kind == "mutate":
        _set_path(doc, path, draw(json_values))
    elif kind == "deep":
        _set_path(doc, path, DEEP)
        n = draw(st.integers(1, 100_000))
        return json.dumps(doc).replace(json.dumps(DEEP), "[" * n + "]" * n).encode()
    elif kind == "delete":
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    else:
        doc[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("fuzz") / "colour-toy"
    shutil.copytree(TOY_BUNDLE, dst)
    return dst


@FUZZ
@given(data=manifests())
def test_random_manifests_load_or_fail_with_a_bundle_error(data, bundle_copy):
    (bundle_copy / "manifest.json").write_bytes(data)
    try:
        b = load_bundle(bundle_copy)
    except BundleError as e:
        _one_line(e)
        return
    assert b.manifest.labels  # a mutation that still describes a valid bundle
    assert _finite_numbers(b.manifest.model_dump(exclude={"metrics", "training"}))
    assert all(x.isprintable() for x in (b.name, *b.manifest.labels))
    assert b.model_path.resolve().parent == bundle_copy.resolve()


# -- serial replies -----------------------------------------------------------------------
class ScriptedController:
    """A pyserial stand-in whose every reply is chosen by hypothesis for each line we send."""

    def __init__(self, choose):
        self.choose = choose
        self.timeout = 0.001
        self.rx = b""
        self.lock = threading.Lock()

    @property
    def in_waiting(self):
        return len(self.rx)

    def reset_input_buffer(self):
        self.rx = b""

    def write(self, data):
        for line in proto.LineSplitter().feed(data):
            msg = proto.decode(line)
            with self.lock:
                self.rx += self.choose(msg)
        return len(data)

    def read(self, n=1):
        with self.lock:
            data, self.rx = self.rx[:n], self.rx[n:]
        return data

    def close(self):
        pass


reply_kinds = st.sampled_from(["ack", "hello_ack", "nak", "garbage", "wrong_seq", "silence", "long"])


@st.composite
def reply_plans(draw):
    """A list of reply choices consumed one per command line; after it runs out: proper ACKs."""
    plan = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(reply_kinds)
        plan.append((kind, draw(st.lists(st.integers(0, 70000), max_size=5)), draw(st.sampled_from(proto.ERROR_CODES)),
                     draw(st.binary(max_size=30))))
    return plan


def _responder(plan):
    plan = list(plan)

    def choose(msg):
        if msg.cmd in proto.REPLIES:
            return b""
        if not plan:
            if msg.cmd == proto.HELLO:
                return proto.hello_ack(msg.seq, (1, 2, 1000, 10000))
            return proto.ack(msg.seq)
        kind, nums, code, junk = plan.pop(0)
        if kind == "ack":
            return proto.encode(msg.seq, proto.ACK, tuple(nums))
        if kind == "hello_ack":
            return proto.encode(msg.seq, proto.ACK, tuple(nums[:4]) or (1,))
        if kind == "nak":
            return proto.nak(msg.seq, code)
        if kind == "garbage":
            return junk + b"\n"
        if kind == "wrong_seq":
            return proto.ack((msg.seq + 1) % 65536)
        if kind == "long":
            return b"$WD," + b"9" * 100 + b"\n"
        return b""  # silence

    return choose


@settings(max_examples=60, deadline=None)
@given(plan=reply_plans(), actions=st.lists(st.tuples(st.integers(0, 1), st.booleans()), max_size=4))
def test_random_serial_replies_never_escape_as_anything_but_output_errors(plan, actions):
    link = ScriptedController(_responder(plan))
    try:
        out = SerialOutput("fuzz://", heartbeat_s=30.0, ack_timeout_s=0.005, retries=1, serial=link)
    except OutputError as e:
        _one_line(e)
        return
    try:
        for ch, on in actions:
            try:
                out.set(ch, on)
            except OutputError as e:
                _one_line(e)
        out.all_off()  # never raises
    finally:
        out.close()  # never raises for a silent or confused controller
    assert out.state() == (False,) * out.channels


# -- edge-replay's input files ---------------------------------------------------------------
# valid lines with one thing changed: a value replaced by anything JSON can hold (nested structures,
# NaN and Infinity, strings with control characters), a line replaced by such a value or by raw bytes
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)  # control characters included
any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=10,
)
_SPRAY = [{"event": "pass_start", "t_capture_ns": 0, "speed_kmh": 3.6, "t_mono_ns": 0},
          {"event": "speed", "t_capture_ns": 10**9, "speed_kmh": 1.8, "distance_cm": 100.0, "t_mono_ns": 10**9},
          {"event": "open", "channel": 0, "at_ns": 2 * 10**9, "t_mono_ns": 2 * 10**9},
          {"event": "close", "channel": 0, "at_ns": 3 * 10**9, "t_mono_ns": 3 * 10**9},
          {"event": "pass_end", "t_capture_ns": 4 * 10**9, "t_mono_ns": 4 * 10**9}]
_TRUTH = [{"lane": 0, "distance_cm": 110.0, "length_cm": 10.0, "kind": "weed"}, {"lane": 1, "time_s": 2.5}]


@st.composite
def jsonl_files(draw, lines):
    lines = [dict(x) for x in lines]
    i = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["value", "key", "line", "bytes", "cut"]))
    if kind == "value":
        lines[i][draw(st.sampled_from(sorted(lines[i])))] = draw(any_json)
    elif kind == "key":
        lines[i][draw(any_text)] = draw(any_json)
    elif kind == "line":
        lines[i] = draw(any_json)
    text = [json.dumps(x).encode() for x in lines]
    if kind == "bytes":
        text[i] = draw(st.binary(max_size=40)).replace(b"\n", b"")
    data = b"".join(t + b"\n" for t in text)
    return data[:-draw(st.integers(1, 10))] if kind == "cut" else data


@pytest.fixture(scope="module")
def replay_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "c.toml"
    path.write_text("[spray]\nlanes = 2\nfootprint_across_cm = 100\nfootprint_along_cm = 40\n"
                    "nozzle_distance_cm = 100\nspeed_kmh = 3.6\nvalve_open_lag_ms = 0\n")
    return path


@FUZZ
@given(spray=jsonl_files(_SPRAY), truth=jsonl_files(_TRUTH), which=st.sampled_from(["spray", "truth"]))
def test_random_replay_lines_score_or_fail_with_one_line_and_exit_3(spray, truth, which, replay_config, capsys):
    from edge.tools.replay import main as replay

    with tempfile.TemporaryDirectory() as d:
        slog, tfile = Path(d) / "spray.jsonl", Path(d) / "truth.jsonl"
        slog.write_bytes(spray if which == "spray" else b"".join(json.dumps(x).encode() + b"\n" for x in _SPRAY))
        tfile.write_bytes(truth if which == "truth" else b"".join(json.dumps(x).encode() + b"\n" for x in _TRUTH))
        rc = replay(["--config", str(replay_config), "--spray-log", str(slog), "--truth", str(tfile)])
    out, err = capsys.readouterr()
    assert rc in (0, 3), err
    if rc == 3:
        assert err.startswith("edge-replay: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    else:
        assert out.startswith("pass 1 of 1: ") and "nan" not in out, out
