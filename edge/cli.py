"""``edge-run``: parse arguments, build the config, run the pipeline, map errors to exit codes.

No logic of its own lives here: wiring is in ``edge.app.wiring``, the loop in ``edge.loop.runner``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from edge import __version__
from edge.core.errors import EXIT_INTERNAL, EXIT_OK, WeedDetectorError
from edge.core.text import OneLineFormatter, one_line

log = logging.getLogger("edge")

EPILOG = """exit codes: 0 ok, 1 internal error, 2 bad arguments, 3 config (also a log file or folder
it names that cannot be written), 4 model bundle, 5 frame source, 6 outputs (also a --state-file
that cannot be written), 7 no TFLite runtime, 8 stalled source.
Config keys: deploy/config.example.toml."""


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated pin numbers like 17,27, got {text!r}") from None


def _csv_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated milliseconds like 20,50,100, "
                                         f"got {text!r}") from None


def _positive_int(text: str) -> int:
    """--max-frames N: a whole number of at least 1 (0 or -1 would still process a frame)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames of at least 1, got {text!r}")
    return n


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _debounce(text: str) -> tuple[int, int]:
    try:
        n, m = (int(x) for x in text.lower().split("of" if "of" in text.lower() else "/"))
        return n, m
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N/M such as 2/3, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-run",
        description="Classify frames (camera, video, images, stream) as weed/crop/soil and switch sprayer outputs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="PATH", help="TOML config file (flags override it)")
    p.add_argument("--version", action="store_true", help="print the version and the TFLite runtime in use")
    p.add_argument("--validate-config", action="store_true",
                   help="check config, model bundle and output wiring, then exit 0 (ok) or non-zero")
    p.add_argument("--list-models", action="store_true", help="list the shipped/installed model bundles")
    p.add_argument("--test-outputs", action="store_true",
                   help="pulse each output channel in turn (priming and checking the boom), then exit")
    p.add_argument("--pulse-ms", type=float, default=500.0, metavar="MS",
                   help="--test-outputs: pulse length (default 500)")

    v = p.add_argument_group("valve lag (docs/spray-timing.md, 'Measuring the valve lag')")
    v.add_argument("--measure-valve-lag", type=int, metavar="CHANNEL",
                   help="pulse ONE output channel at --lag-pulses-ms, logging the exact command times, then exit")
    v.add_argument("--lag-pulses-ms", type=_csv_floats, default=None, metavar="20,50,...",
                   help="pulse lengths in ms (default 20,50,100,200,500)")
    v.add_argument("--repeats", type=int, default=3, metavar="N", help="times each pulse length is given (default 3)")
    v.add_argument("--gap-ms", type=float, default=1500.0, metavar="MS",
                   help="pause between pulses, for the valve to settle (default 1500)")
    v.add_argument("--lag-log", metavar="PATH", help="append every pulse's command times as JSON lines here")
    v.add_argument("--yes", action="store_true", help="start pulsing at once (no Enter prompt)")

    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME|DIR", help="bundle folder or shipped bundle name (default: the shipped default)")
    m.add_argument("--variant", metavar="Q", help="run another export of the bundle, e.g. float32")
    m.add_argument("--threads", type=int, metavar="N", help="interpreter threads (default 2)")

    s = p.add_argument_group("frame source (one of)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index (/dev/videoN)")
    src.add_argument("--video", metavar="PATH", help="video file")
    src.add_argument("--images", metavar="DIR", help="folder of images (or one image)")
    src.add_argument("--stream", metavar="URL", help="RTSP/HTTP stream URL")
    src.add_argument("--picamera", action="store_true", help="Raspberry Pi camera through picamera2")
    s.add_argument("--width", type=int, help="capture width (cameras)")
    s.add_argument("--height", type=int, help="capture height (cameras)")
    s.add_argument("--fps", type=float, help="capture frame rate (cameras)")
    s.add_argument("--realtime", action="store_true", default=None, help="video: pace at the file's frame rate")
    s.add_argument("--loop", action="store_true", default=None, help="video/images: start again at the end")
    s.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames (1 or more)")

    d = p.add_argument_group("decision")
    d.add_argument("--threshold", type=float, help="weed-score threshold (default: the bundle's)")
    d.add_argument("--weed-labels", type=_csv, metavar="A,B", help="labels that count as weeds (default: the bundle's)")
    d.add_argument("--debounce", type=_debounce, metavar="N/M", help="spray when N of the last M frames are weeds")
    d.add_argument("--hold-ms", type=float, help="minimum spray time once started")

    o = p.add_argument_group("outputs")
    o.add_argument("--output", choices=["dryrun", "gpio", "jetson", "serial"], help="output kind (default dryrun)")
    o.add_argument("--pins", type=_csv_ints, metavar="17,27", help="GPIO pins (BCM) for gpio/jetson")
    o.add_argument("--active-low", action="store_true", default=None, help="relays that switch on a low pin")
    o.add_argument("--serial-port", metavar="PORT", help="serial device or pyserial URL (serial output)")
    o.add_argument("--baud", type=int, help="serial baud rate")
    o.add_argument("--channels", type=int, help="number of channels (dryrun/serial)")
    o.add_argument("--state-file", metavar="PATH", help="dryrun: append each output change as JSON here")

    f = p.add_argument_group("safety")
    f.add_argument("--stall-timeout", type=float, metavar="S", help="outputs off when no frame for S seconds")
    f.add_argument("--max-on", type=float, metavar="S", help="outputs off after S seconds of continuous spraying")

    lg = p.add_argument_group("logging")
    lg.add_argument("--log-jsonl", metavar="PATH", help="per-frame JSON lines log")
    lg.add_argument("--stats-interval", type=float, metavar="S", help="seconds between stats lines")
    lg.add_argument("--print", dest="print_frames", action="store_true", default=None, help="print one line per frame")
    lg.add_argument("--save-triggers", metavar="DIR", help="keep frames that fired and a sample of the others")
    lg.add_argument("--sample-rate", type=float, help="share of non-firing frames kept with --save-triggers")
    lg.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    lg.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


