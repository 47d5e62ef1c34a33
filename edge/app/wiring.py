"""Config -> the objects of a run, in the order that keeps the valves safe.

1. the frame log and the trigger-frame folder are opened: a file the user named that
   cannot be written is an error at start (``ConfigError``, exit 3; the dry-run state
   file, opened with the outputs, exit 6; the spray log, opened with the lane processor,
   exit 3), while mid-run writing never stops detection;
2. the model bundle is loaded and its interpreter checked (bad model: nothing touched);
3. the outputs are built (every channel off);
4. systemd is told READY (when run as a ``Type=notify`` service), then the frame source
   is opened;
5. the run loop runs (a whole-frame or a per-lane processor); on any way out, outputs go off and everything is closed.

Unattended operation (the ``[service]`` section, ``edge.service.config``): STATUS and
WATCHDOG notifications from the loop's heartbeat, a lost camera reopened with backoff,
a lost serial controller reconnected with backoff, and size caps on the logs.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from edge.loop.actuator import Actuator
from edge.inference.bundle import load_bundle
from edge.config import Config
from edge.service.config import ServiceConfig
from edge.decide.decider import Decider
from edge.decide.rule import SprayRule
from edge.app.live import LiveView, labelling_pages, open_pause, start_live_view
from edge.inputs.enable import gate, open_enable_switch
from edge.inputs.digital import input_spec
from edge.inference import Classifier
from edge.inference.scoring import TileScorer
from edge.inference.vegetation import VegetationGate
from edge.service.notify import SdNotify, ServiceNotifier
from edge.outputs import DryRunOutputConfig, SerialOutputConfig, build_output
from edge.outputs.base import Output
from edge.outputs.channels import ChannelOutput, Interlock
from edge.loop.processor import FrameProcessor, ProcessedFrame
from edge.loop.runner import RunLoop
from edge.loop.stats import RunStats
from edge.loop.whole_frame import WholeFrameProcessor
from edge.core.reconnect import Backoff
from edge.core.text import one_line
from edge.outputs.reconnecting import ReconnectingOutput
from edge.service.records import JsonlLog, TriggerSaver
from edge.sources import open_source
from edge.sources.base import FrameSource, ReopenableSource
from edge.sources.reconnecting import ReconnectingSource

if TYPE_CHECKING:
    from edge.loop.per_lane import LanePlanner, LaneProcessor
    from edge.spray.geometry import Geometry
    from edge.spray.scheduler import SprayScheduler
    from edge.spray.speed import SpeedSource

log = logging.getLogger(__name__)


def load_classifier(cfg: Config) -> Classifier:
    bundle = load_bundle(cfg.model.bundle or None, variant=cfg.model.variant or None)
    if bundle.manifest.untrained_demo:
        log.warning("model '%s' is an UNTRAINED DEMO bundle: its answers mean nothing about plants", bundle.name)
    return Classifier(bundle, num_threads=cfg.model.threads)


def make_gate(cfg: Config) -> VegetationGate | None:
    """The vegetation gate ``[gate]`` asks for (by default on with ``[spray]``, off without), or None."""
    return VegetationGate(cfg.gate.params()) if cfg.gate.active(per_lane=cfg.spray is not None) else None


def describe_gate(cfg: Config) -> str:
    """One line: whether the vegetation gate runs, and its numbers."""
    if not cfg.gate.active(per_lane=cfg.spray is not None):
        why = "[gate] enabled = false" if cfg.gate.enabled is False else "whole-frame mode; [gate] enabled = true"
        return f"vegetation gate: off ({why})"
    unit = "tile" if cfg.spray is not None else "frame"
    return (f"vegetation gate: {cfg.gate.sensitivity} ({cfg.gate.params().describe()}): a bare {unit} is not "
            "classified and never sprayed")


def spray_rule(cfg: Config, classifier: Classifier) -> SprayRule:
    """The bundle's rule with the ``[decision]`` overrides (threshold, crop_veto, weed_labels)."""
    d = cfg.decision
    return SprayRule.from_manifest(classifier.bundle.manifest, threshold=d.threshold, crop_veto=d.crop_veto,
                                   weed_labels=d.weed_labels)


