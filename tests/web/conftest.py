"""Fixtures for the live view's tests: a real ``edge-run --web`` subprocess and a real headless Chromium.

Reusable by any test of a page of the live view (the labelling pages too):

- ``free_port()`` — a TCP port free on 127.0.0.1 now.
- ``edge_run_web(*args, token=None, host="127.0.0.1", cwd=...)`` (fixture, a factory) — starts
  ``edge-run --web HOST:PORT`` with ``args`` (with ``token``: written to a token file, ``[web]
  token_file`` set), waits until ``/api/status`` answers (polling, no fixed sleep), returns a
  ``WebRun`` (``url``, ``proc``, ``token``, ``get``/``post`` helpers); every process it started
  is stopped with SIGTERM (then killed) at the end of the test.
- ``browser`` (fixture) — selenium driving Debian's ``chromium`` through ``/usr/bin/chromedriver``
  (given through ``Service``, so selenium-manager never looks for a driver on the network),
  headless, a fresh profile. Without chromium/chromedriver/selenium the test is skipped with the
  reason — except under CI (``CI=true``), where a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
START_LIMIT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WebRun:
    proc: subprocess.Popen
    url: str
    token: str | None
    log: Path
    headers: dict = field(default_factory=dict)

    def request(self, path: str, *, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
                auth: bool = True, timeout: float = 10.0) -> tuple[int, bytes, dict]:
        h = dict(headers or {})
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def status(self) -> dict:
        code, body, _ = self.request("/api/status")
        assert code == 200, body
        return json.loads(body)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(cond, what: str, proc: subprocess.Popen | None = None, limit: float = START_LIMIT_S,
             log: Path | None = None, name: str = "edge-run"):
    """Poll ``cond()`` until it returns a true value (a real process is involved); fail after ``limit`` s or
    when ``proc`` ended first."""
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{name} ended (exit {proc.returncode}) while waiting for {what}:\n"
                        f"{log.read_text(errors='replace') if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text(errors='replace') if log else ''}")
        time.sleep(0.05)


def _answers(url: str, token: str | None) -> bool:
    req = urllib.request.Request(url + "api/status", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@pytest.fixture
def edge_run_web(tmp_path):
    started: list[subprocess.Popen] = []

    def start(*args: str, token: str | None = None, host: str = "127.0.0.1", env: dict | None = None,
              config: str | None = None) -> WebRun:
        port = free_port()
        cfg = tmp_path / f"web-{port}.toml"
        text = (Path(config).read_text() + "\n") if config else ""
        if token:
            tf = tmp_path / f"token-{port}"
            tf.write_text(token + "\n")
            tf.chmod(0o600)
            text += f'[web]\ntoken_file = "{tf}"\n'
        cfg.write_text(text)
        log = tmp_path / f"edge-run-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--config", str(cfg), "--web", f"{host}:{port}", *args],
            stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        started.append(proc)
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(url, token), "the live view to answer", proc, log=log)
        return WebRun(proc, url, token, log)

    yield start
    for proc in started:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _missing_browser() -> str | None:
    if not any(shutil.which(c) for c in CHROMIUM):
        return "chromium is not installed (apt-get install chromium chromium-driver; the README's test block does it)"
    if not Path(CHROMEDRIVER).exists():
        return f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def _loopback_service(service_class):
    """A chromedriver ``Service`` reached at 127.0.0.1, not at the name ``localhost``: a machine whose
    /etc/hosts has no ``localhost`` line (a fresh debootstrap chroot) otherwise fails with "Can not connect
    to the Service"."""
    from selenium.webdriver.common import utils

    class LoopbackService(service_class):
        @property
        def service_url(self) -> str:
            return f"http://127.0.0.1:{self.port}"

        def is_connectable(self) -> bool:
            return utils.is_connectable(self.port, host="127.0.0.1")

    return LoopbackService(executable_path=CHROMEDRIVER)


def _start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with its DevTools on 127.0.0.1 (a free port it picks itself), and that address.

    chromedriver would start the browser itself and then reach its DevTools at ``localhost``; started here,
    chromedriver attaches to the 127.0.0.1 address (``debuggerAddress``) and no name is resolved."""
    binary = next(shutil.which(c) for c in CHROMIUM if shutil.which(c))
    args = [binary, "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    log = profile.parent / "chromium.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*args, "about:blank"], stdout=subprocess.DEVNULL, stderr=err)
    active = profile / "DevToolsActivePort"   # Chromium writes its port here once DevTools listens

    def port() -> str | None:
        text = active.read_text() if active.exists() else ""
        return text.split()[0] if text.strip() else None

    return proc, "127.0.0.1:" + wait_for(port, "Chromium's DevTools port", proc=proc, log=log, name="chromium")


@pytest.fixture
def browser(tmp_path):
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no browser for the live-view test: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, address = _start_chromium(tmp_path / "chromium")
    opts = webdriver.ChromeOptions()
    opts.debugger_address = address
    try:
        driver = webdriver.Chrome(service=_loopback_service(Service), options=opts)
    except BaseException:
        _stop(chromium)
        raise
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        _stop(chromium)
