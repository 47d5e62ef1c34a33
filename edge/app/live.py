"""The live view wired into a run (``[web]``, ``edge-run --web``; docs/live-view.md), and the state directory.

- ``open_pause``: the spray pause in series with the enable switch (``edge.inputs.pause``), built
  when the live view is on or a saved pause is found in the state directory (then the run starts
  paused, and says how to resume).
- ``start_live_view``: the hub the loop publishes to, the tuning mailbox the loop applies between
  frames (one of its ``maintain`` callbacks), the Flask app and its server thread — all closed by
  the run's ``ExitStack`` before the outputs.
- ``with_saved_tuning``: the config with the state directory's saved tuning over the TOML file and
  under the command line's flags.

Flask is imported only here, only when the live view is on (``pip install '.[web]'``).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

from edge.config import Config, load_config
from edge.core.errors import ConfigError
from edge.core.files import FileRefused, read_regular
from edge.core.jsonl import wall_time
from edge.core.schema import tunable_threshold_problem
from edge.inference.bundle import Manifest
from edge.inference.config import GateConfig
from edge.inputs.pause import SprayPause
from edge.loop.per_lane import LaneFrameResult, LaneProcessor
from edge.loop.processor import FrameProcessor
from edge.loop.stats import RunStats
from edge.loop.tuning import Tuning
from edge.outputs.base import Output
from edge.outputs.channels import Interlock
from edge.service.state import TUNING_FILE, StateDir, resolve_state_dir
from edge.web.config import MIN_TOKEN_CHARS, WebConfig
from edge.web.hub import LiveHub
from edge.web.system import system_info

log = logging.getLogger(__name__)


def state_dir(cfg: Config) -> StateDir:
    return StateDir(resolve_state_dir(cfg.service.state_dir))


def with_saved_tuning(cfg: Config, path: str | None, overrides: dict[str, Any]) -> Config:
    """``cfg`` with the saved tuning (``tuning.json``) applied over the file, the flags still winning."""
    state = state_dir(cfg)
    saved = state.tuning()
    if not saved:
        return cfg
    merged = {**overrides}
    for section, keys in saved.items():
        merged[section] = {**keys, **overrides.get(section, {})}
    log.info("saved tuning from %s (the live view): %s", state.path, saved)
    try:
        return load_config(path, merged)
    except ConfigError as e:  # the file's values over the config's: say which file they came from
        raise ConfigError(f"{e.what} (with the live view's saved tuning {state.path / TUNING_FILE}: {saved})",
                          f"{e.fix + '; or ' if e.fix else ''}delete that file") from None


def open_pause(cfg: Config, switch: Interlock | None, stack: ExitStack) -> SprayPause | None:
    """The spray pause around ``switch`` (see the module docstring), or None when neither the live view is on
    nor a pause was saved."""
    state = state_dir(cfg)
    paused = state.paused()
    if not cfg.web.enabled and not paused:
        return None
    if paused and not cfg.web.enabled:
        log.warning("spraying stays paused (saved in %s): resume it from the live view (edge-run --web PORT) or "
                    "delete that file", state.path)
    pause = SprayPause(switch, paused=paused, save=lambda p: state.save_pause(p, wall=wall_time(), by="live view"))
    stack.callback(pause.close)
    return pause


def read_token(web: WebConfig) -> str | None:
    """The token from ``[web] token`` or the first line of ``token_file``; None without one."""
    if web.token:
        return web.token
    if not web.token_file:
        return None
    p = Path(web.token_file)
    try:
        text = read_regular(p, 10_000).decode("utf-8")
    except (FileRefused, UnicodeDecodeError) as e:
        raise ConfigError(f"[web] token_file {p}: {'not found' if getattr(e, 'missing', False) else e}",
                          "write the token on the first line of that file (readable by edge-run)") from None
    token = text.splitlines()[0].strip() if text else ""
    if not token:  # an empty token would let any client in ("Bearer " matches it)
        raise ConfigError(f"[web] token_file {p}: no token on its first line",
                          "write the token on the first line of that file; make one with: "
                          "python3 -c 'import secrets; print(secrets.token_urlsafe())'")
    try:
        WebConfig(token=token)
    except ValueError:  # the [web] token check's own reason: too short, or a control character in it
        raise ConfigError(f"[web] token_file {p}: the token on its first line is not one [web] token accepts: at "
                          f"least {MIN_TOKEN_CHARS} printable characters (no control characters), {len(token)} "
                          "characters there",
                          "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe())'") from None
    return token


class LiveView:
    """The running live view: ``hub.publish`` is the loop's observer, ``tuning.apply`` one of its maintain calls."""

    def __init__(self, hub: LiveHub, tuning: Tuning, url: str):
        self.hub, self.tuning, self.url = hub, tuning, url


