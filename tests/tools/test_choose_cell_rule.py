"""tools/choose_cell_rule.py: the choice among swept rules (fixed in advance), the grid, and the rule written
into a bundle's manifest (the sweep itself runs made passes from a data set's validation split: a command, not a
test)."""

from __future__ import annotations

import re
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
    bare gravel fail); threshold 1 fires only where the int8 output saturates at a weed probability of exactly 1
    (the weeds fail)."""
    rules = [tool.Rule(load_bundle(DEFAULT_BUNDLE).manifest.rule.threshold, None), tool.Rule(0.0, None),
             tool.Rule(1.0, None)]
    fails = tool.failing_clip_rules(resolve_bundle(DEFAULT_BUNDLE), rules)
    assert rules[0] not in fails
    assert "crop fired on 9 of 9" in fails[rules[1]] and "background fired on" in fails[rules[1]]
    fired = re.fullmatch(r"weed fired on (\d+) of 27", fails[rules[2]])
    assert fired and int(fired.group(1)) < 27


def test_each_rule_is_checked_against_the_photo_limits_on_the_validation_rows(tool, tmp_path):
    """A threshold below the photo rule's may spray more validation crops than weed-train allowed (<= 2 % clean,
    <= 5 % on every perturbed row): the table says on which row, with the rate."""
    import numpy as np

    from tests.conftest import TOY_BUNDLE

    bundle = tmp_path / "toy"
    shutil.copytree(TOY_BUNDLE, bundle)
    assert tool.photo_limits(bundle, [tool.Rule(0.7, None)]) is None  # no validation rows: nothing to say
    y = np.array([1] * 10 + [2] * 10 + [0] * 5)  # labels soil, crop, weed: 10 crops, 10 weeds, 5 soil
    clean = np.tile(np.float32([0.1, 0.8, 0.1]), (25, 1))
    clean[10:20] = [0.05, 0.05, 0.9]
    clean[20:] = [0.9, 0.05, 0.05]
    zoom = clean.copy()
    zoom[0] = [0.02, 0.30, 0.68]  # one crop of ten reads 0.68 weed when zoomed out
    np.savez_compressed(bundle / "validation_rows.npz", y=y.astype(np.int16), source=np.array("test"),
                        seed=np.array(0), row_clean=clean, row_zoom_out=zoom)
    got = tool.photo_limits(bundle, [tool.Rule(0.65, None), tool.Rule(0.7, None), tool.Rule(0.65, 0.25)])
    assert got[tool.Rule(0.7, None)] == "met"
    assert got[tool.Rule(0.65, None)] == "breaks: zoom_out 10.0 % > 5 %"
    assert got[tool.Rule(0.65, 0.25)] == "met"  # the veto (crop probability 0.30 >= 0.25) spares it


def test_the_table_header_has_one_column_per_extra(tool):
    assert tool.header([]).splitlines()[1] == "|---|---:|---:|---:|---:|"
    h = tool.header(["field clip", "photo limits (validation rows)"]).splitlines()
    assert h[0].endswith("| field clip | photo limits (validation rows) |") and h[1] == "|---|---:|---:|---:|---:|---|---|"


def test_only_rules_passing_the_clip_and_keeping_the_photo_limits_are_eligible(tool):
    rows = [totals(tool, 0.6, None, 99, 0, 1), totals(tool, 0.65, None, 97, 0, 1), totals(tool, 0.7, None, 95, 0, 1)]
    clip = {tool.Rule(0.6, None): "crop fired on 1 of 9"}
    photo = {tool.Rule(0.6, None): "met", tool.Rule(0.65, None): "breaks: zoom_out 6.9 % > 5 %",
             tool.Rule(0.7, None): "met"}
    keep, words = tool.eligible(rows, clip, photo)
    assert [t.rule.threshold for t in keep] == [0.7]
    assert words == ("; of the 2 of 3 rules at which the sample clip passes; of the 2 of 3 rules keeping the photo "
                     "limits")
    assert [t.rule.threshold for t in tool.eligible(rows, clip, None)[0]] == [0.65, 0.7]  # --photo-limits report
    assert tool.eligible(rows, None, None) == (rows, "")
    chosen, _ = tool.choose(keep, 0.05, 0.95)
    assert chosen.rule == tool.Rule(0.7, None)
