"""Reference sprayer controller: the controller side of the serial line protocol.

Pure logic, no I/O: feed it the bytes that arrived on the serial line, write back the
bytes it returns, call ``tick()`` often (every few ms), and drive the valves from
``pins`` (or the ``on_change`` callback). It is what the edge's tests talk to over a
pty, and the core of the Raspberry Pi Pico firmware: this file and
``serial_protocol.py`` are copied to the board as they are, so they are written in the
subset of Python that MicroPython runs (no dataclasses, no typing, no f-strings).

Safety rules it enforces (see docs/serial-protocol.md):
- every channel is off at start and after every HELLO;
- ``ON`` is bounded: a channel switches itself off ``duration_ms`` after its last ON;
- watchdog: when no valid command has arrived for ``watchdog_ms`` after the handshake,
  every channel is switched off;
- nothing but HELLO is obeyed until the handshake (NAK SYNC), so an edge that speaks
  a different protocol version cannot open a valve.

Minimal Pico main loop (the firmware adds UART set-up and the real pins)::

    import time, machine, sys, select
    from serial_controller import Controller
    pins = [machine.Pin(n, machine.Pin.OUT, value=0) for n in (2, 3, 4, 5)]
    ctl = Controller(4, time.ticks_ms, time.ticks_diff,
                     on_change=lambda ch, on: pins[ch].value(1 if on else 0))
    while True:
        data = read_available_bytes()   # UART.read() or USB stdin via select
        if data:
            write_bytes(ctl.feed(data))
        ctl.tick()
"""

try:
    from . import serial_protocol as proto
except ImportError:  # on the Pico both files sit flat in the root of the filesystem
    import serial_protocol as proto

DEFAULT_WATCHDOG_MS = 1000
DEFAULT_MAX_ON_MS = 10000


def _plain_diff(a, b):
    return a - b


class Controller:
    """The controller state machine.

    ``clock_ms()`` returns a millisecond tick count (``time.ticks_ms`` on the Pico, an
    injected clock in tests); ``ticks_diff(a, b)`` returns ``a - b`` in ms and handles
    wrap-around (``time.ticks_diff`` on the Pico; plain subtraction by default).
    ``on_change(channel, on)`` is called on every pin change.
    """

    def __init__(self, channels, clock_ms, ticks_diff=None, watchdog_ms=DEFAULT_WATCHDOG_MS,
                 max_on_ms=DEFAULT_MAX_ON_MS, on_change=None):
        if channels < 1 or channels > proto.MAX_CHANNELS:
            raise ValueError("channels must be 1..%d, got %r" % (proto.MAX_CHANNELS, channels))
        if max_on_ms < 1 or max_on_ms > proto.MAX_DURATION_MS:
            raise ValueError("max_on_ms must be 1..%d, got %r" % (proto.MAX_DURATION_MS, max_on_ms))
        if watchdog_ms < 1:
            raise ValueError("watchdog_ms must be >= 1, got %r" % (watchdog_ms,))
        self.channels = channels
        self.watchdog_ms = watchdog_ms
        self.max_on_ms = max_on_ms
        self._clock = clock_ms
        self._diff = ticks_diff or _plain_diff
        self._on_change = on_change
        self.pins = [False] * channels
        self._since = [0] * channels
        self._duration = [0] * channels
        self.synced = False
        self.version = 0
        self._last_rx = None
        self._tripped = False
        self._splitter = proto.LineSplitter(proto.MAX_LINE)
        # Counters, for a status LED or a debug print.
        self.watchdog_trips = 0
        self.expiries = 0
        self.bad_lines = 0
        self.commands = 0

    # -- input -------------------------------------------------------------------
    def feed(self, data):
        """Bytes received -> bytes to send back (possibly empty). Also runs ``tick()``."""
        out = b""
        for line in self._splitter.feed(data):
            out += self.handle_line(line)
        self.tick()
        return out

    def handle_line(self, line):
        """One line without terminator (or None for an over-long line) -> reply bytes."""
        if line is None:
            self.bad_lines += 1
            return proto.nak(0, proto.E_LEN)
        try:
            msg = proto.decode(line)
        except proto.ProtocolError as err:
            self.bad_lines += 1
            return proto.nak(err.args[1], err.args[0])
        if msg.cmd in proto.REPLIES:
            return b""  # an echo or another controller's reply: never answer a reply
        try:
            values = proto.command_args(msg)
        except proto.ProtocolError as err:
            self.bad_lines += 1
            return proto.nak(err.args[1], err.args[0])
        now = self._clock()
        if msg.cmd == proto.HELLO:
            return self._hello(msg.seq, values[0], now)
        if not self.synced:
            return proto.nak(msg.seq, proto.E_SYNC)
        self._alive(now)
        self.commands += 1
        if msg.cmd == proto.HB:
            return proto.ack(msg.seq)
        if msg.cmd == proto.ALLOFF:
            self.all_off()
            return proto.ack(msg.seq)
        channel = values[0]
        if channel >= self.channels:
            return proto.nak(msg.seq, proto.E_CH)
        if msg.cmd == proto.OFF:
            self._set(channel, False)
            return proto.ack(msg.seq)
        # ON
        duration = values[1]
        if duration < 1 or duration > self.max_on_ms:
            return proto.nak(msg.seq, proto.E_DUR)
        self._since[channel] = now
        self._duration[channel] = duration
        self._set(channel, True)
        return proto.ack(msg.seq)

    def _hello(self, seq, version, now):
        if version < 1:
            return proto.nak(seq, proto.E_VER)
        speak = version if version < proto.PROTOCOL_VERSION else proto.PROTOCOL_VERSION
        self.all_off()  # a (re)started edge begins from all-off
        self.synced = True
        self.version = speak
        self._alive(now)
        info = (speak, self.channels, self.watchdog_ms, self.max_on_ms)
        return proto.hello_ack(seq, info)

    def _alive(self, now):
        self._last_rx = now
        self._tripped = False

    # -- time --------------------------------------------------------------------
    def tick(self):
        """Apply the watchdog and the bounded on-durations; call it every few ms."""
        now = self._clock()
        if self.synced and self._last_rx is not None and not self._tripped:
            if self._diff(now, self._last_rx) >= self.watchdog_ms:
                self._tripped = True
                self.watchdog_trips += 1
                self.all_off()
        for ch in range(self.channels):
            if self.pins[ch] and self._diff(now, self._since[ch]) >= self._duration[ch]:
                self.expiries += 1
                self._set(ch, False)

    # -- outputs -----------------------------------------------------------------
    def all_off(self):
        for ch in range(self.channels):
            self._set(ch, False)

    def _set(self, channel, on):
        if self.pins[channel] != on:
            self.pins[channel] = on
            if self._on_change is not None:
                self._on_change(channel, on)
