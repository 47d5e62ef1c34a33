"""``RunStats``: one snapshot of a run, and its three renderings — the periodic ``stats:``
log line, the summary ``edge-run`` prints at the end, and the systemd STATUS fields
(``edge.service.notify.status_text`` turns those into one line)."""

from __future__ import annotations

from dataclasses import dataclass

from edge.core.reconnect import LinkState
from edge.loop.processor import ProcessorCounts


@dataclass(frozen=True)
class RunStats:
    timing: dict  # edge.core.metrics.RollingStats.summary(): frames, fps, e2e p50/p95, inference p50, dropped, weeds
    spray_frames: int
    stalls: int
    source_losses: int  # the live source failed or stayed silent and was reopened
    reconnects: int  # ... and came back
    stalled: bool
    camera: str  # ok | stalled | lost
    outputs: tuple[bool, ...]
    counts: ProcessorCounts
    controller: LinkState | None = None  # a reconnecting (serial) output
    fps: float = 0.0  # frames per second over the rolling window, unrounded (STATUS)
    latency_ms: tuple[float, float] = (float("nan"), float("nan"))  # end to end p50, p95 (STATUS)
    stopped_by: str = ""  # "end of source" | "stop requested" | "max frames"; "" while running
    spray: dict | None = None  # per lane, at the end: the scheduler's figures and the max speed

    # -- the figures -------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self.timing["frames"]

    @property
    def weed_frames(self) -> int:
        return self.timing["weed_frames"]

    @property
    def dropped(self) -> int:
        return self.timing["dropped"]

    @property
    def max_on_trips(self) -> int:
        return self.counts.max_on_trips

    @property
    def stats(self) -> dict:
        """The summary as a dict (benchmarks and tests read it)."""
        c = self.counts
        return {**self.timing, "stalls": self.stalls, "source_losses": self.source_losses,
                "reconnects": self.reconnects,
                **({"blocked_frames": c.blocked_frames} if c.blocked_frames else {}),
                **({"unavailable_frames": c.unavailable_frames} if c.unavailable_frames else {}),
                **({"gate": {"unit": c.gate.unit, "seen": c.gate.seen, "bare": c.gate.bare}} if c.gate else {}),
                **({"spray": self.spray} if self.spray is not None else {})}

    # -- the stats line ----------------------------------------------------------------
    def line(self) -> str:
        s = self.timing
        line = (f"stats: {s['frames']} frames, {s['fps']:.1f} fps, latency p50 {s['e2e_p50_ms']:.1f} ms "
                f"p95 {s['e2e_p95_ms']:.1f} ms (inference p50 {s['inference_p50_ms']:.1f} ms), "
                f"dropped {s['dropped']}, weed frames {s['weed_frames']}")
        if self.stalls or self.source_losses:
            line += f", stalls {self.stalls}, source lost {self.source_losses}x, reopened {self.reconnects}x"
        c = self.counts
        if c.blocked_frames:
            line += f", enable switch blocked {c.blocked_frames} spray frame(s)"
        if c.unavailable_frames:
            line += f", {c.unavailable_frames} spray frame(s) not sprayed: controller lost"
        if c.blocked_openings:
            line += f", enable switch blocked {c.blocked_openings} opening(s)"
        if c.unavailable_openings:
            line += f", controller lost: {c.unavailable_openings} opening(s) not sprayed"
        if self.controller is not None and self.controller.losses:
            line += f", controller lost {self.controller.losses}x, reconnected {self.controller.reconnects}x"
        if c.gps is not None:
            line += f", GPS lost {c.gps.link.losses}x, reopened {c.gps.link.reconnects}x"
        if c.gate is not None:
            line += f", {c.gate.text}"
        return line

    # -- the summary at the end ----------------------------------------------------------
    def summary_lines(self) -> list[str]:
        c = self.counts
        lines = [f"done ({self.stopped_by}): {self.frames} frames, {self.weed_frames} weed frames, "
                 f"{self.spray_frames} spraying, {self.dropped} dropped, {self.stalls} stalls, "
                 f"{self.reconnects} source reconnects"
                 + (f", controller lost {self.controller.losses}x (reconnected {self.controller.reconnects}x)"
                    if self.controller is not None and self.controller.losses else "")
                 + (f", {c.blocked_frames} spray frames blocked by the enable switch" if c.blocked_frames else "")
                 + (f", {c.unavailable_frames} spray frames not sprayed (controller lost)"
                    if c.unavailable_frames else "") + (f", {c.gate.text}" if c.gate is not None else "")
                 + "; all outputs off"]
        if self.spray is not None:  # per lane: how fast this setup may drive
            lines.append(max_speed_line(self.spray))
        return lines

    # -- systemd STATUS ----------------------------------------------------------------
    def status(self) -> dict:
        info = {
            "frames": self.frames,
            "fps": self.fps,
            "stalled": self.stalled,
            "camera": self.camera,
            "stalls": self.stalls,
            "source_losses": self.source_losses,
            "reconnects": self.reconnects,
            "dropped": self.dropped,
            "outputs": f"{sum(self.outputs)}/{len(self.outputs)} on",
            "latency_p50_ms": self.latency_ms[0],
            "latency_p95_ms": self.latency_ms[1],
        }
        gps = self.counts.gps
        if gps is not None:
            info.update(gps=gps.text, gps_losses=gps.link.losses, gps_reconnects=gps.link.reconnects)
        if self.controller is not None:
            info.update(controller="ok" if self.controller.connected else "lost, reconnecting",
                        controller_losses=self.controller.losses, controller_reconnects=self.controller.reconnects)
        return info


def max_speed_line(spray: dict) -> str:
    """The human line edge-run prints at the end of a run with [spray]."""
    cov = "no bound" if spray["coverage_kmh"] == float("inf") else f"{spray['coverage_kmh']:.1f} km/h"
    return (f"max speed: {spray['max_speed_kmh']:.1f} km/h (limited by {spray['limited_by']}; sprays land up to "
            f"{spray['landing_kmh']:.1f} km/h with {spray['latency_ms']:.1f} ms from capture to valve command incl. "
            f"valve lag; frame coverage {cov}) | sprays: {spray['planned']} planned, {spray['late']} late "
            f"({spray['missed']} missed), {spray['opens']} opens, {spray['max_on_trips']} max-on trips, "
            f"{spray['too_slow_frames']} frames below min speed or with it unknown"
            + (f", {spray['disabled_frames']} with the enable switch off" if spray.get("disabled_frames") else "")
            + (f", {spray['blocked']} openings blocked by the enable switch" if spray.get("blocked") else "")
            + (f", {spray['unavailable']} openings not sprayed (controller lost)" if spray.get("unavailable") else "")
            + (f", GPS lost {spray['gps_losses']}x (reopened {spray['gps_reconnects']}x)"
               if spray.get("gps_losses") else ""))
