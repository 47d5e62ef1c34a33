"""Where benchmark frames come from, and generated frames.

A benchmark reads a video file, an image folder, a camera, or *generated* frames
(deterministic synthetic images of a chosen size, for machines without samples or a
camera). Files are looped so any number of frames can be measured; every configuration
and the naive baseline see the same frames in the same order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError, SourceError
from edge.core.frame import Frame
from edge.sources.config import DEFAULT_MAX_IMAGE_PIXELS

KINDS = ("generated", "video", "images", "camera")
POOL = 8  # distinct generated frames, cycled


@dataclass(frozen=True)
class FramesSpec:
    """What to read. ``width``/``height``: size of generated frames, or the size asked
    of a camera (None = its default). ``fps``: camera frame rate to ask for."""

    kind: str = "generated"
    path: Optional[str] = None
    index: int = 0
    width: Optional[int] = 640
    height: Optional[int] = 480
    fps: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown frame source {self.kind!r}", "use one of: " + ", ".join(KINDS))
        if self.kind in ("video", "images") and not self.path:
            raise ConfigError(f"frame source {self.kind!r} needs a path", f"give --{self.kind} PATH")
        if self.kind == "generated" and not (self.width and self.height and self.width >= 8 and self.height >= 8):
            raise ConfigError(f"generated frames need a size of at least 8x8, got {self.width}x{self.height}",
                              "use e.g. --generated 640x480")

    def describe(self) -> str:
        if self.kind == "generated":
            return f"generated {self.width}x{self.height} (seed {self.seed})"
        if self.kind == "camera":
            size = f" {self.width}x{self.height}" if self.width and self.height else ""
            return f"camera {self.index}{size}"
        return f"{self.kind} {self.path}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FramesSpec":
        return cls(**d)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"frame size {text!r} is not WIDTHxHEIGHT", "write it like 640x480") from None
    if w < 1 or h < 1 or w * h > DEFAULT_MAX_IMAGE_PIXELS:
        raise ConfigError(f"frame size {text!r} is out of range: at least 1 px a side, at most "
                          f"{DEFAULT_MAX_IMAGE_PIXELS / 1e6:g} MP (what edge-run reads)", "write it like 640x480")
    return w, h


def generated_images(width: int, height: int, seed: int = 0, count: int = POOL) -> list:
    """``count`` deterministic BGR uint8 images: a field-like colour gradient (soil brown,
    leaf green or crop blue-green) with per-pixel noise, so that resizing and JPEG-free
    decoding see realistic, non-constant data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bases = np.array([(40, 70, 110), (30, 160, 40), (120, 140, 60)], dtype=np.float32)  # BGR
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    images = []
    for i in range(count):
        a, b = bases[i % 3], bases[(i + 1) % 3]
        grad = a + (b - a) * (0.5 * yy + 0.5 * xx)
        noise = rng.normal(0.0, 25.0, size=(height, width, 3)).astype(np.float32)
        images.append(np.clip(grad + noise, 0, 255).astype(np.uint8))
    return images


class GeneratedSource:
    """A ``FrameSource`` of generated frames: each ``read`` returns a fresh copy of the
    next pooled image (a new buffer per frame, as a camera delivers), timestamped after
    the copy. Never ends; never drops."""

    live = False

    def __init__(self, width: int, height: int, seed: int = 0, clock: Clock = SYSTEM_CLOCK):
        self.width, self.height, self.seed = width, height, seed
        self.name = f"generated {width}x{height}"
        self._clock = clock
        self._pool: list = []
        self._next = 0
        self._closed = False

    def start(self) -> None:
        if self._closed:
            raise SourceError(f"{self.name} was closed", fix="create a new source")
        if not self._pool:
            self._pool = generated_images(self.width, self.height, self.seed)

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        if self._closed:
            return None
        if not self._pool:
            raise SourceError(f"{self.name} was read before start()", fix="call start() first")
        image = self._pool[self._next % len(self._pool)].copy()
        frame = Frame(image=image, frame_id=self._next, t_capture_ns=self._clock.now_ns(), source=self.name)
        self._next += 1
        return frame

    @property
    def dropped(self) -> int:
        return 0

    def link(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True
        self._pool = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
