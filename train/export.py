"""Keras model -> TFLite files -> a bundle the edge loads, evaluated through the edge itself.

:func:`export_bundle` runs the steps in order: :func:`convert_variants`,
:func:`write_models` (a provisional bundle), :func:`evaluate_variants` through the edge,
:func:`quant_gate` and :func:`main_model`, :func:`main_robustness` (the main model under
``train.perturb.SUITE`` and ``train.perturb.OTHER``), :func:`metrics_document`, :func:`write_models` again (the final
manifest) and :func:`write_reports`. The pieces:

* :func:`convert` makes full-integer int8 (uint8 in, uint8 out; representative data from
  training images), float16 or float32 TFLite;
* :func:`representative_images` draws the calibration set (stratified, seeded) and warns
  below 300 photos.

Each model is scored with ``evaluate.classify_all`` (through the edge runtime) and gated
with ``evaluate.quant_gate``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence, get_args

import numpy as np

from edge.core.errors import WeedDetectorError
from edge.inference.bundle import Quantization
from train import evaluate as ev
from train import report, robustness
from train.evaluate import GateResult, classify_all, quant_gate
from train.provenance import command_line, portable_path
from train.robustness import test_split_records
from train.rulechoice import RuleLimits, choose_rule
from train.runs import ExportConfig, RunResult

if TYPE_CHECKING:
    import keras

    from edge.inference.bundle import Bundle, Manifest, RuleSpec
    from train.data import Roles
    from train.runs import Trained

log = logging.getLogger(__name__)

MIN_REPRESENTATIVE = 300
EXIT_QUANT_GATE = 9
MAIN_FILE = "model.tflite"  # the int8 model's file name in a bundle; other models are model_<quantization>.tflite


class QuantizationGateError(WeedDetectorError):
    """int8 lost too much accuracy compared with float."""

    exit_code = EXIT_QUANT_GATE


def representative_images(x_train: np.ndarray, y_train: np.ndarray, n: int = 400, seed: int = 42) -> np.ndarray:
    """Up to ``n`` training images, spread over the classes, in a seeded order."""
    rng = np.random.default_rng(seed)
    if len(x_train) < MIN_REPRESENTATIVE:
        log.warning(
            "only %d training images for int8 calibration (fewer than %d): the quantisation ranges may be poor; "
            "add photos or check the int8 metrics against float32 in the report",
            len(x_train), MIN_REPRESENTATIVE,
        )
    if len(x_train) <= n:
        return x_train
    classes = np.unique(y_train)
    per = int(np.ceil(n / len(classes)))
    idx = []
    for c in classes:
        members = np.flatnonzero(y_train == c)
        idx.extend(rng.permutation(members)[:per].tolist())
    idx = rng.permutation(np.array(idx))[:n]
    return x_train[np.sort(idx)]


QUANTIZATIONS = get_args(Quantization)  # the manifest's names, what convert() writes


def convert(model: keras.Model, quantization: str, representative: np.ndarray | None = None) -> bytes:
    """TFLite flatbuffer bytes of a Keras model taking float 0..255 RGB."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 export needs representative images")

        def gen() -> Iterable[list[np.ndarray]]:
            for img in representative:
                yield [img[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization != "float32":
        raise ValueError(f"unknown quantization {quantization!r}")
    # The converter prints the traced signature to stdout; keep the user's terminal readable.
    with contextlib.redirect_stdout(io.StringIO()) as noise:
        data = converter.convert()
    log.debug("converter output: %s", noise.getvalue()[:2000])
    return data


def tflite_io(path: Path) -> dict:
    """Input/output dtype, scale and zero point of a TFLite file (read with the edge's runtime)."""
    from edge.inference.runtime import make_interpreter

    interp, _ = make_interpreter(str(path), 1)
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    qi, qo = i.get("quantization", (0.0, 0)), o.get("quantization", (0.0, 0))
    return {
        "input_dtype": np.dtype(i["dtype"]).name,
        "input_shape": [int(v) for v in i["shape"]],
        "input_scale": float(qi[0]),
        "input_zero_point": int(qi[1]),
        "output_dtype": np.dtype(o["dtype"]).name,
        "output_scale": float(qo[0]) if qo[0] else None,
        "output_zero_point": int(qo[1]) if qo[0] else None,
    }


def latency_ms(bundle: Bundle, runs: int = 50, warmup: int = 5, num_threads: int = 2) -> dict:
    """Invoke-only latency of a bundle's model through the edge runtime (p50/p90, ms)."""
    from edge.inference import Classifier

    clf = Classifier(bundle, num_threads=num_threads)
    try:
        m = bundle.manifest.input
        clf.classify_rgb(np.zeros((m.height, m.width, 3), np.uint8))
        for _ in range(warmup):
            clf.invoke_only()
        t = np.array([clf.invoke_only() for _ in range(runs)], dtype=np.float64) / 1e6
        return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
                "runs": runs, "threads": num_threads, "runtime": str(clf.runtime)}
    finally:
        clf.close()


def write_tflite(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def staging_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="weed-train-"))


