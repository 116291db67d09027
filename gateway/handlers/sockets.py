"""Open WebSockets: the hub that counts and stops them, the race that runs a socket's pumps, and the
checks every upgrade passes before any policy runs.

`SocketHub` is held by the public app (`keys.SOCKETS`), one per worker: it knows every open
WebSocket session (gRPC, multiplexed or passthrough), counts them per client address for the
per-client limit and in `portcullis_ws_connections_open`, keeps each route's `SocketMeter` (the
message metrics' label children, resolved once per route rather than per message, and the tallies
it pushes into them before every collection), and on shutdown
asks each session to end (close 1001) so the runner's drain is not spent waiting on
conversations that would never end by themselves. The public listener calls `shutdown` after it
stops accepting and before aiohttp's drain (whose first step stops reading every connection, so a
close handshake started later would never hear the client's answer). `race` runs a session's pumps in one TaskGroup:
the first to finish gives the result and the others are cancelled, so when one side ends both do.
`screen_upgrade` checks `Origin` against the route's allowed origins and turns a `bearer.<token>`
subprotocol entry or an auth cookie into an `Authorization` header on the call, since browsers
cannot set headers on a WebSocket.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.call import Call
from gateway.metrics_registry import (
    WS_CONNECTIONS_OPEN,
    WS_MESSAGE_BYTES,
    WS_MESSAGES,
    Tally,
    before_collect,
    multiprocess_dir,
)
from translators.errors import GatewayError
from translators.stream_framing import split_subprotocols

T = TypeVar("T")
SHUTDOWN_WAIT_S = 2.0  # how long shutdown waits for sessions to send their last frame and close
CLOSE_TIMEOUT_S = 2.0  # how long a close waits for the peer's close frame before dropping the connection


class TooManySockets(GatewayError):
    http_status = 429

    def __init__(self, limit: int) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {limit} open WebSockets per client")


class SocketMeter:
    """One route's WebSocket metrics with their labels resolved once.

    One worker (no multiprocess directory): a message adds to plain numbers, a `Tally` per direction
    (a bisect into the size buckets and a sum; the message count is the tally's count), pushed into
    prometheus-client right before any collection by the hub's `before_collect` hook: no lock and no
    string per message. Per message (callgrind, 10k calls): a prometheus-client increment and
    observation about 15.5k instructions, `inbound` with a tally about 3.3k, and the passthrough
    relay's inline use of the tally a few hundred. Several workers: the scrape of worker 0 reads the
    other workers' files, which nothing would push at that moment, so every message writes through
    at once (`eager`), as the metrics policy does.
    """

    __slots__ = ("_in", "_out", "eager", "inbound_tally", "open", "outbound_tally")

    def __init__(self, route: str) -> None:
        self._in = WS_MESSAGES.labels(route, "in")
        self._out = WS_MESSAGES.labels(route, "out")
        self.inbound_tally = Tally(WS_MESSAGE_BYTES.labels(route, "in"))
        self.outbound_tally = Tally(WS_MESSAGE_BYTES.labels(route, "out"))
        self.open = WS_CONNECTIONS_OPEN.labels(route)
        self.eager = multiprocess_dir() is not None

    def inbound(self, size: int) -> None:
        """A message from the client, passed on towards the backend."""
        if self.eager:
            self._in.inc()
            self.inbound_tally.child.observe(size)
        else:
            self.inbound_tally.observe(size)

    def outbound(self, size: int) -> None:
        """A message sent to the client."""
        if self.eager:
            self._out.inc()
            self.outbound_tally.child.observe(size)
        else:
            self.outbound_tally.observe(size)

    def tally(self, inbound: bool) -> Tally:
        """One direction's tally, for a caller that adds to it inline (the passthrough relay: it
        pushes after each batch when `eager`)."""
        return self.inbound_tally if inbound else self.outbound_tally

    def push(self) -> None:
        """Move what the tallies hold into the prometheus-client metrics."""
        for tally, messages in ((self.inbound_tally, self._in), (self.outbound_tally, self._out)):
            count = sum(tally.counts)
            if count:
                messages.inc(count)
                tally.push()


class SocketHub:
    """Every open WebSocket session of this worker: per-client counts and a stop signal each."""

    def __init__(self) -> None:
        self._sessions: dict[asyncio.Event, tuple[str, str]] = {}  # stop signal -> (route, client)
        self._per_client: Counter[tuple[str, str]] = Counter()
        self._meters: dict[str, SocketMeter] = {}  # by route: bounded by the configured routes
        self._drained = asyncio.Event()
        self._drained.set()
        _pusher(weakref.ref(self))  # registers itself; pushes before every collection

    def push(self) -> None:
        """Move every meter's tallies into the metrics (before a collection)."""
        for meter in self._meters.values():
            meter.push()

    def meter(self, route: str) -> SocketMeter:
        """The metrics of `route` (a binding name, "websocket <path>" or "mux <path>")."""
        found = self._meters.get(route)
        if found is None:
            found = self._meters[route] = SocketMeter(route)
        return found

    @property
    def open(self) -> int:
        return len(self._sessions)

    def enter(self, route: str, client: str, limit: int | None = None) -> asyncio.Event:
        """Register a session of `route` (its metrics label); the event it returns is set when the
        session must end (shutdown)."""
        key = (route, client)
        if limit is not None and self._per_client[key] >= limit:
            raise TooManySockets(limit)
        self._per_client[key] += 1
        stop = asyncio.Event()
        self._sessions[stop] = key
        self._drained.clear()
        self.meter(route).open.inc()
        return stop

    def leave(self, stop: asyncio.Event) -> None:
        key = self._sessions.pop(stop, None)
        if key is not None:
            self.meter(key[0]).open.dec()
            self._per_client[key] -= 1
            if self._per_client[key] <= 0:
                del self._per_client[key]
        if not self._sessions:
            self._drained.set()

    async def shutdown(self) -> None:
        """Ask every session to end, and give them a moment to say so to their clients."""
        for stop in list(self._sessions):
            stop.set()
        try:
            async with asyncio.timeout(SHUTDOWN_WAIT_S):
                await self._drained.wait()
        except TimeoutError:
            pass


