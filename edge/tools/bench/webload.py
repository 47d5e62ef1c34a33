"""``edge-bench --web-client``: what one live-view client costs the loop, measured in the same run.

The pipeline run starts edge-run's own live view (``edge.app.live.start_live_view`` on 127.0.0.1,
a free port, the ``[web]`` caps of the config: by default 5 fps, 640 px, JPEG quality 70) and a
client thread that reads ``/stream.mjpg`` continuously — during every other block of
``BLOCK_FRAMES`` measured frames; in the blocks between it is disconnected (the encoder idles).
Each measured frame is tagged with whether a client was watching (frames while it connects or
goes away count in neither), so the two end-to-end p95s
come from interleaved stretches of one run on one warmed-up pipeline (load that drifts during
the run falls on both alike). The run object's ``web`` holds both, their ratio, and what the
client received.
"""

from __future__ import annotations

import socket
import threading
from typing import Optional, Sequence

from edge.core.metrics import percentile

BLOCK_FRAMES = 100


class StreamClient:
    """Reads ``/stream.mjpg`` on ``port`` whenever ``want`` is set, as fast as the server sends it."""

    def __init__(self, port: int, stop: threading.Event):
        self.port, self.stop = port, stop
        self.want = threading.Event()
        self.bytes = 0
        self.parts = 0
        self.connects = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="bench-web-client", daemon=True)
        self._sock: socket.socket | None = None

    def hang_up(self) -> None:
        """Stop reading and close the connection now (the server notices at its next write)."""
        self.want.clear()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> "StreamClient":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.want.wait(0.1):
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    self._sock = sock
                    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    self.connects += 1
                    while self.want.is_set() and not self.stop.is_set():
                        try:
                            chunk = sock.recv(65536)
                        except socket.timeout:  # no frame within a second: ask again whether to go on
                            continue
                        if not chunk:
                            break
                        self.bytes += len(chunk)
                        self.parts += chunk.count(b"--frame\r\n")
            except OSError as e:
                if self.want.is_set():  # not the hang-up's own shutdown
                    self.errors.append(str(e))
            finally:
                self._sock = None

    def close(self) -> None:
        self.want.clear()
        self._thread.join(timeout=10)


class WebLoad:
    """The collector's side: switches the client on and off every ``block`` measured frames and tags frames."""

    def __init__(self, client: StreamClient, hub, block: int = BLOCK_FRAMES):
        self.client, self.hub, self.block = client, hub, block
        self.watched: list[bool | None] = []
        self._n = 0

    def measured(self, _result) -> None:
        want, watching = self.client.want.is_set(), self.hub.clients > 0
        self.watched.append(want if want == watching else None)  # None: connecting or going away, not counted
        self._n += want == watching
        if self._n == self.block:  # a block is BLOCK_FRAMES frames that count
            self._n = 0
            (self.client.hang_up if self.client.want.is_set() else self.client.want.set)()


def web_result(e2e_ms: Sequence[float], watched: Sequence[bool | None], client: StreamClient, hub, web_cfg) -> dict:
    """The run object's ``web``: end-to-end p95 without and with a client watching, and their ratio."""
    without = [e for e, w in zip(e2e_ms, watched) if w is False]
    with_ = [e for e, w in zip(e2e_ms, watched) if w is True]

    def p(xs: Sequence[float], q: float) -> Optional[float]:
        v = percentile(xs, q)
        return round(v, 3) if v == v else None

    p95_without, p95_with = p(without, 95), p(with_, 95)
    return {
        "frames_without": len(without), "frames_with": len(with_),
        "e2e_p50_without_ms": p(without, 50), "e2e_p50_with_ms": p(with_, 50),
        "e2e_p95_without_ms": p95_without, "e2e_p95_with_ms": p95_with,
        "p95_ratio": round(p95_with / p95_without, 3) if p95_with and p95_without else None,
        "stream_fps": web_cfg.stream_fps, "stream_width": web_cfg.stream_width, "jpeg_quality": web_cfg.jpeg_quality,
        "encode_ms_p50": p(list(hub.encode_ms), 50), "encode_ms_p95": p(list(hub.encode_ms), 95),
        "jpegs_encoded": hub.encoded, "jpegs_received": client.parts, "bytes_received": client.bytes,
        "client_connects": client.connects, "block_frames": BLOCK_FRAMES,
    }
