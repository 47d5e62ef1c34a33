"""One benchmark run: what to measure (``RunSpec``) and the run object every kind of run fills.

Shared by the pipeline run (``runner``) and the naive loop (``baseline``): the run object's
skeleton, how the measured numbers are filled in (``finish``), the model facts and the id.
See docs/benchmark.md, ``runs[]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Optional

from edge.core.errors import EXIT_OK, ConfigError
from edge.core.metrics import STAGES
from edge.tools.bench.frames import FramesSpec
from edge.tools.bench.stats import ratio, summarise
from edge.tools.bench.system import loadavg, peak_rss, ru_maxrss_mib

ROLES = ("pipeline", "naive_baseline")
# The per-lane speed reference: the default bundle as shipped on 2026-11-23 (MobileNetV2, 160 px, int8), kept in the
# checkout (not in the wheel) so the ratio stays comparable when the default bundle changes (docs/benchmark.md)
REFERENCE_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "reference" / "mnv2-160-int8"
MAX_INVOKE_SAMPLES = 300

# What each of edge.core.metrics.STAGES covers, per kind of run (the JSON's ``stage_names``)
STAGE_NAMES = {
    "frame": {"capture_wait": "capture_wait", "preprocess": "preprocess", "inference": "inference",
              "decision": "decision", "actuation": "actuation", "end_to_end": "end_to_end"},
    "lanes": {"capture_wait": "capture_wait", "preprocess": "tiles preprocess",
              "inference": "tiles inference (batched)", "decision": "tiling + lane decisions + spray planning",
              "actuation": "actuation (scheduler thread, not in the loop)",
              "end_to_end": "capture to sprays planned"},
}


@dataclass(frozen=True)
class RunSpec:
    """One configuration. ``bundle`` is a bundle folder or name, ``variant`` one of its
    exports ("" = the main model). ``n_frames`` and/or ``seconds`` bound the measured
    part (whichever ends first); ``warmup`` frames run before it and are not counted."""

    role: str = "pipeline"
    bundle: str = ""
    variant: str = ""
    threads: int = 2
    frames: FramesSpec = field(default_factory=FramesSpec)
    n_frames: Optional[int] = 300
    seconds: Optional[float] = None
    warmup: int = 20
    config: Optional[str] = None  # edge-run TOML for the decision and safety settings
    scoring: str = ""  # per-lane runs: "" = the config's [model] scoring, "tiles", "frame" or "frame@S" (frame_scale S)
    reference: str = ""  # per-lane runs: a bundle whose one-image invoke p50 the frame's end-to-end p95 is divided by
    web_client: bool = False  # the live view on, one client reading its stream every other block (webload)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown run role {self.role!r}", "use one of: " + ", ".join(ROLES))
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}", "use e.g. --threads 1,2,4")
        if self.n_frames is None and self.seconds is None:
            raise ConfigError("a run needs a length", "give --frames N or --seconds S")
        if self.n_frames is not None and self.n_frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {self.n_frames}", "measure at least one frame")
        if self.seconds is not None and not self.seconds > 0:
            raise ConfigError(f"--seconds must be > 0, got {self.seconds}", "e.g. --seconds 30")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}", "e.g. --warmup 20")
        scoring_overrides(self.scoring)  # a bad --scoring entry fails here

    def model_overrides(self) -> dict:
        """The ``[model]`` keys this run sets over the config's."""
        return {"bundle": self.bundle, "variant": self.variant, "threads": self.threads,
                **scoring_overrides(self.scoring)}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        d = json.loads(text)
        d["frames"] = FramesSpec.from_dict(d.get("frames") or {})
        return cls(**d)


