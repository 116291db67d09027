"""The caller's side of a connection: start a call, send its request under flow control, read its stream.

A layer of `H2Connection` (connection.py), above `Deadlines` (deadlines.py) and `Session`
(session.py); these are the methods `H2Upstream` (h2.py) calls, the outbound half of the request
path. `unary` starts a call and awaits its future; `open_stream` starts one whose messages queue up
for `next_message`; `open_call` starts a client or bidi stream whose request messages `send_all`
sends one DATA run each, under the peer's flow control, then half-closes. `_start` writes the
common case (HEADERS plus the whole request in one DATA frame) straight into the corked write
queue and files the call's deadline inline; what the windows hold back waits in `call.pending` for
`_send_pending`.

Invariants: a stream id is used once (ids exhausted: the connection stops being `usable`); a
call's header block is its path's cached prefix, then grpc-timeout, then metadata; a caller that
gives up (cancelled, closed the stream early) resets the stream, so the backend stops too.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterable
from functools import lru_cache

import grpc

from gateway.upstream import Observer, UnaryResult
from gateway.upstreams import frames as F
from gateway.upstreams.calls import (
    DEADLINE_EXCEEDED,
    REFUSED_PAUSE_MAX_S,
    REFUSED_PAUSE_S,
    REFUSED_RETRIES,
    STREAM_WINDOW,
    Call,
    RefusedStream,
    unavailable,
)
from gateway.upstreams.deadlines import Deadlines
from gateway.upstreams.grpc_wire import PREFIX, encode_timeout
from gateway.upstreams.headers import literal, metadata_block, request_prefix
from translators.errors import GatewayError
from translators.metadata import Metadata

_C = grpc.StatusCode
_LAST_STREAM_ID = 2**31 - 1
_HALF = STREAM_WINDOW // 2
# Frame headers with the 24-bit length and the type as one 32-bit word: (length << 8 | type), flags,
# stream id; the DATA one carries a whole request's gRPC prefix (compressed flag, length) too.
_HEADERS_HEAD_PACK = struct.Struct(">LBL").pack
_DATA_MESSAGE_PACK = struct.Struct(">LBLBL").pack


@lru_cache(maxsize=1024)
def _timeout_field(millis: int) -> bytes:
    return literal(b"grpc-timeout", encode_timeout(millis / 1000).encode())


class Caller(Deadlines):
    """What a connection offers its upstream: unary calls, server, client and bidi streams."""

    def __init__(self, backend: str, address: str, scheme: str, authority: str) -> None:
        super().__init__(backend, address)
        self._scheme = scheme
        self._authority = authority
        self._prefixes: dict[str, bytes] = {}  # rpc path -> the fixed part of its header block

    async def unary(
        self, path: str, body: bytes, metadata: Metadata, deadline: float | None, observe: Observer | None = None
    ) -> UnaryResult:
        """One unary call. `observe` (the balancer's outlier and budget bookkeeping) hears how it
        ended, None for a reply, before the caller does; a cancelled call is not reported."""
        try:
            admission = self._admission
            if admission.waiters or len(self._calls) >= admission.limit:  # Admission.must_wait, inlined
                await self._wait_for_slot(deadline)
            refused = 0
            while True:
                call = self._start(path, body, metadata, deadline, True)
                try:
                    if call.pending is not None:
                        await self._send_pending(call)
                    result: UnaryResult = await call.future  # type: ignore[misc]
                except asyncio.CancelledError:
                    self.cancel(call)
                    raise
                except RefusedStream:
                    refused += 1
                    if refused > REFUSED_RETRIES:
                        raise
                    await self.after_refusal(refused, deadline)
                    continue
                if observe is not None:
                    observe(None)
                return result
        except GatewayError as exc:
            if observe is not None:
                observe(exc)
            raise

    async def after_refusal(self, refused: int, deadline: float | None) -> None:
        """Before sending a refused call again: a short pause (grpc's core server counts a stream
        until its handler is cleaned up, well after the trailers), then the head of the queue."""
        pause = min(REFUSED_PAUSE_MAX_S, REFUSED_PAUSE_S * 2 ** (refused - 1))
        if deadline is not None and self._loop.time() + pause >= deadline:
            raise GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
        await asyncio.sleep(pause)
        await self._wait_for_slot(deadline, retry=True)

    async def open_stream(
        self, path: str, body: bytes, metadata: Metadata, deadline: float | None, admitted: bool = False
    ) -> Call:
        """Start a server-streaming call; `admitted` when `after_refusal` already gave it its slot."""
        if not admitted and self._admission.must_wait(len(self._calls)):
            await self._wait_for_slot(deadline)
        call = self._start(path, body, metadata, deadline, False)
        try:
            if call.pending is not None:
                await self._send_pending(call)
        except BaseException:
            self.cancel(call)
            raise
        return call

    async def open_call(self, path: str, metadata: Metadata, deadline: float | None, unary: bool) -> Call:
        """Start a client stream (`unary`: one response, on `call.future`) or a bidi stream (responses
        via `next_message`); only the headers go now, request messages follow through `send_all`."""
        if self._admission.must_wait(len(self._calls)):
            await self._wait_for_slot(deadline)
        return self._start(path, None, metadata, deadline, unary)

    async def send_all(self, call: Call, requests: AsyncIterable[bytes]) -> None:
        """Send each request message as flow control allows, then half-close. Stops quietly when the
        call ends first; a failing `requests` resets the call (CANCEL) and re-raises."""
        try:
            async for message in requests:
                if call.done:
                    return
                call.pending = memoryview(PREFIX.pack(0, len(message)) + message)
                call.end_after = False
                await self._send_pending(call)
            if not call.done and call.sending:
                call.sending = False
                self._write(F.header(0, F.DATA, F.END_STREAM, call.sid))
        except Exception:
            if not call.done:
                self._reset(call, F.CANCEL, GatewayError(_C.CANCELLED, "request stream failed"))
            raise

    async def next_message(self, call: Call) -> bytes | None:
        """The stream's next message, None at its clean end, or its error raised."""
        while True:
            queue = call.queue
            if queue:
                message = queue.popleft()
                call.queued -= len(message) + 5
                if not call.done and STREAM_WINDOW - call.recv_window - call.queued >= _HALF:
                    self._credit(call)
                return message
            if call.done:
                if call.error is not None:
                    raise call.error
                return None
            call.waiter = waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                call.waiter = None

    def cancel(self, call: Call) -> None:
        """The caller gave up (cancelled, closed the stream early): tell the backend, free the slot."""
        if not call.done:
            self._write(F.rst_stream(call.sid, F.CANCEL))
            self._finish(call, None, GatewayError(_C.CANCELLED, "call cancelled by the gateway"), quiet=True)

    def _start(
        self, path: str, body: bytes | None, metadata: Metadata, deadline: float | None, unary: bool
    ) -> Call:
        if not self.usable:
            raise unavailable(self.backend, f"{self.address}: connection is closing")
        sid = self._next_id
        self._next_id = sid + 2
        if self._next_id > _LAST_STREAM_ID:
            self.usable = False  # stream ids exhausted: the upstream opens a fresh connection
            self._draining = True
        block = self._prefixes.get(path)
        if block is None:
            block = self._prefixes[path] = request_prefix(self._scheme, self._authority, path)
        loop = self._loop
        if deadline is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
            block += _timeout_field(int(remaining * 1000) + 1)
        if metadata:
            block += metadata_block(metadata)
        call = Call(sid, unary, loop.create_future() if unary else None, self._peer_window)
        calls = self._calls
        calls[sid] = call
        if deadline is not None:  # `Deadlines`' filing, inlined: its FIFO, else its heap
            fifo = self._deadlines
            if fifo and deadline < fifo[-1][0]:
                self._push_early(deadline, sid)
            else:
                fifo.append((deadline, sid))
                if sid & 127 == 1:  # every 64th call: drop the entries of finished calls
                    self._prune_deadlines()
            if deadline < self._timer_at:
                self._arm(deadline)
        max_frame = self._peer_max_frame
        size = len(block)
        out = self._out
        if not out:
            loop.call_soon(self._flush)
        if body is not None:
            n = len(body)
            framed = n + 5
            if size <= max_frame and framed <= max_frame and framed <= self._send_window and framed <= call.send_window:
                # The common case: HEADERS and the whole request message in one DATA frame.
                self._send_window -= framed
                call.send_window -= framed
                out += (
                    _HEADERS_HEAD_PACK(size << 8 | 0x1, 0x4, sid),  # HEADERS, END_HEADERS
                    block,
                    _DATA_MESSAGE_PACK(framed << 8 | 0x0, 0x1, sid, 0, n),  # DATA, END_STREAM, gRPC prefix
                    body,
                )
                return call
        out.append(F.headers(sid, block, max_frame))
        if body is None:  # a client or bidi stream: its messages follow
            call.sending = True
        else:
            call.pending = memoryview(PREFIX.pack(0, n) + body)
        return call

    async def _wait_for_slot(self, deadline: float | None, retry: bool = False) -> None:
        try:
            await self._admission.wait(lambda: len(self._calls), lambda: self.usable, deadline, retry)
        except GatewayError as exc:
            if exc.code is _C.UNAVAILABLE:
                raise unavailable(self.backend, f"{self.address}: {exc.message}") from None
            raise

    async def _send_pending(self, call: Call) -> None:
        """Send what flow control held back, frame by frame, as the peer's windows open."""
        while call.pending is not None and not call.done:
            room = min(self._send_window, call.send_window, self._peer_max_frame)
            if room <= 0 or self._paused:
                call.send_waiter = waiter = self._loop.create_future()
                self._blocked.append(call)
                try:
                    await waiter
                finally:
                    call.send_waiter = None
                continue
            data = call.pending
            chunk = data[:room]
            last = len(chunk) == len(data)
            self._send_window -= len(chunk)
            call.send_window -= len(chunk)
            self._write(F.header(len(chunk), F.DATA, F.END_STREAM if last and call.end_after else 0, call.sid))
            self._write(chunk.tobytes())
            call.pending = None if last else data[room:]