def rule_line(cfg: Config, rule: SprayRule, classifier: Classifier) -> str:
    """The rule in force and where each part comes from (start-up log, ``--validate-config``)."""
    d, r = cfg.decision, classifier.bundle.manifest.rule
    threshold = "bundle's, chosen on " + r.chosen_on if d.threshold is None else "[decision] threshold"
    veto = "bundle's" if d.crop_veto is None else "[decision] crop_veto"
    return f"rule: {rule.describe()} (threshold: {threshold}; veto: {veto})"


def make_decider(cfg: Config, classifier: Classifier) -> Decider:
    d = cfg.decision
    return Decider.from_rule(spray_rule(cfg, classifier), debounce_n=d.debounce_n, debounce_m=d.debounce_m,
                             min_hold_s=d.min_hold_ms / 1000.0)


def frame_line(r: ProcessedFrame) -> str:
    """The human line ``--print`` shows per frame; a file name's control characters (or bytes that
    are not UTF-8) are escaped, so the line stays one printable line."""
    name, label = one_line(r.frame.name or f"{r.frame.source}"), one_line(r.decision.label)
    act = "SPRAY" if r.decision.spray else "weed?" if r.decision.weed_frame else "bare" if r.gated else "-"
    outs = "".join("1" if x else "0" for x in r.outputs)
    return (f"frame {r.frame.frame_id:5d}  {name[:40]:40s}  {label:26s} {r.decision.label_prob:4.2f}  "
            f"weed {r.decision.weed_score:4.2f}  {act:5s}  outputs {outs}  {r.timings.end_to_end:6.1f} ms")


def open_gated_output(cfg: Config, stack: ExitStack, action: str,
                      output: ChannelOutput | None = None) -> ChannelOutput:
    """The configured output (or ``output``, built elsewhere), gated by the enable switch, closed (all off)
    by ``stack``. ``OutputError`` when the switch is off now: ``action`` would open a valve."""
    switch = open_enable_switch(cfg, stack)
    if switch is not None:
        switch.require_on(action)
    out = gate(output, switch) if output is not None else build_output(with_spray_channels(cfg).outputs,
                                                                       enable=switch)
    stack.callback(out.close)
    return out


def make_output(cfg: Config, service: ServiceConfig, enable=None) -> Output:
    """The configured output, all off, gated by the enable switch (if any); a serial controller is
    wrapped to reconnect when lost."""
    if isinstance(cfg.outputs, SerialOutputConfig) and service.serial_reconnect:
        return ReconnectingOutput(lambda: build_output(cfg.outputs, enable=enable),
                                  backoff=Backoff(service.reconnect_initial_s, service.reconnect_max_s))
    return build_output(cfg.outputs, enable=enable)


def run(cfg: Config, stop: threading.Event | None = None, max_frames: int | None = None,
        output: Output | None = None, notifier: ServiceNotifier | None = None,
        started: Callable[[], None] | None = None) -> RunStats:
    """One run; ``started()`` is called when start-up is over and the run loop takes over (from then
    on ``stop`` is the way to end it: the loop's ``finally`` switches every output off)."""
    service = cfg.service
    if notifier is None:
        notifier = ServiceNotifier(SdNotify() if service.notify else SdNotify(env={}),
                                   status_interval_s=service.status_interval_s)
    try:
        return _run(cfg, service, notifier, stop, max_frames, output, started)
    except BaseException as e:
        notifier.notify.status(f"failed: {e}" if str(e) else f"failed: {type(e).__name__}")
        raise
    finally:
        notifier.close()


@dataclass
class RunParts:
    """What ``open_run`` opened, in its order (every part closed by the caller's ``ExitStack``)."""

    jsonl: JsonlLog
    saver: TriggerSaver
    classifier: Classifier
    decider: Decider
    switch: Interlock | None  # the enable switch (None: none wired)
    out: Output
    source: FrameSource | None  # None: not opened (``--validate-config``)
    processor: FrameProcessor
    live: "LiveView | None"


