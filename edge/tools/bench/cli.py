"""``edge-bench``: measure the edge pipeline per stage, against a naive loop, per configuration.

Examples::

    edge-bench --video samples/field.avi --variants int8,float32 --threads 1,2,4 --frames 300
    edge-bench --generated 640x480 --seconds 30 --json pi5.json
    edge-bench --compare laptop.json pi5.json
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from typing import Optional, Sequence

from edge.core.errors import EXIT_INTERNAL, EXIT_OK, ConfigError, WeedDetectorError
from edge.core.files import check_output
from edge.inference.config import MAX_THREADS

MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: longer is a typo
REFERENCE_HELP = "models/reference/mnv2-160-int8 of this checkout"
EPILOG = """Each configuration runs in its own process (python -m edge.tools.bench.runner). Outputs are always
the dry-run output: a benchmark never moves a valve. The JSON schema: docs/benchmark.md.
exit codes: 0 ok, 1 internal error or a failed run, 2 bad arguments, 3 config, 4 model bundle, 5 frame source."""


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _threads(text: str) -> list[int]:
    try:
        values = [int(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"thread counts must be 1 to {MAX_THREADS}, got {text!r}")
    return list(dict.fromkeys(values))


def _size(text: str) -> tuple[int, int]:
    from edge.tools.bench.frames import FramesSpec, parse_size

    try:
        w, h = parse_size(text)
        FramesSpec(kind="generated", width=w, height=h)  # its own bounds (at least 8x8), as an argument error
        return w, h
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(least: int, what: str):
    """An argparse type: a whole number >= ``least`` (--frames, --warmup), refused as a bad argument (exit 2)."""
    def check(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = least - 1
        if n < least:
            raise argparse.ArgumentTypeError(f"expected {what}, a whole number of at least {least}, got {text!r}")
        return n
    return check


def _scoring(text: str) -> list[str]:
    from edge.tools.bench.runs import scoring_overrides

    values = _csv(text)
    try:
        for v in values:
            scoring_overrides(v)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return values


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = math.nan
    if not 0 < s <= MAX_TIMEOUT_S:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most {MAX_TIMEOUT_S:g}, got {text!r}")
    return s


def _seed(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n < 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {2**32 - 1}, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-bench",
        description="Latency benchmark of the weed-detector edge pipeline (the code edge-run runs): per-stage "
                    "percentiles, fps, dropped frames, peak memory, against a naive loop on the same frames.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print a side-by-side table of two result files and exit")

    m = p.add_argument_group("configurations (every combination runs)")
    m.add_argument("--model", action="append", metavar="NAME|DIR",
                   help="bundle folder or shipped name; repeat for several (default: the shipped default)")
    m.add_argument("--variants", type=_csv, metavar="Q,Q", default=[""],
                   help="exports of each bundle, e.g. int8,float16,float32 (default: the main model)")
    m.add_argument("--threads", type=_threads, metavar="N,N", default=[2], help="interpreter threads, e.g. 1,2,4 (default 2)")
    m.add_argument("--no-baseline", action="store_true", help="skip the naive-loop baseline")
    m.add_argument("--scoring", type=_scoring, metavar="S,S", default=[""],
                   help="per-lane runs (--config with [spray]): how tiles are scored, each a run: tiles, frame, "
                        "frame@SCALE (e.g. tiles,frame@0.5,frame@0.75; default: the config's [model] scoring)")
    m.add_argument("--reference", metavar="DIR", default=None,
                   help="per-lane runs: the bundle whose one-image invoke p50 each run's end-to-end p95 is divided by "
                        f"(default: {REFERENCE_HELP} when it exists; 'none' for no reference)")
    m.add_argument("--config", metavar="PATH", help="edge-run TOML whose decision/safety settings to use")
    m.add_argument("--web-client", action="store_true",
                   help="run the live view with one client reading its stream every other block of frames, and "
                        "report end-to-end p95 without and with it (needs pip install '.[web]')")

    s = p.add_argument_group("frames (one of; default --generated 640x480)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--video", metavar="PATH", help="video file (looped)")
    src.add_argument("--images", metavar="DIR", help="folder of images (looped)")
    src.add_argument("--camera", type=int, metavar="N", help="OpenCV camera index (/dev/videoN)")
    src.add_argument("--generated", type=_size, metavar="WxH", help="synthetic frames of this size")
    s.add_argument("--width", type=int, help="camera: capture width to ask for")
    s.add_argument("--height", type=int, help="camera: capture height to ask for")
    s.add_argument("--fps", type=float, help="camera: frame rate to ask for")
    s.add_argument("--seed", type=_seed, default=0, help="generated frames: random seed (default 0)")

    n = p.add_argument_group("length")
    n.add_argument("--frames", type=_count(1, "frames"), metavar="N", help="measured frames per run (default 300 unless --seconds)")
    n.add_argument("--seconds", type=_seconds, metavar="S", help="measured seconds per run (with --frames: whichever ends first)")
    n.add_argument("--warmup", type=_count(0, "frames"), default=20, metavar="N", help="frames run before measuring (default 20)")
    n.add_argument("--timeout", type=_seconds, default=900.0, metavar="S", help="give up on one run after S seconds (default 900)")

    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", default="edge-bench.json", help="result file (default edge-bench.json)")
    o.add_argument("--markdown", metavar="PATH", help="also write the table to this file")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    o.add_argument("-v", "--verbose", action="store_true", help="show each run's stderr")
    return p


def reference_bundle(given: str | None) -> str:
    """The reference bundle of per-lane runs: as given ("none": none), else the checkout's, when there is one."""
    if given is not None:
        return "" if given == "none" else given
    from edge.tools.bench.runs import REFERENCE_BUNDLE

    return str(REFERENCE_BUNDLE) if (REFERENCE_BUNDLE / "manifest.json").is_file() else ""


