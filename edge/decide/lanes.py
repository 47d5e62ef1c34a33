"""Per-lane decisions: each lane (boom section / nozzle) has its own ``Decider`` and
remembers the weed tiles its debounce window is still waiting on.

A lane is fed its most weed-like tile each frame. When its decision says spray, the lane
hands out every sighting to spray: the weed tiles of the earlier weed frames the debounce
was waiting on (so the first frame that fired sets the time) and this frame's own weed
tiles — or, with a hold (``min_hold_ms``) and no weed tile of its own, the lane's whole
strip, to bridge gaps. A weed frame that does not spray yet is remembered; sightings that
left the window of the last M frames are forgotten. No I/O: turning sightings into valve
times is ``edge.spray.planner``'s job.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.core.frame import Frame
from edge.decide.decider import Decider, Decision
from edge.decide.rule import ViewEvidence
from edge.core.tile import Tile


@dataclass(frozen=True)
class Sighting:
    """Tiles of one lane seen in one frame, to be sprayed when that lane's decision says so."""

    t_capture_ns: int
    frame_id: int
    tiles: tuple[Tile, ...]
    seq: int = 0  # the frame count when it was seen (the debounce window is M frames)


@dataclass(frozen=True)
class LaneVerdict:
    """One lane's decision on one frame, and what to spray because of it."""

    lane: int
    decision: Decision
    weed_scores: tuple[float, ...]  # per tile along travel, top row first
    sightings: tuple[Sighting, ...]  # to spray now (empty unless decision.spray), oldest first
    own_weed: bool  # this frame has weed tiles of its own in this lane (else it sprays for the hold or window)
    decided_tile: int = 0  # the tile (index along travel) whose view the decision was made on
    crop_scores: tuple[float, ...] = ()  # per tile along travel: the crop mass of its view


class LaneDecisions:
    """The deciders of every lane and their debounce windows; see the module docstring."""

    def __init__(self, make_decider: Callable[[], Decider], lanes: int):
        self.deciders = [make_decider() for _ in range(lanes)]
        first = self.deciders[0]
        self.threshold, self.labels, self.weed_labels = first.threshold, first.labels, first.weed_labels
        self.debounce_n, self.debounce_m = first.n, first.m
        self._waiting: list[deque[Sighting]] = [deque(maxlen=first.m) for _ in range(lanes)]
        self._seq = 0

    def reset(self) -> None:
        """Forget every lane's history (after a stall or a lost camera: old frames say nothing now)."""
        for decider in self.deciders:
            decider.reset()
        for waiting in self._waiting:
            waiting.clear()

    def next_frame(self) -> None:
        """A new frame: weed frames that left the debounce window no longer count."""
        self._seq += 1
        for waiting in self._waiting:
            while waiting and waiting[0].seq <= self._seq - self.debounce_m:
                waiting.popleft()

    def decide(self, lane: int, tile_probs: np.ndarray | Sequence[np.ndarray], tiles: Sequence[Tile],
               frame: Frame) -> LaneVerdict:
        """One lane of a frame: ``tile_probs`` and ``tiles`` are that lane's tiles along travel.

        Each tile is a view of the spray rule; the lane's decider is fed its most weed-like tile
        that fires (a vetoed tile never does), or its most weed-like tile when none fires."""
        decider = self.deciders[lane]
        rule = decider.rule
        views = rule.view(np.asarray(tile_probs))
        fires = rule.fires(views).tolist()
        weed_scores = views.weed_mass.tolist()
        best = max(range(len(weed_scores)), key=lambda i: (fires[i], weed_scores[i]))
        evidence = ViewEvidence(float(views.weed_log_odds[best]), bool(views.vetoed[best]), weed_scores[best],
                                float(views.crop_mass[best]))
        decision = decider.update(tile_probs[best], frame.t_capture_ns, frame.frame_id, evidence)
        weed_tiles = tuple(t for t, f in zip(tiles, fires) if f)
        waiting = self._waiting[lane]
        sightings: tuple[Sighting, ...] = ()
        if decision.spray:
            this_frame = weed_tiles or (tuple(tiles) if decider.min_hold_ns > 0 else ())
            sightings = (*waiting, Sighting(frame.t_capture_ns, frame.frame_id, this_frame, self._seq))
            waiting.clear()
        elif decision.weed_frame:
            waiting.append(Sighting(frame.t_capture_ns, frame.frame_id, weed_tiles, self._seq))
        return LaneVerdict(lane, decision, tuple(round(s, 4) for s in weed_scores), sightings, bool(weed_tiles),
                           best, tuple(round(float(c), 4) for c in views.crop_mass.tolist()))
