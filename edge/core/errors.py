"""Errors a user can fix, each with an exit code of its own.

Every message says what was wrong and how to fix it. The CLI prints ``str(err)`` as one
line and exits with ``err.exit_code``; anything else is an internal error (exit 1).
"""

from __future__ import annotations

# Exit codes (documented in the README and listed in the systemd unit's
# RestartPreventExitStatus= so that a bad config does not restart forever).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # argparse's own code for bad command-line arguments
EXIT_CONFIG = 3
EXIT_BUNDLE = 4
EXIT_SOURCE = 5
EXIT_OUTPUT = 6
EXIT_RUNTIME = 7  # no LiteRT / TFLite runtime importable
EXIT_STALL = 8  # the frame source stopped delivering frames and did not recover


class WeedDetectorError(Exception):
    """Base class: a problem the user can fix. ``str()`` is the one-line message."""

    exit_code = EXIT_INTERNAL

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(f"{what} — {fix}" if fix else what)


class ConfigError(WeedDetectorError):
    """The TOML config or a command-line option is invalid."""

    exit_code = EXIT_CONFIG


class BundleError(WeedDetectorError):
    """A model bundle is missing, corrupt, or disagrees with its manifest."""

    exit_code = EXIT_BUNDLE


class SourceError(WeedDetectorError):
    """A frame source (camera, video, image folder, stream) cannot be opened or read."""

    exit_code = EXIT_SOURCE


class OutputError(WeedDetectorError):
    """An output (GPIO pin, serial controller) cannot be set up or switched."""

    exit_code = EXIT_OUTPUT


class RuntimeMissingError(WeedDetectorError):
    """No TFLite interpreter implementation could be imported."""

    exit_code = EXIT_RUNTIME


class StallError(WeedDetectorError):
    """No frame arrived within the stall timeout and the source did not come back."""

    exit_code = EXIT_STALL
