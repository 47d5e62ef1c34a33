"""Training losses: the species cross-entropy, optionally plus a cross-entropy on the groups the decision reads.

The spray rule reads only the *group* masses (weed / crop / background: ``edge.decide.rule``); plain categorical
cross-entropy charges a black-grass photo called loose silky-bent (two weeds: the sprayer does the right thing) as
much as one called common wheat (a weed left standing). ``GroupedCrossentropy`` adds ``weight`` x the
cross-entropy of the summed group probabilities, so confusions across groups cost more than within a group.
This module imports Keras at the top: ``train.fit`` imports it lazily, when a model is compiled.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

ROLE_COLUMNS = (1, 0, -1)  # group columns of the membership matrix: weed, crop, background (train.evaluate.role_vector)


def membership(roles: Sequence[int]) -> np.ndarray:
    """(classes, 3) float32: row i is class i's group one-hot, columns weed, crop, background."""
    r = np.asarray(roles)
    unknown = sorted(set(r.tolist()) - set(ROLE_COLUMNS))
    if unknown:
        raise ValueError(f"roles must be 1 (weed), 0 (crop) or -1 (background), got {unknown}")
    return np.stack([(r == c) for c in ROLE_COLUMNS], axis=1).astype(np.float32)


@keras.saving.register_keras_serializable(package="weed_detector")
class GroupedCrossentropy(keras.losses.Loss):
    """Species cross-entropy (with ``label_smoothing``) + ``weight`` x the groups' cross-entropy (no smoothing).

    ``groups`` is :func:`membership`'s matrix (as nested lists in the saved config). Sample weights (Keras'
    ``class_weight``) scale both terms alike."""

    def __init__(self, groups, weight: float = 1.0, label_smoothing: float = 0.0,
                 name: str = "grouped_crossentropy", reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.groups = np.asarray(groups, np.float32)
        if self.groups.ndim != 2 or not np.all(self.groups.sum(axis=1) == 1):
            raise ValueError(f"groups must be a (classes, groups) one-hot matrix, got shape {self.groups.shape}")
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.weight = float(weight)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        m = ops.convert_to_tensor(self.groups, dtype=y_pred.dtype)
        y_true = ops.cast(y_true, y_pred.dtype)
        species = keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing)
        group = keras.losses.categorical_crossentropy(ops.matmul(y_true, m), ops.matmul(y_pred, m))
        return species + self.weight * group

    def get_config(self) -> dict:
        return {**super().get_config(), "groups": self.groups.tolist(), "weight": self.weight,
                "label_smoothing": self.label_smoothing}
