"""Frame sources: image folders, video files, the latest-frame reader, open failures.

Fast and hardware-free: videos are written by the test with cv2.VideoWriter, the live
reader is driven by a fake grab function fed from a queue, time comes from ManualClock.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import socket
import struct
import sys
import threading
import time
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.core.clock import ManualClock
from edge.core.errors import ConfigError, SourceError
from edge.config import load_config
from edge.sources import SourceConfig, make_source, open_source
from edge.sources.base import FrameSource, FrameTimeout
from edge.sources.camera import CameraSource
from edge.sources.image_header import declared_size
from edge.sources.images import ImageFolderSource
from edge.sources.latest import EndOfStream, Grabbed, LatestFrameReader
from edge.sources.picamera import PicameraSource, lores_size_for, sensor_time_to_clock
from edge.sources.reader import QueueReader
from edge.sources.stream import StreamSource, redact_url
from edge.sources.video import VideoSource
from tests.conftest import TOY_BUNDLE

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


# -- helpers ---------------------------------------------------------------------------
def solid(value: int, size=(24, 32)) -> np.ndarray:
    return np.full((size[0], size[1], 3), value, np.uint8)


def write_video(path: Path, n: int, fps: float = 10.0, size=(32, 24)) -> Path:
    """n frames whose brightness encodes the index (0, 20, 40, ...)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


def brightness(frame) -> int:
    return int(round(float(frame.image.mean()) / 20.0))


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    return write_video(tmp_path / "tiny.avi", 8)


