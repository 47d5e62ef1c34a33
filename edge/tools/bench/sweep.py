"""The configurations of one ``edge-bench`` invocation, each run in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from edge.tools.bench.frames import FramesSpec
from edge.tools.bench.runs import RunSpec, result_skeleton, run_id, scoring_overrides
from edge.tools.bench.stats import ratio
from edge.core.errors import EXIT_INTERNAL, BundleError, ConfigError, SourceError


@dataclass(frozen=True)
class Planned:
    spec: RunSpec
    id: str  # the run id it will have (known before it runs)


def plan(models: Sequence[str], variants: Sequence[str], threads: Sequence[int], frames: FramesSpec,
         n_frames: Optional[int], seconds: Optional[float], warmup: int, config: Optional[str] = None,
         baseline: bool = True, scorings: Sequence[str] = ("",), reference: str = "",
         web_client: bool = False) -> list[Planned]:
    """Every configuration, checked before anything runs: each bundle and variant is
    loaded (sha256 verified), file sources must exist. Per bundle: the naive baseline
    first (when asked), then variants x threads x scorings (``--scoring``, per-lane configs only)."""
    from edge.tools.bench.baseline import float32_bundle
    from edge.inference.bundle import load_bundle

    if frames.kind in ("video", "images") and not os.path.exists(frames.path):
        raise SourceError(f"{frames.kind} path {frames.path} does not exist",
                          "check the path (relative paths start in the current directory)")
    scorings = list(scorings) or [""]
    for s in scorings:  # a bad entry is one line before anything loads
        scoring_overrides(s)
    if config:
        from edge.config import load_config

        load_config(config)  # a bad config fails here, once, not in every child
        for s in scorings:  # and so does a scoring it cannot take (frame without [spray])
            load_config(config, {"model": scoring_overrides(s)})
    elif any(scorings):
        raise ConfigError("--scoring chooses how per-lane runs score their tiles; it needs --config with a [spray] "
                          "section", "add --config FILE (with [spray]) or leave --scoring out")
    if reference:
        reference = str(load_bundle(reference).dir)
    out: list[Planned] = []
    for ref in models or [""]:
        main = load_bundle(ref or None)
        ref = str(main.dir)  # children get the folder, not a name to resolve again
        if baseline:
            fb = float32_bundle(ref)
            spec = RunSpec("naive_baseline", ref, "", 1, frames, n_frames, seconds, warmup, config)
            out.append(Planned(spec, run_id("naive_baseline", fb.name, fb.quantization, 1)))
        for v in variants or [""]:
            b = load_bundle(ref, variant=v or None)
            for t in threads:
                for s in scorings:
                    spec = RunSpec("pipeline", ref, v, t, frames, n_frames, seconds, warmup, config, s, reference,
                                   web_client)
                    out.append(Planned(spec, run_id("pipeline", b.name, b.quantization, t, s)))
    ids = [p.id for p in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise BundleError(f"configurations repeat: {', '.join(dup)}", "list each bundle, variant and thread count once")
    return out


def run_in_subprocess(p: Planned, timeout_s: float) -> tuple[dict, str]:
    """Run one configuration with ``python -m edge.tools.bench.runner``; (run object, its stderr).
    A child that fails still yields a run object, with ``ok`` false and ``error`` set."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as d:
        out = Path(d) / "run.json"
        cmd = [sys.executable, "-m", "edge.tools.bench.runner", "--spec", p.spec.to_json(), "--out", str(out)]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
            stderr, rc = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            res = result_skeleton(p.spec)
            res.update(id=p.id, pid=None, error=f"timed out after {timeout_s:g} s (raise --timeout or measure fewer frames)",
                       exit_code=EXIT_INTERNAL)
            return res, err
        res = None
        if out.is_file():
            try:
                res = json.loads(out.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                res = None
        if res is None:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            res = result_skeleton(p.spec)
            res.update(pid=None, error=f"the runner exited with code {rc} without a result: {tail}",
                       exit_code=rc or EXIT_INTERNAL)
        if not res.get("id"):
            res["id"] = p.id
        return res, stderr


def attach_naive_ratios(runs: list[dict]) -> None:
    """``vs_naive`` of each pipeline run: its end-to-end p50/p95 over those of the naive
    baseline of the same bundle (below 1: the pipeline is faster). Not for per-lane runs
    (``mode`` lanes): the naive loop classifies one whole frame, they classify all its tiles."""
    naive = {r["model"]["dir"]: r for r in runs if r["role"] == "naive_baseline" and r["ok"] and r["model"]}
    for r in runs:
        if r["role"] != "pipeline" or not r["ok"] or not r["model"]:
            continue
        if r.get("mode") == "lanes":
            r["vs_naive"] = None
            continue
        base = naive.get(r["model"]["dir"])
        if base is None:
            r["vs_naive"] = None
            continue
        ours, theirs = r["stages_ms"]["end_to_end"], base["stages_ms"]["end_to_end"]
        r["vs_naive"] = {"baseline_id": base["id"], "p50": ratio(ours["p50"], theirs["p50"]),
                         "p95": ratio(ours["p95"], theirs["p95"])}


def run_all(planned: Sequence[Planned], timeout_s: float = 600.0,
            progress: Optional[Callable[[int, int, Planned, Optional[dict], str], None]] = None) -> list[dict]:
    """Run every configuration in turn (never two at once: they would share the CPU)."""
    runs = []
    for i, p in enumerate(planned, 1):
        if progress:
            progress(i, len(planned), p, None, "")
        res, stderr = run_in_subprocess(p, timeout_s)
        runs.append(res)
        if progress:
            progress(i, len(planned), p, res, stderr)
    attach_naive_ratios(runs)
    return runs
