"""The training run's value types: its settings and the records passed from stage to stage.

:class:`DataConfig` and :class:`ExportConfig` are what the command line sets; :class:`Item`
and :class:`Prepared` the photos and patches of each split (``pipeline.prepare``);
:class:`Trained` a fitted model with its data (input to ``export.export_bundle``);
:class:`RunResult` what a run wrote. Records only: the stages that make and use them
import this module, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from train import data as datamod
from train.data import BACKGROUND, SPLITS, Roles, Sample

if TYPE_CHECKING:
    from train import background as bgmod
    from train import finetune
    from train.fit import FitConfig, FitResult


@dataclass(frozen=True)
class DataConfig:
    data: Path | None = None  # folder-per-class
    csv: Path | None = None  # or a path,label CSV
    mix_with: tuple[Path, ...] = ()  # more folder-per-class sets mixed in (each with its own groups.csv)
    val_dir: Path | None = None  # explicit validation folder (then test_dir too)
    test_dir: Path | None = None
    roles_file: Path | None = None
    weeds: tuple[str, ...] = ()
    crops: tuple[str, ...] = ()
    background_classes: tuple[str, ...] = ()
    groups: Path | None = None  # None: groups.csv inside/beside the data folder if present
    use_groups: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    background: str = "auto"  # "auto" (cut from the photos), "none", or a folder from `weed-train background`
    background_fraction: float = 1.5  # background patches per split = this x mean photos per class
    resize: str = "center_crop"
    max_per_class: int = 0  # 0 = all (tests use a few)
    # (class, role) defaults a roles file or --weeds/--crops may change: a --from-bundle bundle's labels' roles
    role_defaults: tuple[tuple[str, str], ...] = ()


@dataclass
class Item:
    """One evaluation/training image: a photo, or a background patch cut from one."""

    label: str
    split: str
    sample: Sample | None = None
    patch: bgmod.Patch | None = None

    def raw_rgb(self) -> np.ndarray:
        """The image as the camera/edge would see it (original pixels, any size)."""
        if self.patch is not None:
            return self.patch.render()
        return datamod.decode_rgb(self.sample.path)

    @property
    def name(self) -> str:
        if self.patch is not None:
            kind = "" if self.patch.grid == 1 else f"mosaic{self.patch.grid}:"
            return f"{BACKGROUND}:{kind}{self.patch.source.parent.name}/{self.patch.source.name}"
        return f"{self.sample.label}/{self.sample.path.name}"


@dataclass
class Prepared:
    labels: list[str]
    roles: Roles
    samples: list[Sample]
    items: dict[str, list[Item]]
    corrupt: list[tuple[str, str]]
    groups_file: str | None
    leaks: list[str]
    notes: list[str] = field(default_factory=list)

    def split_items(self, split: str) -> list[Item]:
        return self.items[split]

    def counts(self) -> dict:
        out = {}
        for sp in SPLITS:
            c: dict[str, int] = {}
            for it in self.items[sp]:
                c[it.label] = c.get(it.label, 0) + 1
            out[sp] = {lab: c.get(lab, 0) for lab in self.labels}
        return out


DATA_LICENCE = "CC BY-SA 4.0 (training photos: Plant Seedlings Dataset)"
DATA_ATTRIBUTION = (
    "Giselsson, T. M., Jørgensen, R. N., Jensen, P. K., Dyrmann, M., Midtiby, H. S. (2017). "
    "A Public Image Database for Benchmark of Plant Seedling Classification Algorithms. arXiv:1711.05458. "
    "Aarhus University / University of Southern Denmark."
)


@dataclass(frozen=True)
class ExportConfig:
    out: Path = Path("models")
    name: str = "plant-seedlings-mnv2"
    description: str = ""
    extra_variants: tuple[str, ...] = ()  # "float16" on request; float32 is always written (the gate needs it)
    allow_quant_drop: bool = False
    max_quant_drop: float = 1.0  # points
    representative: int = 400
    miss_weight: float = 1.0  # weed miss vs crop sprayed trade-off when choosing the threshold
    max_weed_miss: float | None = None  # limits (fractions) the threshold must meet on validation, when it can
    max_crop_sprayed: float | None = None
    # where the rule (threshold, crop veto) is chosen: "validation+perturbed" (train.rulechoice: crop sprayed a hard
    # limit — max_crop_sprayed, default 2 %, clean and max_crop_sprayed_perturbed on every perturbed row —, weed
    # miss minimised) or "validation" (the clean sweep, miss_weight / max_weed_miss / max_crop_sprayed, no veto)
    rule_on: str = "validation+perturbed"
    max_crop_sprayed_perturbed: float = 0.05
    licence: str = DATA_LICENCE
    attribution: str = DATA_ATTRIBUTION
    latency_runs: int = 100


@dataclass
class RunResult:
    bundle_dir: Path
    metrics: dict
    gate_passed: bool
    gate_message: str


# (x, y, raw) per split: images as the model sees them, class ids, the original RGB images (for the edge runtime)
Splits = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[np.ndarray]]]


@dataclass
class Trained:
    """A fitted model with the data it was made from (input to :func:`train.export.export_bundle`)."""

    dc: DataConfig
    fc: FitConfig
    prep: Prepared
    x: dict[str, np.ndarray]  # split -> images as the model sees them
    y: dict[str, np.ndarray]  # split -> class ids
    raw: dict[str, list[np.ndarray]]  # split -> the original RGB images (for the edge runtime)
    result: FitResult
    started: str
    converted: dict[tuple[str, int], bytes] = field(default_factory=dict)  # (quantization, representative n) -> TFLite
    val_probs: np.ndarray | None = None  # after a refit: the split model's validation probabilities
    # after a refit: the split model's validation probabilities under each row of train.perturb.SUITE
    val_rows: dict[str, np.ndarray] | None = None
    start: finetune.Start | None = None  # the bundle it was fine-tuned from (--from-bundle), or None
    # without a refit: per model (quantization) its validation rows through the edge runtime, once scored
    edge_val_rows: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # a weight soup (train.soup): its command and parents; the training command recorded is the first parent's
    soup: dict | None = None