# How the command line sets config keys: (argparse dest, config section, what the flag's value sets).
# A plain key takes the flag's value; a converter returns the keys it sets ({} = none).
# A flag that was not given (None, or False for a switch) sets nothing; later rows win.
Convert = Callable[[Any], dict]


def _source(kind: str, key: str | None = None) -> Convert:
    """--camera N, --video PATH, ...: the flag chooses the source kind (an empty PATH/URL: not given)."""
    return lambda value: {} if value == "" else {"kind": kind, **({key: value} if key else {})}


def _const(key: str, value: Any) -> Convert:
    """A switch that sets ``key`` to a fixed value (--active-low, -v, -q)."""
    return lambda _given: {key: value}


FLAG_KEYS: tuple[tuple[str, str, str | Convert], ...] = (
    ("model", "model", "bundle"),
    ("variant", "model", "variant"),
    ("threads", "model", "threads"),
    ("camera", "source", _source("camera", "camera")),
    ("video", "source", _source("video", "path")),
    ("images", "source", _source("images", "path")),
    ("stream", "source", _source("stream", "url")),
    ("picamera", "source", _source("picamera")),
    ("width", "source", "width"),
    ("height", "source", "height"),
    ("fps", "source", "fps"),
    ("realtime", "source", "realtime"),
    ("loop", "source", "loop"),
    ("threshold", "decision", "threshold"),
    ("weed_labels", "decision", "weed_labels"),
    ("debounce", "decision", lambda nm: {"debounce_n": nm[0], "debounce_m": nm[1]}),
    ("hold_ms", "decision", "min_hold_ms"),
    ("output", "outputs", "kind"),
    ("pins", "outputs", "pins"),
    ("active_low", "outputs", _const("active_high", False)),
    ("serial_port", "outputs", "port"),
    ("baud", "outputs", "baud"),
    ("channels", "outputs", "channels"),
    ("state_file", "outputs", "state_file"),
    ("stall_timeout", "safety", "stall_timeout_s"),
    ("max_on", "safety", "max_spray_s"),
    ("log_jsonl", "log", "jsonl"),
    ("stats_interval", "log", "stats_interval_s"),
    ("print_frames", "log", "print_frames"),
    ("save_triggers", "log", "save_triggers"),
    ("sample_rate", "log", "sample_rate"),
    ("quiet", "log", _const("level", "WARNING")),
    ("verbose", "log", _const("level", "DEBUG")),  # after -q: -v wins
)


def overrides_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line sets (only those given), by ``FLAG_KEYS``."""
    o: dict[str, dict[str, Any]] = {}
    for dest, section, key in FLAG_KEYS:
        value = getattr(a, dest)
        if value is None or value is False:
            continue
        keys = {key: value} if isinstance(key, str) else key(value)
        if keys:
            o.setdefault(section, {}).update(keys)
    return o


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop``; the loop then exits and switches everything off."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        log.warning("%s received: stopping, all outputs off", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (main() may run many times in one process)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        h = _StderrHandler()
        h.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
    root.setLevel(level)


def _version_text() -> str:
    from edge.inference.runtime import runtime_info

    info = runtime_info()
    rt = str(info) if info else "no TFLite runtime installed (pip install ai-edge-litert)"
    return f"edge-run {__version__} (weed-detector); runtime: {rt}; Python {sys.version.split()[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(_version_text())
        return EXIT_OK
    _setup_logging("DEBUG" if args.verbose else "WARNING" if args.quiet else "INFO")
    from edge.app import checks, wiring
    from edge.config import load_config

    try:
        if args.list_models:
            return checks.list_models()
        cfg = load_config(args.config, overrides_from_args(args))
        _setup_logging(cfg.log.level)
        if args.validate_config:
            return checks.validate(cfg)
        stop = threading.Event()
        if args.test_outputs:
            with stop_on_signals(stop):
                return checks.pulse_outputs(cfg, pulse_s=args.pulse_ms / 1000.0, stop=stop)
        if args.measure_valve_lag is not None:
            from edge.app import valvelag

            with stop_on_signals(stop):
                return valvelag.run(cfg, args.measure_valve_lag, args.lag_pulses_ms or valvelag.DEFAULT_PULSES_MS,
                                    repeats=args.repeats, gap_ms=args.gap_ms, log_path=args.lag_log,
                                    interactive=False if args.yes else None, stop=stop)
        with stop_on_signals(stop):
            summary = wiring.run(cfg, stop=stop, max_frames=args.max_frames)
        for line in summary.summary_lines():  # [spray]: also how fast this setup may drive
            print(line)
        return EXIT_OK
    except WeedDetectorError as e:
        print(f"edge-run: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except Exception:
        log.exception("internal error (all outputs were switched off); please report this with the log above")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
