"""Labelled photos -> checked samples -> group-aware splits -> tf.data pipelines.

One job per function:

* :func:`scan_folder` / :func:`scan_csv` list ``Sample`` values from a folder-per-class
  tree or a ``path,label`` CSV;
* :func:`read_roles` says which classes are weeds, crops or background;
* :func:`read_groups` reads ``groups.csv`` (near-identical photos share a group);
* :func:`check_images` decodes every file once, reporting and skipping the corrupt ones;
* :func:`split_samples` makes a stratified, group-aware train/val/test split with a fixed seed;
* :func:`load_rgb` decodes and resizes a photo exactly as the edge runtime does;
* :func:`make_dataset` builds the tf.data pipeline (cache, shuffle, augment, prefetch);
  the augmentation itself is :mod:`train.augment`.

TensorFlow is imported only inside :func:`make_dataset` (and the augmentation ops), so
the rest can be used (and tested) quickly.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from edge.core.errors import ConfigError
from train.augment import GROUND, Augment, augment_batches

if TYPE_CHECKING:
    import tensorflow as tf

    from edge.inference.preprocess import Preprocessor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
BACKGROUND = "background"


class DataError(ConfigError):
    """The training data (folders, CSV, roles, groups) is unusable as given."""


@dataclass(frozen=True)
class Sample:
    """One labelled photo. ``group`` ties near-identical photos together (or is the path)."""

    path: Path
    label: str
    group: str = ""
    split: str = ""  # "train" / "val" / "test" once split, "" before

    def key(self) -> str:
        """A stable id for seeding per-photo randomness (independent of list order)."""
        return f"{self.label}/{self.path.name}"


@dataclass(frozen=True)
class Roles:
    """Which class names are weeds, crops and background (soil/gravel, no plant)."""

    weed: tuple[str, ...]
    crop: tuple[str, ...]
    background: tuple[str, ...] = ()

    def role_of(self, label: str) -> str:
        if label in self.weed:
            return "weed"
        if label in self.crop:
            return "crop"
        if label in self.background:
            return "background"
        raise DataError(
            f"class {label!r} has no role (weed, crop or background)",
            "list it in the roles file (class,role) or in --weeds/--crops/--background-classes",
        )

    def with_background(self, name: str = BACKGROUND) -> "Roles":
        if name in self.background:
            return self
        return replace(self, background=self.background + (name,))


@dataclass(frozen=True)
class CheckReport:
    """Result of decoding every file once."""

    good: tuple[Sample, ...]
    corrupt: tuple[tuple[Path, str], ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- listing


def _csv_text(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 CSV (a BOM is dropped), or a DataError saying how to re-save it."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})",
            "save it as UTF-8 CSV (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def _csv_rows(path: Path, what: str, reader: Callable = csv.reader) -> tuple[Any, list]:
    """(the reader, its rows) of a UTF-8 CSV read by ``reader`` (``csv.reader``, or ``csv.DictReader``: its
    ``fieldnames``), or a DataError naming the line the csv module cannot read (a field over its 128 KiB limit,
    mostly a quote left open that runs to the end of the file)."""
    r = reader(_csv_text(path, what))
    try:
        return r, list(r)
    except csv.Error as exc:
        line = getattr(r, "reader", r).line_num  # a DictReader counts only the lines it returned
        raise DataError(f"{what} {path} line {line}: {exc}",
                        "check that line: a quote opened and not closed runs on to the end of the file") from None


def scan_folder(root: Path) -> list[Sample]:
    """List ``root/<class>/<image>`` files (sorted, so the order is reproducible).

    Files with other suffixes are skipped with a warning; hidden files are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist", "pass --data DIR with one sub-folder per class")
    samples: list[Sample] = []
    skipped: list[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path=f, label=class_dir.name))
            else:
                skipped.append(f)
    if skipped:
        log.warning("skipped %d non-image files, e.g. %s", len(skipped), skipped[0])
    if not samples:
        raise DataError(
            f"no images found under {root}",
            "expected one sub-folder per class holding .jpg/.png photos, or pass --csv path,label",
        )
    return samples