def labelling_pages(cfg: Config, manifest: Manifest) -> list[Any]:
    """The labelling pages (``/labels``) for the live view when ``[labelling] dataset`` is set and the live view is
    on; none otherwise (the pages need Flask, which only the live view brings)."""
    from edge.labelling.store import open_store

    if cfg.web.address() is None:
        return []
    store = open_store(cfg.labelling, cfg.log.save_triggers, manifest)
    if store is None:
        return []
    try:
        from edge.web.labelling import make_blueprint
    except ImportError:
        return []  # start_live_view says what to install
    return [make_blueprint(store)]


def start_live_view(cfg: Config, processor: FrameProcessor, out: Output, pause: SprayPause | None,
                    stack: ExitStack, blueprints: Sequence[Any] = ()) -> LiveView | None:
    """The live view of this run, serving (None when ``[web]`` is off), with extra Flask ``blueprints`` (the
    labelling pages: ``edge.web.server``'s contract). ``ConfigError`` without Flask or when the address cannot
    be bound."""
    address = cfg.web.address()
    if address is None:
        return None
    try:
        from edge.web.server import Auth, WebServer, create_app
    except ImportError as e:
        raise ConfigError(f"the live view needs Flask ({e})",
                          "pip install 'weed-detector[web]' (from a checkout: pip install '.[web]'), or drop --web") \
            from None
    token = read_token(cfg.web)
    assert pause is not None  # open_pause builds it whenever the live view is on
    per_lane = isinstance(processor, LaneProcessor)
    extras = _max_speed(processor) if per_lane else None
    hub = LiveHub(cfg.web, gate=lambda: processor.tuning()[1], outputs=out.state, extras=extras)
    edge_log = logging.getLogger("edge")
    edge_log.addHandler(hub.events)
    stack.callback(edge_log.removeHandler, hub.events)
    tuning = Tuning(processor, cfg.gate.sensitivity, gate_params=lambda s: GateConfig.model_validate(
        {**cfg.gate.model_dump(exclude_none=True), "sensitivity": s}).params())
    state = state_dir(cfg)
    controls = _controls(tuning, pause, state, processor)
    status = _status_fn(cfg, hub, tuning, pause, state, processor, out)
    app = create_app(hub, controls, Auth(token), status=status, blueprints=blueprints)
    server = WebServer(app, *address)
    stack.callback(server.close)
    hub.start()
    stack.callback(hub.close)
    server.start()
    log.info("live view: %s (%s; stream at most %g fps, %d px wide)", server.url,
             "token required" if token else "this machine only, no token", cfg.web.stream_fps, cfg.web.stream_width)
    return LiveView(hub, tuning, server.url)


def _max_speed(processor: LaneProcessor) -> Callable[[RunStats], dict]:
    def extras(s: RunStats) -> dict:
        p50, p95 = s.latency_ms
        if p95 != p95 or s.fps <= 0:  # nan: no frames yet
            return {}
        m = processor.max_speed(p95, s.fps)
        return {"max_speed_kmh": round(m.max_kmh, 2), "max_speed_limited_by": m.limited_by}
    return extras


