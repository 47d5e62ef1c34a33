"""What the pin backends (Raspberry Pi GPIO, Jetson GPIO) share: one output pin per channel.

``PinOutput`` keeps the pins and their active level and switches a pin through the
backend's ``_drive(channel, on)`` hook, only when the channel's state changes (a refresh
of a channel that is on touches no hardware).
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

from edge.outputs.channels import ChannelOutput


class PinOutput(ChannelOutput):
    """Channel ``i`` drives ``pins[i]``; ``active_high=False`` is for relay boards that
    switch on a low level.

    A backend checks its pins, calls this ``__init__`` (``channel_options``:
    ``max_on_s``, ``clock`` and ``logger`` of :class:`~edge.outputs.channels.ChannelOutput`),
    sets the pins up inactive and implements ``_drive``.
    """

    def __init__(self, pins: Sequence[int], active_high: bool = True, **channel_options: Any):
        pins = list(pins)
        super().__init__(len(pins), **channel_options)
        self.pins = tuple(pins)
        self.active_high = bool(active_high)

    @abc.abstractmethod
    def _drive(self, channel: int, on: bool) -> None:
        """Set the pin of ``channel`` to its on or off level; ``OutputError`` naming the pin if that fails."""

    # -- hooks ------------------------------------------------------------------------
    def _hw_on(self, channel: int, was_on: bool, bound_s: float | None, now_ns: int) -> int:
        if not was_on:
            self._drive(channel, True)
        return now_ns

    def _hw_off(self, channel: int) -> None:
        self._drive(channel, False)
