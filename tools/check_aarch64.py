"""Check the Raspberry Pi / Jetson path here, under aarch64 emulation.

1. The Pi's dependency set (apt's numpy 1.24.2 plus the pins in
   deploy/constraints-bookworm.txt, as aarch64 wheels) imports: numpy, OpenCV, LiteRT,
   pydantic, pyserial and every edge module the service uses.
2. A model bundle (default: the shipped default bundle, else the colour-toy test bundle)
   gives the same outputs on aarch64 LiteRT as on this machine, image by image.

    python tools/check_aarch64.py [--bundle DIR] [--images DIR] [--tool PATH]

It runs this same file under ``aarch64-python`` (``../shared/tools/aarch64-python`` or
``$AARCH64_PYTHON``; user-mode qemu + a Debian bookworm arm64 root, minutes the first
time) with ``--worker``, once per board CPU: the Pi 4's Cortex-A72 and the Pi 5's
Cortex-A76. Exit 0 when everything matches, 1 when not, 77 when the emulator is not
available. The result is recorded in docs/deploy.md.

Why per CPU: that tool runs qemu with ``-cpu max`` (every optional instruction, e.g.
i8mm, SVE) and a fake Cortex-A76 ``/proc/cpuinfo``. With that mix XNNPACK picks int8
kernels whose emulation is wrong: a MobileNetV2 int8 bundle answers nearly the same
for every image (float32 and XNNPACK-free kernels are fine). A real board's CPU is
consistent, so this script puts a small ``qemu-aarch64-static`` wrapper first on the
PATH that swaps ``-cpu max`` and the fake cpuinfo for a real core's (``--cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "deploy" / "constraints-bookworm.txt"
APT_NUMPY = "numpy==1.24.2"  # python3-numpy on Raspberry Pi OS Bookworm
EXIT_UNAVAILABLE = 77
TOLERANCE = 1.0 / 256  # one step of a uint8-quantised output


def _cpuinfo(features: str, variant: str, part: str, revision: str) -> str:
    return "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
        for i in range(4))


# board -> (qemu CPU model, /proc/cpuinfo of that core as the board's kernel shows it)
CPUS = {
    "pi4": ("cortex-a72", _cpuinfo("fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", "3")),
    "pi5": ("cortex-a76", _cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                                   "lrcpc dcpop asimddp", "0x4", "0xd0b", "1")),
}

_WRAPPER = f"""#!{sys.executable}
# made by tools/check_aarch64.py: qemu with a real core instead of -cpu max, and its cpuinfo
import os, shutil, sys
here = os.path.dirname(os.path.abspath(__file__))
path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if os.path.abspath(d) != here)
real = shutil.which("qemu-aarch64-static", path=path)
if real is None:
    sys.exit("qemu-aarch64-static is not installed")
args = sys.argv[1:]
for i, a in enumerate(args):
    if a == "-cpu" and i + 1 < len(args):
        args[i + 1] = os.environ["CHECK_QEMU_CPU"]
    elif a.startswith("FAKE_CPUINFO="):
        args[i] = "FAKE_CPUINFO=" + os.environ["CHECK_CPUINFO"]
os.execv(real, [real] + args)
"""


def pi_requirements() -> list[str]:
    """apt's numpy plus the exact pins of the Bookworm constraints, plus the rest of the core."""
    reqs = [APT_NUMPY]
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            reqs.append(line)
    return reqs + ["pydantic>=2.5", "pyserial>=3.5"]


def default_bundle() -> Path:
    shipped = ROOT / "models" / "plant-seedlings-mnv2"
    if (shipped / "manifest.json").exists():
        return shipped
    return ROOT / "tests" / "data" / "bundles" / "colour-toy"


def default_images() -> list[Path]:
    folder = ROOT / "samples" / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:8]


