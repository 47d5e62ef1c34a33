"""Ground-registered evidence: the ground under the boom as a grid of cells, each decided once.

In ``[spray]`` mode the ground is cut into **cells**: one lane across travel by
``cell_length_cm`` along it. Cell ``j`` of a lane covers the ground from ``j * length`` to
``(j + 1) * length`` centimetres of *distance travelled* (``edge.spray.odometer``: the run's
speed integrated from the first frame), so a frame captured when the vehicle had travelled
``d`` sees the ground ``d + rear_cm .. d + front_cm`` in a tile (``edge.core.tile.Tile``).

Placing a frame (``CellGrid.place``): each tile of the frame is one **view**. A tile the
vegetation gate classified (``TileView.evidence``: the spray rule's ``ViewEvidence``) is
evidence for the cells its **vegetation** covers (``TileView.plant_cm``, the extent of the
mask along travel; the whole tile when the gate is off); the cell also remembers the extent
of that vegetation inside it, so a spray covers the plant, not the cell. A tile the gate
called bare, and the part of a classified tile without vegetation, are evidence of **no
plant** there: they add no weed log-odds (the model never looked, or looked at something
else) and are counted as the cell's ``bare`` views, from the frame the cell entered the image
(bare views of a place no plant view saw yet are kept until it leaves the image). A cell
exists from the first view that saw a plant in it; a cell only bare views saw is bare ground
and is never tracked, never sprayed.

Deciding (``CellGrid.due``): every cell is decided **once**, on the first frame after which
waiting for the next frame could not help: the cell will have left the image by the next
frame (its front edge behind the image's rear edge), or the next frame would come after the
cell's **latest decision time** — the time its rear edge, less ``margin_before_cm``, reaches
the spray line, less the valve's opening lag and the pipeline's latency (capture -> spray
planned, a high percentile measured by the run). The next frame is expected one frame period
later (the median of the last capture intervals). A cell **sprays** iff the spray rule's
``combine`` says so over the views that saw a plant in it (``edge.decide.rule``: mean weed
log-odds >= logit(threshold), no view vetoed by the crop veto); ``bare`` views do not enter
the mean. They enter the **plant share** instead: the share of the views that covered the cell
in which the gate saw vegetation there, ``len(views) / (len(views) + bare)``. A cell whose plant
share is below ``min_plant_share`` is not sprayed whatever the rule says (``sparse``): a real
plant stays in the picture frame after frame, a speck the gate lets through now and then (a
dark greenish stone, a glint) is a plant in one view of ten (docs/spray-timing.md, "Ground
cells"). And a cell whose largest view of vegetation is smaller than ``min_plant_cm2`` is not
sprayed either (``small``): each classified view brings the size of the plant the gate saw reaching
into its tile — the largest connected patch of its mask, counted whole, inside the tile or not
(``TileView.plant_cm2``) — and the cell keeps the largest (``Cell.peak_cm2``); a seedling covers a
square centimetre or more, also in the cells at its edge, a speck of greenish gravel that passes the
gate two views in three is a fifth of one. Pure arithmetic on the values it is given: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from edge.core.tile import Tile
from edge.decide.rule import SprayRule, ViewEvidence
from edge.spray.geometry import Geometry


@dataclass(frozen=True)
class TileView:
    """One tile of one frame as the cells see it: its tile, the rule's evidence (None: the gate called it bare,
    it was not classified) and its vegetation's extent along travel in the tile's offsets (``rear_cm``,
    ``front_cm``; None with evidence: the whole tile, the gate is off) and the size of its plant on the ground (``plant_cm2``:
    the largest connected patch of vegetation reaching into the tile, whole; None: not measured — the gate is
    off, or ``min_plant_cm2`` is 0)."""

    tile: Tile
    evidence: ViewEvidence | None
    plant_cm: tuple[float, float] | None = None
    plant_cm2: float | None = None


@dataclass(frozen=True)
class Cell:
    """One cell's evidence so far (see the module docstring)."""

    lane: int
    index: int  # ground index * length .. (index + 1) * length cm of distance travelled
    views: tuple[ViewEvidence, ...] = ()  # the classified views that saw vegetation in this cell, oldest first
    bare: int = 0  # views that saw no plant in it (a bare tile, or a classified tile's part without vegetation)
    plant: tuple[float, float] | None = None  # (rear, front) ground cm of the vegetation seen in the cell
    peak_cm2: float = 0.0  # the largest plant one of its views saw reaching into its tile, cm² (inf: not measured)
    first_frame: int = 0  # the frame of its first view


