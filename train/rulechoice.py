"""The spray rule chosen on validation photos *and their perturbed copies*: a threshold and a crop veto.

The rule (``edge.decide.rule.SprayRule``) sprays a view iff its weed mass >= ``threshold`` and,
with a ``crop_veto``, its crop mass < ``crop_veto``. :func:`choose_rule` tries every pair of
:data:`THRESHOLDS` x :data:`VETOES` on every row of the validation rows (``clean`` and each
camera condition of ``train.perturb.SUITE``, as ``train.robustness.suite_probs`` makes them)
and keeps the pairs whose **crop sprayed** meets the hard limits — at most ``clean`` (2 %) on
the clean row and at most ``perturbed`` (5 %) on every perturbed row. Among those it takes
the one with the lowest **cost**: the mean over the rows of ``miss_weight`` x weed miss +
background fired (a weed left, or herbicide on bare ground), each row weighing the same
(with ``max_weed_miss``, only the pairs whose clean weed miss is at most that, when any
such pair meets the crop limits too); then the one with
the smaller worst-row crop sprayed; then no veto before a veto and a higher veto before a
lower one (the least crop protection that meets the limits); among thresholds still equal,
the middle of the longest run of neighbouring ones (most margin on both sides, as
``train.evaluate.choose_threshold`` does).

When no pair meets the limits, the pair that exceeds them least (the largest excess over
its limit on any row) is taken, then the lowest cost, and the choice says so
(``met=False``). Every rate here is a validation rate: test photos never enter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from train import evaluate as ev
from train.perturb import CLEAN

if TYPE_CHECKING:
    from edge.inference.bundle import RuleSpec
    from train.data import Roles

THRESHOLDS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
VETOES: tuple[float | None, ...] = (None, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
RATES = ("weed_miss", "crop_sprayed", "background_fired")
LIMIT_TOLERANCE = 1e-12  # a rate this close to its limit meets it (float sums of counts)


@dataclass(frozen=True)
class RuleLimits:
    """Crop sprayed limits (fractions) the rule must meet on validation: clean, and on every perturbed row."""

    clean: float = 0.02
    perturbed: float = 0.05
    max_weed_miss: float | None = None  # also: clean weed miss at most this, when a pair meets it and the crop limits
    miss_weight: float = 1.0  # weed miss against background fired in the cost

    def of(self, row: str) -> float:
        return self.clean if row == CLEAN.name else self.perturbed

    def words(self) -> str:
        return f"crop sprayed <= {100 * self.clean:g} % clean and <= {100 * self.perturbed:g} % on every perturbed row"

    def miss_ok(self, c: Candidate) -> bool:
        miss = c.rates[CLEAN.name]["weed_miss"] or 0.0
        return self.max_weed_miss is None or miss <= self.max_weed_miss + LIMIT_TOLERANCE


@dataclass(frozen=True)
class Candidate:
    """One (threshold, crop veto) pair scored on every validation row."""

    threshold: float
    crop_veto: float | None
    rates: Mapping[str, Mapping[str, float | None]]  # row -> weed_miss / crop_sprayed / background_fired
    excess: float  # the largest crop sprayed over its limit on any row (<= 0: the limits are met)
    cost: float  # mean over the rows of weed miss + background fired

    @property
    def feasible(self) -> bool:
        return self.excess <= LIMIT_TOLERANCE

    def over(self, limits: RuleLimits) -> dict[str, float]:
        """The rows whose crop sprayed rate is over ``limits`` (the limits it was scored under), with the rate."""
        return {n: r["crop_sprayed"] for n, r in self.rates.items()
                if (r["crop_sprayed"] or 0.0) - limits.of(n) > LIMIT_TOLERANCE}

    def worst_crop(self) -> float:
        return max((r["crop_sprayed"] or 0.0) for r in self.rates.values())

    def key(self, met: bool) -> tuple:
        """Lower is better; equal keys differ only in the threshold."""
        veto_order = (0, 0.0) if self.crop_veto is None else (1, -self.crop_veto)
        return ((0.0 if met else round(self.excess, 12)), round(self.cost, 12), round(self.worst_crop(), 12),
                veto_order)


@dataclass(frozen=True)
class RuleChoice:
    threshold: float
    crop_veto: float | None
    met: bool  # whether the chosen pair meets the limits on every row
    limits: RuleLimits
    chosen: Candidate
    n_candidates: int
    n_feasible: int
    rows: tuple[str, ...] = field(default=())

    def words(self) -> str:
        """How the rule was chosen, in one sentence (the manifest's ``rule.notes``)."""
        veto = "no crop veto" if self.crop_veto is None else f"crop veto {self.crop_veto:g}"
        weight = "" if self.limits.miss_weight == 1.0 else f"{self.limits.miss_weight:g} x "
        how = (f"threshold {self.threshold:g} and {veto}: lowest mean {weight}weed miss + background fired over "
               f"{len(self.rows)} validation rows (clean and {len(self.rows) - 1} camera conditions)")
        if self.met:
            miss = ""
            if self.limits.max_weed_miss is not None:
                kept = "and" if self.limits.miss_ok(self.chosen) else "(none also with"
                miss = f" {kept} clean weed miss <= {100 * self.limits.max_weed_miss:g} %" + ("" if kept == "and" else ")")
            return f"{how}, among the {self.n_feasible} of {self.n_candidates} pairs with {self.limits.words()}{miss}"
        return (f"{how}; NO pair met {self.limits.words()}: the one exceeding them least was taken "
                f"(worst crop sprayed {100 * self.chosen.worst_crop():.1f} %)")

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "crop_veto": self.crop_veto, "met": self.met,
                "limits": {"clean": self.limits.clean, "perturbed": self.limits.perturbed},
                "n_candidates": self.n_candidates, "n_feasible": self.n_feasible, "cost": self.chosen.cost,
                "rows": {k: dict(v) for k, v in self.chosen.rates.items()}, "how": self.words()}


