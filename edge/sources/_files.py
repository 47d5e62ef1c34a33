"""Shared part of the file sources (video file, image folder): not live, every frame
returned in order, optionally paced at a frame rate (``realtime``) and looped.

``FileSource`` is the lifecycle (``start()`` once, ``read()`` only after it, ``close()``
idempotent, context manager), the frame ids and the pacing. Subclasses implement
``_open()`` (run once by ``start()``), ``_next_frame(timeout)`` (a started, open source's
next frame or None at the end) and, when they hold a resource, ``_release()`` (run once
by ``close()``). They build frames with ``_pace()`` then ``_frame()``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from edge.core.clock import SYSTEM_CLOCK, Clock
from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.sources.base import SourceLifecycle
from edge.sources.pacing import Pacer


class FileSource(SourceLifecycle):
    """Base class of the sources that read files; see the module docstring.

    Arguments: ``path`` of the file or folder; ``loop``: start again after the last
    frame; ``fps``: the rate for ``realtime`` pacing; ``realtime``: release frames at
    that rate instead of as fast as possible; ``clock``: for timestamps and pacing.
    """

    live = False
    name: str

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        loop: bool = False,
        fps: Optional[float] = None,
        realtime: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.path = os.fspath(path)
        self.loop = loop
        self.requested_fps = fps
        self.realtime = realtime
        self._clock = clock
        self._pacer: Optional[Pacer] = None  # set by a subclass for realtime playback
        self._next_id = 0
        self._dropped = 0  # realtime video only: frames superseded before they were read
        self._started = False
        self._closed = False

    # -- to implement ------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _next_frame(self, timeout: Optional[float]) -> Optional[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the file(s) (idempotent); ``SourceError`` with a fix when it can't."""
        if self._closed:
            raise SourceError(f"{self.name} was closed", fix="create a new source to read it again")
        if self._started:
            return
        self._open()
        self._started = True

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame in order; None after the last one (never with ``loop``) or after close."""
        if self._closed:
            return None
        if not self._started:
            raise SourceError(
                f"{self.name} was read before start()",
                fix="call start() (or use the source in a `with` block) before read()",
            )
        return self._next_frame(timeout)

    @property
    def dropped(self) -> int:
        return self._dropped

    # -- for subclasses --------------------------------------------------------------
    def _missing_path_error(self, what: str) -> SourceError:
        """``<what> <path> does not exist``, e.g. ``what="video file"``."""
        return SourceError(
            f"{what} {self.path} does not exist",
            fix="check the path (relative paths start in the current directory)",
        )

    def _pace(self, timeout: Optional[float]) -> None:
        """Wait until the next frame is due (realtime only).

        ``FrameTimeout`` when that is beyond ``timeout``: call it before consuming the
        frame, so that the next read returns the same one.
        """
        if self._pacer is not None:
            self._pacer.wait(self._next_id, timeout)

    def _frame(self, image: Any, t_capture_ns: Optional[int] = None, **fields: Any) -> Frame:
        """The next ``Frame`` (id, capture time — now unless given —, this source), with ``fields``."""
        frame = Frame(
            image=image,
            frame_id=self._next_id,
            t_capture_ns=self._clock.now_ns() if t_capture_ns is None else t_capture_ns,
            source=self.name,
            **fields,
        )
        self._next_id += 1
        return frame
