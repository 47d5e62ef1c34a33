#!/usr/bin/env python3
"""Per-lane scoring options side by side: accuracy on lane tiles cut the way the runtime cuts them, and speed.

Builds labelled 640x480 frames like ``make_field_pass.py --preset boom-4x10cm`` sees them
(40 x 30 cm of ground, 16 px/cm, 4 lanes x 3 rows of 160-px tiles = 10 x 10 cm; 8 cm plant
photos cut out by excess green and pasted on gravel of the same scale): each tile holds one
plant — a photo of the bundle's **test split** (the photos its training never saw, split exactly
as ``weed-train train`` split them), at a random offset inside the tile — or is bare gravel.
Every frame is scored under the robustness suite's camera conditions (``train.perturb.SUITE``,
applied to the whole frame at the tile's scale; the two rows that move the plant inside its
photo, shift and zoom out, are left out: the random placement already does that), through the
runtime's own path: the vegetation gate (``[gate]`` medium) on the frame, then the kept tiles
scored by each option, then the bundle's spray rule per tile. A tile the gate calls bare is
never sprayed (a gated weed is a miss).

Options (``--options``): ``tiles`` (``scoring = "tiles"``: each tile classified at 160 px),
``tiles@P`` (each tile downscaled to P px and classified by the same model with its input
resized: not a runtime option, compared here), ``frame@S`` (``scoring = "frame"`` at
``frame_scale`` S). Speed per option (``--speed-frames``): the scoring of one 12-tile frame
(preprocessing + invokes + pooling, p50/p95), against the p50 of one invoke of the reference
model (``--reference``: today's shipped 160-px int8 bundle), all in this one process; edge-bench
(docs/benchmark.md, "Per-lane speed") gives the end-to-end figure of the runtime options.

    python tools/compare_lane_scoring.py --out lane_scoring.json --markdown lane_scoring.md
    python tools/compare_lane_scoring.py --bench-frames /tmp/vegetated   # also: frames where every tile is a plant
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from make_field_pass import bundle_split_args, cutout, readable_photos, split_photos
from make_sample_video import EXG_THRESHOLD, PATCH, gravel_tile, plant_free_patches

from edge.core.metrics import percentile
from edge.decide.rule import SprayRule
from edge.inference.bundle import load_bundle
from edge.inference.classifier import Classifier, Scores
from edge.inference.config import PRESETS
from edge.inference.frame_features import FrameFeatureScorer
from edge.inference.preprocess import Preprocessor
from edge.inference.runtime import make_interpreter
from edge.inference.scoring import TileClassifier
from edge.inference.vegetation import VegetationGate

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "models" / "reference" / "mnv2-160-int8"
W, H, LANES, ROWS, TILE = 640, 480, 4, 3, 160  # boom-4x10cm: 16 px/cm, 10 x 10 cm tiles
PLANT_PX, GRAVEL_PX = 128, 128  # 8 cm plant photos, 8 cm gravel tiles
ROW_NAMES = ("clean", "gaussian_blur", "motion_blur", "sensor_noise", "warm_cast", "dark", "jpeg")
BOXES = tuple((c * TILE, (c + 1) * TILE, r * TILE, (r + 1) * TILE) for c in range(LANES) for r in range(ROWS))


class ResizedTiles:
    """``tiles@P``: each tile downscaled to P px (centre crop) and classified by the bundle's main model with its
    input resized to P (a fully convolutional backbone with a global pool takes any size)."""

    def __init__(self, bundle, px: int, threads: int):
        self.labels, self.px = tuple(bundle.manifest.labels), px
        self.interp, _ = make_interpreter(str(bundle.model_path), threads)
        inp = self.interp.get_input_details()[0]
        self._batch = 0
        self._resize(1)
        self.pre = Preprocessor(px, px, bundle.manifest.input.resize, bundle.manifest.input.colour_order,
                                inp["dtype"], *inp.get("quantization", (0.0, 0)))
        out = self.interp.get_output_details()[0]
        self.out_scale, self.out_zp = out.get("quantization", (0.0, 0))

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interp.resize_tensor_input(self.interp.get_input_details()[0]["index"], [n, self.px, self.px, 3])
            self.interp.allocate_tensors()
            self._batch = n

    def score(self, image: np.ndarray, boxes, colour_order: str = "BGR") -> list[Scores]:
        """All boxes in one batch (the runtime would split 12 into 8 + 4: the same work)."""
        if not boxes:
            return []
        self._resize(len(boxes))
        buf = self.pre.batch_buffer(len(boxes))
        for k, (x0, x1, y0, y1) in enumerate(boxes):
            self.pre.fill(image[y0:y1, x0:x1], colour_order, buf[k])
        self.interp.set_tensor(self.interp.get_input_details()[0]["index"], buf)
        self.interp.invoke()
        raw = self.interp.get_tensor(self.interp.get_output_details()[0]["index"]).astype(np.float32)
        probs = (raw - self.out_zp) * self.out_scale if self.out_scale else raw
        return [Scores(probs[k], self.labels, 0, 0) for k in range(len(boxes))]

    def warm_up(self, frame_w: int, frame_h: int, tiles: int) -> None:
        self._resize(tiles)

    def close(self) -> None:
        self.interp = None


def make_option(name: str, bundle, threads: int):
    if name == "tiles":
        return TileClassifier(Classifier(bundle, num_threads=threads))
    kind, _, arg = name.partition("@")
    if kind == "tiles" and arg.isdigit():
        return ResizedTiles(bundle, int(arg), threads)
    if kind == "frame" and arg:
        return FrameFeatureScorer(bundle, threads, scale=float(arg))
    raise SystemExit(f"compare_lane_scoring: unknown option {name!r} (tiles, tiles@P, frame@S)")


def build_frames(bundle: str, per_photo: int, bare_share: float, seed: int,
                 split: str = "test") -> tuple[list[np.ndarray], np.ndarray]:
    """(BGR frames, truth per frame and tile: 1 weed, 0 crop, -1 bare) from the bundle's ``split`` photos."""
    listed = [(p, role) for p, _label, role in split_photos(bundle_split_args(bundle), split) if role in ("weed", "crop")]
    photos = [(image, listed[i][1]) for i, image in readable_photos([p for p, _ in listed], "compare_lane_scoring")]
    patches = plant_free_patches([im for im, _ in photos], PATCH, EXG_THRESHOLD)
    rng = random.Random(seed)
    order = [i for i in range(len(photos)) for _ in range(per_photo)]
    rng.shuffle(order)
    frames, truth = [], []
    while order:
        frame = np.zeros((H, W, 3), np.uint8)
        for y in range(0, H, GRAVEL_PX):
            for x in range(0, W, GRAVEL_PX):
                g = cv2.resize(gravel_tile(patches, rng), (GRAVEL_PX, GRAVEL_PX), interpolation=cv2.INTER_AREA)
                frame[y:y + GRAVEL_PX, x:x + GRAVEL_PX] = g[:min(GRAVEL_PX, H - y), :min(GRAVEL_PX, W - x)]
        row = []
        for x0, x1, y0, y1 in BOXES:
            if not order or rng.random() < bare_share:
                row.append(-1)
                continue
            img, role = photos[order.pop()]
            plant, mask = cutout(img, PLANT_PX)
            if rng.random() < 0.5:
                plant, mask = plant[:, ::-1], mask[:, ::-1]
            k = rng.randrange(4)
            plant, mask = np.rot90(plant, k), np.rot90(mask, k)
            ox = x0 + rng.randint(0, TILE - PLANT_PX)
            oy = y0 + rng.randint(0, TILE - PLANT_PX)
            view = frame[oy:oy + PLANT_PX, ox:ox + PLANT_PX]
            view[mask] = plant[mask]
            row.append(1 if role == "weed" else 0)
        frames.append(frame)
        truth.append(row)
    return frames, np.asarray(truth, np.int8)


