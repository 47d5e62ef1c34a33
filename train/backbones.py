"""Pretrained backbones, one builder per backbone, each mirroring its weight source.

Every model takes float32 RGB in 0..255, shape ``(input_size, input_size, 3)``; the
preprocessing its weights expect is a layer inside the graph (so an exported int8
TFLite takes raw uint8 pixels), and ``Built.preprocessing`` describes it for the
bundle manifest.

``build_backbone(name, input_size, weights=...)`` returns a ``Built``:

* ``model``: input -> ``preprocess`` -> ``base`` -> ``avg_pool`` (pooled features,
  ``(batch, feature_dim)``) [-> ``predictions``: ImageNet softmax when ``include_top``]
* ``base``: the inner convolutional ``keras.Model`` whose ``layers`` run input to
  output, so "unfreeze the top N layers" means ``base.layers[-N:]``.

A port must mirror the network its weights were trained in, not just its layer
shapes: torchvision's MobileNetV2 pads stride-2 convolutions by one pixel on every
side and uses BatchNorm epsilon 1e-5, which Keras' stock MobileNetV2 does not
(loading torchvision weights into it shifts class probabilities by up to ~0.17).
The TF-derived sources (EfficientNet-Lite0's TF "same" padding, MobileNetV1) match
Keras exactly for input sizes that are multiples of 32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from train import weights as wsrc
from train.weights import KERAS_IMAGENET, WeightsError

if TYPE_CHECKING:
    import keras
    from keras import KerasTensor

__all__ = ["BACKBONES", "BackboneSpec", "Built", "build_backbone", "weights_shippable"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    default_input_size: int
    weight_sources: Tuple[str, ...]  # first = default
    feature_dim: int
    shippable: bool  # may a model fine-tuned from the default weights be redistributed
    min_input_size: int = 32


@dataclass(frozen=True, eq=False)
class Built:
    model: keras.Model
    weights_source: str
    preprocessing: str
    base: keras.Model


BACKBONES: Dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("mobilenet_v2", 224, ("torchvision-imagenet1k-v1", KERAS_IMAGENET), 1280, True),
        BackboneSpec("efficientnet_lite0", 224, ("lite0-imagenet",), 1280, True),
        BackboneSpec("mobilenet_v1", 224, ("nudity-mobilenet-v1", KERAS_IMAGENET), 1024, True),
        BackboneSpec("xception", 299, ("kitchenware-xception", KERAS_IMAGENET), 2048, False, min_input_size=71),
    )
}

def weights_shippable(backbone: str, weights_source: str) -> bool:
    """False when the weights' licence forbids handing the model on (xception's source states none)."""
    if weights_source == "none":
        return True
    s = wsrc.SOURCES.get(weights_source)
    if s is not None:
        return s.shippable
    spec = BACKBONES.get(backbone)
    return not (spec is not None and not spec.shippable)


# --- small helpers -------------------------------------------------------------------

_PortMap = Dict[str, Tuple[str, str]]  # keras layer name -> (kind, source prefix)
_Arrays = Dict[str, np.ndarray]  # a weight source's arrays, by the source's own names
_Port = Tuple["keras.Model", "keras.Model", str]  # (model, base, preprocessing) of a builder


def _keras() -> ModuleType:
    import keras

    return keras


def _torch_name(prefix: str) -> str:
    return prefix.strip("_").replace("._", "_").replace(".", "_")


class _TorchBody:
    """Builds conv/bn/act layers named after torch state-dict prefixes and records the map."""

    def __init__(self, bn_epsilon: float, bn_momentum: float):
        self.k = _keras()
        self.eps = bn_epsilon
        self.momentum = bn_momentum
        self.map: _PortMap = {}

    def conv(self, x: KerasTensor, filters: int, kernel: int, stride: int, prefix: str, pad: str) -> KerasTensor:
        L = self.k.layers
        name = _torch_name(prefix)
        padding = "same"
        if pad == "symmetric" and stride > 1 and kernel > 1:
            x = L.ZeroPadding2D((kernel - 1) // 2, name=name + "_pad")(x)
            padding = "valid"
        x = L.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
        self.map[name] = ("torch-conv", prefix)
        return x

    def dwconv(self, x: KerasTensor, kernel: int, stride: int, prefix: str, pad: str) -> KerasTensor:
        L = self.k.layers
        name = _torch_name(prefix)
        padding = "same"
        if pad == "symmetric" and stride > 1:
            x = L.ZeroPadding2D((kernel - 1) // 2, name=name + "_pad")(x)
            padding = "valid"
        x = L.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
        self.map[name] = ("torch-dw", prefix)
        return x

    def bn(self, x: KerasTensor, prefix: str, relu6: bool) -> KerasTensor:
        L = self.k.layers
        name = _torch_name(prefix)
        x = L.BatchNormalization(epsilon=self.eps, momentum=self.momentum, name=name)(x)
        self.map[name] = ("torch-bn", prefix)
        return L.ReLU(6.0, name=name + "_relu6")(x) if relu6 else x

    def conv_bn_relu6(self, x: KerasTensor, filters: int, kernel: int, stride: int, conv_prefix: str, bn_prefix: str,
                      pad: str) -> KerasTensor:
        """Convolution -> BatchNorm -> ReLU6 (the stem, the head and a block's expansion)."""
        return self.bn(self.conv(x, filters, kernel, stride, conv_prefix, pad), bn_prefix, relu6=True)

    def inverted_residual(self, x: KerasTensor, c_in: int, c_out: int, expand: int, kernel: int, stride: int,
                          prefixes: _BlockPrefixes, pad: str, add_name: str) -> KerasTensor:
        """MobileNetV2-style block: [1x1 expand] -> depthwise -> 1x1 linear project [+ input]."""
        y = x
        if expand != 1:
            y = self.conv_bn_relu6(y, c_in * expand, 1, 1, prefixes.expand_conv, prefixes.expand_bn, pad)
        y = self.dwconv(y, kernel, stride, prefixes.depthwise_conv, pad)
        y = self.bn(y, prefixes.depthwise_bn, relu6=True)
        y = self.conv(y, c_out, 1, 1, prefixes.project_conv, pad)
        y = self.bn(y, prefixes.project_bn, relu6=False)
        return self.k.layers.Add(name=add_name)([x, y]) if stride == 1 and c_in == c_out else y


@dataclass(frozen=True)
class _BlockPrefixes:
    """The source's state-dict prefixes of one inverted-residual block's layers."""

    expand_conv: str
    expand_bn: str
    depthwise_conv: str
    depthwise_bn: str
    project_conv: str
    project_bn: str


def _assign(base: keras.Model, head: keras.layers.Layer | None, port: _PortMap, arrays: _Arrays, source: str,
            required_prefixes: Tuple[str, ...]) -> None:
    """Copy source arrays into the layers named in ``port``; every weight must be used."""
    used: set = set()

    def get(key: str) -> np.ndarray:
        if key not in arrays:
            raise WeightsError(
                f"weights {source!r} have no array {key!r}",
                f"the cached file is not from the expected release: reinstall with "
                f"`weed-train weights install {source}`",
            )
        used.add(key)
        return np.asarray(arrays[key], dtype=np.float32)

    layers = list(base.layers) + ([head] if head is not None else [])
    for layer in layers:
        if layer.name not in port:
            continue
        kind, p = port[layer.name]
        if kind == "torch-conv":
            values = [get(p + ".weight").transpose(2, 3, 1, 0)]
        elif kind == "torch-dw":
            values = [get(p + ".weight").transpose(2, 3, 0, 1)]
        elif kind == "torch-bn":
            values = [get(p + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        elif kind == "torch-dense":
            values = [get(p + ".weight").T, get(p + ".bias")]
        elif kind == "tf-conv" or kind == "tf-dw":
            values = [get(p + ("/weights" if kind == "tf-conv" else "/depthwise_weights"))]
        elif kind == "tf-bn":
            values = [get(p + "/BatchNorm/" + s) for s in ("gamma", "beta", "moving_mean", "moving_variance")]
        elif kind == "tf-dense-from-1x1":
            w = get(p + "/weights")
            values = [w.reshape(w.shape[-2], w.shape[-1]), get(p + "/biases")]
        elif kind == "keras":
            n = len(layer.weights)
            values = [get(f"{p}/{i}") for i in range(n)]
        else:  # pragma: no cover - programming error
            raise AssertionError(kind)
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise WeightsError(
                f"weights {source!r} do not fit layer {layer.name}: shapes {got}, layer wants {expected}",
                "the cached file is not from the expected release: reinstall it",
            )
        layer.set_weights(values)
    missing = [
        k for k in arrays
        if k.startswith(required_prefixes) and not k.startswith("__") and k not in used
        and not k.endswith("num_batches_tracked")
    ]
    if missing:
        raise WeightsError(
            f"{len(missing)} arrays of weights {source!r} found no layer (first: {missing[:3]})",
            "this is a port bug: the Keras model does not mirror the source network",
        )


def _finish(inp: KerasTensor, preprocess: keras.layers.Layer, base: keras.Model, include_top: bool,
            classes: int) -> Tuple[keras.Model, keras.layers.Layer | None]:
    """input -> preprocess -> base -> avg_pool [-> predictions]; returns (model, head layer or None)."""
    keras = _keras()
    L = keras.layers
    x = preprocess(inp)
    x = base(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    head = None
    if include_top:
        head = L.Dense(classes, activation="softmax", name="predictions")
        x = head(x)
    return keras.Model(inp, x, name=base.name + ("_classifier" if include_top else "_features")), head


# --- mobilenet_v2 (torchvision IMAGENET1K_V1) ---------------------------------------

_MNV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenet_v2_torchvision(size: int, include_top: bool, arrays: _Arrays | None, source: str) -> _Port:
    keras = _keras()
    L = keras.layers
    body = _TorchBody(bn_epsilon=1e-5, bn_momentum=0.9)  # torch momentum 0.1
    b_in = keras.Input((size, size, 3), name="preprocessed")
    x = body.conv_bn_relu6(b_in, 32, 3, 2, "features.0.0", "features.0.1", "symmetric")
    channels, idx = 32, 1
    for t, c, n, s in _MNV2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{idx}.conv"
            j = 0 if t == 1 else 1  # torchvision numbers the layers after the (optional) expansion
            prefixes = _BlockPrefixes(f"{p}.0.0", f"{p}.0.1", f"{p}.{j}.0", f"{p}.{j}.1", f"{p}.{j + 1}", f"{p}.{j + 2}")
            x = body.inverted_residual(x, channels, c, t, 3, stride, prefixes, "symmetric", f"features_{idx}_add")
            channels, idx = c, idx + 1
    x = body.conv_bn_relu6(x, 1280, 1, 1, "features.18.0", "features.18.1", "symmetric")
    base = keras.Model(b_in, x, name="mobilenet_v2")

    mean = np.array(IMAGENET_MEAN) * 255.0
    var = (np.array(IMAGENET_STD) * 255.0) ** 2
    preprocess = L.Normalization(mean=mean.tolist(), variance=var.tolist(), name="preprocess")
    inp = keras.Input((size, size, 3), name="rgb")
    model, head = _finish(inp, preprocess, base, include_top, 1000)
    if head is not None:
        body.map["predictions"] = ("torch-dense", "classifier.1")
    if arrays is not None:
        _assign(base, head, body.map, arrays, source, ("features.",) + (("classifier.",) if include_top else ()))
    desc = "x/255, minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225), RGB"
    return model, base, desc


# --- efficientnet_lite0 -------------------------------------------------------------

# (repeats, kernel, stride, expand, in, out)
_LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                 (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


def _efficientnet_lite0(size: int, include_top: bool, arrays: _Arrays | None, source: str) -> _Port:
    keras = _keras()
    L = keras.layers
    body = _TorchBody(bn_epsilon=1e-3, bn_momentum=0.99)  # torch momentum 0.01
    b_in = keras.Input((size, size, 3), name="preprocessed")
    x = body.conv_bn_relu6(b_in, 32, 3, 2, "_conv_stem", "_bn0", "tf-same")
    b = 0
    for repeats, k, s, e, cin, cout in _LITE0_STAGES:
        for i in range(repeats):
            stride, c_in = (s, cin) if i == 0 else (1, cout)
            p = f"_blocks.{b}"
            prefixes = _BlockPrefixes(f"{p}._expand_conv", f"{p}._bn0", f"{p}._depthwise_conv", f"{p}._bn1",
                                      f"{p}._project_conv", f"{p}._bn2")
            x = body.inverted_residual(x, c_in, cout, e, k, stride, prefixes, "tf-same", f"blocks_{b}_add")
            b += 1
    x = body.conv_bn_relu6(x, 1280, 1, 1, "_conv_head", "_bn1", "tf-same")
    base = keras.Model(b_in, x, name="efficientnet_lite0")

    preprocess = L.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")
    inp = keras.Input((size, size, 3), name="rgb")
    model, head = _finish(inp, preprocess, base, include_top, 1000)
    if head is not None:
        body.map["predictions"] = ("torch-dense", "_fc")
    if arrays is not None:
        prefixes = ("_conv_stem.", "_bn0.", "_blocks.", "_conv_head.", "_bn1.") + (("_fc.",) if include_top else ())
        _assign(base, head, body.map, arrays, source, prefixes)
    return model, base, "(x - 127) / 128, RGB"


# --- mobilenet_v1 (stock Keras MobileNet; TF-slim graph weights) ---------------------


def _mobilenet_v1_port_map() -> _PortMap:
    port: _PortMap = {"conv1": ("tf-conv", "MobilenetV1/Conv2d_0"), "conv1_bn": ("tf-bn", "MobilenetV1/Conv2d_0")}
    for i in range(1, 14):
        for kind, keras_name, tf_name in (("tf-dw", "conv_dw", "depthwise"), ("tf-conv", "conv_pw", "pointwise")):
            prefix = f"MobilenetV1/Conv2d_{i}_{tf_name}"
            port[f"{keras_name}_{i}"] = (kind, prefix)
            port[f"{keras_name}_{i}_bn"] = ("tf-bn", prefix)
    return port


def _mobilenet_v1(size: int, include_top: bool, arrays: _Arrays | None, source: str) -> _Port:
    keras = _keras()
    L = keras.layers
    base = keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None, pooling=None
    )
    preprocess = L.Rescaling(1.0 / 128.0, offset=-1.0, name="preprocess")
    inp = keras.Input((size, size, 3), name="rgb")
    model, head = _finish(inp, preprocess, base, include_top, 1001)
    port = _mobilenet_v1_port_map()
    if head is not None:
        port["predictions"] = ("tf-dense-from-1x1", "MobilenetV1/Logits/Conv2d_1c_1x1")
    if arrays is not None:
        prefixes = ("MobilenetV1/Conv2d_",) + (("MobilenetV1/Logits/",) if include_top else ())
        _assign(base, head, port, arrays, source, prefixes)
    desc = "(x - 128) / 128, RGB (as the nudity package feeds its graph); 1001 classes, 0 = background"
    return model, base, desc


# --- xception (stock Keras Xception; weights from the kitchenware .keras base) --------


def _xception(size: int, include_top: bool, arrays: _Arrays | None, source: str) -> _Port:
    keras = _keras()
    L = keras.layers
    if include_top and arrays is not None:
        raise WeightsError(
            f"weights {source!r} have no ImageNet classification head",
            "build xception with include_top=False, or use weights='keras-imagenet' (needs internet)",
        )
    base = keras.applications.Xception(input_shape=(size, size, 3), include_top=False, weights=None, pooling=None)
    preprocess = L.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    inp = keras.Input((size, size, 3), name="rgb")
    model, _ = _finish(inp, preprocess, base, include_top, 1000)
    if arrays is not None:
        _assign(base, None, _keras_port_map(base, arrays, source), arrays, source, ("",))
    return model, base, "x / 127.5 - 1, RGB"


_AUTO_NAME = re.compile(r"^([a-z0-9_]+?)(_\d+)?$")


def _keras_port_map(base: keras.Model, arrays: _Arrays, source: str) -> _PortMap:
    """Pair the base's weighted layers with the source's, in graph order.

    Keras Applications leave some layers unnamed (the residual ``conv2d``/
    ``batch_normalization`` of Xception), so their names depend on what else the
    process has built; named layers must match by name, unnamed ones by kind and order.
    """
    src_layers: List[str] = []
    for key in arrays:
        if key.startswith("__"):
            continue
        layer_name = key.rsplit("/", 1)[0]
        if not src_layers or src_layers[-1] != layer_name:
            src_layers.append(layer_name)
    ours = [layer.name for layer in base.layers if layer.weights]
    if len(ours) != len(src_layers):
        raise WeightsError(
            f"weights {source!r} have {len(src_layers)} layers, the model has {len(ours)}",
            "the cached file is not from the expected release: reinstall it",
        )
    port: _PortMap = {}
    for mine, theirs in zip(ours, src_layers):
        if mine != theirs and _AUTO_NAME.match(mine).group(1) != _AUTO_NAME.match(theirs).group(1):
            raise WeightsError(
                f"weights {source!r}: layer {theirs} does not correspond to {mine}",
                "the cached file is not from the expected release: reinstall it",
            )
        port[mine] = ("keras", theirs)
    return port


# --- keras-imagenet (stock Keras Applications download, needs internet) -------------


def _keras_imagenet(name: str, size: int, include_top: bool) -> _Port:
    keras = _keras()
    L = keras.layers
    base = wsrc.keras_imagenet_base(name, size, include_top)
    preprocess = L.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    inp = keras.Input((size, size, 3), name="rgb")
    if include_top:
        model = keras.Model(inp, base(preprocess(inp)), name=base.name + "_classifier")
    else:
        model, _ = _finish(inp, preprocess, base, False, 0)
    return model, base, "x / 127.5 - 1, RGB (Keras Applications)"


# --- the public builder ------------------------------------------------------------

_BUILDERS = {
    "mobilenet_v2": _mobilenet_v2_torchvision,
    "efficientnet_lite0": _efficientnet_lite0,
    "mobilenet_v1": _mobilenet_v1,
    "xception": _xception,
}


def build_backbone(name: str, input_size: int, weights: str = "default", include_top: bool = False) -> Built:
    """Build backbone ``name`` for square RGB inputs of ``input_size`` pixels.

    ``weights``: ``"default"`` (the backbone's first offline source), a source name from
    ``BACKBONES[name].weight_sources``, ``"none"`` (random init), a path to an ``.npz``
    of source arrays (as written by ``weed-train weights install``) or a path to a
    ``.weights.h5`` saved from ``Built.base`` of the same backbone and size.
    """
    try:
        spec = BACKBONES[name]
    except KeyError:
        raise WeightsError(f"unknown backbone {name!r}", f"choose one of {', '.join(BACKBONES)}") from None
    if int(input_size) < spec.min_input_size:
        raise WeightsError(
            f"input size {input_size} is too small for {name}", f"use at least {spec.min_input_size} pixels"
        )
    size = int(input_size)
    h5_path: Optional[Path] = None
    arrays = None
    source = spec.weight_sources[0] if weights == "default" else str(weights)
    if source == KERAS_IMAGENET and KERAS_IMAGENET in spec.weight_sources:
        model, base, desc = _keras_imagenet(name, size, include_top)
        return Built(model=model, weights_source=KERAS_IMAGENET, preprocessing=desc, base=base)
    if source == "none":
        label = "none"
    elif source in spec.weight_sources:
        arrays = wsrc.load(source)
        label = source
    elif source.endswith(".npz"):
        wsrc.check_weights_file(Path(source))
        arrays = wsrc.read_weights_file(Path(source), wsrc.arrays_from_npz)
        label = f"file:{Path(source).name}"
        source = spec.weight_sources[0]
    elif source.endswith(".weights.h5"):
        h5_path = Path(source)
        wsrc.check_weights_file(h5_path)
        label = f"file:{h5_path.name}"
    else:
        raise WeightsError(
            f"weights {weights!r} are not available for {name}",
            f"use 'default', 'none', one of {', '.join(spec.weight_sources)}, or a path to .npz/.weights.h5",
        )
    model, base, desc = _BUILDERS[name](size, include_top, arrays, source)
    if h5_path is not None:
        wsrc.read_weights_file(h5_path, lambda p: base.load_weights(str(p)))
    return Built(model=model, weights_source=label, preprocessing=desc, base=base)
