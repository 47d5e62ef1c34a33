"""The labelling store: saved frames read back, tiles labelled into a training data set.

**Reading.** The saved frames are ``<frames>/spray/<stem>.jpg`` and ``<frames>/sample/<stem>.jpg``
(``edge.service.records.TriggerSaver``), each with its sidecar ``<stem>.json`` (``Sidecar``).
A frame is named by its key ``<kind>/<stem>``; a key that is not one of the two folders and a
plain file stem (letters, digits, ``_ . -``) inside the frames folder is refused
(:class:`LabelError`), so no request can reach a file outside it. A sidecar that cannot be
read is skipped in the list (one warning) and refused when asked for.

**Writing.** Labelling tile ``i`` of a frame ``label`` crops the tile's box out of the saved
image and writes it, lossless, as ``<dataset>/<label>/<kind>-<stem>-t<i>.png``: the
folder-per-class set ``weed-train train --data <dataset>`` reads as it is. A tile has one
label: labelling it again moves its file. Beside the class folders:

- ``groups.csv`` (``path,group``, found by ``weed-train`` in the data folder): tiles of the
  same pass and place share a group, so that one plant — seen in about six frames — never
  straddles the train/validation/test split. The group is ``<run>/lane<L>/d<cell>`` where
  ``cell`` = floor(ground position / ``group_distance_cm``), the ground position being the
  odometer's distance at the frame plus the tile's centre offset along travel (the same spot
  of ground in every frame that sees it); without a distance (whole-frame mode, no speed
  source) it is ``<run>/lane<L>/t<window>``, ``window`` = floor(capture time /
  ``group_window_s``): frames of one run in the same window share a group. A plant on a cell
  or window edge can fall into two groups: make the cell at least as long as the image's
  ground footprint if that matters.
- ``roles.csv`` (``class,role``: weed, crop or background) for every class of the set — the
  roles file ``weed-train train --roles`` takes: the bundle's labels keep the bundle's roles,
  ``weed``/``crop``/``soil`` are what they say (``soil`` is the bundle's background label when
  it has one), a new class needs its role given once.

Every file is written whole or not at all (``edge.core.files.write_atomic``), under one lock:
the web server's threads may label at the same time.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from edge.core.errors import ConfigError
from edge.core.files import FileRefused, read_regular, write_atomic
from edge.core.text import one_line
from edge.service.records import KINDS, Sidecar

if TYPE_CHECKING:
    import numpy as np

    from edge.inference.bundle import Manifest

log = logging.getLogger(__name__)

ROLES = ("weed", "crop", "background")
GENERIC = {"weed": "weed", "crop": "crop", "soil": "background"}  # the choices every frame offers
GROUPS_FILE = "groups.csv"
ROLES_FILE = "roles.csv"
MAX_SIDECAR_BYTES = 1_000_000
MAX_CACHED_SIDECARS = 20_000  # parsed sidecars kept (a few kB each)
MAX_IMAGE_BYTES = 50_000_000  # a saved frame is a JPEG of the camera's frame: a few hundred kB
MAX_CLASSES = 200
_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_CLASS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
CLASS_RULE = "1-64 letters, digits, '_' or '-', starting with a letter or digit (e.g. wild_oat)"


class LabelError(ValueError):
    """A request the store refuses: says what was wrong and how to do it right (the pages answer 400).
    ``seen``: the same unreadable sidecar was reported before (the frame list warns once per file version)."""

    def __init__(self, message: str, seen: bool = False):
        super().__init__(message)
        self.seen = seen


class NotFound(LabelError):
    """No such saved frame or tile (the pages answer 404)."""


@dataclass(frozen=True)
class SavedFrame:
    """A saved frame and its sidecar."""

    key: str  # "<kind>/<stem>"
    image: Path
    sidecar: Sidecar


@dataclass(frozen=True)
class Choice:
    """A label the pages offer: its class name (the data set's folder), role and where it comes from."""

    name: str
    role: str  # weed, crop, background
    origin: str  # "generic", "bundle", "data set"
    title: str = ""  # what the button says (default: the name)


@dataclass(frozen=True)
class Labelled:
    """A tile written into the data set."""

    key: str
    tile: int
    label: str
    role: str
    path: str  # relative to the data set: "<class>/<file>"
    group: str
    new_class: bool


def check_class_name(name: str) -> str:
    """``name`` as a class (folder) name, or ``LabelError``."""
    name = name.strip() if isinstance(name, str) else ""
    if not _CLASS.fullmatch(name):
        raise LabelError(f"{one_line(name)!r} is not a usable class name: use {CLASS_RULE}")
    return name


class LabelStore:
    """The saved frames under ``frames`` and the data set under ``dataset`` (see the module docstring).

    ``manifest``: the bundle the frames were classified with (its labels are offered, with their
    roles); None offers the generic choices and the data set's own classes."""

    def __init__(self, frames: str | Path, dataset: str | Path, manifest: Manifest | None = None, *,
                 group_distance_cm: float = 50.0, group_window_s: float = 2.0):
        if not frames:
            raise ConfigError("labelling needs the saved frames' folder",
                              "set [log] save_triggers (or [labelling] frames) to the folder edge-run saves frames to")
        if not dataset:
            raise ConfigError("labelling needs a data set folder", "set [labelling] dataset to a folder to write to")
        self.frames_dir = Path(frames)
        self.dataset = Path(dataset)
        self.group_distance_cm = float(group_distance_cm)
        self.group_window_ns = int(float(group_window_s) * 1e9)
        self._lock = threading.Lock()
        # parsed (or why not: a str), by its stat
        self._sidecars: OrderedDict[Path, tuple[tuple[int, ...], Sidecar | str]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bundle_roles: dict[str, str] = {}
        self._background: str | None = None
        if manifest is not None:
            for lab in manifest.labels:
                self._bundle_roles[lab] = ("weed" if lab in manifest.weed_labels else
                                           "crop" if lab in manifest.crop_labels else
                                           "background" if lab in manifest.background_labels else "")
            self._background = manifest.background_labels[0] if manifest.background_labels else None
        try:
            self.dataset.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the labelling data set folder {str(self.dataset)!r}: "
                              f"{e.strerror or e}", "set [labelling] dataset to a writable folder") from None

    # -- reading the saved frames ------------------------------------------------------
    def frames(self) -> list[SavedFrame]:
        """Every saved frame with a readable sidecar, newest capture first (per run)."""
        out = []
        for kind in KINDS:
            folder = self.frames_dir / kind
            if not folder.is_dir():
                continue
            for side in folder.glob("*.json"):
                if not _STEM.fullmatch(side.stem) or not side.with_suffix(".jpg").is_file():
                    continue
                try:
                    out.append(self._read(kind, side.stem))
                except LabelError as e:
                    if not e.seen:
                        log.warning("saved frame %s/%s skipped: %s", kind, side.stem, e)
        return sorted(out, key=lambda f: (f.sidecar.run, f.sidecar.t_mono_ns), reverse=True)

    def frame(self, key: str) -> SavedFrame:
        """The saved frame ``<kind>/<stem>`` (``NotFound``; ``LabelError`` for a key that is not one)."""
        kind, _, stem = key.partition("/") if isinstance(key, str) else ("", "", "")
        return self._read(kind, stem)

    def _paths(self, kind: str, stem: str) -> tuple[Path, Path]:
        if kind not in KINDS or not _STEM.fullmatch(stem) or ".." in stem:
            raise LabelError(f"{one_line(f'{kind}/{stem}')!r} is not a saved frame's name: "
                             f"expected {' or '.join(KINDS)}/<file name without .jpg>")
        image = self.frames_dir / kind / f"{stem}.jpg"
        side = image.with_suffix(".json")
        # the stem holds no "/" (_STEM): the image is in <frames>/<kind>; none of the three may be a symlink out
        if any(p.is_symlink() for p in (image.parent, image, side)):
            raise LabelError(f"{kind}/{stem} is outside the saved frames' folder (or a symlink: edge-run saves files)")
        return image, side

    def _read(self, kind: str, stem: str) -> SavedFrame:
        image, side = self._paths(kind, stem)
        if not image.is_file() or not side.is_file():
            raise NotFound(f"no saved frame {kind}/{stem} (with its sidecar) in {self.frames_dir}")
        return SavedFrame(f"{kind}/{stem}", image, self._sidecar(side, f"{kind}/{stem}"))

    def _sidecar(self, side: Path, key: str) -> Sidecar:
        """The parsed sidecar, read again only when its file changed (the frame list reads every sidecar on each
        request: parsing them all each time took the detection loop's CPU on a large folder)."""
        try:
            st = side.stat()
            stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)  # write_atomic: a new inode
            with self._cache_lock:
                hit = self._sidecars.get(side)
            if hit is not None and hit[0] == stamp:
                if isinstance(hit[1], str):  # unreadable, and unchanged since
                    raise LabelError(hit[1], seen=True)
                return hit[1]
        except OSError as e:
            raise LabelError(f"the sidecar {key}.json cannot be read: {e}") from None
        try:
            sidecar: Sidecar | str = Sidecar.from_dict(json.loads(read_regular(side, MAX_SIDECAR_BYTES)))
        except (FileRefused, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            sidecar = f"the sidecar {key}.json cannot be read: {e}"
            if isinstance(e, FileRefused) and (e.io_error or e.missing):  # may pass next time (too many open
                raise LabelError(sidecar) from None  # files, a read error): not remembered
            # else a broken file (not JSON, another schema, a FIFO, too large): remembered while it is unchanged
        with self._cache_lock:
            self._sidecars[side] = (stamp, sidecar)
            self._sidecars.move_to_end(side)
            while len(self._sidecars) > MAX_CACHED_SIDECARS:
                self._sidecars.popitem(last=False)
        if isinstance(sidecar, str):
            raise LabelError(sidecar)
        return sidecar

    def image_bytes(self, key: str) -> bytes:
        """The saved JPEG of a frame."""
        f = self.frame(key)
        try:
            return read_regular(f.image, MAX_IMAGE_BYTES)
        except FileRefused as e:
            raise NotFound(f"{key}: the image {e}") from None

    def tile_image(self, key: str, tile: int) -> np.ndarray:
        """Tile ``tile`` of a saved frame, cut from its image by the sidecar's box (BGR)."""
        import cv2
        import numpy as np

        f = self.frame(key)
        box = self._tile(f, tile).box
        img = cv2.imdecode(np.frombuffer(self.image_bytes(key), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise NotFound(f"{key}: the saved image is not a readable JPEG")
        x, y, w, h = box
        if x + w > img.shape[1] or y + h > img.shape[0]:  # cropped, it would be labelled as a tile it never was
            raise LabelError(f"{key} tile {tile}: its box {list(box)} reaches outside the {img.shape[1]}x{img.shape[0]} "
                             "image: the image is not the one its sidecar was written with (put the run's own back, "
                             "or delete both)")
        return img[y:y + h, x:x + w]

    def tile_png(self, key: str, tile: int) -> bytes:
        import cv2

        ok, data = cv2.imencode(".png", self.tile_image(key, tile))
        if not ok:
            raise LabelError(f"{key} tile {tile}: cannot be encoded as PNG")
        return data.tobytes()

    @staticmethod
    def _tile(f: SavedFrame, tile: int):
        if type(tile) is not int or not 0 <= tile < len(f.sidecar.tiles):
            raise NotFound(f"{f.key} has tiles 0..{len(f.sidecar.tiles) - 1}, not {one_line(str(tile))}")
        return f.sidecar.tiles[tile]

    # -- the data set ----------------------------------------------------------------
    def roles(self) -> dict[str, str]:
        """The data set's roles file (class -> role), empty before the first label."""
        rows = self._csv_rows(ROLES_FILE)
        return {r["class"]: r["role"] for r in rows if r.get("class") and r.get("role") in ROLES}

    def _csv_rows(self, name: str) -> list[dict[str, str]]:
        """The rows of the data set's ``name`` (none before it exists); a file that is not UTF-8 CSV is a
        ``ConfigError`` naming it (the pages answer 503: the data set needs mending, not the request)."""
        path = self.dataset / name
        if not path.is_file():
            return []
        header = ("class", "role") if name == ROLES_FILE else ("path", "group")
        fix = f"mend it (UTF-8 CSV, header {','.join(header)}) or move it away"
        try:
            reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
            rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ConfigError(f"the labelling data set's {path} cannot be read ({e})", fix) from None
        if reader.fieldnames is None:  # an empty file: no rows yet, as before the first label
            return []
        missing = [c for c in header if c not in reader.fieldnames]
        if missing:
            raise ConfigError(f"the labelling data set's {path} has no {' or '.join(missing)} column "
                              f"(its header: {','.join(reader.fieldnames)})", fix)
        return rows

    def choices(self) -> list[Choice]:
        """What a tile can be labelled: weed, crop, soil, the bundle's labels, then the data set's other classes."""
        out: list[Choice] = []
        seen: set[str] = set()

        def add(c: Choice) -> None:
            if c.name not in seen:
                seen.add(c.name)
                out.append(c)

        for name, role in GENERIC.items():
            target = self._background if name == "soil" and self._background else name
            add(Choice(target, role, "generic", name if target == name else f"{name} ({target})"))
        for lab, role in self._bundle_roles.items():
            if role:
                add(Choice(lab, role, "bundle"))
        for lab, role in sorted(self.roles().items()):
            add(Choice(lab, role, "data set"))
        return out

    def _role_for(self, label: str, role: str | None, known: dict[str, str]) -> tuple[str, bool]:
        """The role of ``label`` and whether it is a class new to the bundle and the data set."""
        if role is not None and role not in ROLES:
            raise LabelError(f"role {one_line(str(role))!r} is not one of {', '.join(ROLES)}")
        fixed = known.get(label) or self._bundle_roles.get(label) or (GENERIC.get(label) if label in GENERIC else None)
        if fixed:
            if role is not None and role != fixed:
                raise LabelError(f"class {label!r} is a {fixed} class (the bundle's or the data set's roles): "
                                 f"label it without a role, or pick another name for a {role} class")
            return fixed, False
        twin = next((n for n in (*known, *self._bundle_roles, *GENERIC) if n.lower() == label.lower()), None)
        if twin is not None:  # Weed and weed: two folders on Linux, one on a FAT USB stick or a Mac
            raise LabelError(f"{label!r} differs from the class {twin!r} only in case: use {twin!r}")
        if role is None:
            raise LabelError(f"{label!r} is a new class: say whether it is a weed, a crop or background (role)")
        if len(known) >= MAX_CLASSES:
            raise LabelError(f"the data set already has {len(known)} classes: use one of them")
        return role, True

    def label(self, key: str, tile: int, label: str, role: str | None = None) -> Labelled:
        """Write tile ``tile`` of frame ``key`` into the data set as ``label`` (see the module docstring)."""
        label = check_class_name(label)
        if label == "soil" and self._background:
            label = self._background
        f = self.frame(key)
        t = self._tile(f, tile)
        png = self.tile_png(key, tile)
        name = self.tile_file(key, tile)
        with self._lock:
            roles = self.roles()
            role, new = self._role_for(label, role, roles)
            folder = self.dataset / label
            groups = self._read_groups()  # before any write: a groups file that needs mending leaves no orphan tile
            try:
                folder.mkdir(exist_ok=True)
                for old in self._files_of(name):
                    if old.parent != folder:
                        old.unlink(missing_ok=True)
                write_atomic(folder / name, png)
                groups = {p: g for p, g in groups.items() if Path(p).name != name}
                rel = f"{label}/{name}"
                groups[rel] = self.group_of(f.sidecar, t)
                write_atomic(self.dataset / GROUPS_FILE, _csv(("path", "group"), sorted(groups.items())))
                if roles.get(label) != role:
                    roles[label] = role
                    write_atomic(self.dataset / ROLES_FILE, _csv(("class", "role"), sorted(roles.items())))
            except OSError as e:
                where = f" ({e.filename})" if e.filename else ""
                raise ConfigError(f"cannot write to the labelling data set {str(self.dataset)!r}: {e.strerror or e}"
                                  f"{where}",
                                  "check [labelling] dataset is writable and its disk is not full") from None
        return Labelled(key, tile, label, role, rel, groups[rel], new)

    def labels_of(self, key: str) -> dict[int, str]:
        """The label of each tile of frame ``key`` that has one."""
        f = self.frame(key)
        out = {}
        for i in range(len(f.sidecar.tiles)):
            files = self._files_of(self.tile_file(key, i))
            if files:
                out[i] = files[0].parent.name
        return out

    @staticmethod
    def tile_file(key: str, tile: int) -> str:
        """The data set's file name for tile ``tile`` of frame ``key``."""
        kind, _, stem = key.partition("/")
        return f"{kind}-{stem}-t{tile}.png"

    def _files_of(self, name: str) -> list[Path]:
        return [p for p in sorted(self.dataset.glob(f"*/{name}")) if p.parent.name != "" and p.is_file()]

    def _read_groups(self) -> dict[str, str]:
        return {r["path"]: r["group"] for r in self._csv_rows(GROUPS_FILE) if r.get("path")}

    def group_of(self, side: Sidecar, tile) -> str:
        """The tile's group: same pass (run) and place (ground cell and lane, or time window)."""
        lane = tile.lane if tile.lane is not None else 0
        d = side.place.distance_cm
        ground = d + (sum(tile.ground_cm) / 2 if tile.ground_cm is not None else 0.0) if d is not None else math.nan
        if math.isfinite(ground):
            return f"{side.run}/lane{lane}/d{math.floor(ground / self.group_distance_cm)}"
        return f"{side.run}/lane{lane}/t{side.t_mono_ns // self.group_window_ns}"


def _csv(header: tuple[str, str], rows: Iterable[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def open_store(cfg, save_triggers: str = "", manifest: Manifest | None = None) -> LabelStore | None:
    """The store of a ``[labelling]`` section (``LabellingConfig``; its frames default to ``[log] save_triggers``),
    or None when labelling is off (no ``dataset``)."""
    if not cfg.dataset:
        return None
    return LabelStore(cfg.frames or save_triggers, cfg.dataset, manifest, group_distance_cm=cfg.group_distance_cm,
                      group_window_s=cfg.group_window_s)
