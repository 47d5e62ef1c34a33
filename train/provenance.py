"""What a bundle records about how it was made: the command line and the time."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from typing import Sequence


def command_line(argv: Sequence[str] | None = None) -> str:
    """The `weed-train ...` command of this run, quoted for a shell."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "weed-train " + " ".join(shlex.quote(a) for a in args)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