def main_model(gate: GateResult, allow_quant_drop: bool) -> str:
    """int8 is the bundle's model unless it failed the gate unallowed (then float32 is)."""
    return "int8" if (gate.passed or allow_quant_drop) else "float32"


def gate_record(gate: GateResult, allowed: bool) -> dict:
    """The gate as metrics.json records it."""
    return {"passed": gate.passed, "allowed": allowed, "message": gate.message(),
            "species_drop_points": gate.species_drop, "crop_vs_weed_drop_points": gate.crop_vs_weed_drop,
            "test": gate.test, "test_plant_photos": gate.n_photos, "discordant": gate.discordant, "p_values": gate.p_values}


def threshold_from_sweep(val_sweep: Sequence[dict], ec: ExportConfig) -> tuple[float, str]:
    """The operating threshold the export settings choose from a validation sweep, and the rule in words."""
    thr = ev.choose_threshold(val_sweep, ec.miss_weight, ec.max_weed_miss, ec.max_crop_sprayed)
    return thr, ev.threshold_rule(ec.miss_weight, ec.max_weed_miss, ec.max_crop_sprayed, val_sweep, thr)


def manifest_rule(e: dict, refit: bool) -> RuleSpec:
    """The manifest's decision rule (``edge.decide.rule``) of a model's evaluation ``e``: chosen on validation and its
    perturbed copies (``train.rulechoice``), or on the clean validation sweep (``threshold_rule``: how, in words)."""
    from edge.inference.bundle import RuleSpec

    split = "; the validation probabilities are the split model's (before the refit on train+val)" if refit else ""
    chosen_on = "validation+perturbed" if "rule_choice" in e else "validation"
    return RuleSpec(threshold=e["threshold"], crop_veto=e.get("crop_veto"), chosen_on=chosen_on,
                    notes=e["threshold_rule"] + split)


def rule_limits(ec: ExportConfig) -> RuleLimits:
    """The crop sprayed limits of ``ec`` for ``train.rulechoice`` (clean: ``max_crop_sprayed``, 2 % unless given)."""
    return RuleLimits(clean=0.02 if ec.max_crop_sprayed is None else ec.max_crop_sprayed,
                      perturbed=ec.max_crop_sprayed_perturbed, max_weed_miss=ec.max_weed_miss, miss_weight=ec.miss_weight)


def validation_rows(b: Bundle, t: Trained) -> dict[str, np.ndarray]:
    """The validation rows the rule is chosen on: after a refit the split model's, else ``b``'s through the edge."""
    if t.val_rows is not None:
        return t.val_rows
    q = b.quantization
    if q not in t.edge_val_rows:
        views = robustness.model_views(b, t.raw["val"])
        t.edge_val_rows[q] = robustness.suite_probs(
            lambda batch: classify_all(b, list(batch), desc=f"{q} validation row (edge)"), views, t.fc.seed)
    return t.edge_val_rows[q]


# --------------------------------------------------------------------------- the bundle, step by step


def export_bundle(t: Trained, ec: ExportConfig, argv: Sequence[str] | None = None) -> RunResult:
    """Export int8 + float32 (+ extra variants), evaluate each through the edge, gate, write the bundle."""
    from edge.inference.bundle import RuleSpec

    stage = staging_dir()
    rep = representative_images(t.x["train"], t.y["train"], ec.representative, t.fc.seed)
    files = convert_variants(t, rep, ("int8", "float32", *ec.extra_variants), stage)
    bundle_dir = Path(ec.out) / ec.name
    fields = manifest_fields(t, ec, training_record(t, len(rep), argv))

    _remove_stale_models(bundle_dir)
    provisional = RuleSpec(threshold=0.5, crop_veto=None, chosen_on="unknown", notes="provisional: to evaluate")
    write_models(bundle_dir, files, "int8", t, fields, rule=provisional, metrics={})
    evals = evaluate_variants(bundle_dir, files, t, ec)
    gate = quant_gate(evals["float32"]["test"], evals["int8"]["test"], ec.max_quant_drop)
    for q in evals:
        evals[q]["latency"] = variant_latency(bundle_dir, q, ec.latency_runs)

    main = main_model(gate, ec.allow_quant_drop)
    records = main_robustness(bundle_dir, main, t, evals[main]["threshold"], evals[main].get("crop_veto"))
    doc = metrics_document(t, ec, fields, evals, main, gate, records)
    rule = manifest_rule(evals[main], t.val_probs is not None)
    fields = dict(fields, trained_weights=write_trained_weights(bundle_dir, t))
    if write_validation_rows(bundle_dir, t, evals[main]):
        fields["training"]["validation_rows"] = VALIDATION_ROWS
    write_models(bundle_dir, files, main, t, fields, rule=rule, metrics=report.summary_metrics(evals, main, gate))
    write_reports(bundle_dir, doc, t, ec)
    for p in files.values():
        p.unlink(missing_ok=True)
    stage.rmdir()
    return RunResult(bundle_dir, doc, gate.passed, gate.message())


