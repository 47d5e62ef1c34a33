"""Tiny bundles for the training tests, written with train.export's own pieces, float32 only (the int8
conversion is the slow part of an export; the bundles made *from* these go through the whole export path)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_float_bundle(t, folder: Path, argv: Sequence[str]) -> Path:
    """``t`` (a :class:`train.runs.Trained`) as a loadable float32 bundle with its Keras model, recording ``argv``
    (a ``weed-train train`` command line without the program name) as its training command."""
    from edge.inference.bundle import RuleSpec, load_bundle, write_bundle
    from train.export import (bundle_manifest, convert, manifest_fields, training_record, write_tflite,
                              write_trained_weights)
    from train.runs import ExportConfig

    ec = ExportConfig(out=folder.parent, name=folder.name)
    tflite = write_tflite(convert(t.result.model, "float32"), folder.parent / f"{folder.name}_float32.tflite")
    fields = manifest_fields(t, ec, training_record(t, 0, list(argv)))
    manifest = bundle_manifest(tflite, "float32", t.fc.input_size, t.dc.resize, **fields,
                               trained_weights=write_trained_weights(folder, t),
                               rule=RuleSpec(threshold=0.5, chosen_on="hand-set"), metrics={})
    write_bundle(folder, manifest, tflite)
    load_bundle(folder)  # a bundle the edge loads
    return folder
