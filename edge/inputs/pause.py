"""The spray pause: a software switch in series with the enable switch (the live view's "pause").

``SprayPause`` is an ``Interlock`` (``edge.outputs.channels``) built around the physical
enable switch, if there is one: it is on only while it is not paused AND the switch is on.
The outputs and the spray scheduler are gated by it exactly as by the switch alone
(``edge.inputs.enable``): pausing switches every output off and cancels every planned
spray at once; resuming only lifts the pause — a switch that is off keeps everything off.
Pausing is always allowed. A pause is saved (``save(paused)``, the state directory's
``paused.json``: ``edge.service.state``) and read at start, so it lasts across restarts
until it is resumed; a pause that cannot be saved still pauses (and says so).
"""

from __future__ import annotations

import logging
from typing import Callable

from edge.inputs.listeners import OffListeners
from edge.outputs.channels import Interlock

log = logging.getLogger(__name__)


class SprayPause:
    def __init__(self, switch: Interlock | None = None, *, paused: bool = False,
                 save: Callable[[bool], None] | None = None):
        self.switch = switch
        self._save = save
        self._listeners = OffListeners()
        self._paused = paused
        if switch is not None:
            switch.add_off_listener(self._switch_off)
        if paused:
            log.warning("spraying is PAUSED (saved by the live view): no output opens until it is resumed there")

    # -- Interlock ---------------------------------------------------------------------
    def is_on(self) -> bool:
        return not self._paused and (self.switch is None or self.switch.is_on())

    def describe(self) -> str:
        """What a refusal names: "the {describe()} is off" (paused: this; else the enable switch's own name)."""
        if self._paused:
            return "spraying enable of the live view (paused there)"
        return self.switch.describe() if self.switch is not None else "spraying enable of the live view"

    def add_off_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.add(callback)

    def remove_off_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    # -- the pause ---------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def switch_on(self) -> bool | None:
        """The physical enable switch (None: there is none)."""
        return None if self.switch is None else self.switch.is_on()

    def pause(self, by: str = "live view") -> str | None:
        """Pause now: every output off, every plan cancelled. Returns a problem saving it, or None."""
        self._paused = True
        log.warning("spraying paused by the %s: all sprays cancelled, all outputs off", by)
        self._switch_off()
        return self._store(True)

    def resume(self, by: str = "live view") -> str | None:
        """Lift the pause (the enable switch, if off, still keeps every output off). Returns a problem, or None.
        Not paused: nothing to do (and nothing logged)."""
        if not self._paused:
            return None
        problem = self._store(False)
        self._paused = False
        off = self.switch is not None and not self.switch.is_on()
        log.warning("spraying resumed by the %s%s", by, f"; the {self.switch.describe()} is off: nothing opens until "
                    "it is switched on" if off and self.switch is not None else "")
        return problem

    def _store(self, paused: bool) -> str | None:
        if self._save is None:
            return None
        try:
            self._save(paused)
        except OSError as e:
            msg = f"the {'pause' if paused else 'resume'} could not be saved ({e}): a restart " + \
                  ("forgets the pause" if paused else "is paused again")
            log.error("%s", msg)
            return msg
        return None

    def _switch_off(self) -> None:
        self._listeners.fire("for the spray pause")

    def close(self) -> None:
        if self.switch is not None:
            self.switch.remove_off_listener(self._switch_off)
