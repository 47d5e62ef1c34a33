"""Sources that cannot hang the loop, and images that cannot exhaust memory, in a real
``edge-run`` process: a FIFO without a writer, a stream server that never answers, a
FIFO fed half a video and held open, a PNG declaring 20000x20000 pixels.

Each case is a real subprocess (a blocked C call inside OpenCV, a signal and an exit code
are what is tested); the dry-run state file shows what the valves did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from tests.conftest import GREEN, TOY_BUNDLE, solid


class EdgeRun:
    """``edge-run`` with one dry-run channel and a state file; stderr is collected as it
    comes, so that a test knows when the run has reached a step."""

    def __init__(self, tmp_path, *args: str):
        self.state = tmp_path / "state.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--model", str(TOY_BUNDLE), "--threads", "1",
             "--state-file", str(self.state), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._lines.append("")  # EOF
            self._cond.notify_all()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for_log(self, words: str, timeout: float = 60) -> None:
        with self._cond:
            seen = self._cond.wait_for(lambda: any(words in x for x in self._lines) or "" in self._lines, timeout)
        assert seen and words in self.stderr, f"edge-run never logged {words!r}:\n{self.stderr}"

    def states(self) -> list[dict]:
        return [json.loads(x) for x in self.state.read_text().splitlines()] if self.state.exists() else []

    def wait_for_state(self, ready, what: str, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not ready(states := self.states()):
            assert self.proc.poll() is None, f"edge-run ended before {what}:\n{self.stderr}"
            assert time.monotonic() < deadline, f"edge-run never reached {what}:\n{self.stderr}"
            time.sleep(0.02)  # a real process writes the file
        return states

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        try:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        self.proc.stdout.close()
        return self.proc.returncode

    def assert_closed_all_off(self) -> None:
        last = self.states()[-1]
        assert last["event"] == "closed" and not any(last["state"]), self.stderr
        assert "Traceback" not in self.stderr


def open_for_writing(fifo, proc, timeout: float = 60) -> int:
    """The write end of ``fifo``, once the process ``proc`` has opened it for reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "edge-run never opened the FIFO"
            time.sleep(0.02)  # a real process opens it
            continue
        os.set_blocking(fd, True)
        return fd


def green_video(path, frames: int) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(frames):
        writer.write(solid(GREEN))
    writer.release()
    return path.read_bytes()


# -- a source that hangs while it opens ------------------------------------------------------
@pytest.fixture
def fifo_video(tmp_path):
    fifo = tmp_path / "f.avi"
    os.mkfifo(fifo)
    return ["--video", str(fifo)], lambda run: run.wait_for_log("video f.avi: opening")


@pytest.fixture
def silent_stream():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    connections = []

    def connected(_run):
        connections.append(server.accept()[0])  # FFmpeg is inside VideoCapture's open

    yield ["--stream", f"http://127.0.0.1:{server.getsockname()[1]}/video"], connected
    for s in connections + [server]:
        s.close()


@pytest.mark.parametrize("hanging", ["fifo_video", "silent_stream"])
def test_sigterm_while_the_source_hangs_in_its_open_ends_start_up_all_off(tmp_path, request, hanging):
    args, opening = request.getfixturevalue(hanging)
    run = EdgeRun(tmp_path, *args)
    try:
        opening(run)
    except BaseException:
        run.stop(signal.SIGKILL)
        raise
    assert run.stop(signal.SIGTERM) == 128 + signal.SIGTERM, run.stderr  # start-up interrupted (docs/deploy.md)
    run.assert_closed_all_off()
    assert "stopped by SIGTERM during start-up" in run.stderr


# -- a source that stalls while it is read -----------------------------------------------------
def test_a_fifo_fed_half_a_video_and_held_open_stalls_the_outputs_off(tmp_path):
    data = green_video(tmp_path / "weeds.avi", 300)
    (tmp_path / "c.toml").write_text("[outputs]\nmax_on_s = 60\n")  # only the stall may switch off
    fifo = tmp_path / "f.avi"
    os.mkfifo(fifo)
    run = EdgeRun(tmp_path, "--video", str(fifo), "--config", str(tmp_path / "c.toml"), "--max-on", "60")
    fd = None
    try:
        fd = open_for_writing(fifo, run.proc)
        os.write(fd, data[: len(data) * 6 // 10])  # then nothing more, the FIFO still open
        run.wait_for_state(lambda s: any(x["state"] == [True] for x in s), "spraying")
        states = run.wait_for_state(lambda s: s[-1]["state"] == [False], "the outputs off again")
        run.wait_for_log("no frame for 1.0 s from video f.avi: all outputs off")
        assert run.stop(signal.SIGTERM) == 0, run.stderr
    finally:
        if run.proc.poll() is None:
            run.stop(signal.SIGKILL)
        if fd is not None:
            os.close(fd)
    assert states[-1]["event"] == "all_off"  # the loop's fail-safe on the stall, not the on-time bound
    assert not any(x["event"] == "expired" for x in run.states())
    run.assert_closed_all_off()


# -- an image that declares more pixels than memory holds -------------------------------------
def zero_png(width: int, height: int) -> bytes:
    """A real RGB PNG of ``width`` x ``height`` black pixels, built row block by row block
    (each row deflated alone after a full flush, so one block repeats): 1.6 MB for
    20000x20000, 1.2 GB once decoded."""
    row = bytes(1 + 3 * width)  # filter byte + pixels
    z = zlib.compressobj(9)
    first = z.compress(row) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(row) + z.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    idat = first + block * (height - 1) + z.flush(zlib.Z_FINISH)[:-4] + struct.pack(">I", adler)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_zero_png_is_a_real_png():
    image = cv2.imdecode(np.frombuffer(zero_png(30, 20), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (20, 30, 3) and not image.any()


def test_edge_run_skips_a_png_declaring_20000x20000_and_its_memory_stays_low(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a_huge.png").write_bytes(zero_png(20000, 20000))
    cv2.imwrite(str(folder / "b_weed.png"), solid(GREEN))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    # A small middle process starts edge-run and reports its peak memory: Linux carries a parent's memory
    # high-water mark into the children it starts (through fork/vfork and exec), and this test process may
    # be large, so edge-run is not started from it directly.
    middle = ("import os, subprocess, sys\n"
              "with open(sys.argv[1], 'w') as o, open(sys.argv[2], 'w') as e:\n"
              "    p = subprocess.Popen(sys.argv[3:], stdout=o, stderr=e)\n"
              "    _, status, usage = os.wait4(p.pid, 0)\n"
              "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")
    proc = subprocess.run(
        [sys.executable, "-c", middle, str(out), str(err), sys.executable, "-m", "edge.cli", "--model",
         str(TOY_BUNDLE), "--threads", "1", "--images", str(folder), "--print", "-q"],
        capture_output=True, text=True, timeout=120)  # a hang fails the test instead of blocking the suite
    assert proc.returncode == 0, proc.stderr
    code, peak_kib = (int(x) for x in proc.stdout.split())
    proc.returncode = code
    assert proc.returncode == 0, err.read_text()
    printed, warned = out.read_text(), err.read_text()
    assert "b_weed.png" in printed and "a_huge.png" not in printed
    assert "skipping a_huge.png: its PNG header declares 20000x20000 = 400.0 megapixels" in warned
    assert peak_kib < 1024 * 1024  # KiB: well under the 1.2 GB that decoding it takes
