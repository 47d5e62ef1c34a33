"""The `weed-train train` run, stage by stage: data -> fit -> export -> evaluate -> bundle.

Each stage lives in its own module (``data``, ``background``, ``fit``, ``export``,
``evaluate``, ``report``; the records passed between them in ``runs``); this one only
wires them in order and records what was done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from train import background as bgmod
from train import data as datamod
from train import evaluate as ev
from train import finetune
from train import report, robustness
from train.data import BACKGROUND, SPLITS, DataError, Roles, Sample
from train.evaluate import GateResult, classify_all, quant_gate
from train.export import (VALIDATION_ROWS, export_bundle, gate_record, main_model, manifest_rule, rule_limits,
                          threshold_from_sweep, write_robustness_plot)
from train.provenance import utc_now
from train.robustness import test_split_records
from train.rulechoice import choose_rule, read_rows
from train.runs import DataConfig, ExportConfig, Item, Prepared, RunResult, Splits, Trained

if TYPE_CHECKING:
    from edge.inference.bundle import RuleSpec
    from train.backbones import Built
    from train.fit import FitConfig, FitResult

log = logging.getLogger(__name__)


def _limit(samples: list[Sample], per_class: int) -> list[Sample]:
    if per_class <= 0:
        return samples
    out, seen = [], {}
    for s in samples:
        if seen.get(s.label, 0) < per_class:
            out.append(s)
            seen[s.label] = seen.get(s.label, 0) + 1
    return out


class EmptySplit(DataError):
    """A split of the data holds no photo (too few photos for its fraction)."""


def prepare(dc: DataConfig, progress: bool = True) -> Prepared:
    """List, check, split the photos and add the background class."""
    notes: list[str] = []
    if dc.data is None and dc.csv is None:
        raise DataError("no training data given", "pass --data DIR (one folder per class) or --csv FILE (path,label)")
    samples = datamod.scan_folder(dc.data) if dc.data is not None else datamod.scan_csv(dc.csv)
    samples = _limit(samples, dc.max_per_class)
    root = dc.data if dc.data is not None else dc.csv.parent
    groups_file = None
    if dc.use_groups:
        groups_file = dc.groups if dc.groups is not None else (datamod.find_groups_file(dc.data) if dc.data else None)
    groups = datamod.read_groups(groups_file, root) if groups_file else {}
    if groups_file is None:
        notes.append("no groups file: every photo is its own group (near-duplicates could straddle splits)")
    mixed = _mixed_in(dc, notes)

    explicit = dc.val_dir is not None or dc.test_dir is not None
    if explicit:
        if dc.val_dir is None or dc.test_dir is None:
            raise DataError("only one of --val-dir/--test-dir given", "give both, or neither to split automatically")
        if dc.mix_with:
            raise DataError("--mix-with splits the mixed photos with the others: it does not go with --val-dir/--test-dir",
                            "drop --val-dir/--test-dir, or put the photos to mix in into the --data folder")
        val = datamod.scan_folder(dc.val_dir)
        test = datamod.scan_folder(dc.test_dir)
        samples = datamod.explicit_splits(samples, val, test)

    report = datamod.check_images(samples + [s for _, _, more in mixed for s in more], progress=progress)
    good = list(report.good)
    corrupt = [(str(p), why) for p, why in report.corrupt]
    kept = {s.path for s in good}
    good = datamod.attach_groups([s for s in samples if s.path in kept], groups, root)
    for mix_root, mix_groups, more in mixed:
        good += datamod.attach_groups([s for s in more if s.path in kept], mix_groups, mix_root)
    if not explicit:
        good = datamod.split_samples(good, dc.val_fraction, dc.test_fraction, dc.seed)
    leaks = datamod.check_group_leaks(good)
    if leaks and not explicit:
        raise DataError(f"similarity groups straddle splits: {leaks[:5]}", "this is a bug in the split; report it")

    labels = sorted({s.label for s in good})
    roles = datamod.read_roles(labels, dc.roles_file, dc.weeds, dc.crops, dc.background_classes, dc.role_defaults)
    items = {sp: [Item(s.label, sp, sample=s) for s in good if s.split == sp] for sp in SPLITS}

    if dc.background != "none" and BACKGROUND not in labels:
        if dc.background == "auto":
            want = bgmod.patch_counts(good, dc.background_fraction)
            plan = bgmod.plan_patches(good, want, seed=dc.seed, progress=progress)
            notes.append(
                "background class cut from plant-free regions of each split's own photos "
                f"(excess-green mask; {', '.join(f'{sp} {sum(p.split == sp for p in plan)}' for sp in SPLITS)})"
            )
        else:
            plan = bgmod.read_patches(Path(dc.background) / "patches.csv")
            bgmod.check_patch_splits(plan, good)
            notes.append(f"background patches from {dc.background}")
        for p in plan:
            items[p.split].append(Item(BACKGROUND, p.split, patch=p))
        if plan:
            labels = sorted(labels + [BACKGROUND])
            roles = roles.with_background(BACKGROUND)
    for sp in SPLITS:
        if not items[sp]:
            raise EmptySplit(f"the {sp} split is empty", "add photos, or lower --val/--test only if the set is large")
    return Prepared(labels, roles, good, items, corrupt, str(groups_file) if groups_file else None, leaks, notes)


def _mixed_in(dc: DataConfig, notes: list[str]) -> list[tuple[Path, dict[str, str], list[Sample]]]:
    """The ``--mix-with`` folders: (root, its groups from its own groups.csv, its photos) each."""
    out = []
    for folder in dc.mix_with:
        more = _limit(datamod.scan_folder(folder), dc.max_per_class)
        found = datamod.find_groups_file(folder) if dc.use_groups else None
        if found is None:
            notes.append(f"no groups file for --mix-with {folder}: each of its photos is its own group")
        out.append((Path(folder), datamod.read_groups(found, folder) if found else {}, more))
        notes.append(f"mixed in {len(more)} photos from {folder}")
    return out


def load_splits(prep: Prepared, size: int, resize: str, tag: str = "") -> Splits:
    """Every split's arrays (see :func:`arrays`)."""
    x, y, raw = {}, {}, {}
    for sp in SPLITS:
        x[sp], y[sp], raw[sp] = arrays(prep.items[sp], prep.labels, size, resize, desc=f"loading {sp}{tag}")
    return x, y, raw