def scan_csv(csv_path: Path) -> list[Sample]:
    """Read a ``path,label`` CSV (header optional; relative paths are relative to the CSV)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV {csv_path} does not exist", "pass --csv FILE with columns path,label")
    samples = []
    _, rows = _csv_rows(csv_path, "CSV")
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    for i, row in enumerate(rows, start=1):
        if not row or not row[0].strip() or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise DataError(f"{csv_path} line {i}: expected path,label but got {row!r}", "add the label column")
        p = Path(row[0].strip())
        if not p.is_absolute():
            p = csv_path.parent / p
        samples.append(Sample(path=p, label=row[1].strip()))
    if not samples:
        raise DataError(f"{csv_path} lists no photos", "add rows of path,label")
    return samples


# --------------------------------------------------------------------------- roles & groups


def read_roles(
    labels: Iterable[str],
    roles_file: Path | None = None,
    weeds: Sequence[str] = (),
    crops: Sequence[str] = (),
    background: Sequence[str] = (),
    defaults: Sequence[tuple[str, str]] = (),
) -> Roles:
    """Decide each class's role.

    ``roles_file`` is a CSV with ``class`` and ``role`` columns (plant-seedlings'
    ``classes.csv`` is one). Otherwise ``weeds`` (and optionally ``crops``) name them;
    classes not listed as weeds are crops, and a class named ``background`` or listed in
    ``background`` is background. ``defaults`` ((class, role) pairs: a bundle's labels when
    fine-tuning from it) come first: the roles file and the lists may change them, and a roles
    file need not list them.
    """
    labels = sorted(set(labels))
    role: dict[str, str] = {name: r for name, r in defaults if name in labels}
    if roles_file is not None:
        roles_file = Path(roles_file)
        if not roles_file.is_file():
            raise DataError(f"roles file {roles_file} {'is not a file' if roles_file.exists() else 'does not exist'}",
                            "pass a CSV with columns class,role (e.g. the data set's classes.csv)")
        reader, rows = _csv_rows(roles_file, "roles file", csv.DictReader)
        seen: dict[str, str] = {}
        if not reader.fieldnames or "class" not in reader.fieldnames or "role" not in reader.fieldnames:
            raise DataError(
                f"roles file {roles_file} needs the columns class and role, has {reader.fieldnames}",
                "add a header line 'class,role' and one row per class (role: weed, crop or background)",
            )
        for row in rows:
            r = (row["role"] or "").strip().lower()
            if r in ("soil", "ground"):
                r = "background"
            if r not in ("weed", "crop", "background"):
                raise DataError(f"roles file {roles_file}: role {r!r} for {row['class']!r}", "use weed, crop or background")
            name = (row["class"] or "").strip()
            if name in seen and seen[name] != r:  # the later row would silently win
                raise DataError(f"roles file {roles_file} gives {name!r} two roles ({seen[name]}, {r})",
                                "keep one row per class")
            seen[name] = role[name] = r
    for name in weeds:
        role[name] = "weed"
    for name in crops:
        role[name] = "crop"
    for name in background:
        role[name] = "background"
    if roles_file is None and not weeds and not any(r == "weed" for r in role.values()):
        raise DataError("no class is marked as a weed", "pass --roles FILE (class,role) or --weeds a,b,c")
    unknown = sorted(set(role) - set(labels) - {BACKGROUND})
    if unknown and roles_file is None:
        raise DataError(f"classes {unknown} were named but have no photos", f"the classes found are {labels}")
    for name in labels:
        if name not in role:
            if name == BACKGROUND:
                role[name] = "background"
            elif roles_file is not None:
                raise DataError(f"class {name!r} is not in the roles file {roles_file}", "add a row for it")
            else:
                role[name] = "crop"
    pick = lambda r: tuple(sorted(n for n in labels if role[n] == r))  # noqa: E731
    roles = Roles(weed=pick("weed"), crop=pick("crop"), background=pick("background"))
    if not roles.weed:
        raise DataError("no class with photos is a weed", "mark at least one class as weed")
    return roles


def check_train_classes(train_labels: Iterable[str], roles: Roles) -> None:
    """Training needs at least two classes with training photos: a weed and a crop or background."""
    counts = Counter(train_labels)
    have = {roles.role_of(lab) for lab in counts}
    if len(counts) < 2 or "weed" not in have or have == {"weed"}:
        found = ", ".join(f"{lab} ({roles.role_of(lab)}, {n})" for lab, n in sorted(counts.items())) or "none"
        raise DataError(
            f"the train split needs at least two classes, a weed and a crop or background, but has: {found}",
            "add photos of a crop or bare ground (or drop --background none), and mark weeds with --weeds/--roles",
        )


def read_groups(groups_csv: Path | None, data_root: Path | None = None) -> dict[str, str]:
    """Map photo paths (as written in the CSV, also resolved against ``data_root``) to groups."""
    if groups_csv is None:
        return {}
    groups_csv = Path(groups_csv)
    if not groups_csv.is_file():
        raise DataError(f"groups file {groups_csv} does not exist", "pass --groups FILE (path,group) or --no-groups")
    out: dict[str, str] = {}
    reader, rows = _csv_rows(groups_csv, "groups file", csv.DictReader)
    if not reader.fieldnames or "path" not in reader.fieldnames or "group" not in reader.fieldnames:
        raise DataError(f"{groups_csv} needs the columns path and group", "add the header 'path,group'")
    for row in rows:
        p = row["path"].strip()
        out[p] = (row["group"] or "").strip()
        if data_root is not None:
            out[str((Path(data_root) / p).resolve())] = out[p]
    return out


def find_groups_file(data_root: Path) -> Path | None:
    """``groups.csv`` inside the data folder or beside it, if present."""
    for cand in (Path(data_root) / "groups.csv", Path(data_root).parent / "groups.csv"):
        if cand.is_file():
            return cand
    return None


def attach_groups(samples: Sequence[Sample], groups: dict[str, str], data_root: Path | None = None) -> list[Sample]:
    """Give each sample its group; photos without one form a group of their own."""
    out = []
    for s in samples:
        g = groups.get(str(s.path.resolve()))
        if g is None and data_root is not None:
            try:
                g = groups.get(s.path.relative_to(data_root).as_posix())
            except ValueError:
                g = None
        out.append(replace(s, group=g if g else f"photo:{s.key()}"))
    return out


# --------------------------------------------------------------------------- checking & loading


def decode_rgb(path: Path) -> np.ndarray | None:
    """Decode a photo to HxWx3 uint8 RGB, or None when it is not a readable image (also one whose header declares
    more pixels than OpenCV decodes, 2^30: OpenCV refuses it before allocating)."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        log.debug("OpenCV cannot decode %s: %s", path, str(exc).strip())
        return None
    if img is None or img.ndim != 3 or img.shape[0] < 8 or img.shape[1] < 8:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_images(samples: Sequence[Sample], progress: bool = True) -> CheckReport:
    """Decode each file once; corrupt or non-image files are reported and skipped."""
    from tqdm.auto import tqdm

    good, bad = [], []
    for s in tqdm(samples, desc="checking photos", unit="img", disable=not progress, leave=False):
        try:
            ok = decode_rgb(s.path) is not None
            why = "not a decodable image"
        except OSError as exc:  # unreadable file
            ok, why = False, str(exc)
        if ok:
            good.append(s)
        else:
            bad.append((s.path, why))
    for p, why in bad:
        log.warning("skipping %s: %s", p, why)
    if not good:
        raise DataError(
            f"none of the {len(bad)} photos could be decoded (e.g. {bad[0][0]}: {bad[0][1]})" if bad else "no photos to check",
            "give photos OpenCV can read (.jpg/.png/...), not empty or truncated files",
        )
    return CheckReport(good=tuple(good), corrupt=tuple(bad))


