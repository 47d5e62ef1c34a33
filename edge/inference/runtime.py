"""Which TFLite interpreter runs: ai_edge_litert -> tflite_runtime -> tensorflow.lite.

Each candidate is imported only when the ones before it are missing or fail to create
an interpreter (tflite-runtime 2.14 imports under numpy 2 but fails at creation), so
``import edge`` never loads TensorFlow. ``WEED_DETECTOR_RUNTIME`` forces one candidate.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from edge.core.errors import BundleError, RuntimeMissingError
from edge.inference.bundle import REPAIR

log = logging.getLogger(__name__)

ENV_RUNTIME = "WEED_DETECTOR_RUNTIME"

# (name shown to users, module holding Interpreter, distribution for the version)
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("ai_edge_litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow", "tensorflow"),
)


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    delegate: str

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.delegate})"


def _version(dist: str) -> str:
    for d in (dist, dist + "-cpu") if dist == "tensorflow" else (dist,):
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _interpreter_class(module_name: str) -> Callable[..., Any]:
    mod = importlib.import_module(module_name)
    if module_name == "tensorflow":
        return mod.lite.Interpreter
    return mod.Interpreter


def _candidates() -> tuple[tuple[str, str, str], ...]:
    forced = os.environ.get(ENV_RUNTIME, "").strip()
    if not forced:
        return CANDIDATES
    chosen = tuple(c for c in CANDIDATES if c[0] == forced)
    if not chosen:
        names = ", ".join(c[0] for c in CANDIDATES)
        raise RuntimeMissingError(f"{ENV_RUNTIME}={forced} is not a known runtime", f"use one of: {names}, or unset it")
    return chosen


def make_interpreter(model_path: str, num_threads: int) -> tuple[Any, RuntimeInfo]:
    """Create and allocate an interpreter with the first runtime that works."""
    failures: list[str] = []
    for name, module_name, dist in _candidates():
        try:
            cls = _interpreter_class(module_name)
        except ImportError as e:
            failures.append(f"{name}: not installed ({e.__class__.__name__})")
            continue
        try:
            interp = cls(model_path=model_path, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            text = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            if "model" in text.lower() or "flatbuffer" in text.lower() or "identifier" in text.lower():
                raise BundleError(
                    f"{model_path} is not a valid TFLite model ({name}: {text})",
                    REPAIR,
                ) from None
            failures.append(f"{name}: {text}")
            continue
        except Exception as e:  # e.g. tflite-runtime 2.14 with numpy 2 (AttributeError/ImportError inside)
            failures.append(f"{name}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        # XNNPACK is the default CPU delegate of LiteRT / TFLite >= 2.x for float and int8.
        info = RuntimeInfo(name=name, version=_version(dist), delegate="XNNPACK (default CPU delegate)")
        if failures:
            log.warning("TFLite runtime fallback: %s; using %s", "; ".join(failures), info)
        return interp, info
    raise RuntimeMissingError(
        "no TFLite runtime could run the model (" + "; ".join(failures) + ")",
        "install one: `pip install ai-edge-litert` (recommended), or tflite-runtime with numpy<2",
    )


def runtime_info() -> RuntimeInfo | None:
    """The runtime that would be used, without loading a model (None if none imports)."""
    for name, module_name, dist in _candidates():
        if module_name == "tensorflow":
            # Importing TensorFlow only to print a version is too slow; report it by metadata.
            if importlib.util.find_spec("tensorflow") is None:
                continue
            return RuntimeInfo(name, _version(dist), "XNNPACK (default CPU delegate)")
        try:
            _interpreter_class(module_name)
        except ImportError:
            continue
        return RuntimeInfo(name, _version(dist), "XNNPACK (default CPU delegate)")
    return None


class BatchUnsupported(Exception):
    """The model cannot run a batch of N images in one invoke (the caller falls back to one by one)."""


def batch_interpreter(like: Any, model_path: str, num_threads: int, n: int) -> Any:
    """A second interpreter of ``like``'s runtime whose input batch is resized to ``n``.

    Bundles are exported with a batch of 1; most convolutional models still run a batch of
    N after ``resize_tensor_input`` + ``allocate_tensors``. A model with a batch-dependent
    op (e.g. a RESHAPE to a fixed ``[1, ...]``) fails here or gives another output shape:
    ``BatchUnsupported`` says which.
    """
    interp = type(like)(model_path=model_path, num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    shape = [n, *(int(x) for x in inp["shape"][1:])]
    try:
        interp.resize_tensor_input(inp["index"], shape)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise BatchUnsupported(f"resizing the input to a batch of {n} failed: {text}") from None
    got = [int(x) for x in interp.get_input_details()[0]["shape"]]
    if got != shape:
        raise BatchUnsupported(f"the input is {got} after resizing it to {shape}")
    return interp
