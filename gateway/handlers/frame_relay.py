"""A frame-level WebSocket relay: one proxied connection after both handshakes, frames passed on as bytes.

This module owns the session (`Relay`): taking both connections from their protocols
(`SideProtocol`), screening held messages, the timers (idle, heartbeat, close deadline) and how a
session ends. It sits on the request path after passthrough.py's two handshakes and holds the
connection until it ends; below it are the frame scan of each direction (`Leg`, relay_leg.py, the
per-read hot path) and the two sides with the close vocabulary (`Peer`, `Closing`, `Violation`,
relay_peer.py). Layers of one relay in three modules, with no extra call or attribute hop per
frame: a leg keeps what it reads per frame in its own slots (`short`, `write`, `counts`), as before.
Invariants: `done` is resolved once, with the first `Closing`; a side is closed (TCP) only once its
close handshake is over, or at the close deadline, or when half-open; every timer is cancelled when the session ends.

A client's frame is masked, which is what a backend expects from its client, and a backend's frame
is unmasked, which is what a client expects from its server; with no extension negotiated on either
side (no compression), a frame is valid on the other leg as it is. So the relay parses only frame
headers (2 to 14 bytes) and writes each batch of whole frames to the other side in one
`transport.write`, with no task, future or timer per message: once both handshakes are done each
connection's protocol is replaced by a `SideProtocol`, whose `data_received` is the leg's `feed`
itself, so bytes go from the event loop's read straight to the scan and leave from it. It checks
what a proxy must check on every frame: the mask bit for the direction, reserved
bits (no extension is negotiated), opcodes, control frame rules, fragmentation order (1002), and the
size of each message, fragments added up, against `max_size` as soon as a header announces it
(1009, before the payload is read). Payloads are unmasked only where the gateway needs them: a close
frame's code and reason, a pong's payload, and, when `screen` is given, every inbound message
(reassembled from its fragments, held back, passed to `screen` and released only if it returns; the
client is not read meanwhile). Text is not checked for UTF-8 on its way through (the receiving end
checks it, as it would without a proxy) except when screened (1007).

Control frames: a ping from either side goes on to the other, whose pong comes back the same way.
The gateway sends its own pings to both sides every `heartbeat_s` (payload `HEARTBEAT`, whose pongs
it swallows); a side that sent nothing at all between two of them is half-open and is dropped, and
the other side is closed. A close frame is passed on as it is (code and reason unchanged), and the
answer comes back the same way; a side whose close handshake is complete is closed at once (TCP).
A side that disappears without a close frame gets the other side a close: 1011 to the client (the
backend failed), 1001 to the backend (the client went away). When the gateway ends a session (idle
for `idle_s`, a refused or oversized message, a protocol error, shutdown), it sends each side its
own close frame and waits at most `close_timeout_s` for the answers before dropping both
connections.

Backpressure: when one side's transport holds more than its high-water mark of unsent bytes, the
other side is no longer read until it drains (`pause_writing` and `resume_writing` of that side's
`SideProtocol`).

Each message passed on is counted, with its size, in the route's tallies (`SocketMeter.tally`: a
table look-up and two additions, inline in the scan; pushed into the metrics before a scrape, or
after each batch with several workers).

Cost, the ping-pong benchmark's frames (callgrind, gateway user instructions per relayed round trip
of two frames): about 19k, of which uvloop's read callbacks, GIL hand-offs and writes are about
half; through aiohttp's payload-parser hook, with prometheus-client calls per message and a
writing-paused check per write, it was 60k. The kernel's two reads and two writes per round trip
now cost the gateway as much CPU as all of that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode

from gateway.handlers.relay_leg import Leg
from gateway.handlers.relay_peer import (
    GOING_AWAY,
    HEARTBEAT,
    INTERNAL,
    POLICY,
    PROTOCOL_ERROR,
    TOO_BIG,
    Closing,
    Peer,
    Violation,
)
from gateway.metrics_registry import Tally
from translators.errors import GatewayError

log = logging.getLogger("portcullis.passthrough")

_PING_TO_CLIENT = Frame(Opcode.PING, HEARTBEAT).serialize(mask=False)


class Meter(Protocol):
    """The route's message metrics (`sockets.SocketMeter`)."""

    eager: bool  # push after every batch (several workers), else the scrape pushes

    def tally(self, inbound: bool) -> Tally:
        """One direction's tally, added to inline."""
        ...

    def push(self) -> None:
        """Move the tallies into the metrics."""
        ...


