"""Test helpers shared by the edge tests: a scripted frame source, a real edge-run
process that is started spraying and stopped by a signal, a [spray] section as TOML."""

import json

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from edge.core.clock import ManualClock
from edge.core.frame import Frame
from edge.outputs.dryrun import read_state_file
from edge.sources.base import FrameTimeout
from tests.conftest import BROWN, GREEN, TOY_BUNDLE, solid


class ScriptedSource:
    """A test source: plays a script of frames ('W' weed, 'S' soil, 'X' broken image),
    timeouts ('.', each advancing the manual clock by the requested timeout) and a
    callback step ('!' calls on_bang). Ends with None."""

    live = True
    name = "scripted"

    def __init__(self, script: str, clock: ManualClock, on_bang=None):
        self.script, self.clock, self.on_bang = list(script), clock, on_bang
        self.i = 0
        self.closed = False
        self.states_seen = []

    def start(self):
        pass

    @property
    def dropped(self):
        return 0

    def link(self):
        return None

    def read(self, timeout=None):
        while self.script:
            step = self.script.pop(0)
            if step == "!":
                self.on_bang()
                continue
            return self._play(step, timeout)
        return None

    def _play(self, step, timeout):
        """A frame for 'W'/'S'/'X' (the clock advances 50 ms); ``FrameTimeout`` for '.'."""
        if step == ".":
            self.clock.advance(timeout)
            raise FrameTimeout()
        self.clock.advance(0.05)
        self.i += 1
        img = {"W": solid(GREEN), "S": solid(BROWN), "X": np.zeros((4, 4), np.uint8)}[step]
        return Frame(img, self.i, self.clock.now_ns(), self.name)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_edge_run(args, tmp_path, env=None):
    """A real ``edge-run`` on a looping weed image with 2 dry-run channels and a state
    file, returned once both outputs are on: ``(proc, state_file)``."""
    weeds = tmp_path / "weeds"
    weeds.mkdir(exist_ok=True)
    cv2.imwrite(str(weeds / "w.png"), solid(GREEN))
    state = tmp_path / "state.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "--model", str(TOY_BUNDLE), "--images", str(weeds), "--loop",
         "--channels", "2", "--state-file", str(state), "--threads", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = read_state_file(state) if state.exists() else []  # a line being written is skipped
        if any(x["state"] == [True, True] for x in lines):
            return proc, state
        if proc.poll() is not None:
            pytest.fail(f"edge-run ended early: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("edge-run never switched the outputs on")


def stop_edge_run(proc, state, sig):
    """Send ``sig`` to an ``edge-run`` from :func:`start_edge_run`; assert that it exits 0
    with every output off and ``closed`` last in the state file. Returns its stderr."""
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    last = read_state_file(state)[-1]
    assert last["state"] == [False, False] and last["event"] == "closed"
    return err


def spray_toml(spray) -> str:
    """A ``SprayConfig`` as the ``[spray]`` section of a config file (keys left unset are left out)."""
    return "[spray]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spray.model_dump().items() if v is not None)
