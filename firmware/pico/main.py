# Reference sprayer-controller firmware for a Raspberry Pi Pico / Pico W (MicroPython).
#
# It speaks the weed-detector serial protocol v1 (docs/serial-protocol.md) over USB CDC
# (the Pico appears as /dev/ttyACM0 on the Pi/Jetson) or over UART0 (GP0 TX, GP1 RX),
# and switches one valve driver per channel. The protocol logic is
# edge/outputs/serial_controller.py + serial_protocol.py, copied next to this file
# unchanged (see firmware/pico/README.md). Safety, in layers:
#   - every output is driven off before anything else runs, and after every HELLO;
#   - every ON is bounded by its duration; no valid command for WATCHDOG_MS -> all off;
#   - the RP2040 hardware watchdog resets the board if this loop ever hangs; a reset
#     Pico's pins are inputs, so the board's pull-down (pull-up for active-low drivers)
#     resistors must hold every valve closed (docs/deploy.md, "hardware fail-safe");
#   - any exception: all off, then a reset.
#
# Written in the MicroPython subset (no f-strings, no typing). On a PC the same file runs
# under CPython with the small pin shim in firmware/pico/host/ (used by the tests).

import sys
import time

import machine

try:
    import micropython
except ImportError:  # pragma: no cover - CPython without the shim
    micropython = None

from serial_controller import Controller

# ---- configuration (edit for your board) --------------------------------------------
CHANNEL_PINS = (2, 3, 4, 5)  # GPn driving each valve driver / relay input, channel 0 first
ACTIVE_HIGH = True  # False for relay boards that switch on a LOW input
TRANSPORT = "usb"  # "usb" (USB CDC, /dev/ttyACM0) or "uart" (UART0: GP0 TX, GP1 RX)
UART_BAUD = 115200
WATCHDOG_MS = 1000  # all off when the edge has been silent this long (it heart-beats every 200 ms)
MAX_ON_MS = 10000  # the longest ON duration accepted
HW_WATCHDOG_MS = 2000  # RP2040 hardware watchdog (max 8388): resets the board if this loop hangs
LED_PIN = "LED"  # on-board LED: blinks while idle, lit while any valve is open
# ---------------------------------------------------------------------------------------


class Valves:
    """The output pins, driven off first thing; ``set(ch, on)`` respects ACTIVE_HIGH."""

    def __init__(self, pin_ids, active_high=True, pin_class=None):
        pin_class = pin_class or machine.Pin
        self.active_high = active_high
        off = 0 if active_high else 1
        self.pins = [pin_class(n, pin_class.OUT, value=off) for n in pin_ids]

    def set(self, channel, on):
        self.pins[channel].value(1 if on == self.active_high else 0)

    def all_off(self):
        for ch in range(len(self.pins)):
            self.set(ch, False)


class UsbLink:
    """USB CDC through MicroPython's stdin/stdout (Ctrl-C handling must be off)."""

    def __init__(self):
        import select

        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)

    def read(self):
        data = b""
        while len(data) < 256 and self._poll.poll(0):
            byte = self._in.read(1)
            if not byte:
                break
            data += byte
        return data

    def write(self, data):
        self._out.write(data)


class UartLink:
    """UART0 on GP0 (TX) / GP1 (RX), 8N1."""

    def __init__(self, baud=UART_BAUD):
        self._uart = machine.UART(0, baudrate=baud, tx=machine.Pin(0), rx=machine.Pin(1))

    def read(self):
        n = self._uart.any()
        return self._uart.read(n) if n else b""

    def write(self, data):
        self._uart.write(data)


class Firmware:
    """One controller on one link; ``step()`` is one turn of the main loop."""

    def __init__(self, link, valves, clock_ms, ticks_diff, wdt=None, led=None,
                 watchdog_ms=WATCHDOG_MS, max_on_ms=MAX_ON_MS):
        self.link = link
        self.valves = valves
        self.wdt = wdt
        self.led = led
        self._clock = clock_ms
        self._diff = ticks_diff
        self.ctl = Controller(len(valves.pins), clock_ms, ticks_diff, watchdog_ms=watchdog_ms,
                              max_on_ms=max_on_ms, on_change=valves.set)
        self._blink_at = clock_ms()

    def step(self):
        data = self.link.read()
        if data:
            reply = self.ctl.feed(data)
            if reply:
                self.link.write(reply)
        else:
            self.ctl.tick()
        if self.wdt is not None:
            self.wdt.feed()
        if self.led is not None:
            self._show()

    def _show(self):
        if any(self.ctl.pins):
            self.led.value(1)
            return
        now = self._clock()
        if self._diff(now, self._blink_at) >= (100 if self.ctl.synced else 500):
            self._blink_at = now
            self.led.value(0 if self.led.value() else 1)

    def run(self):
        try:
            while True:
                self.step()
        finally:
            self.valves.all_off()


def main():
    valves = Valves(CHANNEL_PINS, ACTIVE_HIGH)  # off before anything else can fail
    try:
        if TRANSPORT == "usb":
            if micropython is not None:
                micropython.kbd_intr(-1)  # a stray 0x03 on the line must not stop the firmware
            link = UsbLink()
        else:
            link = UartLink()
        wdt = machine.WDT(timeout=HW_WATCHDOG_MS)
        try:
            led = machine.Pin(LED_PIN, machine.Pin.OUT, value=0)
        except (TypeError, ValueError):  # boards without a named LED
            led = None
        Firmware(link, valves, time.ticks_ms, time.ticks_diff, wdt=wdt, led=led).run()
    finally:
        valves.all_off()
        machine.reset()


if __name__ == "__main__":
    main()
