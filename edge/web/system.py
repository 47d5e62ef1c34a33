"""What the OS tells about the machine, for the live view: CPU temperature, load, disk left for the logs.

Each figure is None where the OS does not tell it (no thermal zone in a VM, no load average on
some systems); nothing here raises.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

THERMAL = Path("/sys/class/thermal")
_CPU_ZONES = ("cpu", "x86_pkg", "soc", "cpu-thermal", "tcpu", "acpitz")


def cpu_temperature_c(root: Path = THERMAL) -> float | None:
    """The CPU's temperature in °C: the thermal zone whose type names the CPU (else the first), or None."""
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    readings = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((not any(k in kind for k in _CPU_ZONES), milli / 1000.0))
    return min(readings)[1] if readings else None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def disk_free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent), or None."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def system_info(log_dir: str | os.PathLike) -> dict:
    load = load_average()
    return {"cpu_temp_c": cpu_temperature_c(), "load": None if load is None else [round(x, 2) for x in load],
            "cpus": os.cpu_count(), "disk_free_bytes": disk_free_bytes(log_dir), "log_dir": str(log_dir)}
