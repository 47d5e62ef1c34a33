"""Tile scores from one backbone run over the whole (downscaled) frame: ``[model] scoring = "frame"``.

The bundle's ``frame_features`` export (``weed-train frame-features``: the int8 main model cut
before its global average pool, and the head's weights) is run **once per frame**: the frame is
resized by ``scale`` (``[model] frame_scale``; 0.5 = a 640x480 frame is fed as 320x240) into an
interpreter whose input is resized to that size, and gives a feature map of one cell per
``stride`` input pixels (32 for MobileNetV2). Each tile's features are the average of the
cells its box covers, each cell weighted by the share of it the box covers (``pool_weights``:
one matrix per frame size and tile grid, so pooling all tiles is one matrix product), and the
head (``weight @ features + bias``, softmax) gives its probabilities — the same ``Scores`` the
tile classifier gives, so the per-lane path does not know which scorer it has.

With the bundle's ``center_crop`` resize a tile's box is first narrowed to the centred window
the classifier would crop from it (``preprocess.crop_box``), so both scorers look at the same
ground. On a model-sized input (scale 1, one box = the image) this reproduces the main model's
probabilities up to int8 rounding (``train.frame_features.check_reproduces``). What differs on a
frame: a tile's cells also see the ground around it (the receptive field crosses tile borders),
and at a scale below 1 the plants are smaller than the model was trained on — the accuracy
comparison in docs/benchmark.md measures both.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge.core.errors import BundleError
from edge.inference.bundle import Bundle, FrameFeatures, sha256_file
from edge.inference.classifier import Scores, _softmax
from edge.inference.preprocess import Preprocessor, crop_box
from edge.inference.runtime import make_interpreter

log = logging.getLogger(__name__)


def _product(a: np.ndarray, b_t: np.ndarray) -> np.ndarray:
    """``a @ b_t.T`` without BLAS: numpy's einsum loops, one thread. The pooling product (12 x 80 x 1280 at
    0.5x) is past OpenBLAS's threading threshold, and its thread wake-ups on 2 cores busy with the interpreter cost
    up to 3-12 ms at p95 against 0.04 ms at p50 (docs/benchmark.md, "Per-lane speed"); einsum takes ~0.1 ms
    every time, and sums in one fixed order on every machine (BLAS kernels differ between x86 and aarch64)."""
    return np.einsum("ik,jk->ij", a, b_t)


Box = tuple[int, int, int, int]  # (x0, x1, y0, y1) in frame pixels, as ``Tile.pixels`` gives them

FIX = "export them with `weed-train frame-features --model BUNDLE`, or set [model] scoring = \"tiles\""


def _cover(lo: float, hi: float, n: int) -> np.ndarray:
    """How much of each of ``n`` unit cells [j, j+1) the interval [lo, hi) covers (0..1 each)."""
    j = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, 1.0)


def pool_weights(boxes: Sequence[Box], frame_w: int, frame_h: int, in_w: int, in_h: int, stride: int,
                 cells_w: int, cells_h: int) -> np.ndarray:
    """(boxes, cells_h * cells_w) float32: row i averages the feature map over box i.

    A box in frame pixels is mapped to the model input (``in_w`` / ``frame_w`` per pixel across,
    ``in_h`` / ``frame_h`` down) and then to cells of ``stride`` input pixels; each cell is
    weighted by the share of it the box covers, and each row sums to 1."""
    sx, sy = in_w / frame_w / stride, in_h / frame_h / stride
    rows = []
    for x0, x1, y0, y1 in boxes:
        if not (0 <= x0 < x1 <= frame_w and 0 <= y0 < y1 <= frame_h):
            raise ValueError(f"tile box {(x0, x1, y0, y1)} lies outside the {frame_w}x{frame_h} frame")
        w = np.outer(_cover(y0 * sy, y1 * sy, cells_h), _cover(x0 * sx, x1 * sx, cells_w)).ravel()
        rows.append(w / w.sum())
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), cells_h * cells_w)


def _int8(x: np.ndarray, quant: tuple[float, float]) -> np.ndarray:
    """``x`` rounded to the int8 grid [scale, zero point] (unchanged for scale 0: a float graph)."""
    scale, zp = quant
    if not scale:
        return x
    q = np.clip(np.rint(x / np.float32(scale)) + np.float32(zp), -128, 127)
    return (q - np.float32(zp)) * np.float32(scale)


@dataclass(frozen=True)
class Head:
    """The classification head of a frame-features export (``FrameFeatures.head_file``)."""

    weight: np.ndarray  # (labels, channels) float32
    bias: np.ndarray  # (labels,) float32
    pool_quant: tuple[float, float]  # [scale, zero point] of the int8 graph's pooled features
    logit_quant: tuple[float, float]  # ... and of its logits

    def on_pool_grid(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled features rounded to the int8 graph's grid for them (the input of its FULLY_CONNECTED)."""
        return _int8(pooled, self.pool_quant)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """Logits of pooled features (one row per tile), rounded where the int8 graph rounds them."""
        return _int8(_product(self.on_pool_grid(pooled), self.weight) + self.bias, self.logit_quant)

    def probs(self, pooled: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(pooled)).astype(np.float32)