class FakeDevice:
    """A grab function the test drives: put images (or exceptions) in, the reader grabs them."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.released = 0

    def grab(self):
        try:
            item = self.q.get(timeout=0.002)
        except queue.Empty:
            return None  # nothing yet: the reader checks its stop event and polls again
        if isinstance(item, BaseException):
            raise item
        return item

    def release(self):
        self.released += 1


@pytest.fixture
def device():
    return FakeDevice()


@pytest.fixture
def reader(device):
    r = LatestFrameReader(device.grab, source="fake", clock=ManualClock(), on_exit=device.release)
    r.start()
    yield r
    r.close()


# -- latest-frame reader ---------------------------------------------------------------
def test_latest_newest_wins_and_drops_counted(device, reader):
    for v in (1, 2, 3):
        device.q.put(solid(v))
    assert reader.wait_for_capture(3, timeout=5)
    frame = reader.read(timeout=5)
    assert frame.frame_id == 2 and int(frame.image[0, 0, 0]) == 3
    assert reader.dropped == 2 and reader.returned == 1 and reader.captured == 3
    # the next read waits for a NEWER frame instead of repeating the last one
    with pytest.raises(FrameTimeout):
        reader.read(timeout=0.005)
    device.q.put(solid(4))
    frame = reader.read(timeout=5)
    assert frame.frame_id == 3 and int(frame.image[0, 0, 0]) == 4
    assert reader.dropped == 2


def test_latest_timeout_raises_frame_timeout(reader):
    with pytest.raises(FrameTimeout):
        reader.read(timeout=0.005)
    with pytest.raises(FrameTimeout):
        reader.read(timeout=0)


def test_latest_timestamps_from_injected_clock(device):
    clock = ManualClock(start_ns=5_000)
    r = LatestFrameReader(device.grab, source="fake", clock=clock)
    with r:
        device.q.put(solid(1))
        first = r.read(timeout=5)
        clock.advance(0.5)
        device.q.put(solid(2))
        second = r.read(timeout=5)
    assert first.t_capture_ns == 5_000
    assert second.t_capture_ns == 5_000 + 500_000_000
    assert first.source == "fake" and first.colour_order == "BGR"


def test_latest_grabbed_carries_its_own_timestamp_and_meta(device, reader):
    device.q.put(Grabbed(solid(7), 123_456, {"timestamp": "sensor"}))
    frame = reader.read(timeout=5)
    assert frame.t_capture_ns == 123_456 and frame.meta == {"timestamp": "sensor"}


def test_latest_close_stops_thread_releases_once_and_is_idempotent(device, reader):
    device.q.put(solid(1))
    assert reader.wait_for_capture(1, timeout=5)
    assert reader.alive
    reader.close()
    assert not reader.alive
    assert device.released == 1
    assert reader.dropped == 1  # captured, never returned
    reader.close()
    assert device.released == 1 and reader.dropped == 1
    assert reader.read(timeout=0) is None


def test_latest_close_wakes_a_blocked_reader(reader):
    got = []
    t = threading.Thread(target=lambda: got.append(reader.read(timeout=30)))
    t.start()
    reader.close()
    t.join(5)
    assert not t.is_alive() and got == [None]


def test_latest_error_in_thread_reaches_read_as_source_error(device, reader):
    device.q.put(RuntimeError("USB gone"))
    with pytest.raises(SourceError, match="USB gone") as info:
        reader.read(timeout=5)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.fix
    assert not reader.wait_for_capture(1, timeout=0)
    reader.close()
    assert device.released == 1
    assert reader.error is not None


def test_latest_source_error_passes_through_and_pending_frame_comes_first(device, reader):
    err = SourceError("camera 3 stopped delivering frames", fix="check the cable")
    device.q.put(solid(1))
    assert reader.wait_for_capture(1, timeout=5)
    device.q.put(err)
    deadline = time.monotonic() + 10
    while reader.alive:  # until the thread has died on the error
        assert time.monotonic() < deadline, "the reader thread did not stop on the error"
        time.sleep(0.001)
    assert reader.read(timeout=1).frame_id == 0  # the good frame is not lost
    with pytest.raises(SourceError) as info:
        reader.read(timeout=1)
    assert info.value is err


def test_latest_end_of_stream_returns_last_frame_then_none(device, reader):
    device.q.put(solid(1))
    device.q.put(EndOfStream())
    frame = reader.read(timeout=5)
    assert frame is not None and frame.frame_id == 0
    assert reader.read(timeout=5) is None
    assert device.released == 1


def test_latest_first_id_continues_numbering(device):
    r = LatestFrameReader(device.grab, source="fake", first_id=41)
    with r:
        device.q.put(solid(1))
        assert r.read(timeout=5).frame_id == 41
        assert r.next_id == 42


# -- image folders ----------------------------------------------------------------------
@pytest.fixture
def image_dir(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "b_second.png"), solid(2))
    cv2.imwrite(str(d / "a_first.jpg"), solid(1 * 40))
    cv2.imwrite(str(d / "c_third.bmp"), solid(3))
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    (d / "sub").mkdir()
    cv2.imwrite(str(d / "sub" / "ignored.png"), solid(9))
    return d


def test_images_in_name_order_bad_files_skipped_with_warning(image_dir, caplog):
    clock = ManualClock()
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        with ImageFolderSource(image_dir, clock=clock) as src:
            frames = []
            while (f := src.read()) is not None:
                frames.append(f)
                clock.advance(0.01)
            assert src.read() is None
    assert [f.name for f in frames] == ["a_first.jpg", "b_second.png", "c_third.bmp"]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert all(f.image.shape == (24, 32, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.t_capture_ns for f in frames] == sorted({f.t_capture_ns for f in frames})
    assert src.skipped == 2 and src.dropped == 0 and not src.live
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in warned and "broken.jpg" in warned


def test_images_loop_continues_ids_and_skips_bad_file_once(image_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        with ImageFolderSource(image_dir, loop=True) as src:
            frames = [src.read() for _ in range(7)]
    assert [f.name for f in frames] == ["a_first.jpg", "b_second.png", "c_third.bmp"] * 2 + ["a_first.jpg"]
    assert [f.frame_id for f in frames] == list(range(7))
    assert src.skipped == 2
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 1


def test_images_single_file(image_dir):
    with ImageFolderSource(image_dir / "b_second.png") as src:
        assert src.read().name == "b_second.png"
        assert src.read() is None


@pytest.mark.parametrize("setup", ["empty", "only_text", "missing", "all_corrupt"])
def test_images_nothing_to_read_is_a_source_error(tmp_path, setup):
    d = tmp_path / "d"
    if setup != "missing":
        d.mkdir()
    if setup == "only_text":
        (d / "readme.md").write_text("x")
    if setup == "all_corrupt":
        (d / "x.jpg").write_bytes(b"garbage")
    src = ImageFolderSource(d, loop=True)
    with pytest.raises(SourceError) as info:
        src.start()
        src.read()
    assert str(d) in str(info.value) and info.value.fix


def test_images_realtime_paced_by_clock(image_dir):
    clock = ManualClock(start_ns=0)
    with ImageFolderSource(image_dir, fps=2, realtime=True, clock=clock) as src:
        times = [src.read().t_capture_ns for _ in range(3)]
    assert times == [0, 500_000_000, 1_000_000_000]


def test_sample_images_are_named_by_class():
    names = sorted(p.name for p in (SAMPLES / "images").iterdir())
    assert len(names) == 24
    classes = {n.split("__")[0] for n in names}
    assert len(classes) == 12


# -- video files ------------------------------------------------------------------------
def test_video_every_frame_in_order(tiny_video):
    clock = ManualClock()
    with VideoSource(tiny_video, clock=clock) as src:
        frames = []
        while (f := src.read(timeout=1)) is not None:
            frames.append(f)
            clock.advance(0.001)
        assert src.read() is None
    assert len(frames) == 8
    assert [f.frame_id for f in frames] == list(range(8))
    assert [brightness(f) for f in frames] == list(range(8))
    stamps = [f.t_capture_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 8
    assert src.dropped == 0 and not src.live and src.fps == pytest.approx(10.0)


def test_video_realtime_paced_at_file_fps_with_manual_clock(tiny_video):
    clock = ManualClock(start_ns=0)
    with VideoSource(tiny_video, realtime=True, clock=clock) as src:
        frames = [src.read() for _ in range(4)]
    # 10 fps: due every 100 ms; the manual clock advances by exactly the waits
    assert [f.t_capture_ns for f in frames] == [0, 100_000_000, 200_000_000, 300_000_000]
    assert clock.now_ns() == 300_000_000


def test_video_realtime_plays_like_a_camera_and_timeout(tiny_video):
    clock = ManualClock(start_ns=0)
    with VideoSource(tiny_video, realtime=True, fps=4, clock=clock) as src:  # due every 250 ms
        assert src.read().t_capture_ns == 0
        clock.advance(0.6)  # a slow consumer: frames 1 and 2 are already due
        late = src.read()  # frame 1 was superseded by frame 2: dropped, as a camera would
        assert (late.frame_id, late.t_capture_ns, brightness(late), src.dropped) == (2, 500_000_000, 2, 1)
        with pytest.raises(FrameTimeout):  # frame 3 is due at 750 ms, beyond a 100 ms timeout
            src.read(timeout=0.1)
        frame = src.read(timeout=0.1)  # the frame stayed pending
        assert src.dropped == 1
    assert frame.frame_id == 3 and frame.t_capture_ns == 750_000_000


def test_video_realtime_refuses_a_file_rate_it_cannot_pace_by(tmp_path):
    """A header saying 0.01 fps would wait 100 s a frame (the stall check firing meanwhile): refused at start with
    the fix; an explicit fps paces it instead, and without realtime the file's rate does not matter."""
    slow = write_video(tmp_path / "slow.avi", 3, fps=0.01)
    with pytest.raises(SourceError, match=r"states a frame rate of 0.01 fps, outside 0.1..1000") as e:
        VideoSource(slow, realtime=True, clock=ManualClock(start_ns=0)).start()
    assert "fps in the source config" in e.value.fix
    with VideoSource(slow, realtime=True, fps=10, clock=ManualClock(start_ns=0)) as src:
        assert src.read().frame_id == 0
    with VideoSource(slow) as src:
        assert src.read().frame_id == 0


