"""What the pipeline writes down: a JSONL line per frame and saved frames with their sidecars.

A log or folder named in the config that cannot be written at start is a ``ConfigError``
(exit 3). Mid-run, writing never stops detection: the frame log loses whole lines while
the disk is full and resumes when there is space again (``edge.core.jsonl``); saving
frames stops at the first failure, with one warning.

Both stay under a size cap so an unattended run cannot fill the SD card: the JSONL log
rotates (``frames.jsonl`` -> ``frames.jsonl.1`` ... ``.<backups>``, the oldest deleted) once
it exceeds ``max_bytes``, and the trigger-frame folder deletes its oldest frames once
the saved frames exceed ``max_bytes`` in total. 0 = no cap. The JSONL writing itself
(rotation, the one warning) is ``edge.core.jsonl``'s, shared with the other logs.

Saved frames: the frames that fired (``spray/``) and a sample of the others (``sample/``:
a random share, ``[log] sample_rate``, and at least one frame every ``[log] sample_every_s``
seconds of capture time). Each image ``<stem>.jpg`` has a **sidecar** ``<stem>.json`` beside
it (:class:`Sidecar`, written whole or not at all after the image, ``edge.core.files.write_atomic``,
without an fsync in the loop):
what the labelling pages (``edge.labelling``) show and label, tile by tile. Its fields are in
docs/labelling.md.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import ConfigError
from edge.core.files import write_atomic
from edge.core.jsonl import JsonlWriter, cannot_write, encode_line, wall_time

__all__ = ["JsonlLog", "TriggerSaver", "SavedTile", "FramePlace", "Sidecar", "SIDECAR_SCHEMA", "wall_time"]

SIDECAR_SCHEMA = 1  # the sidecar's "schema"; a reader refuses another
KINDS = ("spray", "sample")  # the saved-frame folders: frames that fired, a sample of the others

log = logging.getLogger(__name__)


class JsonlLog(JsonlWriter):
    """The frame log (``[log] jsonl``): one JSON line per frame, written by ``edge.core.jsonl``."""

    def __init__(self, path: str | Path | None, max_bytes: int = 0, backups: int = 3, *,
                 clock: Clock = SYSTEM_CLOCK):
        super().__init__(path, max_bytes, backups, what="frame log", goes_on="detection goes on without it",
                         fix="give a writable path for [log] jsonl (--log-jsonl), or leave it unset",
                         error=ConfigError, logger=log, clock=clock)


@dataclass(frozen=True)
class SavedTile:
    """One tile of a saved frame, as the sidecar records it (whole-frame mode: one tile, the whole frame)."""

    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the saved image
    label: str  # the top label ("" for a tile the vegetation gate did not classify)
    weed_score: float  # probability mass on the weed labels
    crop_score: float  # ... on the crop labels
    vegetation: float | None  # vegetated fraction 0..1 (None: the gate is off)
    sprayed: bool  # whole frame: the outputs were on; per lane: its ground overlaps a plant this frame planned
    gated: bool = False  # the vegetation gate called it bare ground (not classified)
    lane: int | None = None  # per lane: the lane (left to right) and the row (top first)
    row: int | None = None
    ground_cm: tuple[float, float] | None = None  # per lane: (front, rear) offsets along travel from the camera

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"box": list(self.box), "label": self.label, "weed_score": round(self.weed_score, 4),
                             "crop_score": round(self.crop_score, 4),
                             "vegetation": None if self.vegetation is None else round(self.vegetation, 4),
                             "sprayed": self.sprayed, "gated": self.gated}
        if self.lane is not None:
            d.update(lane=self.lane, row=self.row)
        if self.ground_cm is not None:
            d["ground_cm"] = [round(self.ground_cm[0], 2), round(self.ground_cm[1], 2)]
        return d


@dataclass(frozen=True)
class FramePlace:
    """Where the machine was when the frame was captured, as far as it knows (None: not known)."""

    speed_kmh: float | None = None
    distance_cm: float | None = None  # odometer: distance driven since the pass's first frame
    gps: tuple[float, float] | None = None  # (lat, lon) of a GPS's last fix

    def as_dict(self) -> dict[str, Any]:
        return {"speed_kmh": self.speed_kmh, "distance_cm": None if self.distance_cm is None else round(self.distance_cm, 2),
                "gps": None if self.gps is None else [self.gps[0], self.gps[1]]}


@dataclass(frozen=True)
class Sidecar:
    """The JSON next to a saved image (same stem): what the frame was, tile by tile (docs/labelling.md)."""

    image: str  # the image's file name (beside the sidecar)
    kind: str  # "spray" or "sample"
    run: str  # the run id: one pass of the machine (a start of edge-run)
    frame: int
    t_mono_ns: int  # capture time, monotonic (the run's clock)
    wall: str  # wall time when it was saved, UTC, for humans
    source: str
    bundle: str  # the bundle's name and labels
    labels: tuple[str, ...]
    tiles: tuple[SavedTile, ...]
    place: FramePlace = FramePlace()
    spray: bool = False  # the frame's decision

    @classmethod
    def from_dict(cls, d: Any) -> "Sidecar":
        """A sidecar read back (``ValueError`` saying what is wrong: another schema, a missing or bad field)."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        if d.get("schema") != SIDECAR_SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r}, this version reads schema {SIDECAR_SCHEMA}")
        try:
            tiles = tuple(_tile(t) for t in d["tiles"])
            gps = d.get("gps")
            place = FramePlace(_num(d.get("speed_kmh")), _num(d.get("distance_cm")),
                               None if gps is None else (_finite(gps[0]), _finite(gps[1])))
            return cls(str(d["image"]), str(d["kind"]), str(d["run"]), int(d["frame"]), int(d["t_mono_ns"]),
                       str(d["wall"]), str(d["source"]), str(d["bundle"]), tuple(str(x) for x in d["labels"]),
                       tiles, place, bool(d.get("spray", False)))
        except KeyError as e:
            raise ValueError(f"no {e.args[0]!r} field") from None
        except (TypeError, IndexError, ValueError, OverflowError) as e:  # OverflowError: int(Infinity)
            raise ValueError(f"a field of the wrong type ({e})") from None

    def as_dict(self) -> dict[str, Any]:
        return {"schema": SIDECAR_SCHEMA, "image": self.image, "kind": self.kind, "run": self.run,
                "frame": self.frame, "t_mono_ns": self.t_mono_ns, "wall": self.wall, "source": self.source,
                "bundle": self.bundle, "labels": list(self.labels), "spray": self.spray,
                **self.place.as_dict(), "tiles": [t.as_dict() for t in self.tiles]}


