"""tools/model_table.py: the README's clean / worst-row table from a bundle's metrics.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.inference.bundle import read_manifest
from tests.conftest import TOY_BUNDLE

ROOT = Path(__file__).resolve().parents[2]


def rate(k, n, lo, hi):
    return {"rate": k / n, "k": k, "n": n, "ci95": [lo, hi]}


def row(title, acc, species, miss, crop, bg):
    return {"title": title, "crop_vs_weed_accuracy": rate(acc, 100, 0.9, 1.0), "species_accuracy": rate(species, 100, 0.8, 1.0),
            "weed_miss": rate(miss, 80, 0.0, 0.1), "crop_sprayed": rate(crop, 20, 0.0, 0.2),
            "background_fired": rate(bg, 10, 0.0, 0.3)}


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "model_table.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_clean_and_the_worst_row_of_each_metric(tmp_path):
    rows = {"clean": row("clean photos", 99, 95, 1, 0, 0),
            "blur": row("Gaussian blur", 97, 90, 3, 1, 0),  # the worst crop vs weed, species and miss
            "dark": row("dark", 98, 93, 2, 2, 1)}  # the worst crop sprayed and bare ground
    (tmp_path / "metrics.json").write_text(json.dumps({"robustness": {
        "n_photos": 110, "photos": "the test split", "model_file": "model.tflite", "quantization": "int8",
        "threshold": 0.6, "crop_veto": 0.8, "rows": rows}}))
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert "99.0 % (99/100; 90.0–100.0) | 97.0 % (97/100; 90.0–100.0) — Gaussian blur" in lines["crop vs weed"]
    assert "3.8 % (3/80; 0.0–10.0) — Gaussian blur" in lines["weed miss"]
    assert "10.0 % (2/20; 0.0–20.0) — dark" in lines["crop sprayed"]
    assert "10.0 % (1/10; 0.0–30.0) — dark" in lines["bare ground fired"]
    assert "threshold 0.6, crop veto 0.8" in proc.stdout and "With 20 test crops" in proc.stdout


def test_a_bundle_without_robustness_rows_says_what_to_run(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    proc = run(tmp_path)
    assert proc.returncode == 1 and "weed-train robustness --model" in proc.stderr
    proc = run(tmp_path / "nowhere")  # neither a folder nor a shipped name: the bundle error, exit 4
    assert proc.returncode == 4 and "model bundle" in proc.stderr and "not found" in proc.stderr


def test_the_record_must_be_scored_at_the_bundles_rule(tmp_path):
    """A rule written after training (choose_cell_rule --write) makes metrics.json's record stale: the tool says so;
    a robustness.json at the rule (weed-train robustness --out BUNDLE) is read instead."""
    shutil.copytree(TOY_BUNDLE, tmp_path / "b")
    b = tmp_path / "b"
    threshold = read_manifest(b).rule.threshold
    rows = {"clean": row("clean photos", 99, 95, 1, 0, 0), "dark": row("dark", 98, 93, 2, 2, 1)}
    rec = {"n_photos": 110, "photos": "the test split", "model_file": "model.tflite", "quantization": "int8",
           "crop_veto": None, "rows": rows}
    (b / "metrics.json").write_text(json.dumps({"robustness": {**rec, "threshold": threshold + 0.05}}))
    proc = run(b)
    assert proc.returncode == 1 and "not scored at the bundle's rule" in proc.stderr
    assert f"--out {b}" in proc.stderr
    (b / "robustness.json").write_text(json.dumps({"bundle": "toy", "robustness": {**rec, "threshold": threshold}}))
    proc = run(b)
    assert proc.returncode == 0, proc.stderr
    assert f"threshold {threshold:g}, no crop veto" in proc.stdout
    # a record of every photo of a folder (--split all) is not the test table
    (b / "robustness.json").write_text(json.dumps({"robustness": {**rec, "threshold": threshold,
                                                                  "photos": "every photo of `labelled`"}}))
    proc = run(b)
    assert proc.returncode == 1 and "not the bundle's test split" in proc.stderr and "--split test" in proc.stderr


REC = {"n_photos": 110, "photos": "the test split", "model_file": "model.tflite", "quantization": "int8",
       "crop_veto": None, "threshold": 0.5, "rows": {"clean": row("clean photos", 99, 95, 1, 0, 0)}}
# (what, robustness.json's bytes)
DAMAGED = [
    ("empty", b""),
    ("not JSON", b"{robustness"),
    ("not UTF-8", b"\xff\xfe{}"),
    ("a list", b"[]"),
    ("robustness not an object", b'{"robustness": 5}'),
    ("no threshold", json.dumps({"robustness": {"photos": "test split"}}).encode()),
    ("threshold not a number", json.dumps({"robustness": {**REC, "threshold": "x"}}).encode()),
    ("no rows", json.dumps({"robustness": {k: v for k, v in REC.items() if k != "rows"}}).encode()),
    ("a row without its metric", json.dumps({"robustness": {**REC, "rows": {"clean": {"title": "c"}}}}).encode()),
]


@pytest.mark.parametrize("what, data", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_record_is_one_line_saying_what_to_run(tmp_path, what, data):
    (tmp_path / "robustness.json").write_bytes(data)
    proc = run(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "weed-train robustness --model" in proc.stderr
