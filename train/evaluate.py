"""Honest evaluation: species accuracy, the sprayer's two error rates, background, thresholds.

Everything works on a matrix of class probabilities (one row per photo) so the same code
scores a Keras model, a float TFLite file and the int8 TFLite run through the edge
runtime. A photo is *flagged* (sprayed) as ``edge-run`` decides one view: by the edge's own
rule (``edge.decide.rule.SprayRule``, through :func:`spray_rule`) -- its weed score, the
summed probability of all weed classes, reaches the threshold, and no crop veto holds it back.

* species accuracy: argmax over all classes, on plant photos only (crop + weed);
* crop-vs-weed accuracy, weed miss rate (weed photos not flagged / weed photos) and crop
  sprayed rate (crop photos flagged / crop photos), each rate with a Wilson 95 % interval;
* background photos are reported on their own (how often they would fire a valve) and
  never counted in the species numbers;
* a threshold sweep, and the operating threshold chosen on the *validation* split;
* :func:`classify_all` scores photos with ``edge.inference.Classifier`` -- the runtime's
  own loading, resizing and dequantisation, so there is no train/serve skew;
* :func:`quant_gate` compares int8 with float on the test split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from edge.decide.rule import SprayRule
from train.data import Roles

if TYPE_CHECKING:
    from edge.inference.bundle import Bundle, Manifest
    from train.data import Sample


@dataclass(frozen=True)
class Rate:
    """k events out of n, with a Wilson score interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {"rate": self.value if self.n else None, "k": self.k, "n": self.n, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        if not self.n:
            return "n/a (no photos)"
        return f"{100 * self.value:.2f} % ({self.k}/{self.n}; 95 % CI {100 * self.low:.2f}-{100 * self.high:.2f} %)"


def wilson(k: int, n: int, confidence: float = 0.95) -> Rate:
    """Wilson score interval (SciPy's binomtest), good for rates near 0 or 1."""
    if n == 0:
        return Rate(0, 0, float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(int(k), int(n), float(ci.low), float(ci.high))


def role_vector(labels: Sequence[str], roles: Roles) -> np.ndarray:
    """Per label: 1 weed, 0 crop, -1 background."""
    return np.array([{"weed": 1, "crop": 0, "background": -1}[roles.role_of(l)] for l in labels], dtype=np.int64)


def spray_rule(labels: Sequence[str], roles: Roles, threshold: float, crop_veto: float | None = None) -> SprayRule:
    """The edge's decision rule for these labels and roles: evaluation decides a photo as ``edge-run``
    decides a view (one function for both, ``edge.decide.rule``)."""
    return SprayRule(threshold, crop_veto, labels=tuple(labels), weed_labels=tuple(roles.weed),
                     crop_labels=tuple(roles.crop))


def weed_score(probs: np.ndarray, labels: Sequence[str], roles: Roles) -> np.ndarray:
    """The weed mass of each row (``SprayRule.weed_mass``, the same sum the edge makes; no threshold enters it)."""
    return np.atleast_1d(spray_rule(labels, roles, 0.5).weed_mass(np.atleast_2d(probs)))


def sprayed(probs: np.ndarray, labels: Sequence[str], roles: Roles, threshold: float,
            crop_veto: float | None = None) -> np.ndarray:
    """Whether each row (a photo: one view) would be sprayed by the rule (``SprayRule.fires``)."""
    rule = spray_rule(labels, roles, threshold, crop_veto)
    return np.atleast_1d(np.asarray(rule.fires(rule.view(np.atleast_2d(probs))), bool))


def role_rates(flagged: np.ndarray, true_role: np.ndarray) -> dict:
    """Crop-vs-weed accuracy, weed miss, crop sprayed and background fired of ``flagged`` photos
    whose true roles are ``true_role`` (1 weed, 0 crop, -1 background, as :func:`role_vector`)."""
    weed, crop, bg = true_role == 1, true_role == 0, true_role == -1
    plants = weed | crop
    correct = (flagged & weed) | (~flagged & crop)
    return {
        "crop_vs_weed_accuracy": float(correct[plants].mean()) if plants.any() else float("nan"),
        "crop_vs_weed": wilson(int(correct[plants].sum()), int(plants.sum())),
        "weed_miss": wilson(int((weed & ~flagged).sum()), int(weed.sum())),
        "crop_sprayed": wilson(int((crop & flagged).sum()), int(crop.sum())),
        "background_fired": wilson(int((bg & flagged).sum()), int(bg.sum())),
    }


def sprayer_rates(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], roles: Roles, threshold: float,
                  crop_veto: float | None = None) -> dict:
    """Crop-vs-weed accuracy, weed miss, crop sprayed and background fired by the rule at ``threshold``
    (and ``crop_veto``)."""
    flagged = sprayed(probs, labels, roles, threshold, crop_veto)
    true_role = role_vector(labels, roles)[y]
    plants = (true_role == 1) | (true_role == 0)
    correct = (flagged & (true_role == 1)) | (~flagged & (true_role == 0))
    return {**role_rates(flagged, true_role), "crop_vs_weed_correct": correct[plants]}  # per plant photo: McNemar


def threshold_sweep(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str], roles: Roles, thresholds: Sequence[float] | None = None,
    crop_veto: float | None = None,
) -> list[dict]:
    """Rates by the rule at each threshold (default 0.05 .. 0.95 in steps of 0.05), with ``crop_veto``."""
    if thresholds is None:
        thresholds = [round(t, 2) for t in np.arange(0.05, 0.951, 0.05)]
    rows = []
    for t in thresholds:
        r = sprayer_rates(probs, y, labels, roles, float(t), crop_veto)
        rows.append(
            {
                "threshold": float(t),
                "crop_vs_weed_accuracy": r["crop_vs_weed_accuracy"],
                "weed_miss": r["weed_miss"].value if r["weed_miss"].n else None,
                "crop_sprayed": r["crop_sprayed"].value if r["crop_sprayed"].n else None,
                "background_fired": r["background_fired"].value if r["background_fired"].n else None,
            }
        )
    return rows


