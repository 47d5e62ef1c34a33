"""``weed-train frame-features``: the export that lets the edge run a bundle's backbone once over a whole frame.

A classifier of the form backbone -> global average pool (MEAN over rows and columns) ->
FULLY_CONNECTED -> SOFTMAX (every bundle ``weed-train`` writes) is cut, in its int8 TFLite
graph, just before the pool (``tensorflow.lite.tools.flatbuffer_utils``; no Keras weights
needed): the operators from the pool on are dropped and the pool's input, the last feature
map, becomes the graph's output. The head — the FULLY_CONNECTED weights and bias, dequantised
with their own (per-channel) scales, and the int8 quantisation of the pooled features and of the
logits, so the edge rounds them where the int8 graph does — goes into a small ``.npz`` beside it. Both are recorded in
the manifest's ``frame_features`` section (with their sha256), so
``edge.inference.frame_features`` can resize the cut graph's input to a (downscaled) frame, run
it once, average the feature map over each tile's cells and apply the head in numpy.

On a model-sized input the cut graph + the numpy head reproduce the main model up to int8
rounding (``check_reproduces``, on the reference kernels, random and uniform images, before the
export is kept: the cut graph's output is the model's feature map, the pooling and the head within
``MAX_STEPS`` of the model's own int8 results); a bundle whose graph does not have that shape is
refused with the reason, and one edge-run would refuse (not a valid TFLite model, tensors that are not
its manifest's: a label count the output does not have) before anything is written.

``edge`` never imports this module (it needs TensorFlow); it only reads the two files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.core.errors import BundleError
from edge.inference.bundle import MANIFEST, FrameFeatures, load_bundle, read_manifest, sha256_file
from edge.inference.classifier import Classifier

FEATURES_FILE = "model_features.tflite"
HEAD_FILE = "frame_head.npz"
NOT_REPRODUCED = "the cut graph does not reproduce the model: do not use scoring = \"frame\" with it"
MAX_STEPS = 1  # numpy pooling and head vs the int8 model's MEAN and FULLY_CONNECTED outputs (reference kernels), in
# steps of their int8 grids: float rounding against the kernels' fixed-point rounding


def _op_names(model) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
    return out


def _constant(model, tensor_index: int) -> np.ndarray:
    """A constant tensor's values (int8 weights, int32 bias) as stored in the flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    t = model.subgraphs[0].tensors[tensor_index]
    dtype = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32,
             schema.TensorType.FLOAT32: np.float32}.get(t.type)
    data = model.buffers[t.buffer].data
    if dtype is None or data is None:
        raise ValueError(f"tensor {t.name!r} is not a stored int8/int32/float32 constant")
    return np.frombuffer(bytes(data), dtype=dtype).reshape([int(x) for x in t.shape])


def _dequantised(model, tensor_index: int) -> np.ndarray:
    t = model.subgraphs[0].tensors[tensor_index]
    raw = _constant(model, tensor_index)
    if raw.dtype == np.float32:
        return raw
    q = t.quantization
    scale = np.asarray(q.scale, np.float32)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else 0, np.float32)
    if scale.size > 1:  # per output channel (axis 0 of a FULLY_CONNECTED weight and of its bias)
        shape = (-1,) + (1,) * (raw.ndim - 1)
        scale, zp = scale.reshape(shape), (zp.reshape(shape) if zp.size > 1 else zp)
    return ((raw.astype(np.float32) - zp) * scale).astype(np.float32)


def _quant(model, tensor_index: int) -> np.ndarray:
    """[scale, zero point] of an int8 activation tensor ([0, 0]: not quantised)."""
    q = model.subgraphs[0].tensors[tensor_index].quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return np.zeros(2, np.float32)
    return np.array([q.scale[0], q.zeroPoint[0] if q.zeroPoint is not None else 0], np.float32)


def _pool_index(model) -> int:
    """The index of the global pool (the last MEAN) of a one-subgraph model whose operators after it are
    FULLY_CONNECTED, SOFTMAX (, QUANTIZE); ValueError saying why not."""
    if len(model.subgraphs) != 1:
        raise ValueError(f"the model has {len(model.subgraphs)} subgraphs, not 1")
    ops = _op_names(model)
    means = [i for i, n in enumerate(ops) if n == "MEAN"]
    if not means:
        raise ValueError("the model has no MEAN (global average pool) operator")
    i = means[-1]
    tail = ops[i + 1:]
    if tail[:2] != ["FULLY_CONNECTED", "SOFTMAX"] or any(n != "QUANTIZE" for n in tail[2:]):
        raise ValueError(f"the operators after the last MEAN are {tail}, not FULLY_CONNECTED, SOFTMAX (, QUANTIZE)")
    return i


