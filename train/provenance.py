"""What a bundle records about how it was made: the command line and the time.

The recorded command is portable: its file and folder arguments are written relative to
the root of the checkout the command ran in (the nearest folder up from the working
directory holding ``.git``), or relative to the working directory outside a checkout --
never as the training machine's absolute paths. Run from that root, the command
reproduces the bundle; :func:`recorded_args` turns the paths back for the current
working directory (``weed-train threshold`` re-reads the training command).
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

# Options of `weed-train` whose value is always a file or folder.
PATH_OPTIONS = frozenset({"--data", "--csv", "--mix-with", "--roles", "--groups", "--val-dir", "--test-dir", "--out",
                          "--archive"})
# Options whose value is a folder or a word: --background auto|none|FOLDER, --model / --from-bundle NAME|FOLDER.
MAYBE_PATH_OPTIONS = frozenset({"--background", "--model", "--from-bundle"})
_WORDS = frozenset({"auto", "none"})


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkout_root(start: Path) -> Path | None:
    """The checkout ``start`` is in: the nearest folder holding ``.git`` (a clone's folder or a worktree's file)."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def command_base(cwd: Path | None = None) -> Path:
    """Where a recorded command's relative paths start: the checkout's root, else the working directory."""
    cwd = Path.cwd() if cwd is None else Path(os.path.abspath(cwd))
    return checkout_root(cwd) or cwd


def portable_path(path: str | os.PathLike, cwd: Path | None = None) -> str:
    """``path`` (absolute, or relative to the working directory) relative to :func:`command_base`."""
    cwd = Path.cwd() if cwd is None else Path(os.path.abspath(cwd))
    return _rebase(os.fspath(path), cwd, command_base(cwd))


def command_line(argv: Sequence[str] | None = None, cwd: Path | None = None) -> str:
    """The `weed-train ...` command of this run, quoted for a shell, with portable paths."""
    args = list(sys.argv[1:] if argv is None else argv)
    cwd = Path.cwd() if cwd is None else Path(os.path.abspath(cwd))
    return "weed-train " + " ".join(shlex.quote(a) for a in rebase_paths(args, cwd, command_base(cwd)))


def recorded_args(command: str, cwd: Path | None = None) -> list[str]:
    """The words of a recorded command (``weed-train`` first), its paths relative to the working directory again."""
    cwd = Path.cwd() if cwd is None else Path(os.path.abspath(cwd))
    words = shlex.split(command)
    return words[:1] + rebase_paths(words[1:], command_base(cwd), cwd)


def rebase_paths(args: Sequence[str], src: Path, dst: Path) -> list[str]:
    """``args`` with the value of each path option, relative to ``src`` (or absolute), made relative to ``dst``."""
    out: list[str] = []
    option = None  # the option whose value the next word is
    for arg in args:
        if option is not None:
            out.append(_rebase_value(option, arg, src, dst))
            option = None
        elif arg in PATH_OPTIONS or arg in MAYBE_PATH_OPTIONS:
            out.append(arg)
            option = arg
        elif "=" in arg and arg.split("=", 1)[0] in PATH_OPTIONS | MAYBE_PATH_OPTIONS:
            name, value = arg.split("=", 1)
            out.append(f"{name}={_rebase_value(name, value, src, dst)}")
        else:
            out.append(arg)
    return out


def _rebase_value(option: str, value: str, src: Path, dst: Path) -> str:
    if option in MAYBE_PATH_OPTIONS and not _looks_like_a_path(value, src):
        return value
    return _rebase(value, src, dst)


def _looks_like_a_path(value: str, src: Path) -> bool:
    if value in _WORDS:
        return False
    return os.sep in value or "/" in value or value.startswith(".") or (src / value).exists()


def _rebase(value: str, src: Path, dst: Path) -> str:
    if not value or (src == dst and not os.path.isabs(value)):
        return value
    try:
        return os.path.relpath(os.path.join(src, value), dst)
    except ValueError:  # another drive (Windows): no relative path exists
        return value
