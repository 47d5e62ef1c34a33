"""tools/check_field_clip.py refuses a truth file it cannot use (exit 3, one line) instead of a traceback (exit 1,
which the tool means as "the clip fails") or "the clip passes" on nothing scored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_field_clip.py"


@pytest.mark.parametrize("csv_text, words", [
    ("frame,role\n0,weed\n", "line 2: needs a whole frame number, a role and a coverage"),
    ("frame,coverage\n0,1.0\n", "line 2: needs a whole frame number, a role and a coverage"),
    ("frame,role,coverage\n0,weed,x\n", "line 2: needs a whole frame number, a role and a coverage"),
    ("frame,role,coverage\n0,weed\n", "line 2: needs a whole frame number, a role and a coverage"),  # a short row
    ("frame,role,coverage\n0,soil,1.0\n", "line 2: role 'soil'"),
    ("frame,role,coverage\n0,weed,1.0\n1,crop,nan\n", "line 3: role 'crop', coverage nan"),
    ("frame,role,coverage\n", "no frame of"),  # no row: nothing scored, not "the clip passes"
    ("frame,role,coverage\n0,weed,1.0\n99999,weed,1.0\n", "has rows for frames 99999..99999 but"),  # clip too short
])
def test_a_truth_file_it_cannot_use_is_exit_3_in_one_line(tmp_path, csv_text, words):
    truth = tmp_path / "truth.csv"
    truth.write_text(csv_text)
    out = subprocess.run([sys.executable, str(TOOL), str(ROOT / "models" / "plant-seedlings-mnv2"),
                          "--truth", str(truth)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 3 and words in out.stderr, out.stderr
    ours = [ln for ln in out.stderr.splitlines() if not ln.startswith("INFO: ")]  # LiteRT's own delegate line
    assert len(ours) == 1 and "Traceback" not in out.stderr
