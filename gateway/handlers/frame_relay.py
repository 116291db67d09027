"""A frame-level WebSocket relay: one proxied connection after both handshakes, frames passed on as bytes.

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
import functools
import logging
import math
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode, apply_mask

from gateway.metrics_registry import Tally
from translators.errors import GatewayError

log = logging.getLogger("portcullis.passthrough")

HEARTBEAT = b"portcullis-heartbeat"
_HEARTBEAT_LEN = len(HEARTBEAT)
_OP_CLOSE, _OP_PONG = 8, 10
GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG, INTERNAL = 1001, 1002, 1007, 1008, 1009, 1011
_PING_TO_CLIENT = Frame(Opcode.PING, HEARTBEAT).serialize(mask=False)


@dataclass(frozen=True, slots=True)
class Closing:
    """Who ended the session and with what."""

    by: str  # "client", "backend" or "gateway" (policy, idle, shutdown, size, protocol error)
    code: int
    reason: str = ""


class Violation(Exception):
    """A frame the relay refuses; its side is closed with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_frame(code: int, reason: str, *, mask: bool) -> bytes:
    reason = reason.encode()[:123].decode("utf-8", "ignore")
    return Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=mask)


class Peer:
    """One side's TCP connection as the relay sees it."""

    __slots__ = (
        "close_rcvd",
        "close_sent",
        "finished",
        "heard",
        "masked",
        "name",
        "pauses",
        "pinged",
        "transport",
    )

    def __init__(self, name: str, transport: asyncio.Transport, *, masked: bool) -> None:
        self.name = name
        self.transport = transport
        self.masked = masked  # its frames are masked (the client's are)
        self.heard = True  # anything received since the last heartbeat ping
        self.pinged = False
        self.close_sent = False  # a close frame went to this side: nothing more may follow
        self.close_rcvd = False  # this side sent its close frame: nothing more comes
        self.finished = False  # its connection is closed or lost
        self.pauses: set[str] = set()  # why it is not read: "drain" (the other side is full), "screen"

    def pause(self, why: str) -> None:
        if not self.pauses and not self.finished:
            self.transport.pause_reading()
        self.pauses.add(why)

    def resume(self, why: str) -> None:
        self.pauses.discard(why)
        if not self.pauses and not self.finished:
            self.transport.resume_reading()

    def send_close(self, code: int, reason: str) -> None:
        if not self.close_sent and not self.finished:
            self.close_sent = True
            self.transport.write(close_frame(code, reason, mask=not self.masked))


_SMALL = 1024  # message sizes below this find their histogram bucket in a table


