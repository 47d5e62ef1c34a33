"""``edge-run --web`` as a process: no listener without it, a refusal to start on a non-local address
without a token, 401 without the token, and a pause and a saved tuning that outlive a restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TOY_BUNDLE
from tests.edge.helpers import start_edge_run, stop_edge_run
from tests.web.conftest import REPO, WebRun

pytest.importorskip("flask")

TOKEN = "process-test-token-0123456789"


def listening_sockets(pid: int) -> list[str]:
    """The TCP sockets process ``pid`` listens on (Linux: its socket fds matched in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                found.append(f[1])
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_without_web_no_socket_listens(tmp_path):
    proc, state = start_edge_run([], tmp_path)
    try:
        assert listening_sockets(proc.pid) == []
    finally:
        stop_edge_run(proc, state, signal.SIGTERM)


@pytest.mark.parametrize("args, words", [
    (["--web", "0.0.0.0:8080"], "needs a token: set [web] token_file"),
    (["--web", "nonsense"], "is not [HOST:]PORT"),
])
def test_a_non_local_bind_without_a_token_refuses_to_start(tmp_path, args, words):
    r = subprocess.run([sys.executable, "-m", "edge.cli", "--model", str(TOY_BUNDLE), "--images", str(tmp_path),
                        *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("edge-run: error: config (command line): ") and words in line


def csrf(run: WebRun) -> dict:
    """The page's CSRF token and its cookie, as a script posting to the live view sends them."""
    code, body, headers = run.request("/")
    assert code == 200
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', body.decode()).group(1)
    cookie = re.search(r"wd_csrf=([^;]+)", headers["Set-Cookie"]).group(1)
    return {"X-CSRF-Token": token, "Cookie": f"wd_csrf={cookie}", "Content-Type": "application/json"}


@pytest.mark.slow
def test_token_pause_and_saved_tuning_across_a_restart(edge_run_web, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    import cv2
    from tests.conftest import GREEN, solid

    cv2.imwrite(str(images / "w.png"), solid(GREEN))
    args = ("--model", str(TOY_BUNDLE), "--images", str(images), "--loop", "--realtime", "--fps", "20",
            "--threads", "1")
    env = {"STATE_DIRECTORY": str(tmp_path / "state")}
    run = edge_run_web(*args, token=TOKEN, env=env)
    for path in ("/", "/api/status", "/stream.mjpg", "/static/live.js"):
        code, _, _ = run.request(path, auth=False)
        assert code == 401, path
    assert run.request("/api/pause", method="POST", data=b"{}", auth=False)[0] in (401, 403)
    assert run.request("/api/pause", method="POST", data=b"{}")[0] == 403  # the token, but no CSRF token
    h = csrf(run)
    code, body, _ = run.request("/api/tuning", method="POST", data=json.dumps({"threshold": 0.8}).encode(), headers=h)
    assert code == 200, body
    code, body, _ = run.request("/api/tuning/save", method="POST", data=b"{}", headers=h)
    assert code == 200 and b"saved in" in body, body
    code, body, _ = run.request("/api/pause", method="POST", data=b"{}", headers=h)
    assert code == 200 and json.loads(body)["state"]["paused"] is True
    status = run.status()
    assert status["verdict"].startswith("PAUSED") and not any(status["valves"])
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=30) == 0
    assert json.loads((tmp_path / "state" / "tuning.json").read_text()) == {"decision": {"threshold": 0.8}}

    again = edge_run_web(*args, token=TOKEN, env=env)  # the restart: still paused, the saved threshold in force
    status = again.status()
    assert status["tuning"]["paused"] is True and status["tuning"]["threshold"] == 0.8
    assert "saved tuning from" in again.stderr() and "PAUSED" in again.stderr()
    h = csrf(again)
    code, body, _ = again.request("/api/resume", method="POST", data=b"{}", headers=h)
    assert code == 200 and json.loads(body)["state"]["paused"] is False
    assert not (tmp_path / "state" / "paused.json").exists()
