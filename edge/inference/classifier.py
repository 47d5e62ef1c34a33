"""The classifier: one interpreter per process, created once, checked against the bundle.

``classify_many`` (the lane tiles of a frame) runs its N images in **a few batched
invokes**, one per power of two in N (12 tiles: a batch of 8 and one of 4; at most
``max_batch`` per invoke): each batch size has a second interpreter of the same model with
its input resized to that size (created on first use and kept), fed from a preallocated
(n, H, W, 3) buffer. So the interpreters stay few (sizes 2, 4, 8, 16) while N changes from
frame to frame (the vegetation gate leaves bare tiles out), and each size is checked once.
The invoke time grows with the images, not the invokes: 8 + 4 took the time of one batch
of 12 in a one-off comparison (21.9 vs 21.4 ms p50, the 160-px default bundle, 2 threads). A model that
cannot run a batch (resizing fails, the output is not [n, classes], the batched results
differ from one-by-one ones on the first batch of any size n, or the runtime raises on a
batch's invoke) falls back to one invoke per image for good (that batch is classified
again one by one); which path runs is logged once. ``warm_up(n)`` makes and checks every
batch size ``classify_many`` can use for up to n images ahead of time, so that no frame of a
run pays for creating one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edge.inference.bundle import REPAIR, Bundle, load_bundle
from edge.core.errors import BundleError
from edge.inference.preprocess import Preprocessor
from edge.inference.runtime import BatchUnsupported, RuntimeInfo, batch_interpreter, make_interpreter

log = logging.getLogger(__name__)

_DTYPES = {"uint8": np.uint8, "int8": np.int8, "float32": np.float32, "float16": np.float16}

# A bundle's declared quantisation -> (tensor types its model has one of, tensor types it has none of)
QUANT_TENSORS = {
    "int8": ({"int8", "uint8"}, {"float16"}),
    "float16": ({"float16"}, {"int8", "uint8"}),
    "float32": ({"float32"}, {"float16", "int8", "uint8"}),
}

MAX_BATCH = 16  # images per invoke at most (bounds the activation memory)
BATCH_CACHE = 4  # batch interpreters kept (sizes 2, 4, 8, 16); beyond that the least recently used one is dropped


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


def _describe(e: Exception) -> str:
    """``Class: first line of the message`` (runtime errors can be long)."""
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0] if text else ''}"


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (one row per image)."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class _Batch:
    """An interpreter resized to ``n`` images, its input buffer and output quantisation."""

    n: int
    interp: Any
    in_index: int
    out_index: int
    buffer: np.ndarray  # (n, H, W, 3), the model's input dtype
    out_scale: float
    out_zp: int


def _chunks(n: int, max_batch: int) -> list[int]:
    """Sizes of the invokes for ``n`` images: powers of two, largest first, none above ``max_batch``
    (12 -> 8, 4; 7 -> 4, 2, 1; 20 with max_batch 16 -> 16, 4)."""
    size, out = 1 << (max_batch.bit_length() - 1), []
    while n > 0:
        while size > n:
            size >>= 1
        out.append(size)
        n -= size
    return out


class Classifier:
    """Load a bundle's model once and classify frames.

    The tensor shapes and dtypes are checked against the manifest here, so a mismatched
    bundle fails before the pipeline switches anything on.
    """

    def __init__(self, bundle: Bundle | str | None = None, num_threads: int = 2, *, batch: bool = True,
                 max_batch: int = MAX_BATCH):
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        if num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
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
        self._out_dtype = np.dtype(out["dtype"])
        self.max_batch = max_batch
        # None: not tried yet; True: batches run in one invoke; False: one by one (see batch_note)
        self._batching: bool | None = None if batch else False
        self.batch_note = "" if batch else "batching switched off (Classifier(batch=False))"
        self._batches: OrderedDict[int, _Batch] = OrderedDict()
        self._checked: set[int] = set()  # batch sizes whose results were checked against one by one
        self.invokes = 0  # interpreter invokes so far (a batch counts once)
        log.info("model %s (%s, %s) on %s, %d thread(s)", bundle.name, bundle.quantization,
                 bundle.model_path.name, self.runtime, num_threads)

    @property
    def runtime_info(self) -> RuntimeInfo:
        return self.runtime

    def _check_tensors(self) -> None:
        m = self.bundle.manifest
        where = f"bundle '{m.name}' ({self.bundle.model_path.name})"
        fix = f"the manifest does not describe this model: {REPAIR}"
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
        if self.bundle.variant is None and out_dtype in ("uint8", "int8"):
            scale, zp = outs[0].get("quantization", (0.0, 0))
            said = (m.output.scale, m.output.zero_point)
            if (said[0] is not None and not math.isclose(said[0], scale, rel_tol=1e-6)) or \
                    (said[1] is not None and said[1] != zp):
                raise BundleError(f"{where}: the manifest's output scale {said[0]} / zero point {said[1]} are not the "
                                  f"model's ({scale:g} / {zp})", fix)
            if m.output.kind == "logits" and math.isclose(scale, 1 / 256, rel_tol=1e-6) and \
                    zp == (-128 if out_dtype == "int8" else 0):
                raise BundleError(f"{where}: the manifest says output.kind = \"logits\", but the output is quantised "
                                  "as a softmax's always is (scale 1/256): these are probabilities, and a second "
                                  "softmax would squash them", 'set output.kind = "probabilities", or ' + fix)
        q = self.bundle.quantization
        have = {np.dtype(t["dtype"]).name for t in self._interp.get_tensor_details()}
        one_of, none_of = QUANT_TENSORS[q]
        if not have & one_of or have & none_of:
            raise BundleError(f"{where}: the manifest says quantization {q}, but the model's tensors are "
                              f"{', '.join(sorted(have))} ({q} has {' or '.join(sorted(one_of))} tensors and no "
                              f"{' or '.join(sorted(none_of))} ones)", fix)

    def _dequantise(self, raw: np.ndarray, scale: float | None = None, zp: int | None = None) -> np.ndarray:
        """Probabilities from a raw output (one row, or one row per image of a batch)."""
        scale = self._out_scale if scale is None else scale
        zp = self._out_zp if zp is None else zp
        if self._out_float:
            x = raw.astype(np.float32)
        elif scale:
            x = (raw.astype(np.float32) - np.float32(zp)) * np.float32(scale)
        else:
            x = raw.astype(np.float32)
        if self.bundle.manifest.output.kind == "logits":
            x = _softmax(x)
        return x

    @property
    def batch_mode(self) -> str:
        """How ``classify_many`` runs: ``batched`` (one invoke per batch), ``one by one``, or ``not tried yet``."""
        return {None: "not tried yet", True: "batched", False: "one by one"}[self._batching]

    def _no_batch(self, reason: str) -> None:
        self._batching = False
        self._batches.clear()
        self.batch_note = reason
        log.warning("model %s cannot classify a batch of tiles in one invoke (%s): classifying them one by one, "
                    "one invoke each", self.bundle.name, reason)

    def _make_batch(self, n: int) -> _Batch:
        """A batch interpreter for ``n`` images (``BatchUnsupported`` if the model cannot)."""
        interp = batch_interpreter(self._interp, str(self.bundle.model_path), self.num_threads, n)
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        oshape = [int(x) for x in out["shape"]]
        if oshape != [n, len(self.labels)]:
            raise BatchUnsupported(f"a batch of {n} gives an output of shape {oshape}, not [{n}, {len(self.labels)}]")
        if np.dtype(inp["dtype"]) != self.preprocess.dtype or tuple(inp.get("quantization", (0.0, 0))) != \
                tuple(self._interp.get_input_details()[0].get("quantization", (0.0, 0))):
            raise BatchUnsupported("the batched input tensor has another dtype or quantisation")
        if np.dtype(out["dtype"]) != self._out_dtype:
            raise BatchUnsupported("the batched output tensor has another dtype")
        scale, zp = out.get("quantization", (0.0, 0))
        return _Batch(n, interp, inp["index"], out["index"], self.preprocess.batch_buffer(n), float(scale), int(zp))

    def _batch_for(self, n: int) -> _Batch | None:
        """The cached batch interpreter for ``n`` images; created (and checked) on first use."""
        b = self._batches.get(n)
        if b is not None:
            self._batches.move_to_end(n)
            return b
        try:
            b = self._make_batch(n)
        except BatchUnsupported as e:
            self._no_batch(str(e))
            return None
        except Exception as e:  # the runtime refused a second interpreter: one by one still works
            self._no_batch(_describe(e))
            return None
        self._batches[n] = b
        while len(self._batches) > BATCH_CACHE:
            self._batches.popitem(last=False)
        return b

    def _tolerance(self) -> float:
        """How far a batched probability may be from the one-by-one one: one output quantisation step."""
        step = 0.0 if self._out_float else float(self._out_scale or 1.0)
        return max(step, 1e-4) * 1.001

    def _check_batch(self, b: _Batch, probs: np.ndarray, images, colour_order: str) -> bool:
        """The first batch of each size: its first and last images one by one must give the same probabilities."""
        for i in sorted({0, b.n - 1}):
            one = self._one(images[i], colour_order).probs
            diff = float(np.max(np.abs(one - probs[i])))
            if diff > self._tolerance():
                self._no_batch(f"image {i} of a batch of {b.n} differs from its one-by-one result by {diff:.4g}")
                return False
        return True

    def warm_up(self, max_images: int) -> int:
        """Create and check, now, the batch interpreter of every invoke size ``classify_many`` uses for 2 to
        ``max_images`` images (the powers of two up to ``max_batch``), on fixed pseudo-random images; returns how
        many sizes are ready. ``invokes`` does not count these. A model that cannot batch falls back to one by one
        here, as it would on a frame."""
        sizes = [1 << k for k in range(1, self.max_batch.bit_length()) if 1 << k <= min(max_images, self.max_batch)]
        inp = self.bundle.manifest.input
        rng = np.random.default_rng(0)
        with self._lock:
            if self._interp is None:
                raise RuntimeError("the classifier is closed")
            counted = self.invokes
            try:
                for n in sizes:
                    if self._batching is False:
                        break
                    b = self._batch_for(n)
                    if b is not None and n not in self._checked:
                        images = list(rng.integers(0, 256, (n, inp.height, inp.width, 3), dtype=np.uint8))
                        self._batched(b, images, "RGB")
            finally:
                self.invokes = counted
        return 0 if self._batching is False else len(sizes)

    def classify(self, image: np.ndarray, colour_order: str = "BGR") -> Scores:
        """Classify one HxWx3 uint8 image of any size (OpenCV frames are BGR)."""
        with self._lock:  # one interpreter: calls are serialised
            return self._one(image, colour_order)

    def classify_many(self, images: Sequence[np.ndarray], colour_order: str = "BGR") -> list[Scores]:
        """Classify several images (e.g. the lane tiles of one frame) in a few batched invokes.

        The images are preprocessed into the (n, H, W, 3) inputs of interpreters resized to
        batches of n, one per power of two in their number (see the module docstring).
        Each ``Scores`` has its own preprocessing time and an equal share of the batch's
        inference time (the shares add up to it). Models that cannot run a batch, and
        ``Classifier(batch=False)``, classify the images one after another instead.
        """
        images = list(images)
        out: list[Scores] = []
        with self._lock:
            if self._interp is None:
                raise RuntimeError("the classifier is closed")
            if len(images) == 1 or self._batching is False:
                for image in images:
                    out.append(self._one(image, colour_order))
                return out
            i = 0
            for size in _chunks(len(images), self.max_batch):
                part = images[i:i + size]
                i += size
                b = self._batch_for(size) if size > 1 and self._batching is not False else None
                if b is None:
                    out.extend(self._one(image, colour_order) for image in part)
                else:
                    out.extend(self._batched(b, part, colour_order))
        return out

    def _one(self, image: np.ndarray, colour_order: str) -> Scores:
        """One image through the batch-1 interpreter (the lock is held)."""
        t0 = time.perf_counter_ns()
        buf = self.preprocess(image, colour_order)
        t1 = time.perf_counter_ns()
        self._interp.set_tensor(self._in_index, buf)
        self._interp.invoke()
        self.invokes += 1
        probs = self._dequantise(self._interp.get_tensor(self._out_index)[0])
        t2 = time.perf_counter_ns()
        return Scores(probs=probs, labels=self.labels, preprocess_ns=t1 - t0, inference_ns=t2 - t1)

    def _batched(self, b: _Batch, images: list[np.ndarray], colour_order: str) -> list[Scores]:
        pre = []
        for k, image in enumerate(images):
            t0 = time.perf_counter_ns()
            self.preprocess.fill(image, colour_order, b.buffer[k])
            pre.append(time.perf_counter_ns() - t0)
        t1 = time.perf_counter_ns()
        try:
            b.interp.set_tensor(b.in_index, b.buffer)
            b.interp.invoke()
            self.invokes += 1
            probs = self._dequantise(b.interp.get_tensor(b.out_index), b.out_scale, b.out_zp)
        except Exception as e:  # the runtime failed on the batch: one by one from now on, this chunk again
            self._no_batch(f"the batch interpreter failed on a batch of {b.n}: {_describe(e)}")
            return [self._one(image, colour_order) for image in images]
        infer = time.perf_counter_ns() - t1
        if b.n not in self._checked:  # the first batch of each size: check it against one by one, once
            if not self._check_batch(b, probs, images, colour_order):
                return [self._one(image, colour_order) for image in images]
            self._checked.add(b.n)
            if self._batching is None:
                self._batching = True
                self.batch_note = f"batches of up to {self.max_batch} images per invoke"
                log.info("model %s classifies a frame's tiles in batched invokes (a batch of %d checked against one "
                         "by one)", self.bundle.name, b.n)
            else:
                log.debug("model %s: a batch of %d checked against one by one too", self.bundle.name, b.n)
        share, extra = divmod(infer, b.n)
        return [Scores(probs=probs[k], labels=self.labels, preprocess_ns=pre[k],
                       inference_ns=share + (1 if k < extra else 0)) for k in range(b.n)]

    def classify_rgb(self, image: np.ndarray) -> np.ndarray:
        """Probabilities for an RGB image (the training side's evaluation entry point)."""
        return self.classify(image, colour_order="RGB").probs

    def invoke_only(self, images: int = 1) -> int:
        """Run the invokes ``classify_many`` runs for ``images`` images, on the current input
        buffers (nothing preprocessed); ns taken (for benchmarks: the floor of a frame)."""
        with self._lock:
            batches: list[_Batch | None] = [None] * max(1, images)
            if images > 1 and self._batching is True:
                batches = [self._batch_for(size) if size > 1 else None
                           for size in _chunks(images, self.max_batch)]
            t0 = time.perf_counter_ns()
            for b in batches:
                if b is None:
                    self._interp.invoke()
                else:
                    b.interp.invoke()
            return time.perf_counter_ns() - t0

    def close(self) -> None:
        self._interp = None
        self._batches.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
