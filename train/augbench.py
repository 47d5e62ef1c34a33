"""`weed-train augment-bench`: how much slower a training epoch gets with the augmentation.

Measured in one run, on the training split of the data given, the two ways alternating
(plain first, then augmented, ``repeats`` times):

* the input pipeline alone -- ``batches`` batches of ``make_dataset`` drawn and discarded;
* training -- ``batches`` steps of the backbone phase (the model ``weed-train train``
  fine-tunes, compiled the same way) fed by ``fit.training_batches``, after one warm-up
  epoch of the same length (tracing, the first batches).

For each: wall time and process CPU time (all threads) per batch, and their ratio
augmented / plain. On shared cores the wall times move with the other jobs; the CPU
times are the work done. Optionally (``per_op``) each effect alone through the pipeline.
Timings are what this machine gave: the command is there to be rerun.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from train.augment import Augment
from train.evaluate import role_vector
from train.fit import FitConfig, backbone_phase, build_backbone, classifier, training_batches
from train.pipeline import arrays, prepare

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from train.runs import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Seconds per batch: wall clock and process CPU (all threads)."""

    wall: float
    cpu: float


@dataclass
class BenchResult:
    batches: int
    batch_size: int
    input_size: int
    train_images: int
    augment: str
    pipeline: dict[str, Timing]  # "plain" / "augmented"
    training: dict[str, Timing]
    per_op: dict[str, Timing] = field(default_factory=dict)

    def ratio(self, part: dict[str, Timing], kind: str) -> float:
        plain, aug = part["plain"], part["augmented"]
        return (aug.wall / plain.wall) if kind == "wall" else (aug.cpu / plain.cpu)

    def table(self) -> str:
        steps = int(np.ceil(self.train_images / self.batch_size))
        lines = [
            f"augmentation: {self.augment}",
            f"{self.batches} batches of {self.batch_size} at {self.input_size} px; an epoch is {steps} batches "
            f"({self.train_images} training images)",
            "",
            "| measured | plain ms/batch (wall / cpu) | augmented ms/batch (wall / cpu) | ratio wall | ratio cpu | epoch, augmented (wall) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, part in (("input pipeline alone", self.pipeline), ("training step (backbone phase)", self.training)):
            p, a = part["plain"], part["augmented"]
            lines.append(f"| {name} | {1e3 * p.wall:.0f} / {1e3 * p.cpu:.0f} | {1e3 * a.wall:.0f} / {1e3 * a.cpu:.0f} | "
                         f"{self.ratio(part, 'wall'):.2f} | {self.ratio(part, 'cpu'):.2f} | {a.wall * steps:.0f} s |")
        if self.per_op:
            lines += ["", "| effect alone (input pipeline) | ms/batch wall | ms/batch cpu |", "|---|---:|---:|"]
            lines += [f"| {k} | {1e3 * t.wall:.0f} | {1e3 * t.cpu:.0f} |" for k, t in self.per_op.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = {name: {kind: self.ratio(part, kind) for kind in ("wall", "cpu")}
                       for name, part in (("pipeline", self.pipeline), ("training", self.training))}
        return d


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], n: int) -> Timing:
    wall, cpu = _clock()
    return Timing((wall - start[0]) / n, (cpu - start[1]) / n)


def time_pipeline(ds: tf.data.Dataset, batches: int, warmup: int = 2) -> Timing:
    """Per-batch time of drawing ``batches`` batches from an endless ``ds`` (after ``warmup``)."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = _clock()
    for _ in range(batches):
        next(it)
    return _since(start, batches)


def _epoch_clock() -> keras.callbacks.Callback:
    """A Keras callback keeping (wall, cpu) seconds per epoch in ``.epochs``."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[tuple[float, float]] = []
            self._start = _clock()

        def on_epoch_begin(self, epoch, logs=None):
            self._start = _clock()

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = _clock()
            self.epochs.append((wall - self._start[0], cpu - self._start[1]))

    return EpochClock()


def time_training(model: keras.Model, ds: tf.data.Dataset, batches: int, class_weight: dict[int, float]) -> Timing:
    """Per-step time of ``batches`` training steps on endless ``ds``, after a warm-up epoch of as many."""
    clock = _epoch_clock()
    model.fit(ds, epochs=2, steps_per_epoch=batches, class_weight=class_weight, callbacks=[clock], verbose=0)
    wall, cpu = clock.epochs[-1]
    return Timing(wall / batches, cpu / batches)


def run_bench(dc: DataConfig, fc: FitConfig, batches: int = 20, repeats: int = 1, per_op: bool = False,
              progress: bool = True) -> BenchResult:
    """Time the pipeline and training with ``fc.augment`` and with none (see the module docstring)."""
    prep = prepare(dc, progress=progress)
    x, y, _ = arrays(prep.items["train"], prep.labels, fc.input_size, dc.resize, desc="loading train")
    roles = role_vector(prep.labels, prep.roles)
    n = len(prep.labels)
    cfgs = {"plain": replace(fc, augment=Augment.off()), "augmented": fc}
    built = build_backbone(fc, "none" if fc.mode == "scratch" else None)
    model = classifier(built, n, fc.dropout, fc.draw_seed)
    backbone_phase(fc, built, model, int(np.ceil(len(x) / fc.batch_size)), roles)  # the run's loss (--group-loss)
    weights = {i: 1.0 for i in range(n)}
    pipe: dict[str, list[Timing]] = {k: [] for k in cfgs}
    train: dict[str, list[Timing]] = {k: [] for k in cfgs}
    for r in range(repeats):
        for name, cfg in cfgs.items():
            log.info("augment-bench round %d/%d: %s", r + 1, repeats, name)
            pipe[name].append(time_pipeline(_batches(cfg, x, y, n, roles), batches))
            train[name].append(time_training(model, _batches(cfg, x, y, n, roles), batches, weights))
    ops = {}
    if per_op:
        for effect, alone in effects_alone(fc.augment).items():
            ops[effect] = time_pipeline(_batches(replace(fc, augment=alone), x, y, n, roles), batches)
    mean = lambda ts: Timing(float(np.mean([t.wall for t in ts])), float(np.mean([t.cpu for t in ts])))  # noqa: E731
    return BenchResult(batches, fc.batch_size, fc.input_size, len(x), str(fc.augment),
                       {k: mean(v) for k, v in pipe.items()}, {k: mean(v) for k, v in train.items()}, ops)


def effects_alone(aug: Augment) -> dict[str, Augment]:
    """Each effect of ``aug`` on its own (scale_min and scale_max together as "scale"), shaped as in ``aug``."""
    groups: dict[str, dict] = {}
    for name, value in aug.effects().items():
        groups.setdefault("scale" if name.startswith("scale_") else name, {})[name] = value
    shape = dict(camera_p=aug.camera_p, composite_plants=aug.composite_plants, composite_visible=aug.composite_visible)
    return {name: Augment.build(Augment.off(), **over, **shape) for name, over in groups.items()}


def _batches(cfg: FitConfig, x: np.ndarray, y: np.ndarray, n_classes: int, roles: np.ndarray) -> tf.data.Dataset:
    """The endless training batches ``weed-train train`` would draw with ``cfg``."""
    return training_batches(cfg, x, y, None, None, n_classes, roles).train


def write_result(res: BenchResult, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res.as_dict(), indent=2) + "\n")