def perturbed(frame_bgr: np.ndarray, name: str, seed: int) -> np.ndarray:
    """The frame under one of the suite's conditions, at the strengths the suite gives for a 160-px tile."""
    from train.perturb import SUITE, REFERENCE_SIDE

    p = next(x for x in SUITE if x.name == name)
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    out = p.fn(rgb, p.strength_at(REFERENCE_SIDE), (seed,))
    return cv2.cvtColor(out, cv2.COLOR_RGB2BGR)


def rates(flagged: np.ndarray, truth: np.ndarray) -> dict:
    from train.evaluate import role_rates

    r = role_rates(flagged, truth)
    return {k: v.as_dict() for k, v in r.items() if k != "crop_vs_weed_accuracy"}


def speed(option, frame: np.ndarray, reference: Classifier, n: int) -> dict:
    """Scoring one frame with every tile kept (ms p50/p95), and the reference model's one invoke (ms p50)."""
    for _ in range(5):
        option.score(frame, list(BOXES))
        reference.invoke_only(1)
    t, r = [], []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        option.score(frame, list(BOXES))
        t.append((time.perf_counter_ns() - t0) / 1e6)
        r.append(reference.invoke_only(1) / 1e6)
    ref = percentile(r, 50)
    return {"p50_ms": round(percentile(t, 50), 3), "p95_ms": round(percentile(t, 95), 3),
            "reference_invoke_p50_ms": round(ref, 3), "p95_over_reference": round(percentile(t, 95) / ref, 2)}


