"""The one interface every frame source implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge.core.errors import SourceError
from edge.core.frame import Frame
from edge.core.reconnect import LinkState


@runtime_checkable
class FrameSource(Protocol):
    """Configure in ``__init__``, then ``start()``; ``read()`` until it returns None.

    - ``start()`` opens the device/file and raises ``SourceError`` with a fix if it can't;
      it waits a bounded time, and returns at once, reading None, when the run's stop
      event is set meanwhile.
    - ``read(timeout)`` returns the newest ``Frame``; ``None`` means the source is
      finished (end of video / folder). When no frame arrives within ``timeout``
      seconds it raises ``FrameTimeout`` (the pipeline then switches outputs off and
      keeps waiting or reconnects).
    - ``dropped`` counts frames that were captured but never returned because a newer
      one replaced them.
    - ``close()`` is idempotent; sources are context managers.
    - ``live`` is True for cameras/streams (frames are dropped when we are slow),
      False for files (every frame is returned).
    - ``link()`` is the device's ``LinkState`` when the source reconnects by itself
      (``edge.sources.reconnecting.ReconnectingSource``), None for the others.
    """

    name: str
    live: bool

    def start(self) -> None: ...

    def read(self, timeout: float | None = None) -> Frame | None: ...

    @property
    def dropped(self) -> int: ...

    def link(self) -> LinkState | None: ...

    def close(self) -> None: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...


@runtime_checkable
class ReopenableSource(FrameSource, Protocol):
    """A live source that can release its device and open it again (``edge.sources.live_capture``)."""

    def reopen(self) -> None: ...


class SourceLifecycle:
    """What every built-in source shares: an idempotent ``close()`` that calls ``_release()``
    once, the context manager (``with`` starts and closes), and no link of its own."""

    _closed = False

    def start(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def link(self) -> LinkState | None:
        """None: this source does not reconnect by itself (``ReconnectingSource`` wraps it to)."""
        return None

    def close(self) -> None:
        """Release what the source holds; later reads return None (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameTimeout(Exception):
    """No frame within the requested timeout (the source may still come back)."""


class SourceLost(SourceError):
    """A reconnecting source just lost its device: outputs off now; it is reopened with backoff."""