def arrays(items: Sequence[Item], labels: Sequence[str], size: int, mode: str, desc: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(x uint8 N×S×S×3 resized exactly as the edge does, y ids, raw RGB images for edge eval)."""
    from tqdm.auto import tqdm

    index = {lab: i for i, lab in enumerate(labels)}
    x = np.zeros((len(items), size, size, 3), np.uint8)
    y = np.zeros((len(items),), np.int64)
    raw = []
    for i, it in enumerate(tqdm(items, desc=desc, unit="img", leave=False)):
        rgb = it.raw_rgb()
        raw.append(rgb)
        x[i] = datamod.resize_rgb(rgb, size, mode)
        y[i] = index[it.label]
    return x, y, raw


def check_backbone(fc: FitConfig) -> None:
    """Before the (long) photo scan: the backbone exists, takes this input size and its weights are installed."""
    from train import weights as wsrc
    from train.backbones import BACKBONES

    spec = BACKBONES.get(fc.backbone)
    if spec is None:
        raise DataError(f"unknown backbone {fc.backbone!r}", f"choose one of {', '.join(BACKBONES)}")
    if fc.input_size < spec.min_input_size:
        raise DataError(f"--input-size {fc.input_size} is too small for {fc.backbone}",
                        f"use at least {spec.min_input_size} pixels")
    source = spec.weight_sources[0] if fc.weights == "default" else fc.weights
    if fc.mode != "scratch" and source in wsrc.SOURCES and source != wsrc.KERAS_IMAGENET:
        wsrc.require_installed(source)
    elif fc.mode != "scratch" and source.endswith((".npz", ".weights.h5")):
        wsrc.check_weights_file(Path(source))


def train_model(dc: DataConfig, fc: FitConfig, progress: bool = True) -> Trained:
    """Prepare the data (split, background, arrays) and fit one model."""
    from train.backbones import weights_shippable
    from train.fit import build_backbone, fit

    started = utc_now()
    start = finetune.open_start(fc.from_bundle) if fc.from_bundle else None
    if start is None:
        check_backbone(fc)
    size = fc.input_size
    prep = prepare(dc, progress=progress)
    datamod.check_train_classes((it.label for it in prep.items["train"]), prep.roles)
    labels = prep.labels
    if start is not None:
        finetune.check_classes(start, labels)
        new = [lab for lab in labels if lab not in start.manifest.labels]
        prep.notes.append(f"fine-tuned from bundle {start.name} (model.keras sha256 {start.sha256[:12]}...); "
                          + (f"new classes: {', '.join(new)}" if new else "no new classes"))
    log.info("classes: %s", ", ".join(labels))
    x, y, raw = load_splits(prep, size, dc.resize)
    print(datamod.split_table([_as_sample(it) for sp in SPLITS for it in prep.items[sp]], labels))

    def backbone() -> tuple[Built, tuple[np.ndarray, np.ndarray] | None]:
        """The backbone to train (and the head to start from): the bundle's model, or fresh pretrained weights."""
        if start is None:
            return build_backbone(fc, "none" if fc.mode == "scratch" else None), None
        built, old_labels, kernel, bias = finetune.built_from_bundle(start)
        return built, finetune.initial_head(old_labels, kernel, bias, labels)

    built, head = backbone()
    if not weights_shippable(fc.backbone, built.weights_source):
        prep.notes.append(f"WARNING: {fc.backbone} / {built.weights_source} may not be redistributed: do not ship this bundle")
    result = fit(fc, x["train"], y["train"], x["val"], y["val"], len(labels), built=built,
                 roles=ev.role_vector(labels, prep.roles), head=head)
    if not fc.refit:
        return Trained(dc, fc, prep, x, y, raw, result, started, start=start)
    return _refit(dc, fc, prep, x, y, raw, result, started, backbone, start)


def _refit(dc: DataConfig, fc: FitConfig, prep: Prepared, x: dict[str, np.ndarray], y: dict[str, np.ndarray],
           raw: dict[str, list[np.ndarray]], split: FitResult, started: str,
           backbone: Callable[[], tuple[Built, tuple[np.ndarray, np.ndarray] | None]],
           start: finetune.Start | None = None) -> Trained:
    """Train again from the pretrained weights on train+val, for the epochs validation chose.

    The split model (trained on train, early-stopped on val) has chosen the epochs; its
    validation probabilities choose the threshold. The test photos stay unseen.
    """
    from train.fit import FitResult, chosen_epochs, fit, predict, refit_config

    rc = refit_config(fc, split.history)
    val_probs = predict(split.model, x["val"])
    val_rows = robustness.suite_probs(lambda batch: predict(split.model, batch),
                                      robustness.input_views(raw["val"], fc.input_size, fc.input_size, dc.resize), fc.seed)
    epochs = ", ".join(f"{phase} {n}" for phase, n in chosen_epochs(split.history).items())
    x_all = np.concatenate([x["train"], x["val"]])
    y_all = np.concatenate([y["train"], y["val"]])
    log.info("refit on train+val (%d images) for the epochs validation chose: %s", len(x_all), epochs)
    built, head = backbone()  # from the pretrained weights (or the bundle) again
    again = fit(rc, x_all, y_all, None, None, len(prep.labels), built=built, roles=ev.role_vector(prep.labels, prep.roles),
                head=head)
    notes = split.notes + [
        f"refit: trained again on train+val ({len(x_all)} images) for the epochs validation chose ({epochs}); "
        "validation metrics and the threshold are the split model's (float, before the refit), "
        "test metrics the refit model's"
    ] + [f"refit {n}" for n in again.notes]
    result = FitResult(again.model, again.weights_source, again.preprocessing, split.history, again.class_weights,
                       split.seconds + again.seconds, notes)
    return Trained(dc, fc, prep, x, y, raw, result, started, val_probs=val_probs, val_rows=val_rows, start=start)


def run_train(dc: DataConfig, fc: FitConfig, ec: ExportConfig, argv: Sequence[str] | None = None, progress: bool = True) -> RunResult:
    """Prepare data, fit, export int8 + float32 (+float16), evaluate through the edge, gate, write the bundle."""
    return export_bundle(train_model(dc, fc, progress), ec, argv)


def _as_sample(it: Item) -> Sample:
    if it.sample is not None:
        return it.sample
    return Sample(path=it.patch.source, label=it.label, group="", split=it.split)


def _val_at(val: dict, threshold: float) -> dict:
    """Validation metrics at another threshold of their own sweep (the sweep keeps every rate).

    Needed after a refit, whose validation photos were scored by the split model, gone now.
    """
    row = next((r for r in val["sweep"] if abs(r["threshold"] - threshold) < 1e-9), None)
    if row is None:
        raise DataError(f"threshold {threshold} is not in the validation sweep", "choose one of the sweep's thresholds")

    def rate(old: dict, value: float | None) -> dict:
        n = old["n"]
        return ev.wilson(int(round((value or 0.0) * n)), n).as_dict() if n else old

    out = dict(val, threshold=threshold, crop_vs_weed_accuracy=row["crop_vs_weed_accuracy"],
               weed_miss=rate(val["weed_miss"], row["weed_miss"]),
               crop_sprayed=rate(val["crop_sprayed"], row["crop_sprayed"]))
    out["background"] = dict(val["background"], fired=rate(val["background"]["fired"], row["background_fired"]))
    return out


REBUILT_FIX = "point --data at the photos the bundle was trained on, or score this folder's photos with --split all"


def test_split(dc: DataConfig, labels: Sequence[str], progress: bool = True, split: str = "test",
               empty_fix: str = REBUILT_FIX) -> tuple[Prepared, np.ndarray, list[np.ndarray]]:
    """The test split ``dc`` makes (or its ``split``: "val", "train"), its class ids and RGB images
    (photos and background patches); ``empty_fix`` is the caller's fix for a split left empty.

    The split is seeded: for the data config a bundle's training command records, it is the
    split that bundle was tested on. Refused when the data's classes are not ``labels``.
    """
    try:
        prep = prepare(dc, progress=progress)
    except EmptySplit as e:  # the fix above names weed-train train's flags; here the split is a bundle's
        raise DataError(f"{e.what} when the bundle's split is rebuilt from {dc.data} (its fractions and seed)",
                        empty_fix) from None
    if list(prep.labels) != list(labels):
        raise DataError(f"the data gives classes {prep.labels}, the bundle has {list(labels)}",
                        "run it where the data the bundle was trained on is, unchanged")
    items = prep.items[split]
    y = np.array([prep.labels.index(it.label) for it in items], dtype=np.int64)
    return prep, y, [it.raw_rgb() for it in items]


def rethreshold(bundle_dir: Path, dc: DataConfig, fc: FitConfig, ec: ExportConfig, command: str,
                progress: bool = True) -> RunResult:
    """Choose a bundle's threshold again from its stored validation sweep; re-score the test split.

    The data config is the one the bundle's training command recorded, so ``prepare`` rebuilds
    the same split (seeded); only the test photos are classified again, through the edge runtime.
    The main model stays the same: the quantisation gate is checked again and must agree.
    """
    from edge.inference.bundle import load_bundle

    doc = ev.read_metrics(bundle_dir)
    prep, y_test, raw_test = test_split(dc, doc["labels"], progress=progress,
                                        empty_fix="run weed-train threshold where the data the bundle's training "
                                                  "command names is, unchanged")
    main = doc["main_model"]
    previous = doc["models"][main]["threshold"]
    _rescore_at_new_thresholds(bundle_dir, doc, y_test, raw_test, prep.roles, ec)
    gate = _gate_keeping_the_main_model(doc, ec)
    doc.update(test_split_records(load_bundle(bundle_dir), raw_test, y_test, prep.labels, prep.roles,
                                  doc["models"][main]["threshold"], fc.seed, doc["models"][main].get("crop_veto")))
    write_robustness_plot(bundle_dir, doc)
    doc["training"]["rethreshold"] = {"command": command, "previous": previous, "at": utc_now()}
    e = doc["models"][main]
    # a soup (train.soup) records its first parent's command, --refit included, but scores validation itself
    split_model_probs = fc.refit and "soup" not in doc["training"]
    _rewrite_manifest(bundle_dir, manifest_rule(e, split_model_probs),
                      report.summary_metrics(doc["models"], main, gate), doc["training"])
    ev.write_metrics(bundle_dir / ev.METRICS, doc)
    (bundle_dir / "report.md").write_text(report.render(doc, ec, fc, dc))
    load_bundle(bundle_dir)  # hashes and manifest still check out
    return RunResult(bundle_dir, doc, gate.passed, gate.message())


def _rescore_at_new_thresholds(bundle_dir: Path, doc: dict, y_test: np.ndarray, raw_test: list[np.ndarray],
                               roles: Roles, ec: ExportConfig) -> None:
    """Each model's threshold chosen again on its validation sweep; its test split scored at it (in ``doc``)."""
    from edge.inference.bundle import load_bundle

    labels, main = doc["labels"], doc["main_model"]
    chosen = None
    if ec.rule_on == "validation+perturbed":
        y_val, rows, source = _stored_validation_rows(bundle_dir)
        chosen = choose_rule(rows, y_val, labels, roles, rule_limits(ec))
    for q, e in doc["models"].items():
        b = load_bundle(bundle_dir, variant=None if q == main else q)
        probs = classify_all(b, raw_test, desc=f"{q} test (edge)")
        e.pop("rule_choice", None)
        if chosen is None:
            thr, rule = threshold_from_sweep(e["val"]["sweep"], ec)
            e.update(threshold=thr, crop_veto=None, val=_val_at(e["val"], thr), threshold_rule=rule)
        else:  # one rule for every model: chosen on the stored rows (the main or the split model's)
            e.update(threshold=chosen.threshold, crop_veto=chosen.crop_veto, threshold_rule=chosen.words(),
                     rule_choice=dict(chosen.as_dict(), source=source),
                     val=ev.evaluate(rows["clean"], y_val, labels, roles, chosen.threshold, chosen.crop_veto))
        e["test"] = ev.evaluate(probs, y_test, labels, roles, e["threshold"], e["crop_veto"])


def _stored_validation_rows(bundle_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """The bundle's ``validation_rows.npz``; refused (with what to do) when it has none."""
    path = bundle_dir / VALIDATION_ROWS
    if not path.is_file():
        raise DataError(f"{bundle_dir} carries no {VALIDATION_ROWS} (it was made before rules were chosen on "
                        "perturbed validation copies)",
                        "retrain the bundle with this weed-train, or choose on the clean sweep: --rule-on validation")
    return read_rows(path)


def _gate_keeping_the_main_model(doc: dict, ec: ExportConfig) -> GateResult:
    """The quantisation gate at the new thresholds (recorded in ``doc``); refused if it changes the main model."""
    gate = quant_gate(doc["models"]["float32"]["test"], doc["models"]["int8"]["test"], ec.max_quant_drop)
    if main_model(gate, doc["gate"]["allowed"]) != doc["main_model"]:
        raise DataError(f"at the new threshold the quantisation gate says: {gate.message()}",
                        "the main model would change: retrain with the threshold options instead")
    doc["gate"].update(gate_record(gate, doc["gate"]["allowed"]))
    return gate


def _rewrite_manifest(bundle_dir: Path, rule: RuleSpec, metrics: dict, training: dict) -> None:
    """The bundle's manifest with a new rule, metrics summary and training record (model files untouched)."""
    from edge.inference.bundle import MANIFEST, Manifest, read_manifest

    manifest = read_manifest(bundle_dir)
    manifest = Manifest.model_validate(manifest.model_copy(update={
        "rule": rule, "threshold": rule.threshold, "metrics": metrics, "training": training,
    }).model_dump())
    (bundle_dir / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