KERAS_FILE = "model.keras"  # the trained Keras model in a bundle (optional; the edge never reads it)
VALIDATION_ROWS = "validation_rows.npz"  # the validation split's probabilities, clean and under each SUITE row


def save_without_optimizer(model, path: Path) -> None:
    """``model`` saved as a .keras file without its optimizer's state: the weights and the graph only (a third of
    the size for Adam; fine-tuning from a bundle compiles a new optimizer anyway)."""
    optimizer = model.optimizer if model.compiled else None
    if optimizer is not None:
        model.optimizer = None
    try:
        model.save(path)
    finally:
        if optimizer is not None:
            model.optimizer = optimizer


def write_trained_weights(bundle_dir: Path, t: Trained):
    """The trained Keras model saved into the bundle (``model.keras``), as the manifest records it."""
    from edge.inference.bundle import TrainedWeights, sha256_file

    path = bundle_dir / KERAS_FILE
    bundle_dir.mkdir(parents=True, exist_ok=True)
    save_without_optimizer(t.result.model, path)
    return TrainedWeights(file=KERAS_FILE, sha256=sha256_file(path), size_bytes=path.stat().st_size)


def write_validation_rows(bundle_dir: Path, t: Trained, main_eval: dict) -> bool:
    """``validation_rows.npz``: the validation labels and, per row of ``train.perturb.SUITE`` (clean first), the
    probabilities the spray rule is chosen on (``weed-train rule``). After a refit they are the split model's (float,
    before the refit: the refit model has seen these photos); without one, the bundle's main model's through the edge
    runtime. False (nothing written) when there is no validation split."""
    if len(t.y["val"]) == 0:
        return False
    from edge.inference.bundle import load_bundle

    b = load_bundle(bundle_dir, variant=None if main_eval["quantization"] == "int8" else main_eval["quantization"])
    rows = validation_rows(b, t)
    source = ("split model (float, before the refit on train+val)" if t.val_rows is not None
              else f"{b.model_path.name} through the edge runtime")
    np.savez_compressed(bundle_dir / VALIDATION_ROWS, y=t.y["val"].astype(np.int16), source=np.array(source),
                        seed=np.array(t.fc.seed), **{f"row_{k}": v.astype(np.float32) for k, v in rows.items()})
    return True


def convert_variants(t: Trained, representative: np.ndarray, quantizations: Sequence[str], stage: Path) -> dict[str, Path]:
    """A TFLite file per quantization in ``stage``; a re-export of the same model reuses its conversions."""
    files = {}
    for q in quantizations:
        key = (q, len(representative) if q == "int8" else 0)
        if key not in t.converted:  # a re-export (other gate/threshold settings) converts nothing again
            t.converted[key] = convert(t.result.model, q, representative if q == "int8" else None)
        files[q] = write_tflite(t.converted[key], stage / f"model_{q}.tflite")
    return files


def training_record(t: Trained, representative_images: int, argv: Sequence[str] | None) -> dict:
    """How the model was made (the manifest's and metrics.json's ``training``)."""
    dc, fc, prep, result = t.dc, t.fc, t.prep, t.result
    soup = {} if t.soup is None else {"soup": t.soup}
    return {
        "command": command_line(argv) if t.soup is None else t.soup["parents"][0]["command"],
        **soup,
        "seed": fc.seed,
        "mode": fc.mode,
        "started": t.started,
        "data": portable_path(dc.data or dc.csv),
        "mix_with": [portable_path(m) for m in dc.mix_with],
        "from_bundle": None if t.start is None else t.start.record(),
        "groups": portable_path(prep.groups_file) if prep.groups_file else None,
        "split": {"val": dc.val_fraction, "test": dc.test_fraction, "explicit": dc.val_dir is not None},
        "counts": prep.counts(),
        "corrupt_skipped": len(prep.corrupt),
        "class_weights": {prep.labels[i]: round(w, 4) for i, w in result.class_weights.items()},
        "fit": fc.as_dict(),
        "seconds": round(result.seconds, 1),
        "representative_images": int(representative_images),
        "notes": prep.notes + result.notes,
    }


