"""The spray rule (edge.decide.rule): per-view evidence, one view, several views; the deciders that use it."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.errors import ConfigError
from edge.decide.decider import Decider
from edge.decide.rule import EPS, SprayRule, ViewEvidence, log_odds
from edge.inference.bundle import InputSpec, Manifest, RuleSpec

LABELS = ("soil", "maize", "charlock", "black_grass")
WEEDS, CROPS = ("charlock", "black_grass"), ("maize",)
PROPERTY = settings(max_examples=300, deadline=None)


def rule(threshold=0.5, veto=None, weeds=WEEDS, crops=CROPS):
    return SprayRule(threshold, veto, labels=LABELS, weed_labels=weeds, crop_labels=crops)


def p(soil, maize, charlock, grass):
    return np.array([soil, maize, charlock, grass], np.float64)


def logit(x):
    return math.log(x / (1 - x))


# -- one view ------------------------------------------------------------------------------
BELOW = np.nextafter(0.5, 0.0)  # the largest weed mass under 0.5


@pytest.mark.parametrize("probs, threshold, veto, fires, vetoed, weed, crop", [
    (p(0.5, 0.0, 0.25, 0.25), 0.5, None, True, False, 0.5, 0.0),  # exactly at the threshold: fires
    (p(0.5, 0.0, BELOW, 0.0), 0.5, None, False, False, BELOW, 0.0),  # one ulp under: does not
    (p(0.1, 0.0, 0.9, 0.0), 0.5, None, True, False, 0.9, 0.0),
    (p(0.1, 0.9, 0.0, 0.0), 0.5, None, False, False, 0.0, 0.9),
    (p(1.0, 0.0, 0.0, 0.0), 0.0, None, True, False, 0.0, 0.0),  # threshold 0: everything fires
    (p(0.0, 0.0, 1.0, 0.0), 1.0, None, True, False, 1.0, 0.0),  # threshold 1: only a mass of exactly 1
    (p(1e-7, 0.0, 1 - 1e-7, 0.0), 1.0, None, False, False, 1 - 1e-7, 0.0),  # (clipped alike, yet under 1)
    (p(0.0, 0.35, 0.6, 0.05), 0.5, 0.35, False, True, 0.65, 0.35),  # crop mass exactly at the veto: vetoed
    (p(0.0, 0.35, 0.6, 0.05), 0.5, 0.36, True, False, 0.65, 0.35),  # just under it: fires
    (p(0.0, 0.35, 0.6, 0.05), 0.5, None, True, False, 0.65, 0.35),  # no veto
    (p(1.0, 0.0, 0.0, 0.0), 0.5, 0.0, False, True, 0.0, 0.0),  # veto 0: every view is vetoed
    (p(0.0, 0.0, 1.0, 0.0), 0.0, 0.0, False, True, 1.0, 0.0),  # ... even a certain weed
    (p(0.0, 0.999, 0.001, 0.0), 0.0, 1.0, True, False, 0.001, 0.999),  # veto 1: only a crop mass of 1
])
def test_one_view(probs, threshold, veto, fires, vetoed, weed, crop):
    r = rule(threshold, veto)
    ev = r.view(probs)
    assert (r.fires(ev), ev.vetoed) == (fires, vetoed)
    assert ev.weed_mass == pytest.approx(weed, abs=0) and ev.crop_mass == pytest.approx(crop, abs=1e-15)
    assert ev.weed_log_odds == log_odds(ev.weed_mass)
    assert r.combine([ev]) == fires  # one view of a cell: the same answer


@pytest.mark.parametrize("mass, expected", [
    (0.5, 0.0),
    (0.9, logit(0.9)),
    (0.1, -logit(0.9)),
    (0.0, logit(EPS)),  # clipped: finite
    (1.0, -logit(EPS)),
    (1e-9, logit(EPS)),
    (1 - 1e-9, -logit(EPS)),
    (EPS, logit(EPS)),
])
def test_log_odds_is_the_clipped_logit(mass, expected):
    assert log_odds(mass) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert math.isfinite(log_odds(mass)) and abs(log_odds(mass)) <= 13.82


def test_log_odds_of_an_array_is_elementwise():
    xs = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    assert np.array_equal(log_odds(xs), [log_odds(float(x)) for x in xs])


def test_threshold_log_odds():
    assert rule(0.5).threshold_log_odds == 0.0
    assert rule(0.4).threshold_log_odds == pytest.approx(logit(0.4))
    assert rule(0.0).threshold_log_odds == pytest.approx(logit(EPS))


def _probability_rows(n_labels: int):
    return st.lists(st.floats(0, 1, allow_nan=False, width=32), min_size=n_labels, max_size=n_labels).map(
        lambda xs: np.array(xs, np.float32) / np.float32(max(sum(xs), 1e-6)))


@PROPERTY
@given(st.integers(2, 16).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(_probability_rows(k), min_size=1, max_size=12),
    st.sets(st.integers(0, k - 1), min_size=1), st.floats(0, 1), st.none() | st.floats(0, 1))))
def test_a_batch_is_the_views_one_by_one(case):
    """Vectorised over rows: every number and flag equal (bit for bit) to the view of each row alone."""
    k, rows, weed_idx, threshold, veto = case
    labels = tuple(f"l{i}" for i in range(k))
    weeds = tuple(labels[i] for i in sorted(weed_idx))
    crops = tuple(lbl for lbl in labels if lbl not in weeds)[:1]
    if veto is not None and not crops:
        veto = None
    r = SprayRule(threshold, veto, labels=labels, weed_labels=weeds, crop_labels=crops)
    batch = r.view(np.stack(rows))
    fired = r.fires(batch)
    for i, row in enumerate(rows):
        one = r.view(row)
        assert (batch.weed_mass[i], batch.crop_mass[i], batch.weed_log_odds[i], bool(batch.vetoed[i])) == \
               (one.weed_mass, one.crop_mass, one.weed_log_odds, one.vetoed)
        assert bool(fired[i]) == r.fires(one)


def test_a_batch_sums_each_row_as_one_vector():
    """A case where summing the selected columns of a batch in place differs from a row alone by one ulp."""
    xs = np.array([0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.837890625, np.float32(1e-9), 1.0], np.float32)
    rows = np.stack([np.zeros(9, np.float32), xs / np.float32(xs.sum())])
    labels = tuple(f"l{i}" for i in range(9))
    r = SprayRule(0.5, None, labels=labels, weed_labels=labels[:8])
    mask = np.arange(9) < 8
    old = [float(np.asarray(x, np.float64)[mask].sum()) for x in rows]  # how the decider summed before the rule
    assert list(r.view(rows).weed_mass) == old == [r.view(x).weed_mass for x in rows]


# -- several views of one place --------------------------------------------------------------
W = lambda m: p(1 - m, 0.0, m, 0.0)  # noqa: E731 - a view with weed mass m and no crop
VETOED = p(0.0, 0.4, 0.6, 0.0)  # a weed-looking view with crop mass 0.4


@pytest.mark.parametrize("views, threshold, veto, sprays", [
    ([], 0.5, None, False),  # never seen: nothing sprays
    ([W(0.9)], 0.5, None, True),
    ([W(0.9), W(0.3)], 0.5, None, True),  # logit 2.20 and -0.85: mean +0.67
    ([W(0.6), W(0.1)], 0.5, None, False),  # +0.41 and -2.20: mean -0.89
    ([W(0.45), W(0.45)], 0.5, None, False),  # two hesitant views stay under
    ([W(0.4), W(0.4)], 0.4, None, True),  # the same view twice: the mean is it, at the threshold
    ([W(0.3), W(0.3), W(0.99)], 0.5, None, True),  # one confident view outweighs two weak ones
    ([W(0.99), VETOED], 0.5, 0.3, False),  # one vetoed view blocks the cell
    ([W(0.99), VETOED], 0.5, None, True),  # ... only with a veto
    ([W(1.0), W(0.2)], 0.5, None, True),  # a certain view is clipped to +13.8, finite: the mean is too
    ([W(0.0), W(0.8)], 0.5, None, False),  # ... and a certain "no" to -13.8
])
def test_combine(views, threshold, veto, sprays):
    r = rule(threshold, veto)
    singles = [r.view(v) for v in views]
    assert r.combine(singles) == sprays
    if views:  # a batch is the same as the views one by one
        assert r.combine(r.view(np.stack(views))) == sprays


def test_combine_is_the_mean_log_odds():
    r = rule(0.5)
    views = [r.view(W(m)) for m in (0.8, 0.4, 0.3)]  # logit: +1.39, -0.41, -0.85
    mean = np.mean([v.weed_log_odds for v in views])
    assert mean > 0 and r.combine(views)
    assert not rule(0.6).combine(views)  # logit(0.6) = 0.405 > mean


# -- building the rule ---------------------------------------------------------------------
def _manifest(threshold=0.4, crop_veto=0.8):
    return Manifest(name="t", labels=list(LABELS), weed_labels=list(WEEDS), crop_labels=list(CROPS),
                    background_labels=["soil"], input=InputSpec(height=32, width=32),
                    rule=RuleSpec(threshold=threshold, crop_veto=crop_veto, chosen_on="hand-set"))


@pytest.mark.parametrize("bundle, overrides, threshold, veto, weeds, crops", [
    ((0.4, 0.8), {}, 0.4, 0.8, WEEDS, CROPS),
    ((0.4, None), {}, 0.4, None, WEEDS, CROPS),
    ((0.4, 0.8), dict(threshold=0.7), 0.7, 0.8, WEEDS, CROPS),
    ((0.4, 0.8), dict(crop_veto=0.5), 0.4, 0.5, WEEDS, CROPS),
    ((0.4, 0.8), dict(crop_veto="none"), 0.4, None, WEEDS, CROPS),  # --no-crop-veto
    ((0.4, None), dict(crop_veto=0.6), 0.4, 0.6, WEEDS, CROPS),
    ((0.4, None), dict(weed_labels=["charlock", "maize"]), 0.4, None, ("charlock", "maize"), ()),  # volunteers
])
def test_from_manifest_and_overrides(bundle, overrides, threshold, veto, weeds, crops):
    r = SprayRule.from_manifest(_manifest(*bundle), **overrides)
    assert (r.threshold, r.crop_veto, r.weed_labels, r.crop_labels) == (threshold, veto, weeds, crops)


@pytest.mark.parametrize("kw, words", [
    (dict(threshold=1.2), "outside 0..1"),
    (dict(threshold=float("nan")), "outside 0..1"),
    (dict(crop_veto=-0.1), "decision.crop_veto -0.1 is outside 0..1"),
    (dict(weed_labels=("thistle",)), "thistle"),
    (dict(weed_labels=()), "empty"),
    (dict(crop_labels=("charlock",)), "count as weed and as crop"),
    (dict(crop_veto=0.5, crop_labels=()), "no label counts as a crop"),
])
def test_bad_rules_are_config_errors(kw, words):
    args = dict(threshold=0.5, crop_veto=None, labels=LABELS, weed_labels=WEEDS, crop_labels=CROPS) | kw
    with pytest.raises(ConfigError, match=words):
        SprayRule(**args)


def test_a_veto_with_every_crop_moved_to_the_weeds_is_refused():
    with pytest.raises(ConfigError, match="no label counts as a crop"):
        SprayRule.from_manifest(_manifest(0.4, 0.8), weed_labels=["charlock", "maize"])


def test_describe_names_the_rule():
    assert rule(0.4).describe().startswith("weed probability >= 0.40 (log-odds >= -0.41), no crop veto")
    assert "crop veto at crop probability >= 0.80 (maize)" in rule(0.4, 0.8).describe()


# -- the whole-frame decider: identical to the rule before it, unless a veto is set ----------
class OldDecider:
    """The decider as it was before the rule (its code, reduced to what a decision is made of)."""

    def __init__(self, labels, weed_labels, threshold, n=1, m=1, hold_s=0.0):
        self.labels, self.mask, self.threshold = labels, np.array([x in weed_labels for x in labels]), threshold
        self.n, self.hold_ns, self.window, self.until = n, int(hold_s * 1e9), deque(maxlen=m), None

    def update(self, probs, t_ns):
        score = float(np.asarray(probs, dtype=np.float64)[self.mask].sum())
        weed = score >= self.threshold
        self.window.append(weed)
        if sum(self.window) >= self.n:
            self.until, spray = t_ns + self.hold_ns, True
        else:
            spray = self.until is not None and t_ns < self.until
            if not spray:
                self.until = None
        i = int(np.argmax(probs))
        return score, weed, spray, self.labels[i], float(probs[i])


@st.composite
def decision_runs(draw):
    k = draw(st.integers(2, 13))
    labels = tuple(f"l{i}" for i in range(k))
    weeds = tuple(labels[i] for i in sorted(draw(st.sets(st.integers(0, k - 1), min_size=1))))
    frames = draw(st.lists(_probability_rows(k), min_size=1, max_size=15))
    # thresholds where it matters: a frame's exact weed mass, one ulp either side, 0, 1, anything
    masses = [float(np.asarray(f, np.float64)[[labels.index(w) for w in weeds]].sum()) for f in frames]
    exact = draw(st.sampled_from(masses))
    threshold = draw(st.sampled_from([exact, np.nextafter(exact, 0.0), np.nextafter(exact, 1.0), 0.0, 1.0])
                     | st.floats(0, 1))
    threshold = float(min(max(threshold, 0.0), 1.0))
    m = draw(st.integers(1, 4))
    n = draw(st.integers(1, m))
    hold_ms = draw(st.sampled_from([0, 50, 100, 250]))
    return labels, weeds, frames, threshold, n, m, hold_ms


@PROPERTY
@given(decision_runs())
def test_the_decider_without_a_veto_is_the_old_formula(run):
    labels, weeds, frames, threshold, n, m, hold_ms = run
    crops = tuple(x for x in labels if x not in weeds)[:1]  # crop labels without a veto change nothing
    new = Decider(labels, weeds, threshold, n, m, hold_ms / 1000, crop_labels=crops)
    old = OldDecider(labels, weeds, threshold, n, m, hold_ms / 1000)
    for i, probs in enumerate(frames):
        t = i * 100_000_000
        d = new.update(probs, t, i)
        assert (d.weed_score, d.weed_frame, d.spray, d.label, d.label_prob) == old.update(probs, t)
        assert not d.vetoed and d.weed_log_odds == log_odds(d.weed_score)


@pytest.mark.parametrize("veto, weed_frame, spray, vetoed", [
    (None, True, True, False),
    (0.5, True, True, False),  # crop mass 0.35 is under the veto
    (0.3, False, False, True),  # over it: the weed frame is held back
])
def test_a_veto_blocks_a_weed_frame(veto, weed_frame, spray, vetoed):
    d = Decider(LABELS, WEEDS, 0.5, crop_labels=CROPS, crop_veto=veto).update(p(0.0, 0.35, 0.6, 0.05), 0, 0)
    assert (d.weed_frame, d.spray, d.vetoed) == (weed_frame, spray, vetoed)
    assert d.weed_score == pytest.approx(0.65) and d.crop_score == pytest.approx(0.35)
    assert d.weed_log_odds == pytest.approx(logit(0.65))


def test_a_vetoed_frame_counts_as_no_weed_in_the_debounce():
    d = Decider(LABELS, WEEDS, 0.5, 2, 2, crop_labels=CROPS, crop_veto=0.3)
    weed, vetoed = p(0.1, 0.0, 0.9, 0.0), p(0.0, 0.35, 0.6, 0.05)
    got = [d.update(x, i * 100_000_000, i).spray for i, x in enumerate([weed, vetoed, weed, weed])]
    assert got == [False, False, False, True]


def test_from_rule_keeps_the_rule():
    r = rule(0.45, 0.7)
    d = Decider.from_rule(r, 2, 3, 0.1)
    assert d.rule == r and (d.n, d.m, d.min_hold_ns) == (2, 3, 100_000_000)


# -- lanes: each tile a view -------------------------------------------------------------------
def test_view_evidence_of_a_batch_has_a_length():
    assert len(rule().view(np.stack([W(0.1), W(0.9)]))) == 2 and len(rule().view(W(0.1))) == 1
    assert isinstance(rule().view(W(0.1)), ViewEvidence)