def test_video_loop_restarts(tiny_video):
    with VideoSource(tiny_video, loop=True) as src:
        frames = [src.read() for _ in range(10)]
    assert [brightness(f) for f in frames] == list(range(8)) + [0, 1]
    assert [f.frame_id for f in frames] == list(range(10))


def test_a_damaged_video_plays_what_it_can_and_says_so_once(tiny_video, tmp_path, caplog):
    """A file damaged from a quarter on (a copy gone wrong): the frames before the damage play, and one warning
    says it ended before the frame count its header declares; a whole file says nothing."""
    import logging

    data = bytearray((SAMPLES / "field.avi").read_bytes())
    for i in range(len(data) // 4, len(data) // 4 + 200_000, 97):
        data[i] = (data[i] + 77) % 256
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="edge.sources.video"):
        with VideoSource(tiny_video) as src:
            assert sum(1 for _ in iter(lambda: src.read(timeout=1), None)) == 8
        assert "header declares" not in caplog.text
        with VideoSource(damaged) as src:
            played = sum(1 for _ in iter(lambda: src.read(timeout=5), None))
    assert 0 < played < src.frame_count - 1
    assert caplog.text.count("the file ended after") == 1
    assert f"ended after {played} of the {src.frame_count} frames its header declares" in caplog.text


