"""Config -> the objects of a run, in the order that keeps the valves safe.

1. the model bundle is loaded and its interpreter checked (bad model: nothing touched);
2. the outputs are built (every channel off);
3. systemd is told READY (when run as a ``Type=notify`` service), then the frame source
   is opened;
4. the pipeline runs; on any way out, outputs go off and everything is closed.

Unattended operation (the ``[service]`` section, ``edge.service.config``): STATUS and
WATCHDOG notifications from the loop's heartbeat, a lost camera reopened with backoff,
a lost serial controller reconnected with backoff, and size caps on the logs.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack
from typing import Callable

from edge.loop.actuator import Actuator
from edge.inference.bundle import available_bundles, load_bundle
from edge.config import Config
from edge.service.config import ServiceConfig
from edge.decide.decider import Decider
from edge.inputs.enable import EnableSwitch, gate, open_enable_switch
from edge.inputs.digital import input_spec
from edge.core.errors import EXIT_OK
from edge.inference import Classifier
from edge.service.notify import SdNotify, ServiceNotifier
from edge.outputs import DryRunOutputConfig, SerialOutputConfig, build_output
from edge.outputs.base import Output
from edge.loop.runner import FrameResult, Pipeline, RunSummary
from edge.outputs.reconnecting import Backoff, ReconnectingOutput
from edge.service.records import JsonlLog, TriggerSaver
from edge.sources import open_source

log = logging.getLogger(__name__)


def load_classifier(cfg: Config) -> Classifier:
    bundle = load_bundle(cfg.model.bundle or None, variant=cfg.model.variant or None)
    if bundle.manifest.untrained_demo:
        log.warning("model '%s' is an UNTRAINED DEMO bundle: its answers mean nothing about plants", bundle.name)
    return Classifier(bundle, num_threads=cfg.model.threads)


def make_decider(cfg: Config, classifier: Classifier) -> Decider:
    m = classifier.bundle.manifest
    d = cfg.decision
    return Decider(
        labels=m.labels,
        weed_labels=d.weed_labels if d.weed_labels is not None else m.weed_labels,
        threshold=d.threshold if d.threshold is not None else m.threshold,
        debounce_n=d.debounce_n,
        debounce_m=d.debounce_m,
        min_hold_s=d.min_hold_ms / 1000.0,
    )


def frame_line(r: FrameResult) -> str:
    """The human line ``--print`` shows per frame."""
    name = r.frame.name or f"{r.frame.source}"
    act = "SPRAY" if r.decision.spray else ("weed?" if r.decision.weed_frame else "-")
    outs = "".join("1" if x else "0" for x in r.outputs)
    return (f"frame {r.frame.frame_id:5d}  {name[:40]:40s}  {r.decision.label:26s} {r.decision.label_prob:4.2f}  "
            f"weed {r.decision.weed_score:4.2f}  {act:5s}  outputs {outs}  {r.timings.end_to_end:6.1f} ms")


def make_output(cfg: Config, service: ServiceConfig, enable=None) -> Output:
    """The configured output, all off, gated by the enable switch (if any); a serial controller is
    wrapped to reconnect when lost."""
    if isinstance(cfg.outputs, SerialOutputConfig) and service.serial_reconnect:
        return ReconnectingOutput(lambda: build_output(cfg.outputs, enable=enable),
                                  backoff=Backoff(service.reconnect_initial_s, service.reconnect_max_s))
    return build_output(cfg.outputs, enable=enable)


def _with_output_state(beat: Callable[[dict], None], out: Output) -> Callable[[dict], None]:
    """Adds ``controller: ok|lost`` to the heartbeat of a reconnecting (serial) output."""
    if not isinstance(out, ReconnectingOutput):
        return beat

    def with_state(info: dict) -> None:
        beat({**info, "controller": "ok" if out.connected else "lost, reconnecting",
              "controller_losses": out.losses, "controller_reconnects": out.reconnects})

    return with_state


def run(cfg: Config, stop: threading.Event | None = None, max_frames: int | None = None,
        output: Output | None = None, notifier: ServiceNotifier | None = None) -> RunSummary:
    service = cfg.service
    if notifier is None:
        notifier = ServiceNotifier(SdNotify() if service.notify else SdNotify(env={}),
                                   status_interval_s=service.status_interval_s)
    try:
        return _run(cfg, service, notifier, stop, max_frames, output)
    except BaseException as e:
        notifier.notify.status(f"failed: {e}" if str(e) else f"failed: {type(e).__name__}")
        raise
    finally:
        notifier.close()


def _run(cfg: Config, service: ServiceConfig, notifier: ServiceNotifier, stop: threading.Event | None,
         max_frames: int | None, output: Output | None) -> RunSummary:
    classifier = load_classifier(cfg)
    decider = make_decider(cfg, classifier)
    inp = classifier.bundle.manifest.input
    with ExitStack() as stack:
        stack.callback(classifier.close)
        switch = open_enable_switch(cfg, stack)  # before the outputs: they close (all off) first
        out = gate(output, switch) if output is not None else make_output(with_spray_channels(cfg), service, switch)
        stack.callback(out.close)
        log.info("model %s (%s) on %s | outputs: %s x%d | threshold %.2f, weeds: %s",
                 classifier.bundle.name, classifier.bundle.quantization, classifier.runtime, out.name, out.channels,
                 decider.threshold, ", ".join(decider.weed_labels))
        notifier.ready(f"model {classifier.bundle.name} loaded, {out.name} outputs off; "
                       f"opening {cfg.source.describe()}")
        stack.callback(notifier.stopping, "stopping: all outputs off")
        source = open_source(cfg.source, infer_size=(inp.width, inp.height))
        stack.callback(source.close)
        maintain = getattr(out, "maintain", None)
        kw = dict(
            jsonl=JsonlLog(cfg.log.jsonl or None, max_bytes=int(service.log_max_mb * 1e6),
                           backups=service.log_backups),
            saver=TriggerSaver(cfg.log.save_triggers or None, cfg.log.sample_rate,
                               max_bytes=int(service.triggers_max_mb * 1e6)),
            stop=stop,
            stall_timeout_s=cfg.safety.stall_timeout_s,
            stats_interval_s=cfg.log.stats_interval_s,
            max_frames=max_frames,
            on_frame=(lambda r: print(frame_line(r), flush=True)) if cfg.log.print_frames else None,
            heartbeat=_with_output_state(notifier.beat, out),
            maintain=(maintain,) if callable(maintain) else (),
            reconnect=Backoff(service.reconnect_initial_s, service.reconnect_max_s),
            give_up_s=service.give_up_s,
        )
        if cfg.spray is not None:
            pipeline: Pipeline = make_spray_pipeline(cfg, source, classifier, out, stack, switch=switch, **kw)
        else:
            pipeline = Pipeline(source, classifier, decider, Actuator(out, max_on_s=cfg.safety.max_spray_s), **kw)
        return pipeline.run()


def with_spray_channels(cfg: Config) -> Config:
    """With [spray] and dry-run outputs of unstated size: one dry-run channel per nozzle."""
    if cfg.spray is None or not isinstance(cfg.outputs, DryRunOutputConfig) or cfg.outputs.channels is not None:
        return cfg
    return cfg.model_copy(update={"outputs": cfg.outputs.model_copy(update={"channels": cfg.spray.channels_needed})})


def make_spray_pipeline(cfg: Config, source, classifier: Classifier, out: Output, stack: ExitStack, *,
                        switch: EnableSwitch | None = None, **kw):
    """[spray]: per-lane decisions, sprays scheduled by a thread (closed, all off, by ``stack``)."""
    from edge.spray.geometry import Geometry
    from edge.loop.per_lane import LanePlanner, SprayPipeline
    from edge.spray.scheduler import SprayScheduler
    from edge.spray.speed import build_speed_source
    from edge.spray.spray_log import SprayLog, channel_lanes

    s = cfg.spray
    assert s is not None
    geometry = Geometry.from_config(s)
    speed = build_speed_source(s, backoff=Backoff(cfg.service.reconnect_initial_s, cfg.service.reconnect_max_s),
                               inputs=input_spec(cfg))
    stack.callback(speed.close)
    position = getattr(speed, "position", None)  # a GPS: lat/lon on every executed open/close
    slog = SprayLog(s.log_jsonl or None, max_bytes=int(cfg.service.log_max_mb * 1e6), backups=cfg.service.log_backups,
                    lanes=channel_lanes(geometry.channels), position=position if callable(position) else None)
    scheduler = SprayScheduler(out, spray_log=slog, max_on_s=s.max_on_s,
                               merge_gap_ns=geometry.open_lag_ns + geometry.close_lag_ns)
    stack.callback(scheduler.close)
    enable = None
    if switch is not None:  # the output is gated by it; off also cancels every plan
        switch.add_off_listener(lambda: scheduler.cancel_all("enable switch off"))
        enable = switch.is_on
    planner = LanePlanner(classifier, lambda: make_decider(cfg, classifier), geometry, scheduler, speed,
                          min_speed_kmh=s.min_speed_kmh, tile_rows=s.tile_rows, enable=enable)
    scheduler.start()
    log.info("spray: %d lane(s) -> channels %s, nozzles %.0f cm behind the image centre, speed %s, "
             "valve lag %.0f/%.0f ms", geometry.lanes, list(geometry.channels), s.nozzle_distance_cm,
             {"fixed": f"{s.speed_kmh:g} km/h (fixed)", "nmea": f"GPS on {s.gps_port}",
              "encoder": f"wheel encoder on GPIO{s.encoder_pin}"}[s.speed_source],
             s.valve_open_lag_ms, s.valve_close_lag_ms)
    return SprayPipeline(source, classifier, planner, **kw)


def spray_summary(cfg: Config, out: Output) -> str:
    """``--validate-config`` with [spray]: lanes, channels and the speed the geometry allows."""
    from edge.core.errors import ConfigError
    from edge.spray.geometry import Geometry, max_speed

    s = cfg.spray
    assert s is not None
    g = Geometry.from_config(s)
    if max(g.channels) >= out.channels:
        raise ConfigError(f"[spray] maps a lane to output channel {max(g.channels)} but the output has "
                          f"{out.channels} channel(s)", "configure one output channel per nozzle "
                          "(outputs.channels / outputs.pins) or fix [spray] lane_channels")
    at = {ms: max_speed(g, ms).landing_kmh for ms in (50, 100)}
    speed = {"fixed": f"fixed speed {s.speed_kmh:g} km/h", "nmea": f"GPS speed on {s.gps_port}",
             "encoder": f"wheel-encoder speed on GPIO{s.encoder_pin}"}[s.speed_source]
    return (f"spray: {g.lanes} lane(s) -> channels {list(g.channels)}, {speed} "
            f"(min {s.min_speed_kmh:g}); sprays land up to {at[50]:.1f} km/h at 50 ms and {at[100]:.1f} km/h at "
            f"100 ms from capture to valve command (edge-run prints the measured figure when it stops)")


def pulse_outputs(cfg: Config, pulse_s: float = 0.5, gap_s: float = 0.5, stop: threading.Event | None = None,
                 output: Output | None = None, wait: Callable[[float], object] | None = None) -> int:
    """``--test-outputs``: each channel on for ``pulse_s``, then off, in turn (priming and checking a boom).

    No model, no camera. Every channel is off before, between and after the pulses, and on
    any error or stop request (SIGINT/SIGTERM set ``stop``).
    """
    if not 0 < pulse_s <= 10:
        from edge.core.errors import ConfigError

        raise ConfigError(f"--pulse-ms {pulse_s * 1000:g} is out of range", "use 1 to 10000 ms")
    stop = stop or threading.Event()
    wait = wait or stop.wait
    with ExitStack() as stack:
        switch = open_enable_switch(cfg, stack)
        if switch is not None:
            switch.require_on("pulse the outputs")
        out = gate(output, switch) if output is not None else build_output(with_spray_channels(cfg).outputs,
                                                                           enable=switch)
        stack.callback(out.close)
        out.all_off()
        print(f"testing {out.name} outputs: {out.channels} channel(s), {pulse_s * 1000:g} ms each", flush=True)
        for ch in range(out.channels):
            if stop.is_set():
                break
            try:
                out.set(ch, True, max_on_s=pulse_s + 1.0)
                print(f"channel {ch}: ON", flush=True)  # only once it really is (the enable switch may refuse)
                wait(pulse_s)
            finally:
                out.set(ch, False)
            print(f"channel {ch}: off", flush=True)
            if ch + 1 < out.channels and not stop.is_set():
                wait(gap_s)
        out.all_off()
    print("stopped early: all outputs off" if stop.is_set() else "done: all outputs off", flush=True)
    return EXIT_OK


def validate(cfg: Config) -> int:
    """``--validate-config``: config (already parsed), bundle + interpreter, output wiring."""
    classifier = load_classifier(cfg)
    decider = make_decider(cfg, classifier)
    print(f"config ok; model '{classifier.bundle.name}' ({classifier.bundle.quantization}, "
          f"{len(decider.labels)} labels, weeds: {', '.join(decider.weed_labels)}; threshold {decider.threshold:.2f}) "
          f"runs on {classifier.runtime}")
    classifier.close()
    with build_output(with_spray_channels(cfg).outputs) as out:
        print(f"outputs ok: {out.name} with {out.channels} channel(s), all off")
        if cfg.spray is not None:
            print(spray_summary(cfg, out))
    with ExitStack() as stack:
        switch = open_enable_switch(cfg, stack)
        if switch is not None:
            print(f"{switch.describe()}: {'on' if switch.is_on() else 'OFF now (no output opens until it is on)'}")
    print(f"source: {cfg.source.describe()} (opened at run time)")
    return EXIT_OK


def list_models() -> int:
    found = available_bundles()
    if not found:
        print("no model bundles found", file=sys.stderr)
    for name, folder in found.items():
        try:
            m = load_bundle(folder, verify_hash=False).manifest
            extra = " [UNTRAINED DEMO]" if m.untrained_demo else ""
            print(f"{name}: {m.backbone} {m.input.width}x{m.input.height} {m.quantization}, "
                  f"{len(m.labels)} labels{extra}  ({folder})")
        except Exception as e:  # a broken bundle should not hide the others
            print(f"{name}: unreadable ({e})  ({folder})")
    return EXIT_OK
