"""Serial output: drives a sprayer controller over the line protocol (docs/serial-protocol.md).

The edge side of protocol version 1, over pyserial (imported lazily), so a real port
(``/dev/ttyACM0``) and pyserial URLs (``loop://``, ``socket://host:port``) both work.

- Construction: open the port, ``HELLO`` (the controller answers with its version,
  channel count, watchdog timeout and maximum on-duration), check that our heartbeat
  period fits its watchdog, then ``ALLOFF``; any failure raises ``OutputError``.
- ``set(ch, True)`` sends ``ON ch duration_ms`` (the on-time bound); while the channel
  stays on, further ``set(ch, True)`` calls re-send it once half the duration has passed,
  so the controller's own timer never runs out while the weed persists, and runs out
  within the bound when the edge stops refreshing.
- A background thread sends ``HB`` every ``heartbeat_s``; it stops on ``close()``
  (a ``threading.Event``), after which the controller's watchdog is the backstop.
- Every command waits for its ``ACK`` (same sequence number) for ``ack_timeout_s``
  and is re-sent up to ``retries`` times (all commands are idempotent).
- A controller that restarted answers ``NAK SYNC``: the edge handshakes again and, as the
  restart switched every valve off, marks every channel off (``off_reason``:
  ``controller restarted``, counted in ``restarts``) before re-sending the command.

When the controller stops answering (the choice documented in docs/serial-protocol.md):
the output is marked unhealthy and stops heart-beating, so the controller switches
every valve off within its watchdog timeout even if our OFF never arrives. Switching a
channel ON then raises ``OutputError`` (the operator must know the sprayer is dead);
switching OFF, ``all_off()`` and ``close()`` never raise for a silent controller: they
are the fail-safe paths (called from ``finally`` blocks) and log the error instead. Once it is
marked unhealthy the OFFs and the final ``ALLOFF`` are written once with no acknowledgement
awaited, and any other command (ON, HB) is refused at once, so a silent controller costs the
loop one ``retries`` x ``ack_timeout_s`` wait, not one per channel.

``acks=False`` is a send-only mode (a TX-only link, or ``loop://`` in tests, where our
own lines come back instead of replies): nothing is awaited and ``channels`` must be
given. The controller's watchdog and bounded durations still protect the valves.

A pyserial object passed as ``serial=`` (tests: a ``loop://`` instance) is used as it
is and left open by ``close()``: whoever opened it closes it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from edge.core.clock import Clock
from edge.core.errors import OutputError
from edge.outputs import serial_protocol as proto
from edge.outputs.channels import DEFAULT_MAX_ON_S, MIN_MAX_ON_S, ChannelOutput

DEFAULT_BAUD = 115200
DEFAULT_HEARTBEAT_S = 0.2
MIN_HEARTBEAT_S = 0.01  # [outputs] heartbeat_s's lower bound (edge.outputs.config)
DEFAULT_ACK_TIMEOUT_S = 0.1
DEFAULT_RETRIES = 2
_POLL_S = 0.01  # how long one read() may block while waiting for an acknowledgement
FAIL_SAFE = (proto.OFF, proto.ALLOFF)  # the commands still sent to a controller that stopped answering
HB_FAILURE_LOG_S = 30.0  # a heartbeat refused again and again: one log line this often, with the count

PORT_FIX = (
    "check outputs.port (ls /dev/serial/by-id/), that the controller is plugged in and powered, "
    "that the user is in the dialout group, and that no other program holds the port"
)

_NAK_MEANING = {
    proto.E_CHK: "the line arrived damaged (checksum)",
    proto.E_FMT: "the line arrived damaged (framing)",
    proto.E_LEN: "the line was too long",
    proto.E_CMD: "the controller does not know the command",
    proto.E_ARG: "the controller rejected the arguments",
    proto.E_CH: "the controller has no such channel",
    proto.E_DUR: "the on-duration is outside what the controller accepts",
    proto.E_VER: "the controller speaks no protocol version in common with us",
    proto.E_SYNC: "the controller wants a new handshake",
}


class _Nak(Exception):
    def __init__(self, code: str, seq: int):
        super().__init__(code, seq)
        self.code = code


class _LinkDown(Exception):
    """No (usable) answer after every retry, or the port itself failed."""


def _open_port(port: str, baud: int) -> Any:
    try:
        import serial
    except ImportError as exc:
        raise OutputError(
            f"serial output needs pyserial, which is not installed ({exc})",
            "reinstall the package: pip install weed-detector (pyserial is a core dependency)",
        ) from exc
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=_POLL_S, write_timeout=1.0, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise OutputError(f"cannot open serial port {port!r}: {exc}", PORT_FIX) from exc
    except ValueError as exc:
        raise OutputError(
            f"cannot open serial port {port!r} at {baud} baud: {exc}",
            "check outputs.port (a device path or a pyserial URL such as loop://) and outputs.baud",
        ) from exc


def _check_settings(channels: int | None, heartbeat_s: float, ack_timeout_s: float, retries: int, acks: bool,
                    max_on_s: float) -> None:
    """``OutputError`` (naming the ``[outputs]`` key to fix) for settings no controller could work with."""
    for field, value in (("heartbeat_s", heartbeat_s), ("ack_timeout_s", ack_timeout_s), ("max_on_s", max_on_s)):
        if value is None or not value > 0:
            raise OutputError(f"serial output: {field} must be > 0 seconds, got {value!r}", f"fix outputs.{field}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise OutputError(f"serial output: retries must be an int >= 0, got {retries!r}", "fix outputs.retries")
    if not acks and channels is None:
        raise OutputError(
            "serial output without acknowledgements cannot learn the channel count from the controller",
            "set outputs.channels",
        )


class SerialOutput(ChannelOutput):
    """Channels are the controller's channels 0..n-1; see the module docstring."""

    name = "serial"

    def __init__(
        self,
        port: str,
        channels: int | None = None,
        baud: int = DEFAULT_BAUD,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        acks: bool = True,
        max_on_s: float = DEFAULT_MAX_ON_S,
        serial: Any = None,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ):
        self._log = logger if logger is not None else logging.getLogger(__name__)
        _check_settings(channels, heartbeat_s, ack_timeout_s, retries, acks, max_on_s)
        self.port = port
        self.baud = baud
        self.heartbeat_s = float(heartbeat_s)
        self.ack_timeout_s = float(ack_timeout_s)
        self.retries = retries
        self.acks = bool(acks)
        self.controller: proto.HelloInfo | None = None
        self.healthy = True
        self.resent = 0  # commands sent again after a timeout or a damaged line
        self.heartbeats = 0  # acknowledged (or, without acks, sent) heartbeats
        self.restarts = 0  # the controller restarted (NAK SYNC) and was handshaken again
        self._io = threading.RLock()
        self._seq = 0
        self._splitter = proto.LineSplitter(proto.MAX_LINE)
        self._rx_lines: collections.deque = collections.deque()
        self._last_sent: list[int | None] = []
        self._hb_stop = threading.Event()
        self._hb_failures = 0  # heartbeats refused since the last log line about them
        self._hb_logged_ns: int | None = None  # when that line was written (None: none yet)
        self._hb_thread: threading.Thread | None = None
        self._owns_port = serial is None
        self._ser = self._take_port(serial)
        try:
            info = self._greet()
            n, max_on_s = self._fit_to(info, channels, max_on_s)
            super().__init__(n, max_on_s=max_on_s, clock=clock, logger=self._log)
            self._start(n)
        except BaseException:
            self._hb_stop.set()
            self._close_port()
            raise
        self._log_started(info, n)

    # -- construction steps ----------------------------------------------------------
    def _take_port(self, serial: Any) -> Any:
        """The given pyserial object, else the port opened; reads never block longer than a poll."""
        ser = _open_port(self.port, self.baud) if serial is None else serial
        if self.acks and (ser.timeout is None or ser.timeout > _POLL_S):
            ser.timeout = _POLL_S
        return ser

    def _greet(self) -> proto.HelloInfo | None:
        """Drop stale input, then ``HELLO``; the controller's answer (None without acks)."""
        if self.acks:  # replies meant for an earlier process must not answer our HELLO
            try:
                self._ser.reset_input_buffer()
            except Exception as exc:
                raise OutputError(f"serial port {self.port!r} failed: {exc}", PORT_FIX) from exc
        return self._handshake(first=True)

    def _fit_to(self, info: proto.HelloInfo | None, channels: int | None, max_on_s: float) -> tuple[int, float]:
        """The channel count and on-time bound to use with the controller that answered ``info``."""
        if info is not None:
            if channels is not None and channels > info.channels:
                raise OutputError(
                    f"outputs.channels is {channels} but the controller on {self.port} has {info.channels}",
                    f"set outputs.channels to at most {info.channels} (or leave it unset)",
                )
            n = channels if channels is not None else info.channels
            limit_ms = info.max_on_ms
        else:
            assert channels is not None  # _check_settings: required without acks
            n = channels
            limit_ms = proto.MAX_DURATION_MS
        if max_on_s * 1000 > limit_ms:
            self._log.warning(
                "outputs.max_on_s %.3f s exceeds the controller's limit; using %.3f s", max_on_s, limit_ms / 1000
            )
            max_on_s = limit_ms / 1000
        return n, max_on_s

    def _start(self, channels: int) -> None:
        """Everything off (must be acknowledged: fail-safe start), then the heartbeats."""
        self._last_sent = [None] * channels
        self._command(proto.ALLOFF)
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="serial-heartbeat", daemon=True)
        self._hb_thread.start()

    def _log_started(self, info: proto.HelloInfo | None, channels: int) -> None:
        if info is None:
            self._log.info("serial output on %s: send-only (no acknowledgements), %d channel(s)", self.port, channels)
            return
        self._log.info(
            "serial controller on %s: protocol v%d, %d channels, watchdog %d ms, max on %d ms; using %d channel(s)",
            self.port,
            info.version,
            info.channels,
            info.watchdog_ms,
            info.max_on_ms,
            channels,
        )

    # -- public extras ---------------------------------------------------------------
    def heartbeat(self) -> None:
        """Send one HB and wait for its ACK (the background thread does this every heartbeat_s)."""
        self._command(proto.HB)
        self.heartbeats += 1

    # -- hooks ------------------------------------------------------------------------
    def _hw_on(self, channel: int, was_on: bool, bound_s: float | None, now_ns: int) -> int:
        if not self.healthy:
            raise OutputError(
                f"sprayer controller on {self.port} is not answering; channel {channel} not switched on",
                "check the cable and the controller's power, then restart edge-run",
            )
        bound = bound_s if bound_s is not None else self.max_on_s
        duration_ms = min(max(1, int(round(bound * 1000))), self._max_duration_ms())
        last = self._last_sent[channel]
        if was_on and last is not None and now_ns - last < duration_ms * 500_000:  # less than half elapsed
            return last
        self._command(proto.ON, (channel, duration_ms))
        self._last_sent[channel] = now_ns
        return now_ns

    def _hw_off(self, channel: int) -> None:
        self._last_sent[channel] = None
        try:
            self._command(proto.OFF, (channel,))
        except OutputError as exc:
            self._log.error("serial output: OFF for channel %d not confirmed: %s", channel, exc)

    def _hw_all_off(self) -> None:
        self._last_sent = [None] * self.channels
        try:
            self._command(proto.ALLOFF)
        except OutputError as exc:
            self._log.error("serial output: ALLOFF not confirmed: %s", exc)

    def _stop_heartbeats(self) -> None:
        self._hb_stop.set()
        thread = self._hb_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.ack_timeout_s * (self.retries + 1) + 1.0)

    def close(self) -> None:
        # Heartbeats stop first, so the final ALLOFF is the last line the controller gets.
        self._stop_heartbeats()
        super().close()

    def _hw_release(self) -> None:
        self._stop_heartbeats()
        self._close_port()

    # -- protocol ------------------------------------------------------------------------
    def _max_duration_ms(self) -> int:
        return self.controller.max_on_ms if self.controller is not None else proto.MAX_DURATION_MS

    def _handshake(self, first: bool = False) -> proto.HelloInfo | None:
        try:
            reply = self._exchange(proto.HELLO, (proto.PROTOCOL_VERSION,))
        except _Nak as nak:
            raise OutputError(
                f"sprayer controller on {self.port} refused the handshake: NAK {nak.code} "
                f"({_NAK_MEANING.get(nak.code, 'unknown reason')})",
                "update the controller firmware or weed-detector so both speak the same protocol version",
            ) from None
        except _LinkDown as exc:
            if not first:
                self._mark_unhealthy(str(exc))
            raise OutputError(
                f"sprayer controller on {self.port} did not answer HELLO: {exc}",
                f"{PORT_FIX}; check outputs.baud ({self.baud}) and that the controller runs "
                f"firmware speaking protocol v{proto.PROTOCOL_VERSION}",
            ) from None
        if reply is None:
            return None
        try:
            info = proto.parse_hello_ack(reply)
        except proto.ProtocolError as exc:
            raise OutputError(
                f"sprayer controller on {self.port} answered HELLO with something we cannot use: {exc}",
                "update the controller firmware to protocol v1 (docs/serial-protocol.md)",
            ) from None
        if info.version > proto.PROTOCOL_VERSION:
            raise OutputError(
                f"sprayer controller on {self.port} answered with protocol v{info.version}, we speak v{proto.PROTOCOL_VERSION}",
                "update weed-detector or use firmware that speaks v1",
            )
        if info.max_on_ms < MIN_MAX_ON_S * 1000:  # at start and after a restart (NAK SYNC) alike
            raise OutputError(
                f"the controller on {self.port} keeps a valve open at most {info.max_on_ms} ms, below the "
                f"{MIN_MAX_ON_S * 1000:g} ms a spray needs (valves would only flicker)",
                f"set the controller firmware's MAX_ON_MS to at least {MIN_MAX_ON_S * 1000:g} "
                f"(edge-run's default on-time bound is {DEFAULT_MAX_ON_S * 1000:g} ms)",
            )
        if self.heartbeat_s * 1000 * 2 > info.watchdog_ms:
            raise OutputError(
                f"outputs.heartbeat_s is {self.heartbeat_s} s but the controller's watchdog is {info.watchdog_ms} ms: "
                "a single late heartbeat would switch the sprayer off",
                f"set outputs.heartbeat_s to at most {info.watchdog_ms / 2000:g}" if info.watchdog_ms >= 2000 * MIN_HEARTBEAT_S
                else f"edge-run's heartbeat is at least {MIN_HEARTBEAT_S:g} s: set the controller firmware's watchdog "
                     f"to at least {2000 * MIN_HEARTBEAT_S:g} ms",
            )
        if not first and self._last_sent and info.channels < len(self._last_sent):
            raise OutputError(
                f"the controller on {self.port} came back with {info.channels} channels instead of {len(self._last_sent)}",
                "check which controller is connected, then restart edge-run",
            )
        self.controller = info
        self._last_sent = [None] * len(self._last_sent)  # the controller switched everything off
        return info

    def _command(self, cmd: str, args: tuple = ()) -> proto.Message | None:
        """Send a command until acknowledged; OutputError when that fails."""
        for _ in range(2):
            try:
                return self._exchange(cmd, args)
            except _Nak as nak:
                if nak.code == proto.E_SYNC:
                    self._log.warning(
                        "sprayer controller on %s asks for a new handshake (did it restart?); handshaking again",
                        self.port,
                    )
                    with self._lock:  # the handshake and the state it implies (all off) are one step
                        self._handshake()
                        closed = self._device_reset("controller restarted")
                    self.restarts += 1
                    if closed:
                        self._log.warning(
                            "sprayer controller on %s restarted: it closed channel(s) %s; they count as off "
                            "until switched on again",
                            self.port,
                            ", ".join(map(str, closed)),
                        )
                    continue
                raise OutputError(
                    f"sprayer controller on {self.port} refused {cmd} {','.join(map(str, args))}: NAK {nak.code} "
                    f"({_NAK_MEANING.get(nak.code, 'unknown reason')})",
                    "check outputs.channels / outputs.max_on_s against what the controller announced at start-up",
                ) from None
            except _LinkDown as exc:
                self._mark_unhealthy(str(exc))
                raise OutputError(f"sprayer controller on {self.port}: {exc}", PORT_FIX) from None
        raise OutputError(
            f"sprayer controller on {self.port} keeps asking for a handshake after answering one",
            "check the controller firmware (docs/serial-protocol.md, SYNC)",
        )

    def _exchange(self, cmd: str, args: tuple = ()) -> proto.Message | None:
        with self._io:
            # it stopped answering (checked under _io: the heartbeat may just have found it): an ON (or HB,
            # HELLO) must not pass for done when nobody answers
            if not self.healthy and cmd not in FAIL_SAFE:
                raise _LinkDown("it stopped answering")
            self._seq = self._seq % proto.MAX_SEQ + 1
            seq = self._seq
            line = proto.encode(seq, cmd, args)
            if not self.healthy:  # an OFF is still sent, once, and nothing awaited (each wait blocked the loop);
                self._write(line)  # the controller's watchdog is the backstop
                return None
            problem = "no answer"
            for attempt in range(self.retries + 1):
                if attempt:
                    self.resent += 1
                self._write(line)
                if not self.acks:
                    return None
                reply = self._await_reply(seq)
                if reply is None:
                    problem = f"no answer to {cmd} within {self.ack_timeout_s:g} s"
                    self._log.debug("serial: %s (attempt %d)", problem, attempt + 1)
                    continue
                if reply.cmd == proto.ACK:
                    return reply
                try:
                    code = proto.nak_code(reply)
                except proto.ProtocolError:
                    code = "?"
                if code in proto.RETRYABLE:
                    problem = f"{cmd} arrived damaged (NAK {code})"
                    self._log.debug("serial: %s (attempt %d)", problem, attempt + 1)
                    continue
                raise _Nak(code, seq)
            raise _LinkDown(f"{problem} after {self.retries + 1} attempt(s)")

    def _write(self, line: bytes) -> None:
        self._log.debug("serial -> %r", line)
        try:
            self._ser.write(line)
        except Exception as exc:  # SerialException, SerialTimeoutException, OSError (unplugged)
            raise _LinkDown(f"writing to the port failed: {exc}") from exc

    def _await_reply(self, seq: int) -> proto.Message | None:
        deadline = time.monotonic_ns() + int(self.ack_timeout_s * 1e9)
        while True:
            while self._rx_lines:
                raw = self._rx_lines.popleft()
                if raw is None:
                    continue
                try:
                    msg = proto.decode(raw)
                except proto.ProtocolError as exc:
                    self._log.debug("serial <- unusable line %r: %s", raw, exc)
                    continue
                self._log.debug("serial <- %r", raw)
                if msg.cmd in proto.REPLIES and msg.seq == seq:
                    return msg
            if time.monotonic_ns() >= deadline:
                return None
            try:
                waiting = self._ser.in_waiting
                data = self._ser.read(max(1, min(waiting, 4096)))
            except Exception as exc:
                raise _LinkDown(f"reading from the port failed: {exc}") from exc
            if data:
                self._rx_lines.extend(self._splitter.feed(data))

    # -- heartbeat -----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except OutputError as exc:
                if not self.healthy:
                    return  # _mark_unhealthy logged it and set the stop event
                self._heartbeat_failed(exc)

    def _heartbeat_failed(self, exc: OutputError) -> None:
        """A refused heartbeat (NAK CMD from an odd firmware): logged at once, then at most once every
        ``HB_FAILURE_LOG_S`` with the count (it was a line every heartbeat_s)."""
        self._hb_failures += 1  # since the last line, failing now and then or all the time
        now = self._clock.now_ns()
        if self._hb_logged_ns is None or now - self._hb_logged_ns >= HB_FAILURE_LOG_S * 1e9:
            again = f" ({self._hb_failures} failed since the last line)" if self._hb_logged_ns is not None else ""
            self._log.error("serial heartbeat failed%s: %s; the controller's watchdog may switch the valves off",
                            again, exc)
            self._hb_logged_ns, self._hb_failures = now, 0

    def _mark_unhealthy(self, why: str) -> None:
        self._hb_stop.set()
        if self.healthy:
            self.healthy = False
            watchdog = f"{self.controller.watchdog_ms} ms" if self.controller is not None else "its watchdog timeout"
            self._log.error(
                "sprayer controller on %s stopped answering (%s); heartbeats stopped, so the controller "
                "switches every valve off within %s",
                self.port,
                why,
                watchdog,
            )

    def _close_port(self) -> None:
        if self._owns_port and self._ser is not None:
            try:
                self._ser.close()
            except Exception as exc:
                self._log.warning("closing serial port %s failed: %s", self.port, exc)
        self._ser = None if self._owns_port else self._ser