def test_sample_video_is_readable():
    with VideoSource(SAMPLES / "field.avi") as src:
        n = 0
        while (f := src.read()) is not None:
            n += 1
            assert f.image.shape[2] == 3
    assert n == 150 and src.fps == pytest.approx(15.0)
    assert (SAMPLES / "field.avi").stat().st_size < 3 * 1024 * 1024


@pytest.mark.parametrize("kind", ["missing", "not_a_video", "folder"])
def test_video_unreadable_is_a_source_error_with_path(tmp_path, kind):
    path = tmp_path / "clip.avi"
    if kind == "not_a_video":
        path.write_text("hello")
    if kind == "folder":
        path.mkdir()
    with pytest.raises(SourceError) as info:
        VideoSource(path).start()
    assert str(path) in str(info.value) and info.value.fix


# -- live OpenCV sources -----------------------------------------------------------------
def test_camera_that_does_not_exist_is_a_source_error():
    src = CameraSource(index=97, first_frame_timeout=1)
    with pytest.raises(SourceError) as info:
        src.start()
    msg = str(info.value)
    assert "camera 97 could not be opened" in msg
    assert "ls /dev/video*" in msg and "'video' group" in msg
    src.close()
    src.close()


def test_stream_reads_newest_frames_then_reports_the_end(tiny_video):
    # A file path is a valid FFmpeg "URL": exercises the live path without a network.
    with StreamSource(str(tiny_video), first_frame_timeout=5, max_read_failures=1) as src:
        assert src.live
        frames = []
        with pytest.raises(SourceError, match="stopped delivering frames"):
            for _ in range(100):
                frames.append(src.read(timeout=5))
    ids = [f.frame_id for f in frames]
    assert ids and ids == sorted(set(ids)) and ids[-1] <= 7
    assert src.dropped == 8 - len(frames)  # every captured frame is returned or dropped


def test_stream_reopen_continues_ids_and_drop_count(tiny_video):
    src = StreamSource(str(tiny_video), first_frame_timeout=5, max_read_failures=1)
    with src:
        seen = []
        for _ in range(2):  # read to the end, then "reconnect"
            with pytest.raises(SourceError):
                for _ in range(100):
                    seen.append(src.read(timeout=5).frame_id)
            if len(seen) and seen[-1] < 8:
                src.reopen()
    assert seen == sorted(set(seen)) and seen[-1] >= 8  # the second open continued the ids
    assert src.dropped == 16 - len(seen)


def test_stream_open_failure_hides_password(tmp_path):
    url = f"file:{tmp_path}/nothing.mp4"
    with pytest.raises(SourceError, match="could not be opened"):
        StreamSource(url, open_timeout=2).start()
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_url("http://cam.local/video") == "http://cam.local/video"


# -- picamera2 ---------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed")
def test_picamera_missing_is_a_source_error_with_apt_fix():
    src = PicameraSource()
    with pytest.raises(SourceError) as info:
        src.start()
    assert "sudo apt install python3-picamera2" in str(info.value)
    assert "--system-site-packages" in str(info.value)
    src.close()


def test_picamera_helpers():
    assert lores_size_for((640, 480), (224, 224)) == (300, 224)
    assert lores_size_for((1280, 720), (224, 224)) == (400, 224)
    assert lores_size_for((320, 240), (640, 640)) == (320, 240)  # never above main
    now = 10_000_000_000
    assert sensor_time_to_clock(now - 20_000_000, now, 1_000_000_000) == now - 20_000_000
    assert sensor_time_to_clock(now + 1, now, 1_000_000_000) is None  # from the future
    assert sensor_time_to_clock(now - 2_000_000_000, now, 1_000_000_000) is None  # too old
    assert sensor_time_to_clock(None, now, 1_000_000_000) is None


