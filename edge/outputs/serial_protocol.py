"""Sprayer-controller line protocol, version 1: pure encode/decode, no I/O.

One message per line, printable ASCII::

    $WD,<seq>,<CMD>[,<arg>...]*<CC>\\n

``CC`` is the CRC-8/SMBUS (polynomial 0x07, init 0x00, no reflection) of every byte
between ``$`` and ``*`` (exclusive), as two upper-case hex digits. The full
specification with examples is ``docs/serial-protocol.md``.

This module is shared by the edge (``serial_out.py``) and the controller
(``serial_controller.py``, which also runs on a Raspberry Pi Pico under MicroPython), so
it sticks to what MicroPython supports: no dataclasses, no typing, no f-strings, no
``from __future__``; ``collections.namedtuple`` and plain exceptions only. Every function
is total: bad input raises ``ProtocolError`` (a ``ValueError``) and nothing else.
"""

from collections import namedtuple

PROTOCOL_VERSION = 1
TALKER = "WD"
MAX_LINE = 80  # bytes, without the line terminator
MAX_SEQ = 65535  # the edge numbers commands 1..65535 and wraps to 1; 0 = "unknown"
MAX_CHANNELS = 64
MAX_DURATION_MS = 60000  # protocol ceiling for ON; a controller may announce less

# Commands (edge -> controller)
HELLO = "HELLO"
ON = "ON"
OFF = "OFF"
ALLOFF = "ALLOFF"
HB = "HB"
COMMANDS = (HELLO, ON, OFF, ALLOFF, HB)
# Replies (controller -> edge)
ACK = "ACK"
NAK = "NAK"
REPLIES = (ACK, NAK)

# NAK reason codes. RETRYABLE ones mean "the line was damaged": send it again.
E_CHK = "CHK"  # checksum mismatch
E_FMT = "FMT"  # not a $WD,...*CC frame (missing field, bad seq, non-ASCII byte)
E_LEN = "LEN"  # line longer than MAX_LINE
E_CMD = "CMD"  # unknown command
E_ARG = "ARG"  # wrong number of arguments or not a decimal number
E_CH = "CH"  # channel outside 0..channels-1
E_DUR = "DUR"  # duration outside 1..max_on_ms
E_VER = "VER"  # no protocol version in common
E_SYNC = "SYNC"  # command before HELLO (controller restarted): handshake again
ERROR_CODES = (E_CHK, E_FMT, E_LEN, E_CMD, E_ARG, E_CH, E_DUR, E_VER, E_SYNC)
RETRYABLE = (E_CHK, E_FMT, E_LEN)

# Number of arguments each command takes, and how many a HELLO ACK carries.
_ARITY = {HELLO: 1, ON: 2, OFF: 1, ALLOFF: 0, HB: 0}
HELLO_ACK_FIELDS = 4  # version, channels, watchdog_ms, max_on_ms

# One decoded line: seq (int), cmd (str), args (tuple of str).
Message = namedtuple("Message", ("seq", "cmd", "args"))

# What a controller announces in its ACK to HELLO (all ints).
HelloInfo = namedtuple("HelloInfo", ("version", "channels", "watchdog_ms", "max_on_ms"))


class ProtocolError(ValueError):
    """A line that breaks the protocol. ``args`` = (code, seq, detail).

    ``code`` is one of ``ERROR_CODES`` (the controller sends it back in a NAK);
    ``seq`` is the line's sequence number when it could be read, else 0.
    Always raised with all three arguments: MicroPython builds ``args`` from the
    call, so there is no ``__init__`` with defaults.
    """

    @property
    def code(self):
        return self.args[0]

    @property
    def seq(self):
        return self.args[1]

    @property
    def detail(self):
        return self.args[2]

    def __str__(self):
        return "%s (seq %d): %s" % (self.args[0], self.args[1], self.args[2])


def crc8(data):
    """CRC-8/SMBUS of ``data`` (bytes): poly 0x07, init 0, no reflection, xorout 0.

    ``crc8(b"123456789") == 0xF4`` (the catalogued check value).
    """
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def _field_ok(text):
    if not text:
        return False
    for ch in text:
        o = ord(ch)
        if o < 0x21 or o > 0x7E or ch in ",*$":
            return False
    return True


