"""edge-bench: runs a few frames, writes JSON with every schema field, compares, renders.

No assertion here is about how fast anything is: timings vary by machine and load.
"""

from __future__ import annotations

import copy
import json
import shutil
import os
import math
from pathlib import Path

import numpy as np
import pytest

from edge.tools.bench import report
from edge.tools.bench.cli import main
from edge.tools.bench.frames import FramesSpec, GeneratedSource, generated_images
from edge.tools.bench.runner import RunSpec, run
from edge.tools.bench.sweep import Planned, run_in_subprocess
from edge.tools.bench.system import peak_rss
from edge.core.errors import EXIT_BUNDLE, EXIT_CONFIG, EXIT_SOURCE
from edge.core.metrics import STAGES
from tests.conftest import DATA, TOY_BUNDLE

FRAME_BUNDLE = DATA / "bundles" / "colour-toy-frame"

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TINY = FramesSpec(kind="generated", width=64, height=48)

FRAME_SOURCES = {
    "generated": TINY,
    "video": FramesSpec(kind="video", path=str(SAMPLES / "field.avi"), width=None, height=None),
    "images": FramesSpec(kind="images", path=str(SAMPLES / "images"), width=None, height=None),
}


def _run_problems(r: dict) -> list[str]:
    problems: list[str] = []
    report._check(r, report.RUN, "run", problems)
    return problems


@pytest.mark.parametrize("role", ["pipeline", "naive_baseline"])
@pytest.mark.parametrize("kind", sorted(FRAME_SOURCES))
def test_one_run_has_every_field(role, kind):
    spec = RunSpec(role=role, bundle=str(TOY_BUNDLE), threads=1, frames=FRAME_SOURCES[kind], n_frames=4, warmup=2)
    r = run(spec)
    assert _run_problems(r) == []
    assert r["ok"] and r["error"] is None
    assert r["frames"] == 4 and r["warmup_frames"] == 2
    for st in STAGES:
        s = r["stages_ms"][st]
        assert s["n"] == 4
        assert s["min"] <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert r["raw_invoke_ms"]["n"] >= 1
    assert r["fps"] > 0 and r["peak_rss_mib"] > 0
    assert len(r["model"]["sha256"]) == 64 and r["model"]["size_bytes"] > 0
    assert r["runtime"]["name"] and r["runtime"]["version"]
    if role == "naive_baseline":
        assert r["model"]["variant"] == "float32" and r["threads"] == 1  # float32, one thread
    else:
        assert r["model"]["variant"] == "int8"


@pytest.mark.parametrize("role", ["pipeline", "naive_baseline"])
def test_an_image_over_the_pixel_limit_is_skipped_by_both_runs(role, tmp_path):
    """A PNG declaring 10 gigapixels in the folder: never decoded, skipped by the pipeline's image source and by
    the naive baseline alike (the baseline used to end in OpenCV's own size error)."""
    from tests.edge.test_sources import png_declaring

    folder = tmp_path / "images"
    shutil.copytree(SAMPLES / "images", folder)
    (folder / "0000_huge.png").write_bytes(png_declaring(100000, 100000))  # first in name order
    spec = RunSpec(role=role, bundle=str(TOY_BUNDLE), threads=1, n_frames=4, warmup=1,
                   frames=FramesSpec(kind="images", path=str(folder), width=None, height=None))
    r = run(spec)
    assert r["ok"] and r["error"] is None and r["frames"] == 4, r["error"]


SPRAY_TOML = """
[spray]
lanes = 4
tile_rows = 3
footprint_across_cm = 100
footprint_along_cm = 40
nozzle_distance_cm = 100
speed_source = "nmea"
gps_port = "loop://"
enable_pin = 17
log_jsonl = "{log}"
"""


@pytest.fixture(scope="module")
def lanes_run(tmp_path_factory):
    """A pipeline run with a [spray] config: edge-run's per-lane path (GPS and enable switch not needed)."""
    d = tmp_path_factory.mktemp("lanes")
    cfg = d / "spray.toml"
    cfg.write_text(SPRAY_TOML.format(log=d / "spray.jsonl"))
    spec = RunSpec(bundle=str(TOY_BUNDLE), threads=1, frames=FramesSpec(kind="generated", width=128, height=96),
                   n_frames=4, warmup=2, config=str(cfg))
    return run(spec), d


