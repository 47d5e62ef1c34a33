"""Every way an edge-run process can end leaves every valve off (docs/deploy.md, "Signals").

Real ``edge-run`` processes (tests/edge/helpers.py), spraying on a looping weed image, are
stopped by each signal: the dry-run state file must end with every channel off and a
``closed`` line, a serial controller's pins must end off. What no process can catch
(SIGKILL, the OOM killer) is covered by ``edge-run --all-off``, the systemd unit's
``ExecStopPost=``.
"""

import os
import select
import signal
from pathlib import Path

import pytest

from edge.cli import EXIT_BROKEN_PIPE, main
from edge.core.errors import EXIT_CONFIG, EXIT_OK, EXIT_OUTPUT
from edge.outputs.dryrun import read_state_file
from tests.edge.helpers import start_edge_run, stop_edge_run, wait_until


def _states(state: Path) -> list[dict]:
    return read_state_file(state) if state.exists() else []  # a line being written is skipped


def _valves(state: Path) -> list[bool] | None:
    """What the dry-run state file says the valves are now (None: nothing written yet)."""
    lines = _states(state)
    return lines[-1]["state"] if lines else None


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def close_stdout(proc, _state):
    """What ``edge-run --print | head`` does once head has its lines: the pipe's reader goes away."""
    proc.stdout.close()


def suspend_and_resume(proc, state):
    """Ctrl-Z: every output off while the process is stopped; fg: spraying again; then SIGTERM."""
    proc.send_signal(signal.SIGTSTP)
    wait_until(lambda: _process_state(proc.pid) == "T", "edge-run to stop", proc)
    stopped = _states(state)
    assert stopped[-1]["state"] == [False, False] and stopped[-1]["event"] == "suspended"
    proc.send_signal(signal.SIGCONT)
    wait_until(lambda: [True, True] in [x["state"] for x in _states(state)[len(stopped):]], "spraying after fg", proc)
    proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("stop, args, code, said", [
    pytest.param(signal.SIGTERM, [], EXIT_OK, "SIGTERM received", id="TERM"),  # a requested stop: 0
    pytest.param(signal.SIGINT, [], EXIT_OK, "SIGINT received", id="INT"),
    pytest.param(signal.SIGHUP, [], 128 + signal.SIGHUP, "SIGHUP received", id="HUP"),  # a dropped SSH session
    pytest.param(signal.SIGQUIT, [], 128 + signal.SIGQUIT, "SIGQUIT received", id="QUIT"),
    pytest.param(signal.SIGABRT, [], 128 + signal.SIGABRT, "SIGABRT received", id="ABRT"),  # systemd's watchdog
    pytest.param(signal.SIGUSR1, [], 128 + signal.SIGUSR1, "SIGUSR1 received", id="USR1"),
    pytest.param(signal.SIGALRM, [], 128 + signal.SIGALRM, "SIGALRM received", id="ALRM"),
    pytest.param(suspend_and_resume, [], EXIT_OK, "SIGTSTP received", id="TSTP+CONT"),
    pytest.param(close_stdout, ["--print"], EXIT_BROKEN_PIPE, "stdout was closed", id="PIPE"),
])
def test_every_way_to_stop_edge_run_leaves_every_output_off(stop, args, code, said, tmp_path):
    proc, state = start_edge_run(args, tmp_path)
    err = stop_edge_run(proc, state, stop, code)
    assert said in err
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.fixture
def controller():
    """The reference controller on a pty, 2 channels; its clock is manual, so its watchdog never
    closes a valve by itself here: whatever closes one is edge-run."""
    from tests.edge.test_serial_protocol import ControllerPeer

    peer = ControllerPeer(channels=2)
    yield peer
    peer.close()


def test_a_signal_switches_the_serial_controllers_valves_off(controller, tmp_path):
    proc, _ = start_edge_run(["--output", "serial", "--serial-port", controller.path], tmp_path,
                             ready=lambda _state: controller.ctl.pins == [True, True])
    err = stop_edge_run(proc, None, signal.SIGHUP, 128 + signal.SIGHUP)
    assert controller.ctl.pins == [False, False] and controller.commands()[-1] == "ALLOFF"
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["dryrun", "serial"])
def test_all_off_switches_off_what_a_killed_process_left_on(kind, controller, tmp_path, capsys):
    """SIGKILL (or the OOM killer) ends edge-run mid-spray; ``edge-run --all-off`` (ExecStopPost=)
    switches the valves off after it, without the model."""
    state = tmp_path / "state.jsonl"
    args, valves = {
        "dryrun": (["--channels", "2", "--state-file", str(state)], lambda: _valves(state)),
        "serial": (["--output", "serial", "--serial-port", controller.path], lambda: list(controller.ctl.pins)),
    }[kind]
    proc, _ = start_edge_run(args, tmp_path, ready=lambda _state: valves() == [True, True])
    proc.kill()
    proc.communicate(timeout=30)
    assert valves() == [True, True]  # nothing left that could switch them off
    assert main(["--all-off", "-q", *args]) == EXIT_OK
    assert valves() == [False, False]
    assert capsys.readouterr().out == f"all off: {kind} outputs, 2 channel(s)\n"
    assert kind != "dryrun" or _states(state)[-1]["event"] == "closed"


@pytest.mark.parametrize("config, args, code, said", [
    ("", ["--channels", "3"], EXIT_OK, "all off: dryrun outputs, 3 channel(s)"),
    ("", ["--model", "/no/such/bundle"], EXIT_OK, "all off: dryrun outputs, 1 channel(s)"),  # no model is loaded
    # the enable switch (pin 22, off) is not even read: switching off never waits for it
    ("[safety]\nenable_pin = 22\n", ["--output", "gpio", "--pins", "17,27"], EXIT_OK, "all off: gpio outputs, 2"),
    ("[outputs\n", [], EXIT_CONFIG, "edge-run: error:"),  # GPIO pins then stay as they are: docs/deploy.md
    ("", ["--output", "serial", "--serial-port", "/dev/no-such-tty"], EXIT_OUTPUT, "cannot open serial port"),
])
def test_all_off(config, args, code, said, mock_pins, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(config)
    assert main(["--config", str(cfg), "--all-off", "-q", *args]) == code  # as the systemd unit runs it
    out, err = capsys.readouterr()
    assert said in out + err and "Traceback" not in err
    assert len((out + err).strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_ends_it_at_once(sig, tmp_path):
    """edge-run waits for a controller that never answers its HELLO (10 tries of 10 s): a stop
    signal ends the start-up right there, 128 + its number, one line, no traceback."""
    master, slave = os.openpty()
    heard = bytearray()

    def hello_sent(_state):
        while select.select([master], [], [], 0)[0]:
            heard.extend(os.read(master, 4096))
        return b"HELLO" in heard

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[outputs]\nkind = "serial"\nport = "{os.ttyname(slave)}"\nack_timeout_s = 10\nretries = 10\n')
    try:
        proc, _ = start_edge_run(["--config", str(cfg)], tmp_path, ready=hello_sent)
        err = stop_edge_run(proc, None, sig, 128 + sig)
    finally:
        os.close(master)
        os.close(slave)
    assert f"stopped by {sig.name} during start-up" in err and "Traceback" not in err, err
