"""Facts about the machine a benchmark ran on, and the peak memory of this process."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path
from typing import Optional


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip("\x00 \n")
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo ("model name"; on ARM boards the "Model" line or the
    core part number), else ``platform.processor()``, else the machine type."""
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("CPU part")
    if part:  # ARM: the part number names the core (0xd0b Cortex-A76 on the Pi 5, 0xd42 A78AE on Orin)
        names = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd42": "Cortex-A78AE",
                 "0xd07": "Cortex-A57", "0x004": "Carmel"}
        return f"ARM {names.get(part.lower(), 'CPU part ' + part)}"
    return platform.processor() or platform.machine() or "unknown"


def board_model() -> Optional[str]:
    """The board's name from the device tree (e.g. "Raspberry Pi 5 Model B Rev 1.0"), if any."""
    return _read("/proc/device-tree/model") or None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def loadavg() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_governor() -> Optional[str]:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def machine_info() -> dict:
    """The ``machine`` object of the report (see docs/benchmark.md)."""
    import cv2
    import numpy as np

    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "board": board_model(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count() or 1,
        "cores_usable": usable_cores(),
        "cpu_governor": cpu_governor(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def ru_maxrss_mib() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (KiB on Linux, bytes on macOS).

    On Linux this survives ``exec``: a child started from a big parent reports at least
    the parent's peak, so :func:`peak_rss` prefers ``VmHWM``.
    """
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 2)


def peak_rss() -> tuple[float, str]:
    """(peak resident memory of this process in MiB, where it was read from).

    ``VmHWM`` of /proc/self/status is the high-water mark of this process image only;
    elsewhere ``ru_maxrss``.
    """
    status = _read("/proc/self/status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                return round(kib / 1024, 2), "VmHWM"
    return ru_maxrss_mib(), "ru_maxrss"