def _name_ok(text):
    if not text or len(text) > 8:
        return False
    for ch in text:
        if ch < "A" or ch > "Z":
            return False
    return True


def encode(seq, cmd, args=()):
    """The wire bytes of one message, terminated by ``\\n``.

    Raises ``ProtocolError`` (code FMT/LEN) for a field the receiver could not parse.
    """
    if not isinstance(seq, int) or seq < 0 or seq > MAX_SEQ:
        raise ProtocolError(E_FMT, 0, "seq must be an int in 0..%d, got %r" % (MAX_SEQ, seq))
    if not isinstance(cmd, str) or not _name_ok(cmd):
        raise ProtocolError(E_FMT, seq, "command %r is not 1..8 upper-case letters" % (cmd,))
    fields = [TALKER, str(seq), cmd]
    for arg in args:
        fields.append(arg if isinstance(arg, str) else str(arg))
    for text in fields[3:]:
        if not isinstance(text, str) or not _field_ok(text):
            raise ProtocolError(E_FMT, seq, "field %r is empty or has a byte outside 0x21..0x7E or one of ,*$" % (text,))
    body = ",".join(fields).encode()
    if len(body) + 4 > MAX_LINE:
        raise ProtocolError(E_LEN, seq, "message is %d bytes, more than %d" % (len(body) + 4, MAX_LINE))
    return b"$" + body + ("*%02X\n" % crc8(body)).encode()


def _uint(text, limit):
    # A decimal number without sign, spaces or leading '+' (int() would accept those).
    if not text or len(text) > 9:
        return None
    for ch in text:  # ASCII digits only (str.isdigit() accepts other scripts)
        if ch < "0" or ch > "9":
            return None
    value = int(text)
    if value > limit:
        return None
    return value


def _guess_seq(body):
    parts = body.split(b",")
    if len(parts) > 1:
        try:
            seq = _uint(parts[1].decode(), MAX_SEQ)
        except Exception:  # UnicodeError on CPython; MicroPython may not validate
            seq = None
        if seq is not None:
            return seq
    return 0


_HEX = "0123456789ABCDEFabcdef"


def decode(line):
    """Parse one line (bytes, with or without ``\\r\\n``) into a ``Message``.

    Checks framing, printable ASCII, the checksum, the talker, the sequence number and
    that the command/reply name is upper-case letters; argument meaning is checked by
    ``command_args`` / ``parse_hello_ack`` / ``nak_code``.
    """
    if not isinstance(line, (bytes, bytearray)):
        raise ProtocolError(E_FMT, 0, "expected bytes, got %s" % type(line).__name__)
    line = bytes(line)
    while line and line[-1] in (10, 13):
        line = line[:-1]
    if len(line) > MAX_LINE:
        raise ProtocolError(E_LEN, 0, "line is %d bytes, more than %d" % (len(line), MAX_LINE))
    for byte in line:
        if byte < 0x20 or byte > 0x7E:
            raise ProtocolError(E_FMT, 0, "byte 0x%02X is not printable ASCII" % byte)
    if len(line) < 5 or line[0] != 0x24 or line[-3] != 0x2A:  # '$' ... '*CC'
        raise ProtocolError(E_FMT, 0, "not a $...*CC frame: %r" % (line,))
    body = line[1:-3]
    seq_guess = _guess_seq(body)
    cc = line[-2:].decode()
    if cc[0] not in _HEX or cc[1] not in _HEX:
        raise ProtocolError(E_FMT, seq_guess, "checksum %r is not two hex digits" % cc)
    expected = crc8(body)
    if int(cc, 16) != expected:
        raise ProtocolError(E_CHK, seq_guess, "checksum is %s, the line's bytes give %02X" % (cc, expected))
    parts = body.decode().split(",")
    if len(parts) < 3:
        raise ProtocolError(E_FMT, seq_guess, "need at least $WD,<seq>,<CMD>")
    if parts[0] != TALKER:
        raise ProtocolError(E_FMT, seq_guess, "talker is %r, expected %r" % (parts[0], TALKER))
    seq = _uint(parts[1], MAX_SEQ)
    if seq is None:
        raise ProtocolError(E_FMT, 0, "sequence number %r is not 0..%d" % (parts[1], MAX_SEQ))
    cmd = parts[2]
    if not _name_ok(cmd):
        raise ProtocolError(E_FMT, seq, "command %r is not 1..8 upper-case letters" % cmd)
    args = tuple(parts[3:])
    for arg in args:
        if not _field_ok(arg):
            raise ProtocolError(E_FMT, seq, "empty argument in %r" % (line,))
    return Message(seq, cmd, args)