def role_fields(labels: Sequence[str], roles: Roles) -> dict:
    """The manifest's labels and which of them are weeds, crops and background."""
    return dict(labels=list(labels), weed_labels=list(roles.weed), crop_labels=list(roles.crop),
                background_labels=list(roles.background))


def manifest_fields(t: Trained, ec: ExportConfig, training: dict) -> dict:
    """The manifest fields every model of the bundle shares; unshippable weights mark it so."""
    from train.backbones import weights_shippable

    fc, result = t.fc, t.result
    size = fc.input_size
    description = ec.description or f"{fc.backbone} ({fc.mode}) weed/crop/background classifier, {size}x{size} uint8 RGB"
    licence = ec.licence
    if not weights_shippable(fc.backbone, result.weights_source):
        description = "NOT FOR DISTRIBUTION (pretrained weights without a licence). " + description
        licence = f"do not redistribute: derived from {result.weights_source} weights, whose source states no licence; data: {licence}"
    return dict(
        name=ec.name,
        description=description,
        **role_fields(t.prep.labels, t.prep.roles),
        backbone=fc.backbone, weights_source=result.weights_source, preprocessing=result.preprocessing,
        licence=licence, attribution=ec.attribution, training=training,
    )


def model_file(quantization: str) -> str:
    return MAIN_FILE if quantization == "int8" else f"model_{quantization}.tflite"


def bundle_manifest(tflite: Path, quantization: str, size: int, resize: str, **fields) -> Manifest:
    """The manifest of a bundle whose model is ``tflite``: its input and output read from the file."""
    from edge.inference.bundle import InputSpec, Manifest, OutputSpec

    io = tflite_io(tflite)
    return Manifest(
        **fields,
        model_file=model_file(quantization),
        quantization=quantization,
        input=InputSpec(height=size, width=size, dtype=io["input_dtype"], colour_order="RGB", resize=resize),
        output=OutputSpec(kind="probabilities", dtype=io["output_dtype"], scale=io["output_scale"],
                          zero_point=io["output_zero_point"]),
    )


def write_models(bundle_dir: Path, files: dict[str, Path], main: str, t: Trained, fields: dict,
                 rule: RuleSpec, metrics: dict) -> None:
    """The bundle's model files and manifest: ``main`` is its model, the other files its variants."""
    from edge.inference.bundle import write_bundle

    if main != "int8":  # the int8 file is a variant then, under its own name
        (bundle_dir / MAIN_FILE).unlink(missing_ok=True)
    manifest = bundle_manifest(files[main], main, t.fc.input_size, t.dc.resize, **fields,
                               rule=rule, metrics=metrics)
    write_bundle(bundle_dir, manifest, files[main], {q: p for q, p in files.items() if q != main})


def evaluate_variants(bundle_dir: Path, files: dict[str, Path], t: Trained, ec: ExportConfig) -> dict[str, dict]:
    """Each model of the (provisional, int8-main) bundle scored through the edge runtime."""
    return {q: evaluate_variant(bundle_dir, None if q == "int8" else q, t, ec) for q in files}


def evaluate_variant(bundle_dir: Path, variant: str | None, t: Trained, ec: ExportConfig) -> dict:
    """Probabilities through the edge runtime, threshold chosen on val, metrics on test.

    After a refit (which trained on the validation photos) ``t.val_probs`` are the split
    model's validation probabilities: the threshold and the validation metrics come from them.
    """
    from edge.inference.bundle import load_bundle

    labels, roles, y = t.prep.labels, t.prep.roles, t.y
    b = load_bundle(bundle_dir, variant=variant)
    tag = variant or b.manifest.quantization
    scored = ("test",) + (("val",) if t.val_probs is None else ())
    probs = {sp: classify_all(b, t.raw[sp], desc=f"{tag} {sp} (edge)") for sp in scored}
    if t.val_probs is not None:
        probs["val"] = t.val_probs
    extra: dict = {}
    veto = None
    if ec.rule_on == "validation+perturbed" and len(y["val"]):
        choice = choose_rule(validation_rows(b, t), y["val"], labels, roles, rule_limits(ec))
        thr, veto, rule = choice.threshold, choice.crop_veto, choice.words()
        extra["rule_choice"] = choice.as_dict()
    else:
        thr, rule = threshold_from_sweep(ev.threshold_sweep(probs["val"], y["val"], labels, roles), ec)
    m_val = ev.evaluate(probs["val"], y["val"], labels, roles, thr, veto)
    m_test = ev.evaluate(probs["test"], y["test"], labels, roles, thr, veto)
    return {"threshold": thr, "crop_veto": veto, "threshold_rule": rule, "val": m_val, "test": m_test,
            "file": b.model_path.name, "size_bytes": b.model_path.stat().st_size, "quantization": b.quantization,
            **extra}


