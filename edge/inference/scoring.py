"""How the per-lane path scores a frame's tiles: ``[model] scoring``.

``TileScorer`` is what ``edge.loop.per_lane.LanePlanner`` asks for: the ``Scores`` of some
boxes of a frame (the tiles the vegetation gate kept). Two implementations:

- ``tiles`` (``TileClassifier``, the default): each box is cut out and classified at the
  model's input size, in batched invokes (``Classifier.classify_many``);
- ``frame`` (``edge.inference.frame_features.FrameFeatureScorer``): the backbone runs once over
  the frame downscaled by ``[model] frame_scale``, and each box's features are pooled from its
  cells (needs the bundle's ``frame_features`` export, ``weed-train frame-features``).

Speed and accuracy of both, side by side: docs/benchmark.md, "Per-lane speed".
"""

from __future__ import annotations

from typing import Literal, Protocol, Sequence

import numpy as np

from edge.inference.classifier import Classifier, Scores

Box = tuple[int, int, int, int]  # (x0, x1, y0, y1) in frame pixels, as ``Tile.pixels`` gives them
Scoring = Literal["tiles", "frame"]
SCORINGS: tuple[str, ...] = ("tiles", "frame")


class TileScorer(Protocol):
    labels: tuple[str, ...]

    @property
    def invokes(self) -> int:
        """Interpreter invokes so far (a batch, or a whole frame, counts once)."""

    def score(self, image: np.ndarray, boxes: Sequence[Box], colour_order: str = "BGR") -> list[Scores]:
        """One ``Scores`` per box of ``image``, in order; no invoke for no box."""

    def invoke_only(self, tiles: int = 1) -> int:
        """The invoke(s) ``score`` runs for ``tiles`` boxes, on the current input buffers: ns (a benchmark's floor)."""

    def warm_up(self, frame_w: int, frame_h: int, tiles: int) -> None:
        """Make now whatever ``score`` would make on its first frame of this size with up to ``tiles`` boxes
        (interpreters resized or created, checked), so that no frame of the run pays for it."""

    @property
    def mode(self) -> str:
        """How the invokes run, in a few words (edge-bench's ``spray.classify``)."""

    def describe(self) -> str:
        """One line for the start-up log and edge-bench."""

    def close(self) -> None:
        """Release what the scorer owns (idempotent)."""


class TileClassifier:
    """``scoring = "tiles"``: each box cut out of the frame and classified (batched invokes)."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier
        self.labels = classifier.labels

    @property
    def invokes(self) -> int:
        return self.classifier.invokes

    def score(self, image: np.ndarray, boxes: Sequence[Box], colour_order: str = "BGR") -> list[Scores]:
        if not boxes:
            return []
        return self.classifier.classify_many([image[y0:y1, x0:x1] for x0, x1, y0, y1 in boxes], colour_order)

    def invoke_only(self, tiles: int = 1) -> int:
        return self.classifier.invoke_only(tiles)

    def warm_up(self, frame_w: int, frame_h: int, tiles: int) -> None:
        self.classifier.warm_up(tiles)

    @property
    def mode(self) -> str:
        return self.classifier.batch_mode  # batched, one by one, not tried yet

    def describe(self) -> str:
        inp = self.classifier.bundle.manifest.input
        return f"each tile classified at {inp.width}x{inp.height}, {self.classifier.batch_mode}"

    def close(self) -> None:
        """Nothing of its own: the classifier is its caller's, closed by whoever made it."""


def make_scorer(classifier: Classifier, scoring: str, frame_scale: float, num_threads: int) -> TileScorer:
    """The scorer ``[model] scoring`` names, on the classifier's bundle."""
    if scoring == "tiles":
        return TileClassifier(classifier)
    if scoring == "frame":
        from edge.inference.frame_features import FrameFeatureScorer

        return FrameFeatureScorer(classifier.bundle, num_threads, scale=frame_scale)
    raise ValueError(f"unknown scoring {scoring!r} (one of: {', '.join(SCORINGS)})")