def weed_masses(option, frames: list[np.ndarray], gate: VegetationGate, rule: SprayRule) -> np.ndarray:
    """Each tile's weed mass through the runtime's path (gate, then the option on the kept tiles), frame by frame;
    -1 for a tile the gate calls bare or the crop veto holds back (it never fires, at any threshold)."""
    out = np.full((len(frames), len(BOXES)), -1.0)
    for i, f in enumerate(frames):
        veg = gate.measure(f, BOXES)
        keep = [k for k in range(len(BOXES)) if not veg[k].gated]
        for k, s in zip(keep, option.score(f, [BOXES[k] for k in keep])):
            ev = rule.view(s.probs)
            out[i, k] = -1.0 if ev.vetoed else float(ev.weed_mass)
    return out.ravel()


def threshold_for_miss(masses: np.ndarray, truth: np.ndarray, target: float) -> float:
    """The highest threshold whose weed miss on these tiles is at most ``target`` (fewest crops sprayed)."""
    weed = truth == 1
    ok = [t for t in np.unique(np.clip(masses[weed], 0.0, 1.0)) if (weed & (masses < t)).sum() / weed.sum() <= target + 1e-12]
    return float(max(ok)) if ok else 0.0


def worst(rows: dict) -> dict:
    return {"crop_vs_weed": min(m["crop_vs_weed"]["rate"] for m in rows.values()),
            **{k: max(m[k]["rate"] for m in rows.values()) for k in ("weed_miss", "crop_sprayed", "background_fired")}}


def matched_operating_points(doc: dict, masses: dict, truth: np.ndarray, rows: list[str]) -> None:
    """Each option at the threshold whose clean weed miss is the first option's (chosen on these test tiles:
    indicative of how far apart the options are at one weed miss, not an operating point to ship)."""
    first = next(iter(doc["options"]))
    target = doc["options"][first]["rows"]["clean"]["weed_miss"]["rate"]
    weed, crop = truth == 1, truth == 0
    for name, o in doc["options"].items():
        clean = masses[name]["clean"]
        candidates = np.unique(np.clip(clean[weed], 0.0, 1.0))
        ok = [t for t in candidates if (weed & (clean < t)).sum() / weed.sum() <= target + 1e-12]
        t = float(max(ok)) if ok else 0.0

        def crop_rate(m: np.ndarray) -> float:
            return float((crop & (m >= t)).sum() / crop.sum())

        o["matched"] = {"threshold": round(t, 4), "weed_miss_clean": float((weed & (clean < t)).sum() / weed.sum()),
                        "crop_sprayed_clean": crop_rate(clean),
                        "crop_sprayed_worst": max(crop_rate(masses[name][r]) for r in rows)}