class _FakeRequest:
    def __init__(self, cam):
        self.cam = cam

    def make_array(self, name):
        assert name == "lores"
        w, h = self.cam.config["lores"]["size"]
        stride = w + 16  # padded rows, as libcamera delivers them
        if self.cam.config["lores"]["format"] == "YUV420":
            yuv = np.full((h * 3 // 2, stride), 128, np.uint8)
            yuv[:h, :w] = 200  # bright grey luma
            return yuv
        return np.full((h, w, 3), 77, np.uint8)

    def get_metadata(self):
        return {"SensorTimestamp": time.monotonic_ns() - 3_000_000, "ExposureTime": 10_000}

    def release(self):
        self.cam.released_requests += 1


class _FakePicamera2:
    """The subset of picamera2's API the source uses; ``vc4`` behaves like a Pi 4."""

    instances: list = []
    vc4 = True

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.config = None
        self.started = self.closed = False
        self.released_requests = 0
        _FakePicamera2.instances.append(self)

    def create_preview_configuration(self, main, lores, controls):
        return {"main": dict(main, format="XBGR8888"), "lores": dict(lores), "controls": controls}

    def align_configuration(self, config):
        pass

    def configure(self, config):
        if self.vc4 and config["lores"]["format"] != "YUV420":
            raise RuntimeError("lores stream must be YUV")
        self.config = config

    def stream_configuration(self, name):
        return self.config[name]

    def start(self):
        self.started = True

    def capture_request(self):
        time.sleep(0.002)  # a frame interval
        return _FakeRequest(self)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.mark.parametrize("vc4, lores_format", [(True, "YUV420"), (False, "RGB888")])
def test_picamera_lores_format_and_sensor_timestamps(monkeypatch, vc4, lores_format):
    fake = types.ModuleType("picamera2")
    fake.Picamera2 = _FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    monkeypatch.setattr(_FakePicamera2, "vc4", vc4)
    _FakePicamera2.instances.clear()
    src = PicameraSource(0, 640, 480, fps=30, infer_size=(224, 224))
    with src:
        frame = src.read(timeout=5)
    cam = _FakePicamera2.instances[0]
    assert src.lores_format == lores_format
    assert cam.config["controls"] == {"FrameDurationLimits": (33333, 33333)}
    assert frame.image.shape == (224, 300, 3) and frame.colour_order == "BGR"
    assert frame.meta["timestamp"] == "sensor" and frame.meta["exposure_us"] == 10_000
    assert frame.t_capture_ns <= time.monotonic_ns()
    assert cam.closed and not cam.started and cam.released_requests >= 1


# -- factory ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, infer_size, cls",
    [
        (SourceConfig(kind="camera", camera=2, width=640, height=480, fps=30), None, CameraSource),
        (SourceConfig(kind="stream", url="rtsp://cam/1"), None, StreamSource),
        (SourceConfig(kind="picamera"), (224, 224), PicameraSource),
        (SourceConfig(kind="video", path="x.avi", realtime=True), None, VideoSource),
        (SourceConfig(kind="images", path="dir", loop=True), None, ImageFolderSource),
    ],
)
def test_make_source_builds_each_kind_without_opening(config, infer_size, cls):
    src = make_source(config, infer_size=infer_size)
    assert isinstance(src, cls) and isinstance(src, FrameSource)
    src.close()


@pytest.mark.parametrize(
    "fields, capture_size, frame_rate, label",
    [
        ({"kind": "camera", "camera": 1, "fps": 15}, (640, 480), 15, "camera 1"),
        ({"kind": "picamera", "width": 1280, "height": 720}, (1280, 720), 30, "picamera 0"),
        ({"kind": "video", "path": "v.avi", "fps": 5}, None, None, "video v.avi"),  # a video keeps its own rate
        ({"kind": "images", "path": "d", "fps": 5}, None, 5, "images d"),
        ({"kind": "stream", "url": "rtsp://u:secret@cam/1"}, None, None, "stream rtsp://u:***@cam/1"),
    ],
)
def test_source_config_says_what_reaches_the_source(fields, capture_size, frame_rate, label):
    c = SourceConfig(**fields)
    assert (c.capture_size, c.frame_rate, c.describe()) == (capture_size, frame_rate, label)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "webcam"},
        {"kind": "video"},
        {"kind": "images", "path": ""},
        {"kind": "stream"},
        {"kind": "camera", "camera": -1},
        {"kind": "camera", "camera": 1024},
        {"kind": "camera", "fps": 0},
        {"kind": "images", "path": "d", "max_image_pixels": 1000},
        {"kind": "video", "path": "v.avi", "max_image_pixels": 1 << 31},
    ],
)
def test_source_config_rejects_bad_fields_with_config_error(kwargs):
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"source": kwargs})
    assert info.value.fix


def test_make_source_rejects_a_bad_infer_size_with_config_error():
    with pytest.raises(ConfigError) as info:
        make_source(SourceConfig(kind="picamera"), infer_size=(224,))
    assert info.value.fix


def test_open_source_starts_the_source(image_dir):
    with open_source(SourceConfig(kind="images", path=str(image_dir))) as src:
        assert src.read().name == "a_first.jpg"
    with pytest.raises(SourceError):
        open_source(SourceConfig(kind="video", path=str(image_dir / "nope.avi")))