def candidate(rows: Mapping[str, np.ndarray], y: np.ndarray, labels: Sequence[str], roles: Roles,
              threshold: float, crop_veto: float | None, limits: RuleLimits) -> Candidate:
    """``threshold`` and ``crop_veto`` scored on every row (rates by ``train.evaluate.sprayer_rates``)."""
    rates: dict[str, dict[str, float | None]] = {}
    for name, probs in rows.items():
        r = ev.sprayer_rates(probs, y, labels, roles, threshold, crop_veto)
        rates[name] = {k: (r[k].value if r[k].n else None) for k in RATES}
    excess = max((rates[n]["crop_sprayed"] or 0.0) - limits.of(n) for n in rates)
    cost = float(np.mean([limits.miss_weight * (r["weed_miss"] or 0.0) + (r["background_fired"] or 0.0)
                          for r in rates.values()]))
    return Candidate(float(threshold), crop_veto, rates, float(excess), cost)


def choose_rule(rows: Mapping[str, np.ndarray], y: np.ndarray, labels: Sequence[str], roles: Roles,
                limits: RuleLimits = RuleLimits(), thresholds: Sequence[float] = THRESHOLDS,
                vetoes: Sequence[float | None] = VETOES) -> RuleChoice:
    """The rule chosen on the validation ``rows`` (row name -> probabilities of the same photos ``y``)."""
    if CLEAN.name not in rows:
        raise ValueError(f"the validation rows need a {CLEAN.name!r} row (they have {sorted(rows)})")
    if not len(y):
        raise ValueError("no validation photos to choose the rule on")
    cands = [candidate(rows, y, labels, roles, t, v, limits) for v in vetoes for t in thresholds]
    feasible = [c for c in cands if c.feasible]
    feasible = [c for c in feasible if limits.miss_ok(c)] or feasible
    pool = feasible or cands
    best_key = min(c.key(bool(feasible)) for c in pool)
    best = _middle_of_longest_run([c for c in pool if c.key(bool(feasible)) == best_key], list(thresholds))
    return RuleChoice(best.threshold, best.crop_veto, bool(feasible), limits, best, len(cands), len(feasible),
                      tuple(rows))


def _middle_of_longest_run(tied: list[Candidate], grid: list[float]) -> Candidate:
    """Of candidates equal but for their threshold, the one in the middle of the longest run of grid neighbours."""
    tied = sorted(tied, key=lambda c: grid.index(c.threshold))
    runs, start = [], 0
    for k in range(1, len(tied) + 1):
        if k == len(tied) or grid.index(tied[k].threshold) != grid.index(tied[k - 1].threshold) + 1:
            runs.append((start, k - 1))
            start = k
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    return tied[(lo + hi) // 2]


def rule_spec(choice: RuleChoice, refit: bool) -> RuleSpec:
    """The manifest's rule section for ``choice``."""
    from edge.inference.bundle import RuleSpec

    split = "; the validation probabilities are the split model's (before the refit on train+val)" if refit else ""
    return RuleSpec(threshold=choice.threshold, crop_veto=choice.crop_veto, chosen_on="validation+perturbed",
                    notes=choice.words() + split)


def read_rows(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """``validation_rows.npz`` of a bundle (``train.export.write_validation_rows``): labels, rows, their source."""
    with np.load(path, allow_pickle=False) as z:
        rows = {k[len("row_"):]: z[k] for k in z.files if k.startswith("row_")}
        return z["y"].astype(np.int64), rows, str(z["source"])
