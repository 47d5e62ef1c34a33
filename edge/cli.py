"""``edge-run``: parse arguments, build the config, run the pipeline, map errors to exit codes.

No logic of its own lives here: wiring is in ``edge.app.wiring``, the loop in ``edge.loop.runner``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Any, Callable, Iterator, Sequence

from edge import __version__
from edge.core.args import given
from edge.core.errors import EXIT_INTERNAL, EXIT_OK, ConfigError, WeedDetectorError
from edge.core.stdout import EXIT_BROKEN_PIPE, stdout_to_devnull
from edge.core.text import OneLineFormatter, one_line

log = logging.getLogger("edge")

EPILOG = """exit codes: 0 ok, 1 internal error, 2 bad arguments, 3 config (also a log file or folder
it names that cannot be written), 4 model bundle, 5 frame source, 6 outputs (also a --state-file
that cannot be written), 7 no TFLite runtime, 8 stalled source; 128+N stopped by signal N
(SIGTERM/SIGINT once running: 0), 141 stdout closed (--print | head). Outputs are off in every case.
Config keys: deploy/config.example.toml. Signals and the systemd backstop: docs/deploy.md."""


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated pin numbers like 17,27, got {text!r}") from None


def _csv_floats(text: str) -> list[float]:
    """--lag-pulses-ms: valvelag's own parser ("," or "" would otherwise silently mean the default pulses)."""
    from edge.app.valvelag import parse_pulses

    try:
        return list(parse_pulses(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    p.add_argument("--config", metavar="PATH", type=given("a config file"), help="TOML config file (flags override it)")
    mode = p.add_mutually_exclusive_group()  # one thing to do instead of running (two would silently be one)
    mode.add_argument("--version", action="store_true", help="print the version and the TFLite runtime in use")
    mode.add_argument("--validate-config", action="store_true",
                      help="open everything a run opens except its frame source (logs, model bundle, outputs, with [spray] "
                           "the tile scorer, spray log and speed source, the live view), close it all, outputs off, "
                           "then exit 0 (ok) or the code the run would exit with")
    mode.add_argument("--list-models", action="store_true", help="list the shipped/installed model bundles")
    mode.add_argument("--test-outputs", action="store_true",
                      help="pulse each output channel in turn (priming and checking the boom), then exit")
    p.add_argument("--pulse-ms", type=float, default=500.0, metavar="MS",
                   help="--test-outputs: pulse length (default 500)")
    mode.add_argument("--all-off", action="store_true",
                      help="switch every configured output off and exit (no model, no camera): the systemd "
                           "unit's ExecStopPost= backstop")

    mode.add_argument("--measure-valve-lag", type=int, metavar="CHANNEL",
                      help="pulse ONE output channel at --lag-pulses-ms, logging the exact command times, then exit "
                           "(its options: 'valve lag' below)")

    v = p.add_argument_group("valve lag (--measure-valve-lag; docs/spray-timing.md, 'Measuring the valve lag')")
    v.add_argument("--lag-pulses-ms", type=_csv_floats, default=None, metavar="20,50,...",
                   help="pulse lengths in ms (default 20,50,100,200,500)")
    v.add_argument("--repeats", type=int, default=3, metavar="N", help="times each pulse length is given (default 3)")
    v.add_argument("--gap-ms", type=float, default=1500.0, metavar="MS",
                   help="pause between pulses, for the valve to settle (default 1500)")
    v.add_argument("--lag-log", metavar="PATH", type=given("a file path"), help="append every pulse's command times as JSON lines here")
    v.add_argument("--yes", action="store_true", help="start pulsing at once (no Enter prompt)")

    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME|DIR", type=given("a bundle folder or name"), help="bundle folder or shipped bundle name (default: the shipped default)")
    m.add_argument("--variant", metavar="Q", type=given("an export name such as float32"), help="run another export of the bundle, e.g. float32")
    m.add_argument("--threads", type=int, metavar="N", help="interpreter threads (default 2)")

    s = p.add_argument_group("frame source (one of)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index (/dev/videoN)")
    src.add_argument("--video", metavar="PATH", type=given("a video file"), help="video file")
    src.add_argument("--images", metavar="DIR", type=given("a folder of images"), help="folder of images (or one image)")
    src.add_argument("--stream", metavar="URL", type=given("a stream URL"), help="RTSP/HTTP stream URL")
    src.add_argument("--picamera", action="store_true", help="Raspberry Pi camera through picamera2")
    s.add_argument("--width", type=int, help="capture width (cameras)")
    s.add_argument("--height", type=int, help="capture height (cameras)")
    s.add_argument("--fps", type=float, help="capture frame rate (cameras)")
    s.add_argument("--realtime", action="store_true", default=None, help="video: pace at the file's frame rate")
    s.add_argument("--loop", action="store_true", default=None, help="video/images: start again at the end")
    s.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames (1 or more)")

    d = p.add_argument_group("decision")
    d.add_argument("--threshold", type=float, help="weed-score threshold (default: the bundle's rule)")
    veto = d.add_mutually_exclusive_group()
    veto.add_argument("--crop-veto", type=float, metavar="P",
                      help="never spray a view whose crop probability reaches P, 0..1 (default: the bundle's rule)")
    veto.add_argument("--no-crop-veto", action="store_true", default=None,
                      help="no crop veto, even if the bundle's rule has one")
    d.add_argument("--weed-labels", type=_csv, metavar="A,B", help="labels that count as weeds (default: the bundle's)")
    d.add_argument("--debounce", type=_debounce, metavar="N/M", help="spray when N of the last M frames are weeds")
    d.add_argument("--hold-ms", type=float, help="minimum spray time once started")

    o = p.add_argument_group("outputs")
    o.add_argument("--output", choices=["dryrun", "gpio", "jetson", "serial"], help="output kind (default dryrun)")
    o.add_argument("--pins", type=_csv_ints, metavar="17,27", help="GPIO pins (BCM) for gpio/jetson")
    o.add_argument("--active-low", action="store_true", default=None, help="relays that switch on a low pin")
    o.add_argument("--serial-port", metavar="PORT", type=given("a serial device or pyserial URL"), help="serial device or pyserial URL (serial output)")
    o.add_argument("--baud", type=int, help="serial baud rate")
    o.add_argument("--channels", type=int, help="number of channels (dryrun/serial)")
    o.add_argument("--state-file", metavar="PATH", type=given("a file path"), help="dryrun: append each output change as JSON here")

    f = p.add_argument_group("safety")
    f.add_argument("--stall-timeout", type=float, metavar="S", help="outputs off when no frame for S seconds")
    f.add_argument("--max-on", type=float, metavar="S", help="outputs off after S seconds of continuous spraying")

    lg = p.add_argument_group("logging")
    lg.add_argument("--log-jsonl", metavar="PATH", type=given("a file path"), help="per-frame JSON lines log")
    lg.add_argument("--stats-interval", type=float, metavar="S", help="seconds between stats lines")
    lg.add_argument("--print", dest="print_frames", action="store_true", default=None, help="print one line per frame")
    lg.add_argument("--save-triggers", metavar="DIR", type=given("a folder"), help="keep frames that fired and a sample of the others")
    lg.add_argument("--sample-rate", type=float, help="share of non-firing frames kept with --save-triggers")
    lg.add_argument("--sample-every", type=float, metavar="S", dest="sample_every",
                    help="also keep one non-firing frame at least every S seconds with --save-triggers (for labelling)")
    lg.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    lg.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    w = p.add_argument_group("live view (docs/live-view.md; pip install '.[web]')")
    w.add_argument("--web", metavar="[HOST:]PORT", type=given("a port or HOST:PORT"),
                   help="serve the live view on PORT (127.0.0.1) or HOST:PORT (a non-local host needs [web] token)")
    return p


# How the command line sets config keys: (argparse dest, config section, what the flag's value sets).
# A plain key takes the flag's value; a converter returns the keys it sets ({} = none).
# A flag that was not given (None, or False for a switch) sets nothing; later rows win.
Convert = Callable[[Any], dict]


def _source(kind: str, key: str | None = None) -> Convert:
    """--camera N, --video PATH, ...: the flag chooses the source kind."""
    return lambda value: {"kind": kind, **({key: value} if key else {})}


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
    ("crop_veto", "decision", "crop_veto"),
    ("no_crop_veto", "decision", _const("crop_veto", "none")),
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
    ("web", "web", "listen"),
    ("sample_every", "log", "sample_every_s"),
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


# -- signals (docs/deploy.md, "Signals and a vanished process") --------------------------
# Every signal whose default action ends the process, and that can be caught, is a fail-safe
# stop; those that suspend it switch every output off first. Not here: SIGKILL and SIGSTOP
# (uncatchable: the systemd unit's ExecStopPost= runs `edge-run --all-off`), SIGSEGV, SIGBUS,
# SIGFPE, SIGILL (a fault in native code, where no Python handler can run: the same backstop),
# and SIGPIPE, which stays ignored as Python sets it, so a closed socket inside a library cannot
# end a run; a closed stdout raises BrokenPipeError instead (exit EXIT_BROKEN_PIPE).
def _present(*names: str) -> tuple[signal.Signals, ...]:
    return tuple(signal.Signals[n] for n in names if n in signal.Signals.__members__)  # SIGPWR: Linux only


REQUESTED_STOP = _present("SIGTERM", "SIGINT")  # exit 0 once the run loop runs (a requested stop)
STOP_SIGNALS = REQUESTED_STOP + _present("SIGHUP", "SIGQUIT", "SIGABRT", "SIGUSR1", "SIGUSR2", "SIGALRM",
                                         "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGXFSZ", "SIGIO", "SIGPWR")
SUSPEND_SIGNALS = _present("SIGTSTP", "SIGTTIN", "SIGTTOU")  # outputs off, then the process stops


class StartupInterrupted(BaseException):
    """A stop signal before the run loop took over (imports, config, model, outputs, source):
    start-up ends where it is, ``finally`` blocks close what was opened (nothing was on yet)."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} during start-up")
        self.signum = signum


class SignalStop:
    """The signals of one ``edge-run`` command turned into a fail-safe stop (``with SignalStop(stop)``).

    A handler runs in the main thread between two bytecodes, wherever that thread is (perhaps
    inside an output's ``set``), so the handlers switch nothing, take no lock, log nothing and
    never wait: Python's C-level handler writes the signal's number to a pipe
    (``signal.set_wakeup_fd``) and a thread of ours reads it there. A stop signal is recorded
    (the first one decides the exit code, see ``exit_code``) and sets ``stop``: the loop ends
    and its ``finally`` switches every output off and closes them. A suspend signal (Ctrl-Z)
    switches every output that was ever on off and holds it off (``ChannelOutput.held_off``)
    while the process is stopped; after SIGCONT the run goes on and the outputs follow the next
    decision. Until ``running()`` (start-up: no output is on yet) a stop signal also raises
    ``StartupInterrupted`` from the handler, so a slow start-up step is abandoned at once.
    Outside the main thread (an embedding program) nothing is installed.
    """

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.signum: int | None = None
        self._running = False
        self._raised = False
        self._old: dict[signal.Signals, Any] = {}
        self._old_wakeup = -1
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = self._pipe = os.pipe()
        os.set_blocking(w, False)  # the C handler must never block on it
        self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, args=(r,), name="edge-run-signals", daemon=True)
        self._thread.start()
        for s in STOP_SIGNALS + SUSPEND_SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:  # nohup, a script's background job: stays ignored
                self._old[s] = signal.signal(s, self._handler)
        self._old[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._handler)  # the end of a suspension
        return self

    def __exit__(self, *exc) -> None:
        self._running = True  # from here on nothing raises
        for s, old in self._old.items():
            signal.signal(s, old)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._pipe[1])  # the thread reads end-of-file and ends
            if self._thread is not None:
                self._thread.join()
            os.close(self._pipe[0])

    def running(self) -> None:
        """Start-up is over (the run loop, or a check that switches outputs, takes over): from now on
        a stop signal only sets ``stop``; what runs ends by itself and switches off on its way out."""
        self._running = True

    def exit_code(self, code: int) -> int:
        """``code`` (what the command returned) after the signal that stopped it: 128 + the signal's
        number, except SIGTERM/SIGINT (a requested stop), which leave ``code``."""
        if self.signum is None or self.signum in REQUESTED_STOP:
            return code
        return 128 + self.signum

    def _handler(self, signum: int, _frame: Any) -> None:
        if signum not in STOP_SIGNALS or self._running or self._raised:
            return  # the wakeup pipe carries it to _watch
        self._raised = True
        raise StartupInterrupted(signum)

    def _watch(self, fd: int) -> None:
        # the signals go to the other threads (the main thread first), whose blocking calls they interrupt
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS + SUSPEND_SIGNALS)
        received = (signum for data in iter(lambda: os.read(fd, 64), b"") for signum in data)
        for signum in received:
            if signum in SUSPEND_SIGNALS:
                self._suspend(signal.Signals(signum), received)
            else:
                self._stopped_by(signum)

    def _stopped_by(self, signum: int) -> None:
        if signum not in STOP_SIGNALS:
            return  # SIGCONT without a suspension of ours
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: stopping, all outputs off", signal.Signals(signum).name)
        self.stop.set()

    def _suspend(self, sig: signal.Signals, received: Iterator[int]) -> None:
        """Ctrl-Z: every output off and held off, the process stopped (SIGSTOP); the outputs are let go
        only once SIGCONT has come through the pipe, so nothing opens before the process is stopped."""
        from edge.outputs.channels import live_outputs

        with ExitStack() as held:
            for out in live_outputs():
                try:
                    held.enter_context(out.held_off("suspended"))
                except Exception as e:  # the others must go off all the same
                    log.error("%s output: switching off for %s failed: %s", out.name, sig.name, e)
            log.warning("%s received: all outputs off, suspended (fg or kill -CONT resumes)", sig.name)
            os.kill(os.getpid(), signal.SIGSTOP)
            for signum in received:
                if signum == signal.SIGCONT:
                    break
                self._stopped_by(signum)  # a stop signal sent while stopped is acted on once resumed
        log.warning("resumed: the outputs follow the next decision")


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
    with SignalStop(threading.Event()) as signals:  # first: Ctrl-C during the imports below is caught too
        try:
            return signals.exit_code(_command(argv, signals))
        except StartupInterrupted as e:
            print(f"edge-run: stopped by {signal.Signals(e.signum).name} during start-up; no output was switched "
                  f"on (exit {128 + e.signum})", file=sys.stderr)
            return 128 + e.signum


def _command(argv: Sequence[str] | None, signals: SignalStop) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(_version_text())
        return EXIT_OK
    _setup_logging("DEBUG" if args.verbose else "WARNING" if args.quiet else "INFO")
    from edge.app import checks, live, wiring
    from edge.config import load_config

    stop = signals.stop
    try:
        if args.list_models:
            return checks.list_models()
        overrides = overrides_from_args(args)
        cfg = load_config(args.config, overrides)
        _setup_logging(cfg.log.level)
        if args.validate_config:
            return checks.validate(live.with_saved_tuning(cfg, args.config, overrides))
        if args.all_off:
            signals.running()  # a signal must not cut the backstop short: it finishes, then exits
            return checks.all_off(cfg)
        if args.test_outputs:
            signals.running()
            return checks.pulse_outputs(cfg, pulse_s=args.pulse_ms / 1000.0, stop=stop)
        if args.measure_valve_lag is not None:
            from edge.app import valvelag

            signals.running()
            return valvelag.run(cfg, args.measure_valve_lag, args.lag_pulses_ms or valvelag.DEFAULT_PULSES_MS,
                                repeats=args.repeats, gap_ms=args.gap_ms, log_path=args.lag_log,
                                interactive=False if args.yes else None, stop=stop)
        cfg = live.with_saved_tuning(cfg, args.config, overrides)  # the live view's saved tuning, under the flags
        summary = wiring.run(cfg, stop=stop, max_frames=args.max_frames, started=signals.running)
        for line in summary.summary_lines():  # [spray]: also how fast this setup may drive
            print(line)
        return EXIT_OK
    except WeedDetectorError as e:
        print(f"edge-run: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # stdout closed (edge-run --print | head): a stop, the outputs went off on the way out
        stdout_to_devnull()
        log.warning("stdout was closed (the program reading it ended): stopped, all outputs off")
        return EXIT_BROKEN_PIPE
    except Exception:
        log.exception("internal error (all outputs were switched off); please report this with the log above")
        return EXIT_INTERNAL


def entry() -> None:
    """The ``edge-run`` console script: ``main()``, then leave at once when a reader thread is still
    blocked inside OpenCV (its return during interpreter shut-down can abort the process; every
    output is already off and closed here)."""
    code = main()
    from edge.sources.reader import abandoned_threads

    if abandoned_threads():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