def resize_rgb(rgb: np.ndarray, size: int, mode: str = "center_crop") -> np.ndarray:
    """Resize exactly as the edge runtime does (its own Preprocessor), to ``size`` x ``size``.

    Sharing the runtime's code means training sees the pixels the edge will feed.
    """
    pre = _preprocessor(size, mode)
    return pre(np.ascontiguousarray(rgb), "RGB")[0].copy()


_PRE_CACHE: dict[tuple[int, str], Preprocessor] = {}


def _preprocessor(size: int, mode: str) -> Preprocessor:
    from edge.inference.preprocess import Preprocessor  # the runtime's own resize

    key = (size, mode)
    if key not in _PRE_CACHE:
        _PRE_CACHE[key] = Preprocessor(size, size, mode, "RGB", np.uint8)
    return _PRE_CACHE[key]


def load_rgb(path: Path, size: int, mode: str = "center_crop") -> np.ndarray:
    rgb = decode_rgb(path)
    if rgb is None:
        raise DataError(f"{path} is not a decodable image", "remove it or run the check step")
    return resize_rgb(rgb, size, mode)


# --------------------------------------------------------------------------- splitting


def _stable_int(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little")


def split_samples(
    samples: Sequence[Sample],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> list[Sample]:
    """Stratified, group-aware split: every group lands wholly in one split.

    Uses scikit-learn's ``StratifiedGroupKFold`` twice (test off the whole set, then
    validation off the rest). The result depends only on the samples' labels, groups,
    keys and ``seed`` — not on their order.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < test_fraction < 0.5 or not 0 < val_fraction < 0.5:
        raise DataError(
            f"val/test fractions {val_fraction}/{test_fraction} out of range",
            "use fractions between 0 and 0.5, e.g. --val 0.15 --test 0.15",
        )
    ordered = sorted(samples, key=lambda s: _stable_int(s.key(), seed))

    def carve(pool: list[Sample], fraction: float, rng_seed: int) -> tuple[list[Sample], list[Sample]]:
        n_splits = max(2, int(round(1.0 / fraction)))
        counts = Counter(s.label for s in pool)
        if min(counts.values()) < n_splits:
            log.warning(
                "some classes have fewer than %d photos: splitting them group by group (stratified as far as possible)",
                n_splits,
            )
            return _greedy_carve(pool, fraction, rng_seed)
        y = [s.label for s in pool]
        g = [s.group for s in pool]
        skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=rng_seed)
        rest_idx, part_idx = next(iter(skf.split(np.zeros(len(pool)), y, g)))
        return [pool[i] for i in rest_idx], [pool[i] for i in part_idx]

    rest, test = carve(ordered, test_fraction, seed)
    train, val = carve(rest, val_fraction / (1.0 - test_fraction), seed + 1)
    out = [replace(s, split="train") for s in train]
    out += [replace(s, split="val") for s in val]
    out += [replace(s, split="test") for s in test]
    return sorted(out, key=lambda s: (SPLITS.index(s.split), s.label, str(s.path)))


def _greedy_carve(pool: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Small-set fallback: whole groups, in a seeded order, go to the part while their
    classes are below ``fraction`` of their photos (at least one group per class when it has two)."""
    by_group: dict[str, list[Sample]] = {}
    for s in pool:
        by_group.setdefault(s.group, []).append(s)
    order = sorted(by_group, key=lambda g: _stable_int(g, seed))
    total = Counter(s.label for s in pool)
    taken: Counter = Counter()
    part_groups = set()
    for g in order:
        members = by_group[g]
        labels = Counter(s.label for s in members)
        if all(taken[l] + n <= max(1.0, fraction * total[l]) and taken[l] + n < total[l] for l, n in labels.items()):
            part_groups.add(g)
            taken.update(labels)
    rest = [s for s in pool if s.group not in part_groups]
    part = [s for s in pool if s.group in part_groups]
    return rest, part


def explicit_splits(train: Sequence[Sample], val: Sequence[Sample], test: Sequence[Sample]) -> list[Sample]:
    """Use the user's own val/test folders as given."""
    return (
        [replace(s, split="train") for s in train]
        + [replace(s, split="val") for s in val]
        + [replace(s, split="test") for s in test]
    )


def check_group_leaks(samples: Sequence[Sample]) -> list[str]:
    """Groups found in more than one split (should be empty)."""
    where: dict[str, set[str]] = {}
    for s in samples:
        where.setdefault(s.group, set()).add(s.split)
    return sorted(g for g, sp in where.items() if len(sp) > 1)


def split_table(samples: Sequence[Sample], labels: Sequence[str]) -> str:
    """A small text table of photos per class and split."""
    counts = Counter((s.label, s.split) for s in samples)
    width = max(len(x) for x in list(labels) + ["class"])
    lines = [f"{'class':<{width}}  {'train':>6} {'val':>6} {'test':>6}"]
    for lab in labels:
        lines.append(f"{lab:<{width}}  " + " ".join(f"{counts[(lab, sp)]:>6}" for sp in SPLITS))
    lines.append(f"{'total':<{width}}  " + " ".join(f"{sum(counts[(l, sp)] for l in labels):>6}" for sp in SPLITS))
    return "\n".join(lines)


# --------------------------------------------------------------------------- arrays & tf.data


def load_arrays(
    samples: Sequence[Sample], labels: Sequence[str], size: int, mode: str = "center_crop", progress: bool = True, desc: str = "loading"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode+resize photos into one uint8 (N,size,size,3) array plus int label ids."""
    from tqdm.auto import tqdm

    index = {lab: i for i, lab in enumerate(labels)}
    x = np.zeros((len(samples), size, size, 3), dtype=np.uint8)
    y = np.zeros((len(samples),), dtype=np.int64)
    for i, s in enumerate(tqdm(samples, desc=desc, unit="img", disable=not progress, leave=False)):
        x[i] = load_rgb(s.path, size, mode)
        y[i] = index[s.label]
    return x, y


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'Balanced' class weights (scikit-learn's formula), for classes present in ``y``."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    w = compute_class_weight("balanced", classes=present, y=y)
    out = {int(c): 1.0 for c in range(n_classes)}
    out.update({int(c): float(v) for c, v in zip(present, w)})
    return out


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    batch_size: int = 32,
    training: bool = False,
    aug: Augment | None = None,
    seed: int = 42,
    one_hot: bool = True,
    cache: str | bool = True,
    roles: np.ndarray | None = None,
) -> tf.data.Dataset:
    """tf.data pipeline over uint8 images: cache -> (shuffle) -> batch -> (augment) -> prefetch.

    Images stay uint8 0..255 RGB (the models normalise in-graph); augmentation
    (:mod:`train.augment`) runs on training batches only. ``roles`` (per class id: 1 weed,
    0 crop, -1 background, as ``train.evaluate.role_vector``) lets it use the background
    images as ground and make composite tiles.
    """
    import tensorflow as tf

    augmenting = training and aug is not None and bool(aug.effects())
    if augmenting and aug.needs_soft_labels() and not one_hot:
        raise ConfigError("composite tiles, MixUp and CutMix give mixed labels, which need one-hot labels",
                          "build the dataset with one_hot=True or turn those effects off")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_float(img, lab):
        lab = tf.one_hot(lab, n_classes) if one_hot else lab
        return tf.cast(img, tf.float32), lab

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenting:
        ground = None if roles is None else x[np.asarray(roles)[y] == GROUND]
        ds = augment_batches(ds, aug, seed, batch_size, ground=ground, roles=roles)
    return ds.prefetch(tf.data.AUTOTUNE)