def test_a_spray_config_measures_the_lane_pipeline(lanes_run):
    r, d = lanes_run
    assert _run_problems(r) == [] and r["ok"] and r["frames"] == 4
    assert r["mode"] == "lanes" and r["stage_names"]["inference"] == "tiles inference (batched)"
    assert "spray planning" in r["stage_names"]["decision"]
    assert r["stage_names"]["preprocess"] == "vegetation gate + tiles preprocess"  # on by default with [spray]
    sp = r["spray"]
    assert (sp["lanes"], sp["tile_rows"], sp["tiles_per_frame"]) == (4, 3, 12)
    assert sp["classify"] == "batched" and sp["invokes_per_frame"] == 2.0  # 12 tiles: batches of 8 and 4
    # the generated frames are colourful: the gate lets every tile through, and its time is reported per frame
    assert sp["gated_tiles_per_frame"] == 0.0 and sp["gate"].startswith("excess green > 0.1 ")
    assert sp["gate_ms"]["n"] == 4 and sp["gate_ms"]["p50"] > 0
    assert sp["speed_kmh"] == 6.0 and "nmea speed source replaced" in sp["speed_note"]
    # planned: the ground cells decided in the run (each when it leaves the image or at its deadline), which
    # depends on how far the ground moved in 6 frames read as fast as they come: a count, possibly 0
    assert isinstance(sp["planned"], int) and sp["planned"] >= 0
    assert sp["max_speed_kmh"] > 0 and sp["limited_by"] in ("latency", "frame rate")
    # the max speed comes from this run's latency: end-to-end p95 + switching p95 (+ valve lag 30 ms)
    e2e = r["stages_ms"]["end_to_end"]["p95"]
    assert sp["latency_ms"] == pytest.approx(e2e + (sp["switch_delay_p95_ms"] or 0) + 30.0, abs=0.02)
    shown = float(sp["max_speed_line"].split()[2])  # "max speed: 85.6 km/h (limited by ..."
    assert sp["max_speed_line"].startswith("max speed: ") and shown == pytest.approx(sp["max_speed_kmh"], abs=0.06)
    assert r["stages_ms"]["actuation"]["max"] == 0.0  # the scheduler thread switches, not the loop
    assert not (d / "spray.jsonl").exists()  # no spray log written by a benchmark


def test_a_frame_scoring_run_reports_its_ratio_to_the_reference_invoke(tmp_path):
    """--scoring frame@S: one invoke per frame, the stage names say so, and the reference bundle's one-image invoke
    is measured in the same run: e2e p95 / its p50."""
    cfg = tmp_path / "spray.toml"
    cfg.write_text(SPRAY_TOML.format(log=tmp_path / "spray.jsonl"))
    spec = RunSpec(bundle=str(FRAME_BUNDLE), threads=1, frames=FramesSpec(kind="generated", width=128, height=96),
                   n_frames=4, warmup=2, config=str(cfg), scoring="frame@0.5", reference=str(TOY_BUNDLE))
    r = run(spec)
    assert _run_problems(r) == [] and r["ok"] and r["id"].endswith("/t1/frame@0.5")
    assert r["spray"]["invokes_per_frame"] == 1.0 and r["spray"]["classify"] == "one invoke per frame at 0.5x"
    assert r["scoring"].startswith("one backbone run over the frame at 0.5x")
    assert r["stage_names"]["inference"].startswith("one backbone invoke over the frame")
    ref = r["reference"]
    assert ref["bundle"] == "colour-toy" and ref["input"] == "32x32" and ref["invoke_ms"]["n"] == 100
    assert r["e2e_p95_over_reference_invoke_p50"] == pytest.approx(
        r["stages_ms"]["end_to_end"]["p95"] / ref["invoke_ms"]["p50"], rel=0.01)


