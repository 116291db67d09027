"""One HTTP/2 connection to a gRPC backend: the `asyncio.Protocol` the event loop drives.

`H2Upstream` (h2.py) owns the connections and picks one per call; `H2Connection` is the top of a
stack of layers that are one object: `Caller` (caller.py, the calls the upstream makes), on
`Deadlines` (deadlines.py, one timer per connection), on `Session` (session.py, the open calls,
windows and corked writes). This module is the inbound half of the request path: it owns the
socket's arrival and loss and the bytes that come in. Inbound bytes are cut into frames with one
`struct` per frame header and dispatched by type, in one pass, with the common frames (DATA, a
whole unpadded HEADERS block) handled without a further call; responses end their calls through
`Session._finish`.

Invariants: every header block reaches the one HPACK decoder (`ResponseBlocks`) in arrival order,
even for calls already gone; every DATA byte is credited back to the connection window; a header
block interrupted by any frame but its CONTINUATION is a connection error; a connection error
(`FrameError`) ends the connection with GOAWAY and fails every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from gateway.upstream import UnaryResult
from gateway.upstreams import frames as F
from gateway.upstreams.caller import Caller
from gateway.upstreams.calls import STREAM_WINDOW, http_error, outcome, reset_error, unavailable
from gateway.upstreams.grpc_wire import MAX_MESSAGE, PREFIX, MessageError, ResponseBlocks
from gateway.upstreams.headers import HeaderError
from translators.errors import GatewayError

log = logging.getLogger("portcullis.upstream.h2")
_C = grpc.StatusCode

CONNECTION_WINDOW = 16 * 1024 * 1024  # receive window of the whole connection, topped up at half
MAX_HEADER_BLOCK = 1024 * 1024  # a header block (with CONTINUATIONs) larger than this is an attack
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
# HEADERS flags that need `_on_headers` (more frames to come, padding, priority fields).
_PLAIN_BLOCK = F.END_HEADERS | F.PADDED | F.PRIORITY_FLAG
_HANDSHAKE = (
    F.PREFACE
    + F.settings({F.ENABLE_PUSH: 0, F.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
    + F.window_update(0, CONNECTION_WINDOW - F.DEFAULT_WINDOW)
)


class H2Connection(Caller):
    """A client connection; `usable` turns False for good on GOAWAY, loss, close or exhausted ids."""

    def __init__(
        self, backend: str, address: str, scheme: str, authority: str, on_lost: Callable[[H2Connection], None]
    ) -> None:
        super().__init__(backend, address, scheme, authority)
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._need = 9
        self._blocks = ResponseBlocks()
        self._known_blocks = self._blocks.known
        self._cont: bytearray | None = None  # a header block waiting for CONTINUATION frames
        self._cont_sid = 0
        self._cont_flags = 0

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
        self._stop_deadlines()
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

    # ---- frames in ---------------------------------------------------------------------------------

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