class SideProtocol:
    """The protocol of one side's connection once the relay holds it (`Relay.take`).

    Its `data_received` is the leg's `feed` itself, an instance attribute: uvloop looks a
    protocol's `data_received` up once, when it is set, so a read costs the relay one Python call.
    `pause_writing` and `resume_writing` stop and restart reading the other side (backpressure).
    The protocol it replaced, if any (aiohttp's, behind the listener's guard), still hears of the
    connection's loss, so that the server forgets the connection as it would have.
    """

    __slots__ = ("data_received", "other", "peer", "previous", "relay")

    def __init__(self, relay: Relay, peer: Peer, previous: asyncio.BaseProtocol | None) -> None:
        self.relay = relay
        self.peer = peer
        self.other = relay.other(peer)
        self.previous = previous
        self.data_received: Callable[[bytes], None] = relay.leg_from(peer).feed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # not called: the connection was made before the relay took it

    def eof_received(self) -> bool:
        return False  # the transport closes; `connection_lost` tells the relay

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.peer)
        if self.previous is not None:
            previous, self.previous = self.previous, None
            previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self.other.pause("drain")

    def resume_writing(self) -> None:
        self.other.resume("drain")


class Relay:
    """Both directions of one proxied connection, its timers and how it ends."""

    def __init__(
        self,
        client: asyncio.Transport,
        backend: asyncio.Transport,
        *,
        max_size: int,
        idle_s: float,
        heartbeat_s: float,
        close_timeout_s: float,
        screen: Callable[[str | bytes], Awaitable[None]] | None,
        meter: Meter,
        request_id: str = "",
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = Peer("client", client, masked=True)
        self.backend = Peer("backend", backend, masked=False)
        self.max_size = max_size
        self.idle_s = idle_s
        self.heartbeat_s = heartbeat_s
        self.close_timeout_s = close_timeout_s
        self.screen = screen
        self.meter = meter
        self.request_id = request_id
        self.up = Leg(self, self.client, self.backend, inbound=True, screening=screen is not None)
        self.down = Leg(self, self.backend, self.client, inbound=False, screening=False)
        self.closing: Closing | None = None
        self.done: asyncio.Future[Closing] = self.loop.create_future()
        self.screen_wake = asyncio.Event()
        self.active_at = self.loop.time()
        self._timers = [
            self.loop.call_later(idle_s, self._idle_check),
            self.loop.call_later(heartbeat_s, self._heartbeat),
        ]

    # --- the flow -------------------------------------------------------------------------------
    def take(self, peer: Peer, *, forward_loss: bool, early: bytes = b"") -> None:
        """Give `peer`'s connection to the relay: its bytes from now on, after `early` (those that
        arrived before). With `forward_loss`, the protocol it had still hears `connection_lost`."""
        transport = peer.transport
        previous = transport.get_protocol() if forward_loss else None
        transport.set_protocol(SideProtocol(self, peer, previous))  # type: ignore[arg-type]  # a protocol by duck typing
        if early:
            self.leg_from(peer).feed(early)

    def leg_from(self, peer: Peer) -> Leg:
        return self.up if peer is self.client else self.down

    async def screener(self) -> Closing:
        """Pass each inbound message to `screen` before it goes on; a refusal ends the session."""
        assert self.screen is not None
        leg = self.up
        while True:
            await self.screen_wake.wait()
            self.screen_wake.clear()
            message = leg.pending
            if message is None:
                continue
            if self.closing is not None:  # the session is ending: nothing more is passed on
                leg.release(allowed=False)
                continue
            try:
                await self.screen(message)
            except GatewayError as err:
                log.info("request %s: a policy refused a WebSocket message: %s", self.request_id, err.message)
                self.shut("gateway", POLICY, err.message)
                leg.release(allowed=False)  # read on: the client's answer to the close
                continue
            leg.release()

    # --- how it ends ----------------------------------------------------------------------------
    def other(self, peer: Peer) -> Peer:
        return self.backend if peer is self.client else self.client

    def close_received(self, leg: Leg, payload: bytes, raw: bytes) -> None:
        src, dst = leg.src, leg.dst
        try:
            close = Close.parse(payload)
        except (ProtocolError, UnicodeDecodeError):
            self.violation(leg, Violation(PROTOCOL_ERROR, "invalid close frame"))
            return
        src.close_rcvd = True
        if self.closing is None:
            self.closing = Closing(src.name, close.code, close.reason)
        if not dst.close_sent and not dst.finished:
            dst.close_sent = True
            dst.transport.write(raw)  # passed on as it is: the masking suits the other side
        self._settle()

    def violation(self, leg: Leg, exc: Violation) -> None:
        """`leg.src` broke the protocol or a limit: it gets `exc.code`; the other side 1009 for a
        message too big, else as if the offender had gone away."""
        if self.closing is None:
            self.closing = Closing("gateway", exc.code, exc.reason)
        other_code = exc.code if exc.code == TOO_BIG else (INTERNAL if leg.dst is self.client else GOING_AWAY)
        leg.src.close_rcvd = True  # nothing more is read from it
        leg.src.send_close(exc.code, exc.reason)
        leg.dst.send_close(other_code, exc.reason)
        self._settle()

    def shut(self, by: str, code: int, reason: str) -> None:
        """The gateway ends the session: the same close frame to both sides."""
        if self.closing is None:
            self.closing = Closing(by, code, reason)
        self.client.send_close(code, reason)
        self.backend.send_close(code, reason)
        self._settle()

    def lost(self, peer: Peer) -> None:
        """`peer`'s connection is closed (by us after its close handshake, or lost)."""
        if peer.finished:
            return
        peer.finished = True
        if not (peer.close_sent and peer.close_rcvd):
            if self.closing is None:
                self.closing = Closing(peer.name, 1006)
            other = self.other(peer)
            other.send_close(INTERNAL if other is self.client else GOING_AWAY, "")
        self._settle()

    def _settle(self) -> None:
        """Close each side whose close handshake is over; end when both are; a deadline for the rest."""
        for peer in (self.client, self.backend):
            if not peer.finished and peer.close_sent and peer.close_rcvd:
                peer.finished = True
                peer.transport.close()
        if self.client.finished and self.backend.finished:
            self._end()
        elif len(self._timers) == 2:
            self._timers.append(self.loop.call_later(self.close_timeout_s, self._abort))

    def _abort(self) -> None:
        for peer in (self.client, self.backend):
            if not peer.finished:
                peer.finished = True
                peer.transport.abort()
        self._end()

    def _end(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if not self.done.done():
            self.done.set_result(self.closing or Closing("gateway", 1006))

    # --- timers ---------------------------------------------------------------------------------
    def _idle_check(self) -> None:
        deadline = self.active_at + self.idle_s
        now = self.loop.time()
        if now >= deadline:
            self.shut("gateway", GOING_AWAY, "idle timeout")
        else:
            self._timers[0] = self.loop.call_at(deadline, self._idle_check)

    def _heartbeat(self) -> None:
        if self.closing is not None:
            return
        for peer in (self.client, self.backend):
            if peer.pinged and not peer.heard and not peer.pauses:  # half-open: nothing since the last ping
                log.info(
                    "request %s: the %s connection is half-open; closing both", self.request_id, peer.name
                )
                peer.transport.abort()
                self.lost(peer)
                return
        for peer in (self.client, self.backend):
            peer.heard = False
            peer.pinged = True
            ping = (
                _PING_TO_CLIENT if peer is self.client else Frame(Opcode.PING, HEARTBEAT).serialize(mask=True)
            )
            peer.transport.write(ping)
        self._timers[1] = self.loop.call_later(self.heartbeat_s, self._heartbeat)