@dataclass(frozen=True)
class CellDecision:
    """A cell decided: ``spray`` by the rule, ``vetoed`` (a view's crop probability reached the veto), and
    ``why`` it was decided then: ``leaving`` (the image), ``deadline`` (its latest decision time), ``stopped``
    (the speed went below the minimum or unknown) or ``end`` (the source ended); ``sparse``: not sprayed because
    its plant share was below the grid's ``min_plant_share``; ``small``: not sprayed because no view saw a plant as
    large as the grid's ``min_plant_cm2``."""

    cell: Cell
    spray: bool
    vetoed: bool
    why: str
    sparse: bool = False  # the rule would spray, but too few of the views that covered it saw a plant
    small: bool = False  # the rule would spray, but the largest plant a view saw is below min_plant_cm2


def plant_share(cell: Cell) -> float:
    """The share of the views that covered ``cell`` in which the gate saw vegetation there (0 with no view)."""
    n = len(cell.views) + cell.bare
    return len(cell.views) / n if n else 0.0


@dataclass(frozen=True)
class CellCounts:
    """What happened to one lane's cells on one frame (the frame log's ``cells``)."""

    decided: int = 0
    sprayed: int = 0
    vetoed: int = 0
    pending: int = 0  # cells still waiting for views after this frame
    sparse: int = 0  # decided cells not sprayed because too few of their views saw a plant
    small: int = 0  # decided cells not sprayed because the vegetation their views saw was too small

    def log_fields(self) -> dict:
        return {"decided": self.decided, "sprayed": self.sprayed, "vetoed": self.vetoed, "sparse": self.sparse,
                "small": self.small, "pending": self.pending}


