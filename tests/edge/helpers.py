"""Test helpers shared by the edge tests: a scripted frame source, a real edge-run
process that is started spraying and stopped by a signal, a [spray] section as TOML."""

import json
import signal
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


def outputs_on(state):
    """True once the dry-run state file ``state`` says both outputs are on."""
    lines = read_state_file(state) if state.exists() else []  # a line being written is skipped
    return any(x["state"] == [True, True] for x in lines)


def wait_until(cond, what, proc=None, limit=60.0):
    """Poll ``cond()`` until it is true (a real process is involved); fail after ``limit`` seconds
    or when ``proc`` ended first."""
    deadline = time.monotonic() + limit
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"edge-run ended while waiting for {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


STOP_SIGNALS_A_SHELL_MAY_IGNORE = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def _signals_as_systemd_gives_them():
    """In the child: the stop signals a shell's background job or ``nohup`` leaves ignored (edge-run keeps an
    inherited SIG_IGN on purpose) back at their defaults, as systemd starts a service."""
    for s in STOP_SIGNALS_A_SHELL_MAY_IGNORE:
        signal.signal(s, signal.SIG_DFL)


def start_edge_run(args, tmp_path, env=None, ready=outputs_on):
    """A real ``edge-run`` on a looping weed image with 2 dry-run channels and a state
    file, returned once ``ready(state_file)`` (default: both outputs are on): ``(proc, state_file)``.
    It starts with SIGINT, SIGQUIT and SIGHUP at their defaults whatever the test runner inherited (a suite
    run from ``nohup ... &`` would otherwise pass them on ignored)."""
    weeds = tmp_path / "weeds"
    weeds.mkdir(exist_ok=True)
    cv2.imwrite(str(weeds / "w.png"), solid(GREEN))
    state = tmp_path / "state.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "--model", str(TOY_BUNDLE), "--images", str(weeds), "--loop",
         "--channels", "2", "--state-file", str(state), "--threads", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_signals_as_systemd_gives_them)
    wait_until(lambda: ready(state), "edge-run to be ready (spraying)", proc)
    return proc, state


def stop_edge_run(proc, state, sig, code=0):
    """Stop an ``edge-run`` from :func:`start_edge_run` with ``sig`` (a signal, or a function that
    stops the process some other way); assert that it exits with ``code`` and (unless ``state`` is
    None: not a dry-run output) every output off with ``closed`` last in the state file. Returns its
    stderr."""
    try:
        if callable(sig):
            sig(proc, state)
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    if state is not None:
        last = read_state_file(state)[-1]
        assert last["state"] == [False, False] and last["event"] == "closed"
    return err


def spray_toml(spray) -> str:
    """A ``SprayConfig`` as the ``[spray]`` section of a config file (keys left unset are left out)."""
    return "[spray]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spray.model_dump().items() if v is not None)
