"""One call's state on a connection, and the pure rules for what a response means for it.

`Call` (slots) is everything a connection keeps per HTTP/2 stream: its future (unary response) or
message queue (streamed response), windows, unsent request bytes and whether its request side is
still open (client and bidi streams); its deadline lives in the connection's `Deadlines`
(deadlines.py). `Admission` queues calls beyond the peer's stream limit. The functions turn what
arrived (response headers, a reset) into the call's outcome, a `UnaryResult` or a `GatewayError`
built the way `gateway.upstream.translate_rpc_error` builds one for grpc.aio: code from
grpc-status, message from grpc-message (or the code's name), details from grpc-status-details-bin,
and "backend <name> unavailable: " before every UNAVAILABLE message. No I/O here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import grpc

from gateway.upstream import UnaryResult
from gateway.upstreams import frames as F
from gateway.upstreams.grpc_wire import (
    MessageError,
    MessageReader,
    ResponseHeaders,
    code_for_http_status,
    code_for_reset,
    unary_body,
)
from translators.errors import GatewayError
from translators.status import details_from_trailers

_C = grpc.StatusCode
# The receive window granted to each stream. Large, so a unary response rarely needs a stream
# WINDOW_UPDATE; a server stream's window is only given back as its consumer takes messages, so a
# slow client slows the backend down instead of filling our memory.
STREAM_WINDOW = 4 * 1024 * 1024
DEADLINE_EXCEEDED = "Deadline Exceeded"  # grpc.aio's text, so both clients read the same
# A server may count a finished stream against its limit a moment longer than we do (grpc's core
# frees the slot after the trailers went out). REFUSED_STREAM guarantees the call was not processed,
# so it is sent again (after one of our streams ended), as grpc's transparent retry does.
REFUSED_RETRIES = 10
REFUSED_PAUSE_S = 0.002  # doubled on each refusal of the same call, up to the maximum
REFUSED_PAUSE_MAX_S = 0.05

Outcome = tuple[UnaryResult | None, GatewayError | None]


class RefusedStream(GatewayError):
    """RST_STREAM REFUSED_STREAM before any response: the backend did not process the call."""


class Call:
    """One call's state; only its connection and the coroutine that made it touch it."""

    __slots__ = (
        "chunks",
        "done",
        "end_after",
        "error",
        "future",
        "headers_seen",
        "initial",
        "pending",
        "queue",
        "queued",
        "reader",
        "recv_window",
        "send_waiter",
        "send_window",
        "sending",
        "sid",
        "size",
        "unary",
        "waiter",
    )

    def __init__(
        self, sid: int, unary: bool, future: asyncio.Future[UnaryResult] | None, window: int
    ) -> None:
        self.sid = sid
        self.unary = unary
        self.future = future
        self.done = False
        self.headers_seen = False
        self.initial: tuple[tuple[str, str | bytes], ...] = ()
        self.chunks: list[bytes] = []  # unary: DATA payloads, joined once at the end
        self.size = 0
        self.queued = 0  # framed bytes in `queue`, not yet credited back to the stream window
        if not unary:  # streamed responses only: a unary call never reads these, on any path
            self.reader: MessageReader | None = MessageReader()
            self.queue: deque[bytes] = deque()  # messages not yet taken
            self.waiter: asyncio.Future[None] | None = None
            self.error: GatewayError | None = None
        self.recv_window = STREAM_WINDOW
        self.send_window = window
        self.pending: memoryview | None = None  # request bytes flow control held back
        self.send_waiter: asyncio.Future[None] | None = None
        self.end_after = True  # END_STREAM goes with the last pending bytes (False: more messages follow)
        self.sending = False  # a client or bidi stream whose request side is still open


def unavailable(backend: str, why: str) -> GatewayError:
    return GatewayError(_C.UNAVAILABLE, f"backend {backend} unavailable: {why}")