def open_run(cfg: Config, service: ServiceConfig, stack: ExitStack, *, output: Output | None = None,
             ready: Callable[[Classifier, Decider, Output], None] | None = None,
             source: Callable[[Classifier], FrameSource] | None = None) -> RunParts:
    """Everything a run opens, in the order that keeps the valves safe (the module docstring), each closed by
    ``stack``: ``ready`` is called once the outputs are open (all off), ``source`` opens the frame source (None:
    not opened, the one part ``--validate-config`` leaves out). The one place a run is put together."""
    jsonl, saver = open_records(cfg, service, stack)  # a named file that cannot be written: exit 3, first
    classifier = load_classifier(cfg)
    stack.callback(classifier.close)
    saver.describe_model(classifier.bundle.name, classifier.labels)
    decider = make_decider(cfg, classifier)
    switch = open_enable_switch(cfg, stack)  # before the outputs: they close (all off) first
    pause = open_pause(cfg, switch, stack)  # the live view's spray pause, in series with the switch
    interlock = pause if pause is not None else switch
    out = gate(output, interlock) if output is not None else make_output(with_spray_channels(cfg), service,
                                                                         interlock)
    stack.callback(out.close)
    if ready is not None:
        ready(classifier, decider, out)
    frames = None
    if source is not None:
        frames = source(classifier)
        stack.callback(frames.close)
    if cfg.spray is not None:
        processor: FrameProcessor = make_lane_processor(cfg, classifier, out, stack, switch=interlock)
    else:
        processor = WholeFrameProcessor(classifier, decider, Actuator(out, max_on_s=cfg.safety.max_spray_s),
                                        vegetation=make_gate(cfg))
    live = start_live_view(cfg, processor, out, pause, stack,  # None without [web] listen / --web
                           blueprints=labelling_pages(cfg, classifier.bundle.manifest))
    return RunParts(jsonl, saver, classifier, decider, switch, out, frames, processor, live)


def _run(cfg: Config, service: ServiceConfig, notifier: ServiceNotifier, stop: threading.Event | None,
         max_frames: int | None, output: Output | None, started: Callable[[], None] | None) -> RunStats:
    stop = stop or threading.Event()

    def frames(classifier: Classifier) -> FrameSource:
        inp = classifier.bundle.manifest.input
        return reconnecting(open_source(cfg.source, infer_size=(inp.width, inp.height), stop=stop), cfg, stop)

    with ExitStack() as stack:
        def ready(classifier: Classifier, decider: Decider, out: Output) -> None:
            log.info("model %s (%s) on %s | outputs: %s x%d | %s | %s",
                     classifier.bundle.name, classifier.bundle.quantization, classifier.runtime, out.name,
                     out.channels, rule_line(cfg, decider.rule, classifier), describe_gate(cfg))
            notifier.ready(f"model {classifier.bundle.name} loaded, {out.name} outputs off; "
                           f"opening {cfg.source.describe()}")
            stack.callback(notifier.stopping, "stopping: all outputs off")

        run = open_run(cfg, service, stack, output=output, ready=ready, source=frames)
        out, live = run.out, run.live
        assert run.source is not None
        loop = RunLoop(
            run.source, run.processor,
            jsonl=run.jsonl,
            saver=run.saver,
            stop=stop,
            stall_timeout_s=cfg.safety.stall_timeout_s,
            stats_interval_s=cfg.log.stats_interval_s,
            max_frames=max_frames,
            on_frame=(lambda r: print(frame_line(r), flush=True)) if cfg.log.print_frames else None,
            heartbeat=notifier.beat,
            maintain=(out.maintain,) if live is None else (out.maintain, live.tuning.apply),
            controller=out.link,
            give_up_s=service.give_up_s,
            observer=None if live is None else live.hub.publish,
        )
        if started is not None:
            started()
        return loop.run()


def open_records(cfg: Config, service: ServiceConfig, stack: ExitStack) -> tuple[JsonlLog, TriggerSaver]:
    """The frame log and the trigger-frame folder, checked writable before anything else is touched
    (``ConfigError`` when not); the log is closed by ``stack``."""
    jsonl = JsonlLog(cfg.log.jsonl or None, max_bytes=int(service.log_max_mb * 1e6), backups=service.log_backups)
    stack.callback(jsonl.close)
    saver = TriggerSaver(cfg.log.save_triggers or None, cfg.log.sample_rate,
                         max_bytes=int(service.triggers_max_mb * 1e6), sample_every_s=cfg.log.sample_every_s)
    return jsonl, saver


def reconnecting(source: FrameSource, cfg: Config, stop: threading.Event) -> FrameSource:
    """A live source (camera, stream, picamera2) is reopened with backoff when it fails or stays silent."""
    if not isinstance(source, ReopenableSource) or not source.live:
        return source
    service = cfg.service
    return ReconnectingSource(source, backoff=Backoff(service.reconnect_initial_s, service.reconnect_max_s),
                              silence_s=cfg.safety.stall_timeout_s, stop=stop)


