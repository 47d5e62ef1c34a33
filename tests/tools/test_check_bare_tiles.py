"""tools/check_bare_tiles.py: the model alone on the lane tiles of a pass with no plants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("scipy")  # the Wilson interval comes from train.evaluate (training extras)

from edge.inference.bundle import DEFAULT_BUNDLE, load_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def run(tool: str, *args) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_lane_tile_of_every_frame_under_each_condition(tmp_path):
    out, conf = tmp_path / "bare.avi", tmp_path / "bare.toml"
    said = run("make_field_pass.py", "--preset", "boom-4x10cm", "--density-per-m", "0", "--length-m", "1",
               "--speed-kmh", "10", "--out", out, "--truth", tmp_path / "bare.jsonl", "--config-out", conf)
    assert "0 plants" in said
    doc = json.loads(run("check_bare_tiles.py", "--video", out, "--config", conf, "--json"))
    assert list(doc["conditions"]) == ["clean", "warm_cast", "dark"]
    for c in doc["conditions"].values():
        # 12 frames (1 m at 10 km/h, 30 fps) x 4 lanes x 3 rows (the preset's square-ish tiles)
        assert c["tiles"] == 12 * 12 and 0 <= c["fired"] <= c["tiles"]
        assert sum(c["as"].values()) == c["fired"] and c["ci95"][0] <= c["rate"] <= c["ci95"][1]
    assert doc["rule"]["threshold"] == pytest.approx(load_bundle(DEFAULT_BUNDLE).manifest.rule.threshold)  # shipped
    table = run("check_bare_tiles.py", "--video", out, "--config", conf, "--every", "4")
    assert "| dark (x0.6) | " in table and "/36 |" in table  # frames 0, 4 and 8


def test_frames_too_small_for_the_tile_grid_are_the_runtimes_refusal(tmp_path):
    """A 2x2 video against a 4-lane config: edge-run's own message and exit 5, not OpenCV's resize error."""
    import cv2
    import numpy as np

    video = tmp_path / "tiny.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (2, 2))
    for _ in range(3):
        w.write(np.full((2, 2, 3), 90, np.uint8))
    w.release()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "check_bare_tiles.py"), "--video", str(video),
                           "--config", str(ROOT / "samples" / "field_pass.toml")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 5 and "too small for 4 lane(s)" in proc.stderr and "Traceback" not in proc.stderr
