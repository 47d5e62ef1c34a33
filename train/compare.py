"""`weed-train compare`: backbones x modes on one split, one table.

For each backbone the photos are loaded once and their pooled embeddings computed once
(``logreg`` and ``features`` train on those cached embeddings, in seconds); ``finetune``
and ``scratch`` use the short schedule given on the command line. Every model is
exported to int8, scored on the test split through the edge runtime (threshold chosen on
validation) and timed with LiteRT. Xception is only run when asked for: its weights'
source states no licence, so nothing derived from it may be shipped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from train.fit import FitConfig, FitResult
    from train.runs import DataConfig, Prepared, Splits

log = logging.getLogger(__name__)

DEFAULT_BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v1")
DEFAULT_MODES = ("logreg", "features", "finetune")


def run_compare(dc: DataConfig, make_fit_config: Callable[..., FitConfig], backbones: Sequence[str],
                modes: Sequence[str], out: Path, progress: bool = True) -> str:
    """Train/export/evaluate every backbone x mode; write compare.md/.json into ``out``; return the table."""
    from edge.core.errors import WeedDetectorError
    from train.evaluate import role_vector
    from train.pipeline import load_splits, prepare

    _check_names(backbones, modes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(dc, progress=progress)
    loaded: dict[int, Splits] = {}
    rows: list[dict] = []
    for backbone in backbones:
        size = make_fit_config(backbone=backbone, mode=modes[0]).input_size
        if size not in loaded:
            loaded[size] = load_splits(prep, size, dc.resize, tag=f" @{size}")
        splits = loaded[size]
        cache: list[tuple[np.ndarray, np.ndarray]] = []  # (train, val) embeddings of the pretrained backbone, once
        for mode in modes:
            row = {"backbone": backbone, "mode": mode, "input": size}
            t0 = time.perf_counter()
            try:
                res, seed = _fit_one(make_fit_config, backbone, mode, splits, role_vector(prep.labels, prep.roles),
                                     cache, row)
            except WeedDetectorError as err:  # e.g. weights not installed: say so in the table
                row["error"] = str(err)
                rows.append(row)
                log.warning("%s/%s skipped: %s", backbone, mode, err)
                continue
            row["train_s"] = round(time.perf_counter() - t0, 1)
            row.update(_score_int8(res, seed, backbone, mode, size, splits, prep, dc, out / "bundles"))
            rows.append(row)
            log.info("%s/%s: species %.3f, crop-vs-weed %.3f", backbone, mode, row["species_accuracy"],
                     row["crop_vs_weed_accuracy"])
    table = render_table(rows)
    (out / "compare.md").write_text(
        "# weed-train compare (test split, int8 through the edge runtime)\n\n" + table + "\n"
    )
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    return table


def _check_names(backbones: Sequence[str], modes: Sequence[str]) -> None:
    from train.backbones import BACKBONES
    from train.data import DataError
    from train.fit import MODES

    unknown = [b for b in backbones if b not in BACKBONES] + [m for m in modes if m not in MODES]
    if unknown:
        raise DataError(f"unknown backbones/modes {unknown}", f"backbones: {', '.join(BACKBONES)}; modes: {', '.join(MODES)}")


def _fit_one(make_fit_config: Callable[..., FitConfig], backbone: str, mode: str, splits: Splits, roles: np.ndarray,
             cache: list[tuple[np.ndarray, np.ndarray]], row: dict) -> tuple[FitResult, int]:
    """One backbone x mode fitted (the weights' name goes into ``row``); logreg and features share ``cache``.

    ``roles``: per class id, 1 weed, 0 crop, -1 background (the augmentation's ground and composite tiles).
    """
    from train.fit import build_backbone, embed, fit

    x, y, _ = splits
    cfg = make_fit_config(backbone=backbone, mode=mode)
    built = build_backbone(cfg, "none" if mode == "scratch" else None)
    row["weights"] = built.weights_source
    on_embeddings = mode in ("logreg", "features")
    if on_embeddings and not cache:
        cache.append((embed(built.model, x["train"], desc=f"{backbone} embeddings train"),
                      embed(built.model, x["val"], desc=f"{backbone} embeddings val")))
    if mode == "features":
        cfg = make_fit_config(backbone=backbone, mode=mode, head_on_embeddings=True)
    res = fit(cfg, x["train"], y["train"], x["val"], y["val"], len(roles), built=built,
              embeddings=cache[0] if on_embeddings else None, roles=roles)
    return res, cfg.seed


def _score_int8(res: FitResult, seed: int, backbone: str, mode: str, size: int, splits: Splits, prep: Prepared,
                dc: DataConfig, bundles: Path) -> dict:
    """The model as an int8 bundle: threshold chosen on val, test metrics and latency through the edge runtime."""
    from edge.inference.bundle import load_bundle, write_bundle
    from train import evaluate as ev
    from train import export as ex

    x, y, raw = splits
    labels, roles = prep.labels, prep.roles
    rep = ex.representative_images(x["train"], y["train"], 300, seed)
    folder = bundles / f"{backbone}-{mode}"
    tfl = ex.write_tflite(ex.convert(res.model, "int8", rep), folder / "staged_int8.tflite")
    manifest = ex.bundle_manifest(
        tfl, "int8", size, dc.resize, name=f"compare-{backbone}-{mode}", **ex.role_fields(labels, roles),
        backbone=backbone, weights_source=res.weights_source, preprocessing=res.preprocessing,
        description="compare run (not for shipping)",
    )
    write_bundle(folder, manifest, tfl)
    tfl.unlink()
    b = load_bundle(folder)
    pv = ev.classify_all(b, raw["val"], desc=f"{backbone}/{mode} val")
    thr = ev.choose_threshold(ev.threshold_sweep(pv, y["val"], labels, roles))
    pt = ev.classify_all(b, raw["test"], desc=f"{backbone}/{mode} test")
    m = ev.evaluate(pt, y["test"], labels, roles, thr)
    lat = ex.latency_ms(b, runs=50, num_threads=2)
    return {
        "species_accuracy": m["species_accuracy"], "crop_vs_weed_accuracy": m["crop_vs_weed_accuracy"],
        "weed_miss": m["weed_miss"]["rate"], "crop_sprayed": m["crop_sprayed"]["rate"],
        "background_fired": m["background"]["fired"]["rate"], "threshold": thr,
        "int8_bytes": (folder / "model.tflite").stat().st_size, "p50_ms_2_threads": lat["p50_ms"],
    }


def render_table(rows: Sequence[dict]) -> str:
    from train.evaluate import pct

    lines = [
        "| backbone | mode | input | species acc. | crop-vs-weed acc. | weed miss | crop sprayed | background fired | int8 size | LiteRT p50 (2 thr) | train time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backbone']} | {r['mode']} | {r['input']} | skipped: {r['error']} ||||||||")
            continue
        lines.append(
            f"| {r['backbone']} | {r['mode']} | {r['input']} | {pct(r['species_accuracy'])} | {pct(r['crop_vs_weed_accuracy'])} | "
            f"{pct(r['weed_miss'])} | {pct(r['crop_sprayed'])} | {pct(r['background_fired'])} | "
            f"{r['int8_bytes'] / 1e6:.2f} MB | {r['p50_ms_2_threads']:.2f} ms | {r['train_s']:.0f} s |"
        )
    return "\n".join(lines)
