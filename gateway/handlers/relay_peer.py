"""One side of a relayed WebSocket connection, and the words the relay ends a session with.

The bottom of the frame relay (frame_relay.py joins two `Peer`s with two `Leg`s, relay_leg.py): on
the request path it sits under both directions, once both handshakes of a passthrough route are
done. Owns a side's state as the relay sees it (`Peer`: its transport, whether its frames are
masked, the close frames sent and received, the heartbeat marks, why it is not read), the close
codes, `close_frame` and the two outcomes: `Closing` (who ended the session, with what) and
`Violation` (a frame the relay refuses, raised by the scan and closed by the relay).

Invariants: a side gets at most one close frame, and nothing after it (`close_sent`); a finished
side's transport is never paused, resumed or written to again; a side is read only while it has no
reason not to be (`pauses` empty: "drain", the other side is full; "screen", a message is held).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from websockets.frames import Close, Frame, Opcode

HEARTBEAT = b"portcullis-heartbeat"
GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG, INTERNAL = 1001, 1002, 1007, 1008, 1009, 1011


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
