"""The spray rule: one view's class probabilities -> a weed log-odds and a crop-veto flag.

A *view* is whatever the model classified once: a whole frame, or one tile of it. The
bundle's rule (its manifest's ``rule`` section, overridden at run time by
``[decision] threshold`` / ``crop_veto``) turns a view's probabilities into evidence:

- ``weed_mass`` = probability mass on the weed labels (the weed score of every log line);
- ``weed_log_odds`` = ``logit(clip(weed_mass, EPS, 1 - EPS))``, finite for every view
  (``EPS`` = 1e-6, so at most +-13.8);
- ``crop_mass`` = probability mass on the crop labels;
- ``vetoed`` = a veto is set and ``crop_mass >= crop_veto``.

**One view** fires iff ``weed_log_odds >= logit(threshold)`` and it is not vetoed. The
comparison is made on the probability side, ``weed_mass >= threshold``: logit is strictly
increasing on (0, 1), so it is the same rule, and it is exact where the two are equal (no
rounding of the logarithms, no clipping at 0 and 1); without a veto this is the rule
``edge`` used before the rule existed (``weed_score >= threshold``).

**Several views of one place** (a ground cell seen by several frames) spray iff the MEAN weed
log-odds over the views >= ``logit(clip(threshold, EPS, 1 - EPS))`` and no view vetoed it
(``combine``); for one view this is ``fires``. Averaging log-odds weighs a confident view
more than a hesitant one and lets two hesitant views agree; a threshold within ``EPS`` of 0
or 1 saturates it (every view's log-odds is clipped there too).

The same functions score views in ``edge`` (the deciders) and in ``train`` (evaluation, the
choice of the rule on validation). Label indices are resolved once, when the rule is built;
``view`` takes one probability vector or a batch (rows = views) and returns floats or arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Sequence, Union

import numpy as np

from edge.core.errors import ConfigError

if TYPE_CHECKING:  # the manifest is read, never built, here (decide imports no stage at run time)
    from edge.inference.bundle import Manifest

EPS = 1e-6  # weed mass is clipped to [EPS, 1 - EPS] before the logit: log-odds in +-13.8
NO_VETO = "none"  # [decision] crop_veto = "none" / --no-crop-veto: no veto, whatever the bundle says

Number = Union[float, np.ndarray]


def log_odds(p: Number) -> Number:
    """``logit(clip(p, EPS, 1 - EPS))``: a float for a float, an array for an array (the same numbers)."""
    if isinstance(p, (float, int)):  # one view: no array is made (numpy's log, as for an array)
        q = min(max(float(p), EPS), 1.0 - EPS)
        return float(np.log(q) - np.log1p(-q))
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    out = np.log(q) - np.log1p(-q)
    return float(out) if out.ndim == 0 else out


def _mass(p: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The sum of ``columns`` per view. The selected columns are copied C-contiguous so that each row
    is summed as numpy sums one vector (pairwise): a batch gives, bit for bit, its views one by one."""
    return np.ascontiguousarray(p[..., columns]).sum(axis=-1)


@dataclass(frozen=True)
class ViewEvidence:
    """What the rule reads off one view (floats) or a batch of views (arrays, one entry per view)."""

    weed_log_odds: Number
    vetoed: Union[bool, np.ndarray]
    weed_mass: Number
    crop_mass: Number

    def __len__(self) -> int:
        return int(np.size(self.weed_mass))


def as_batch(views: ViewEvidence | Sequence[ViewEvidence]) -> ViewEvidence:
    """A sequence of single views as one batch (arrays, one entry per view); a batch as it is."""
    if isinstance(views, ViewEvidence):
        return views
    return ViewEvidence(np.array([v.weed_log_odds for v in views], np.float64),
                        np.array([v.vetoed for v in views], bool),
                        np.array([v.weed_mass for v in views], np.float64),
                        np.array([v.crop_mass for v in views], np.float64))


def agreed_weed(views: ViewEvidence | Sequence[ViewEvidence]) -> float:
    """The weed probability the views of one place say together: one view, its weed mass; several, the
    logistic of their mean weed log-odds (what ``SprayRule.combine`` compares with the threshold); none, 0.
    For the logs ("why was this cell not sprayed"), never for the decision itself."""
    batch = as_batch(views)
    n = len(batch)
    if n == 0:
        return 0.0
    if n == 1:
        return float(np.asarray(batch.weed_mass, np.float64).reshape(-1)[0])
    return float(1.0 / (1.0 + np.exp(-np.mean(np.asarray(batch.weed_log_odds, np.float64)))))


