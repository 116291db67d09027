"""Several gRPC streams over one WebSocket (`grpc-ws.mux.json` or `grpc-ws.mux.proto`, docs/websocket.md).

The edge matched `websocket_mux.path`, screened the upgrade (Origin and credentials, against the
global `websocket` settings) and ran `pipeline.on_request` for the socket; this module owns the
socket from the 101 on. A reader and a watchdog race in one TaskGroup (`sockets.race`):
  reader    reads frames (`translators.mux_framing`) and dispatches them by stream id: `open` starts
            a stream, `message` queues a request on it, `control` half-closes or cancels it, `credit`
            lets it send more. A stream's queue is bounded (its method's `inbound_queue`); when it
            is full the reader waits, so a stream whose backend does not keep up slows the whole
            socket's inbound side, as streams on one TCP connection would, unless the stream was
            opened with a `window` (flow control): then the gateway grants the client request
            messages as the backend takes them (`credit` frames, at most `inbound_queue` ahead), a
            message beyond the grant ends that stream (RESOURCE_EXHAUSTED), the reader never
            waits, and response messages go out only while the client's own grants last, so a
            stream the client reads slowly holds back its own backend, not the other streams. A
            frame that breaks the framing or the id rules ends the socket (1007): the client is
            broken, not one of its streams.
  watchdog  the idle timeout and the gateway's shutdown, as for a single-stream socket.
Each stream is a `MuxStream` task in the socket's own TaskGroup, with a `Call` of its own (route =
its method, so the policies' per-method settings apply): `on_request` at open (authentication, rate
limits, scopes), `on_message` for each message (screening), `on_complete` at its end (one access
line and one metrics sample per stream). Responses go out as `{"id": N, "result": ...}` frames
(each send waits for the socket to drain), the end as `{"id": N, "status": ...}`. Whatever ends a
stream (its status, an invalid message, a policy refusal, a cancel, the stream limit) ends that
stream only. When the socket ends, the streams still open are cancelled (their backends see it),
then the socket's last `{"status": ...}` frame and close code follow the single-stream table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping

import grpc
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.config import WebSocketConfig
from gateway.handlers.mux_stream import MuxStream
from gateway.handlers.responses import finish_headers
from gateway.handlers.rest import upstream_metadata
from gateway.handlers.sockets import CLOSE_TIMEOUT_S, SocketHub, idle_or_stop, payload_size, race
from gateway.handlers.websocket import Outcome, finish_socket
from gateway.pipeline import settle
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError
from translators.mux_framing import (
    CANCEL,
    SUBPROTOCOL_MUX,
    SUBPROTOCOL_MUX_PROTO,
    FrameKind,
    MuxFrame,
    binary_credit_frame,
    binary_message_frame,
    binary_status_frame,
    credit_frame,
    parse_binary_frame,
    parse_frame,
    result_frame,
)
from translators.mux_framing import status_frame as stream_status_frame
from translators.response import render
from translators.routes import Binding
from translators.status import render_status
from translators.stream_framing import Ending, split_subprotocols

log = logging.getLogger("portcullis.websocket")
_C = grpc.StatusCode


class _ClientGone(Exception):
    """The socket is closed or lost: nothing more can be sent on it."""


class MuxSocket:
    """One multiplexed WebSocket: its streams by id and the pumps that serve them."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, call: Call, runtime: Runtime,
        upstreams: Mapping[str, Upstream], hub: SocketHub, max_streams: int, binary: bool = False,
    ) -> None:
        self.binary = binary  # grpc-ws.mux.proto: binary frames, protobuf messages
        self._kind = WSMsgType.BINARY if binary else WSMsgType.TEXT
        self.request = request
        self.ws = ws
        self.call = call
        self.runtime = runtime
        self.upstreams = upstreams
        self.hub = hub
        self.max_streams = max_streams
        self.config: WebSocketConfig = runtime.config.websocket
        self.streams: dict[int, MuxStream] = {}
        self.highest = 0  # the largest id opened so far: a new stream's id must be larger
        self.opened = 0
        self.last_active = asyncio.get_running_loop().time()
        self._group: asyncio.TaskGroup | None = None

    async def run(self, stop: asyncio.Event) -> Outcome:
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                return await race(self.reader(), self.watchdog(stop))
            finally:
                for stream in list(self.streams.values()):
                    stream.fail(None)

    # ---- client to gateway ------------------------------------------------------------------------

    async def reader(self) -> Outcome:
        ws, loop = self.ws, asyncio.get_running_loop()
        while True:
            frame = await ws.receive()
            self.last_active = loop.time()
            kind = frame.type
            if kind is self._kind:
                try:
                    parsed = parse_binary_frame(frame.data) if self.binary else parse_frame(frame.data)
                    failure = await self._dispatch(parsed, payload_size(frame.data))
                except GatewayError as err:
                    return Outcome(Ending.INVALID_FRAME, err)
                except _ClientGone:
                    return Outcome(Ending.STATUS, GatewayError(_C.CANCELLED, "client went away"), client_gone=True)
                if failure is not None:
                    return failure
            elif kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
                wrong = f"{SUBPROTOCOL_MUX_PROTO} carries binary" if self.binary else f"{SUBPROTOCOL_MUX} carries text"
                return Outcome(Ending.UNSUPPORTED_FRAME, _invalid(f"{wrong} frames only"))
            elif kind is WSMsgType.ERROR and ws.close_code == 1009:
                return Outcome(Ending.TOO_BIG, GatewayError(_C.RESOURCE_EXHAUSTED, "frame too large"), client_gone=True)
            else:  # CLOSE, CLOSING, CLOSED, ERROR: the client is gone, every stream is cancelled
                return Outcome(Ending.STATUS, GatewayError(_C.CANCELLED, "client closed the WebSocket"), True)

    async def _dispatch(self, frame: MuxFrame, size: int) -> Outcome | None:
        sid = frame.stream_id
        if frame.kind is FrameKind.OPEN:
            if sid <= self.highest:
                return Outcome(Ending.INVALID_FRAME, _invalid(f"stream id {sid} is not above {self.highest}"))
            self.highest = sid
            await self._open(sid, frame.method, frame.window)
            return None
        stream = self.streams.get(sid)
        if stream is None:
            if sid <= self.highest:
                return None  # the stream ended already (its status may be on its way): drop the late frame
            return Outcome(Ending.INVALID_FRAME, _invalid(f"stream {sid} was never opened"))
        if frame.kind is FrameKind.MESSAGE:
            if stream.half_closed:
                stream.fail(_invalid("a message after half-close"))
                return None
            await stream.put(frame.body, size)
        elif frame.kind is FrameKind.CREDIT:
            stream.add_credit(frame.credit)
        elif frame.control == CANCEL:
            stream.fail(GatewayError(_C.CANCELLED, "cancelled by the client"))
        else:
            await stream.half_close()
        return None

    async def _open(self, sid: int, method: str, window: int = 0) -> None:
        parent = self.call
        call = Call(
            request_id=f"{parent.request_id}.{sid}", method=parent.method, path=method,
            client_ip=parent.client_ip, headers=parent.headers, query=parent.query,
        )
        call.attributes["ws_mux"] = parent.request_id
        try:
            binding = self.runtime.routes.match_rpc(method)
            call.route, call.service = binding.name, binding.service
            settings = self.runtime.settings[binding.name]
            call.upstream = settings.backend
            self._admit(binding, settings.websocket)
        except GatewayError as err:
            call.error, call.grpc_code, call.status = err, err.code.name, 101
            try:
                await self.send(self.status_frame(sid, err))
            finally:
                await settle(self.runtime.pipeline.on_complete(call))
            return
        stream = MuxStream(
            sid, call, binding, settings, self.runtime.pipeline, self.hub.meter(binding.name),
            window=window, binary=self.binary, grant=self.grant,
        )
        self.streams[sid] = stream
        self.opened += 1
        assert self._group is not None
        stream.task = self._group.create_task(self._serve(stream))
        if stream.flow:  # the client may send this many request messages
            await self.grant(sid, stream.recv_credit)

    async def grant(self, sid: int, count: int) -> None:
        """Grant stream `sid` `count` more request messages (flow control)."""
        try:
            await self.send(binary_credit_frame(sid, count) if self.binary else credit_frame(sid, count))
        except _ClientGone:
            pass  # the reader sees the socket end

    def status_frame(self, sid: int, error: GatewayError | None) -> bytes:
        """Stream `sid`'s last frame: its status, OK when `error` is None."""
        code = error.code if error is not None else _C.OK
        message = error.message if error is not None else ""
        details = list(error.details) if error is not None else []
        if self.binary:
            return binary_status_frame(sid, code, message, details)
        return stream_status_frame(sid, render_status(code, message, details))

    def _admit(self, binding: Binding, cfg: WebSocketConfig) -> None:
        if not (binding.client_streaming or binding.server_streaming):
            raise GatewayError(_C.UNIMPLEMENTED, f"{binding.rpc_path} is a unary method: call it over HTTP")
        if not cfg.enabled:
            raise GatewayError(_C.UNIMPLEMENTED, f"{binding.rpc_path} is not served over WebSocket")
        origin = self.request.headers.get("Origin")
        if origin is not None and origin.lower() not in cfg.allowed_origins:
            raise GatewayError(_C.PERMISSION_DENIED, f"origin {origin!r} may not open {binding.rpc_path}")
        if len(self.streams) >= self.max_streams:
            raise GatewayError(_C.RESOURCE_EXHAUSTED, f"at most {self.max_streams} streams open on one WebSocket")

    # ---- one stream ------------------------------------------------------------------------------

    async def _serve(self, stream: MuxStream) -> None:
        call, pipeline = stream.call, self.runtime.pipeline
        stream.started = True
        error: GatewayError | None = None
        tell = True  # send the stream's status frame (not when the socket is gone or ending)
        try:
            try:
                if stream.stopping:  # ended before its task ran
                    raise asyncio.CancelledError
                await settle(pipeline.on_request(call))
                upstream = self.upstreams[call.upstream or ""]
                await self._call(stream, upstream, upstream_metadata(self.request, call, self.runtime))
            except GatewayError as err:
                error = err
            except _ClientGone:
                error, tell = GatewayError(_C.CANCELLED, "client went away"), False
            except asyncio.CancelledError:
                error, tell = stream.failure, True
                if error is None:  # the socket is ending: its own last frame says why
                    call.error, call.grpc_code = GatewayError(_C.CANCELLED, "the WebSocket closed"), _C.CANCELLED.name
                    raise
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()  # a cancel from the client ends this stream, not the socket
            except Exception:  # a bug: it ends this stream, not the socket
                log.exception("multiplexed stream failed (request %s)", call.request_id)
                error = GatewayError(_C.INTERNAL, "internal gateway error")
            stream.ended.set()
            code = error.code if error is not None else _C.OK
            call.error, call.grpc_code = error, code.name
            if tell:
                try:
                    await self.send(self.status_frame(stream.id, error))
                except _ClientGone:
                    pass
        finally:
            stream.ended.set()
            self.streams.pop(stream.id, None)
            call.status = 101
            call.attributes["ws_messages_in"] = stream.messages_in
            call.attributes["ws_messages_out"] = stream.messages_out
            await settle(pipeline.on_complete(call))

    async def _call(self, stream: MuxStream, upstream: Upstream, metadata: list[tuple[str, str | bytes]]) -> None:
        binding = stream.binding
        timeout = stream.settings.websocket.max_duration_s
        path = binding.rpc_path
        if binding.client_streaming and binding.server_streaming:
            await self._relay(stream, upstream.bidi(path, stream.requests(), metadata, timeout))
        elif binding.client_streaming:
            result = await upstream.client_stream(path, stream.requests(), metadata, timeout)
            await self._send_result(stream, result.body)
        else:
            first = await stream.queue.get()  # None: half-closed without a message, the default request
            request = await stream.screen(first) if first is not None else b""
            await self._relay(stream, upstream.server_stream(path, request, metadata, timeout))

    async def _relay(self, stream: MuxStream, responses: AsyncGenerator[bytes, None]) -> None:
        try:
            async for raw in responses:
                await self._send_result(stream, raw)
        finally:
            await responses.aclose()

    async def _send_result(self, stream: MuxStream, raw: bytes) -> None:
        await stream.spend_credit()
        if self.binary:  # passed on as the backend serialized it
            frame = binary_message_frame(stream.id, raw)
        else:
            binding = stream.binding
            try:
                message = binding.response_class.FromString(raw)
            except DecodeError:
                raise GatewayError(_C.INTERNAL, "backend sent a message that does not decode") from None
            frame = result_frame(stream.id, render(binding.response, message))
        await self.send(frame)
        stream.messages_out += 1
        stream.call.bytes_out += len(frame)
        stream.meter.outbound(len(frame))

    async def send(self, frame: bytes) -> None:
        """One frame (binary in grpc-ws.mux.proto, else text); frames of different streams never
        interleave (each is written whole)."""
        try:
            await self.ws.send_frame(frame, self._kind)
        except (ConnectionError, RuntimeError):
            raise _ClientGone from None
        self.last_active = asyncio.get_running_loop().time()

    async def watchdog(self, stop: asyncio.Event) -> Outcome:
        idle = self.config.idle_timeout_s
        if await idle_or_stop(lambda: self.last_active, idle, stop):
            return Outcome(Ending.SHUTDOWN, GatewayError(_C.UNAVAILABLE, "the gateway is shutting down"))
        return Outcome(Ending.IDLE, GatewayError(_C.DEADLINE_EXCEEDED, f"no frame for {idle:g}s"))