def _pusher(hub: weakref.ref[SocketHub]) -> Callable[[], None]:
    """The hub's `before_collect` hook; it holds the hub weakly and removes itself once the hub is
    gone (an app built and dropped, as tests do), after pushing nothing."""

    def push() -> None:
        alive = hub()
        if alive is not None:
            alive.push()
        else:
            remove()

    remove = before_collect(push)
    return push


def payload_size(data: str | bytes) -> int:
    """A message's size in bytes; a text message is encoded only when it is not ASCII (`isascii`
    reads a flag CPython keeps on every string, so the common case costs nothing)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode())


async def race(*coros: Coroutine[Any, Any, T]) -> T:
    """Run the coroutines in one TaskGroup; the first to return gives the result, the rest are
    cancelled. An exception in any of them cancels the others and propagates (as an ExceptionGroup)."""
    result: list[T] = []
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coro) for coro in coros]

        def first(task: asyncio.Task[T]) -> None:
            if result or task.cancelled() or task.exception() is not None:
                return
            result.append(task.result())
            for other in tasks:
                if other is not task:
                    other.cancel()

        for task in tasks:
            task.add_done_callback(first)
    return result[0]


async def idle_or_stop(last_active: Callable[[], float], idle_s: float, stop: asyncio.Event) -> bool:
    """Wait until nothing happened for `idle_s` (False) or `stop` is set (True)."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = last_active() + idle_s - loop.time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await stop.wait()
            return True
        except TimeoutError:
            continue


def screen_upgrade(
    request: web.Request, call: Call, allowed_origins: tuple[str, ...], auth_cookie: str | None = None
) -> None:
    """Refuse a browser Origin not allowed (403), then give the call the upgrade's credentials as
    an Authorization header when it has none: a `bearer.<token>` subprotocol, else the cookie."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in allowed_origins:
        raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, f"origin {origin!r} may not open this WebSocket")
    if "Authorization" in request.headers:
        return
    _, token = split_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
    if token is None and auth_cookie:
        token = request.cookies.get(auth_cookie)
    if token:
        headers = CIMultiDict(request.headers)
        headers["Authorization"] = f"Bearer {token}"
        call.headers = CIMultiDictProxy(headers)


def is_upgrade(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
