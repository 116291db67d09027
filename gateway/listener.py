"""The public listener's connection guard: connection limit and request-head timeout.

aiohttp's own keep-alive timer does not cover a connection's first request, so a client that
trickles its first request head forever (slow loris) would hold a connection; and aiohttp has no
connection limit. `GuardedProtocol` wraps each aiohttp `RequestHandler` (composition: every protocol
call is forwarded) to add both: a connection over `max_connections` gets a 503 and is closed at
once, and a connection whose request head has not fully arrived (`\\r\\n\\r\\n` seen) within
`header_timeout_s` of opening is closed. After the first request aiohttp's keep-alive timer covers
later request heads. `Listener` binds the socket with this factory and closes it before the runner
drains, so shutdown stops accepting first. The guard also tells a long response that its client is
gone (`lost_future`): aiohttp does not cancel handlers, and a stream waiting on a quiet backend
would otherwise only notice at its next write.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from aiohttp import web

if TYPE_CHECKING:
    from gateway.http1 import Front

_REFUSAL_BODY = b'{"code":14,"message":"too many connections to the gateway","details":[]}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclass(slots=True)
class ConnectionGuard:
    max_connections: int
    header_timeout_s: float
    open: int = 0
    refused: int = 0
    timed_out: int = 0


class GuardedProtocol(asyncio.Protocol):
    __slots__ = ("_counted", "_guard", "_inner", "_lost", "_tail", "_timer", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._lost: asyncio.Future[None] | None = None

    def when_lost(self) -> asyncio.Future[None]:
        """A future that resolves when this connection is lost (made on first use)."""
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
            if self._transport is None or self._transport.is_closing():
                self._lost.set_result(None)
        return self._lost

    def replace_inner(self, inner: asyncio.Protocol) -> None:
        """Forward to `inner` from now on (the lean HTTP/1.1 server handing a connection to aiohttp)."""
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        tcp = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport instances
        self._transport = tcp
        if guard.open >= guard.max_connections:
            guard.refused += 1
            tcp.write(_REFUSAL)
            tcp.close()
            return
        guard.open += 1
        self._counted = True
        self._timer = asyncio.get_running_loop().call_later(guard.header_timeout_s, self._expire)
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.close()  # aiohttp sees connection_lost and cleans up its handler

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            window = self._tail + data
            if b"\r\n\r\n" in window:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._guard.open -= 1
            self._counted = False
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def lost_future(transport: asyncio.BaseTransport | None) -> asyncio.Future[None] | None:
    """When the connection behind `transport` is lost, if it came through a `GuardedProtocol`."""
    if transport is None:
        return None
    protocol = transport.get_protocol()
    return protocol.when_lost() if isinstance(protocol, GuardedProtocol) else None


class Listener:
    """One bound socket serving an `AppRunner` through the guard.

    With a `front` (the lean HTTP/1.1 server, `gateway/http1.py`) each connection starts there and
    is handed to the runner's aiohttp server at the first request the front does not serve; `stop`
    then drains the front's connections before aiohttp's.
    """

    def __init__(
        self, runner: web.AppRunner, guard: ConnectionGuard,
        before_drain: Callable[[], Awaitable[None]] | None = None,
        front: Front | None = None,
        grace_s: float = 0.0,
    ) -> None:
        self.runner = runner
        self.guard = guard
        self.before_drain = before_drain  # e.g. closing WebSockets, which never end by themselves
        self.front = front
        self.grace_s = grace_s
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool, backlog: int = 1024
    ) -> int:
        server = self.runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server if self.front is None else self.front.protocol
        guard = self.guard
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GuardedProtocol(factory(), guard),
            host,
            port,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
            backlog=backlog,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, then let the runner drain in-flight requests and close."""
        if self._server is not None:
            self._server.close()
        if self.before_drain is not None:
            await self.before_drain()
        if self.front is not None:  # before aiohttp's drain: the runner's cleanup closes the upstreams
            await self.front.drain(self.grace_s)
        await self.runner.cleanup()
