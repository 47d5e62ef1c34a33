"""A non-editable install finds the shipped default model from any directory."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_installed_console_script_runs_the_default_model(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Dependencies come from the environment running the tests (no network): a plain path
    # entry, so that environment's own .pth files (the editable install) are not processed.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # pip and setuptools also come through deps.pth; the venv's python makes it install there.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT)],
                   check=True, cwd=tmp_path,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    images = tmp_path / "imgs"
    images.mkdir()
    for f in sorted((ROOT / "samples" / "images").glob("*.jpg"))[:3]:
        (images / f.name).write_bytes(f.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEED_DETECTOR_MODELS")}
    r = subprocess.run([str(venv / "bin" / "edge-run"), "--images", str(images), "--print"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("frame ") == 3
    where = subprocess.run([str(py), "-c", "import edge.inference.bundle as b; print(b.load_bundle().dir)"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # from the install's share/, not the checkout
    # the labelling pages' templates and static files are package data
    web = Path(subprocess.run([str(py), "-c", "import edge.web, os; print(os.path.dirname(edge.web.__file__))"],
                              cwd=tmp_path, capture_output=True, text=True, env=env, check=True).stdout.strip())
    assert web.is_relative_to(venv), web
    for name in ("templates/labels_base.html", "templates/labels_frame.html", "templates/labels_index.html",
                 "templates/labels_error.html", "static/labels.js", "static/labels.css"):
        assert (web / name).is_file(), name
