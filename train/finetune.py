"""Start a training run from a bundle's trained Keras model (``weed-train train --from-bundle B``).

A bundle written by ``weed-train`` carries the Keras model its TFLite files came from
(``model.keras``, the manifest's ``trained_weights``: file, sha256, format). Fine-tuning
from it:

* :func:`open_start` finds the bundle and checks its Keras model is there and its sha256 is
  the manifest's (``BundleError``, exit 4, saying so: a bundle without ``trained_weights``
  cannot be fine-tuned, retrain it with ``weed-train train`` or fine-tune from one that has it);
* the run takes the bundle's backbone, input size and resize rule, and its labels' roles
  (:meth:`Start.roles`: the defaults a roles file or ``--weeds``/``--crops`` may still change;
  the new classes' roles come from the data set's roles file, ``--roles``);
* :func:`built_from_bundle` loads the model: its feature extractor (preprocessing, backbone,
  pooling) is the run's backbone, trained as ``--mode`` says (``features``: the head only;
  ``finetune``: the top layers too), and :func:`initial_head` is its softmax head grown to the
  run's classes: each class the bundle knows keeps its row (weights and bias), a new class
  starts from zero weights and the lowest old bias (it starts as the least likely class and
  is learnt from its photos). ``logreg`` fits its head from scratch on the embeddings.

Every class of the bundle needs photos in the run (the original data, mixed in with
``--mix-with DIR``), or the new model would forget it: refused otherwise, naming them.
TensorFlow is imported only when the model is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edge.core.errors import BundleError

if TYPE_CHECKING:
    from edge.inference.bundle import Manifest
    from train.backbones import Built

log = logging.getLogger(__name__)

HEAD_LAYER = "probabilities"  # the Dense softmax head of every model train.fit builds


@dataclass(frozen=True)
class Start:
    """A bundle to fine-tune from: its folder, manifest and checked Keras model file."""

    folder: Path
    manifest: Manifest
    keras_path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.manifest.name

    def roles(self) -> tuple[tuple[str, str], ...]:
        """(label, role) of each of the bundle's labels (role: weed, crop or background)."""
        m = self.manifest
        return tuple((lab, "weed" if lab in m.weed_labels else "background" if lab in m.background_labels else "crop")
                     for lab in m.labels)

    def record(self) -> dict:
        """What the new bundle's training record says about where it started."""
        return {"bundle": self.name, "keras_sha256": self.sha256, "labels": list(self.manifest.labels),
                "backbone": self.manifest.backbone, "input_size": self.manifest.input.height}


def open_start(spec: str | Path, use: str = "fine-tuned", flag: str = "--from-bundle") -> Start:
    """The bundle ``spec`` (a folder or a shipped bundle's name) with its Keras model checked (``use``: what the
    refusals say cannot be done with a bundle without one: fine-tuned, averaged)."""
    from edge.core.files import FileRefused
    from edge.inference.bundle import read_manifest, resolve_bundle, sha256_file

    folder = resolve_bundle(spec, flag)
    m = read_manifest(folder)
    tw = m.trained_weights
    if tw is None:
        raise BundleError(
            f"bundle {m.name} ({folder}) carries no trained Keras model (no trained_weights in its manifest): "
            f"it cannot be {use}",
            "use a bundle written by a weed-train that saves model.keras (every bundle it writes now, and the "
            "shipped default plant-seedlings-mnv2)"
            + (", or train from the pretrained backbone without --from-bundle" if use == "fine-tuned" else ""))
    path = folder / tw.file
    try:
        digest = sha256_file(path)
    except FileRefused as e:
        raise BundleError(f"bundle {m.name}: its Keras model {path} {e}",
                          "copy the whole bundle folder again (model.keras is part of it)") from None
    if tw.sha256 and digest != tw.sha256:
        raise BundleError(f"bundle {m.name}: {tw.file} has sha256 {digest[:12]}..., the manifest says "
                          f"{tw.sha256[:12]}...: the file was changed or damaged",
                          "copy the bundle folder again from where it was made")
    if not m.backbone or m.input.height != m.input.width:
        raise BundleError(f"bundle {m.name} records no backbone or a non-square input: it cannot be {use}",
                          "use only bundles written by weed-train train")
    return Start(folder, m, path, digest)


def check_classes(start: Start, labels: Sequence[str]) -> None:
    """Every class of the bundle has photos in the run's data (else the new model forgets it)."""
    missing = [lab for lab in start.manifest.labels if lab not in labels]
    if missing:
        raise BundleError(
            f"the classes {missing} of bundle {start.name} have no photos in the data given",
            "mix in the photos the bundle was trained on with --mix-with DIR (see the bundle's training command), "
            "or label some of each")


def built_from_bundle(start: Start) -> tuple[Built, tuple[str, ...], np.ndarray, np.ndarray]:
    """The bundle's feature extractor as a :class:`~train.backbones.Built`, its labels and head (kernel, bias)."""
    import keras

    from train.backbones import Built

    model = keras.saving.load_model(start.keras_path, compile=False, safe_mode=True)
    try:
        head = model.get_layer(HEAD_LAYER)
    except ValueError:
        raise BundleError(f"bundle {start.name}: its Keras model has no {HEAD_LAYER!r} layer",
                          "fine-tune only from bundles written by weed-train train") from None
    features = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    inner = [layer for layer in features[0].layers if isinstance(layer, keras.Model)] if len(features) == 1 else []
    if len(inner) != 1:
        raise BundleError(f"bundle {start.name}: its Keras model is not input -> features -> head",
                          "fine-tune only from bundles written by weed-train train")
    kernel, bias = head.get_weights()
    if kernel.shape[1] != len(start.manifest.labels):
        raise BundleError(f"bundle {start.name}: its Keras head has {kernel.shape[1]} classes, the manifest "
                          f"{len(start.manifest.labels)}", "copy the bundle folder again from where it was made")
    m = start.manifest
    built = Built(model=features[0], weights_source=m.weights_source or "unknown",
                  preprocessing=m.preprocessing or "", base=inner[0])
    return built, tuple(m.labels), kernel, bias


def initial_head(old_labels: Sequence[str], kernel: np.ndarray, bias: np.ndarray,
                 labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The head for ``labels``: the rows of the classes ``old_labels`` has copied, new ones zero weights and the
    lowest old bias."""
    k = np.zeros((kernel.shape[0], len(labels)), np.float32)
    b = np.full((len(labels),), float(np.min(bias)) if len(bias) else 0.0, np.float32)
    old = {lab: i for i, lab in enumerate(old_labels)}
    for j, lab in enumerate(labels):
        if lab in old:
            k[:, j] = kernel[:, old[lab]]
            b[j] = bias[old[lab]]
    return k, b