def frames_spec(a: argparse.Namespace):
    from edge.tools.bench.frames import FramesSpec

    if a.video:
        return FramesSpec(kind="video", path=a.video, width=None, height=None)
    if a.images:
        return FramesSpec(kind="images", path=a.images, width=None, height=None)
    if a.camera is not None:
        return FramesSpec(kind="camera", index=a.camera, width=a.width, height=a.height, fps=a.fps)
    w, h = a.generated or (640, 480)
    return FramesSpec(kind="generated", width=w, height=h, seed=a.seed)


def _progress(quiet: bool, verbose: bool):
    def show(i: int, total: int, p, res: Optional[dict], stderr: str) -> None:
        if res is None:
            if not quiet:
                print(f"[{i}/{total}] {p.id} ...", file=sys.stderr, flush=True)
            return
        if verbose and stderr.strip():
            print(stderr.rstrip(), file=sys.stderr)
        if not res["ok"]:
            print(f"[{i}/{total}] {p.id} FAILED: {res['error']}", file=sys.stderr, flush=True)
            if not verbose and stderr.strip():
                print("  " + "\n  ".join(stderr.strip().splitlines()[-5:]), file=sys.stderr)
        elif not quiet:
            e = res["stages_ms"]["end_to_end"]
            print(f"[{i}/{total}] {p.id}: {res['frames']} frames, {res['fps']:.1f} fps, "
                  f"end-to-end p50 {e['p50']:.2f} ms p95 {e['p95']:.2f} ms", file=sys.stderr, flush=True)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edge.tools.bench import report

    try:
        if args.compare:
            print(report.compare_files(*args.compare), end="")
            return EXIT_OK
        from edge.tools.bench.sweep import plan, run_all
        from edge.tools.bench.system import loadavg, machine_info

        n_frames = args.frames if args.frames is not None else (None if args.seconds is not None else 300)
        frames = frames_spec(args)
        planned = plan(args.model or [], args.variants, args.threads, frames, n_frames, args.seconds,
                       args.warmup, args.config, baseline=not args.no_baseline, scorings=args.scoring,
                       reference=reference_bundle(args.reference), web_client=args.web_client)
        if args.markdown and os.path.realpath(args.markdown) == os.path.realpath(args.json):
            raise ConfigError(f"--markdown {args.markdown} is the --json file: the table would replace the results",
                              "give the table another file name")
        check_output("--json", args.json)  # after the plan's checks, before the runs
        if args.markdown:
            check_output("--markdown", args.markdown)
        machine = machine_info()
        machine["loadavg_start"] = loadavg()
        runs = run_all(planned, args.timeout, _progress(args.quiet, args.verbose))
        machine["loadavg_end"] = loadavg()
        settings = {
            "source": frames.to_dict(),
            "source_description": frames.describe(),
            "frames": n_frames,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "config": args.config,
            "baseline": not args.no_baseline,
            "timeout_s": args.timeout,
        }
        argv_list = list(sys.argv[1:] if argv is None else argv)
        doc = report.build_document(runs, machine, settings, shlex.join(["edge-bench", *argv_list]))
        text = report.markdown(doc)
        print(text, end="")
        report.write_json(doc, args.json)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(text)
        if not args.quiet:
            print(f"results written to {args.json}", file=sys.stderr)
        failed = [r for r in runs if not r["ok"]]
        if failed:
            print(f"edge-bench: {len(failed)} of {len(runs)} runs failed (see above)", file=sys.stderr)
            return failed[0]["exit_code"] or EXIT_INTERNAL
        return EXIT_OK
    except WeedDetectorError as e:
        print(f"edge-bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"edge-bench: error: {e}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