def outcome(call: Call, info: ResponseHeaders, trailers_only: bool, backend: str) -> Outcome:
    """What the trailers (or a trailers-only response) end the call with."""
    code = info.grpc_status
    if code is None:
        if trailers_only and info.status != 200:
            return None, http_error(info, backend)
        return None, GatewayError(_C.UNKNOWN, "backend response carried no grpc-status")
    if code is not _C.OK:
        message = info.grpc_message or code.name
        if code is _C.UNAVAILABLE:
            message = f"backend {backend} unavailable: {message}"
        return None, GatewayError(code, message, details_from_trailers(info.metadata))
    if call.unary:
        if not call.chunks:
            return None, GatewayError(_C.INTERNAL, "unary call got no response message")
        try:
            body = unary_body(call.chunks)
        except MessageError as exc:
            return None, GatewayError(exc.code, str(exc))
        return UnaryResult(body, list(call.initial), list(info.metadata)), None
    if call.reader is not None and call.reader.partial:
        return None, GatewayError(_C.INTERNAL, "backend stream ended inside a message")
    return None, None


def http_error(info: ResponseHeaders, backend: str) -> GatewayError:
    """A response that is not gRPC: the HTTP status mapped by the gRPC spec's table."""
    if info.status == 200:
        return GatewayError(_C.UNKNOWN, f"backend answered with content-type {info.content_type!r}, not gRPC")
    code = code_for_http_status(info.status or 0)
    message = f"received HTTP status {info.status} from the backend"
    if code is _C.UNAVAILABLE:
        message = f"backend {backend} unavailable: {message}"
    return GatewayError(code, message)


def reset_error(error_code: int, before_headers: bool, backend: str) -> GatewayError:
    """The backend reset the stream: the gRPC spec's RST_STREAM table."""
    code = code_for_reset(error_code)
    message = f"stream reset by the backend ({F.ERROR_NAMES.get(error_code, error_code)})"
    if code is _C.UNAVAILABLE:
        message = f"backend {backend} unavailable: {message}"
    if error_code == F.REFUSED_STREAM and before_headers:
        return RefusedStream(code, message)
    return GatewayError(code, message)


class Admission:
    """First come, first served admission under the peer's SETTINGS_MAX_CONCURRENT_STREAMS.

    The connection asks `must_wait(active)` on every call (one comparison when nobody queues) and
    only then awaits `wait`; it calls `release` when a stream ends and `fail` when it goes away.
    """

    __slots__ = ("limit", "waiters")

    def __init__(self) -> None:
        self.limit = 2**31 - 1  # unlimited until the peer's SETTINGS say otherwise
        self.waiters: deque[asyncio.Future[None]] = deque()

    def must_wait(self, active: int) -> bool:
        return bool(self.waiters) or active >= self.limit

    async def wait(
        self,
        active: Callable[[], int],
        usable: Callable[[], bool],
        deadline: float | None,
        retry: bool = False,
    ) -> None:
        """Queue behind earlier callers until fewer than `limit` streams are `active`.

        `retry`: the peer refused our last stream although we were under its limit, so it still
        counts streams we saw end. Wait at the head of the queue until one of ours ends, then go.
        """
        after_release = retry and active() > 0
        woken = False
        while after_release or active() >= self.limit or (self.waiters and not woken and not retry):
            if not usable():
                raise GatewayError(_C.UNAVAILABLE, "connection is closing")
            waiter = asyncio.get_running_loop().create_future()
            if woken or retry:
                self.waiters.appendleft(waiter)  # keep our place ahead of later arrivals
            else:
                self.waiters.append(waiter)
            try:
                if deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(deadline):
                        await waiter
            except TimeoutError:
                raise GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED) from None
            finally:
                if not waiter.done() or waiter.cancelled():
                    try:
                        self.waiters.remove(waiter)
                    except ValueError:
                        pass
            woken = True
            after_release = False

    def release(self, count: int = 1) -> None:
        """Wake `count` waiters; each checks again, so waking too many is harmless."""
        waiters = self.waiters
        while waiters and count > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def fail(self, error: GatewayError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
