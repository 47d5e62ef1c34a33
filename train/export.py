"""Keras model -> TFLite files -> a bundle the edge loads, evaluated through the edge itself.

* :func:`convert` makes full-integer int8 (uint8 in, uint8 out; representative data from
  training images), float16 or float32 TFLite;
* :func:`representative_images` draws the calibration set (stratified, seeded) and warns
  below 300 photos;
* :func:`classify_all` scores photos with ``edge.inference.Classifier`` -- the runtime's
  own loading, resizing and dequantisation, so there is no train/serve skew;
* :func:`quant_gate` compares int8 with float on the test split.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edge.core.errors import WeedDetectorError

log = logging.getLogger(__name__)

MIN_REPRESENTATIVE = 300
EXIT_QUANT_GATE = 9


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


def convert(model, quantization: str, representative: np.ndarray | None = None) -> bytes:
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


def classify_all(bundle, images: Sequence[np.ndarray], desc: str = "edge inference", num_threads: int = 2) -> np.ndarray:
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


def latency_ms(bundle, runs: int = 50, warmup: int = 5, num_threads: int = 2) -> dict:
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


@dataclass(frozen=True)
class GateResult:
    passed: bool
    species_drop: float  # percentage points, float - int8
    crop_vs_weed_drop: float
    max_drop: float

    def message(self) -> str:
        return (
            f"accuracy drop from float32 to int8 on the test split: species {self.species_drop:.2f} points, "
            f"crop-vs-weed {self.crop_vs_weed_drop:.2f} points (allowed: {self.max_drop:.1f}; negative = int8 better)"
        )


def quant_gate(float_metrics: dict, int8_metrics: dict, max_drop: float = 1.0) -> GateResult:
    """Fail when int8 falls more than ``max_drop`` points below float in either accuracy."""
    sd = 100.0 * (float_metrics["species_accuracy"] - int8_metrics["species_accuracy"])
    cd = 100.0 * (float_metrics["crop_vs_weed_accuracy"] - int8_metrics["crop_vs_weed_accuracy"])
    return GateResult(passed=sd <= max_drop + 1e-9 and cd <= max_drop + 1e-9, species_drop=sd, crop_vs_weed_drop=cd, max_drop=max_drop)


def write_tflite(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def staging_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="weed-train-"))
