"""The README's table of a bundle's test results: clean photos and the worst robustness row, with 95 % intervals.

Reads the bundle's ``metrics.json`` (written by ``weed-train train`` / ``weed-train robustness``: the test split
through the edge runtime, int8) and prints a Markdown table — for each metric the clean value and the worst value
over the perturbed rows (which row), each with its count and Wilson 95 % interval — and a line saying how wide the
crop interval is::

    python tools/model_table.py models/plant-seedlings-mnv2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (metrics.json key, column title, what is worse: "low" or "high")
METRICS = [
    ("crop_vs_weed_accuracy", "crop vs weed", "low"),
    ("species_accuracy", "species", "low"),
    ("weed_miss", "weed miss", "high"),
    ("crop_sprayed", "crop sprayed", "high"),
    ("background_fired", "bare ground fired", "high"),
]


def cell(rate: dict) -> str:
    lo, hi = rate["ci95"]
    return f"{rate['rate'] * 100:.1f} % ({rate['k']}/{rate['n']}; {lo * 100:.1f}–{hi * 100:.1f})"


def worst(rows: dict, key: str, bad: str) -> tuple[str, dict]:
    perturbed = [(name, row[key]) for name, row in rows.items() if name != "clean"]
    pick = min if bad == "low" else max
    return pick(perturbed, key=lambda nr: nr[1]["rate"])  # ties: the first row of the suite


def table(metrics: dict) -> str:
    rob = metrics["robustness"]
    rows = rob["rows"]
    lines = [f"Test split ({rob['n_photos']} photos: {rob['photos']}), `{rob['model_file']}` ({rob['quantization']}) "
             f"through the edge runtime, threshold {rob['threshold']:g}"
             + (f", crop veto {rob['crop_veto']:g}" if rob.get("crop_veto") is not None else ", no crop veto")
             + "; rate (count; Wilson 95 % interval):", "",
             "| metric | clean photos | worst perturbed row |", "|---|---:|---:|"]
    for key, title, bad in METRICS:
        name, rate = worst(rows, key, bad)
        lines.append(f"| {title} | {cell(rows['clean'][key])} | {cell(rate)} — {rows[name]['title']} |")
    crop = rows["clean"]["crop_sprayed"]
    lines += ["", f"With {crop['n']} test crops, a crop-sprayed rate of {crop['rate'] * 100:.1f} % is compatible with "
                  f"anything from {crop['ci95'][0] * 100:.1f} % to {crop['ci95'][1] * 100:.1f} % (95 %): these photos "
                  "cannot tell 2 % from 5 %."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="a bundle folder with metrics.json")
    a = ap.parse_args(argv)
    path = a.bundle / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        print(table(metrics))
    except FileNotFoundError:
        print(f"model_table: {path} does not exist (a bundle written by weed-train has it)", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"model_table: {path} has no robustness rows ({e}): run `weed-train robustness --model "
              f"{a.bundle}` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
