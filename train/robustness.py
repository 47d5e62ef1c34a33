"""The robustness suite: photos scored under each named camera condition of ``train.perturb.SUITE`` (and of
``train.perturb.OTHER``, the conditions the issue does not name: :data:`CONDITIONS`).

Each photo is resized to the model's input by the edge runtime's own ``Preprocessor`` (the
bundle's size and resize rule), perturbed there (the suite's strengths are at the model's
input, see ``train.perturb``), and classified by ``edge.inference.Classifier`` on the
bundle's model, so each row is what ``edge-run`` would decide on such a view. Per row:
crop-vs-weed accuracy, species accuracy, weed miss, crop sprayed and background fired, each
with its count and Wilson 95 % interval; then the worst value of each metric over the
perturbed rows (the clean row is the reference, not a candidate) and which row gave it.

Every training run writes the suite for its test split (``train.export``: ``metrics.json`` →
``robustness``, a table in ``report.md``, ``robustness.png``); ``weed-train robustness``
scores any bundle on any labelled folder.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np

from train import evaluate as ev
from train.evaluate import pct
from train.perturb import CLEAN, OTHER, REFERENCE_SIDE, SUITE, Perturbation, ground_windows

if TYPE_CHECKING:
    from edge.inference.bundle import Bundle, Manifest
    from train.data import Roles


@dataclass(frozen=True)
class Metric:
    key: str  # in metrics.json
    title: str  # the table's column
    higher_is_better: bool


METRICS: tuple[Metric, ...] = (
    Metric("crop_vs_weed_accuracy", "crop-vs-weed", True),
    Metric("species_accuracy", "species", True),
    Metric("weed_miss", "weed miss", False),
    Metric("crop_sprayed", "crop sprayed", False),
    Metric("background_fired", "background fired", False),
)


@dataclass(frozen=True)
class Photos:
    """Labelled photos to score: ``y`` the bundle's label index (-1: a class the bundle does not know,
    scored in the sprayer rates only), ``true_role`` 1 weed, 0 crop, -1 background."""

    images: list[np.ndarray]  # RGB, any size
    y: np.ndarray
    true_role: np.ndarray
    source: str  # what they are, for the report: "test split of ...", a folder


def split_photos(images: Sequence[np.ndarray], y: np.ndarray, labels: Sequence[str], roles: Roles,
                 source: str) -> Photos:
    """Photos of a split whose classes are all labels (a training run's test split)."""
    y = np.asarray(y, dtype=np.int64)
    return Photos(list(images), y, ev.role_vector(labels, roles)[y], source)


def folder_photos(m: Manifest, data_dir: Path, roles_file: Path | None = None) -> Photos:
    """Every decodable photo of a folder-per-class set; classes the bundle does not know need ``roles_file``."""
    from train.data import decode_rgb

    samples, extra = ev.labelled_samples(m, data_dir, roles_file)
    labels = list(m.labels)
    known = ev.role_vector(labels, ev.bundle_roles(m))
    y = np.array([labels.index(s.label) if s.label in labels else -1 for s in samples], dtype=np.int64)
    role = np.array([known[i] if i >= 0 else ev.role_vector([s.label], extra)[0] for s, i in zip(samples, y)],
                    dtype=np.int64)
    return Photos([decode_rgb(s.path) for s in samples], y, role, f"all photos of `{data_dir}`")


def row_metrics(probs: np.ndarray, photos: Photos, labels: Sequence[str], roles: Roles, threshold: float,
                crop_veto: float | None = None) -> dict:
    """The suite's metrics of one row by the rule (``threshold``, ``crop_veto``), each ``{rate, k, n, ci95}``
    (``rate`` None when there is no photo)."""
    rates = ev.role_rates(ev.sprayed(probs, labels, roles, threshold, crop_veto), photos.true_role)
    known = (photos.y >= 0) & (photos.true_role >= 0)
    right = probs.argmax(axis=1)[known] == photos.y[known]
    return {
        "crop_vs_weed_accuracy": rates["crop_vs_weed"].as_dict(),
        "species_accuracy": ev.wilson(int(right.sum()), int(known.sum())).as_dict(),
        "weed_miss": rates["weed_miss"].as_dict(),
        "crop_sprayed": rates["crop_sprayed"].as_dict(),
        "background_fired": rates["background_fired"].as_dict(),
    }


def worst(rows: dict[str, dict]) -> dict:
    """Per metric, the worst value over the perturbed rows (all but ``clean``) and the row that gave it.

    Lowest accuracy, highest error rate; the first such row in table order on a tie;
    ``{"value": None, "row": None}`` when no perturbed row has a photo for that metric.
    """
    out = {}
    for metric in METRICS:
        best_value, best_row = None, None
        for name, row in rows.items():
            v = row[metric.key]["rate"]
            if name == CLEAN.name or v is None:
                continue
            if best_value is None or (v < best_value if metric.higher_is_better else v > best_value):
                best_value, best_row = v, name
        out[metric.key] = {"value": best_value, "row": best_row}
    return out


class PerturbedViews(SequenceABC):
    """Every view under every row of ``suite``, made when it is read (row by row, view by view), so a
    whole suite goes through one classifier without holding all its images."""

    def __init__(self, views: Sequence[np.ndarray], suite: Sequence[Perturbation], seed: int):
        self.views, self.suite, self.seed = list(views), tuple(suite), seed

    def __len__(self) -> int:
        return len(self.views) * len(self.suite)

    def __getitem__(self, k: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= k < len(self):
            raise IndexError(k)
        p, i = self.suite[k // len(self.views)], k % len(self.views)
        return p.apply(self.views[i], row_seed(self.seed, p, i))


def row_seed(seed: int, p: Perturbation, i: int) -> tuple[int, int, int]:
    """The seed of view ``i`` under ``p``: stable across runs and independent of the suite's order."""
    return seed, zlib.crc32(p.name.encode()), i


def model_views(bundle: Bundle, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each image as the model sees it: resized by the edge runtime's own Preprocessor (RGB kept)."""
    spec = bundle.manifest.input
    return input_views(images, spec.height, spec.width, spec.resize)


def input_views(images: Sequence[np.ndarray], height: int, width: int, resize: str) -> list[np.ndarray]:
    """Each image resized to a ``height`` x ``width`` input by the edge runtime's own Preprocessor (RGB kept)."""
    from edge.inference.preprocess import Preprocessor

    pre = Preprocessor(height, width, resize, "RGB", np.uint8)
    return [pre(np.ascontiguousarray(img), "RGB")[0].copy() for img in images]


def suite_probs(predict: Callable[[np.ndarray], np.ndarray], views: Sequence[np.ndarray], seed: int,
                suite: Sequence[Perturbation] = SUITE) -> dict[str, np.ndarray]:
    """Each row's probabilities of ``views`` (model inputs) under each row of ``suite``, by ``predict`` (a batch
    of uint8 images -> probabilities): the validation rows the spray rule is chosen on (``train.rulechoice``).
    The perturbed copies are made as :class:`PerturbedViews` makes them (same seeds)."""
    out = {}
    for p in suite:
        batch = np.stack([p.apply(v, row_seed(seed, p, i)) for i, v in enumerate(views)])
        out[p.name] = np.asarray(predict(batch), dtype=np.float32)
    return out


def score_suite(bundle: Bundle, photos: Photos, threshold: float, seed: int = 42,
                suite: Sequence[Perturbation] = SUITE, num_threads: int = 2, crop_veto: float | None = None) -> dict:
    """The ``robustness`` record: every row of ``suite`` scored on ``photos`` through the edge runtime."""
    m = bundle.manifest
    labels, roles = list(m.labels), ev.bundle_roles(m)
    views = model_views(bundle, photos.images)
    side = min(m.input.height, m.input.width)
    probs = ev.classify_all(bundle, PerturbedViews(views, suite, seed), desc="robustness suite", num_threads=num_threads)
    rows = {}
    for j, p in enumerate(suite):
        row = probs[j * len(views):(j + 1) * len(views)]
        rows[p.name] = {"title": p.title, "strength": p.strength_at(side), **row_metrics(row, photos, labels, roles, threshold, crop_veto)}
    kinds = [ground_windows(v).kind for v in views]
    return {
        "photos": photos.source,
        "n_photos": len(views),
        "model_file": bundle.model_path.name,
        "quantization": bundle.quantization,
        "threshold": float(threshold),
        "crop_veto": crop_veto,
        "input": [m.input.height, m.input.width],
        "seed": seed,
        "strengths": (f"applied to the model's {m.input.height}x{m.input.width} input (after the edge runtime's "
                      f"{m.input.resize} resize); pixel strengths are given at a {REFERENCE_SIDE}-px input and "
                      f"scaled by {side}/{REFERENCE_SIDE}"),
        "ground": {k: kinds.count(k) for k in ("bare ground", "plant-free", "mirrored")},
        "rows": rows,
        "worst": worst(rows),
    }


TEST_SPLIT = "the test split: held out by similarity group, with its background patches"


def test_split_records(bundle: Bundle, images: Sequence[np.ndarray], y: np.ndarray, labels: Sequence[str],
                       roles: Roles, threshold: float, seed: int, crop_veto: float | None = None) -> dict[str, dict]:
    """Every table of :data:`CONDITIONS` on a training run's test split (``images`` and class ids ``y`` of
    ``labels``): metrics.json key (``robustness``, ``robustness_other``) -> its record."""
    photos = split_photos(images, y, labels, roles, TEST_SPLIT)
    return {c.key: score_suite(bundle, photos, threshold, seed, suite=c.suite, crop_veto=crop_veto)
            for c in CONDITIONS.values()}


# --------------------------------------------------------------------------- rendering

class Conditions(NamedTuple):
    """A table of camera conditions and where its record goes."""

    key: str  # a training run's metrics.json key, and the file stem of `weed-train robustness --out`
    title: str  # the plot's
    suite: tuple[Perturbation, ...]


# `weed-train robustness --conditions NAME`; every training run scores both on its test split
CONDITIONS = {"suite": Conditions("robustness", "robustness", SUITE),
              "other": Conditions("robustness_other", "other camera conditions", OTHER)}
PNG = f"{CONDITIONS['suite'].key}.png"


def _cell(metric: Metric, d: dict) -> str:
    if d["rate"] is None:
        return "n/a"
    return pct(d["rate"]) if metric.higher_is_better else f"{pct(d['rate'])} ({d['k']}/{d['n']})"


def table(rob: dict) -> str:
    """The suite as a Markdown table: one line per row, then the worst perturbed row of each metric."""
    lines = ["| condition | " + " | ".join(m.title for m in METRICS) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for row in rob["rows"].values():
        lines.append(f"| {row['title']} | " + " | ".join(_cell(m, row[m.key]) for m in METRICS) + " |")
    cells = []
    for m in METRICS:
        w = rob["worst"][m.key]
        cells.append("n/a" if w["row"] is None else f"{pct(w['value'])} ({w['row']})")
    lines.append("| **worst perturbed row** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(rob: dict) -> str:
    """One paragraph: what was scored, how, and where the uncovered ground came from."""
    g = rob["ground"]
    n = max(1, rob["n_photos"])
    return (f"{rob['n_photos']} photos ({rob['photos']}), `{rob['model_file']}` through the edge runtime at threshold "
            f"{rob['threshold']:.2f}; perturbations {rob['strengths']}; random directions and noise from seed "
            f"{rob['seed']}. Shifted and shrunk views are filled with a mosaic of the photo's own ground: bare ground "
            f"for {100 * g['bare ground'] / n:.0f} %, other plant-free windows for {100 * g['plant-free'] / n:.0f} %, "
            f"a mirrored border for {100 * g['mirrored'] / n:.0f} % of the photos (no plant-free window).")


def plot(rob: dict, path: Path, title: str = "") -> Path:
    """A PNG of the rows: one panel per metric (those with photos), bars with 95 % intervals, clean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rob["rows"].values())
    shown = [m for m in METRICS if any(r[m.key]["n"] for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(2.2 + 2.6 * len(shown), 1.2 + 0.38 * len(rows)),
                             sharey=True, dpi=100, squeeze=False)
    ypos = np.arange(len(rows))
    for ax, m in zip(axes[0], shown):
        value = np.array([np.nan if r[m.key]["rate"] is None else 100 * r[m.key]["rate"] for r in rows])
        lo = np.array([np.nan if r[m.key]["rate"] is None else 100 * r[m.key]["ci95"][0] for r in rows])
        hi = np.array([np.nan if r[m.key]["rate"] is None else 100 * r[m.key]["ci95"][1] for r in rows])
        worst_row = rob["worst"][m.key]["row"]
        colours = ["0.55" if name == CLEAN.name else ("tab:red" if name == worst_row else "tab:green")
                   for name in rob["rows"]]
        ax.barh(ypos, value, color=colours, xerr=np.nan_to_num(np.vstack([value - lo, hi - value])), capsize=2)
        if not np.isnan(value[0]):
            ax.axvline(value[0], color="0.3", linestyle="--", linewidth=1)
        ax.set_title(f"{m.title} (%)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ypos, [r["title"] for r in rows], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle(title or f"robustness at threshold {rob['threshold']:.2f} (red: worst perturbed row)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write(rob: dict, out: Path, meta: dict, stem: str = CONDITIONS["suite"].key,
          what: str = CONDITIONS["suite"].title) -> tuple[Path, Path]:
    """``robustness.json`` (``meta`` and the record) and ``robustness.png`` in ``out`` (``stem`` names them, ``what``
    titles the plot)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{meta.get('bundle', '')}: {what} at threshold {rob['threshold']:.2f} (red: worst perturbed row)"
    return (ev.write_metrics(out / f"{stem}.json", {**meta, "robustness": rob}), plot(rob, out / f"{stem}.png", title))
