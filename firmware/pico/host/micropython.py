"""CPython stand-in for MicroPython's ``micropython`` module (only what the firmware uses)."""

kbd_intr_char = 3


def kbd_intr(char):
    """MicroPython: which byte raises KeyboardInterrupt on the USB REPL (-1 = none)."""
    global kbd_intr_char
    kbd_intr_char = char
