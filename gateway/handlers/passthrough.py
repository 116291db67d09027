"""WebSocket passthrough: a client WebSocket proxied as is to a WebSocket backend (`websocket_routes`).

The edge checked the upgrade's Origin and ran `pipeline.on_request` (authentication, rate limits).
This module checks the client's handshake, then opens the backend connection and runs its opening
handshake with the `websockets` library's client protocol (sans-I/O `ClientProtocol`: the request,
its key and the validation of the answer, subprotocol negotiation included), offering the
subprotocols the client asked for that the route allows; it then accepts the client with the one the
backend chose, so both ends agree (a backend that is down or refuses is a 503 to the client, before
any 101). No extension is negotiated on either side (no compression).

After both handshakes the two TCP connections are joined by `frame_relay.Relay`, which passes frames
on as bytes with only their headers parsed (see its docstring: limits, close codes and reasons
both ways, ping/pong, half-open detection, idle timeout, backpressure). The relay takes both
connections from their protocols: the backend's from the handshake protocol here, the client's from
aiohttp (after the 101 was written through it), whose protocol then only hears of the connection's
loss, so that the server forgets it as any other. Messages pass the policies'
`on_message` only when a policy has one (screening): the relay then unmasks and holds each inbound
message until it is allowed (a refusal closes both sides with 1008). Open connections per client
address are capped per route (429). Each message passed on is counted, with its size, in the route's
`SocketMeter` (`portcullis_ws_messages_total`, `portcullis_ws_message_bytes`).

Why not the `websockets` connection object for the backend leg: relaying through it (and through
aiohttp's `WebSocketResponse` on the client leg) costs a reassembled message, a future and a task
wake-up per message on each leg, which measured at about 60 us of gateway CPU per round trip; frames
passed on as bytes cost a few. See docs/websocket.md (How: frames relayed as bytes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from typing import cast

import grpc
from aiohttp import web
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri
from websockets.utils import accept_key

from gateway.call import Call
from gateway.config import WebSocketRoute
from gateway.handlers.frame_relay import Relay
from gateway.handlers.relay_peer import Closing
from gateway.handlers.responses import finish_headers
from gateway.handlers.sockets import CLOSE_TIMEOUT_S, SocketHub, race
from gateway.runtime import Runtime
from translators.errors import GatewayError
from translators.stream_framing import split_subprotocols

log = logging.getLogger("portcullis.passthrough")
_MAX_HANDSHAKE_BYTES = 64 * 1024


async def handle(
    request: web.Request, call: Call, runtime: Runtime, route: WebSocketRoute, hub: SocketHub
) -> web.StreamResponse:
    label = call.route or route.path  # "websocket <path>", set by the edge
    accept = _client_accept(request)
    stop = hub.enter(label, call.client_ip, route.max_connections_per_client)
    try:
        backend = await _connect(request, call, route)
        try:
            response = web.StreamResponse(status=101)
            response.headers.update(
                {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept}
            )
            if backend.subprotocol:
                response.headers["Sec-WebSocket-Protocol"] = backend.subprotocol
            finish_headers(response, call)
            response.force_close()
            writer = await response.prepare(request)
            client = request.transport
            if client is None or client.is_closing() or writer is None:
                return response
            pipeline = runtime.pipeline
            screening = pipeline.inspects_messages

            async def screen(message: str | bytes) -> None:
                await pipeline.on_message(call, message)

            relay = Relay(
                cast(asyncio.Transport, client),
                backend.transport,
                max_size=route.max_message_bytes,
                idle_s=route.idle_timeout_s,
                heartbeat_s=route.heartbeat_s,
                close_timeout_s=CLOSE_TIMEOUT_S,
                screen=screen if screening else None,
                meter=hub.meter(label),
                request_id=call.request_id,
            )
            backend.protocol.hand_over(relay)
            # The client's connection leaves aiohttp: its protocol (behind the listener's guard) only
            # hears of the loss; bytes that came after the upgrade request, which aiohttp kept, go
            # first (its payload-parser hook gives them at once).
            relay.take(relay.client, forward_loss=True)
            request.protocol.set_parser(_EarlyBytes(relay))  # type: ignore[arg-type]
            tasks = [_ended(relay), _stopping(relay, stop)]
            if screening:
                tasks.append(relay.screener())
            try:
                closing = await race(*tasks)
            except Exception:
                log.exception("WebSocket passthrough failed (request %s)", call.request_id)
                closing = Closing("gateway", 1011, "internal gateway error")
            call.bytes_in, call.bytes_out = relay.up.total, relay.down.total
            call.attributes["ws_messages_in"] = relay.up.messages
            call.attributes["ws_messages_out"] = relay.down.messages
            call.attributes["ws_close"] = f"{closing.by} {closing.code}"
            return response
        finally:
            if not backend.transport.is_closing():
                backend.transport.abort()
    finally:
        hub.leave(stop)


async def _ended(relay: Relay) -> Closing:
    return await relay.done


async def _stopping(relay: Relay, stop: asyncio.Event) -> Closing:
    await stop.wait()
    relay.shut("gateway", 1001, "gateway shutting down")
    return await relay.done


class _EarlyBytes:
    """aiohttp's payload-parser hook, set once: it hands over the bytes aiohttp received after the
    upgrade request and before the relay took the connection."""

    __slots__ = ("feed",)

    def __init__(self, relay: Relay) -> None:
        self.feed = relay.up.feed

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        pass  # the relay hears of the loss from its own protocol


class _BackendProtocol(asyncio.Protocol):
    """The backend connection until the relay takes it: collects the handshake response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone = False  # the connection was lost before the relay took it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def hand_over(self, relay: Relay) -> None:
        """The relay takes the connection, starting with the bytes that came after the handshake."""
        early = bytes(self.head)
        self.head.clear()
        relay.take(relay.backend, forward_loss=False, early=early)
        if self.gone:
            relay.lost(relay.backend)

    def data_received(self, data: bytes) -> None:
        self.head += data
        if not self.answered.done():
            if b"\r\n\r\n" in self.head:
                self.answered.set_result(None)
            elif len(self.head) > _MAX_HANDSHAKE_BYTES:
                self.answered.set_exception(ConnectionError("handshake response too large"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if not self.answered.done():
            self.answered.set_exception(ConnectionError("connection closed during the handshake"))


class _Backend:
    __slots__ = ("protocol", "subprotocol", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: _BackendProtocol, subprotocol: str | None) -> None:
        self.transport = transport
        self.protocol = protocol
        self.subprotocol = subprotocol


def _client_accept(request: web.Request) -> str:
    """The client's handshake, checked (RFC 6455 4.2.1): its Sec-WebSocket-Accept answer."""
    if request.headers.get("Sec-WebSocket-Version") != "13":
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "Sec-WebSocket-Version must be 13")
    key = request.headers.get("Sec-WebSocket-Key", "")
    try:
        raw = base64.b64decode(key.encode(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "invalid Sec-WebSocket-Key")
    return accept_key(key)


async def _connect(request: web.Request, call: Call, route: WebSocketRoute) -> _Backend:
    offered, _ = split_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
    asked = [Subprotocol(p) for p in offered if p in route.subprotocols]
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    try:
        uri = parse_uri(route.upstream)
        handshake = ClientProtocol(uri, subprotocols=asked or None, max_size=route.max_message_bytes)
        opening = handshake.connect()
        headers = opening.headers
        headers["X-Forwarded-For"] = call.client_ip
        headers["X-Request-Id"] = call.request_id
        if request.host:
            headers["X-Forwarded-Host"] = request.host
        authorization = call.headers.get("Authorization")
        if authorization and "authorization" not in call.hidden_headers:
            headers["Authorization"] = authorization
        handshake.send_request(opening)
        async with asyncio.timeout(route.connect_timeout_s):
            transport_, protocol = await loop.create_connection(
                _BackendProtocol, uri.host, uri.port, ssl=ssl.create_default_context() if uri.secure else None
            )
            transport = cast(asyncio.Transport, transport_)
            transport.write(b"".join(handshake.data_to_send()))
            await protocol.answered
        head = bytes(protocol.head)
        end = head.index(b"\r\n\r\n") + 4
        handshake.receive_data(head[:end])
        events = handshake.events_received()
        if handshake.handshake_exc is not None:
            raise handshake.handshake_exc
        if not events or not isinstance(events[0], Response):
            raise InvalidHandshake("no handshake response")
        del protocol.head[:end]  # what follows the response is frames: the relay takes them at `attach`
        return _Backend(transport, protocol, handshake.subprotocol)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ValueError) as exc:
        if transport is not None:
            transport.abort()
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            f"WebSocket backend {route.upstream} unavailable: {exc or type(exc).__name__}",
        ) from None
