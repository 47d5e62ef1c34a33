"""Argument types shared by the command lines (``edge-run`` and the tools in ``tools/``)."""

from __future__ import annotations

import argparse
from typing import Callable


def given(what: str) -> Callable[[str], str]:
    """An argparse type for a flag's value that names something (a file, a folder, a bundle, a URL): an
    empty value is refused (exit 2). ``--video "$UNSET"`` would otherwise run the config's source (by
    default the live camera), ``--config "$UNSET"`` the built-in dry-run defaults, ``--images "$UNSET"``
    the current folder. To turn a setting off, write it as "" in the config."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got an empty value")
        return text
    return check
