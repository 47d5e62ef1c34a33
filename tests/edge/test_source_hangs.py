"""Sources that cannot hang the loop, in a real ``edge-run`` process: a FIFO without a
writer, a stream server that never answers, a FIFO fed half a video and held open.

Each case is a real subprocess (a blocked C call inside OpenCV, a signal and an exit code
are what is tested); the dry-run state file shows what the valves did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
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
def test_sigterm_while_the_source_hangs_in_its_open_exits_0_all_off(tmp_path, request, hanging):
    args, opening = request.getfixturevalue(hanging)
    run = EdgeRun(tmp_path, *args)
    try:
        opening(run)
    except BaseException:
        run.stop(signal.SIGKILL)
        raise
    assert run.stop(signal.SIGTERM) == 0, run.stderr
    run.assert_closed_all_off()
    assert "stop requested while it was opening" in run.stderr


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
