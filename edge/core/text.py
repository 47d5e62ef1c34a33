"""Text from outside (file names, bundle names, labels, config keys) made safe for one line.

A photo named ``x\\nERROR edge: FAKE`` would otherwise print a forged log line, an escape
sequence would drive the terminal, and a file name holding a byte that is not UTF-8 (read
by Python as a lone surrogate) makes ``print`` raise ``UnicodeEncodeError`` on a strict
UTF-8 stdout. :func:`one_line` is the one escaping function: every log line (through
:class:`OneLineFormatter`), the ``--print`` line and the error line go through it.
"""

from __future__ import annotations

import logging

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def one_line(text: str) -> str:
    """``text`` as one printable line: newlines, tabs, terminal escapes and the other control
    and format characters, line separators and lone surrogates become backslash escapes
    (``\\n``, ``\\x1b``, ``\\u2028``; a non-UTF-8 byte read from a file name as ``\\xff``).
    Printable text, spaces included, is returned as it is."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


class OneLineFormatter(logging.Formatter):
    """Each record is one line: the formatted message (a file name, a bundle's label in it) goes
    through :func:`one_line`, so no input can forge a log line or drive the terminal. The newline
    between records is the handler's; an internal error's traceback keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))