def _num(x: Any) -> float | None:
    return None if x is None else _finite(x)


def _finite(x: Any) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{x!r} is not a finite number")
    return v


def _tile(t: dict) -> SavedTile:
    box = tuple(int(v) for v in t["box"])
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or min(box) < 0:
        raise ValueError(f"box {list(box)} is not x, y, w, h in pixels")
    g = t.get("ground_cm")
    return SavedTile(box, str(t["label"]), _finite(t["weed_score"]), _finite(t["crop_score"]),
                     _num(t.get("vegetation")), bool(t["sprayed"]), bool(t.get("gated", False)),
                     None if t.get("lane") is None else int(t["lane"]), None if t.get("row") is None else int(t["row"]),
                     None if g is None else (_finite(g[0]), _finite(g[1])))


def new_run_id() -> str:
    """A run id: the UTC start time and a random suffix (two runs never share one)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


class TriggerSaver:
    """Keeps the frames that fired, and a sample of the others, each with its sidecar.

    Files are ``<dir>/spray/…jpg`` and ``<dir>/sample/…jpg``, named with the frame id,
    monotonic capture time and top label, so missed weeds can be found and relabelled; each
    has its sidecar ``….json`` beside it (:class:`Sidecar`). The sample is a random share
    ``sample_rate`` of the frames that did not fire, plus (with ``sample_every_s``) the first
    frame captured at least that long after the last sampled one. With ``max_bytes`` the
    oldest saved frames (this run's and earlier runs') are deleted once all of them together
    exceed it. A folder that cannot be created or written to at start is a ``ConfigError``.
    """

    def __init__(self, folder: str | Path | None, sample_rate: float = 0.0, seed: int | None = None,
                 max_bytes: int = 0, *, sample_every_s: float = 0.0, run_id: str | None = None):
        self.folder = Path(folder) if folder else None
        self.sample_rate = sample_rate
        self.sample_every_ns = int(max(0.0, sample_every_s) * 1e9)
        self.max_bytes = max(0, int(max_bytes))
        self.run_id = run_id or new_run_id()
        self.bundle = ""
        self.labels: tuple[str, ...] = ()
        self._rng = random.Random(seed)
        self._broken = False
        self._last_sample_ns: int | None = None
        self.saved = 0
        self.deleted = 0
        self._files: collections.deque = collections.deque()  # (path, bytes), oldest first
        self._total = 0
        if self.folder is None:
            return
        self._check_writable()
        if self.max_bytes:
            self._scan()

    def _check_writable(self) -> None:
        """Create the folder and write (and delete) a file in it, or raise the start-up error."""
        assert self.folder is not None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=self.folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise cannot_write("trigger-frame folder", self.folder, e, ConfigError,
                               "give a writable folder for [log] save_triggers (--save-triggers), "
                               "or leave it unset") from None

    def _scan(self) -> None:
        """Frames saved by earlier runs count against the cap too (oldest first by mtime)."""
        assert self.folder is not None
        found = []
        for kind in KINDS:
            try:
                for p in (self.folder / kind).glob("*.jpg"):
                    st = p.stat()
                    found.append((st.st_mtime_ns, str(p), st.st_size + _size(p.with_suffix(".json"))))
            except OSError:
                continue
        for _, path, size in sorted(found):
            self._files.append((path, size))
            self._total += size

    def _enforce_cap(self) -> None:
        while self._total > self.max_bytes and len(self._files) > 1:
            path, size = self._files.popleft()
            self._total -= size
            try:
                os.unlink(path)
                self.deleted += 1
            except FileNotFoundError:
                pass
            Path(path).with_suffix(".json").unlink(missing_ok=True)

    def describe_model(self, bundle: str, labels: Sequence[str]) -> None:
        """The bundle the run classifies with (its name and labels go into every sidecar)."""
        self.bundle, self.labels = bundle, tuple(labels)

    def choose(self, frame, decision) -> str | None:
        """Which folder this frame is saved to ("spray", "sample"), or None: not saved."""
        if self.folder is None or self._broken:
            return None
        t = frame.t_capture_ns
        if decision.spray:
            return "spray"
        due = self.sample_every_ns > 0 and (self._last_sample_ns is None
                                            or t - self._last_sample_ns >= self.sample_every_ns)
        if due or (self.sample_rate > 0 and self._rng.random() < self.sample_rate):
            self._last_sample_ns = t
            return "sample"
        return None

    def maybe_save(self, frame, decision, tiles: Sequence[SavedTile] | None = None,
                   place: FramePlace | None = None) -> str | None:
        """Save the frame if :meth:`choose` says so (its tiles: the whole frame as one when None); its path."""
        kind = self.choose(frame, decision)
        return None if kind is None else self.save(kind, frame, decision, tiles, place)

    def save(self, kind: str, frame, decision, tiles: Sequence[SavedTile] | None = None,
             place: FramePlace | None = None) -> str | None:
        """Write the frame's image and then its sidecar into ``kind``; its path (None: saving failed, and stops)."""
        if self.folder is None or self._broken:
            return None
        import cv2

        d = self.folder / kind
        label = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in decision.label)
        name = f"{frame.frame_id:08d}_{frame.t_capture_ns}_{label}_{decision.weed_score:.2f}.jpg"
        img = frame.image if frame.colour_order == "BGR" else cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        h, w = img.shape[:2]
        if tiles is None:
            tiles = (SavedTile((0, 0, w, h), decision.label, decision.weed_score, decision.crop_score, None,
                               bool(decision.spray)),)
        side = Sidecar(name, kind, self.run_id, frame.frame_id, frame.t_capture_ns, wall_time(), frame.source,
                       self.bundle, self.labels, tuple(tiles), place or FramePlace(), bool(decision.spray))
        try:
            d.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(d / name), img):
                raise OSError("cv2.imwrite returned False")
            # no fsync in the run loop (nor for the image): after a power loss an empty sidecar is skipped by its reader
            write_atomic((d / name).with_suffix(".json"), encode_line(side.as_dict()), durable=False)
        except OSError as e:
            log.warning("cannot save frames to %s (%s): detection goes on without saving", self.folder, e)
            self._broken = True
            return None
        self.saved += 1
        if self.max_bytes:
            try:
                size = (d / name).stat().st_size + _size((d / name).with_suffix(".json"))
                self._files.append((str(d / name), size))
                self._total += size
                self._enforce_cap()
            except OSError as e:
                log.warning("cannot keep %s under %d bytes (%s): saving stops", self.folder, self.max_bytes, e)
                self._broken = True
        return str(d / name)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