def with_spray_channels(cfg: Config) -> Config:
    """With [spray] and dry-run outputs of unstated size: one dry-run channel per nozzle."""
    if cfg.spray is None or not isinstance(cfg.outputs, DryRunOutputConfig) or cfg.outputs.channels is not None:
        return cfg
    return cfg.model_copy(update={"outputs": cfg.outputs.model_copy(update={"channels": cfg.spray.channels_needed})})


def make_tile_scorer(cfg: Config, classifier: Classifier, stack: ExitStack) -> TileScorer:
    """[model] scoring: how the per-lane path scores the tiles the gate keeps (closed by ``stack``)."""
    from edge.inference.scoring import make_scorer

    scorer = make_scorer(classifier, cfg.model.scoring, cfg.model.frame_scale, cfg.model.threads)
    stack.callback(scorer.close)
    log.info("tiles: %s", scorer.describe())
    return scorer


def make_lane_planner(cfg: Config, classifier: Classifier, geometry: "Geometry", scheduler: "SprayScheduler",
                      speed: "SpeedSource", stack: ExitStack, *, enable: Callable[[], bool] | None = None) -> "LanePlanner":
    """[spray]'s planner: the config's rule, gate, tile scorer (closed by ``stack``), cells and speed limits, planning
    on ``scheduler``. The one place a ``LanePlanner`` is built from a config (edge-run; tools/run_pass_clocked.py)."""
    from edge.loop.per_lane import LanePlanner

    s = cfg.spray
    assert s is not None
    return LanePlanner(classifier, spray_rule(cfg, classifier), geometry, scheduler, speed,
                       min_speed_kmh=s.min_speed_kmh, tile_rows=s.tile_rows, enable=enable,
                       vegetation=make_gate(cfg), cell_length_cm=s.cell_length_cm,
                       min_plant_share=s.min_plant_share, min_plant_cm2=s.min_plant_cm2,
                       plant_join_cm=s.plant_join_cm,
                       latency_floor_ms=s.latency_floor_ms,
                       scorer=make_tile_scorer(cfg, classifier, stack), log_spared=s.log_spared)


def make_lane_processor(cfg: Config, classifier: Classifier, out: Output, stack: ExitStack, *,
                        switch: Interlock | None = None) -> "LaneProcessor":
    """[spray]: per-lane decisions, sprays scheduled by a thread (closed, all off, by ``stack``)."""
    from edge.loop.per_lane import LaneProcessor
    from edge.spray.geometry import Geometry
    from edge.spray.scheduler import SprayScheduler
    from edge.spray.speed import build_speed_source
    from edge.spray.spray_log import SprayLog, channel_lanes

    s = cfg.spray
    assert s is not None
    geometry = Geometry.from_config(s)
    speed = build_speed_source(s, backoff=Backoff(cfg.service.reconnect_initial_s, cfg.service.reconnect_max_s),
                               inputs=input_spec(cfg))
    stack.callback(speed.close)
    slog = SprayLog(s.log_jsonl or None, max_bytes=int(cfg.service.log_max_mb * 1e6), backups=cfg.service.log_backups,
                    lanes=channel_lanes(geometry.channels), position=speed.position)
    scheduler = SprayScheduler(out, spray_log=slog, max_on_s=s.max_on_s,
                               merge_gap_ns=geometry.open_lag_ns + geometry.close_lag_ns)
    stack.callback(scheduler.close)
    enable = None
    if switch is not None:  # the output is gated by it; off also cancels every plan
        switch.add_off_listener(lambda: scheduler.cancel_all("enable switch off"))
        enable = switch.is_on
    planner = make_lane_planner(cfg, classifier, geometry, scheduler, speed, stack, enable=enable)
    scheduler.start()
    log.info("spray: %d lane(s) -> channels %s, nozzles %.0f cm behind the image centre, speed %s, "
             "valve lag %.0f/%.0f ms", geometry.lanes, list(geometry.channels), s.nozzle_distance_cm,
             {"fixed": f"{s.speed_kmh:g} km/h (fixed)", "nmea": f"GPS on {s.gps_port}",
              "encoder": f"wheel encoder on GPIO{s.encoder_pin}"}[s.speed_source],
             s.valve_open_lag_ms, s.valve_close_lag_ms)
    return LaneProcessor(planner)
