"""tools/measure_passes.py: a row of the table sums its runs (the runs themselves are realtime edge-run
passes, measured by the tool, not in the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.tools.replay import Score

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, str(TOOLS))
    try:
        import measure_passes
    finally:
        sys.path.remove(str(TOOLS))
    return measure_passes


def run(tool, seed, hits, partial, misses, crops_sprayed, crops, sprayed_m2, ideal_m2, late, done):
    s = Score(hits + partial + misses, hits, partial, misses, crops_sprayed, late, sprayed_m2, 0.0, 4.0, 10.0,
              crops=crops, ideal_m2=ideal_m2)
    return tool.Run(10.0, "clean", seed, s, done, "")


def test_a_row_sums_its_runs(tool):
    runs = [run(tool, 1, 44, 0, 1, 12, 15, 1.6, 0.8, 0, "done (end of source): 99 frames, 9 weed frames, 10 dropped"),
            run(tool, 2, 43, 1, 1, 3, 15, 1.2, 0.7, 2, "done (end of source): 109 frames, 9 weed frames, 0 dropped")]
    # 87 of 90 hit, 88 hit or partly; 15 of 30 crops; 2.8 of 8 m² sprayed (65 % saved), 1.5 ideal (81.25 %)
    assert tool.row(runs) == ("| 10 km/h, clean | 87/90 (97%) | 88/90 (98%) | 15 of 30 (50%) | 65.0% | 81.2% | 0, 2 "
                              "| 10 of 109, 0 of 109 |")


def test_a_cause_row_sums_the_causes_of_its_runs(tool):
    from edge.tools.replay import PlantScore

    def scored(*causes):
        plants = tuple(PlantScore(0, 10.0 * i, 5.0, kind, 0.0, 0.0, "missed" if kind == "weed" else "sprayed", None,
                                  cause) for i, (kind, cause) in enumerate(causes))
        return tool.Run(10.0, "clean", 1, Score(0, 0, 0, 0, 0, 0, 0.0, 0.0, 4.0, 10.0, plants=plants), "", "")

    runs = [scored(("weed", "rule"), ("weed", "unseen"), ("crop", "model")), scored(("weed", "rule"), ("weed", None))]
    assert tool.cause_row(runs) == "| 10 km/h, clean | unseen 1, rule 2 | model 1 |"
    assert tool.cause_row([scored()]) == "| 10 km/h, clean | — | — |"


def test_a_pass_without_plants_has_no_rates(tool):
    row = tool.row([run(tool, 1, 0, 0, 0, 0, 0, 0.02, 0.0, 0, "done: 73 frames, 0 weed frames, 0 dropped")])
    assert row.startswith("| 10 km/h, clean | 0/0 (—) | 0/0 (—) | 0 of 0 (—) | 99.5% | 100.0% |")


def test_conditions_are_named(tool):
    assert list(tool.conditions(["clean", "empty"], 7, 6.0)) == ["clean", "no plants"]
    assert tool.conditions(["blur"], 7, 6.0) == {"blur 7 px + noise 6": ("blur", ["--blur-px", "7", "--noise", "6.0"])}
    with pytest.raises(SystemExit, match="unknown fog"):
        tool.conditions(["fog"], 7, 6.0)


def test_a_clocked_run_scores_a_short_made_pass(tool, tmp_path):
    """tools/run_pass_clocked.py on a 1 m pass of the preset (the repository's sample photos): every frame seen,
    nothing late, every weed found or partly; the spray log is edge-replay's."""
    import make_field_pass as mfp
    from run_pass_clocked import run_clocked

    avi, truth, conf = tmp_path / "p.avi", tmp_path / "p.jsonl", tmp_path / "p.toml"
    args = mfp.parse_args(["--preset", "boom-4x10cm", "--length-m", "1", "--speed-kmh", "10", "--seed", "2",
                           "--out", str(avi), "--truth", str(truth), "--config-out", str(conf)])
    mfp.make_pass(args, mfp.photo_pool(args))
    s = run_clocked(conf, avi, truth)
    assert s.late == 0 and s.weeds > 0 and s.hits + s.partial >= s.weeds - 1
    assert 0.0 < s.sprayed_m2 < s.blanket_m2 and (tmp_path / "p_spray.jsonl").exists()
    assert tool.Run(10.0, "clean", 2, s, "clocked", "").dropped == "0 (clocked)"
    # the rule overrides: a veto at crop probability 0 vetoes every view, so nothing sprays; "none" is the bundle's
    # shipped rule here (it has no veto), so it sprays what the run above sprayed
    vetoed = run_clocked(conf, avi, truth, decision={"crop_veto": 0.0})
    assert vetoed.sprayed_m2 == 0.0
    # ... and edge-replay says why each weed was missed: vetoed (or, for one the gate missed, unseen)
    assert vetoed.causes()["weed"].get("veto", 0) >= s.weeds - 1 and set(vetoed.causes()["weed"]) <= {"veto", "unseen"}
    assert tool.cause_row([tool.Run(10.0, "clean", 2, vetoed, "clocked", "")]).startswith("| 10 km/h, clean | ")
    assert run_clocked(conf, avi, truth, decision={"crop_veto": "none"}).sprayed_m2 == s.sprayed_m2
    # [spray] min_plant_share: 0 lets a single view spray, 1 asks every view that covered a cell to see a plant
    # there; the default (0.5) lies between them
    loose, strict = (run_clocked(conf, avi, truth, spray={"min_plant_share": v}).sprayed_m2 for v in (0.0, 1.0))
    assert strict <= s.sprayed_m2 <= loose and strict < loose
    # [gate] min_fraction: 1 calls every tile bare ground, so nothing is classified and nothing sprays
    assert run_clocked(conf, avi, truth, gate={"min_fraction": 1.0}).sprayed_m2 == 0.0
    # the realtime path reads both from the pass's config
    tool.add_config_keys(conf, {"min_plant_share": 1.0}, {"min_fraction": 0.002})
    from edge.config import load_config
    assert load_config(conf).spray.min_plant_share == 1.0 and load_config(conf).gate.params().min_fraction == 0.002
    assert run_clocked(conf, avi, truth, gate={"min_fraction": 0.001}).sprayed_m2 == strict


@pytest.mark.parametrize("argv, decision, edge_args", [
    ([], {}, []),
    (["--threshold", "0.6"], {"threshold": 0.6}, ["--threshold", "0.6"]),
    (["--crop-veto", "0.5"], {"crop_veto": 0.5}, ["--crop-veto", "0.5"]),
    (["--crop-veto", "none", "--threshold", "0.3"], {"threshold": 0.3, "crop_veto": "none"},
     ["--threshold", "0.3", "--no-crop-veto"]),
])
def test_rule_overrides_reach_both_paths(tool, argv, decision, edge_args):
    """The same options give the clocked run's [decision] overrides and edge-run's options."""
    import argparse

    import run_pass_clocked as rpc

    ap = argparse.ArgumentParser()
    rpc.add_rule_options(ap)
    got = rpc.rule_overrides(ap.parse_args(argv))
    assert got == decision and rpc.edge_run_rule_args(got) == edge_args
    assert rpc.spray_overrides(ap.parse_args(argv)) == {}
    assert rpc.spray_overrides(ap.parse_args([*argv, "--min-plant-share", "0.25"])) == {"min_plant_share": 0.25}
    assert rpc.gate_overrides(ap.parse_args(argv)) == {}
    assert rpc.gate_overrides(ap.parse_args([*argv, "--gate-min-fraction", "0.002"])) == {"min_fraction": 0.002}


def test_spray_keys_need_the_spray_table_last(tool, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[spray]\nlanes = 4\n[model]\nbundle = 'x'\n")
    with pytest.raises(SystemExit, match=r"expected \[spray\] as its last table"):
        tool.add_config_keys(conf, {"min_plant_share": 0.5}, {})


def test_passes_from_every_photo_of_a_folder(tool, capsys):
    """--images DIR --roles FILE: plants from every photo of a labelled folder (photos kept aside) instead of a
    split; --roles alone is refused."""
    photos = Path(__file__).resolve().parents[2] / "tests" / "data" / "photos"
    assert tool.main(["--images", str(photos), "--roles", str(photos / "classes.csv"), "--speeds", "15",
                      "--seeds", "1", "--conditions", "empty", "--clocked"]) == 0
    out = capsys.readouterr().out
    assert f"plants from every photo of {photos};" in out and "| 15 km/h, no plants | 0/0 (—) |" in out
    with pytest.raises(SystemExit) as e:
        tool.main(["--roles", str(photos / "classes.csv")])
    assert e.value.code == 2 and "--roles goes with --images" in capsys.readouterr().err


def test_number_lists_are_checked_and_normalised_when_parsed(tool):
    """A trailing comma or spaces pass the check and reach the passes as clean text (they were a ValueError later)."""
    from run_pass_clocked import SEEDS, SPEEDS

    assert SPEEDS("5, 10,") == "5,10" and SEEDS("11,,12") == "11,12"
    with pytest.raises(Exception, match="expected speeds in km/h from 1 to 100"):
        SPEEDS("5,abc")
