"""A CPython stand-in for the parts of MicroPython's ``machine`` module the firmware uses.

Put this folder first on the module path to run ``firmware/pico/main.py``'s logic on a
PC (the tests do it with an import hook, see tests/edge/test_firmware.py). Pins remember
their level and every change, so a test can check exactly what a valve driver saw.
"""


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    board = {}  # id -> Pin, every pin made so far (like the board's header)

    def __init__(self, id, mode=IN, pull=None, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self._value = 0 if value is None else int(bool(value))
        self.history = [self._value]
        Pin.board[id] = self

    def value(self, v=None):
        if v is None:
            return self._value
        v = int(bool(v))
        if v != self._value:
            self.history.append(v)
        self._value = v
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class WDT:
    """The RP2040 hardware watchdog: counts feeds (a real one resets the board when starved)."""

    def __init__(self, id=0, timeout=5000):
        if not 1 <= timeout <= 8388:
            raise ValueError("timeout must be 1..8388 ms on the RP2040")
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class UART:
    def __init__(self, id, baudrate=115200, tx=None, rx=None):
        self.id, self.baudrate, self.tx, self.rx = id, baudrate, tx, rx
        self.rx_buffer = b""
        self.tx_buffer = b""

    def any(self):
        return len(self.rx_buffer)

    def read(self, n=-1):
        n = len(self.rx_buffer) if n is None or n < 0 else n
        data, self.rx_buffer = self.rx_buffer[:n], self.rx_buffer[n:]
        return data or None

    def write(self, data):
        self.tx_buffer += bytes(data)
        return len(data)


class ResetRequested(SystemExit):
    """``machine.reset()`` on a PC: leave the program (a Pico would reboot)."""


def reset():
    raise ResetRequested("machine.reset()")