# -- file sources: decoded in a reader thread, never hanging the caller ------------------
class GatedVideo(VideoSource):
    """A slow decoder: every frame after the first (read when opening) waits for the test."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self.gate = threading.Semaphore(0)

    def _decode(self):
        assert self.gate.acquire(timeout=30)
        return super()._decode()


def test_video_slow_decoder_times_the_read_out_and_loses_no_frame(tiny_video):
    with GatedVideo(tiny_video) as src:
        frames = [src.read(timeout=5)]
        with pytest.raises(FrameTimeout):  # the decoder is stuck: the caller gets control back
            src.read(timeout=0.01)
        for _ in range(8):  # frames 1..7, then the end
            src.gate.release()
        while (f := src.read(timeout=5)) is not None:
            frames.append(f)
    assert [f.frame_id for f in frames] == list(range(8))
    assert [brightness(f) for f in frames] == list(range(8)) and src.dropped == 0


def test_video_consumer_slower_than_the_decoder_loses_no_frame(tiny_video):
    with VideoSource(tiny_video, queue_size=2) as src:
        assert src._reader.wait_for_capture(2, timeout=5)  # the queue is full: the decoder waits for us
        frames = list(iter(lambda: src.read(timeout=5), None))
    assert [brightness(f) for f in frames] == list(range(8)) and src.dropped == 0


def test_queue_reader_keeps_order_reports_the_failure_last_and_closes_while_full():
    items = iter([1, 2, 3, RuntimeError("disk gone")])

    def grab():
        item = next(items)
        if isinstance(item, BaseException):
            raise item
        return item

    with QueueReader(grab, size=1, source="q") as r:
        assert [r.read(timeout=5) for _ in range(3)] == [1, 2, 3]
        with pytest.raises(SourceError, match="disk gone"):
            r.read(timeout=5)
    full = QueueReader(lambda: 0, size=1, source="full")
    full.start()
    assert full.wait_for_capture(1, timeout=5)  # then the thread waits for room
    full.close()
    assert not full.alive and full.read(timeout=0) is None


@pytest.fixture
def fifo(tmp_path):
    """A FIFO nobody writes to: opening it for reading blocks (in C, inside VideoCapture,
    holding OpenCV's lock on every FFmpeg open of the process)."""
    path = tmp_path / "f.avi"
    os.mkfifo(path)
    yield path
    # Let the abandoned reader thread's open return (it reads the end and fails) whenever
    # it gets there, so that it frees OpenCV's open lock for the tests that follow.
    threading.Thread(target=lambda: os.close(os.open(path, os.O_WRONLY)), daemon=True).start()


def test_video_fifo_without_writer_is_a_source_error_after_open_timeout(fifo, caplog):
    src = VideoSource(fifo, open_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="edge.sources.reader"):
        with pytest.raises(SourceError, match="did not open within 0.2 s") as info:
            src.start()
    assert str(fifo) in str(info.value) and "FIFO" in info.value.fix
    assert "abandoned" in caplog.text
    assert src.read(timeout=0) is None


class StopWhileOpening(VideoSource):
    """SIGTERM arrives while the open blocks (until the test lets it go)."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self.hang = threading.Event()

    def _open(self):
        self._stop.set()
        assert self.hang.wait(30)
        super()._open()


def test_stop_requested_while_a_file_opens_returns_from_start_at_once(tiny_video):
    stop = threading.Event()
    src = StopWhileOpening(tiny_video, stop=stop)
    try:
        src.start()  # returns: no error, no frame
        assert src.read(timeout=5) is None and src.dropped == 0
    finally:
        src.hang.set()
        src.close()


def test_stop_requested_while_a_stream_opens_returns_from_start_at_once():
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    connections = []

    def answer_nothing():
        connections.append(server.accept()[0])
        stop.set()  # SIGTERM while FFmpeg waits for the server's answer

    threading.Thread(target=answer_nothing, daemon=True).start()
    src = StreamSource(f"http://127.0.0.1:{server.getsockname()[1]}/video", open_timeout=60, stop=stop)
    try:
        src.start()  # returns on the stop, long before FFmpeg's open timeout
        assert stop.is_set() and src.read(timeout=0) is None
    finally:
        for s in connections + [server]:
            s.close()
        src.close()


# -- image size from the header, before decoding -------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR says ``width`` x ``height`` (CRC recomputed)."""
    data = cv2.imencode(".png", solid(90, (8, 8)))[1].tobytes()
    ihdr = struct.pack(">II", width, height) + data[24:29]  # depth, colour type, ...
    return data[:8] + _chunk(b"IHDR", ihdr) + data[33:]


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A real JPEG (with its APP0 segment before the frame header) whose SOF says the size."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    data = bytearray(cv2.imencode(".jpg", solid(90, (8, 8)), params)[1].tobytes())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int, core: bool = False) -> bytes:
    if core:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return b"BM" + struct.pack("<IHHI", 26, 0, 0, 26) + struct.pack("<IHHHH", 12, width, height, 1, 24)
    data = bytearray(cv2.imencode(".bmp", solid(90, (8, 8)))[1].tobytes())
    data[18:26] = struct.pack("<ii", width, -height)  # negative: stored top-down
    return bytes(data)


def webp_declaring(width: int, height: int, chunk: str) -> bytes:
    if chunk == "VP8 ":  # lossy: frame tag, start code, 14-bit sizes
        body = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    elif chunk == "VP8L":  # lossless: 0x2F, 14-bit width-1 and height-1
        body = b"\x2f" + struct.pack("<I", (width - 1) | (height - 1) << 14)
    else:  # VP8X: flags, 24-bit canvas width-1 and height-1
        body = b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    riff = b"WEBP" + chunk.encode() + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(riff)) + riff


