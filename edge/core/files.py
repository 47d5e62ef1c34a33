"""Reading a file a user named (the config, a bundle's manifest and model) without surprises.

``/dev/urandom`` given as a config would be read forever, a FIFO would block ``open``, a
folder or a device would be reported as "missing". :func:`open_regular` checks what the
path is with ``os.stat`` before opening it (never opening a FIFO or a device: opening a
serial port can reset the board behind it), opens it without blocking, checks the opened
file again, and refuses a file larger than the cap. ``FileRefused`` says what the path is
(:func:`file_kind`), for the caller to turn into its own error with a fix.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISREG, "a regular file"),
)


class FileRefused(Exception):
    """A path that is not a readable regular file of at most the size cap. ``str()`` says what
    it is, e.g. ``is a FIFO (named pipe), not a regular file``; ``missing`` is True when
    nothing (or a dangling symlink) is there, ``io_error`` when the system refused to read it."""

    def __init__(self, problem: str, missing: bool = False, io_error: bool = False, too_large: bool = False):
        super().__init__(problem)
        self.missing = missing
        self.too_large = too_large  # a regular file, larger than the cap
        self.io_error = io_error  # the system refused the read (EMFILE, EIO, EACCES): may pass when tried again


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is: ``a folder``, ``a FIFO (named pipe)``, ``a character device`` ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check(st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"is {file_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise FileRefused(f"is {st.st_size:,} bytes, more than the {max_bytes:,} bytes such a file can be",
                          too_large=True)


def check_regular(path: str | os.PathLike, max_bytes: int) -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed) if it is a regular file of at most ``max_bytes``;
    ``FileRefused`` otherwise. Nothing is opened."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise FileRefused("does not exist", missing=True) from None
    except OSError as e:
        raise FileRefused(f"cannot be read ({e.strerror or e})", io_error=True) from None
    except ValueError as e:  # a NUL byte in the path
        raise FileRefused(f"is not a usable path ({e})") from None
    _check(st, max_bytes)
    return st


def open_regular(path: str | os.PathLike, max_bytes: int) -> BinaryIO:
    """``path`` opened for reading (binary) once :func:`check_regular` passed; the opened file is
    checked again (a file swapped in between is refused too). ``FileRefused`` otherwise."""
    check_regular(path, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise FileRefused(f"cannot be read ({e.strerror or e})", io_error=True) from None
    try:
        _check(os.fstat(fd), max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`); a file that
    grew past the cap while being read is refused too."""
    with open_regular(path, max_bytes) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise FileRefused(f"cannot be read ({e.strerror or e})", io_error=True) from None
    if len(data) > max_bytes:
        raise FileRefused(f"is more than the {max_bytes:,} bytes such a file can be", too_large=True)
    return data


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is inside ``folder`` once both are resolved (symlinks followed, ``..`` removed)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def write_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all: into a temporary file in the same folder, then renamed
    over ``path`` (a reader sees the old file or the new one, never half of one; a crash leaves at most a
    hidden ``.<name>.*.tmp`` behind). ``durable``: flushed to the disk before the rename, so that a power
    loss cannot leave an empty file either (an fsync: milliseconds to tens of them on an SD card; the run
    loop's writers pass False, their readers skip an unreadable file). ``OSError`` when it cannot be
    written (the temporary file is removed)."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_output(flag: str, path: str) -> None:
    """A result file (``--json FILE``) that cannot be written, said before the work that fills it rather than after it
    (``ConfigError``, exit 3, naming ``flag``): opened to append (never truncated here), and removed again if it was
    not there before (a run refused later leaves no empty file behind); a FIFO or a device is refused without
    blocking on it."""
    from edge.core.errors import ConfigError
    from edge.core.jsonl import cannot_write  # the one "cannot write" message

    fix = f"give {flag} a file in a folder you can write to"

    def regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise ConfigError(f"cannot write the {flag} file {path!r}: it is {file_kind(mode)}", fix)

    with contextlib.suppress(OSError, ValueError):  # not there yet (or unusable): the open below says why
        regular(os.stat(path).st_mode)  # a FIFO or a device is never opened
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY
    try:
        try:
            fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            fd, created = os.open(path, flags | os.O_APPEND), False
    except (OSError, ValueError) as e:
        raise cannot_write(f"{flag} file", path, e, ConfigError, fix) from None
    try:
        regular(os.fstat(fd).st_mode)  # ... nor one swapped in meanwhile
    finally:
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.unlink(path)
