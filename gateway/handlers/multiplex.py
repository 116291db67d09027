"""Several gRPC streams over one WebSocket (`grpc-ws.mux.json`, docs/websocket.md): the socket and its streams.

The edge matched `websocket_mux.path`, screened the upgrade (Origin and credentials, against the
global `websocket` settings) and ran `pipeline.on_request` for the socket; this module owns the
socket from the 101 on. A reader and a watchdog race in one TaskGroup (`sockets.race`):
  reader    reads frames (`translators.mux_framing`) and dispatches them by stream id: `open` starts
            a stream, `message` queues a request on it, `control` half-closes or cancels it. A
            stream's queue is bounded (its method's `inbound_queue`); when it is full the reader
            waits, so a stream whose backend does not keep up slows the whole socket's inbound side,
            as streams on one TCP connection would. A frame that breaks the framing or the id rules
            ends the socket (1007): the client is broken, not one of its streams.
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
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import grpc
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.config import WebSocketConfig
from gateway.handlers.responses import finish_headers
from gateway.handlers.rest import upstream_metadata
from gateway.handlers.sockets import CLOSE_TIMEOUT_S, SocketHub, SocketMeter, idle_or_stop, payload_size, race
from gateway.handlers.websocket import Outcome, finish_socket
from gateway.pipeline import Pipeline
from gateway.runtime import RouteSettings, Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError
from translators.mux_framing import CANCEL, SUBPROTOCOL_MUX, FrameKind, MuxFrame, parse_frame, result_frame
from translators.mux_framing import status_frame as stream_status_frame
from translators.request import build_request, make_plan
from translators.response import render
from translators.routes import Binding
from translators.status import render_status
from translators.stream_framing import Ending, split_subprotocols

log = logging.getLogger("portcullis.websocket")
_C = grpc.StatusCode
_JSON = "application/json"


class _ClientGone(Exception):
    """The socket is closed or lost: nothing more can be sent on it."""


class MuxStream:
    """One gRPC call on a multiplexed socket; the reader feeds it, its own task runs it."""

    def __init__(
        self, stream_id: int, call: Call, binding: Binding, settings: RouteSettings, pipeline: Pipeline,
        meter: SocketMeter,
    ) -> None:
        self.id = stream_id
        self.call = call
        self.binding = binding
        self.settings = settings
        self.pipeline = pipeline
        self.meter = meter
        plan = binding.request  # a frame's message is a whole request message, whatever the body rule
        self.plan = plan if plan.body == "*" else make_plan(plan.message_class, plan.path_fields, "*", plan.options)
        # (message JSON, frame size), None at half-close
        self.queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(settings.websocket.inbound_queue)
        self.half_closed = False
        self.ended = asyncio.Event()  # the call is over: nothing is taken from the queue any more
        self.started = False  # its task began (a task cancelled before its first step runs no code)
        self.stopping = False  # the reader or the socket ended it early
        self.failure: GatewayError | None = None  # why, sent as its status (None: the socket is ending)
        self.task: asyncio.Task[None] | None = None
        self.messages_in = 0
        self.messages_out = 0

    async def put(self, body: bytes, size: int) -> None:
        await self._enqueue((body, size))
        if not self.binding.client_streaming:  # a server-streaming method takes one message
            await self.half_close()

    async def half_close(self) -> None:
        if not self.half_closed:
            self.half_closed = True
            await self._enqueue(None)

    async def _enqueue(self, item: tuple[bytes, int] | None) -> None:
        """Queue for the backend, waiting while the queue is full (backpressure) unless the call ends."""
        if self.ended.is_set():
            return
        try:
            self.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.queue.put(item))
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait((put, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            ended.cancel()

    def fail(self, error: GatewayError | None) -> None:
        """End the call early: for `error` (sent as the stream's status), or silently (None: the socket is ending)."""
        if self.ended.is_set() or self.stopping:
            return
        self.stopping, self.failure = True, error
        if self.started and self.task is not None:
            self.task.cancel()

    async def screen(self, item: tuple[bytes, int]) -> bytes:
        """One request message from its JSON, passed through the policies, counted, serialized."""
        raw, size = item
        message = build_request(self.plan, {}, (), _JSON, raw)
        try:
            await self.pipeline.on_message(self.call, message)
        except GatewayError as err:
            log.info("request %s: a policy refused a WebSocket message: %s", self.call.request_id, err.message)
            raise
        self.messages_in += 1
        self.call.bytes_in += size
        self.meter.inbound(size)
        return message.SerializeToString()

    async def requests(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            yield await self.screen(item)


class MuxSocket:
    """One multiplexed WebSocket: its streams by id and the pumps that serve them."""

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, call: Call, runtime: Runtime,
        upstreams: Mapping[str, Upstream], hub: SocketHub, max_streams: int,
    ) -> None:
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
            if kind is WSMsgType.TEXT:
                try:
                    parsed = parse_frame(frame.data)
                    failure = await self._dispatch(parsed, payload_size(frame.data))
                except GatewayError as err:
                    return Outcome(Ending.INVALID_FRAME, err)
                except _ClientGone:
                    return Outcome(Ending.STATUS, GatewayError(_C.CANCELLED, "client went away"), client_gone=True)
                if failure is not None:
                    return failure
            elif kind is WSMsgType.BINARY:
                return Outcome(Ending.UNSUPPORTED_FRAME, _invalid(f"{SUBPROTOCOL_MUX} carries text frames only"))
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
            await self._open(sid, frame.method)
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
        elif frame.control == CANCEL:
            stream.fail(GatewayError(_C.CANCELLED, "cancelled by the client"))
        else:
            await stream.half_close()
        return None

    async def _open(self, sid: int, method: str) -> None:
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
                await self.send(stream_status_frame(sid, render_status(err.code, err.message, list(err.details))))
            finally:
                await self.runtime.pipeline.on_complete(call)
            return
        stream = MuxStream(sid, call, binding, settings, self.runtime.pipeline, self.hub.meter(binding.name))
        self.streams[sid] = stream
        self.opened += 1
        assert self._group is not None
        stream.task = self._group.create_task(self._serve(stream))

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
                await pipeline.on_request(call)
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
                status = render_status(code, error.message if error else "", list(error.details) if error else [])
                try:
                    await self.send(stream_status_frame(stream.id, status))
                except _ClientGone:
                    pass
        finally:
            stream.ended.set()
            self.streams.pop(stream.id, None)
            call.status = 101
            call.attributes["ws_messages_in"] = stream.messages_in
            call.attributes["ws_messages_out"] = stream.messages_out
            await pipeline.on_complete(call)

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
        """One text frame; frames of different streams never interleave (each is written whole)."""
        try:
            await self.ws.send_frame(frame, WSMsgType.TEXT)
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
    if SUBPROTOCOL_MUX not in offered:
        raise _invalid(f"a multiplexed WebSocket needs the {SUBPROTOCOL_MUX} subprotocol")
    mux, cfg = runtime.config.websocket_mux, runtime.config.websocket
    route = call.route or f"mux {mux.path}"
    stop = hub.enter(route, call.client_ip)
    try:
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL_MUX,), heartbeat=cfg.heartbeat_s, max_msg_size=cfg.max_message_bytes,
            compress=False, timeout=CLOSE_TIMEOUT_S,
        )
        finish_headers(ws, call)
        await ws.prepare(request)
        socket = MuxSocket(request, ws, call, runtime, upstreams, hub, mux.max_streams)
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