def tiff_declaring(width: int, height: int, order: str = "<", kind: int = 4, big: bool = False) -> bytes:
    """A TIFF header and a first IFD with ImageWidth/ImageLength of type SHORT (3), LONG (4)
    or LONG8 (16, BigTIFF)."""
    mark = b"II" if order == "<" else b"MM"
    fmt = {3: "H", 4: "I", 16: "Q"}[kind]
    slot = 8 if big else 4
    entries = b"".join(
        struct.pack(order + ("HHQ" if big else "HHI"), tag, kind, 1)
        + struct.pack(order + fmt, value).ljust(slot, b"\x00")
        for tag, value in ((256, width), (257, height))
    )
    if big:
        return mark + struct.pack(order + "HHHQ", 43, 8, 0, 16) + struct.pack(order + "Q", 2) + entries
    return mark + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 2) + entries


HUGE_HEADERS = [
    ("big.png", lambda: png_declaring(20000, 20000), ("PNG", 20000, 20000)),
    ("big.jpg", lambda: jpeg_declaring(60000, 50000), ("JPEG", 60000, 50000)),
    ("big_progressive.jpg", lambda: jpeg_declaring(30000, 20000, progressive=True), ("JPEG", 30000, 20000)),
    ("big.bmp", lambda: bmp_declaring(30000, 20000), ("BMP", 30000, 20000)),
    ("big_os2.bmp", lambda: bmp_declaring(65535, 65535, core=True), ("BMP", 65535, 65535)),
    ("big_vp8.webp", lambda: webp_declaring(16383, 16383, "VP8 "), ("WebP", 16383, 16383)),
    ("big_vp8l.webp", lambda: webp_declaring(16384, 16384, "VP8L"), ("WebP", 16384, 16384)),
    ("big_vp8x.webp", lambda: webp_declaring(40000, 30000, "VP8X"), ("WebP", 40000, 30000)),
    ("big_le.tif", lambda: tiff_declaring(20000, 20000), ("TIFF", 20000, 20000)),
    ("big_be.tiff", lambda: tiff_declaring(60000, 60000, order=">", kind=3), ("TIFF", 60000, 60000)),
    ("big_bigtiff.tif", lambda: tiff_declaring(100000, 100000, kind=16, big=True), ("TIFF", 100000, 100000)),
]


@pytest.mark.parametrize("name, build, size", HUGE_HEADERS, ids=[h[0] for h in HUGE_HEADERS])
def test_an_image_declaring_too_many_pixels_is_skipped_before_decoding(tmp_path, caplog, name, build, size):
    data = build()
    assert declared_size(data) == size
    (tmp_path / name).write_bytes(data)
    cv2.imwrite(str(tmp_path / "zz_normal.png"), solid(3))
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        with ImageFolderSource(tmp_path) as src:
            frames = list(iter(lambda: src.read(timeout=5), None))
    assert [f.name for f in frames] == ["zz_normal.png"] and src.skipped == 1
    assert f"skipping {name}: its {size[0]} header declares {size[1]}x{size[2]}" in caplog.text
    assert "max_image_pixels" in caplog.text


