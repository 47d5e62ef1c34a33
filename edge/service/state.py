"""The service's state directory: the spray pause and the saved tuning, kept across restarts.

The systemd unit's ``ProtectSystem=strict`` makes /etc read-only, and the user's TOML is
never rewritten: what the live view changes is kept here, in ``[service] state_dir`` or
else ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``, /var/lib/weed-detector). Without
either there is no state directory: a pause lasts until the process ends and saving the
tuning is refused (the message says how to get one).

- ``paused.json`` — present while spraying is paused from the live page: ``{"paused": true,
  "wall": ..., "by": ...}``. Read at every start (with or without the live view): a paused
  sprayer stays paused after a restart until it is resumed (or the file is deleted).
- ``tuning.json`` — the tuning saved on request from the live page: ``{"gate": {"sensitivity":
  "high"}, "decision": {"threshold": 0.6}}``, applied at start over the TOML file and under
  the command line's flags (``edge.cli``), and named in the start-up log.

Files are written whole (a temporary file, fsync, rename), so a power loss leaves the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Mapping

from edge.core.errors import ConfigError
from edge.core.files import FileRefused, read_regular, write_atomic
from edge.core.schema import tunable_threshold_problem

log = logging.getLogger(__name__)

PAUSE_FILE = "paused.json"
TUNING_FILE = "tuning.json"
MAX_STATE_BYTES = 100_000
TUNING_KEYS = {"gate": {"sensitivity"}, "decision": {"threshold"}}  # what the live view may save


def resolve_state_dir(configured: str, env: Mapping[str, str] | None = None) -> Path | None:
    """``[service] state_dir``, else ``$STATE_DIRECTORY`` (its first entry), else None."""
    env = os.environ if env is None else env
    if configured:
        return Path(configured)
    first = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


class StateDir:
    """The two files of the state directory ``path`` (None: no state directory)."""

    def __init__(self, path: Path | None):
        if path is not None:  # said at start, not when a pause is first saved in the field
            fix = "point [service] state_dir at a folder edge-run can write (it is made if missing)"
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            except OSError as e:  # a parent edge-run may not search, a loop of links ...
                raise ConfigError(f"the state directory {path} ([service] state_dir or $STATE_DIRECTORY) cannot be "
                                  f"looked at ({e.strerror or e})", fix) from None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"the state directory {path} ([service] state_dir or $STATE_DIRECTORY) is not a "
                                  "folder", fix)
        self.path = path

    def describe(self) -> str:
        return str(self.path) if self.path is not None else "none ([service] state_dir or $STATE_DIRECTORY)"

    # -- the pause ---------------------------------------------------------------------
    def paused(self) -> bool:
        """Whether a pause was saved (``paused.json`` exists and says so)."""
        data = self._read(PAUSE_FILE)
        return bool(data.get("paused")) if data is not None else False

    def save_pause(self, paused: bool, **fields) -> None:
        """Write (``paused``) or remove the pause file; OSError when the directory cannot be written."""
        if self.path is None:
            return
        if paused:
            self._write(PAUSE_FILE, {"paused": True, **fields})
        else:
            try:
                (self.path / PAUSE_FILE).unlink()
            except FileNotFoundError:
                pass

    # -- the saved tuning ----------------------------------------------------------------
    def tuning(self) -> dict:
        """The saved tuning as config overrides (``{"gate": {...}, "decision": {...}}``), checked to hold only
        the keys the live view saves; {} when there is none. ``ConfigError`` (exit 3) when it is not readable."""
        data = self._read(TUNING_FILE)
        if data is None:
            return {}
        for section, keys in data.items():
            if section not in TUNING_KEYS or not isinstance(keys, dict) or not set(keys) <= TUNING_KEYS[section]:
                raise ConfigError(f"saved tuning {self.path / TUNING_FILE}: unexpected entry {section!r}",
                                  "it holds only gate.sensitivity and decision.threshold: delete the file "
                                  "and save again from the live page")
        decision = data.get("decision", {})
        problem = tunable_threshold_problem(decision.get("threshold", 0.5))
        if problem:  # written by an older edge-run, or by hand: the config's threshold stands (not a failed start)
            log.warning("saved tuning %s: %s: not used (the config's threshold stands); save again from the live "
                        "page to replace it", self.path / TUNING_FILE, problem)
            data = {**data, "decision": {k: v for k, v in decision.items() if k != "threshold"}}
            if not data["decision"]:
                del data["decision"]
        return data

    def save_tuning(self, overrides: dict) -> Path:
        """Write the tuning file; ``ConfigError`` without a state directory, OSError when it cannot be written."""
        if self.path is None:
            raise ConfigError("no state directory to save the tuning in",
                              "set [service] state_dir (run as the systemd service: $STATE_DIRECTORY is set)")
        return self._write(TUNING_FILE, overrides)

    # -- files ---------------------------------------------------------------------------
    def _read(self, name: str) -> dict | None:
        if self.path is None:
            return None
        p = self.path / name
        try:
            data = json.loads(read_regular(p, MAX_STATE_BYTES).decode("utf-8"))
        except FileRefused as e:
            if e.missing:
                return None
            raise ConfigError(f"state file {p} {e}", "delete it (edge-run writes it again when needed)") from None
        except (ValueError, RecursionError) as e:  # not UTF-8 or not JSON (a UnicodeDecodeError is a ValueError)
            raise ConfigError(f"state file {p} is not JSON ({e})", "delete it (a pause or a saved tuning is lost; "
                              "set them again from the live page)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"state file {p} does not hold a JSON object", "delete it")
        return data

    def _write(self, name: str, data: dict) -> Path:
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / name
        write_atomic(target, (json.dumps(data, indent=1) + "\n").encode("utf-8"), durable=True)
        return target
