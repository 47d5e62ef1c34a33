"""The ``[web]`` config section: the live view in the browser (``edge-run --web [HOST:]PORT``).

Off unless asked (``listen = ""``). ``listen`` is ``PORT`` (on 127.0.0.1) or ``HOST:PORT``; a
host that is not a loopback address needs a token (``token``, or the first line of
``token_file``, read at start): the page is then behind a login, and every request, the
stream included, carries the session cookie or ``Authorization: Bearer <token>``. The caps
on the stream (``stream_fps``, ``stream_width``, ``jpeg_quality``) bound what the live view
costs the detection loop (docs/live-view.md). Plugged into ``edge.config.Config``; every key
is documented in ``deploy/config.example.toml``.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.core.schema import Finite, PathText

DEFAULT_HOST = "127.0.0.1"
MIN_TOKEN_CHARS = 16


def parse_listen(text: str) -> tuple[str, int]:
    """``"8080"`` -> ("127.0.0.1", 8080); ``"0.0.0.0:8080"``, ``"[::]:8080"`` -> (host, port). ValueError when not."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not [HOST:]PORT (a port 0..65535, e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    listen: str = ""  # "" = off; "PORT" (on 127.0.0.1) or "HOST:PORT"
    token: str = ""  # required for a non-loopback host (or token_file)
    token_file: PathText = ""  # a file whose first line is the token (kept out of the config)
    stream_fps: Finite = Field(default=5.0, ge=0.2, le=30)  # at most this many overlay frames a second
    stream_width: int = Field(default=640, ge=160, le=1920)  # frames are scaled down to this width
    jpeg_quality: int = Field(default=70, ge=10, le=95)
    events: int = Field(default=50, ge=5, le=1000)  # the last events (sprays, late sprays, reconnects, errors) shown

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.strip():
            parse_listen(value)
        return value.strip()

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and (len(value) < MIN_TOKEN_CHARS or not value.isprintable() or value != value.strip()):
            raise ValueError(f"a token needs at least {MIN_TOKEN_CHARS} printable characters without spaces at either "
                             "end (e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe())')")
        return value

    @model_validator(mode="after")
    def _remote_needs_token(self) -> "WebConfig":
        if self.token and self.token_file:
            raise ValueError("token and token_file are both set: keep one")
        address = self.address()
        if address is not None and not is_loopback(address[0]) and not (self.token or self.token_file):
            raise ValueError(
                f"listen = {self.listen!r} accepts connections from other machines and needs a token: set [web] "
                "token_file to a file holding one (or [web] token), or listen on 127.0.0.1 (--web PORT)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when the live view is off."""
        return parse_listen(self.listen) if self.listen else None
