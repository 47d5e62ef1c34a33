"""Config -> the objects of a run, in the order that keeps the valves safe.

1. the model bundle is loaded and its interpreter checked (bad model: nothing touched);
2. the outputs are built (every channel off);
3. systemd is told READY (when run as a ``Type=notify`` service), then the frame source
   is opened;
4. the pipeline runs; on any way out, outputs go off and everything is closed.

Unattended operation (the ``[service]`` section, ``edge.config_service``): STATUS and
WATCHDOG notifications from the loop's heartbeat, a lost camera reopened with backoff,
a lost serial controller reconnected with backoff, and size caps on the logs.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack
from typing import Callable

from edge.actuation import Actuator
from edge.bundle import available_bundles, load_bundle
from edge.config import Config
from edge.config_service import ServiceConfig
from edge.decision import Decider
from edge.errors import EXIT_OK
from edge.inference import Classifier
from edge.notify import SdNotify, ServiceNotifier
from edge.outputs import build_output
from edge.outputs.base import Output
from edge.pipeline import FrameResult, Pipeline, RunSummary
from edge.reconnect import Backoff, ReconnectingOutput
from edge.recorder import JsonlLog, TriggerSaver
from edge.sources import SourceSpec, open_source

log = logging.getLogger(__name__)


def source_spec(cfg: Config, infer_size: tuple[int, int] | None = None) -> SourceSpec:
    s = cfg.source
    live = s.kind in ("camera", "picamera")
    return SourceSpec(
        kind=s.kind,
        index=s.camera,
        path=s.path or None,
        url=s.url or None,
        width=s.width if live else None,
        height=s.height if live else None,
        fps=s.fps if live or s.kind == "images" else None,  # video: the file's own rate
        realtime=s.realtime,
        loop=s.loop,
        infer_size=infer_size if s.kind == "picamera" else None,
    )


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


def make_output(cfg: Config, service: ServiceConfig) -> Output:
    """The configured output, all off; a serial controller is wrapped to reconnect when lost."""
    if cfg.outputs.kind == "serial" and service.serial_reconnect:
        return ReconnectingOutput(lambda: build_output(cfg.outputs),
                                  backoff=Backoff(service.reconnect_initial_s, service.reconnect_max_s))
    return build_output(cfg.outputs)


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
        out = output if output is not None else make_output(cfg, service)
        stack.callback(out.close)
        log.info("model %s (%s) on %s | outputs: %s x%d | threshold %.2f, weeds: %s",
                 classifier.bundle.name, classifier.bundle.quantization, classifier.runtime, out.name, out.channels,
                 decider.threshold, ", ".join(decider.weed_labels))
        spec = source_spec(cfg, (inp.width, inp.height))
        notifier.ready(f"model {classifier.bundle.name} loaded, {out.name} outputs off; opening {spec.describe()}")
        stack.callback(notifier.stopping, "stopping: all outputs off")
        source = open_source(spec)
        stack.callback(source.close)
        maintain = getattr(out, "maintain", None)
        pipeline = Pipeline(
            source, classifier, decider, Actuator(out, max_on_s=cfg.safety.max_spray_s),
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
        return pipeline.run()


def validate(cfg: Config) -> int:
    """``--validate-config``: config (already parsed), bundle + interpreter, output wiring."""
    classifier = load_classifier(cfg)
    decider = make_decider(cfg, classifier)
    print(f"config ok; model '{classifier.bundle.name}' ({classifier.bundle.quantization}, "
          f"{len(decider.labels)} labels, weeds: {', '.join(decider.weed_labels)}; threshold {decider.threshold:.2f}) "
          f"runs on {classifier.runtime}")
    classifier.close()
    with build_output(cfg.outputs) as out:
        print(f"outputs ok: {out.name} with {out.channels} channel(s), all off")
    spec = source_spec(cfg)
    print(f"source: {spec.describe()} (opened at run time)")
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