@pytest.mark.parametrize(
    "ext, params, fmt",
    [
        (".png", [], "PNG"),
        (".jpg", [], "JPEG"),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "JPEG"),
        (".bmp", [], "BMP"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "WebP"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "WebP"),  # lossless
        (".tiff", [], "TIFF"),
    ],
)
def test_declared_size_of_real_images_is_their_size(ext, params, fmt):
    data = cv2.imencode(ext, solid(90, (37, 53)), params)[1].tobytes()
    assert declared_size(data) == (fmt, 53, 37)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        png_declaring(9, 9)[:20],  # cut inside IHDR
        b"P6\n20000 20000\n255\n",  # a PPM: OpenCV would decode it, its size is not checked here
        b"\xff\xd8\xff\xda\x00\x02",  # a scan before any frame header
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # cut before the frame header
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
        tiff_declaring(5, 5)[:14],
        b"II*\x00\xff\xff\xff\x7f",  # the IFD offset points past the end
    ],
)
def test_declared_size_is_none_when_the_header_does_not_say(data):
    assert declared_size(data) is None


def test_an_image_whose_size_cannot_be_read_is_not_decoded(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"P6\n20000 20000\n255\n" + bytes(64))  # a PPM named .png
    cv2.imwrite(str(tmp_path / "b.png"), solid(3))
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        with ImageFolderSource(tmp_path) as src:
            assert [f.name for f in iter(lambda: src.read(timeout=5), None)] == ["b.png"]
    assert src.skipped == 1 and "skipping a.png: its header is not" in caplog.text


def test_a_video_with_frames_over_the_pixel_limit_is_refused(tiny_video):  # 32x24 = 768 pixels
    with pytest.raises(SourceError, match=r"32x24 = 0.0 megapixels, over the limit") as info:
        VideoSource(tiny_video, max_pixels=700).start()
    assert "max_image_pixels" in str(info.value) and "ffmpeg" in info.value.fix
    with VideoSource(tiny_video, max_pixels=768) as src:
        assert src.read(timeout=5) is not None


# -- symlink loops, broken links, impossible camera numbers ----------------------------------
@pytest.mark.parametrize(
    "argv_for, code, words",
    [
        (lambda d: ["--video", str(d / "loop.avi")], 5, "video file {d}/loop.avi is a symlink loop"),
        (lambda d: ["--images", str(d / "loop.avi")], 5, "image path {d}/loop.avi is a symlink loop"),
        (lambda d: ["--video", str(d / "dangling.avi")], 5, "is a broken symlink (to {d}/nowhere.avi)"),
        (lambda d: ["--images", str(d / "only_loops")], 5, "image folder {d}/only_loops contains no images"),
        (lambda d: ["--images", str(d / "pipe.png")], 5, "image path {d}/pipe.png is neither a file nor a folder"),
        (lambda d: ["--camera", "1099511627776"], 3, "[source] camera"),
    ],
    ids=["video symlink loop", "images symlink loop", "video broken symlink", "folder of loops", "images FIFO",
         "camera 2**40"],
)
def test_bad_paths_and_camera_numbers_are_one_line_errors(tmp_path, capsys, argv_for, code, words):
    os.symlink(tmp_path / "loop.avi", tmp_path / "loop.avi")
    os.symlink(tmp_path / "nowhere.avi", tmp_path / "dangling.avi")
    (tmp_path / "only_loops").mkdir()
    os.symlink(tmp_path / "only_loops" / "x.png", tmp_path / "only_loops" / "x.png")
    os.mkfifo(tmp_path / "pipe.png")
    rc = main(["--model", str(TOY_BUNDLE), "-q", *argv_for(tmp_path)])
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.count("edge-run: error:") == 1 and words.format(d=tmp_path) in err and "Traceback" not in err


def test_a_symlink_loop_in_an_image_folder_is_skipped_with_a_warning(image_dir, caplog):
    os.symlink(image_dir / "loop.png", image_dir / "loop.png")
    with caplog.at_level(logging.WARNING, logger="edge.sources.images"):
        with ImageFolderSource(image_dir) as src:
            names = [f.name for f in iter(lambda: src.read(timeout=5), None)]
    assert names == ["a_first.jpg", "b_second.png", "c_third.bmp"] and src.skipped == 3
    assert "skipping loop.png: cannot be looked at (a symlink loop)" in caplog.text


def test_a_camera_number_opencv_cannot_take_is_a_source_error():
    src = CameraSource(index=1099511627776, first_frame_timeout=1)
    with pytest.raises(SourceError, match="camera 1099511627776 could not be opened") as info:
        src.start()
    assert "0..1023" in info.value.fix
    src.close()
