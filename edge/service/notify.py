"""systemd service notifications (``sd_notify``): READY, STATUS, WATCHDOG, STOPPING.

The protocol is one Unix datagram per message, ``KEY=VALUE`` lines, sent to the socket
named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the Linux abstract namespace).
systemd sets it for ``Type=notify`` units; anywhere else it is unset and every method
here does nothing. ``$WATCHDOG_USEC`` (with ``WatchdogSec=``) is the watchdog timeout;
``$WATCHDOG_PID``, when set, names the process that must ping it.

A notification that cannot be sent is warned about once and never stops detection.
Sending is rate-limited with an injectable clock: the pipeline calls :meth:`ServiceNotifier.beat`
on every frame and every poll, but a ``WATCHDOG=1`` goes out at most every quarter of
the watchdog timeout and a ``STATUS=`` at most every ``status_interval_s`` (or when the
camera, serial controller or GPS state changes).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

from edge.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


class SdNotify:
    """A connection to the service manager's notification socket (or nothing)."""

    def __init__(self, address: str | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = address if address is not None else env.get("NOTIFY_SOCKET") or None
        self._sock: socket.socket | None = None
        self._warned = False
        self.dropped = 0  # messages not sent because the socket's queue was full
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        #: the watchdog timeout in seconds (None: no watchdog asked for, or it is another process's)
        self.watchdog_s: float | None = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):  # abstract namespace: a leading NUL byte
            return b"\0" + self.address[1:].encode()
        return self.address

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` -> ``READY=1``); True when delivered."""
        if not self.enabled:
            return False
        text = "\n".join(f"{k.upper()}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a busy service manager must never stall the detection loop
            self._sock.sendto(text.encode("utf-8", "replace"), self._target())
            return True
        except BlockingIOError:
            self.dropped += 1  # its queue is full: this message is lost, the next one may pass
            return False
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s (%s): the service watchdog may restart us; "
                            "detection goes on", self.address, e)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send(ready=1, **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def stopping(self, status: str = "") -> bool:
        return self.send(stopping=1, **({"status": status} if status else {}))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_text(info: Mapping[str, object]) -> str:
    """The one-line STATUS (``systemctl status weed-detector`` shows it)."""
    lat = info.get("latency_p50_ms")
    lat_txt = "-" if lat is None or lat != lat else f"{lat:.0f}"  # NaN before the first frames
    p95 = info.get("latency_p95_ms")
    p95_txt = "-" if p95 is None or p95 != p95 else f"{p95:.0f}"
    controller = f", controller {info['controller']}" if "controller" in info else ""
    if "gps" in info:  # a GPS speed source
        controller += (f", GPS {info['gps']} (lost {info.get('gps_losses', 0)}x, "
                       f"reopened {info.get('gps_reconnects', 0)}x)")
    return (f"{info.get('fps', 0.0):.1f} fps, latency p50 {lat_txt} ms p95 {p95_txt} ms, "
            f"camera {info.get('camera', '?')}, frames {info.get('frames', 0)}, "
            f"stalls {info.get('stalls', 0)}, reconnects {info.get('reconnects', 0)}, "
            f"outputs {info.get('outputs', '?')}{controller}")


class ServiceNotifier:
    """Turns pipeline heartbeats into rate-limited WATCHDOG and STATUS messages."""

    def __init__(self, notify: SdNotify | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 status_interval_s: float = 2.0):
        self.notify = notify if notify is not None else SdNotify()
        self.clock = clock
        self.status_interval_ns = int(status_interval_s * 1e9)
        wd = self.notify.watchdog_s
        self.watchdog_every_ns = int(wd / 4 * 1e9) if wd else None
        self._last_ping: int | None = None
        self._last_status: int | None = None
        self._last_camera: object = None
        self.pings = 0
        self.statuses = 0

    def ready(self, text: str) -> None:
        if self.notify.ready(text):
            log.debug("systemd notified: READY (%s)", text)

    def beat(self, info: Mapping[str, object]) -> None:
        """The loop made progress: ping the watchdog and update the status when due."""
        if not self.notify.enabled:
            return
        now = self.clock.now_ns()
        if self.watchdog_every_ns is not None and (
                self._last_ping is None or now - self._last_ping >= self.watchdog_every_ns):
            self._last_ping = now
            if self.notify.watchdog():
                self.pings += 1
        camera = (info.get("camera"), info.get("controller"), info.get("gps"))  # a change is reported at once
        if (self._last_status is None or camera != self._last_camera
                or now - self._last_status >= self.status_interval_ns):
            self._last_status, self._last_camera = now, camera
            if self.notify.status(status_text(info)):
                self.statuses += 1

    def stopping(self, text: str) -> None:
        self.notify.stopping(text)

    def close(self) -> None:
        self.notify.close()