def load_head(path, spec: FrameFeatures) -> Head:
    """The head file of a bundle's frame-features export, checked against its manifest entry."""
    try:
        with np.load(path, allow_pickle=False) as z:
            weight, bias = np.asarray(z["weight"], np.float32), np.asarray(z["bias"], np.float32)
            pool_q, logit_q = np.asarray(z["pool_quant"], np.float32), np.asarray(z["logit_quant"], np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a cut copy too
        raise BundleError(f"{path} is not a frame-features head ({e.__class__.__name__}: {e})", FIX) from None
    if weight.ndim != 2 or weight.shape[1] != spec.channels or bias.shape != (weight.shape[0],):
        raise BundleError(f"{path}: head weight {weight.shape} and bias {bias.shape} do not fit "
                          f"{spec.channels} feature channels", FIX)
    for name, q in (("pool_quant", pool_q), ("logit_quant", logit_q)):
        if q.shape != (2,):
            raise BundleError(f"{path}: {name} holds {q.size} value(s) of shape {q.shape}, not the two "
                              "[scale, zero point] of the int8 graph", FIX)
    if not all(np.isfinite(a).all() for a in (weight, bias, pool_q, logit_q)):
        raise BundleError(f"{path}: the head holds values that are not finite numbers (NaN or infinity)", FIX)
    return Head(weight, bias, (float(pool_q[0]), float(pool_q[1])), (float(logit_q[0]), float(logit_q[1])))


class FrameFeatureScorer:
    """Scores the tiles of a frame from one invoke of the bundle's frame-features export (module docstring)."""

    def __init__(self, bundle: Bundle, num_threads: int = 2, *, scale: float = 0.5):
        if not 0.0 < scale <= 1.0:  # [model] frame_scale is 0.1..1
            raise ValueError(f"frame scale must be in (0, 1], got {scale}")
        spec = bundle.manifest.frame_features
        if spec is None:
            raise BundleError(f"bundle '{bundle.name}' has no frame-features export ([model] scoring = \"frame\" "
                              "needs one)", FIX)
        if bundle.variant is not None:
            raise BundleError(f"[model] scoring = \"frame\" runs the bundle's int8 main model's backbone, not its "
                              f"'{bundle.variant}' variant", "leave [model] variant empty, or use scoring = \"tiles\"")
        self.bundle, self.spec, self.scale, self.num_threads = bundle, spec, float(scale), num_threads
        self.labels = tuple(bundle.manifest.labels)
        features, head = bundle.dir / spec.file, bundle.dir / spec.head_file
        for path, digest in ((features, spec.sha256), (head, spec.head_sha256)):
            if not path.is_file():
                raise BundleError(f"bundle '{bundle.name}': {path.name} named in its frame_features is missing", FIX)
            if sha256_file(path) != digest:
                raise BundleError(f"bundle '{bundle.name}': {path.name} does not match its sha256 in the manifest",
                                  "copy the whole bundle folder again, or " + FIX)
        self.head = load_head(head, spec)
        self._path = str(features)
        self._interp, self.runtime = make_interpreter(self._path, num_threads)
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1 or len(outs[0]["shape"]) != 4 or int(outs[0]["shape"][3]) != spec.channels:
            raise BundleError(f"bundle '{bundle.name}': {spec.file} is not a one-input graph with a "
                              f"{spec.channels}-channel feature map as its output", FIX)
        self._in_index, self._out_index = ins[0]["index"], outs[0]["index"]
        self._in_dtype = np.dtype(ins[0]["dtype"])
        self._in_quant = ins[0].get("quantization", (0.0, 0))
        self._size: tuple[int, int] | None = None  # (in_w, in_h) the interpreter is resized to
        self._pre: Preprocessor | None = None
        self._out_scale, self._out_zp = 0.0, 0
        self._pools: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self.invokes = 0
        log.info("model %s: tiles scored from one backbone run over the frame at %.2fx (%s, stride %d px)",
                 bundle.name, self.scale, spec.file, spec.stride)

    @property
    def mode(self) -> str:
        return f"one invoke per frame at {self.scale:g}x"

    def describe(self) -> str:
        return f"one backbone run over the frame at {self.scale:g}x, pooled per tile ({self.spec.file})"

    def input_size(self, frame_w: int, frame_h: int) -> tuple[int, int]:
        """The backbone's input (width, height) for a frame of this size."""
        return max(1, int(round(frame_w * self.scale))), max(1, int(round(frame_h * self.scale)))

    def _resize(self, in_w: int, in_h: int) -> None:
        if self._size == (in_w, in_h):
            return
        try:
            self._interp.resize_tensor_input(self._in_index, [1, in_h, in_w, 3])
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"bundle '{self.bundle.name}': its frame-features graph cannot take a {in_w}x{in_h} "
                              f"input ({str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__})",
                              "use [model] scoring = \"tiles\"") from None
        out = self._interp.get_output_details()[0]
        cells_h, cells_w = int(out["shape"][1]), int(out["shape"][2])
        stride = self.spec.stride
        if abs(cells_w - math.ceil(in_w / stride)) > 1 or abs(cells_h - math.ceil(in_h / stride)) > 1:
            raise BundleError(f"bundle '{self.bundle.name}': its frame_features.stride = {stride} does not fit its graph "
                              f"(a {in_w}x{in_h} input gives {cells_w}x{cells_h} feature cells, a stride of about "
                              f"{in_w / max(cells_w, 1):.0f} px)", "fix the manifest, or " + FIX)
        self._out_index = out["index"]
        self._out_scale, self._out_zp = out.get("quantization", (0.0, 0))
        scale, zp = self._in_quant
        self._pre = Preprocessor(in_h, in_w, "stretch", self.bundle.manifest.input.colour_order, self._in_dtype,
                                 scale, zp)
        self._size = (in_w, in_h)
        self._pools.clear()

    def _model_boxes(self, boxes: Sequence[Box]) -> list[Box]:
        """Each box narrowed to the centred window the tile classifier would crop from it (center_crop)."""
        inp = self.bundle.manifest.input
        if inp.resize != "center_crop":
            return list(boxes)
        out = []
        for x0, x1, y0, y1 in boxes:
            cy0, cy1, cx0, cx1 = crop_box(y1 - y0, x1 - x0, inp.height, inp.width)
            out.append((x0 + cx0, x0 + cx1, y0 + cy0, y0 + cy1))
        return out

    def _pool(self, boxes: Sequence[Box], frame_w: int, frame_h: int, cells_h: int, cells_w: int) -> np.ndarray:
        key = (frame_w, frame_h, tuple(boxes))
        m = self._pools.get(key)
        if m is None:
            assert self._size is not None
            m = pool_weights(self._model_boxes(boxes), frame_w, frame_h, *self._size, self.spec.stride, cells_w, cells_h)
            if len(self._pools) > 64:  # the gate keeps a different set of tiles from frame to frame
                self._pools.clear()
            self._pools[key] = m
        return m

    def score(self, image: np.ndarray, boxes: Sequence[Box], colour_order: str = "BGR") -> list[Scores]:
        """Probabilities of each box of ``image`` (HxWx3 uint8), from one invoke over the whole frame."""
        if not boxes:
            return []
        h, w = image.shape[:2]
        with self._lock:
            if self._interp is None:
                raise RuntimeError("the frame scorer is closed")
            t0 = time.perf_counter_ns()
            self._resize(*self.input_size(w, h))
            assert self._pre is not None
            buf = self._pre(image, colour_order)
            t1 = time.perf_counter_ns()
            self._interp.set_tensor(self._in_index, buf)
            self._interp.invoke()
            self.invokes += 1
            raw = self._interp.get_tensor(self._out_index)[0]
            cells_h, cells_w, channels = raw.shape
            fmap = raw.reshape(cells_h * cells_w, channels).astype(np.float32)
            if self._out_scale:
                fmap -= np.float32(self._out_zp)
                fmap *= np.float32(self._out_scale)
            probs = self.head.probs(_product(self._pool(boxes, w, h, cells_h, cells_w), fmap.T))
            t2 = time.perf_counter_ns()
        n = len(boxes)
        (pre, pre_extra), (inf, inf_extra) = divmod(t1 - t0, n), divmod(t2 - t1, n)
        return [Scores(probs=probs[k], labels=self.labels, preprocess_ns=pre + (1 if k < pre_extra else 0),
                       inference_ns=inf + (1 if k < inf_extra else 0)) for k in range(n)]

    def warm_up(self, frame_w: int, frame_h: int, tiles: int) -> None:
        """The interpreter resized to this frame size and run once (its first invoke allocates), uncounted."""
        with self._lock:
            if self._interp is None:
                raise RuntimeError("the frame scorer is closed")
            self._resize(*self.input_size(frame_w, frame_h))
            self._interp.invoke()

    def invoke_only(self, tiles: int = 1) -> int:
        """One invoke on the current input (whatever the number of tiles): ns taken (benchmarks' floor)."""
        with self._lock:
            t0 = time.perf_counter_ns()
            self._interp.invoke()
            return time.perf_counter_ns() - t0

    def close(self) -> None:
        self._interp = None
        self._pools.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
