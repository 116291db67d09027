"""One direction of a relayed WebSocket connection: the frame scan, the relay's per-read hot path.

A layer of the frame relay (frame_relay.py), above the two sides (`Peer`, relay_peer.py): a `Leg`
owns the frames from `src` to `dst`. `feed` is the `data_received` of `src`'s protocol, so every
read of a passthrough connection lands here: it checks each frame header (mask bit for the
direction, reserved bits, opcodes, control frame rules, fragmentation order, message size against
`max_size`), writes each batch of whole frames to `dst` in one `transport.write`, swallows the
pongs to the gateway's heartbeat, hands a close frame to the relay, and, when screening, holds each
inbound message until `Relay.screener` releases it. It also counts what it passes on in the route's
tally (`_buckets`: the histogram's bucket of a small size by table).

Invariants: `buf` holds only the start of a frame not yet whole (or, while a message waits for
screening, everything after it); a message is counted once, when it is passed on; whatever the
full path changes of the message state it writes back before it leaves `feed`. Tuned per read:
locals, one tuple unpacked for the common frame, counts and writes inline; keep it so (see
frame_relay.py for the measured cost).
"""

from __future__ import annotations

import functools
import logging
import math
from bisect import bisect_left
from typing import TYPE_CHECKING

from websockets.frames import apply_mask

from gateway.handlers.relay_peer import (
    HEARTBEAT,
    INTERNAL,
    INVALID_DATA,
    PROTOCOL_ERROR,
    TOO_BIG,
    Peer,
    Violation,
)

if TYPE_CHECKING:
    from gateway.handlers.frame_relay import Relay

log = logging.getLogger("portcullis.passthrough")

_HEARTBEAT_LEN = len(HEARTBEAT)
_OP_CLOSE, _OP_PONG = 8, 10
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
