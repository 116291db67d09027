"""WebSocket passthrough: a client WebSocket proxied as is to a WebSocket backend (`websocket_routes`).

The edge checked the upgrade's Origin and ran `pipeline.on_request` (authentication, rate limits);
this module opens the backend connection with the `websockets` client first, offering the
subprotocols the client asked for that the route allows, and accepts the client with the one the
backend chose, so both ends agree (a backend that refuses is a 503 to the client, before any 101).
Then two pumps and a watchdog race in one TaskGroup (`sockets.race`):
  upward    client frames (text or binary; fragmented messages arrive reassembled) to the backend,
            each passed through `pipeline.on_message` first (a refusal closes both with 1008);
  downward  backend messages to the client;
  watchdog  the idle timeout and the gateway's shutdown (both sides closed with 1001).
Each side's close code and reason are passed to the other (1005 "no status" becomes 1000; a lost
connection, 1006, becomes 1001 towards the backend and 1011 towards the client). Each send waits
for its socket to drain and `websockets` keeps a small receive queue, so a slow side slows the
other. Both sides are pinged (`heartbeat_s`): a half-open connection on either side is found and
both are closed. `max_message_bytes` applies both ways (1009). Open connections per client address
are capped per route (429). Each message passed on is counted, with its size, in the route's
`SocketMeter` (`portcullis_ws_messages_total`, `portcullis_ws_message_bytes`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from gateway.call import Call
from gateway.config import WebSocketRoute
from gateway.handlers.responses import finish_headers
from gateway.handlers.sockets import CLOSE_TIMEOUT_S, SocketHub, SocketMeter, idle_or_stop, payload_size, race
from gateway.runtime import Runtime
from translators.errors import GatewayError
from translators.stream_framing import split_subprotocols

log = logging.getLogger("portcullis.passthrough")
_NO_STATUS = 1005
_ABNORMAL = 1006
_GOING_AWAY = 1001
_POLICY = 1008
_TOO_BIG = 1009
_INTERNAL = 1011


@dataclass(frozen=True, slots=True)
class Closing:
    """Who ended the session and with what: the close to pass on to the other side."""

    by: str  # "client", "backend" or "gateway" (policy, idle, shutdown, size)
    code: int
    reason: str = ""


async def handle(
    request: web.Request, call: Call, runtime: Runtime, route: WebSocketRoute, hub: SocketHub
) -> web.StreamResponse:
    label = call.route or route.path  # "websocket <path>", set by the edge
    stop = hub.enter(label, call.client_ip, route.max_connections_per_client)
    try:
        backend = await _connect(request, call, route)
        try:
            ws = web.WebSocketResponse(
                protocols=(backend.subprotocol,) if backend.subprotocol else (),
                heartbeat=route.heartbeat_s,
                max_msg_size=route.max_message_bytes,
                compress=False,
                timeout=CLOSE_TIMEOUT_S,
            )
            finish_headers(ws, call)
            await ws.prepare(request)
            proxy = _Proxy(ws, backend, call, runtime, hub.meter(label))
            try:
                closing = await race(proxy.upward(), proxy.downward(), proxy.watchdog(route.idle_timeout_s, stop))
            except Exception:
                log.exception("WebSocket passthrough failed (request %s)", call.request_id)
                closing = Closing("gateway", _INTERNAL, "internal gateway error")
            await _close_both(ws, backend, closing)
            call.attributes["ws_messages_in"] = proxy.messages_in
            call.attributes["ws_messages_out"] = proxy.messages_out
            call.attributes["ws_close"] = f"{closing.by} {closing.code}"
            return ws
        finally:
            await backend.close()
    finally:
        hub.leave(stop)


async def _connect(request: web.Request, call: Call, route: WebSocketRoute) -> ClientConnection:
    offered, _ = split_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
    asked = [p for p in offered if p in route.subprotocols]
    headers = [("X-Forwarded-For", call.client_ip), ("X-Request-Id", call.request_id)]
    if request.host:
        headers.append(("X-Forwarded-Host", request.host))
    authorization = call.headers.get("Authorization")
    if authorization and "authorization" not in call.hidden_headers:
        headers.append(("Authorization", authorization))
    try:
        return await connect(
            route.upstream,
            subprotocols=asked or None,  # type: ignore[arg-type]
            additional_headers=headers,
            max_size=route.max_message_bytes,
            open_timeout=route.connect_timeout_s,
            ping_interval=route.heartbeat_s,
            ping_timeout=route.heartbeat_s,
            close_timeout=CLOSE_TIMEOUT_S,
            compression=None,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE, f"WebSocket backend {route.upstream} unavailable: {exc or type(exc).__name__}"
        ) from None


class _Proxy:
    """The two directions of one proxied connection; only the three racing pumps touch it."""

    def __init__(
        self, ws: web.WebSocketResponse, backend: ClientConnection, call: Call, runtime: Runtime, meter: SocketMeter
    ) -> None:
        self.ws = ws
        self.meter = meter
        self.backend = backend
        self.call = call
        self.pipeline = runtime.pipeline
        self.last_active = asyncio.get_running_loop().time()
        self.messages_in = 0
        self.messages_out = 0

    async def upward(self) -> Closing:
        ws, backend, loop = self.ws, self.backend, asyncio.get_running_loop()
        while True:
            frame = await ws.receive()
            self.last_active = loop.time()
            if frame.type is WSMsgType.TEXT or frame.type is WSMsgType.BINARY:
                data = frame.data
            elif frame.type is WSMsgType.CLOSE:
                return Closing("client", int(frame.data), frame.extra or "")
            elif frame.type is WSMsgType.ERROR and ws.close_code == _TOO_BIG:
                return Closing("gateway", _TOO_BIG, "message too big")
            else:  # CLOSING, CLOSED, ERROR: the connection was lost
                return Closing("client", _ABNORMAL)
            try:
                await self.pipeline.on_message(self.call, data)
            except GatewayError as err:
                log.info("request %s: a policy refused a WebSocket message: %s", self.call.request_id, err.message)
                return Closing("gateway", _POLICY, err.message)
            try:
                await backend.send(data)
            except ConnectionClosed as exc:
                return _backend_closed(exc)
            size = payload_size(data)
            self.messages_in += 1
            self.call.bytes_in += size
            self.meter.inbound(size)

    async def downward(self) -> Closing:
        ws, backend, loop = self.ws, self.backend, asyncio.get_running_loop()
        while True:
            try:
                data = await backend.recv()
            except ConnectionClosed as exc:
                return _backend_closed(exc)
            self.last_active = loop.time()
            try:
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                return Closing("client", _ABNORMAL)
            size = payload_size(data)
            self.messages_out += 1
            self.call.bytes_out += size
            self.meter.outbound(size)

    async def watchdog(self, idle_s: float, stop: asyncio.Event) -> Closing:
        if await idle_or_stop(lambda: self.last_active, idle_s, stop):
            return Closing("gateway", _GOING_AWAY, "gateway shutting down")
        return Closing("gateway", _GOING_AWAY, "idle timeout")


def _backend_closed(exc: ConnectionClosed) -> Closing:
    if exc.sent is not None and exc.sent.code == _TOO_BIG:  # websockets refused an oversized message
        return Closing("gateway", _TOO_BIG, "backend message too big")
    if exc.rcvd is None:
        return Closing("backend", _ABNORMAL)
    return Closing("backend", exc.rcvd.code, exc.rcvd.reason)


def _sendable(code: int, lost: int) -> int:
    """A close code that may go on the wire: 1005 becomes 1000, a lost connection `lost`."""
    if code == _NO_STATUS:
        return 1000
    if code == _ABNORMAL or code in (1015,) or not (1000 <= code < 5000):
        return lost
    return code


async def _close_both(ws: web.WebSocketResponse, backend: ClientConnection, closing: Closing) -> None:
    reason = closing.reason.encode()[:123].decode("utf-8", "ignore")
    client_code = _sendable(closing.code, _INTERNAL)
    backend_code = _sendable(closing.code, _GOING_AWAY)
    try:
        await backend.close(backend_code, reason)
    except Exception:  # the backend connection is already gone: nothing to tell it
        log.debug("closing the backend WebSocket failed", exc_info=True)
    if not ws.closed:
        try:
            await ws.close(code=client_code, message=reason.encode())
        except (ConnectionError, RuntimeError):
            pass