class CellGrid:
    """The cells of every lane with evidence not yet decided; see the module docstring."""

    def __init__(self, rule: SprayRule, geometry: Geometry, cell_length_cm: float, min_plant_share: float = 0.0,
                 min_plant_cm2: float = 0.0):
        if not cell_length_cm > 0:
            raise ValueError(f"cell_length_cm must be > 0, got {cell_length_cm!r}")
        if not 0.0 <= min_plant_share <= 1.0:
            raise ValueError(f"min_plant_share must be in 0..1, got {min_plant_share!r}")
        if not 0.0 <= min_plant_cm2 < math.inf:
            raise ValueError(f"min_plant_cm2 must be a finite area >= 0, got {min_plant_cm2!r}")
        self.rule = rule
        self.geometry = geometry
        self.length = float(cell_length_cm)
        self.min_plant_share = float(min_plant_share)
        self.min_plant_cm2 = float(min_plant_cm2)
        self._cells: dict[tuple[int, int], Cell] = {}
        self._bare_before: dict[tuple[int, int], int] = {}  # bare views of places no plant view saw yet

    def __len__(self) -> int:
        return len(self._cells)

    def pending(self, lane: int) -> int:
        return sum(1 for (ln, _) in self._cells if ln == lane)

    def cells(self) -> tuple[Cell, ...]:
        """The undecided cells, lane by lane, along travel."""
        return tuple(self._cells[k] for k in sorted(self._cells))

    def bounds(self, cell: Cell) -> tuple[float, float]:
        """(rear, front) of a cell in ground cm of distance travelled."""
        return cell.index * self.length, (cell.index + 1) * self.length

    def place(self, distance_cm: float, views: Iterable[TileView], frame_id: int) -> None:
        """One frame's views, captured when the vehicle had travelled ``distance_cm``."""
        length = self.length
        for v in views:
            t_rear, t_front = distance_cm + v.tile.rear_cm, distance_cm + v.tile.front_cm
            plant = None
            area = math.inf if v.plant_cm2 is None else v.plant_cm2  # None: the gate is off, not measured
            if v.evidence is not None:
                p = v.plant_cm if v.plant_cm is not None else (v.tile.rear_cm, v.tile.front_cm)
                plant = (distance_cm + max(p[0], v.tile.rear_cm), distance_cm + min(p[1], v.tile.front_cm))
            for j in range(math.floor(t_rear / length), math.ceil(t_front / length)):
                c0, c1 = j * length, (j + 1) * length
                key = (v.tile.lane, j)
                cell = self._cells.get(key)
                if plant is not None and plant[0] < c1 and plant[1] > c0:
                    lo, hi = max(c0, plant[0]), min(c1, plant[1])
                    if cell is None:
                        cell = Cell(v.tile.lane, j, bare=self._bare_before.pop(key, 0), first_frame=frame_id)
                    seen = (lo, hi) if cell.plant is None else (min(cell.plant[0], lo), max(cell.plant[1], hi))
                    assert v.evidence is not None
                    self._cells[key] = replace(cell, views=(*cell.views, v.evidence), plant=seen,
                                               peak_cm2=max(cell.peak_cm2, area))
                elif cell is not None:
                    self._cells[key] = replace(cell, bare=cell.bare + 1)
                else:
                    self._bare_before[key] = self._bare_before.get(key, 0) + 1

    def decide(self, cell: Cell, why: str) -> CellDecision:
        """The rule on a cell's views (``combine``): the one place a cell's decision is made."""
        vetoed = any(bool(v.vetoed) for v in cell.views)
        rule_says = self.rule.combine(cell.views)
        sparse = rule_says and plant_share(cell) < self.min_plant_share
        small = rule_says and not sparse and cell.peak_cm2 < self.min_plant_cm2
        return CellDecision(cell, rule_says and not sparse and not small, vetoed, why, sparse, small)

    def due(self, distance_cm: float, t_capture_ns: int, cm_s: float, period_ns: int,
            latency_ns: int) -> list[CellDecision]:
        """Decide (and forget) the cells that cannot wait for the next frame: it is expected ``period_ns`` after
        this one's capture (``t_capture_ns``, at ``distance_cm``), the vehicle moving at ``cm_s`` > 0; a spray is
        planned ``latency_ns`` after a frame's capture (see the module docstring). Oldest cells first."""
        if not cm_s > 0:
            raise ValueError(f"speed must be > 0 cm/s to place cells, got {cm_s!r}")
        g = self.geometry
        next_rear = distance_cm + cm_s * period_ns / 1e9 - g.footprint_along_cm / 2  # the next frame's rear edge
        t_next = t_capture_ns + period_ns
        room = g.nozzle_distance_cm - g.margin_before_cm  # from a ground point under the centre to the opening
        out = []
        for key in sorted(self._cells, key=lambda k: (k[1], k[0])):
            cell = self._cells[key]
            c0, c1 = self.bounds(cell)
            t_open = t_capture_ns + (c0 - distance_cm + room) / cm_s * 1e9 - g.open_lag_ns
            if t_open - latency_ns < t_next:
                why = "deadline"
            elif c1 <= next_rear:
                why = "leaving"
            else:
                continue
            del self._cells[key]
            out.append(self.decide(cell, why))
        for key in [k for k in self._bare_before if (k[1] + 1) * self.length <= next_rear]:
            del self._bare_before[key]  # left the image without a plant view: bare ground, forgotten
        return out

    def decide_all(self, why: str) -> list[CellDecision]:
        """Every undecided cell, decided now (the source ended, or the speed is gone) and forgotten."""
        out = [self.decide(self._cells[k], why) for k in sorted(self._cells, key=lambda k: (k[1], k[0]))]
        self._cells.clear()
        self._bare_before.clear()
        return out

    def clear(self) -> int:
        """Forget every cell undecided (a stall, a lost camera: what was seen says nothing now); how many."""
        n = len(self._cells)
        self._cells.clear()
        self._bare_before.clear()
        return n


def lane_counts(decisions: Sequence[CellDecision], lanes: int, grid: CellGrid | None = None) -> list[CellCounts]:
    """Per lane: cells decided, sprayed and vetoed among ``decisions``, and (with ``grid``) still pending."""
    out = []
    for lane in range(lanes):
        mine = [d for d in decisions if d.cell.lane == lane]
        out.append(CellCounts(len(mine), sum(d.spray for d in mine), sum(d.vetoed for d in mine),
                              0 if grid is None else grid.pending(lane), sum(d.sparse for d in mine),
                              sum(d.small for d in mine)))
    return out