@dataclass(frozen=True)
class SprayRule:
    """The decision rule in force: ``threshold`` on the weed mass and an optional ``crop_veto``.

    ``labels`` are the model's outputs in order; ``weed_labels`` / ``crop_labels`` which of them
    count as weed / crop (disjoint). Built by ``from_manifest`` from a bundle and the run-time
    overrides, or directly (tests, training).
    """

    threshold: float
    crop_veto: float | None
    labels: tuple[str, ...]
    weed_labels: tuple[str, ...]
    crop_labels: tuple[str, ...] = ()
    threshold_log_odds: float = field(init=False)
    _weed: np.ndarray = field(init=False, repr=False, compare=False)
    _crop: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        unknown = [w for w in (*self.weed_labels, *self.crop_labels) if w not in labels]
        if unknown:
            raise ConfigError(f"decision.weed_labels names {unknown}, which the model does not have",
                              f"use labels from the model: {', '.join(labels)}")
        if not self.weed_labels:
            raise ConfigError("decision.weed_labels is empty: nothing would ever be sprayed",
                              "list at least one weed label, or leave it out to use the model's")
        both = sorted(set(self.weed_labels) & set(self.crop_labels))
        if both:
            raise ConfigError(f"labels {both} count as weed and as crop", "give each label one role")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"decision.threshold {self.threshold} is outside 0..1", "use a probability, e.g. 0.5")
        if self.crop_veto is not None:
            if not (isinstance(self.crop_veto, (int, float)) and 0.0 <= self.crop_veto <= 1.0):
                raise ConfigError(f"decision.crop_veto {self.crop_veto} is outside 0..1",
                                  'use a crop probability, e.g. 0.8, or "none"')
            if not self.crop_labels:
                raise ConfigError("decision.crop_veto is set but no label counts as a crop (the bundle has no "
                                  "crop_labels, or decision.weed_labels took them all)",
                                  'leave crop_veto out or set it to "none" (--no-crop-veto)')
        put = object.__setattr__  # frozen: the derived fields are set once, here
        put(self, "labels", labels)
        put(self, "weed_labels", tuple(self.weed_labels))
        put(self, "crop_labels", tuple(self.crop_labels))
        put(self, "threshold", float(self.threshold))
        put(self, "crop_veto", None if self.crop_veto is None else float(self.crop_veto))
        # ascending label order: the same elements summed in the same order as a boolean mask
        put(self, "_weed", np.array(sorted(labels.index(w) for w in self.weed_labels), dtype=np.intp))
        put(self, "_crop", np.array(sorted(labels.index(c) for c in self.crop_labels), dtype=np.intp))
        put(self, "threshold_log_odds", log_odds(self.threshold))

    @classmethod
    def from_manifest(cls, manifest: "Manifest", *, threshold: float | None = None,
                      crop_veto: float | Literal["none"] | None = None,
                      weed_labels: Sequence[str] | None = None) -> "SprayRule":
        """The bundle's rule with the run-time overrides (each None = the bundle's; ``crop_veto="none"``:
        no veto). Labels moved into ``weed_labels`` (maize volunteers in beet) stop counting as crops."""
        weeds = tuple(manifest.weed_labels if weed_labels is None else weed_labels)
        veto = manifest.rule.crop_veto if crop_veto is None else (None if crop_veto == NO_VETO else crop_veto)
        return cls(manifest.rule.threshold if threshold is None else threshold, veto, labels=tuple(manifest.labels),
                   weed_labels=weeds, crop_labels=tuple(c for c in manifest.crop_labels if c not in weeds))

    def weed_mass(self, probs: np.ndarray) -> Number:
        """Probability mass on the weed labels of one view (a float) or of each row of a batch."""
        s = _mass(np.asarray(probs, dtype=np.float64), self._weed)
        return float(s) if s.ndim == 0 else s

    def view(self, probs: np.ndarray) -> ViewEvidence:
        """The evidence of one view (a probability vector) or of a batch (one row per view)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 1:  # one view: plain floats (a 1-d selection is contiguous: summed as _mass sums a row)
            weed, crop = float(p[self._weed].sum()), float(p[self._crop].sum())
            return ViewEvidence(log_odds(weed), self.crop_veto is not None and crop >= self.crop_veto, weed, crop)
        weed, crop = _mass(p, self._weed), _mass(p, self._crop)
        vetoed = np.zeros(weed.shape, bool) if self.crop_veto is None else crop >= self.crop_veto
        return ViewEvidence(log_odds(weed), vetoed, weed, crop)

    def fires(self, evidence: ViewEvidence) -> Union[bool, np.ndarray]:
        """Whether a view sprays on its own (per entry for a batch): weed log-odds at the threshold's, not vetoed."""
        if isinstance(evidence.weed_mass, float):  # one view
            return evidence.weed_mass >= self.threshold and not evidence.vetoed
        hit = np.logical_and(np.asarray(evidence.weed_mass) >= self.threshold, np.logical_not(evidence.vetoed))
        return bool(hit) if hit.ndim == 0 else hit

    def combine(self, views: ViewEvidence | Sequence[ViewEvidence]) -> bool:
        """Whether a place seen in several views sprays: mean weed log-odds >= logit(threshold), no view vetoed.

        ``views`` is a batch (``view`` of a matrix) or a sequence of single views; no view: False."""
        views = as_batch(views)
        n = len(views)
        if n == 0:
            return False
        if n == 1:  # the mean of one view is that view: decided exactly, as fires() does
            return bool(np.all(self.fires(views)))
        if np.any(views.vetoed):
            return False
        return bool(np.mean(np.asarray(views.weed_log_odds, np.float64)) >= self.threshold_log_odds)

    def describe(self) -> str:
        """The rule in one line, for the start-up log and ``--validate-config``."""
        veto = "no crop veto" if self.crop_veto is None else \
            f"crop veto at crop probability >= {self.crop_veto:.2f} ({', '.join(self.crop_labels)})"
        return (f"weed probability >= {self.threshold:.2f} (log-odds >= {self.threshold_log_odds:+.2f}), {veto}; "
                f"weeds: {', '.join(self.weed_labels)}")