def within_limits(row: dict, max_weed_miss: float | None, max_crop_sprayed: float | None) -> bool:
    """Whether a sweep row meets the operator's limits (rates as fractions; None = no limit)."""
    return all(
        limit is None or (row[key] or 0.0) <= limit + 1e-12
        for key, limit in (("weed_miss", max_weed_miss), ("crop_sprayed", max_crop_sprayed))
    )


def choose_threshold(
    sweep: Sequence[dict],
    miss_weight: float = 1.0,
    max_weed_miss: float | None = None,
    max_crop_sprayed: float | None = None,
) -> float:
    """Operating threshold from a *validation* sweep.

    With limits (fractions: the most weed misses and crop sprays the operator accepts),
    only the thresholds that meet both are considered, when any does; otherwise all are.
    Among those, minimises ``miss_weight * weed_miss + crop_sprayed + background_fired``;
    among equally good thresholds, the middle of the best run is taken (most margin on
    both sides), so a flat optimum does not sit on its edge.
    """
    feasible = [r for r in sweep if within_limits(r, max_weed_miss, max_crop_sprayed)]
    sweep = feasible or list(sweep)

    def cost(row: dict) -> float:
        return sum(
            w * (row[k] or 0.0)
            for k, w in (("weed_miss", miss_weight), ("crop_sprayed", 1.0), ("background_fired", 1.0))
        )

    costs = np.array([cost(r) for r in sweep])
    best = costs.min()
    idx = np.flatnonzero(np.isclose(costs, best, atol=1e-12))
    # longest contiguous run of optimal thresholds, then its middle
    runs, start = [], idx[0]
    for a, b in zip(idx, idx[1:]):
        if b != a + 1:
            runs.append((start, a))
            start = b
    runs.append((start, idx[-1]))
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    return float(sweep[(lo + hi) // 2]["threshold"])


def threshold_rule(miss_weight: float, max_weed_miss: float | None, max_crop_sprayed: float | None,
                   sweep: Sequence[dict], threshold: float) -> str:
    """One line saying how ``threshold`` was chosen on ``sweep`` (validation)."""
    cost = f"lowest {miss_weight:g} x weed miss + crop sprayed + background fired on validation"
    if max_weed_miss is None and max_crop_sprayed is None:
        return cost
    limits = " and ".join(f"{name} <= {100 * v:g} %" for name, v in (("weed miss", max_weed_miss),
                                                                       ("crop sprayed", max_crop_sprayed)) if v is not None)
    if any(within_limits(r, max_weed_miss, max_crop_sprayed) for r in sweep):
        return f"{cost}, among the thresholds with {limits} on validation"
    return f"{cost}; no threshold met {limits} on validation"


def evaluate(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str], roles: Roles, threshold: float,
    crop_veto: float | None = None,
) -> dict:
    """All metrics for one split by the rule (``threshold``, ``crop_veto``), as plain JSON-ready values
    (rates carry their CIs)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probs = np.asarray(probs, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    rv = role_vector(labels, roles)
    pred = probs.argmax(axis=1)
    plants = rv[y] >= 0
    bg = rv[y] == -1
    p, r, f, support = precision_recall_fscore_support(
        y, pred, labels=list(range(len(labels))), zero_division=0
    )
    rates = sprayer_rates(probs, y, labels, roles, threshold, crop_veto)
    species_acc = float((pred[plants] == y[plants]).mean()) if plants.any() else float("nan")
    out = {
        "n_photos": int(len(y)),
        "n_plant_photos": int(plants.sum()),
        "n_background": int(bg.sum()),
        "threshold": float(threshold),
        "crop_veto": crop_veto,
        "species_accuracy": species_acc,
        "species_accuracy_ci95": list(wilson(int((pred[plants] == y[plants]).sum()), int(plants.sum())).as_dict()["ci95"]),
        "crop_vs_weed_accuracy": rates["crop_vs_weed_accuracy"],
        "weed_miss": rates["weed_miss"].as_dict(),
        "crop_sprayed": rates["crop_sprayed"].as_dict(),
        "background": {
            "fired": rates["background_fired"].as_dict(),
            "recall": float((pred[bg] == y[bg]).mean()) if bg.any() else None,
            "max_weed_score": float(weed_score(probs[bg], labels, roles).max()) if bg.any() else None,
        },
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=list(range(len(labels)))).tolist(),
        "sweep": threshold_sweep(probs, y, labels, roles, crop_veto=crop_veto),
        # per plant photo, in order, 1 = right: what the quantisation gate's paired test compares
        "correct": {"species": _bits(pred[plants] == y[plants]), "crop_vs_weed": _bits(rates["crop_vs_weed_correct"])},
    }
    return out


def _bits(flags: np.ndarray) -> str:
    return "".join("1" if f else "0" for f in flags)


# --------------------------------------------------------------------------- the edge runtime's scores; int8 vs float


def classify_all(bundle: Bundle, images: Sequence[np.ndarray], desc: str = "edge inference", num_threads: int = 2) -> np.ndarray:
    """Probabilities for each RGB image through ``edge.inference.Classifier``."""
    from tqdm.auto import tqdm

    from edge.inference import Classifier

    clf = Classifier(bundle, num_threads=num_threads)
    try:
        out = np.zeros((len(images), len(clf.labels)), np.float32)
        for i, img in enumerate(tqdm(images, desc=desc, unit="img", leave=False)):
            out[i] = clf.classify_rgb(img)
        return out
    finally:
        clf.close()


GATE_POINTS_MIN_PHOTOS = 200  # below this many test plant photos one photo is too many points: a paired test decides
GATE_ALPHA = 0.05


@dataclass(frozen=True)
class GateResult:
    passed: bool
    species_drop: float  # percentage points, float - int8
    crop_vs_weed_drop: float
    max_drop: float
    test: str = "points"  # "points" (the max_drop rule) or "mcnemar" (exact paired test, small test splits)
    n_photos: int = 0  # test plant photos
    discordant: dict = field(default_factory=dict)  # mcnemar: {metric: [float right & int8 wrong, the other way]}
    p_values: dict = field(default_factory=dict)  # mcnemar: {metric: two-sided p}

    def message(self) -> str:
        drops = f"species {self.species_drop:.2f} points, crop-vs-weed {self.crop_vs_weed_drop:.2f} points"
        if self.test == "points":
            return (
                f"{self.max_drop:g}-point rule ({self.n_photos} test plant photos >= {GATE_POINTS_MIN_PHOTOS}): "
                f"accuracy drop from float32 to int8 on the test split: {drops} "
                f"(allowed: {self.max_drop:.1f}; negative = int8 better)"
            )
        pairs = "; ".join(
            f"{m} {b} photos right only in float32, {c} only in int8, p={self.p_values[m]:.3f}"
            for m, (b, c) in self.discordant.items()
        )
        return (
            f"McNemar paired test ({self.n_photos} test plant photos < {GATE_POINTS_MIN_PHOTOS}, exact binomial on the "
            f"photos the two models disagree on, int8 fails when significantly worse at {GATE_ALPHA:.0%}): {pairs}; "
            f"accuracy drop {drops}"
        )


def quant_gate(float_metrics: dict, int8_metrics: dict, max_drop: float = 1.0) -> GateResult:
    """Int8 against float32 on the same test photos.

    On a test split of :data:`GATE_POINTS_MIN_PHOTOS` plant photos or more, fail when int8 falls
    more than ``max_drop`` points below float in either accuracy. On a smaller one a point is less
    than a photo, so a paired test decides: McNemar's (exact binomial on the photos only one of
    the two gets right), failing when int8 is worse and ``p < GATE_ALPHA`` for either accuracy.
    """
    from scipy.stats import binomtest

    sd = 100.0 * (float_metrics["species_accuracy"] - int8_metrics["species_accuracy"])
    cd = 100.0 * (float_metrics["crop_vs_weed_accuracy"] - int8_metrics["crop_vs_weed_accuracy"])
    n = int(float_metrics["n_plant_photos"])
    if n >= GATE_POINTS_MIN_PHOTOS:
        return GateResult(passed=sd <= max_drop + 1e-9 and cd <= max_drop + 1e-9, species_drop=sd,
                          crop_vs_weed_drop=cd, max_drop=max_drop, n_photos=n)
    discordant, p_values, worse = {}, {}, False
    for metric in ("species", "crop_vs_weed"):
        f = np.frombuffer(float_metrics["correct"][metric].encode(), np.uint8) == ord("1")
        q = np.frombuffer(int8_metrics["correct"][metric].encode(), np.uint8) == ord("1")
        b, c = int((f & ~q).sum()), int((~f & q).sum())
        p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        discordant[metric], p_values[metric] = [b, c], float(p)
        worse |= b > c and p < GATE_ALPHA
    return GateResult(passed=not worse, species_drop=sd, crop_vs_weed_drop=cd, max_drop=max_drop, test="mcnemar",
                      n_photos=n, discordant=discordant, p_values=p_values)


# --------------------------------------------------------------------------- rendering


def confusion_text(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Rows = true class, columns = predicted (abbreviated to 6 characters)."""
    short = [l[:6] for l in labels]
    w = max(len(l) for l in labels)
    cw = max(6, max(len(str(v)) for row in cm for v in row))
    lines = [" " * w + "  " + " ".join(f"{s:>{cw}}" for s in short) + "   <- predicted"]
    for lab, row in zip(labels, cm):
        lines.append(f"{lab:>{w}}  " + " ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)


def confusion_png(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.55 * len(labels)), dpi=100)
    ConfusionMatrixDisplay(np.asarray(cm), display_labels=list(labels)).plot(
        ax=ax, cmap="Greens", colorbar=False, xticks_rotation=60
    )
    ax.set_title(title or "confusion matrix (rows: true)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f} %"


def rate_str(d: dict) -> str:
    if not d["n"]:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{100 * d['rate']:.2f} % ({d['k']}/{d['n']}; 95 % CI {100 * lo:.2f}-{100 * hi:.2f} %)"


def summary_lines(m: dict) -> list[str]:
    return [
        f"species accuracy (plants only): {pct(m['species_accuracy'])} over {m['n_plant_photos']} photos",
        f"crop-vs-weed accuracy: {pct(m['crop_vs_weed_accuracy'])} at threshold {m['threshold']:.2f}",
        f"weed miss rate: {rate_str(m['weed_miss'])}",
        f"crop sprayed rate: {rate_str(m['crop_sprayed'])}",
        f"background fired: {rate_str(m['background']['fired'])}",
    ]


def per_class_table(m: dict) -> str:
    lines = ["| class | precision | recall | F1 | photos |", "|---|---:|---:|---:|---:|"]
    for lab, v in m["per_class"].items():
        lines.append(f"| {lab} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    return "\n".join(lines)


def sweep_table(sweep: Sequence[dict], chosen: float) -> str:
    lines = ["| threshold | crop-vs-weed acc. | weed miss | crop sprayed | background fired |", "|---:|---:|---:|---:|---:|"]
    for r in sweep:
        mark = " **(chosen)**" if abs(r["threshold"] - chosen) < 1e-9 else ""
        lines.append(
            f"| {r['threshold']:.2f}{mark} | {pct(r['crop_vs_weed_accuracy'])} | {pct(r['weed_miss'])} | "
            f"{pct(r['crop_sprayed'])} | {pct(r['background_fired'])} |"
        )
    return "\n".join(lines)


def write_metrics(path: Path, metrics: dict) -> Path:
    path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return path


METRICS = "metrics.json"  # a bundle's record of its training run (export.write_reports)
MAX_METRICS_BYTES = 16_000_000  # a bundle's is under 100 kB


class _RecordedTraining(BaseModel):
    command: str


class _RecordedGate(BaseModel):
    allowed: bool


class _RecordedModel(BaseModel):
    threshold: float
    val: dict
    test: dict


class _RecordedRun(BaseModel):
    """The parts of a bundle's metrics.json that ``weed-train threshold`` reads (the rest is kept as it is)."""

    labels: list[str] = Field(min_length=1)
    main_model: str
    models: dict[str, _RecordedModel]
    gate: _RecordedGate
    training: _RecordedTraining

    @model_validator(mode="after")
    def _models_present(self) -> "_RecordedRun":
        missing = sorted({self.main_model, "int8", "float32"} - set(self.models))
        if missing:
            raise ValueError(f"no record of the model(s) {missing} (main model {self.main_model!r})")
        return self


def read_metrics(bundle_dir: Path) -> dict:
    """A bundle's metrics.json, checked to hold what re-choosing its rule reads (``_RecordedRun``); a FIFO or a
    device is never opened. BundleError (exit 4) naming the file and what is wrong otherwise."""
    from edge.core.errors import BundleError
    from edge.core.files import FileRefused, read_regular

    path = Path(bundle_dir) / METRICS
    fix = "restore metrics.json from the bundle as weed-train wrote it, or retrain the bundle"
    try:
        doc = json.loads(read_regular(path, MAX_METRICS_BYTES).decode("utf-8"))
    except FileRefused as e:
        raise BundleError(f"{path} {'is missing' if e.missing else e}", fix) from None
    except UnicodeDecodeError as e:
        raise BundleError(f"{path} is not UTF-8 text (byte {e.start})", fix) from None
    except ValueError as e:  # not JSON, or an integer of more than 4300 digits
        raise BundleError(f"{path} is not valid JSON ({e})", fix) from None
    except RecursionError:
        raise BundleError(f"{path} nests arrays or objects too deeply to read", fix) from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object, not {type(doc).__name__}", fix)
    try:
        _RecordedRun.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(metrics)"
        raise BundleError(f"{path}: field '{loc}': {err['msg'].removeprefix('Value error, ')}", fix) from None
    return doc


def bundle_roles(m: Manifest) -> Roles:
    """Which of a bundle's labels are weeds, crops and background (its manifest's)."""
    return Roles(weed=tuple(m.weed_labels), crop=tuple(m.crop_labels), background=tuple(m.background_labels))


def labelled_samples(m: Manifest, data_dir: Path, roles_file: Path | None) -> tuple[list[Sample], Roles | None]:
    """The decodable photos of a folder-per-class set, and the roles of its classes (for those the bundle does
    not know).

    Such classes are refused unless ``roles_file`` (class,role) gives them a role (they then
    count in the sprayer rates only); the bundle's own classes keep their roles without a row in it
    (so a new class may be a crop: the bundle's weeds are the weeds). ``None`` when every class is a
    label of the bundle.
    """
    from train import data as datamod
    from train.data import DataError

    samples = list(datamod.check_images(datamod.scan_folder(data_dir)).good)
    unknown = sorted({s.label for s in samples} - set(m.labels))
    if not unknown:
        return samples, None
    if roles_file is None:
        raise DataError(
            f"classes {unknown} in {data_dir} are not labels of bundle '{m.name}'",
            "remove them, or pass --roles class,role so they count in the weed/crop rates",
        )
    roles = bundle_roles(m)
    known = [(lab, "weed" if lab in roles.weed else "background" if lab in roles.background else "crop")
             for lab in m.labels]  # a label in none of the manifest's lists is a crop, as read_roles makes it
    return samples, datamod.read_roles({s.label for s in samples}, roles_file, defaults=known)


def evaluate_bundle(
    model: str | Path | None,
    data_dir: Path,
    variant: str | None = None,
    out: Path | None = None,
    roles_file: Path | None = None,
    threshold: float | None = None,
) -> dict:
    """Score a bundle on a folder-per-class set of photos through the edge runtime.

    The bundle's own labels, roles and rule (threshold and crop veto) are used (``threshold``
    overrides its threshold); photos of classes the bundle does not know are refused unless
    ``roles_file`` gives them a role -- they then count only in the sprayer rates.
    """
    from edge.inference.bundle import load_bundle
    from train import data as datamod

    bundle = load_bundle(model, variant=variant)
    m = bundle.manifest
    labels = list(m.labels)
    roles = bundle_roles(m)
    samples, extra_roles = labelled_samples(m, data_dir, roles_file)
    unknown = sorted({s.label for s in samples} - set(labels))
    keep = [s for s in samples if s.label in labels]
    images = [datamod.decode_rgb(s.path) for s in keep]
    probs = classify_all(bundle, images, desc=f"{m.name} (edge)")
    y = np.array([labels.index(s.label) for s in keep], dtype=np.int64)
    rule = SprayRule.from_manifest(m, threshold=threshold)
    thr = rule.threshold
    metrics = evaluate(probs, y, labels, roles, thr, rule.crop_veto)
    metrics["bundle"] = m.name
    metrics["model_file"] = bundle.model_path.name
    metrics["data"] = str(data_dir)
    if extra_roles is not None:
        # photos of unknown classes: only "was it flagged?" can be scored
        other = [s for s in samples if s.label not in labels]
        p_other = classify_all(bundle, [datamod.decode_rgb(s.path) for s in other], desc="other classes (edge)")
        flagged = sprayed(p_other, labels, roles, thr, rule.crop_veto)
        is_weed = np.array([extra_roles.role_of(s.label) == "weed" for s in other])
        metrics["unknown_classes"] = {
            "classes": unknown,
            "weed_miss": wilson(int((is_weed & ~flagged).sum()), int(is_weed.sum())).as_dict(),
            "not_weed_sprayed": wilson(int((~is_weed & flagged).sum()), int((~is_weed).sum())).as_dict(),
        }
    for line in summary_lines(metrics):
        print(line)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics(out / "metrics.json", metrics)
        confusion_png(metrics["confusion_matrix"], labels, out / "confusion_matrix.png", f"{m.name} on {Path(data_dir).name}")
        (out / "confusion_matrix.txt").write_text(confusion_text(metrics["confusion_matrix"], labels) + "\n")
        (out / "report.md").write_text(
            "\n".join(
                [f"# {m.name} ({bundle.model_path.name}) on `{data_dir}`", ""]
                + [f"- {s}" for s in summary_lines(metrics)]
                + ["", per_class_table(metrics), "", "```", confusion_text(metrics["confusion_matrix"], labels), "```",
                   "", sweep_table(metrics["sweep"], thr), ""]
            )
        )
        print(f"written: {out}/metrics.json, report.md, confusion_matrix.png/.txt")
    return metrics
