"""The one interface every output (valve/relay driver) implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Output(Protocol):
    """Channels are numbered 0..n-1 (boom sections / valves / relays).

    - Every channel is OFF after construction (fail-safe start).
    - ``set(channel, on)`` switches one channel; switching to the state it already has
      is cheap and allowed. ``max_on_s`` (when given) bounds how long the channel may
      stay on without being refreshed — the serial controller enforces it on its side too.
    - ``all_off()`` switches every channel off; it must never raise on a healthy
      output and is called from ``finally`` blocks and signal paths.
    - ``close()`` switches everything off, then releases the hardware; idempotent.
    - ``state()`` returns the commanded on/off state per channel.
    - Outputs are context managers.
    """

    name: str
    channels: int

    def set(self, channel: int, on: bool, max_on_s: float | None = None) -> None: ...

    def all_off(self) -> None: ...

    def state(self) -> tuple[bool, ...]: ...

    def close(self) -> None: ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...