@pytest.mark.parametrize("text, overrides", [
    ("", {}), ("tiles", {"scoring": "tiles"}), ("frame", {"scoring": "frame"}),
    ("frame@0.5", {"scoring": "frame", "frame_scale": 0.5}), ("frame@1", {"scoring": "frame", "frame_scale": 1.0}),
    ("tiles@128", None), ("frame@0", None), ("frame@x", None), ("pixels", None),
])
def test_scoring_entries(text, overrides):
    from edge.core.errors import ConfigError
    from edge.tools.bench.runs import scoring_overrides

    if overrides is None:
        with pytest.raises(ConfigError, match="not tiles, frame or frame@S"):
            scoring_overrides(text)
    else:
        assert scoring_overrides(text) == overrides


def test_lane_runs_render_with_their_stage_names(lanes_run):
    r, _ = lanes_run
    r = copy.deepcopy(r)
    frame_run = run(RunSpec(bundle=str(TOY_BUNDLE), threads=1, frames=TINY, n_frames=2, warmup=0))
    settings = {"source": TINY.to_dict(), "source_description": TINY.describe(), "frames": 4, "seconds": None,
                "warmup": 2, "config": "spray.toml", "baseline": False, "timeout_s": 60.0}
    from edge.tools.bench.system import loadavg, machine_info

    machine = {**machine_info(), "loadavg_start": loadavg(), "loadavg_end": loadavg()}
    doc = report.build_document([frame_run, r], machine, settings, "edge-bench --config spray.toml")
    assert report.validate(doc) == []
    text = report.markdown(doc)
    rows = _table_rows(text, "| run | capture_wait | vegetation gate + tiles preprocess | tiles inference (batched) |")
    assert len(rows) == 3 and "4 lanes × 3 tiles (batched)" in rows[2]
    assert len(_table_rows(text, "| run | capture_wait | preprocess |")) == 3  # the whole-frame run only
    assert f"4 lanes × 3 tiles (batched): {r['spray']['max_speed_line']}" in text
    assert "(2.0 invoke(s) per frame, 0.0 of 12 tiles bare (vegetation gate " in text