def cut_model(model_path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    """(the cut graph's flatbuffer, the head's arrays for ``HEAD_FILE``), or ValueError saying why the model is
    not backbone -> MEAN -> FULLY_CONNECTED -> SOFTMAX (-> QUANTIZE). The head: ``weight`` (labels x channels)
    and ``bias``, dequantised, and the int8 quantisation ([scale, zero point]) of the pooled features
    (``pool_quant``) and of the logits (``logit_quant``), so the edge rounds them as the int8 graph does."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(model_path))
    i = _pool_index(model)
    sg = model.subgraphs[0]
    mean, fc = sg.operators[i], sg.operators[i + 1]
    feature = int(mean.inputs[0])
    shape = [int(x) for x in sg.tensors[feature].shape]
    axes = _constant(model, int(mean.inputs[1])).ravel().tolist()
    if len(shape) != 4 or sorted(axes) != [1, 2]:
        raise ValueError(f"the last MEAN averages axes {axes} of a {shape} tensor, not rows and columns of a feature map")
    if int(fc.inputs[0]) != int(mean.outputs[0]):
        raise ValueError("the FULLY_CONNECTED does not read the pooled features")
    weight = _dequantised(model, int(fc.inputs[1]))
    bias = _dequantised(model, int(fc.inputs[2])) if len(fc.inputs) > 2 and fc.inputs[2] >= 0 else \
        np.zeros(weight.shape[0], np.float32)
    if weight.ndim != 2 or weight.shape[1] != shape[3] or bias.shape != (weight.shape[0],):
        raise ValueError(f"head weight {weight.shape} / bias {bias.shape} do not fit {shape[3]} feature channels")
    head = {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32),
            "pool_quant": _quant(model, int(mean.outputs[0])), "logit_quant": _quant(model, int(fc.outputs[0]))}
    sg.operators = sg.operators[:i]
    sg.outputs = np.array([feature], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), head


def _stride(bundle, features_path: Path) -> int:
    """Input pixels per feature-map cell, from the cut graph's output at the model's input size."""
    from edge.inference.runtime import make_interpreter

    interp, _ = make_interpreter(str(features_path), 1)
    out = [int(x) for x in interp.get_output_details()[0]["shape"]]
    side = bundle.manifest.input.height
    if out[1] < 1 or side % out[1]:
        raise ValueError(f"a {side}-px input gives {out[1]} feature rows: not a whole stride")
    return side // out[1]


def _reference_kernels(path: Path, keep_tensors: bool = False):
    """A LiteRT interpreter with the built-in reference kernels (no XNNPACK delegate); ``keep_tensors``: its
    intermediate tensors readable after an invoke."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         experimental_preserve_all_tensors=keep_tensors)
    interp.allocate_tensors()
    return interp


def _dequantise(raw: np.ndarray, scale: float, zp: float) -> np.ndarray:
    """An activation's values (unchanged for scale 0: not quantised)."""
    raw = raw.astype(np.float32)
    return (raw - zp) * scale if scale else raw


def _dequantised_tensor(model, interp, tensor_index: int) -> np.ndarray:
    """An intermediate int8 tensor of ``interp`` (made with ``keep_tensors``) after an invoke, dequantised."""
    return _dequantise(interp.get_tensor(tensor_index), *_quant(model, tensor_index))


def _dequantised_output(interp) -> np.ndarray:
    out = interp.get_output_details()[0]
    return _dequantise(interp.get_tensor(out["index"]), *out.get("quantization", (0.0, 0)))


@dataclass(frozen=True)
class Reproduction:
    """How closely a frame-features export reproduces its bundle's int8 model (``check_reproduces``): the largest
    difference, in int8 steps of the graph's own grid, of the numpy pooling from the graph's MEAN output and of
    the numpy head from the graph's FULLY_CONNECTED output (fed the graph's own pooled features), and, end to end
    (the edge's path: the cut graph, numpy pooling, numpy head), the largest difference in a probability."""

    pool_steps: int
    logit_steps: int
    prob_diff: float

    def describe(self) -> str:
        return (f"pooled features within {self.pool_steps} int8 step, logits within {self.logit_steps} "
                f"(allowed {MAX_STEPS} each), probabilities within {self.prob_diff:.4f}")


def _steps(a: np.ndarray, b: np.ndarray, quant) -> int:
    """The largest difference of two dequantised arrays in steps of the grid ``quant`` ([scale, zero point])."""
    scale = float(quant[0])
    return int(np.rint(np.max(np.abs(a - b)) / scale)) if scale else int(np.max(np.abs(a - b)) > 0)


def check_reproduces(bundle_dir: Path, images: list[np.ndarray] | None = None, seed: int = 0) -> Reproduction:
    """Check the bundle's frame-features export against its main model, stage by stage, on model-sized RGB
    ``images`` (default: random, uniform grey and green ones); raises BundleError where a stage is off.

    Both graphs run on the reference kernels: XNNPACK's int8 kernels round differently from those, and from one
    graph to another (the same backbone, cut or not, then differs by a few int8 steps in its last feature map),
    so only the reference kernels show whether the cut and the head are exact. The cut graph's output must be
    the main model's last feature map exactly; the numpy pooling of it must be the model's MEAN output within
    MAX_STEPS of its int8 grid (the MEAN kernel rounds its fixed-point sum its own way); the numpy head, fed the
    model's pooled features, its logits within MAX_STEPS. A probability is then off by at most what one logit
    step makes (``tanh(step / 2)``, 0.02 at a logit scale of 0.04), so the end-to-end difference is reported,
    not limited."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edge.inference.frame_features import load_head

    bundle = load_bundle(bundle_dir)
    spec = bundle.manifest.frame_features
    if spec is None:
        raise BundleError(f"bundle {bundle_dir} has no frame-features export", "run weed-train frame-features")
    h, w = bundle.manifest.input.height, bundle.manifest.input.width
    if images is None:
        rng = np.random.default_rng(seed)
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(6)]
        images += [np.full((h, w, 3), (90, 90, 90), np.uint8), np.full((h, w, 3), (40, 160, 50), np.uint8)]
    model = flatbuffer_utils.read_model(str(bundle.model_path))
    at = _pool_index(model)  # a model cut_model could cut: the export exists
    mean, fc = model.subgraphs[0].operators[at], model.subgraphs[0].operators[at + 1]
    fmap_t, pooled_t, logits_t = int(mean.inputs[0]), int(mean.outputs[0]), int(fc.outputs[0])
    full, cut = _reference_kernels(bundle.model_path, keep_tensors=True), _reference_kernels(bundle.dir / spec.file)
    head = load_head(bundle.dir / spec.head_file, spec)
    pool_steps = logit_steps = 0
    worst = 0.0
    for img in images:
        x = img[None].astype(full.get_input_details()[0]["dtype"])
        full.set_tensor(full.get_input_details()[0]["index"], x)
        full.invoke()
        cut.set_tensor(cut.get_input_details()[0]["index"], x)
        cut.invoke()
        fmap = _dequantised_output(cut)[0]
        if not np.array_equal(fmap, _dequantised_tensor(model, full, fmap_t)[0]):
            raise BundleError(f"bundle {bundle_dir}: the cut graph's output is not the model's last feature map",
                              NOT_REPRODUCED)
        pooled = fmap.reshape(-1, fmap.shape[-1]).mean(axis=0, keepdims=True)
        graph_pooled = _dequantised_tensor(model, full, pooled_t).reshape(1, -1)
        pool_steps = max(pool_steps, _steps(head.on_pool_grid(pooled), graph_pooled, head.pool_quant))
        logit_steps = max(logit_steps, _steps(head.logits(graph_pooled),
                                              _dequantised_tensor(model, full, logits_t).reshape(1, -1),
                                              head.logit_quant))
        worst = max(worst, float(np.max(np.abs(_dequantised_output(full)[0] - head.probs(pooled)[0]))))
    result = Reproduction(pool_steps, logit_steps, worst)
    if pool_steps > MAX_STEPS or logit_steps > MAX_STEPS:
        raise BundleError(f"bundle {bundle_dir}: the frame-features export does not reproduce the main model: "
                          f"{result.describe()}",
                          NOT_REPRODUCED)
    return result


def export_frame_features(bundle_dir: str | Path) -> FrameFeatures:
    """Write ``model_features.tflite`` and ``frame_head.npz`` into an int8 bundle and record them in its manifest."""
    folder = Path(bundle_dir)
    bundle = load_bundle(folder)
    if bundle.quantization != "int8":
        raise BundleError(f"bundle {folder}: its main model is {bundle.quantization}, not int8",
                          "frame features are cut from an int8 main model")
    Classifier(bundle, num_threads=1, batch=False).close()  # edge-run's checks, before anything is written: a
    # valid TFLite model whose tensors are the manifest's (its input, one output per label)
    try:
        flat, arrays = cut_model(bundle.model_path)
    except ValueError as e:
        raise BundleError(f"bundle {folder}: cannot cut its model before the pool ({e})",
                          "frame features need a backbone -> global average pool -> dense -> softmax model "
                          "(as weed-train train writes)") from None
    features = folder / FEATURES_FILE
    head = folder / HEAD_FILE
    features.write_bytes(flat)
    with open(head, "wb") as f:
        np.savez(f, **arrays)
    try:
        spec = FrameFeatures(file=FEATURES_FILE, sha256=sha256_file(features), head_file=HEAD_FILE,
                             head_sha256=sha256_file(head), stride=_stride(bundle, features),
                             channels=int(arrays["weight"].shape[1]), size_bytes=features.stat().st_size)
    except ValueError as e:
        features.unlink()
        head.unlink()
        raise BundleError(f"bundle {folder}: {e}", "frame features need a fully convolutional backbone") from None
    previous = (folder / MANIFEST).read_text(encoding="utf-8")
    data = json.loads(previous)
    data["frame_features"] = spec.model_dump()
    (folder / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    read_manifest(folder)  # still a valid manifest
    try:
        check_reproduces(folder)
    except BundleError:
        (folder / MANIFEST).write_text(previous, encoding="utf-8")
        features.unlink()
        head.unlink()
        raise
    return spec
