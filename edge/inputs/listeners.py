"""The callbacks an interlock runs when it turns off (``EnableSwitch``, ``SprayPause``): one list, one lock."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class OffListeners:
    """Callbacks to run when an interlock turns off. ``fire`` runs every one, even if one fails (the outputs must
    go off), from whatever thread calls it; adding and removing are thread-safe."""

    def __init__(self, *callbacks: Callable[[], None]):
        self._lock = threading.Lock()
        self._callbacks = list(callbacks)

    def add(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> None:
        """Forget ``callback`` (nothing when it was never added)."""
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

    def fire(self, why: str) -> None:
        """Run every callback; a failing one is logged (``switching off <why> failed``) and the rest still run."""
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("switching off %s failed", why)