def test_seconds_bound_a_run():
    spec = RunSpec(bundle=str(TOY_BUNDLE), threads=1, frames=TINY, n_frames=None, seconds=0.05, warmup=0)
    r = run(spec)
    assert r["ok"] and r["frames"] >= 1 and r["stopped_by"] == "stop requested"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real sweep: baseline + int8 + float32, one thread, each in its own process."""
    d = tmp_path_factory.mktemp("bench")
    out = d / "a.json"
    md = d / "a.md"
    argv = ["--model", str(TOY_BUNDLE), "--variants", "int8,float32", "--threads", "1", "--generated", "64x48",
            "--frames", "5", "--warmup", "2", "--json", str(out), "--markdown", str(md), "-q"]
    return main(argv), out, md


def test_sweep_writes_valid_json_with_every_field(sweep, capsys):
    code, out, md = sweep
    assert code == 0
    doc = json.loads(out.read_text())
    assert report.validate(doc) == []
    assert doc["schema_version"] == report.SCHEMA_VERSION
    ids = [r["id"] for r in doc["runs"]]
    assert ids == ["colour-toy/naive/float32/t1", "colour-toy/pipeline/int8/t1", "colour-toy/pipeline/float32/t1"]
    pids = {r["pid"] for r in doc["runs"]}
    assert len(pids) == 3  # each configuration in a process of its own
    for r in doc["runs"]:
        assert r["ok"] and r["frames"] == 5
        if r["role"] == "pipeline":
            assert r["vs_naive"]["baseline_id"] == ids[0]
            assert r["vs_naive"]["p50"] > 0 and r["e2e_over_invoke_p50"] > 0
        else:
            assert r["vs_naive"] is None
    assert doc["machine"]["cores_logical"] >= 1 and len(doc["machine"]["loadavg_start"]) == 3
    assert doc["command"].startswith("edge-bench --model")


def _table_rows(text: str, header_start: str) -> list[str]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_markdown_table_renders(sweep):
    _, out, md = sweep
    text = md.read_text()
    assert text == report.markdown(json.loads(out.read_text()))
    for header in ("| run | fps", "| run | capture_wait"):
        rows = _table_rows(text, header)
        assert len(rows) == 2 + 3  # header, rule, one row per run
        assert len({r.count("|") for r in rows}) == 1  # every row has every column
    assert "naive loop (float32, 1 thread)" in text and "pipeline int8, 1 thread" in text


def test_compare_two_files(sweep, tmp_path, capsys):
    _, out, _ = sweep
    doc = json.loads(out.read_text())
    other = copy.deepcopy(doc)
    other["machine"]["cpu_model"] = "ARM Cortex-A76"
    for r in other["runs"]:
        r["stages_ms"]["end_to_end"]["p50"] *= 2
    other["runs"] = other["runs"][:2]  # float32 pipeline measured on A only
    b = tmp_path / "b.json"
    b.write_text(json.dumps(other))
    capsys.readouterr()
    assert main(["--compare", str(out), str(b)]) == 0
    text = capsys.readouterr().out
    assert "ARM Cortex-A76" in text  # B's machine line
    rows = _table_rows(text, "| run | A fps")
    assert len(rows) == 2 + 3
    assert all("2.00×" in r for r in rows[2:4])  # B/A p50 of the runs in both files
    assert "| — |" in rows[4]  # only in A
    assert len({r.count("|") for r in rows}) == 1


def test_compare_names_failed_runs_and_refuses_two_runs_of_one_kind(sweep, tmp_path, capsys):
    _, out, _ = sweep
    doc = json.loads(out.read_text())
    failed = copy.deepcopy(doc)
    failed["runs"][1].update(ok=False, error="interpreter could not be built")
    b = tmp_path / "b.json"
    b.write_text(json.dumps(failed))
    assert report.validate(failed) == []  # a failed run with its numbers still in: a valid file
    capsys.readouterr()
    assert main(["--compare", str(out), str(b)]) == 0
    assert "- failed in B: " in (text := capsys.readouterr().out) and "interpreter could not be built" in text
    twice = copy.deepcopy(doc)
    twice["runs"].append(copy.deepcopy(twice["runs"][1]))  # the same run twice (a merged or edited file)
    b.write_text(json.dumps(twice))
    assert main(["--compare", str(out), str(b)]) == EXIT_CONFIG
    assert "holds two runs of" in capsys.readouterr().err


def test_compare_matches_runs_by_the_scoring_asked_for_not_what_the_runtime_did(sweep, tmp_path, capsys):
    """A tiles run that batched in A and went one by one in B is one run; frame and frame@0.5 are two."""
    from edge.tools.bench.report import _key

    _, out, _ = sweep
    r = json.loads(out.read_text())["runs"][1]
    lanes = {**r, "mode": "lanes", "id": r["id"] + "/tiles", "spray": {"classify": "batched"}}
    assert _key(lanes) == _key({**lanes, "spray": {"classify": "one by one"}})
    assert _key({**lanes, "id": r["id"] + "/frame"}) != _key({**lanes, "id": r["id"] + "/frame@0.5"})


def test_compare_rejects_a_file_that_is_not_a_result(sweep, tmp_path, capsys):
    _, out, _ = sweep
    broken = json.loads(out.read_text())
    del broken["runs"][0]["stages_ms"]["end_to_end"]["p95"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    assert main(["--compare", str(out), str(bad)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "runs[0].stages_ms.end_to_end.p95: missing" in err and "re-run edge-bench" in err
    assert main(["--compare", str(out), str(tmp_path / "none.json")]) == EXIT_CONFIG
    capsys.readouterr()


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "is not readable JSON (maximum recursion depth"),
    (lambda p: p.write_text('{"a": ' + "9" * 5000 + "}"), "is not readable JSON (Exceeds the limit"),
    (lambda p: p.write_bytes(b'{"a": "\xff"}'), "is not readable JSON ('utf-8' codec"),
    (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
    (lambda p: p.mkdir(), "is a folder, not a regular file"),
])
def test_compare_refuses_files_it_cannot_read_in_one_line(sweep, tmp_path, capsys, make, words):
    bad = tmp_path / "bad.json"
    make(bad)
    assert main(["--compare", str(sweep[1]), str(bad)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.pop("schema_version"), "$.schema_version: missing"),
    (lambda d: d["runs"][0].__setitem__("fps", "fast"), "$.runs[0].fps: expected"),
    (lambda d: d["runs"][0].__setitem__("ok", 1), "$.runs[0].ok: expected bool"),
    (lambda d: d["runs"][0].__setitem__("frames", True), "$.runs[0].frames: expected int"),
    (lambda d: d["machine"].__setitem__("loadavg_start", [1.0]), "$.machine.loadavg_start: expected 3 items"),
    (lambda d: d["runs"][0]["raw_invoke_ms"].__setitem__("p50", math.nan), "$.runs[0].raw_invoke_ms.p50"),
    (lambda d: d["runs"][0]["stages_ms"]["end_to_end"].__setitem__("p95", -3.0),
     "$.runs[0].stages_ms.end_to_end.p95: expected a number >= 0, got -3.0"),
    (lambda d: d["runs"][0].__setitem__("fps", -1), "$.runs[0].fps: expected a number >= 0"),
])
def test_validate_names_the_bad_field(sweep, mutate, problem):
    doc = json.loads(sweep[1].read_text())
    mutate(doc)
    assert any(p.startswith(problem) for p in report.validate(doc))


def test_files_without_the_added_fields_still_validate(sweep):
    doc = json.loads(sweep[1].read_text())
    assert all(r["mode"] == "frame" and r["spray"] is None for r in doc["runs"])
    for r in doc["runs"]:  # as written before per-lane runs existed
        del r["mode"], r["stage_names"], r["spray"]
    assert report.validate(doc) == []
    doc["runs"][0]["spray"] = {"lanes": 4}
    assert "$.runs[0].spray.tile_rows: missing" in report.validate(doc)


def test_every_schema_field_is_documented():
    doc = (ROOT / "docs" / "benchmark.md").read_text()
    summary_parent = ("runs[].raw_invoke_ms", "runs[].spray.gate_ms", "runs[].reference.invoke_ms",
                      *(f"runs[].stages_ms.{s}" for s in STAGES))
    wanted = set()
    for p in report.schema_paths():
        parent, _, leaf = p.rpartition(".")
        wanted.add(f"summary.{leaf}" if parent in summary_parent else p)  # documented once, as the summary object
    missing = sorted(w for w in wanted if f"`{w}`" not in doc)
    assert missing == []


@pytest.mark.parametrize("argv, code, words", [
    (["--variants", "float16", "--generated", "32x32"], EXIT_BUNDLE, "no 'float16' variant"),
    (["--video", "no/such.avi"], EXIT_SOURCE, "does not exist"),
    (["--config", "no/such.toml", "--generated", "32x32"], EXIT_CONFIG, "not found"),
    (["--scoring", "frame", "--generated", "32x32"], EXIT_CONFIG, "--scoring chooses how per-lane runs score"),
])
def test_user_errors_stop_before_any_run(argv, code, words, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--model", str(TOY_BUNDLE), "--frames", "1", "--json", str(out), *argv]) == code
    assert words in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["--timeout", "nan"], "argument --timeout: expected seconds above 0"),
    (["--timeout", "inf"], "argument --timeout: expected seconds above 0"),
    (["--timeout", "0"], "argument --timeout: expected seconds above 0"),
    (["--seconds", "inf"], "argument --seconds: expected seconds above 0"),  # was a traceback after the runs
    (["--seed", "-1"], "argument --seed: expected a whole number from 0"),
    (["--threads", "1,100000"], "argument --threads: thread counts must be 1 to 64"),  # was a failed run (exit 3)
    (["--threads", "0"], "argument --threads: thread counts must be 1 to 64"),
    (["--generated", "100000x100000"], "frame size '100000x100000' is out of range"),
    (["--generated", "0x48"], "frame size '0x48' is out of range"),
    (["--generated", "4x4"], "generated frames need a size of at least 8x8"),  # was exit 3, after parsing
    (["--scoring", "frame@2"], "not tiles, frame or frame@S"),
    (["--frames", "0"], "argument --frames: expected frames, a whole number of at least 1"),
    (["--warmup", "-1"], "argument --warmup: expected frames, a whole number of at least 0"),
])
def test_bad_arguments_are_refused_when_parsed(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-baseline", "--frames", "1", *argv])
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("flag, make, words", [
    ("--json", lambda p: p.mkdir(), "is a folder"),
    ("--json", lambda p: os.mkfifo(p), "is a FIFO (named pipe)"),
    ("--markdown", lambda p: None, "No such file or directory"),  # its folder is missing
])
def test_a_result_file_that_cannot_be_written_is_said_before_the_runs(flag, make, words, tmp_path, capsys):
    target = tmp_path / "out" if flag == "--json" else tmp_path / "missing" / "t.md"
    make(target)
    argv = ["--model", str(TOY_BUNDLE), "--generated", "32x32", "--frames", "1", "--no-baseline", "-q"]
    argv += [flag, str(target)] + (["--json", str(tmp_path / "r.json")] if flag != "--json" else [])
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"cannot write the {flag} file" in err and words in err and "[1/" not in err  # no run started


def test_the_table_and_the_results_cannot_share_a_file(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--model", str(TOY_BUNDLE), "--generated", "32x32", "--frames", "1", "--no-baseline", "-q"]
    assert main(argv + ["--json", str(out), "--markdown", str(out)]) == EXIT_CONFIG
    assert "is the --json file" in capsys.readouterr().err and not out.exists()


def test_a_failing_child_is_recorded_not_fatal(tmp_path):
    spec = RunSpec(bundle=str(tmp_path / "missing-bundle"), threads=1, frames=TINY, n_frames=1, warmup=0)
    res, stderr = run_in_subprocess(Planned(spec, "missing/pipeline/int8/t1"), timeout_s=60)
    assert res["ok"] is False and res["exit_code"] == EXIT_BUNDLE and "not found" in res["error"]
    assert res["id"] == "missing/pipeline/int8/t1" and _run_problems(res) == []


def test_generated_frames_are_deterministic_fresh_buffers():
    assert all(np.array_equal(a, b) for a, b in zip(generated_images(40, 30, 1), generated_images(40, 30, 1)))
    with GeneratedSource(40, 30, seed=1) as src:
        f0, f1 = src.read(), src.read()
        assert f0.image.shape == (30, 40, 3) and f0.image.dtype == np.uint8
        assert f1.frame_id == 1 and f1.t_capture_ns >= f0.t_capture_ns
        assert not np.shares_memory(f0.image, src.read().image)
    assert src.read() is None  # closed


def test_peak_rss_is_this_process():
    mib, where = peak_rss()
    assert mib > 0 and where in ("VmHWM", "ru_maxrss")


def test_web_client_runs_measure_with_and_without_a_client():
    pytest.importorskip("flask")
    from edge.tools.bench.webload import BLOCK_FRAMES

    spec = RunSpec(bundle=str(TOY_BUNDLE), threads=1, frames=TINY, n_frames=10 * BLOCK_FRAMES, warmup=2,
                   web_client=True)  # frames while the client connects or goes away count in neither
    r = run(spec)
    assert r["ok"] and _run_problems(r) == []
    w = r["web"]
    assert w["frames_without"] >= BLOCK_FRAMES and w["frames_with"] >= BLOCK_FRAMES
    # at least the one connect of the first watched block (a second one needs the server to notice the hang-up
    # within the run, which a fast machine's short run may not leave time for)
    assert w["frames_with"] + w["frames_without"] <= r["frames"] and w["client_connects"] >= 1
    assert w["p95_ratio"] == pytest.approx(w["e2e_p95_with_ms"] / w["e2e_p95_without_ms"], rel=1e-2)


def test_web_client_runs_render_their_table(sweep):
    doc = json.loads(sweep[1].read_text())
    doc["runs"][-1]["web"] = {"frames_without": 100, "frames_with": 100, "e2e_p50_without_ms": 1.0,
                              "e2e_p50_with_ms": 1.1, "e2e_p95_without_ms": 2.0, "e2e_p95_with_ms": 2.1,
                              "p95_ratio": 1.05, "stream_fps": 5.0, "stream_width": 640, "jpeg_quality": 70,
                              "encode_ms_p50": 3.0, "encode_ms_p95": 4.5,
                              "jpegs_encoded": 7, "jpegs_received": 6, "bytes_received": 1000, "client_connects": 1,
                              "block_frames": 100}
    assert report.validate(doc) == []
    md = report.markdown(doc)
    assert "| 100 / 100 | 1.00 / 1.10 | 2.00 / 2.10 | 1.05× | 5 fps, 640 px, q70 | 3.00 / 4.50 | 7 / 6 |" in md
