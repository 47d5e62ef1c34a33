"""One benchmark configuration, meant to run in a process of its own.

``python -m edge.tools.bench.runner --spec JSON [--out FILE]`` runs one :class:`RunSpec` and
writes one run object (see docs/benchmark.md, ``runs[]``) as JSON to FILE or stdout.
A fresh interpreter per configuration keeps runs independent (no warm caches, no
shared thread pools) and makes the peak memory that of this configuration alone.

The run object's skeleton and the numbers every run fills are ``edge.tools.bench.runs``'s,
shared with the naive loop (``baseline``). The pipeline run is built from the same pieces
as ``edge-run`` (``edge.app.wiring``'s classifier and decider, the ``[source]`` section,
``RunLoop`` with the ``WholeFrameProcessor`` and its ``Actuator``, the dry-run output):
only the frame callback that collects timings and the stop rule are the benchmark's.

With a ``[spray]`` section in the config the run is edge-run's per-lane path instead
(``edge.app.wiring.make_lane_processor``: ``LaneProcessor`` — tiles, one batched classify per
frame, a decision per lane, sprays planned into the scheduler thread on the dry-run
output), at a fixed speed, without the enable switch or the spray log; the run's
``mode`` is ``lanes``, ``stage_names`` says what each stage covers, and ``spray`` holds
the lane figures and the max speed computed from the measured latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from edge.tools.bench.baseline import run_naive
from edge.tools.bench.frames import FramesSpec, GeneratedSource
from edge.tools.bench.runs import (STAGE_NAMES, RunSpec, finish, invoke_samples, model_info, result_skeleton,
                                   run_id)
from edge.tools.bench.stats import ratio, summarise
from edge.tools.bench.system import loadavg
from edge.core.errors import EXIT_INTERNAL, EXIT_OK, EXIT_SOURCE, WeedDetectorError
from edge.core.metrics import STAGES

if TYPE_CHECKING:
    from edge.loop.per_lane import LaneProcessor
    from edge.spray.config import SprayConfig

log = logging.getLogger(__name__)

__all__ = ["RunSpec", "run", "run_pipeline", "main"]

BENCH_SPEED_KMH = 6.0  # lanes runs whose config has no fixed speed (GPS, encoder) plan at this speed


class _Collector:
    """The pipeline's ``on_frame``: skips the warm-up, keeps each measured frame's
    timings, stops the run when ``seconds`` have been measured."""

    def __init__(self, warmup: int, seconds: Optional[float], stop: threading.Event, source):
        self.warmup, self.stop, self.source = warmup, stop, source
        self.limit_ns = int(seconds * 1e9) if seconds else None
        self.seen = 0
        self.timings: list = []
        self.weed_frames = 0
        self.spray_frames = 0
        self.t0_ns: Optional[int] = None
        self.t_last_ns: Optional[int] = None
        self.dropped0 = 0
        self.counter = lambda: (0, 0)  # (invokes, bare tiles) so far, read when the measured part starts
        self.count0 = (0, 0)
        self.measured: Callable[[object], None] = lambda r: None  # also called with each measured frame's result

    def begin(self) -> None:
        """Called just before the pipeline runs (the measured part starts here without warm-up)."""
        if self.warmup == 0:
            self.t0_ns = time.perf_counter_ns()
            self.dropped0 = self.source.dropped
            self.count0 = self.counter()

    def __call__(self, r) -> None:
        now = time.perf_counter_ns()
        self.seen += 1
        if self.seen <= self.warmup:
            if self.seen == self.warmup:
                self.t0_ns = now
                self.dropped0 = self.source.dropped
                self.count0 = self.counter()
            return
        self.timings.append(r.timings)
        self.measured(r)
        self.weed_frames += int(r.decision.weed_frame)
        self.spray_frames += int(r.decision.spray)
        self.t_last_ns = now
        if self.limit_ns is not None and now - self.t0_ns >= self.limit_ns:
            self.stop.set()


def _frames_overrides(spec: FramesSpec) -> dict:
    if spec.kind == "generated":
        return {}  # not an edge-run source: built by open_frames
    if spec.kind == "camera":
        o = {"kind": "camera", "camera": spec.index, "width": spec.width, "height": spec.height, "fps": spec.fps}
        return {k: v for k, v in o.items() if v or k == "camera"}
    return {"kind": spec.kind, "path": spec.path, "loop": True, "realtime": False}


def open_frames(spec: FramesSpec, cfg, infer_size: tuple[int, int]):
    """The pipeline's frame source: edge-run's own sources for video, images and
    cameras (files looped), or generated frames."""
    if spec.kind == "generated":
        src = GeneratedSource(spec.width, spec.height, spec.seed)
        src.start()
        return src
    from edge.sources import open_source

    return open_source(cfg.source, infer_size=infer_size)


def bench_spray(spray):
    """The ``[spray]`` section a lanes run uses: the config's, at a fixed speed (its own, else
    ``BENCH_SPEED_KMH``), without an enable switch (no GPIO) or a spray log (no files)."""
    kmh = spray.speed_kmh if spray.speed_source == "fixed" and spray.speed_kmh > 0 else BENCH_SPEED_KMH
    return spray.model_copy(update={"speed_source": "fixed", "speed_kmh": kmh, "enable_pin": None, "log_jsonl": ""})


def _finite(x: float) -> Optional[float]:
    return round(x, 2) if x == x and abs(x) != float("inf") else None


def spray_result(processor: "LaneProcessor", original_spray: "SprayConfig", e2e_p95: Optional[float],
                 fps: Optional[float], n: int, invokes: int, gated: int, gate_ms: Sequence[float]) -> dict:
    """The ``spray`` object of a lanes run: tiling, vegetation gate, classify path, spray counts and the
    max speed from this run's measured latency (end-to-end p95 + the scheduler's switching p95)."""
    from edge.loop.stats import max_speed_line

    planner, sched = processor.planner, processor.scheduler
    s = planner.geometry
    summary = sched.summary()
    rows, tiles = planner.grid or (0, 0)
    period = 1000.0 / fps if fps else None
    m = processor.max_speed(e2e_p95 or 0.0, fps or 0.0)
    kmh = planner.speed.speed_kmh()
    fixed = original_spray.speed_source == "fixed"
    line_fields = {**summary, "max_speed_kmh": m.max_kmh, "landing_kmh": m.landing_kmh, "coverage_kmh": m.coverage_kmh,
                   "limited_by": m.limited_by, "latency_ms": m.latency_ms, "too_slow_frames": planner.too_slow_frames,
                   "disabled_frames": planner.disabled_frames}
    for k in ("planned", "late", "missed", "opens", "max_on_trips"):
        line_fields.setdefault(k, 0)
    return {
        "lanes": s.lanes,
        "tile_rows": rows,
        "tiles_per_frame": tiles,
        "classify": planner.scorer.mode,
        "invokes_per_frame": round(invokes / n, 3) if n else None,
        "gate": "off" if planner.vegetation is None else planner.vegetation.params.describe(),
        "gated_tiles_per_frame": round(gated / n, 3) if n and planner.vegetation is not None else None,
        "gate_ms": summarise(list(gate_ms)),
        "speed_kmh": kmh,
        "speed_note": "the config's fixed speed" if fixed else
                      f"{original_spray.speed_source} speed source replaced by a fixed {kmh:g} km/h",
        "planned": int(summary.get("planned", 0)),
        "late": int(summary.get("late", 0)),
        "missed": int(summary.get("missed", 0)),
        "switch_delay_p95_ms": summary.get("switch_delay_p95_ms"),
        "latency_ms": round(m.latency_ms, 2),
        "frame_period_ms": round(period, 3) if period else None,
        "max_speed_kmh": round(m.max_kmh, 2),
        "landing_kmh": _finite(m.landing_kmh),
        "coverage_kmh": _finite(m.coverage_kmh),
        "limited_by": m.limited_by,
        "max_speed_line": max_speed_line(line_fields),
    }


def run_pipeline(spec: RunSpec) -> dict:
    """Run the edge pipeline for one configuration and return its run object (the per-lane
    processor when the config has a ``[spray]`` section)."""
    from edge.app.wiring import load_classifier, make_decider, make_gate, make_lane_processor, with_spray_channels
    from edge.config import load_config
    from edge.loop.actuator import Actuator
    from edge.loop.per_lane import LaneProcessor
    from edge.loop.runner import RunLoop
    from edge.loop.whole_frame import WholeFrameProcessor
    from edge.outputs import DryRunOutputConfig, PinOutputConfig, build_output

    res = result_skeleton(spec)
    res["loadavg_start"] = loadavg()
    cfg = load_config(spec.config, {"model": spec.model_overrides(), "source": _frames_overrides(spec.frames)})
    original_spray = cfg.spray
    if original_spray is not None:
        res["mode"] = "lanes"
        res["stage_names"] = dict(STAGE_NAMES["lanes"])
        cfg = with_spray_channels(cfg.model_copy(update={"spray": bench_spray(original_spray)}))
    # Always the dry-run output (a benchmark must not move valves); as many channels as configured.
    pins = cfg.outputs.pins if isinstance(cfg.outputs, PinOutputConfig) else ()
    channels = cfg.outputs.channels or len(pins) or 1
    out_spec = DryRunOutputConfig(channels=channels, max_on_s=cfg.outputs.max_on_s)

    classifier = load_classifier(cfg)
    decider = make_decider(cfg, classifier)
    res["id"] = run_id(spec.role, classifier.bundle.name, classifier.bundle.quantization, spec.threads, spec.scoring)
    res["model"] = model_info(classifier.bundle)
    rt = classifier.runtime
    res["runtime"] = {"name": rt.name, "version": rt.version, "delegate": rt.delegate}
    inp = classifier.bundle.manifest.input
    stop = threading.Event()
    with ExitStack() as stack:
        stack.callback(classifier.close)
        out = build_output(out_spec)
        stack.callback(out.close)
        source = open_frames(spec.frames, cfg, (inp.width, inp.height))
        stack.callback(source.close)
        collect = _Collector(spec.warmup, spec.seconds, stop, source)
        gate_ms: list[float] = []
        kw = dict(
            stop=stop,
            stall_timeout_s=cfg.safety.stall_timeout_s,
            stats_interval_s=1e9,  # no periodic stats line inside a measurement
            max_frames=spec.warmup + spec.n_frames if spec.n_frames is not None else None,
            on_frame=collect,
        )
        lanes: LaneProcessor | None = None
        if original_spray is not None:
            lanes = make_lane_processor(cfg, classifier, out, stack)
            collect.measured = lambda r: gate_ms.append(r.gate_ms)  # r: a LaneFrameResult
            if cfg.model.scoring == "frame":
                res["stage_names"].update(preprocess="frame resize", inference="one backbone invoke over the frame + "
                                                                                "per-tile pooling and head")
        collect.counter = lambda: ((classifier.invokes, 0) if lanes is None else
                                   (lanes.planner.scorer.invokes, lanes.planner.tiles_gated))
        processor = lanes or WholeFrameProcessor(classifier, decider, Actuator(out, max_on_s=cfg.safety.max_spray_s),
                                                 vegetation=make_gate(cfg))
        if make_gate(cfg) is not None:  # the gate's time is part of preprocess, and the name says so
            res["stage_names"]["preprocess"] = "vegetation gate + " + res["stage_names"]["preprocess"]
        web = None
        if spec.web_client:  # edge-run's live view and one client reading its stream, every other block
            from edge.app.live import start_live_view
            from edge.inputs.pause import SprayPause
            from edge.tools.bench.webload import StreamClient, WebLoad

            live_cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"listen": "127.0.0.1:0"})})
            live = start_live_view(live_cfg, processor, out, SprayPause(None), stack)
            assert live is not None
            client = StreamClient(int(live.url.rstrip("/").rsplit(":", 1)[1]), stop).start()
            stack.callback(client.close)
            web = WebLoad(client, live.hub)
            measured = collect.measured
            collect.measured = lambda r: (measured(r), web.measured(r))
            kw.update(observer=live.hub.publish, maintain=(live.tuning.apply,))
        collect.begin()
        summary = RunLoop(source, processor, **kw).run()
        res["stopped_by"] = summary.stopped_by
        res["dropped"] = max(0, source.dropped - collect.dropped0)
        n = len(collect.timings)
        invokes, gated = (now - then for now, then in zip(collect.counter(), collect.count0))
        if lanes is not None:
            grid = lanes.planner.grid
            images = grid[1] if grid else 1
            # the floor of a frame: the invoke(s) of all its tiles
            invoke_ms = invoke_samples(lambda: lanes.planner.scorer.invoke_only(images), n) if n else []
            res["scoring"] = lanes.planner.scorer.describe()
        else:
            invoke_ms = invoke_samples(classifier.invoke_only, n) if n else []
    res["weed_frames"], res["spray_frames"] = collect.weed_frames, collect.spray_frames
    by_stage = {s: [getattr(t, s) for t in collect.timings] for s in STAGES}
    span = (collect.t_last_ns - collect.t0_ns) if (collect.t_last_ns and collect.t0_ns) else None
    res = finish(res, by_stage, invoke_ms, n, span)
    if web is not None:
        from edge.tools.bench.webload import web_result

        res["web"] = web_result(by_stage["end_to_end"], web.watched, web.client, live.hub, cfg.web)
    if lanes is not None and original_spray is not None:
        res["spray"] = spray_result(lanes, original_spray, res["stages_ms"]["end_to_end"]["p95"], res["fps"], n,
                                    invokes, gated, gate_ms)
        if spec.reference and n:
            res["reference"] = reference_invoke(spec.reference, spec.threads, n)
            res["e2e_p95_over_reference_invoke_p50"] = ratio(res["stages_ms"]["end_to_end"]["p95"],
                                                            res["reference"]["invoke_ms"]["p50"])
    return res


def reference_invoke(reference: str, threads: int, n: int) -> dict:
    """The ``reference`` object of a per-lane run: one-image invokes of the reference bundle (``--reference``),
    measured in this process right after the run, with as many threads, on a model-sized grey image."""
    import numpy as np

    from edge.inference.bundle import load_bundle
    from edge.inference.classifier import Classifier

    with Classifier(load_bundle(reference), num_threads=threads, batch=False) as ref:
        inp = ref.bundle.manifest.input
        ref.classify(np.full((inp.height, inp.width, 3), 128, np.uint8))  # fills the input tensor; warms up
        samples = invoke_samples(ref.invoke_only, max(n, 100))
        return {"bundle": ref.bundle.name, "dir": str(ref.bundle.dir), **{k: v for k, v in model_info(ref.bundle).items()
                                                                          if k in ("file", "sha256", "input")},
                "invoke_ms": summarise(samples)}


def run(spec: RunSpec) -> dict:
    if spec.role == "naive_baseline":
        return run_naive(spec)
    return run_pipeline(spec)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.tools.bench.runner",
                                description="Run one edge-bench configuration (edge-bench starts this per configuration).")
    p.add_argument("--spec", required=True, help="the RunSpec as JSON")
    p.add_argument("--out", metavar="FILE", help="write the run JSON here (default: stdout)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = EXIT_OK
    try:
        spec = RunSpec.from_json(args.spec)
    except (ValueError, TypeError) as e:
        print(f"edge-bench runner: error: --spec is not a valid RunSpec ({e})", file=sys.stderr)
        return EXIT_INTERNAL
    except WeedDetectorError as e:
        print(f"edge-bench runner: error: {e}", file=sys.stderr)
        return e.exit_code
    try:
        res = run(spec)
        if not res["ok"]:
            code = res["exit_code"] = EXIT_SOURCE
    except WeedDetectorError as e:
        res = result_skeleton(spec)
        res.update(error=str(e), exit_code=e.exit_code)
        code = e.exit_code
    except Exception as e:  # report it in the JSON too: the parent goes on with the other configurations
        log.exception("internal error in the benchmark run")
        res = result_skeleton(spec)
        res.update(error=f"internal error: {e.__class__.__name__}: {e}", exit_code=EXIT_INTERNAL)
        code = EXIT_INTERNAL
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