def _controls(tuning: Tuning, pause: SprayPause, state: StateDir, processor: FrameProcessor):
    from edge.web.server import Controls

    def tune(threshold: float | None, sensitivity: str | None) -> str:
        tuning.request(threshold=threshold, sensitivity=sensitivity)
        what = ", ".join(x for x in (f"threshold {threshold:.2f}" if threshold is not None else "",
                                     f"gate sensitivity {sensitivity}" if sensitivity else "") if x)
        return f"{what or 'nothing'}: applied from the next frame; not saved ('save tuning' keeps it for restarts)"

    def do_pause() -> str:
        problem = pause.pause()
        return "spraying paused: every output off" + (f"; {problem}" if problem else
                                                      f"; saved in {state.describe()}" if state.path else
                                                      "; not kept across a restart (no state directory)")

    def do_resume() -> str:
        if not pause.paused:
            return "not paused: nothing to resume"
        problem = pause.resume()
        off = pause.switch_on is False
        return ("resumed" + ("; the enable switch is off: nothing opens until it is switched on" if off else "")
                + (f"; {problem}" if problem else ""))

    def save() -> str:
        st = tuning.target()  # a request posted a moment ago counts (the loop applies it before its next frame)
        data: dict = {}
        if tunable_threshold_problem(round(st.threshold, 4)) is None:  # else the config's own (e.g. 0.97): kept there
            data["decision"] = {"threshold": round(st.threshold, 4)}
        if st.sensitivity is not None:
            data["gate"] = {"sensitivity": st.sensitivity}
        try:
            path = state.save_tuning(data)
        except OSError as e:
            raise ConfigError(f"the tuning could not be saved in {state.path} ({e})",
                              "check that the state directory is writable by edge-run") from None
        log.info("tuning saved in %s: %s", path, data)
        return f"saved in {path}: applied at the next start over the config file (the TOML is not changed)"

    def current() -> dict:
        return _tuning_state(tuning, pause, state, processor)

    return Controls(state=current, tune=tune, pause=do_pause, resume=do_resume, save=save)


def _tuning_state(tuning: Tuning, pause: SprayPause, state: StateDir, processor: FrameProcessor) -> dict:
    st = tuning.state()
    sw = pause.switch_on
    return {"threshold": st.threshold, "sensitivity": st.sensitivity, "rule": processor.tuning()[0].describe(),
            "pending": st.posted - st.applied, "paused": pause.paused,
            "switch": "none wired" if sw is None else "on" if sw else "OFF", "state_dir": state.describe()}


def _status_fn(cfg: Config, hub: LiveHub, tuning: Tuning, pause: SprayPause, state: StateDir,
               processor: FrameProcessor, out: Output) -> Callable[[], dict]:
    logs = [p for p in (cfg.log.jsonl, cfg.log.save_triggers + "/." if cfg.log.save_triggers else "",
                        cfg.spray.log_jsonl if cfg.spray is not None else "") if p]
    log_dir = Path(logs[0]).parent if logs else Path(".")  # where the first of the run's logs goes
    lanes = cfg.spray.lanes if cfg.spray is not None else 0
    mode = f"per lane ({lanes} lanes)" if lanes else "whole frame"

    def status() -> dict:
        snap = hub.stats()
        r = hub.newest()
        valves = list(out.state())
        tun = _tuning_state(tuning, pause, state, processor)
        info: dict = {"mode": mode, "frame": "–", "frames": 0, "fps": None, "latency_p50_ms": None,
                      "latency_p95_ms": None, "dropped": 0, "camera": "starting", "controller": "–", "gps": "–",
                      "speed_kmh": None, "max_speed_kmh": None, "max_speed_limited_by": None}
        if snap is not None:
            s, extra = snap
            st = s.status()
            info.update(frames=s.frames, fps=round(s.fps, 2), dropped=s.dropped, camera=s.camera,
                        latency_p50_ms=_finite(s.latency_ms[0]), latency_p95_ms=_finite(s.latency_ms[1]),
                        controller=st.get("controller", "none (not a serial controller)"),
                        gps=st.get("gps", "none"), **extra)
        if r is not None:  # a file name is data: the page writes it with textContent
            info["frame"] = f"{r.frame.frame_id}" + (f" ({r.frame.name})" if r.frame.name else "")
        if isinstance(r, LaneFrameResult):
            info["speed_kmh"] = r.speed_kmh
        spraying = [i for i, on in enumerate(valves) if on]
        healthy = snap is not None and info["camera"] == "ok" and not str(info["controller"]).startswith("lost")
        verdict = ("PAUSED: nothing sprays" if pause.paused else
                   "enable switch OFF: nothing sprays" if pause.switch_on is False else
                   f"camera {info['camera']}" if snap is not None and info["camera"] != "ok" else
                   "controller lost" if not healthy and snap is not None else
                   "starting" if snap is None else
                   f"working, {info['fps']:.1f} fps: " + (f"spraying valve {', '.join(map(str, spraying))}"
                                                          if spraying else "nothing sprayed now"))
        return {**info, "valves": valves, "tuning": tun, "healthy": healthy and not pause.paused,
                "verdict": verdict, "system": system_info(log_dir), "encoded": hub.encoded, "clients": hub.clients,
                "events": [{"wall": e.wall, "kind": e.kind, "text": e.text} for e in hub.events.last()]}

    return status


def _finite(x: float) -> float | None:
    return None if x != x else round(x, 2)