def _invalid(message: str) -> GatewayError:
    return GatewayError(_C.INVALID_ARGUMENT, message)


async def handle(
    request: web.Request, call: Call, runtime: Runtime, upstreams: Mapping[str, Upstream], hub: SocketHub
) -> web.StreamResponse:
    offered, _ = split_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
    chosen = next((p for p in offered if p in (SUBPROTOCOL_MUX, SUBPROTOCOL_MUX_PROTO)), None)
    if chosen is None:
        raise _invalid(f"a multiplexed WebSocket needs the {SUBPROTOCOL_MUX} or {SUBPROTOCOL_MUX_PROTO} subprotocol")
    mux, cfg = runtime.config.websocket_mux, runtime.config.websocket
    route = call.route or f"mux {mux.path}"
    stop = hub.enter(route, call.client_ip)
    try:
        ws = web.WebSocketResponse(
            protocols=(chosen,), heartbeat=cfg.heartbeat_s, max_msg_size=cfg.max_message_bytes,
            compress=False, timeout=CLOSE_TIMEOUT_S,
        )
        finish_headers(ws, call)
        await ws.prepare(request)
        binary = chosen == SUBPROTOCOL_MUX_PROTO
        socket = MuxSocket(request, ws, call, runtime, upstreams, hub, mux.max_streams, binary)
        try:
            outcome = await socket.run(stop)
        except Exception:  # a bug: the 101 went out, so the error can only be a status frame
            log.exception("multiplexed WebSocket failed (request %s)", call.request_id)
            outcome = Outcome(Ending.STATUS, GatewayError(_C.INTERNAL, "internal gateway error"))
        call.attributes["ws_streams"] = socket.opened
        await finish_socket(ws, call, outcome)
        return ws
    finally:
        hub.leave(stop)