def scoring_overrides(text: str) -> dict:
    """``[model]`` keys of a ``--scoring`` entry: "" (none), "tiles", "frame", "frame@S" (S = frame_scale)."""
    kind, at, scale = text.partition("@")
    if text == "":
        return {}
    if kind == "tiles" and not at:
        return {"scoring": "tiles"}
    if kind == "frame":
        if not at:
            return {"scoring": "frame"}
        try:
            value = float(scale)
        except ValueError:
            value = float("nan")
        if 0.1 <= value <= 1.0:
            return {"scoring": "frame", "frame_scale": value}
    raise ConfigError(f"--scoring {text!r} is not tiles, frame or frame@S with S in 0.1..1",
                      "e.g. --scoring tiles,frame@0.5,frame@0.75")


def model_info(bundle) -> dict:
    """The ``model`` object of a run: what exactly was measured."""
    from edge.inference.bundle import sha256_file

    m = bundle.manifest
    inp = bundle.manifest.input
    return {
        "bundle": m.name,
        "dir": str(bundle.dir),
        "variant": bundle.quantization,
        "file": bundle.model_path.name,
        "size_bytes": bundle.model_path.stat().st_size,
        "sha256": sha256_file(bundle.model_path),
        "input": f"{inp.width}x{inp.height}",
        "backbone": m.backbone,
        "untrained_demo": m.untrained_demo,
    }


def run_id(role: str, bundle_name: str, quantization: str, threads: int, scoring: str = "") -> str:
    kind = "naive" if role == "naive_baseline" else "pipeline"
    return f"{bundle_name}/{kind}/{quantization}/t{threads}" + (f"/{scoring}" if scoring else "")


def result_skeleton(spec: RunSpec) -> dict:
    return {
        "id": "",
        "role": spec.role,
        "ok": False,
        "error": None,
        "exit_code": EXIT_OK,
        "model": None,
        "runtime": None,
        "threads": spec.threads,
        "warmup_frames": spec.warmup,
        "frames": 0,
        "duration_s": None,
        "fps": None,
        "dropped": 0,
        "stopped_by": None,
        "weed_frames": 0,
        "spray_frames": 0,
        "stages_ms": {s: summarise([]) for s in STAGES},
        "raw_invoke_ms": summarise([]),
        "e2e_over_invoke_p50": None,
        "vs_naive": None,
        "peak_rss_mib": None,
        "peak_rss_source": None,
        "ru_maxrss_mib": None,
        "loadavg_start": None,
        "loadavg_end": None,
        "pid": os.getpid(),
        "mode": "frame",
        "stage_names": dict(STAGE_NAMES["frame"]),
        "spray": None,
        "scoring": None,
        "reference": None,
        "e2e_p95_over_reference_invoke_p50": None,
        "web": None,
    }


def finish(res: dict, timings_by_stage: dict, invoke_ms: list, n: int, span_ns: Optional[int]) -> dict:
    """Fill the measured numbers of a run (shared by the pipeline and the baseline)."""
    res["frames"] = n
    res["stages_ms"] = {s: summarise(timings_by_stage.get(s, [])) for s in STAGES}
    res["raw_invoke_ms"] = summarise(invoke_ms)
    res["e2e_over_invoke_p50"] = ratio(res["stages_ms"]["end_to_end"]["p50"], res["raw_invoke_ms"]["p50"])
    if span_ns and span_ns > 0 and n > 0:
        res["duration_s"] = round(span_ns / 1e9, 4)
        res["fps"] = round(n / (span_ns / 1e9), 3)
    res["peak_rss_mib"], res["peak_rss_source"] = peak_rss()
    res["ru_maxrss_mib"] = ru_maxrss_mib()
    res["loadavg_end"] = loadavg()
    res["ok"] = n > 0
    if n == 0:
        res["error"] = "no frame was measured (the source ended during the warm-up?)"
    return res


def invoke_samples(invoke_once, n: int) -> list[float]:
    """Milliseconds of ``n`` bare interpreter invokes on the current input (the limit)."""
    return [invoke_once() / 1e6 for _ in range(max(1, min(n, MAX_INVOKE_SAMPLES)))]
