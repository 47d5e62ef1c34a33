"""The spray rule from the bundle to the log: the manifest's rule section (format 2, format 1 converted),
the [decision] crop_veto key and its flags, the rule line at start-up, the JSONL keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest

from edge.cli import build_parser, main, overrides_from_args
from edge.config import load_config
from edge.core.errors import EXIT_BUNDLE, EXIT_CONFIG, EXIT_USAGE, BundleError
from edge.decide.rule import SprayRule
from edge.inference.bundle import DEFAULT_BUNDLE, FORMAT_VERSION, RuleSpec, load_bundle, write_bundle
from tests.conftest import BLUE, BROWN, GREEN, TOY_BUNDLE, solid

# the previous default bundle, kept as the benchmark reference: a format 1 manifest on disk
REFERENCE = str(Path(__file__).resolve().parents[2] / "models" / "reference" / "mnv2-160-int8")

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"


# -- the manifest -----------------------------------------------------------------------------
@pytest.mark.parametrize("bundle, threshold, chosen_on", [
    (TOY_BUNDLE, 0.5, "unknown"),  # format 1, no record of where its threshold came from
    (REFERENCE, 0.4, "validation"),  # format 1, metrics say: chosen on validation
])
def test_format_1_bundles_load_with_their_plain_threshold(bundle, threshold, chosen_on):
    m = load_bundle(bundle).manifest
    assert m.format_version == FORMAT_VERSION == 2  # converted on load
    assert (m.rule.threshold, m.rule.crop_veto, m.rule.chosen_on) == (threshold, None, chosen_on)
    assert m.threshold == threshold
    r = SprayRule.from_manifest(m)
    assert (r.threshold, r.crop_veto) == (threshold, None)


def test_the_reference_bundle_is_still_format_1_on_disk():
    on_disk = json.loads((load_bundle(REFERENCE).dir / "manifest.json").read_text())
    assert on_disk["format_version"] == 1 and "rule" not in on_disk and on_disk["threshold"] == 0.4


def test_the_shipped_default_carries_its_rule_chosen_on_validation_passes():
    """The rule README and docs/training.md give: tools/choose_cell_rule.py --field-clip --write on validation passes
    (it replaced the photo rule weed-train chose on validation + perturbed copies, which the notes keep)."""
    on_disk = json.loads((load_bundle(DEFAULT_BUNDLE).dir / "manifest.json").read_text())
    assert on_disk["format_version"] == 2 and "threshold" not in on_disk
    rule = load_bundle(DEFAULT_BUNDLE).manifest.rule
    assert (rule.threshold, rule.crop_veto, rule.chosen_on) == (0.75, None, "validation passes")
    assert "replaced threshold 0.6, no veto (chosen on validation+perturbed)" in rule.notes


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


# -- [decision] crop_veto and its flags --------------------------------------------------------------
@pytest.mark.parametrize("toml, argv, veto", [
    ("", [], None),  # the bundle's
    ("", ["--crop-veto", "0.7"], 0.7),
    ("", ["--no-crop-veto"], "none"),
    ("crop_veto = 0.6\n", [], 0.6),
    ('crop_veto = "none"\n', [], "none"),
    ("crop_veto = 0.6\n", ["--no-crop-veto"], "none"),  # flags override the file
    ('crop_veto = "none"\n', ["--crop-veto", "0.9"], 0.9),
    ("crop_veto = 0\n", [], 0.0),  # the ends are in range
    ("crop_veto = 1\n", [], 1.0),
])
def test_crop_veto_from_file_and_flags(tmp_path, toml, argv, veto):
    path = tmp_path / "c.toml"
    path.write_text("[decision]\n" + toml)
    cfg = load_config(path, overrides_from_args(build_parser().parse_args(["--images", "x", *argv])))
    assert cfg.decision.crop_veto == veto


@pytest.mark.parametrize("value", ["1.001", "-0.001", "inf", "-inf", "nan", "1e300", '"off"', '"0.5x"', "[0.5]"])
def test_a_crop_veto_out_of_range_is_exit_3_naming_the_key(tmp_path, capsys, value):
    path = tmp_path / "c.toml"
    path.write_text(f"[decision]\ncrop_veto = {value}\n")
    assert main(["--config", str(path), "--model", str(TOY_BUNDLE), "--images", ".", "--validate-config"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '[decision] crop_veto: a crop probability (0..1) or "none"' in err, err


@pytest.mark.parametrize("argv, code", [
    (["--crop-veto", "1.5"], EXIT_CONFIG),
    (["--crop-veto", "nan"], EXIT_CONFIG),
    (["--crop-veto", "high"], EXIT_USAGE),
    (["--crop-veto", "0.5", "--no-crop-veto"], EXIT_USAGE),
])
def test_bad_crop_veto_flags(argv, code, capsys):
    args = ["--model", str(TOY_BUNDLE), "--images", ".", *argv, "--validate-config"]
    if code == EXIT_USAGE:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == EXIT_USAGE and "--crop-veto" in capsys.readouterr().err
    else:
        assert main(args) == code and "[decision] crop_veto" in capsys.readouterr().err


def test_the_example_documents_crop_veto_and_its_range():
    text = EXAMPLE.read_text()
    entry = re.search(r"^# crop_veto = .*\n(?: +#.*\n)*", text, re.M)
    assert entry and "(0..1)" in entry.group(0) and '"none"' in entry.group(0)


def test_a_veto_without_crop_labels_is_exit_3(capsys):
    argv = ["--model", str(TOY_BUNDLE), "--images", ".", "--crop-veto", "0.5", "--weed-labels", "weed,crop",
            "--validate-config"]
    assert main(argv) == EXIT_CONFIG
    assert "decision.crop_veto is set but no label counts as a crop" in capsys.readouterr().err


# -- the rule in force, printed; the frame log ---------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    ([], "rule: weed probability >= 0.50 (log-odds >= +0.00), no crop veto; weeds: weed (threshold: bundle's, "
         "chosen on unknown; veto: bundle's)"),
    (["--threshold", "0.6", "--crop-veto", "0.25"],
     "rule: weed probability >= 0.60 (log-odds >= +0.41), crop veto at crop probability >= 0.25 (crop); weeds: weed "
     "(threshold: [decision] threshold; veto: [decision] crop_veto)"),
])
def test_validate_config_prints_the_rule(argv, words, capsys):
    assert main(["--model", str(TOY_BUNDLE), "--images", ".", *argv, "--validate-config"]) == 0
    assert words in capsys.readouterr().out


def test_the_start_up_line_names_the_rule(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "a.png"), solid(GREEN))
    with caplog.at_level("INFO", logger="edge"):
        assert main(["--model", str(TOY_BUNDLE), "--images", str(tmp_path), "--crop-veto", "0.9"]) == 0
    assert any("rule: weed probability >= 0.50" in r.getMessage() and "crop veto at crop probability >= 0.90"
               in r.getMessage() for r in caplog.records)


SCRIPT = "WBSW"  # weed, crop (blue), soil, weed


@pytest.fixture
def frames(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i, c in enumerate(SCRIPT):
        cv2.imwrite(str(d / f"{i:03d}_{c}.png"), solid({"W": GREEN, "B": BLUE, "S": BROWN}[c], 60, 80))
    return d


@pytest.mark.parametrize("argv, weed_frames, vetoed", [
    ([], [True, False, False, True], [False] * 4),
    (["--crop-veto", "1.0"], [True, False, False, True], [False] * 4),  # no output reaches a crop mass of 1
    (["--crop-veto", "0.5"], [True, False, False, True], [False, True, False, False]),  # the crop frame
    (["--crop-veto", "0.0"], [False] * 4, [True] * 4),  # a veto at 0 holds every frame back
])
def test_the_frame_log_has_the_veto_and_the_crop_score(frames, tmp_path, argv, weed_frames, vetoed):
    log = tmp_path / "f.jsonl"
    assert main(["--model", str(TOY_BUNDLE), "--images", str(frames), "--log-jsonl", str(log), "-q", *argv]) == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["weed_frame"] for r in lines] == weed_frames == [r["spray"] for r in lines]
    assert [r["vetoed"] for r in lines] == vetoed
    assert [r["crop_score"] > 0.9 for r in lines] == [c == "B" for c in SCRIPT]
    assert {"label", "probs", "weed_score", "weed_frame", "spray", "outputs", "ms"} <= set(lines[0])  # kept


def test_the_per_lane_log_has_the_veto_per_lane(tmp_path):
    cfg = tmp_path / "spray.toml"
    log = tmp_path / "f.jsonl"
    cfg.write_text("[spray]\nlanes = 2\nfootprint_across_cm = 40\nfootprint_along_cm = 30\n"
                   "nozzle_distance_cm = 50\nspeed_kmh = 5\n"
                   "[gate]\nenabled = false\n")  # the toy model's crop is blue: the vegetation gate would call it bare
    img = solid(BLUE, 60, 80)
    img[:, 40:] = GREEN  # lane 0 a crop, lane 1 a weed
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), img)
    assert main(["--config", str(cfg), "--model", str(TOY_BUNDLE), "--images", str(d), "--log-jsonl", str(log),
                 "--crop-veto", "0.5", "-q"]) == 0
    line = json.loads(log.read_text().splitlines()[0])
    assert [x["vetoed"] for x in line["lanes"]] == [True, False]
    assert [x["weed_frame"] for x in line["lanes"]] == [False, True]
    assert line["vetoed"] is False and line["weed_frame"] is True  # the most weed-like lane's
