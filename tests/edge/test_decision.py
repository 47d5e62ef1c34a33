import numpy as np
import pytest

from edge.loop.actuator import Actuator
from edge.core.clock import ManualClock
from edge.decide.decider import Decider
from edge.core.errors import ConfigError
from edge.outputs.dryrun import DryRunOutput

LABELS = ["soil", "maize", "charlock", "black_grass"]
WEED = np.array([0.05, 0.05, 0.9, 0.0], np.float32)
HALF = np.array([0.3, 0.2, 0.25, 0.25], np.float32)  # weed mass 0.5
CROP = np.array([0.05, 0.9, 0.05, 0.0], np.float32)
MS = 1_000_000


def run(decider, seq, dt_ms=100):
    return [decider.update(p, i * dt_ms * MS, i).spray for i, p in enumerate(seq)]


def test_weed_score_is_mass_on_weed_labels():
    d = Decider(LABELS, ["charlock", "black_grass"], 0.5)
    assert d.weed_score(HALF) == pytest.approx(0.5)
    dec = d.update(HALF, 0, 7)
    assert dec.weed_frame and dec.spray and dec.frame_id == 7 and dec.label == "soil"


@pytest.mark.parametrize(
    "n, m, hold_ms, seq, expect",
    [
        (1, 1, 0, "WCWC", [1, 0, 1, 0]),
        (2, 3, 0, "WCWWCC", [0, 0, 1, 1, 1, 0]),  # 2 of the last 3
        (2, 2, 0, "WCWCW", [0, 0, 0, 0, 0]),  # flicker never fires
        (3, 3, 0, "WWWCWWW", [0, 0, 1, 0, 0, 0, 1]),
        (1, 1, 250, "WCCCCW", [1, 1, 1, 0, 0, 1]),  # held 250 ms after the last weed at 100 ms steps
        (1, 1, 100, "WCC", [1, 0, 0]),  # hold boundary is exclusive
    ],
)
def test_debounce_and_hold_table(n, m, hold_ms, seq, expect):
    d = Decider(LABELS, ["charlock"], 0.5, n, m, hold_ms / 1000)
    got = run(d, [WEED if c == "W" else CROP for c in seq])
    assert got == [bool(x) for x in expect]


def test_weed_labels_override_maize_volunteers():
    beet_field = Decider(LABELS, ["charlock", "black_grass", "maize"], 0.5)
    assert beet_field.update(CROP, 0, 0).spray
    assert not Decider(LABELS, ["charlock"], 0.5).update(CROP, 0, 0).spray


def test_reset_forgets_history():
    d = Decider(LABELS, ["charlock"], 0.5, 2, 2, 1.0)
    d.update(WEED, 0, 0)
    d.reset()
    assert not d.update(WEED, 1, 1).spray


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(weed_labels=["thistle"]), "thistle"),
        (dict(weed_labels=[]), "empty"),
        (dict(threshold=1.2), "outside 0..1"),
        (dict(debounce_n=3, debounce_m=2), "impossible"),
    ],
)
def test_bad_decision_settings(kw, words):
    args = dict(labels=LABELS, weed_labels=["charlock"], threshold=0.5)
    args.update(kw)
    with pytest.raises(ConfigError, match=words):
        Decider(**args)


def _decision(spray, t=0):
    return Decider(LABELS, ["charlock"], 0.5).update(WEED if spray else CROP, t, 0)


def test_actuator_switches_all_channels_and_enforces_max_on():
    clock = ManualClock()
    out = DryRunOutput(channels=3)
    act = Actuator(out, max_on_s=2.0, clock=clock)
    act.apply(_decision(True))
    assert out.state() == (True, True, True)
    clock.advance(1.5)
    act.apply(_decision(True))
    assert all(out.state())
    clock.advance(1.0)  # 2.5 s on: tripped
    act.apply(_decision(True))
    assert out.state() == (False, False, False) and act.max_on_trips == 1
    act.apply(_decision(True))  # latched until the weed signal drops
    assert not any(out.state())
    act.apply(_decision(False))
    act.apply(_decision(True))
    assert all(out.state())


def test_max_on_between_frames_and_fail_safe():
    clock = ManualClock()
    out = DryRunOutput(channels=2)
    act = Actuator(out, max_on_s=1.0, clock=clock)
    act.apply(_decision(True))
    clock.advance(0.5)
    act.check_max_on()
    assert all(out.state())
    clock.advance(0.6)
    act.check_max_on()
    assert not any(out.state())
    act.apply(_decision(False))
    act.apply(_decision(True))
    act.fail_safe("test")
    assert not any(out.state()) and not act.on
