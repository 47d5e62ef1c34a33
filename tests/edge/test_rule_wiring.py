"""The spray rule from the bundle: the manifest's rule section (format 2, format 1 converted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.core.errors import EXIT_BUNDLE, BundleError
from edge.decide.rule import SprayRule
from edge.inference.bundle import DEFAULT_BUNDLE, FORMAT_VERSION, RuleSpec, load_bundle, write_bundle
from tests.conftest import TOY_BUNDLE


def _edit(bundle: Path, **changes) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (bundle / "manifest.json").write_text(json.dumps(m))


# -- the manifest -----------------------------------------------------------------------------
@pytest.mark.parametrize("bundle, threshold, chosen_on", [
    (TOY_BUNDLE, 0.5, "unknown"),  # format 1, no record of where its threshold came from
    (DEFAULT_BUNDLE, 0.4, "validation"),  # format 1, metrics say: chosen on validation
])
def test_format_1_bundles_load_with_their_plain_threshold(bundle, threshold, chosen_on):
    m = load_bundle(bundle).manifest
    assert m.format_version == FORMAT_VERSION == 2  # converted on load
    assert (m.rule.threshold, m.rule.crop_veto, m.rule.chosen_on) == (threshold, None, chosen_on)
    assert m.threshold == threshold
    r = SprayRule.from_manifest(m)
    assert (r.threshold, r.crop_veto) == (threshold, None)


def test_the_shipped_bundle_is_still_format_1_on_disk():
    on_disk = json.loads((load_bundle(DEFAULT_BUNDLE).dir / "manifest.json").read_text())
    assert on_disk["format_version"] == 1 and "rule" not in on_disk and on_disk["threshold"] == 0.4


def test_a_format_2_manifest_round_trips(tmp_path):
    m = load_bundle(TOY_BUNDLE).manifest
    rule = RuleSpec(threshold=0.35, crop_veto=0.7, chosen_on="validation+perturbed", notes="crop sprayed <= 2 %")
    out = write_bundle(tmp_path / "copy", m.model_copy(update={"rule": rule, "threshold": 0.35}),
                       TOY_BUNDLE / "model.tflite")
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["format_version"] == 2 and "threshold" not in on_disk  # the threshold lives in the rule only
    assert on_disk["rule"] == {"threshold": 0.35, "crop_veto": 0.7, "chosen_on": "validation+perturbed",
                               "notes": "crop sprayed <= 2 %"}
    again = load_bundle(out).manifest
    assert again.rule == rule and again.threshold == 0.35
    assert again.model_dump(exclude={"created"}) == m.model_copy(
        update={"rule": rule, "threshold": 0.35, "model_sha256": again.model_sha256}).model_dump(exclude={"created"})
    # written again unchanged: the same file
    write_bundle(tmp_path / "twice", again, out / "model.tflite")
    assert (tmp_path / "twice" / "manifest.json").read_text() == (out / "manifest.json").read_text()


def _format_2(bundle: Path, **rule) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    m.pop("threshold")
    m["format_version"] = 2
    m["rule"] = {"threshold": 0.5, "crop_veto": None, "chosen_on": "hand-set", "notes": ""} | rule
    return m


@pytest.mark.parametrize("mutate, words", [
    (lambda m: m | {"threshold": 0.4}, "field '(manifest)': threshold 0.4 disagrees with rule.threshold 0.5"),
    (lambda m: m | {"rule": m["rule"] | {"threshold": 1.5}}, "field 'rule.threshold'"),
    (lambda m: m | {"rule": m["rule"] | {"crop_veto": -0.5}}, "field 'rule.crop_veto'"),
    (lambda m: m | {"rule": m["rule"] | {"crop_veto": float("inf")}}, "field 'rule.crop_veto': Input should be a finite"),
    (lambda m: m | {"rule": m["rule"] | {"crop_veto": "0.8"}}, "field 'rule.crop_veto'"),
    (lambda m: m | {"rule": m["rule"] | {"chosen_on": "test"}}, "field 'rule.chosen_on'"),
    (lambda m: m | {"rule": m["rule"] | {"veto": 0.8}}, "field 'rule.veto': unknown field"),
    (lambda m: m | {"rule": m["rule"] | {"crop_veto": 0.8}, "crop_labels": []},
     "rule.crop_veto is set but crop_labels is empty"),
    (lambda m: m | {"format_version": 1}, "a format_version 1 manifest has no 'rule' section"),
    (lambda m: m | {"format_version": 3}, "format_version 3 is not supported by this edge runtime (it reads versions 1, 2)"),
])
def test_bad_rule_sections_are_bundle_errors(toy_bundle, mutate, words):
    (toy_bundle / "manifest.json").write_text(json.dumps(mutate(_format_2(toy_bundle))))
    with pytest.raises(BundleError) as e:
        load_bundle(toy_bundle)
    assert words in str(e.value) and e.value.exit_code == EXIT_BUNDLE


def test_a_format_2_manifest_without_a_rule_section_has_the_plain_threshold(toy_bundle):
    m = _format_2(toy_bundle)
    del m["rule"]
    (toy_bundle / "manifest.json").write_text(json.dumps(m | {"threshold": 0.3}))
    rule = load_bundle(toy_bundle).manifest.rule
    assert (rule.threshold, rule.crop_veto, rule.chosen_on) == (0.3, None, "unknown")


def test_a_format_2_manifest_with_a_veto_loads(toy_bundle):
    (toy_bundle / "manifest.json").write_text(json.dumps(_format_2(toy_bundle, crop_veto=0.6)))
    m = load_bundle(toy_bundle).manifest
    assert m.rule.crop_veto == 0.6 and SprayRule.from_manifest(m).crop_veto == 0.6