def find_tool(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("AARCH64_PYTHON"), str(ROOT.parent / "shared" / "tools" / "aarch64-python")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def classify(bundle: Path, images: list[Path]) -> dict:
    """What the worker prints: versions, and per image the label and probabilities."""
    import cv2
    import numpy as np

    import edge.cli  # noqa: F401  - the service's whole import graph
    import edge.service.notify  # noqa: F401
    import edge.outputs.serial_out  # noqa: F401
    import edge.app.wiring  # noqa: F401
    from edge.inference.bundle import load_bundle
    from edge.inference import Classifier

    from edge.inference.config import PRESETS
    from edge.inference.vegetation import VegetationGate

    clf = Classifier(load_bundle(bundle), num_threads=1)
    gate = VegetationGate(PRESETS["medium"])
    results, vegetation = {}, {}
    for path in images:
        img = cv2.imread(str(path))
        scores = clf.classify(img, "BGR")
        results[path.name] = [round(float(p), 6) for p in scores.probs]
        # the per-lane gate on a 4 x 3 grid of the image, with the plant's size (joined over 4 px, the default's
        # at 16 px/cm): integer work, so the same numbers on any CPU
        h, w = img.shape[:2]
        boxes = [(w * i // 4, w * (i + 1) // 4, h * j // 3, h * (j + 1) // 3) for i in range(4) for j in range(3)]
        vegetation[path.name] = [[round(v.fraction, 9), v.gated, None if v.plant is None else round(v.plant, 9)]
                                 for v in gate.measure(img, boxes, plants=True, join_px=4)]
    labels = list(clf.labels)
    runtime = str(clf.runtime)
    clf.close()
    import ai_edge_litert
    import pydantic
    import serial

    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "cv2": cv2.__version__, "pydantic": pydantic.VERSION,
                     "pyserial": serial.VERSION, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?")},
        "runtime": runtime,
        "labels": labels,
        "probs": results,
        "vegetation": vegetation,
    }


def compare(host: dict, arm: dict) -> list[str]:
    problems = []
    if arm["labels"] != host["labels"]:
        problems.append(f"labels differ: {arm['labels']} vs {host['labels']}")
    for name, probs in host["probs"].items():
        other = arm["probs"].get(name)
        if other is None:
            problems.append(f"{name}: no aarch64 result")
            continue
        diff = max(abs(a - b) for a, b in zip(probs, other))
        top_h = max(range(len(probs)), key=probs.__getitem__)
        top_a = max(range(len(other)), key=other.__getitem__)
        if top_h != top_a or diff > TOLERANCE:
            problems.append(f"{name}: aarch64 {other} vs host {probs} (max diff {diff:.4f})")
    for name, tiles in host["vegetation"].items():
        if arm.get("vegetation", {}).get(name) != tiles:
            problems.append(f"{name}: the gate's tiles on aarch64 {arm.get('vegetation', {}).get(name)} vs host {tiles}")
    if not arm["versions"]["numpy"].startswith("1.24"):
        problems.append(f"aarch64 numpy is {arm['versions']['numpy']}, not apt's 1.24")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--images", type=Path, nargs="*", default=None)
    ap.add_argument("--tool", help="the aarch64-python script (default ../shared/tools/aarch64-python)")
    ap.add_argument("--cpu", action="append", choices=sorted(CPUS), help="board to emulate (default: all)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    bundle = (a.bundle or default_bundle()).resolve()
    images = [p.resolve() for p in (a.images or default_images())]
    if a.worker:
        print("RESULT " + json.dumps(classify(bundle, images)))
        return 0

    tool = find_tool(a.tool)
    if tool is None:
        print("aarch64-python not found (../shared/tools/aarch64-python or $AARCH64_PYTHON): cannot check", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if os.geteuid() != 0 and not shutil.which("qemu-aarch64-static"):
        print("aarch64-python needs root on first use (qemu-user-static, debootstrap)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    host = classify(bundle, images)
    reqs = pi_requirements()
    print(f"bundle {bundle.name}, {len(images)} images; aarch64 dependency set: {' '.join(reqs)}")
    base = [tool, "--pip", *reqs, "--path", str(ROOT), "--"]
    boot = subprocess.run(base + ["-c", "import numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if boot.returncode != 0:  # first use: debootstrap, qemu and the wheels, with the tool's own qemu
        print("setting up the emulator failed:\n" + "\n".join(boot.stderr.strip().splitlines()[-15:]), file=sys.stderr)
        return 1
    print(f"host:    {host['machine']} Python {host['python']} {host['versions']} {host['runtime']}")
    worker = [str(Path(__file__).resolve()), "--worker", "--bundle", str(bundle), "--images", *map(str, images)]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "qemu-aarch64-static"
        wrapper.write_text(_WRAPPER)
        wrapper.chmod(0o755)
        for board in (a.cpu or list(CPUS)):
            cpu, info = CPUS[board]
            cpuinfo = Path(tmp) / f"cpuinfo-{board}"
            cpuinfo.write_text(info)
            env = {**os.environ, "PATH": f"{tmp}:{os.environ.get('PATH', '')}", "CHECK_QEMU_CPU": cpu,
                   "CHECK_CPUINFO": str(cpuinfo)}
            proc = subprocess.run(base + worker, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                print(f"{board} ({cpu}): the aarch64 run failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
                failed = True
                continue
            arm = json.loads(line[len("RESULT "):])
            print(f"{board} ({cpu}): {arm['machine']} Python {arm['python']} {arm['versions']} {arm['runtime']}")
            problems = compare(host, arm)
            for p in problems:
                print(f"MISMATCH {board}: {p}")
            if problems:
                failed = True
            else:
                print(f"OK {board} ({cpu}): {len(host['probs'])} images give the same labels and probabilities "
                      f"(within {TOLERANCE:.4f}) and the same gate tiles and plant sizes as on {host['machine']}")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
