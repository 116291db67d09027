"""One HTTP/2 connection to a gRPC backend: an `asyncio.Protocol` that multiplexes concurrent calls.

Owns the socket's bytes and every call open on it; `H2Upstream` (h2.py) owns the connections and
picks one per call. `unary` starts a call and awaits its future; `open_stream` starts one whose
messages queue up for `next_message`; `open_call` starts a client or bidi stream whose request
messages `send_all` sends one DATA run each, under the peer's flow control, then half-closes. Writes are corked: the frames of one event-loop iteration
leave in one `transport.write` (measured: a third less CPU per call than a write per frame).
Inbound bytes are cut into frames with one `struct` per frame header and dispatched by type, in
one pass. Deadlines share one timer per connection, armed for the earliest live deadline (a loop
timer per call cost more than the rest of `_start`). They wait in a FIFO of (deadline, stream id)
while each is no earlier than the last (calls to one route share a timeout, so nearly always), the
others in a heap; finished calls leave both lazily: from the head (every 64th call, and when the
timer fires), or in a rebuild when one outgrows the open calls.

Invariants: every header block reaches the one HPACK decoder (`ResponseBlocks`) in arrival order,
even for calls already gone; every DATA byte is credited back to the connection window; a call
leaves `_calls` exactly once, in `_finish`, which also wakes whoever waits on it and lets a queued
call take its slot (a heap entry whose stream id is not in `_calls` is dead); callers only ever
see `GatewayError`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import AsyncIterable, Callable
from functools import lru_cache
from heapq import heapify, heappop, heappush

import grpc

from gateway.upstream import Observer, UnaryResult
from gateway.upstreams import frames as F
from gateway.upstreams.calls import (
    DEADLINE_EXCEEDED,
    REFUSED_PAUSE_MAX_S,
    REFUSED_PAUSE_S,
    REFUSED_RETRIES,
    STREAM_WINDOW,
    Admission,
    Call,
    RefusedStream,
    http_error,
    outcome,
    reset_error,
    unavailable,
)
from gateway.upstreams.grpc_wire import MAX_MESSAGE, PREFIX, MessageError, ResponseBlocks, encode_timeout
from gateway.upstreams.headers import HeaderError, literal, metadata_block, request_prefix
from translators.errors import GatewayError
from translators.metadata import Metadata

log = logging.getLogger("portcullis.upstream.h2")
_C = grpc.StatusCode

CONNECTION_WINDOW = 16 * 1024 * 1024  # receive window of the whole connection, topped up at half
MAX_HEADER_BLOCK = 1024 * 1024  # a header block (with CONTINUATIONs) larger than this is an attack
_LAST_STREAM_ID = 2**31 - 1
# The deadline timer fires when the loop's clock says so; an entry this close to its deadline then
# counts as due (libuv timers have millisecond resolution and may wake a little early).
_DEADLINE_SLACK_S = 0.001
_NEVER = float("inf")
_HEAD_UNPACK = F.HEAD.unpack_from
# Hot-path copies of frame constants: a module global is one lookup, `F.X` two.
_MAX_FRAME = F.DEFAULT_MAX_FRAME
_DATA, _HEADERS, _CONTINUATION = F.DATA, F.HEADERS, F.CONTINUATION
_END_STREAM, _END_HEADERS, _PADDED = F.END_STREAM, F.END_HEADERS, F.PADDED
_CONNECTION_HALF = CONNECTION_WINDOW // 2
_CREDIT_AT = STREAM_WINDOW - STREAM_WINDOW // 2  # a stream's window at or below this is topped up
_MAX_UNARY = MAX_MESSAGE + 5
_PREFIX_UNPACK = PREFIX.unpack_from
_OK = _C.OK
_HEAD_PACK = F.HEAD.pack
# HEADERS flags that need `_on_headers` (more frames to come, padding, priority fields).
_PLAIN_BLOCK = F.END_HEADERS | F.PADDED | F.PRIORITY_FLAG
_HALF = STREAM_WINDOW // 2
# DATA frame header and gRPC message prefix of a whole request, in one pack.
# Frame headers with the 24-bit length and the type as one 32-bit word: (length << 8 | type), flags,
# stream id; the DATA one carries a whole request's gRPC prefix (compressed flag, length) too.
_HEADERS_HEAD_PACK = struct.Struct(">LBL").pack
_DATA_MESSAGE_PACK = struct.Struct(">LBLBL").pack
_HANDSHAKE = (
    F.PREFACE
    + F.settings({F.ENABLE_PUSH: 0, F.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
    + F.window_update(0, CONNECTION_WINDOW - F.DEFAULT_WINDOW)
)


@lru_cache(maxsize=1024)
def _timeout_field(millis: int) -> bytes:
    return literal(b"grpc-timeout", encode_timeout(millis / 1000).encode())


class H2Connection(asyncio.Protocol):
    """A client connection; `usable` turns False for good on GOAWAY, loss, close or exhausted ids."""

    def __init__(
        self, backend: str, address: str, scheme: str, authority: str, on_lost: Callable[[H2Connection], None]
    ) -> None:
        self.backend = backend
        self.address = address
        self._scheme = scheme
        self._authority = authority
        self._on_lost = on_lost
        self._loop = self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()  # the peer's first SETTINGS
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.usable = False
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._paused = False
        self._buffer = bytearray()
        self._need = 9
        self._calls: dict[int, Call] = {}
        self._admission = Admission()  # calls waiting for a stream slot
        self._blocked: list[Call] = []  # calls waiting for send window
        self._next_id = 1
        self._draining = False  # GOAWAY received or ids exhausted: close once idle
        self._peer_window = F.DEFAULT_WINDOW
        self._peer_max_frame = F.DEFAULT_MAX_FRAME
        self._send_window = F.DEFAULT_WINDOW
        self._recv_unacked = 0
        self._blocks = ResponseBlocks()
        self._known_blocks = self._blocks.known
        self._prefixes: dict[str, bytes] = {}  # rpc path -> the fixed part of its header block
        self._cont: bytearray | None = None  # a header block waiting for CONTINUATION frames
        self._cont_sid = 0
        self._cont_flags = 0
        self._deadlines: deque[tuple[float, int]] = deque()  # (deadline, stream id), non-decreasing
        self._early: list[tuple[float, int]] = []  # heap: deadlines earlier than the FIFO's last
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER  # when `_deadline_timer` fires

    @property
    def active(self) -> int:
        return len(self._calls)

    # ---- calls -------------------------------------------------------------------------------------

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
        if deadline is not None:
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

    def _arm(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._timer_at = when
        self._deadline_timer = self._loop.call_at(when, self._expire_due)

    def _prune_deadlines(self) -> None:
        """Drop finished calls' entries from the FIFO's head (calls end roughly in the order they
        began), and rebuild it if finished calls still wait behind a long-lived one."""
        fifo = self._deadlines
        calls = self._calls
        while fifo and fifo[0][1] not in calls:
            fifo.popleft()
        if len(fifo) > 64 + 2 * len(calls):
            self._deadlines = deque(entry for entry in fifo if entry[1] in calls)

    def _push_early(self, deadline: float, sid: int) -> None:
        heap = self._early
        calls = self._calls
        while heap and heap[0][1] not in calls:
            heappop(heap)
        heappush(heap, (deadline, sid))
        if len(heap) > 64 + 2 * len(calls):
            heap[:] = [entry for entry in heap if entry[1] in calls]
            heapify(heap)

    def _expire_due(self) -> None:
        """The deadline timer: reset and fail every call past its deadline, re-arm for the next."""
        self._deadline_timer = None
        self._timer_at = _NEVER
        calls = self._calls
        due = self._loop.time() + _DEADLINE_SLACK_S
        fifo, heap = self._deadlines, self._early
        while True:
            while fifo and fifo[0][1] not in calls:
                fifo.popleft()
            while heap and heap[0][1] not in calls:
                heappop(heap)
            from_fifo = bool(fifo) and (not heap or fifo[0] <= heap[0])
            if from_fifo:
                when, sid = fifo[0]
            elif heap:
                when, sid = heap[0]
            else:
                return
            if when > due:  # the earliest live deadline is still ahead
                self._arm(when)
                return
            if from_fifo:
                fifo.popleft()
            else:
                heappop(heap)
            self._write(F.rst_stream(sid, F.CANCEL))
            self._finish(calls[sid], None, GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED))

    def _finish(
        self, call: Call, result: UnaryResult | None, error: GatewayError | None, quiet: bool = False
    ) -> None:
        call.done = True
        if call.pending is not None or call.sending:  # the backend answered before the request ended
            call.pending = None
            call.sending = False
            if error is None:
                self._write(F.rst_stream(call.sid, F.NO_ERROR))
        if call.send_waiter is not None and not call.send_waiter.done():
            call.send_waiter.set_result(None)
        if call.unary:
            future = call.future
            if not quiet and future is not None and not future.done():
                if error is None:
                    future.set_result(result)  # type: ignore[arg-type]
                else:
                    future.set_exception(error)
        else:
            call.error = error
            waiter = call.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._calls.pop(call.sid, None) is not None:  # released: a queued call may take the slot
            if self._admission.waiters:
                self._admission.release()
            if self._draining and not self._calls:
                self.close()

    def _reset(self, call: Call, code: int, error: GatewayError) -> None:
        self._write(F.rst_stream(call.sid, code))
        self._finish(call, None, error)

    # ---- writing -----------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is None:
            return
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out = self._out
        if out and self._transport is not None:
            self._transport.write(b"".join(out))
        out.clear()

    def _credit(self, call: Call) -> None:
        used = STREAM_WINDOW - call.recv_window - call.queued
        call.recv_window += used
        self._write(F.window_update(call.sid, used))

    # ---- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        transport.write(_HANDSHAKE)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._transport = None
        self._out.clear()
        why = f"connection lost: {exc}" if exc else "connection closed"
        self._fail_all(unavailable(self.backend, f"{self.address}: {why}"))
        if self._deadline_timer is not None:  # no call is left to expire
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadlines.clear()
        self._early.clear()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_blocked()

    def close(self) -> None:
        """Say GOAWAY and close; calls still open fail with UNAVAILABLE when the socket goes."""
        if self._transport is None:
            return
        self.usable = False
        self._write(F.goaway(0, F.NO_ERROR))
        self._flush()
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return
            data = bytes(buffer)
            buffer.clear()
        # One pass: cut a frame, dispatch it, go on (a read usually holds a call's HEADERS, DATA and
        # trailers). A HEADERS frame carrying a whole, unpadded block goes straight to `_on_block`.
        pos, end = 0, len(data)
        last = end - 9  # the last position a whole frame header fits at
        unpack = _HEAD_UNPACK
        try:
            while pos <= last:
                hi, lo, frame_type, flags, sid = unpack(data, pos)
                if hi or lo > _MAX_FRAME:  # we never raise SETTINGS_MAX_FRAME_SIZE (2**14): `hi` is 0
                    raise F.FrameError(
                        F.FRAME_SIZE_ERROR, f"frame of {hi << 16 | lo} bytes above the {_MAX_FRAME} allowed"
                    )
                start = pos + 9
                stop = start + lo
                if stop > end:
                    break
                payload = data[start:stop]
                pos = stop
                sid &= 0x7FFFFFFF
                if self._cont is not None and frame_type != _CONTINUATION:
                    raise F.FrameError(F.PROTOCOL_ERROR, "header block interrupted")
                if frame_type == _DATA:
                    self._on_data(flags, sid, payload)
                elif frame_type == _HEADERS and flags & _PLAIN_BLOCK == _END_HEADERS:
                    self._on_block(sid, flags, payload)
                elif frame_type == _HEADERS:
                    self._on_headers(flags, sid, payload)
                else:
                    self._on_control(frame_type, flags, sid, payload)
        except F.FrameError as exc:
            self._abort(exc.code, str(exc))
            return
        if pos < end:
            rest = data[pos:]
            buffer += rest
            self._need = 9 + F.frame_length(rest) if len(rest) >= 9 else 9

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        unacked = self._recv_unacked + n
        if unacked >= _CONNECTION_HALF:
            self._write(F.window_update(0, unacked))
            unacked = 0
        self._recv_unacked = unacked
        call = self._calls.get(sid)
        if call is None:
            if sid == 0 or sid >= self._next_id:
                raise F.FrameError(F.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a call we already finished or reset
        if flags & _PADDED:
            payload = F.strip_padding(flags, payload)
        call.recv_window -= n
        if call.unary:
            call.chunks.append(payload)
            size = call.size = call.size + len(payload)
            if size > _MAX_UNARY:
                why = f"received message larger than max ({call.size - 5} vs. {MAX_MESSAGE})"
                self._reset(call, F.CANCEL, GatewayError(_C.RESOURCE_EXHAUSTED, why))
                return
        else:
            try:
                messages = call.reader.feed(payload)  # type: ignore[union-attr]
            except MessageError as exc:
                self._reset(call, F.CANCEL, GatewayError(exc.code, str(exc)))
                return
            if messages:
                call.queue.extend(messages)
                call.queued += sum(len(m) for m in messages) + 5 * len(messages)
                waiter = call.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        if flags & _END_STREAM:
            self._finish(call, None, GatewayError(_C.UNKNOWN, "backend response ended without grpc-status"))
        elif call.recv_window + call.queued <= _CREDIT_AT:
            self._credit(call)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        fragment = F.header_fragment(flags, payload)
        if flags & F.END_HEADERS:
            self._on_block(sid, flags, fragment)
            return
        self._cont = bytearray(fragment)
        self._cont_sid = sid
        self._cont_flags = flags

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or sid != self._cont_sid:
            raise F.FrameError(F.PROTOCOL_ERROR, "CONTINUATION without an open header block")
        cont += payload
        if len(cont) > MAX_HEADER_BLOCK:
            raise F.FrameError(F.ENHANCE_YOUR_CALM, "header block too large")
        if flags & F.END_HEADERS:
            self._cont = None
            self._on_block(sid, self._cont_flags, bytes(cont))

    def _on_block(self, sid: int, flags: int, block: bytes) -> None:
        info = self._known_blocks.get(block)  # `ResponseBlocks.read`'s cache, looked up without a call
        if info is None:
            try:
                info = self._blocks.read(block)
            except HeaderError as exc:
                raise F.FrameError(F.COMPRESSION_ERROR, str(exc)) from None
        call = self._calls.get(sid)
        if call is None:
            return
        if not call.headers_seen:
            call.headers_seen = True
            if flags & _END_STREAM:  # trailers-only response
                result, error = outcome(call, info, True, self.backend)
                self._finish(call, result, error)
            elif info.status != 200 or not info.is_grpc:
                self._reset(call, F.CANCEL, http_error(info, self.backend))
            else:
                call.initial = info.metadata
        elif flags & _END_STREAM:
            chunks = call.chunks
            if info.grpc_status is _OK and call.unary and len(chunks) == 1 and len(data := chunks[0]) >= 5:
                # The common case inline: OK after one DATA frame holding exactly one uncompressed
                # message. `outcome` (through `unary_body`) concludes the same, two calls later.
                flag, length = _PREFIX_UNPACK(data)
                if not flag and length == len(data) - 5:
                    self._finish(call, UnaryResult(data[5:], list(call.initial), list(info.metadata)), None)
                    return
            result, error = outcome(call, info, False, self.backend)
            self._finish(call, result, error)
        else:
            self._reset(
                call, F.PROTOCOL_ERROR, GatewayError(_C.INTERNAL, "backend sent trailers without END_STREAM")
            )

    def _on_control(self, frame_type: int, flags: int, sid: int, payload: bytes) -> None:
        if frame_type == F.CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif frame_type == F.WINDOW_UPDATE:
            increment = F.parse_window_update(payload)
            if sid == 0:
                self._send_window += increment
            elif (call := self._calls.get(sid)) is not None:
                call.send_window += increment
            self._wake_blocked()
        elif frame_type == F.SETTINGS:
            if not flags & F.ACK:
                self._on_settings(payload)
        elif frame_type == F.PING:
            if not flags & F.ACK:
                self._write(F.ping(payload, ack=True))
        elif frame_type == F.RST_STREAM:
            error_code = F.parse_rst_stream(payload)
            if (call := self._calls.get(sid)) is not None:
                self._finish(call, None, reset_error(error_code, not call.headers_seen, self.backend))
        elif frame_type == F.GOAWAY:
            self._on_goaway(*F.parse_goaway(payload))
        elif frame_type == F.PUSH_PROMISE:
            raise F.FrameError(F.PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled")
        # PRIORITY and unknown frame types are ignored (RFC 9113 4.1, 5.5).

    def _on_settings(self, payload: bytes) -> None:
        for key, value in F.parse_settings(payload):
            if key == F.MAX_CONCURRENT_STREAMS:
                self._admission.limit = value
            elif key == F.INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.FrameError(F.FLOW_CONTROL_ERROR, "initial window size too large")
                delta = value - self._peer_window
                self._peer_window = value
                for call in self._calls.values():  # RFC 9113 6.9.2: applies to open streams too
                    call.send_window += delta
            elif key == F.MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.FrameError(F.PROTOCOL_ERROR, f"invalid SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_max_frame = value
            # HEADER_TABLE_SIZE needs nothing: requests never use the dynamic table.
        self._write(F.SETTINGS_ACK)
        if not self.ready.done():
            self.usable = True
            self.ready.set_result(None)
        self._wake_blocked()
        self._admission.release(len(self._admission.waiters))  # a larger limit may admit some

    def _on_goaway(self, last_sid: int, error_code: int, debug: bytes) -> None:
        if error_code != F.NO_ERROR:
            name = F.ERROR_NAMES.get(error_code, error_code)
            text = debug[:200].decode("utf-8", "replace")
            log.warning("backend %s at %s sent GOAWAY %s: %s", self.backend, self.address, name, text)
        self._draining = True
        self.usable = False
        refused = unavailable(
            self.backend, f"{self.address}: connection going away (GOAWAY), call not processed"
        )
        for call in [c for sid, c in self._calls.items() if sid > last_sid]:
            self._finish(call, None, refused)
        self._admission.fail(refused)
        if not self._calls:
            self.close()

    def _wake_blocked(self) -> None:
        blocked, self._blocked = self._blocked, []
        for call in blocked:
            waiter = call.send_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, error: GatewayError) -> None:
        for call in list(self._calls.values()):
            self._finish(call, None, error)
        self._admission.fail(error)
        self._wake_blocked()

    def _abort(self, code: int, why: str) -> None:
        """A connection error (RFC 9113 5.4.1): GOAWAY with `code`, fail every call, close."""
        log.warning("backend %s at %s: HTTP/2 connection error: %s", self.backend, self.address, why)
        self.usable = False
        self._write(F.goaway(0, code, why.encode()[:200]))
        self._flush()
        self._fail_all(GatewayError(_C.INTERNAL, f"backend {self.backend} protocol error: {why}"))
        if self._transport is not None:
            self._transport.close()
