"""A weight soup: one bundle whose weights are the mean of several bundles' (``weed-train soup A B ...``).

Models fine-tuned from the same pretrained weights on the same split often lie in one basin of the
loss, and the mean of their weights ("model soups", Wortsman et al. 2022) is then at least as accurate
as its parents and more robust to shifts none of them was chosen on — at no cost on the edge: the
soup is one model of the same architecture and size. Parents trained with different augmentation or
another ``--train-seed`` are what it is for.

The parents must be bundles written by ``weed-train train`` with their Keras model (``model.keras``),
made from the same data, split, labels and roles, backbone, input size, resize rule and preprocessing
(their recorded training commands say so: :func:`check_parents`); anything else is refused with what
differs. The soup is exported and evaluated exactly as a training run's model is
(:func:`train.export.export_bundle`: int8 + float32, the quantisation gate, the test split, the
robustness suite, the report), with one difference: its validation numbers and its threshold are the
soup's own, through the edge runtime — if a parent was refit on train+val, they have seen those
photos, so the validation numbers are optimistic (the report's notes say so). The bundle records
the first parent's training command (``training.command``: the split and recipe the others share, what
``weed-train robustness --split`` and ``threshold`` rebuild) and the soup itself under
``training.soup`` (the soup command, each parent's name, Keras sha256 and command).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edge.core.errors import BundleError

if TYPE_CHECKING:
    import keras

    from train.finetune import Start
    from train.fit import FitConfig
    from train.runs import DataConfig, ExportConfig, RunResult

log = logging.getLogger(__name__)

MAX_PARENTS = 8
# FitConfig fields every parent must share (the weights must mean the same thing); the others (augmentation,
# schedule, seeds of the training draws, learning rates) may differ: that is what a soup mixes
SAME_FIT = ("backbone", "mode", "input_size", "weights", "from_bundle")


@dataclass(frozen=True)
class Parent:
    """One bundle of the soup: its checked Keras model and the training run its recorded command rebuilds."""

    start: Start
    data: DataConfig
    fit: FitConfig

    @property
    def name(self) -> str:
        return self.start.name

    @property
    def command(self) -> str:
        """The ``weed-train train`` command the bundle records (``data`` and ``fit`` are parsed from it)."""
        return self.start.manifest.training["command"]


def check_count(n: int) -> None:
    """Refuse a soup of fewer than two or more than MAX_PARENTS bundles."""
    if not 2 <= n <= MAX_PARENTS:
        raise BundleError(f"a soup needs 2 to {MAX_PARENTS} bundles, got {n}",
                          "name two or more bundles trained on the same split (weed-train soup A B)")


def check_parents(parents: Sequence[Parent]) -> None:
    """Refuse parents that cannot be averaged: fewer than two, too many, or made from other data or another model."""
    check_count(len(parents))
    first = parents[0]
    seen = {first.start.sha256: first.name}
    for p in parents[1:]:
        if p.start.sha256 in seen:
            raise BundleError(f"bundles {seen[p.start.sha256]} and {p.name} hold the same Keras model "
                              f"(sha256 {p.start.sha256[:12]}...)", "a soup of a model with itself is that model: "
                              "name bundles trained differently")
        seen[p.start.sha256] = p.name
        why = _differences(first, p)
        if why:
            raise BundleError(f"bundle {p.name} cannot be averaged with {first.name}: {'; '.join(why)}",
                              "average only bundles trained by weed-train train on the same data, split (--seed) "
                              "and model (--backbone, --input-size, --resize, --mode, --weights)")


def _differences(a: Parent, b: Parent) -> list[str]:
    """What differs between two parents that must not (empty: they can be averaged)."""
    out = []
    ma, mb = a.start.manifest, b.start.manifest
    for what, x, y in (("labels", list(ma.labels), list(mb.labels)),
                       ("weed labels", sorted(ma.weed_labels), sorted(mb.weed_labels)),
                       ("crop labels", sorted(ma.crop_labels), sorted(mb.crop_labels)),
                       ("backbone", ma.backbone, mb.backbone),
                       ("input", (ma.input.height, ma.input.width, ma.input.resize),
                        (mb.input.height, mb.input.width, mb.input.resize)),
                       ("preprocessing", ma.preprocessing, mb.preprocessing),
                       ("pretrained weights", ma.weights_source, mb.weights_source),
                       ("photos per class and split", ma.training.get("counts"), mb.training.get("counts"))):
        if x != y:
            out.append(f"{what} {y} against {x}")
    for f in fields(a.data):
        x, y = getattr(a.data, f.name), getattr(b.data, f.name)
        if x != y:
            out.append(f"its data/split setting {f.name} is {y!r} against {x!r}")
    for name in SAME_FIT:
        x, y = getattr(a.fit, name), getattr(b.fit, name)
        if x != y:
            out.append(f"--{name.replace('_', '-')} {y!r} against {x!r}")
    return out


def average(models: Sequence[keras.Model]) -> keras.Model:
    """The first model with every weight (trainable or not) replaced by the mean over ``models`` (float64 sums).

    Weights are matched in the models' order, and must have the same variable name (``kernel``, ``bias``,
    ``moving_mean``: layer names may differ between processes, ``dense`` and ``dense_1``), shape and dtype; a
    weight that is not a float (a counter) must be the same in every model."""
    paths = [[v.name for v in m.weights] for m in models]
    lists = [m.get_weights() for m in models]
    for i in range(1, len(models)):
        if paths[i] != paths[0] or [(w.shape, w.dtype) for w in lists[i]] != [(w.shape, w.dtype) for w in lists[0]]:
            raise BundleError(f"the Keras models do not have the same weights (model {i + 1}: {len(lists[i])} "
                              f"arrays, model 1: {len(lists[0])}, or other variables, shapes or types)",
                              "average only bundles of the same backbone, input size and labels")
    mean = []
    for k, w in enumerate(lists[0]):
        stack = np.stack([ws[k] for ws in lists])
        if np.issubdtype(w.dtype, np.floating):
            mean.append(np.mean(stack.astype(np.float64), axis=0).astype(w.dtype))
        elif (stack == w).all():
            mean.append(w)
        else:
            raise BundleError(f"the Keras models' weight {models[0].weights[k].path} is not a float and differs "
                              "between them",
                              "average only bundles written by weed-train train")
    models[0].set_weights(mean)
    return models[0]


def _load(p: Parent) -> keras.Model:
    """A parent's Keras model (its sha256 was checked when it was opened)."""
    import keras

    try:
        return keras.saving.load_model(p.start.keras_path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds on a file it cannot read
        raise BundleError(f"bundle {p.name}: its Keras model {p.start.keras_path} cannot be loaded "
                          f"({e.__class__.__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})",
                          "copy the bundle folder again from where it was made") from None


def _check_split(prep, first: Parent) -> None:
    """The split rebuilt here holds the photos the parents were trained, validated and tested on (the first one's
    counts; the others agree with it, ``check_parents``), with the same labels and roles: else the test photos may
    be some a parent trained on."""
    m = first.start.manifest
    counts = prep.counts()
    roles = (sorted(prep.roles.weed), sorted(prep.roles.crop), sorted(prep.roles.background))
    if list(prep.labels) != list(m.labels):
        raise BundleError(f"the data gives the classes {list(prep.labels)}, bundle {first.name} was trained on "
                          f"{list(m.labels)}", "pass the data the bundles were trained on (--data)")
    if m.training.get("counts") != counts:
        raise BundleError(f"the split rebuilt from the data here is not the one bundle {first.name} was trained on "
                          f"(photos per class and split {counts} against {m.training.get('counts')})",
                          "pass the data the bundles were trained on, unchanged (--data)")
    if roles != (sorted(m.weed_labels), sorted(m.crop_labels), sorted(m.background_labels)):
        raise BundleError(f"the roles file gives weeds {roles[0]}, crops {roles[1]}, background {roles[2]}; "
                          f"bundle {first.name} was trained with weeds {sorted(m.weed_labels)}, crops "
                          f"{sorted(m.crop_labels)}", "pass the roles the bundles were trained with")


def run_soup(parents: Sequence[Parent], ec: ExportConfig, data: DataConfig | None = None,
             argv: Sequence[str] | None = None, progress: bool = True) -> RunResult:
    """Average the parents' Keras models and export and evaluate the soup as a training run's model (``data``: the
    first parent's data config with the photos' folder where they are here; by default its recorded one)."""
    from train.export import export_bundle
    from train.fit import FitResult
    from train.pipeline import load_splits, prepare
    from train.provenance import command_line, utc_now
    from train.runs import Trained

    check_parents(parents)
    started = utc_now()
    first = parents[0]
    if first.fit.mode == "scratch" or first.fit.weights == "none":
        log.warning("the parents were not fine-tuned from pretrained weights (--mode %s --weights %s): networks "
                    "trained from different random starts rarely average into a good model", first.fit.mode,
                    first.fit.weights)
    dc, fc, m = data or first.data, first.fit, first.start.manifest
    prep = prepare(dc, progress=progress)
    _check_split(prep, first)
    x, y, raw = load_splits(prep, fc.input_size, dc.resize)
    model = average([_load(p) for p in parents])
    weights = m.training.get("class_weights") or {}
    class_weights = {i: float(weights.get(lab, 1.0)) for i, lab in enumerate(prep.labels)}
    refit = [p.name for p in parents if p.fit.refit]
    notes = [f"weight soup: the mean of the weights of {len(parents)} bundles "
             + ", ".join(f"{p.name} (model.keras sha256 {p.start.sha256[:12]}...)" for p in parents)
             + "; training.command and the recipe below are the first one's (the split they share; the others' "
               "commands are in training.soup)",
             "validation metrics and the threshold are the soup's own, through the edge runtime"
             + (f"; {', '.join(refit)} were refit on train+val, so they have seen these photos: optimistic"
                if refit else "")]
    result = FitResult(model, m.weights_source or "unknown", m.preprocessing or "", {}, class_weights, 0.0, notes)
    soup = {"command": command_line(argv),
            "parents": [{"bundle": p.name, "keras_sha256": p.start.sha256, "command": p.command} for p in parents]}
    log.info("soup of %s: exporting and evaluating", ", ".join(p.name for p in parents))
    return export_bundle(Trained(dc, fc, prep, x, y, raw, result, started, soup=soup), ec, argv)
