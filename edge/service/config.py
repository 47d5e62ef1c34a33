"""The ``[log]`` and ``[service]`` config sections: the run records and running unattended.

``[log]`` (``LogConfig``): the log level, the per-frame JSON lines log and the saved frames
(written by ``edge.service.records``), the stats interval and ``--print``. ``[service]``
(``ServiceConfig``): systemd notifications, reconnects, and the size caps on those records.
Both are plugged into ``edge.config.Config``; every key is documented in
``deploy/config.example.toml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from edge.core.schema import Finite, PathText


class LogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"],
                     BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)] = "INFO"  # "debug" too
    jsonl: PathText = ""  # per-frame JSON lines log; "" = none
    stats_interval_s: Finite = Field(default=5.0, ge=0.1, le=3600)
    print_frames: bool = False  # one human line per frame on stdout
    save_triggers: PathText = ""  # folder for frames that fired (+ a sample of the others)
    sample_rate: Finite = Field(default=0.01, ge=0.0, le=1.0)  # share of non-firing frames kept
    sample_every_s: Finite = Field(default=0.0, ge=0.0, le=86_400)  # ... and one at least this often (0 = off)


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    notify: bool = True  # systemd notifications (READY/STATUS/WATCHDOG) when $NOTIFY_SOCKET is set
    status_interval_s: Finite = Field(default=2.0, ge=0.1, le=3600)  # how often STATUS= is refreshed
    reconnect_initial_s: Finite = Field(default=0.5, ge=0.01, le=60)  # first wait before reopening a lost camera/controller
    reconnect_max_s: Finite = Field(default=10.0, ge=0.01, le=600)  # the wait doubles up to this
    give_up_s: Finite = Field(default=0.0, ge=0, le=86_400)  # no frame for this long -> exit 8 (systemd restarts); 0 = never
    serial_reconnect: bool = True  # serial controller lost mid-run: keep detecting and reconnect (false: exit 6)
    log_max_mb: Finite = Field(default=50.0, ge=0, le=100_000)  # rotate the JSONL log beyond this size; 0 = no cap
    log_backups: int = Field(default=3, ge=0, le=100)  # rotated logs kept (frames.jsonl.1 ...)
    triggers_max_mb: Finite = Field(default=500.0, ge=0, le=1_000_000)  # oldest saved frames deleted beyond this; 0 = no cap
    state_dir: PathText = ""  # the spray pause and saved tuning (edge.service.state); "" = $STATE_DIRECTORY, else none

    @model_validator(mode="after")
    def _order(self) -> "ServiceConfig":
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_initial_s "
                             f"({self.reconnect_initial_s})")
        return self
