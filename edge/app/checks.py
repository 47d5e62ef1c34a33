"""The subcommands that use a run's parts without running it: ``--validate-config``,
``--test-outputs``, ``--all-off`` and ``--list-models``."""

from __future__ import annotations

import sys
import threading
from contextlib import ExitStack
from typing import Callable

from edge.app.wiring import describe_gate, open_gated_output, open_run, rule_line, with_spray_channels
from edge.config import Config
from edge.core.errors import EXIT_OK, ConfigError
from edge.core.text import one_line
from edge.inference.bundle import available_bundles, load_bundle
from edge.outputs import build_output
from edge.outputs.base import Output
from edge.outputs.channels import ChannelOutput


def spray_summary(cfg: Config, out: Output) -> str:
    """``--validate-config`` with [spray]: lanes, channels and the speed the geometry allows."""
    from edge.spray.geometry import Geometry, max_speed
    from edge.spray.planner import require_channels

    s = cfg.spray
    assert s is not None
    g = Geometry.from_config(s)
    require_channels(g, out.channels)
    at = {ms: max_speed(g, ms).landing_kmh for ms in (50, 100)}
    speed = {"fixed": f"fixed speed {s.speed_kmh:g} km/h", "nmea": f"GPS speed on {s.gps_port}",
             "encoder": f"wheel-encoder speed on GPIO{s.encoder_pin}"}[s.speed_source]
    inside = ("; the spray line is inside the view (nozzle_distance_cm - footprint_along_cm / 2 - margin_before_cm "
              f"= {g.rear_room_cm:g} cm): the image's rear part lies "
              "past the nozzles, so a plant is sprayed only if decided before it gets there, and many sprays land "
              "late; move the spray line back or aim the camera further ahead" if g.rear_room_cm <= 0 else "")
    gate_on = cfg.gate.active(per_lane=True)  # the plant's size is the gate's measure: without it, not checked
    size = ("" if not s.min_plant_cm2 else f", one of them a plant of at least {s.min_plant_cm2:g} cm²" if gate_on
            else f"; min_plant_cm2 = {s.min_plant_cm2:g} is not checked with the gate off")
    return (f"spray: {g.lanes} lane(s) -> channels {list(g.channels)}, {speed} "
            f"(min {s.min_speed_kmh:g}); sprays land up to {at[50]:.1f} km/h at 50 ms and {at[100]:.1f} km/h at "
            f"100 ms from capture to valve command (edge-run prints the measured figure when it stops); ground "
            f"cells of {s.cell_length_cm:g} cm along travel, each decided once from its views (sprayed only if "
            f"{s.min_plant_share:.0%} or more of them saw a plant there"
            f"{size}){inside}")


def pulse_outputs(cfg: Config, pulse_s: float = 0.5, gap_s: float = 0.5, stop: threading.Event | None = None,
                 output: ChannelOutput | None = None, wait: Callable[[float], object] | None = None) -> int:
    """``--test-outputs``: each channel on for ``pulse_s``, then off, in turn (priming and checking a boom).

    No model, no camera. Every channel is off before, between and after the pulses, and on
    any error or stop request (SIGINT/SIGTERM set ``stop``).
    """
    if not 0 < pulse_s <= 10:
        raise ConfigError(f"--pulse-ms {pulse_s * 1000:g} is out of range", "use 1 to 10000 ms")
    stop = stop or threading.Event()
    wait = wait or stop.wait
    with ExitStack() as stack:
        out = open_gated_output(cfg, stack, "pulse the outputs", output)
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


def all_off(cfg: Config) -> int:
    """``--all-off``: build the configured output (a serial controller: connect, ``HELLO``, ``ALLOFF``),
    switch every channel off, close it, print one line. No model, no camera, and no enable switch
    (switching off never waits for it). The systemd unit's ``ExecStopPost=``: the backstop for a
    process that could not switch off itself (SIGKILL, the OOM killer, a hang). ``OutputError``
    (exit 6) when the output cannot be built."""
    with build_output(with_spray_channels(cfg).outputs) as out:
        out.all_off()
    print(f"all off: {out.name} outputs, {out.channels} channel(s)", flush=True)
    return EXIT_OK


def validate(cfg: Config) -> int:
    """``--validate-config``: everything a run opens except its frame source, opened by the run's own
    ``open_run`` and closed again (all off), so that a config this passes does not fail at start: the logs
    and the trigger-frame folder (exit 3; a missing log file or folder is created, as the run would), the
    bundle and its interpreter (exit 4), the enable switch and the outputs (exit 6), with ``[spray]`` the
    tile scorer (exit 4), the spray log (exit 3) and the speed source (GPS port, wheel-encoder pin: exit 5),
    the live view (its address bound for a moment, exit 3) and the labelling pages. The camera is not
    opened (a running service may hold it)."""

    def ready(classifier, decider, out) -> None:
        print(f"config ok; model '{classifier.bundle.name}' ({classifier.bundle.quantization}, "
              f"{len(decider.labels)} labels, weeds: {', '.join(decider.weed_labels)}; threshold "
              f"{decider.threshold:.2f}) runs on {classifier.runtime}")
        print(one_line(rule_line(cfg, decider.rule, classifier)))
        print(describe_gate(cfg))
        print(f"outputs ok: {out.name} with {out.channels} channel(s), all off")
        if cfg.spray is not None:
            print(spray_summary(cfg, out))

    with ExitStack() as stack:
        run = open_run(cfg, cfg.service, stack, ready=ready)
        if run.switch is not None:
            print(f"{run.switch.describe()}: {'on' if run.switch.is_on() else 'OFF now (no output opens until it is on)'}")
    print(one_line(f"source: {cfg.source.describe()} (opened at run time)"))
    print(one_line(describe_live_view(cfg)))
    return EXIT_OK


def describe_live_view(cfg: Config) -> str:
    """One line: the live view's address and token, the state directory and a saved pause
    (``--validate-config``; the token file is read, as at start)."""
    from edge.app.live import read_token, state_dir

    state = state_dir(cfg)
    paused = "; spraying is PAUSED (saved): resume from the live view or delete paused.json" if state.paused() else ""
    address = cfg.web.address()
    if address is None:
        return f"live view: off ([web] listen or --web); state directory: {state.describe()}{paused}"
    token = "token required" if read_token(cfg.web) else "no token (this machine only)"
    return f"live view: {address[0]}:{address[1]}, {token}; state directory: {state.describe()}{paused}"


def list_models() -> int:
    found = available_bundles()
    if not found:
        print("no model bundles found", file=sys.stderr)
    for name, folder in found.items():
        try:
            m = load_bundle(folder, verify_hash=False).manifest
            extra = " [UNTRAINED DEMO]" if m.untrained_demo else ""
            print(one_line(f"{name}: {m.backbone} {m.input.width}x{m.input.height} {m.quantization}, "
                           f"{len(m.labels)} labels{extra}  ({folder})"))
        except Exception as e:  # a broken bundle should not hide the others
            print(one_line(f"{name}: unreadable ({e})  ({folder})"))
    return EXIT_OK