@functools.cache
def _buckets(bounds: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A histogram's bucket bounds as ints (+Inf left out: past the last bound is its slot), and
    the bucket of each size below `_SMALL`, for the tally's `counts`. A size is an int, `size <= b`
    holds exactly when `size <= floor(b)`, and ints compare faster than floats; one table per
    histogram, shared by every leg."""
    ints = tuple(math.floor(b) for b in bounds[:-1])
    return ints, tuple(bisect_left(ints, size) for size in range(_SMALL))


class Leg:
    """The frames of one direction, from `src` to `dst`."""

    __slots__ = (
        "bounds",
        "buf",
        "clock",
        "counts",
        "dst",
        "eager",
        "fragmented",
        "held",
        "inbound",
        "limit",
        "messages",
        "need",
        "opcode",
        "parts",
        "pending",
        "relay",
        "screening",
        "short",
        "size",
        "small",
        "src",
        "tally",
        "too_big",
        "total",
        "write",
    )

    def __init__(self, relay: Relay, src: Peer, dst: Peer, *, inbound: bool, screening: bool) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.inbound = inbound
        self.write = dst.transport.write
        self.clock = relay.loop.time
        self.limit = relay.max_size
        self.eager = relay.meter.eager  # push the tally after each batch (several workers)
        self.too_big = "message too big" if inbound else "backend message too big"
        self.buf = bytearray()  # the start of a frame not yet whole
        self.need = 0  # bytes `buf` must hold before the frame in it is whole (0: unknown yet)
        self.fragmented = False  # inside a fragmented message
        self.size = 0  # the current message's payload bytes so far
        self.screening = screening
        self.held: list[bytes] = []  # raw frames of the message being screened
        self.parts: list[bytes] = []  # their unmasked payloads
        self.opcode = 1
        self.pending: str | bytes | None = None  # a whole message waiting for `screen`
        self.total = 0  # payload bytes of the messages passed on
        self.messages = 0  # messages passed on
        tally = relay.meter.tally(inbound)  # the route's, shared by its sessions (one thread)
        self.tally = tally
        self.counts = tally.counts
        self.bounds, self.small = _buckets(tally.bounds)
        # The common frame, checked in one test: a whole text or binary message (FIN, no RSV bit),
        # with the mask bit its direction must have and a 7-bit length within `max_size`, has a
        # second byte in [low, high); when screening, every message takes the full path. With the
        # header's length (the masking key included) and the tally's counts and table, in one tuple.
        low = 0x80 if src.masked else 0
        high = low if screening else low + min(126, relay.max_size + 1)
        self.short = (low, high, 6 if src.masked else 2, self.counts, self.small)

    def feed(self, data: bytes) -> None:
        """Bytes from `src` (its protocol's `data_received`): pass on every whole frame; keep the
        tail of a frame not yet whole in `buf`.

        The hot path of the relay, one Python call per read: the common frame is checked in one
        test (see `short`); the write, the counts and the tally are inline. Whatever the full
        path changes of the message state it writes back at once."""
        src = self.src
        src.heard = True
        if src.close_rcvd or src.finished:
            return
        buf = self.buf
        if buf or self.pending is not None:
            buf += data
            if self.pending is not None or len(buf) < self.need:
                return
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = start = messages = nbytes = need = 0  # start: the first byte not yet written nor dropped
        try:
            low, high, short_head, counts, small = self.short
            fragmented = self.fragmented
            while n - pos >= 2:
                b0 = data[pos]
                b1 = data[pos + 1]
                if low <= b1 < high and 0x81 <= b0 <= 0x82 and not fragmented:
                    # The common frame: every check of the full path below holds for it.
                    size = b1 - low
                    end = pos + short_head + size
                    if end <= n:
                        messages += 1
                        nbytes += size
                        counts[small[size]] += 1
                        pos = end
                        continue
                masked = self.src.masked
                length = b1 & 0x7F
                head = pos + 2
                if length >= 126:
                    if length == 126:
                        if n - head < 2:
                            break
                        length = (data[head] << 8) | data[head + 1]
                        head += 2
                    else:
                        if n - head < 8:
                            break
                        length = int.from_bytes(data[head : head + 8], "big")
                        head += 8
                if b1 & 0x80:
                    if not masked:
                        raise Violation(PROTOCOL_ERROR, "masked frame from the server")
                    head += 4
                elif masked:
                    raise Violation(PROTOCOL_ERROR, "unmasked frame from the client")
                if b0 & 0x70:
                    raise Violation(PROTOCOL_ERROR, "reserved bits set")
                opcode = b0 & 0x0F
                if opcode < 3:
                    if opcode == 0:
                        if not fragmented:
                            raise Violation(PROTOCOL_ERROR, "continuation frame outside a message")
                        size = self.size + length
                    else:
                        if fragmented:
                            raise Violation(PROTOCOL_ERROR, "new message inside a fragmented one")
                        size = length
                        self.opcode = opcode
                    if size > self.limit:
                        raise Violation(TOO_BIG, self.too_big)
                elif opcode < 8 or opcode > 10:
                    raise Violation(PROTOCOL_ERROR, f"unknown opcode {opcode}")
                elif not b0 & 0x80 or length > 125:
                    raise Violation(PROTOCOL_ERROR, "fragmented or oversized control frame")
                end = head + length
                if end > n:
                    need = end - pos
                    break
                if opcode < 3:
                    self.size = size
                    self.fragmented = fragmented = not b0 & 0x80
                    # Held until screened; after a close nothing is passed on, so nothing is held.
                    if self.screening and not self.dst.close_sent:
                        self._flush(data, start, pos)
                        start = end
                        self._hold(data, pos, head, end, masked)
                        if not fragmented:
                            self._count(messages, nbytes)
                            self._await_screen(data[end:])
                            return
                    elif not fragmented:
                        messages += 1
                        nbytes += size
                        counts[small[size] if size < _SMALL else bisect_left(self.bounds, size)] += 1
                elif opcode == _OP_PONG and length == _HEARTBEAT_LEN:
                    # The answer to a gateway ping: swallowed.
                    self._flush(data, start, pos)
                    start = end
                elif opcode == _OP_CLOSE:
                    self._flush(data, start, pos)
                    self._count(messages, nbytes)
                    payload = data[head:end]
                    if masked:
                        payload = apply_mask(payload, data[head - 4 : head])
                    self.relay.close_received(self, payload, data[pos:end])
                    return
                pos = end
            if pos > start and not self.dst.close_sent:
                self.write(data[start:pos] if start or pos < n else data)
            if pos < n:
                self.buf += data[pos:] if pos else data
                self.need = need
            self._count(messages, nbytes)
        except Violation as exc:
            self.tally.total += nbytes  # the messages already in the tally's buckets, as observed
            self.relay.violation(self, exc)
        except Exception:
            log.exception("WebSocket relay failed (request %s)", self.relay.request_id)
            self.relay.shut("gateway", INTERNAL, "internal gateway error")

    def _flush(self, data: bytes, start: int, end: int) -> None:
        if end > start and not self.dst.close_sent:
            self.write(data if start == 0 and end == len(data) else data[start:end])

    def _count(self, messages: int, nbytes: int) -> None:
        """`messages` passed on, of `nbytes` payload bytes in all (already in the tally's buckets):
        the call's totals, the tally's sum and the activity the idle timeout reads."""
        if messages:
            self.messages += messages
            self.total += nbytes
            self.tally.total += nbytes
            self.relay.active_at = self.clock()
            if self.eager:
                self.relay.meter.push()

    def _hold(self, data: bytes, pos: int, head: int, end: int, masked: int) -> None:
        self.held.append(data[pos:end])
        payload = data[head:end]
        self.parts.append(apply_mask(payload, data[head - 4 : head]) if masked else payload)

    def _await_screen(self, rest: bytes) -> None:
        body = b"".join(self.parts)
        self.parts.clear()
        if self.opcode == 1:
            try:
                self.pending = body.decode()
            except UnicodeDecodeError:
                raise Violation(INVALID_DATA, "invalid UTF-8 in a text message") from None
        else:
            self.pending = body
        self.buf += rest
        self.need = 0
        self.src.pause("screen")
        self.relay.screen_wake.set()

    def release(self, allowed: bool = True) -> None:
        """The pending message passed screening: send it (dropped when not `allowed`, or when the
        other side is closing) and go on with what arrived meanwhile."""
        size = self.size
        if allowed and not self.dst.close_sent:
            self.write(b"".join(self.held))
            self.counts[bisect_left(self.bounds, size)] += 1
            self._count(1, size)
        self.held.clear()
        self.pending = None
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            self.feed(data)
        if self.pending is None:
            self.src.resume("screen")


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