def markdown(doc: dict) -> str:
    def pct(d):
        return "n/a" if d["rate"] is None else f"{100 * d['rate']:.1f} % ({d['k']}/{d['n']})"

    lines = ["| option | scoring p50 / p95 ms | p95 / ref. invoke p50 | condition | crop vs weed | weed miss | "
             "crop sprayed | bare fired |", "|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, o in doc["options"].items():
        s = o["speed"]
        for i, (row, m) in enumerate(o["rows"].items()):
            head = (f"`{name}` | {s['p50_ms']:.2f} / {s['p95_ms']:.2f} | {s['p95_over_reference']:.1f}x" if i == 0
                    else " | | ")
            lines.append(f"| {head} | {row} | {pct(m['crop_vs_weed'])} | {pct(m['weed_miss'])} | "
                         f"{pct(m['crop_sprayed'])} | {pct(m['background_fired'])} |")
        w = o["worst"]
        lines.append(f"| | | | **worst row** | {100 * w['crop_vs_weed']:.1f} % | {100 * w['weed_miss']:.1f} % | "
                     f"{100 * w['crop_sprayed']:.1f} % | {100 * w['background_fired']:.1f} % |")
    lines += ["", "At one weed miss (each option's threshold set so that its clean weed miss is the first option's, "
              "on these test tiles):", "", "| option | threshold | clean weed miss | clean crop sprayed | "
              "worst-row crop sprayed |", "|---|---:|---:|---:|---:|"]
    for name, o in doc["options"].items():
        m = o["matched"]
        lines.append(f"| `{name}` | {m['threshold']:.3f} | {100 * m['weed_miss_clean']:.1f} % | "
                     f"{100 * m['crop_sprayed_clean']:.1f} % | {100 * m['crop_sprayed_worst']:.1f} % |")
    cal = {n: o["calibrated"] for n, o in doc["options"].items() if "calibrated" in o}
    if cal:
        first = next(iter(cal.values()))
        lines += ["", "Each option at its own threshold, chosen on validation-split frames (`--calibrate`) to give the "
                  f"first option's validation weed miss ({100 * first['val_weed_miss_target']:.1f} %), on the test "
                  "frames:", "", "| option | threshold | clean: crop vs weed | weed miss | crop sprayed | bare fired | "
                  "worst row: crop vs weed | weed miss | crop sprayed | bare fired |", "|---|---:|---:|---:|---:|---:|"
                  "---:|---:|---:|---:|"]
        for name, c in cal.items():
            r, w = c["rows"].get("clean"), c["worst"]
            lines.append(f"| `{name}` | {c['threshold']:.3f} | {pct(r['crop_vs_weed'])} | {pct(r['weed_miss'])} | "
                         f"{pct(r['crop_sprayed'])} | {pct(r['background_fired'])} | {100 * w['crop_vs_weed']:.1f} % | "
                         f"{100 * w['weed_miss']:.1f} % | {100 * w['crop_sprayed']:.1f} % | "
                         f"{100 * w['background_fired']:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "plant-seedlings-mnv2"),
                    help="bundle to score with (needs its frame-features export for frame@S)")
    ap.add_argument("--reference", default=str(REFERENCE), help="the speed reference bundle (one invoke)")
    ap.add_argument("--options", default="tiles,tiles@128,tiles@112,frame@1,frame@0.75,frame@0.625,frame@0.5",
                    help="comma-separated: tiles, tiles@P, frame@S")
    ap.add_argument("--rows", default=",".join(ROW_NAMES), help="conditions of train.perturb.SUITE")
    ap.add_argument("--per-photo", type=int, default=2, help="placements of each test photo (default 2)")
    ap.add_argument("--bare-share", type=float, default=0.2, help="share of bare tiles (default 0.2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-frames", type=int, default=100, help="frames timed per option (default 100)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--calibrate", action="store_true",
                    help="also score each option at its own threshold, chosen on validation-split frames to give the "
                         "first option's validation weed miss")
    ap.add_argument("--out", default="lane_scoring.json")
    ap.add_argument("--markdown", default="")
    ap.add_argument("--bench-frames", default="", help="also write clean frames where every tile holds a plant the "
                                                      "gate keeps to this folder (for edge-bench --images)")
    a = ap.parse_args(argv)
    bundle = load_bundle(a.model)
    rule = SprayRule.from_manifest(bundle.manifest)
    gate = VegetationGate(PRESETS["medium"])
    frames, truth = build_frames(a.model, a.per_photo, a.bare_share, a.seed)
    print(f"{len(frames)} frames, {int((truth == 1).sum())} weed / {int((truth == 0).sum())} crop / "
          f"{int((truth == -1).sum())} bare tiles", file=sys.stderr)
    if a.bench_frames:
        full, full_truth = build_frames(a.model, 1, 0.0, a.seed + 1)
        out = Path(a.bench_frames)
        out.mkdir(parents=True, exist_ok=True)
        kept = [f for f, t in zip(full, full_truth)  # every tile a plant the gate keeps
                if (t >= 0).all() and not any(v.gated for v in gate.measure(f, BOXES))]
        for i, f in enumerate(kept):
            cv2.imwrite(str(out / f"frame_{i:03d}.png"), f)
        print(f"{len(kept)} frames where every tile passes the gate -> {out}", file=sys.stderr)
    val = build_frames(a.model, a.per_photo, a.bare_share, a.seed + 2, split="val") if a.calibrate else None
    rows = a.rows.split(",")
    views = {row: [perturbed(f, row, i) for i, f in enumerate(frames)] for row in rows}
    reference = Classifier(load_bundle(a.reference), num_threads=a.threads, batch=False)
    doc = {"model": str(bundle.dir), "reference": a.reference, "frames": len(frames), "tiles": int(truth.size),
           "threshold": rule.threshold, "command": " ".join(["python tools/compare_lane_scoring.py", *(argv or sys.argv[1:])]),
           "options": {}}
    all_masses: dict[str, dict[str, np.ndarray]] = {}
    target = None  # the first option's weed miss on the validation frames, at the bundle's threshold
    for name in a.options.split(","):
        option = make_option(name, bundle, a.threads)
        result = {"speed": speed(option, frames[0], reference, a.speed_frames), "rows": {}}
        masses = {row: weed_masses(option, views[row], gate, rule) for row in rows}
        for row in rows:
            result["rows"][row] = rates(masses[row] >= rule.threshold, truth.ravel())
        result["worst"] = worst(result["rows"])
        if val is not None:
            vm = weed_masses(option, val[0], gate, rule)
            weed = val[1].ravel() == 1
            if target is None:
                target = float((weed & (vm < rule.threshold)).sum() / weed.sum())
            t = threshold_for_miss(vm, val[1].ravel(), target)
            cal = {row: rates(masses[row] >= t, truth.ravel()) for row in rows}
            result["calibrated"] = {"threshold": round(t, 4), "val_weed_miss_target": round(target, 4),
                                    "rows": cal, "worst": worst(cal)}
        all_masses[name] = masses
        doc["options"][name] = result
        option.close()
        print(f"{name}: {result['speed']} worst {result['worst']}", file=sys.stderr)
    matched_operating_points(doc, all_masses, truth.ravel(), rows)
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    print(text, end="")
    if a.markdown:
        Path(a.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
