"""The one interface every output (valve/relay driver) implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edge.core.reconnect import LinkState

if TYPE_CHECKING:
    from edge.outputs.channels import Interlock


@runtime_checkable
class Output(Protocol):
    """Channels are numbered 0..n-1 (boom sections / valves / relays).

    - Every channel is OFF after construction (fail-safe start).
    - ``set(channel, on)`` switches one channel; switching to the state it already has
      is cheap and allowed. ``max_on_s`` (when given) bounds how long the channel may
      stay on without being refreshed — the serial controller enforces it on its side too.
      The output's own bound is ``max_on_s`` (None: unbounded).
    - ``all_off()`` switches every channel off; it must never raise on a healthy
      output and is called from ``finally`` blocks and signal paths.
    - ``close()`` switches everything off, then releases the hardware; idempotent.
    - ``state()`` returns the commanded on/off state per channel; ``off_reason(ch)``
      says why a channel last went off (None: never on, or switched off by a command).
    - ``set_enable(switch)`` gates every channel by an enable switch (no channel opens
      while it is off).
    - ``healthy`` turns False when the device stops answering (a serial controller);
      ``maintain()`` runs on every loop turn (a reconnecting output reconnects there);
      ``link()`` is the device's ``LinkState`` for outputs that can be lost and come
      back, None for the others.
    - Outputs are context managers.
    """

    name: str
    channels: int
    max_on_s: float | None

    @property
    def healthy(self) -> bool: ...

    def set(self, channel: int, on: bool, max_on_s: float | None = None) -> None: ...

    def all_off(self) -> None: ...

    def state(self) -> tuple[bool, ...]: ...

    def off_reason(self, channel: int) -> str | None: ...

    def set_enable(self, enable: "Interlock | None") -> None: ...

    def maintain(self) -> None: ...

    def link(self) -> LinkState | None: ...

    def close(self) -> None: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...