def variant_latency(bundle_dir: Path, q: str, runs: int) -> dict:
    """Invoke latency of one of the provisional bundle's models, on 1 and 2 threads."""
    from edge.inference.bundle import load_bundle

    b = load_bundle(bundle_dir, variant=None if q == "int8" else q)
    return {"1_thread": latency_ms(b, runs, num_threads=1), "2_threads": latency_ms(b, runs, num_threads=2)}


def main_robustness(bundle_dir: Path, main: str, t: Trained, threshold: float,
                    crop_veto: float | None = None) -> dict[str, dict]:
    """The robustness records (``train.robustness.CONDITIONS``: the suite and the other conditions) of the
    provisional bundle's ``main`` model on the test split, by metrics.json key."""
    from edge.inference.bundle import load_bundle

    b = load_bundle(bundle_dir, variant=None if main == "int8" else main)
    return test_split_records(b, t.raw["test"], t.y["test"], t.prep.labels, t.prep.roles, threshold, t.fc.seed,
                              crop_veto)


def metrics_document(t: Trained, ec: ExportConfig, fields: dict, evals: dict, main: str, gate: GateResult,
                     records: dict[str, dict]) -> dict:
    """metrics.json: every number of the run (the manifest keeps a summary)."""
    roles = t.prep.roles
    return {
        "bundle": ec.name, "main_model": main, "labels": t.prep.labels, "description": fields["description"],
        "backbone": t.fc.backbone, "weights_source": t.result.weights_source, "input_size": t.fc.input_size,
        "roles": {"weed": list(roles.weed), "crop": list(roles.crop), "background": list(roles.background)},
        "gate": gate_record(gate, ec.allow_quant_drop),
        "models": evals, **records,  # robustness, robustness_other: train.robustness.CONDITIONS
        "training": fields["training"], "history": t.result.history,
        "corrupt_files": t.prep.corrupt,
    }


def write_reports(bundle_dir: Path, doc: dict, t: Trained, ec: ExportConfig) -> None:
    """metrics.json, the test confusion matrix (png and text), the robustness plot and report.md."""
    labels, main = doc["labels"], doc["main_model"]
    ev.write_metrics(bundle_dir / "metrics.json", doc)
    cm = doc["models"][main]["test"]["confusion_matrix"]
    ev.confusion_png(cm, labels, bundle_dir / "confusion_matrix.png", f"{ec.name} ({main}) — test split")
    (bundle_dir / "confusion_matrix.txt").write_text(ev.confusion_text(cm, labels) + "\n")
    write_robustness_plot(bundle_dir, doc)
    (bundle_dir / "report.md").write_text(report.render(doc, ec, t.fc, t.dc))


def write_robustness_plot(bundle_dir: Path, doc: dict) -> list[Path]:
    """``robustness.png`` of the bundle (its main model on the test split; report.md links it), and
    ``robustness_other.png`` of the other camera conditions when the document has them."""
    return [robustness.plot(doc[c.key], bundle_dir / f"{c.key}.png",
                            f"{doc['bundle']} ({doc['main_model']}), test split: {c.title} at threshold "
                            f"{doc[c.key]['threshold']:.2f} (red: worst perturbed row)")
            for c in robustness.CONDITIONS.values() if doc.get(c.key)]


def _remove_stale_models(bundle_dir: Path) -> None:
    """A re-export replaces the bundle's model files: drop old ones so no stale variant lingers."""
    if bundle_dir.is_dir():
        for old in list(bundle_dir.glob("model*.tflite")) + [bundle_dir / n for n in ("manifest.json", KERAS_FILE,
                                                                                      VALIDATION_ROWS)]:
            old.unlink(missing_ok=True)
