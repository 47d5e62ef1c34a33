"""tools/choose_cell_rule.py: the choice among swept rules (fixed in advance), the grid, and the rule written
into a bundle's manifest (the sweep itself runs made passes from a data set's validation split: a command, not a
test)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from edge.decide.rule import SprayRule
from edge.inference.bundle import DEFAULT_BUNDLE, load_bundle, resolve_bundle

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, str(TOOLS))
    try:
        import choose_cell_rule
    finally:
        sys.path.remove(str(TOOLS))
    return choose_cell_rule


def totals(tool, threshold, veto, hits, partial, crops_sprayed, sprayed_m2=1.0, weeds=100, crops=40):
    return tool.Totals(tool.Rule(threshold, veto), weeds, hits, partial, crops, crops_sprayed, sprayed_m2, 10.0)


@pytest.mark.parametrize("rows, chosen, step", [
    # step 1: within 5 % crops sprayed (2 of 40), the most weeds hit or partly
    ([(0.4, None, 99, 1, 10), (0.6, None, 96, 1, 2), (0.6, 0.5, 95, 1, 1)], (0.6, None), "the most weeds hit"),
    # ties on hit or partly: the most full hits
    ([(0.6, None, 94, 3, 2), (0.7, None, 96, 1, 1)], (0.7, None), "the most weeds hit"),
    # step 2: none within 5 %; of those finding >= 95 %, the fewest crops sprayed
    ([(0.4, None, 99, 1, 10), (0.6, None, 95, 0, 5), (0.8, 0.3, 80, 0, 3)], (0.6, None), "the fewest crops sprayed"),
])
def test_the_choice_follows_its_rule(tool, rows, chosen, step):
    got, how = tool.choose([totals(tool, *r) for r in rows], 0.05, 0.95)
    assert (got.rule.threshold, got.rule.crop_veto) == chosen and step in how


def test_no_rule_meeting_either_limit_chooses_none(tool):
    got, how = tool.choose([totals(tool, 0.4, None, 90, 0, 10), totals(tool, 0.8, 0.3, 70, 0, 4)], 0.05, 0.95)
    assert got is None and "no rule" in how


def test_the_grid_keeps_thresholds_at_or_above_the_bundles(tool):
    rules = tool.grid(0.55, None, [None, 0.5])
    assert [(r.threshold, r.crop_veto) for r in rules] == [(0.55, None), (0.55, 0.5), (0.6, None), (0.6, 0.5),
                                                           (0.7, None), (0.7, 0.5), (0.8, None), (0.8, 0.5)]
    assert [r.threshold for r in tool.grid(0.55, [0.3], [None])] == [0.3]  # given explicitly: as given


def test_the_chosen_rule_is_written_into_the_manifest(tool, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(resolve_bundle(DEFAULT_BUNDLE), bundle)
    before = load_bundle(bundle).manifest
    tool.write_rule(bundle, tool.Rule(0.7, 0.5), "chosen on passes")
    after = load_bundle(bundle).manifest  # hashes still check out
    assert (after.rule.threshold, after.rule.crop_veto, after.rule.chosen_on) == (0.7, 0.5, "validation passes")
    assert after.format_version == 2 and after.threshold == 0.7 and after.labels == before.labels
    assert SprayRule.from_manifest(after).crop_veto == 0.5


def test_field_clip_rules_that_fire_on_crops_or_miss_weeds_are_named(tool):
    """``--field-clip``: the sample clip's frames, classified once, judged per rule as test_default_model judges
    the shipped bundle. The default bundle's own rule passes; threshold 0 fires on every frame (the crops and the
    bare gravel fail); threshold 1 fires on none (the weeds fail)."""
    rules = [tool.Rule(load_bundle(DEFAULT_BUNDLE).manifest.rule.threshold, None), tool.Rule(0.0, None),
             tool.Rule(1.0, None)]
    fails = tool.failing_clip_rules(resolve_bundle(DEFAULT_BUNDLE), rules)
    assert rules[0] not in fails
    assert "crop fired on 9 of 9" in fails[rules[1]] and "background fired on" in fails[rules[1]]
    assert fails[rules[2]] == "weed fired on 0 of 27"
