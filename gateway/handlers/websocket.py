"""gRPC streams over WebSocket: one upgrade, one call, each message a frame (docs/websocket.md).

The edge matched the streaming method (`RouteTable.match_websocket`), screened the upgrade
(`sockets.screen_upgrade`: Origin, credentials) and ran `pipeline.on_request`; this module owns the
socket from the 101 on. Three pumps race in one TaskGroup (`sockets.race`), and whichever ends
first ends the session:
  inbound   reads frames: a text frame is one JSON request message (`grpc-ws.json`, the default),
            a binary frame one protobuf message (`grpc-ws.proto`); each is translated, screened by
            `pipeline.on_message`, and queued for the backend (a bounded queue: when it is full the
            gateway stops reading the socket, so a fast client is slowed down to the backend's pace).
            `{"@control": "half_close"}` ends the request side; a close or a lost connection cancels.
  outbound  runs the gRPC call and writes each response message as one frame; `send_frame` waits
            for the socket to drain and the h2 client credits the backend only as messages are
            taken, so a slow client slows the backend.
  watchdog  ends an idle session (nothing either way for `idle_timeout_s`) and obeys the hub's
            shutdown signal.
Each message passed on either way is counted, with its size, in the method's `SocketMeter`.
Then the final status goes out as a last `{"status": ...}` frame and the socket closes with the code
`translators.stream_framing.close_code` gives. aiohttp's heartbeat pings the client and closes a
socket whose pong does not come (a half-open connection); oversized frames are refused by aiohttp's
reader with 1009 before they are buffered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.handlers.responses import finish_headers
from gateway.handlers.rest import upstream_metadata
from gateway.handlers.sockets import CLOSE_TIMEOUT_S, SocketHub, SocketMeter, idle_or_stop, race
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError
from translators.request import build_request, make_plan
from translators.response import render
from translators.routes import Binding
from translators.status import render_status
from translators.stream_framing import (
    HALF_CLOSE,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_PROTO,
    Ending,
    close_code,
    control_of,
    result_frame,
    split_subprotocols,
    status_frame,
)

log = logging.getLogger("portcullis.websocket")
_C = grpc.StatusCode
_JSON = "application/json"


@dataclass(slots=True)
class Outcome:
    ending: Ending
    error: GatewayError | None = None  # None: the call ended OK (or the client went away)
    client_gone: bool = False


class _ClientGone(Exception):
    """The client closed the socket or its connection was lost: nothing more can be sent."""


class Session:
    """One WebSocket carrying one gRPC call; only its three pumps touch it."""

    def __init__(
        self, ws: web.WebSocketResponse, call: Call, runtime: Runtime, binding: Binding,
        variables: dict[str, str], binary: bool, meter: SocketMeter,
    ) -> None:
        self.ws = ws
        self.meter = meter
        self.call = call
        self.runtime = runtime
        self.binding = binding
        self.variables = variables
        self.binary = binary
        self.config = runtime.settings[binding.name].websocket
        # A frame is a whole request message, whatever body the binding maps for plain HTTP.
        plan = binding.request
        self.plan = plan if plan.body == "*" else make_plan(plan.message_class, plan.path_fields, "*", plan.options)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.config.inbound_queue)
        self.last_active = asyncio.get_running_loop().time()
        self.messages_in = 0
        self.messages_out = 0

    async def run(self, upstream: Upstream, metadata: list[tuple[str, str | bytes]], stop: asyncio.Event) -> Outcome:
        return await race(self.inbound(), self.outbound(upstream, metadata), self.watchdog(stop))

    # ---- client to backend ------------------------------------------------------------------------

    async def inbound(self) -> Outcome:
        ws, binding = self.ws, self.binding
        single = not binding.client_streaming  # a server-streaming method takes one request message
        half_closed = False
        loop = asyncio.get_running_loop()
        while True:
            frame = await ws.receive()
            self.last_active = loop.time()
            kind = frame.type
            if kind is WSMsgType.TEXT:
                try:
                    control = control_of(frame.data)
                except GatewayError as err:
                    return Outcome(Ending.INVALID_FRAME, err)
                if control is not None:
                    if control != HALF_CLOSE:
                        return Outcome(Ending.INVALID_FRAME, _invalid(f"unknown control {control!r}"))
                    if not half_closed:
                        half_closed = True
                        await self.queue.put(None)
                    continue
                if self.binary:
                    return Outcome(Ending.UNSUPPORTED_FRAME, _invalid("grpc-ws.proto carries messages in binary frames"))
                data = frame.data.encode()
            elif kind is WSMsgType.BINARY:
                if not self.binary:
                    return Outcome(Ending.UNSUPPORTED_FRAME, _invalid("binary frames need the grpc-ws.proto subprotocol"))
                data = frame.data
            elif kind is WSMsgType.ERROR and ws.close_code == 1009:
                return Outcome(Ending.TOO_BIG, GatewayError(_C.RESOURCE_EXHAUSTED, "frame too large"), client_gone=True)
            else:  # CLOSE, CLOSING, CLOSED, ERROR: the client is gone, the call is cancelled
                return Outcome(Ending.STATUS, GatewayError(_C.CANCELLED, "client closed the WebSocket"), True)
            if half_closed:
                return Outcome(Ending.UNSUPPORTED_FRAME, _invalid("a message after half-close"))
            try:
                serialized = await self._screen(data)
            except _Refused as refused:
                return refused.outcome
            self.messages_in += 1
            self.call.bytes_in += len(data)
            self.meter.inbound(len(data))
            await self.queue.put(serialized)
            if single:
                half_closed = True
                await self.queue.put(None)

    async def _screen(self, data: bytes) -> bytes:
        """The message of one frame, translated and passed through the policies, serialized."""
        plan = self.plan
        try:
            if self.binary:
                message = plan.message_class.FromString(data)
            else:
                message = build_request(plan, self.variables, (), _JSON, data)
        except DecodeError:
            raise _Refused(Outcome(Ending.INVALID_FRAME, _invalid("a binary frame that is not the request message"))) from None
        except GatewayError as err:
            raise _Refused(Outcome(Ending.INVALID_FRAME, err)) from None
        try:
            await self.runtime.pipeline.on_message(self.call, message)
        except GatewayError as err:
            log.info("request %s: a policy refused a WebSocket message: %s", self.call.request_id, err.message)
            raise _Refused(Outcome(Ending.POLICY, err)) from None
        return data if self.binary else message.SerializeToString()

    async def requests(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            yield item

    # ---- backend to client ------------------------------------------------------------------------

    async def outbound(self, upstream: Upstream, metadata: list[tuple[str, str | bytes]]) -> Outcome:
        binding = self.binding
        timeout = self.config.max_duration_s
        path = binding.rpc_path
        try:
            if binding.client_streaming and binding.server_streaming:
                await self._relay(upstream.bidi(path, self.requests(), metadata, timeout))
            elif binding.client_streaming:
                result = await upstream.client_stream(path, self.requests(), metadata, timeout)
                await self._send(result.body)
            else:
                first = await self.queue.get()  # None: half-closed without a message, the default request
                await self._relay(upstream.server_stream(path, first or b"", metadata, timeout))
        except GatewayError as err:
            return Outcome(Ending.STATUS, err)
        except _ClientGone:
            return Outcome(Ending.STATUS, GatewayError(_C.CANCELLED, "client went away"), client_gone=True)
        return Outcome(Ending.STATUS)

    async def _relay(self, stream: AsyncGenerator[bytes, None]) -> None:
        try:
            async for raw in stream:
                await self._send(raw)
        finally:
            await stream.aclose()

    async def _send(self, raw: bytes) -> None:
        binding = self.binding
        if self.binary:
            frame, opcode = raw, WSMsgType.BINARY
        else:
            try:
                message = binding.response_class.FromString(raw)
            except DecodeError:
                raise GatewayError(_C.INTERNAL, "backend sent a message that does not decode") from None
            frame, opcode = result_frame(render(binding.response, message)), WSMsgType.TEXT
        try:
            await self.ws.send_frame(frame, opcode)
        except (ConnectionError, RuntimeError):
            raise _ClientGone from None
        self.last_active = asyncio.get_running_loop().time()
        self.messages_out += 1
        self.call.bytes_out += len(frame)
        self.meter.outbound(len(frame))

    async def watchdog(self, stop: asyncio.Event) -> Outcome:
        idle = self.config.idle_timeout_s
        if await idle_or_stop(lambda: self.last_active, idle, stop):
            return Outcome(Ending.SHUTDOWN, GatewayError(_C.UNAVAILABLE, "the gateway is shutting down"))
        return Outcome(Ending.IDLE, GatewayError(_C.DEADLINE_EXCEEDED, f"no message for {idle:g}s"))


class _Refused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.ending.value)
        self.outcome = outcome


def _invalid(message: str) -> GatewayError:
    return GatewayError(_C.INVALID_ARGUMENT, message)


def choose_subprotocol(header: str | None) -> str | None:
    offered, _ = split_subprotocols(header)
    for name in (SUBPROTOCOL_PROTO, SUBPROTOCOL_JSON):
        if name in offered:
            return name
    return None


async def handle(
    request: web.Request, call: Call, runtime: Runtime, upstream: Upstream, binding: Binding,
    variables: dict[str, str], hub: SocketHub,
) -> web.StreamResponse:
    cfg = runtime.settings[binding.name].websocket
    protocol = choose_subprotocol(request.headers.get("Sec-WebSocket-Protocol"))
    stop = hub.enter(binding.name, call.client_ip)
    try:
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            heartbeat=cfg.heartbeat_s,
            max_msg_size=cfg.max_message_bytes,
            compress=False,  # a deflate context per socket costs more memory than small frames save
            timeout=CLOSE_TIMEOUT_S,
        )
        finish_headers(ws, call)
        await ws.prepare(request)
        metadata = upstream_metadata(request, call, runtime)
        session = Session(
            ws, call, runtime, binding, variables, protocol == SUBPROTOCOL_PROTO, hub.meter(binding.name)
        )
        try:
            outcome = await session.run(upstream, metadata, stop)
        except Exception:  # a bug: the 101 went out, so the error can only be a status frame
            log.exception("WebSocket session failed (request %s)", call.request_id)
            outcome = Outcome(Ending.STATUS, GatewayError(_C.INTERNAL, "internal gateway error"))
        await _finish(session, outcome)
        return ws
    finally:
        hub.leave(stop)


async def _finish(session: Session, outcome: Outcome) -> None:
    session.call.attributes["ws_messages_in"] = session.messages_in
    session.call.attributes["ws_messages_out"] = session.messages_out
    await finish_socket(session.ws, session.call, outcome)


async def finish_socket(ws: web.WebSocketResponse, call: Call, outcome: Outcome) -> None:
    """End a socket the documented way: record the outcome, send the final status frame, close with
    its code. Shared by plain and multiplexed sockets."""
    error = outcome.error
    code = error.code if error is not None else _C.OK
    call.error, call.grpc_code = error, code.name
    if outcome.client_gone or ws.closed:
        if not ws.closed:
            await ws.close(code=close_code(outcome.ending, code))
        return
    status = render_status(code, error.message if error else "", list(error.details) if error else [])
    try:
        await ws.send_frame(status_frame(status), WSMsgType.TEXT)
        await ws.close(code=close_code(outcome.ending, code), message=code.name.encode()[:123])
    except (ConnectionError, RuntimeError):
        pass  # the client left while we said goodbye
