"""A closed stdout (``edge-run --print | head``, ``edge-replay --json | head``): the one way to end on it.

SIGPIPE stays ignored, as Python sets it (a closed socket inside a library must not end a run), so
writing to a stdout whose reader went away raises ``BrokenPipeError``; the commands catch it, call
:func:`stdout_to_devnull` and exit ``EXIT_BROKEN_PIPE``, without a traceback.
"""

from __future__ import annotations

import os
import sys

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13): what a shell shows for a writer killed by SIGPIPE


def stdout_to_devnull() -> None:
    """After a BrokenPipeError on stdout: what Python still holds for it goes nowhere, so the flush
    at exit prints no "Exception ignored" (the Python docs' recipe, 'Note on SIGPIPE')."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # no real file behind sys.stdout (pytest's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
