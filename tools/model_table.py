"""The README's table of a bundle's test results: clean photos and the worst robustness row, with 95 % intervals.

Reads the bundle's test split under the robustness suite, through the edge runtime — its ``robustness.json`` when
there is one (``weed-train robustness --model B --data D --split test --out B``), else the record ``weed-train
train`` left in its ``metrics.json`` — and prints a Markdown table: for each metric the clean value and the worst
value over the perturbed rows (which row), each with its count and Wilson 95 % interval, and a line saying how wide
the crop interval is::

    python tools/model_table.py models/plant-seedlings-mnv2

The record must be scored at the bundle's rule (its manifest's threshold and crop veto): a rule written later
(``tools/choose_cell_rule.py --write``) makes the training record stale, and the tool says what to run (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.core.errors import WeedDetectorError

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


ROBUSTNESS = "robustness.json"  # weed-train robustness --out: preferred over metrics.json's training record


def record_file(bundle: Path) -> Path:
    """The file with the bundle's robustness record: ``robustness.json`` if it has one, else ``metrics.json``."""
    return bundle / ROBUSTNESS if (bundle / ROBUSTNESS).is_file() else bundle / "metrics.json"


def _veto(v: float | None) -> str:
    return f"crop veto {v:g}" if v is not None else "no crop veto"


def rule_mismatch(bundle: Path, rob: dict) -> str | None:
    """Why ``rob`` was not scored at the bundle's rule (None: it was, or there is no manifest to say)."""
    if not (bundle / "manifest.json").is_file():
        return None
    from edge.inference.bundle import read_manifest

    rule = read_manifest(bundle).rule
    if (abs(rob["threshold"] - rule.threshold) < 1e-9
            and (rob.get("crop_veto") is None) == (rule.crop_veto is None)
            and (rule.crop_veto is None or abs(rob["crop_veto"] - rule.crop_veto) < 1e-9)):
        return None
    return (f"it scores threshold {rob['threshold']:g}, {_veto(rob.get('crop_veto'))}; the bundle's rule is threshold "
            f"{rule.threshold:g}, {_veto(rule.crop_veto)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="a bundle folder with metrics.json (and robustness.json)")
    a = ap.parse_args(argv)
    if not a.bundle.is_dir():
        from edge.inference.bundle import resolve_bundle  # a shipped name (plant-seedlings-mnv2) is its folder

        try:
            a.bundle = resolve_bundle(str(a.bundle))
        except WeedDetectorError as e:
            print(f"model_table: error: {e}", file=sys.stderr)
            return e.exit_code
    rerun = f"weed-train robustness --model {a.bundle} --data DATA --split test --out {a.bundle}"
    path = record_file(a.bundle)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"model_table: {path} does not exist (a bundle written by weed-train has it)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        print(f"model_table: {path} cannot be read as JSON ({e}): run `{rerun}`", file=sys.stderr)
        return 1
    rob = record.get("robustness") if isinstance(record, dict) else None
    if not isinstance(rob, dict):
        print(f"model_table: {path} has no robustness record: run `{rerun}` first", file=sys.stderr)
        return 1
    if "test split" not in str(rob.get("photos", "")):  # `weed-train robustness --split all --out BUNDLE`
        print(f"model_table: {path} scores {rob.get('photos')!r}, not the bundle's test split: run `{rerun}`",
              file=sys.stderr)
        return 1
    try:  # the fields a record weed-train writes has; a damaged or hand-edited one says so, not a traceback
        why = rule_mismatch(a.bundle, rob)
        text = None if why is not None else table({"robustness": rob})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        print(f"model_table: {path} is not a robustness record weed-train writes ({type(e).__name__}: {e}): "
              f"run `{rerun}`", file=sys.stderr)
        return 1
    if why is not None:
        print(f"model_table: {path} is not scored at the bundle's rule ({why}): run `{rerun}`", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