def command_args(msg):
    """Validate a command's arguments; returns them as a tuple of ints.

    HELLO -> (version,), ON -> (channel, duration_ms), OFF -> (channel,),
    ALLOFF / HB -> (). Ranges against a controller's limits are the controller's job.
    """
    arity = _ARITY.get(msg.cmd)
    if arity is None:
        raise ProtocolError(E_CMD, msg.seq, "unknown command %r" % msg.cmd)
    if len(msg.args) != arity:
        raise ProtocolError(E_ARG, msg.seq, "%s takes %d argument(s), got %d" % (msg.cmd, arity, len(msg.args)))
    values = []
    for arg in msg.args:
        value = _uint(arg, 999999999)
        if value is None:
            raise ProtocolError(E_ARG, msg.seq, "%s argument %r is not a decimal number" % (msg.cmd, arg))
        values.append(value)
    return tuple(values)


def parse_hello_ack(msg):
    """The ``HelloInfo`` carried by an ACK to HELLO; ProtocolError(ARG) when malformed."""
    if msg.cmd != ACK or len(msg.args) != HELLO_ACK_FIELDS:
        raise ProtocolError(E_ARG, msg.seq, "HELLO ACK must carry version,channels,watchdog_ms,max_on_ms; got %r" % (msg,))
    values = []
    for arg in msg.args:
        value = _uint(arg, 999999999)
        if value is None:
            raise ProtocolError(E_ARG, msg.seq, "HELLO ACK field %r is not a decimal number" % arg)
        values.append(value)
    version, channels, watchdog_ms, max_on_ms = values
    if version < 1 or channels < 1 or channels > MAX_CHANNELS or watchdog_ms < 1:
        raise ProtocolError(E_ARG, msg.seq, "HELLO ACK values out of range: %r" % (msg.args,))
    if max_on_ms < 1 or max_on_ms > MAX_DURATION_MS:
        raise ProtocolError(E_ARG, msg.seq, "HELLO ACK max_on_ms %d outside 1..%d" % (max_on_ms, MAX_DURATION_MS))
    return HelloInfo(version, channels, watchdog_ms, max_on_ms)


def nak_code(msg):
    """The reason code of a NAK (unknown codes are returned as they are)."""
    if msg.cmd != NAK or len(msg.args) != 1:
        raise ProtocolError(E_ARG, msg.seq, "NAK must carry exactly one reason code; got %r" % (msg,))
    return msg.args[0]


# Builders: one per message, so callers never spell a command by hand.
def hello(seq, version=PROTOCOL_VERSION):
    return encode(seq, HELLO, (version,))


def on(seq, channel, duration_ms):
    return encode(seq, ON, (channel, duration_ms))


def off(seq, channel):
    return encode(seq, OFF, (channel,))


def all_off(seq):
    return encode(seq, ALLOFF)


def heartbeat(seq):
    return encode(seq, HB)


def ack(seq, args=()):
    return encode(seq, ACK, args)


def nak(seq, code):
    return encode(seq, NAK, (code,))


def hello_ack(seq, info):
    return encode(seq, ACK, (info[0], info[1], info[2], info[3]))


class LineSplitter:
    """Accumulates received bytes and yields complete lines (without the terminator).

    A line longer than ``max_len`` is dropped up to its newline and reported once as
    ``None`` so the receiver can answer ``NAK LEN``; empty lines are skipped.
    """

    def __init__(self, max_len=MAX_LINE):
        self._max = max_len + 1  # room for a '\\r' before the '\\n'
        self._buf = b""
        self._overflow = False

    def feed(self, data):
        lines = []
        buf = self._buf + bytes(data)
        start = 0  # walk the lines by index: one pass over a large chunk, not a copy per line
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if self._overflow or len(line) > self._max:
                self._overflow = False
                lines.append(None)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                lines.append(line)
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            self._buf = b""
            self._overflow = True
        return lines

    def clear(self):
        self._buf = b""
        self._overflow = False
