#!/usr/bin/env python3
"""Measure spot spraying on made passes: speeds x (clean, motion blur + noise) x seeds, one table.

For every combination it makes a pass with ``tools/make_field_pass.py --preset boom-4x10cm``
(plants from one split of a data set only: by default the test split of the photos the shipped
model was trained on, split as ``weed-train`` split them; ``--images DIR [--roles FILE]``: every
photo of a folder instead, e.g. photos kept aside), runs ``edge-run --config PASS.toml
--video PASS.avi --realtime -q`` on it (dry run, the config's ``[spray]`` per-lane path), scores
the spray log with ``edge-replay`` and prints one Markdown row per speed and condition, summed
over the seeds (the seeds are fixed in advance: 1, 2, 3 unless ``--seeds``)::

    python tools/measure_passes.py        # 5, 10, 15 km/h; clean, blur 7 px + noise 6, and no plants
    python tools/measure_passes.py --speeds 10 --seeds 1 --runs --keep /tmp/passes

The passes are written to a temporary folder (``--keep DIR`` keeps them, with each run's spray log;
the videos are large). A realtime run is only meaningful when it keeps up with the video:
the frames it dropped and its ``max speed:`` latency are reported with each run (``--runs``).
``--clocked`` runs every pass on a manual clock instead (``tools/run_pass_clocked.py``: every
frame, no latency), which scores the decisions alone, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import make_field_pass as mfp
from run_pass_clocked import (BLUR_PX, NOISE, SEEDS, SPEEDS, add_rule_options, edge_run_rule_args, gate_overrides, rule_overrides, run_clocked,
                              spray_overrides)

from edge.config import load_config
from edge.core.args import given
from edge.core.errors import ConfigError, WeedDetectorError
from edge.core.files import check_output
from edge.tools.replay import Score, read_spray_log, read_truth, score

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    speed_kmh: float
    condition: str
    seed: int
    score: Score
    frames: str  # edge-run's "done" line: frames, dropped
    max_speed: str  # edge-run's "max speed:" line

    @property
    def dropped(self) -> str:
        """Frames of the video the run dropped (it did not keep up): then the pass "stretches"."""
        if self.frames.startswith("clocked"):
            return "0 (clocked)"
        m = re.search(r"(\d+) frames, .*?(\d+) dropped", self.frames)
        return f"{m.group(2)} of {int(m.group(1)) + int(m.group(2))}" if m else "?"


def conditions(names: list[str], blur_px: int, noise: float) -> dict[str, tuple[str, list[str]]]:
    """name in the table -> (file tag, make_field_pass options) of each chosen condition."""
    known = {"clean": ("clean", ("clean", [])),
             "blur": (f"blur {blur_px} px + noise {noise:g}", ("blur", ["--blur-px", str(blur_px), "--noise",
                                                                         str(noise)])),
             "empty": ("no plants", ("empty", ["--density-per-m", "0"]))}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"--conditions: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return dict(known[n] for n in names)


def add_config_keys(conf: Path, spray: dict[str, float], gate: dict[str, float]) -> None:
    """``[spray]`` overrides (numbers) appended to a made pass's config, whose last table is ``[spray]``, and
    ``[gate]`` overrides as a table after it: the realtime edge-run and the clocked run both read them there."""
    headers = [ln.strip() for ln in conf.read_text(encoding="utf-8").splitlines() if ln.startswith("[")]
    if headers[-1:] != ["[spray]"]:
        raise SystemExit(f"{conf}: expected [spray] as its last table (make_field_pass --config-out), got {headers}")
    with conf.open("a", encoding="utf-8") as fh:
        fh.writelines(f"{k} = {float(v)!r}\n" for k, v in spray.items())
        if gate:
            fh.write("[gate]\n")
            fh.writelines(f"{k} = {float(v)!r}\n" for k, v in gate.items())


def run_pass(folder: Path, speed: float, condition: str, tag: str, extra: list[str], seed: int, source: list[str],
             pool: list, model: str | None, clocked: bool = False, decision: dict | None = None,
             spray: dict | None = None, gate: dict | None = None) -> Run:
    name = f"pass_{speed:g}kmh_{tag}_s{seed}"
    avi, truth, conf = folder / f"{name}.avi", folder / f"{name}_truth.jsonl", folder / f"{name}.toml"
    args = mfp.parse_args(["--preset", "boom-4x10cm", "--speed-kmh", str(speed), "--seed", str(seed), *source,
                           *extra, "--out", str(avi), "--truth", str(truth), "--config-out", str(conf)])
    with contextlib.redirect_stdout(sys.stderr):  # its "wrote ..." line: stdout is the table
        mfp.make_pass(args, pool)
    if spray or gate:
        add_config_keys(conf, spray or {}, gate or {})
    spray_log = Path(load_config(conf).spray.log_jsonl)
    spray_log.unlink(missing_ok=True)
    if clocked:  # the decisions alone: a manual clock, every frame, no latency (tools/run_pass_clocked.py)
        return Run(speed, condition, seed, run_clocked(conf, avi, truth, model=model, decision=decision), "clocked",
                   "clocked: no latency")
    cmd = [sys.executable, "-m", "edge.cli", "--config", str(conf), "--video", str(avi), "--realtime", "-q"]
    cmd += (["--model", model] if model else []) + edge_run_rule_args(decision or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"edge-run failed ({proc.returncode}) on {avi}: {proc.stderr.strip()[-400:]}")
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    done = next((ln for ln in lines if ln.startswith("done")), "")
    speed_line = next((ln for ln in lines if ln.startswith("max speed:")), "")
    s = score(read_spray_log(spray_log), read_truth(truth), load_config(conf).spray)
    return Run(speed, condition, seed, s, done, speed_line)


def pct(n: float, d: float) -> str:
    return f"{n / d:.0%}" if d else "—"


def row(runs: list[Run]) -> str:
    w = sum(r.score.weeds for r in runs)
    full = sum(r.score.hits for r in runs)
    some = full + sum(r.score.partial for r in runs)
    crops = sum(r.score.crops for r in runs)
    sprayed = sum(r.score.crops_sprayed for r in runs)
    blanket = sum(r.score.blanket_m2 for r in runs)
    saved = 1 - sum(r.score.sprayed_m2 for r in runs) / blanket if blanket else 0.0
    ideal = 1 - sum(r.score.ideal_m2 for r in runs) / blanket if blanket else 0.0
    late = ", ".join(str(r.score.late) for r in runs)
    dropped = ", ".join(r.dropped for r in runs)
    first = runs[0]
    return (f"| {first.speed_kmh:g} km/h, {first.condition} | {full}/{w} ({pct(full, w)}) "
            f"| {some}/{w} ({pct(some, w)}) | {sprayed} of {crops} ({pct(sprayed, crops)}) | {saved:.1%} | {ideal:.1%} | {late} | {dropped} |")


def cause_row(runs: list[Run]) -> str:
    """Why the weeds not wholly hit were not, and why the crops sprayed were (edge-replay's causes), summed."""
    total: dict[str, dict[str, int]] = {"weed": {}, "crop": {}}
    for r in runs:
        for kind, counts in r.score.causes().items():
            for cause, n in counts.items():
                total[kind][cause] = total[kind].get(cause, 0) + n
    first = runs[0]
    cell = {k: ", ".join(f"{c} {n}" for c, n in v.items()) or "—" for k, v in total.items()}
    return f"| {first.speed_kmh:g} km/h, {first.condition} | {cell['weed']} | {cell['crop']} |"


CAUSES_HEADER = ("| pass | weeds not wholly hit, by cause | crops sprayed, by cause |\n|---|---|---|")

HEADER = ("| pass (seeds {seeds}) | weeds hit (full) | hit or partly | crops sprayed | saved vs blanket | ideal "
          "| late sprays per run | frames dropped per run |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speeds", default="5,10,15", type=SPEEDS, help="km/h, comma-separated (default 5,10,15)")
    ap.add_argument("--seeds", default="1,2,3", type=SEEDS, help="pass seeds, comma-separated (default 1,2,3)")
    ap.add_argument("--blur-px", type=BLUR_PX, default=7, help="the blurred condition's motion blur (default 7 px)")
    ap.add_argument("--noise", type=NOISE, default=6.0, help="the blurred condition's sensor noise (default sigma 6)")
    ap.add_argument("--conditions", default="clean,blur,empty",
                    help="clean, blur (motion blur + noise), empty (no plants: what bare ground sprays); "
                         "default all three")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"), help="plants from this split only")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--split-of", default=str(REPO / "models" / "plant-seedlings-mnv2"), metavar="BUNDLE",
                     help="the data set and split of this bundle's training (default: the shipped model's)")
    src.add_argument("--split-args", metavar="ARGS", help="or the weed-train train data options")
    src.add_argument("--images", metavar="DIR", type=given("a folder of photos"),
                     help="or every photo of this folder (a weed-train data folder <class>/<photo>, e.g. photos kept "
                          "aside, or flat <class>__<id>.jpg files; --split is then not used)")
    ap.add_argument("--roles", metavar="FILE", help="with --images: a class,role CSV (make_field_pass.py --roles)")
    ap.add_argument("--model", help="edge-run --model (default: the shipped default bundle)")
    ap.add_argument("--clocked", action="store_true",
                    help="run each pass on a manual clock instead of edge-run --realtime: every frame, no latency "
                         "(the decisions without this machine's load; tools/run_pass_clocked.py)")
    ap.add_argument("--keep", metavar="DIR", help="write the passes and spray logs here and keep them")
    ap.add_argument("--runs", action="store_true", help="also print every run: its score, frames and max speed")
    ap.add_argument("--json", metavar="FILE", help="also write every run's score as JSON")
    add_rule_options(ap)
    a = ap.parse_args(argv)
    decision = rule_overrides(a)
    spray = spray_overrides(a)
    gate = gate_overrides(a)
    if a.keep is not None and (not a.keep.strip() or os.path.exists(a.keep) and not os.path.isdir(a.keep)):
        ap.error(f"--keep: expected a folder to keep the passes in, got {a.keep!r}")
    if a.roles and not a.images:
        ap.error("--roles goes with --images")
    if a.images:
        source = ["--images", a.images] + (["--roles", a.roles] if a.roles else [])
        plants_from = f"every photo of {a.images}"
    else:
        source = ["--split", a.split] + (["--split-args", a.split_args] if a.split_args else ["--split-of", a.split_of])
        plants_from = f"the {a.split} split ({a.split_args or a.split_of})"
    speeds = [float(x) for x in a.speeds.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    chosen = conditions([c.strip() for c in a.conditions.split(",")], a.blur_px, a.noise)
    try:
        if a.json:
            check_output("--json", a.json)  # before the passes, not after them
        pool = mfp.photo_pool(mfp.parse_args(source))  # the photos, listed and decoded once
        with tempfile.TemporaryDirectory(prefix="passes-") as tmp:
            folder = Path(a.keep) if a.keep else Path(tmp)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot make the --keep folder {a.keep!r}: {e.strerror or e}",
                                  "give --keep a folder you can write to") from None
            load = os.getloadavg()[0]
            runs = [run_pass(folder, v, c, tag, extra, seed, source, pool, a.model, a.clocked, decision, spray, gate)
                    for v in speeds for c, (tag, extra) in chosen.items() for seed in seeds]
    except WeedDetectorError as e:
        print(f"measure_passes: error: {e}", file=sys.stderr)
        return 1
    rule = ", ".join(f"{k} {v}" for k, v in decision.items()) or "the bundle's rule"
    rule += "".join(f"; [spray] {k} {v}" for k, v in spray.items())
    rule += "".join(f"; [gate] {k} {v}" for k, v in gate.items())
    print(f"rule: {rule}; plants from {plants_from}; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs)\n")
    print(HEADER.format(seeds=",".join(map(str, seeds))))
    for v in speeds:
        for c in chosen:
            print(row([r for r in runs if r.speed_kmh == v and r.condition == c]))
    print("\n" + CAUSES_HEADER)  # edge-replay's causes (docs/spray-timing.md, "Replay scoring": Why)
    for v in speeds:
        for c in chosen:
            print(cause_row([r for r in runs if r.speed_kmh == v and r.condition == c]))
    if a.runs:
        print()
        for r in runs:
            print(f"{r.speed_kmh:g} km/h, {r.condition}, seed {r.seed}: {r.score.line()}\n    {r.frames}\n    "
                  f"{r.max_speed}")
    if a.json:
        Path(a.json).write_text(json.dumps([{"speed_kmh": r.speed_kmh, "condition": r.condition, "seed": r.seed,
                                             "done": r.frames, "max_speed": r.max_speed, **r.score.as_dict()}
                                            for r in runs], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
