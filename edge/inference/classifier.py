"""The classifier: one interpreter per process, created once, checked against the bundle."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge.bundle import Bundle, load_bundle
from edge.errors import BundleError
from edge.inference.preprocess import Preprocessor
from edge.inference.runtime import RuntimeInfo, make_interpreter

log = logging.getLogger(__name__)

_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class Scores:
    """Class probabilities for one frame, with how long each stage took."""

    probs: np.ndarray  # float32, one per label, sums to ~1
    labels: tuple[str, ...]
    preprocess_ns: int
    inference_ns: int

    @property
    def top(self) -> tuple[str, float]:
        i = int(np.argmax(self.probs))
        return self.labels[i], float(self.probs[i])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


class Classifier:
    """Load a bundle's model once and classify frames.

    The tensor shapes and dtypes are checked against the manifest here, so a mismatched
    bundle fails before the pipeline switches anything on.
    """

    def __init__(self, bundle: Bundle | str | None = None, num_threads: int = 2):
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        if num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        self.bundle = bundle
        self.labels = tuple(bundle.manifest.labels)
        self.num_threads = num_threads
        self._interp, self.runtime = make_interpreter(str(bundle.model_path), num_threads)
        self._lock = threading.Lock()
        self._check_tensors()
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        in_scale, in_zp = inp.get("quantization", (0.0, 0))
        spec = bundle.manifest.input
        self.preprocess = Preprocessor(spec.height, spec.width, spec.resize, spec.colour_order,
                                       inp["dtype"], in_scale, in_zp)
        self._out_scale, self._out_zp = out.get("quantization", (0.0, 0))
        self._out_float = np.issubdtype(out["dtype"], np.floating)
        log.info("model %s (%s, %s) on %s, %d thread(s)", bundle.name, bundle.quantization,
                 bundle.model_path.name, self.runtime, num_threads)

    @property
    def runtime_info(self) -> RuntimeInfo:
        return self.runtime

    def _check_tensors(self) -> None:
        m = self.bundle.manifest
        where = f"bundle '{m.name}' ({self.bundle.model_path.name})"
        fix = "the manifest does not describe this model: re-export the bundle with `weed-train export`"
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise BundleError(f"{where}: model has {len(ins)} inputs and {len(outs)} outputs, expected 1 and 1", fix)
        shape = tuple(int(x) for x in ins[0]["shape"])
        want = (1, m.input.height, m.input.width, m.input.channels)
        if shape != want:
            raise BundleError(f"{where}: input tensor shape {shape} != manifest input {want}", fix)
        in_dtype = np.dtype(ins[0]["dtype"]).name
        expect_in = m.input.dtype if self.bundle.variant is None else in_dtype
        if in_dtype != expect_in:
            raise BundleError(f"{where}: input tensor dtype {in_dtype} != manifest input.dtype {m.input.dtype}", fix)
        oshape = tuple(int(x) for x in outs[0]["shape"])
        if oshape != (1, len(m.labels)):
            raise BundleError(
                f"{where}: output tensor shape {oshape} does not match the {len(m.labels)} labels in the manifest", fix)
        out_dtype = np.dtype(outs[0]["dtype"]).name
        if self.bundle.variant is None and out_dtype != m.output.dtype:
            raise BundleError(f"{where}: output tensor dtype {out_dtype} != manifest output.dtype {m.output.dtype}", fix)

    def _dequantise(self, raw: np.ndarray) -> np.ndarray:
        if self._out_float:
            x = raw.astype(np.float32)
        elif self._out_scale:
            x = (raw.astype(np.float32) - self._out_zp) * self._out_scale
        else:
            x = raw.astype(np.float32)
        if self.bundle.manifest.output.kind == "logits":
            x = _softmax(x)
        return x

    def classify(self, image: np.ndarray, colour_order: str = "BGR") -> Scores:
        """Classify one HxWx3 uint8 image of any size (OpenCV frames are BGR)."""
        with self._lock:  # one interpreter: calls are serialised
            t0 = time.perf_counter_ns()
            buf = self.preprocess(image, colour_order)
            t1 = time.perf_counter_ns()
            self._interp.set_tensor(self._in_index, buf)
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out_index)[0]
            probs = self._dequantise(raw)
            t2 = time.perf_counter_ns()
        return Scores(probs=probs, labels=self.labels, preprocess_ns=t1 - t0, inference_ns=t2 - t1)

    def classify_many(self, images: Sequence[np.ndarray], colour_order: str = "BGR") -> list[Scores]:
        """Classify several images (e.g. the lane tiles of one frame) under one hold of the interpreter.

        Bundles have a fixed batch of 1 (checked against the manifest), so the images run one
        after another through the same interpreter; each ``Scores`` has its own stage times.
        """
        out = []
        with self._lock:
            for image in images:
                t0 = time.perf_counter_ns()
                buf = self.preprocess(image, colour_order)
                t1 = time.perf_counter_ns()
                self._interp.set_tensor(self._in_index, buf)
                self._interp.invoke()
                probs = self._dequantise(self._interp.get_tensor(self._out_index)[0])
                t2 = time.perf_counter_ns()
                out.append(Scores(probs=probs, labels=self.labels, preprocess_ns=t1 - t0, inference_ns=t2 - t1))
        return out

    def classify_rgb(self, image: np.ndarray) -> np.ndarray:
        """Probabilities for an RGB image (the training side's evaluation entry point)."""
        return self.classify(image, colour_order="RGB").probs

    def invoke_only(self) -> int:
        """Run the interpreter on the current input buffer; ns taken (for benchmarks)."""
        with self._lock:
            t0 = time.perf_counter_ns()
            self._interp.invoke()
            return time.perf_counter_ns() - t0

    def close(self) -> None:
        self._interp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
