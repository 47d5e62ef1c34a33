"""The shipped default model on the shipped sample clip: bare gravel and crops must not fire.

``samples/field.avi`` pans over seedlings and stretches of bare gravel seen at camera
height; ``samples/field_truth.csv`` names what fills each frame. ``tools/check_field_clip.py``
scores each frame on its own (no debounce) with the bundle's own threshold, as
``edge-run`` decides; this test runs that tool on the default bundle. A soil frame counts as bare
gravel only when the vegetation gate finds no plant in the model's view; one with a sliver of the
neighbouring tile takes that tile's role (the tool's docstring).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.inference.bundle import DEFAULT_BUNDLE, resolve_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "check_field_clip.py"), str(resolve_bundle(DEFAULT_BUNDLE)),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stderr  # 1: the clip fails (the tests below say where)
    res = json.loads(out.stdout)
    assert res["video_frames"] == res["truth_rows"]
    return res["roles"]


def test_bare_gravel_never_fires(clip):
    """Soil frames the vegetation gate's medium preset calls bare (< 0.15 % of the view vegetated)."""
    assert clip["background"]["frames"] >= 5
    assert clip["background"]["fired"] == 0


def test_a_crop_coming_into_view_over_gravel_does_not_fire(clip):
    """Soil frames with a sliver of a crop tile in view: a crop alone is a crop view. (A sliver of a weed
    is a weed view: ``weed_sliver`` frames may fire and are not judged.)"""
    assert clip["crop_sliver"]["frames"] >= 2
    assert clip["crop_sliver"]["fired"] == 0


def test_crops_do_not_fire_and_weeds_do(clip):
    assert clip["crop"]["frames"] >= 5 and clip["crop"]["fired"] == 0
    assert clip["weed"]["frames"] >= 20 and clip["weed"]["fired"] == clip["weed"]["frames"]
