"""The lean HTTP/1.1 server of the public listener: plain unary REST requests without aiohttp.

aiohttp's per-request machinery (parser callbacks, `web.Request`, `StreamResponse`, its writer)
costs about as much as all of our edge, translation and pipeline together (docs/benchmarks.md,
optimisation log). `Http1Protocol` serves the common case itself: a request whose whole head and
body have arrived, HTTP/1.1, GET/POST/PUT/PATCH/DELETE/HEAD/OPTIONS, a `Content-Length` body or
none, matched to a unary REST route. It parses the head strictly (the request line here; the header
fields, with one regular expression over them, and the target in `http1_request`), runs the
transport-neutral edge (`edge.answer`: routing, phases, translation, upstream call, error rendering)
and writes the response bytes itself, exactly as aiohttp would write that answer
(`http1_response.encode`: the same status line, header order, Content-Length, Content-Type, Date,
Server and Connection rules). Pipelined requests are answered one at a time, in order, by one task per
connection (made at its first request; it waits for the next one between requests).

Anything else is aiohttp's, unchanged: at the first request this protocol does not serve (an
upgrade, `Expect`, a chunked or incomplete body, HTTP/1.0, gRPC-Web, a streaming method, the app's
own paths, /v2 inference, a head it does not parse, one over the header limits), once its earlier
responses are written, it hands the connection to a fresh aiohttp `RequestHandler` with the bytes
from the start of that request; the connection is aiohttp's from then on. A malformed request is
therefore answered by aiohttp's parser, as before.

Per connection it keeps the keep-alive idle timeout (one lazily re-armed timer), counts the
connection in `portcullis_http_connections_open`, cancels the request in flight when the client goes
away (the call completes as 499), and `Front.drain` ends its connections for a graceful shutdown:
idle ones at once, busy ones after their answer, the rest when the grace period ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from aiohttp import web
from aiohttp.tcp_helpers import tcp_nodelay

from gateway import edge
from gateway.config import ServerConfig
from gateway.exchange import Answer, Head
from gateway.http1_request import Fields, read_fields, split_target
from gateway.http1_response import encode
from gateway.lifecycle import GatewayState, Snapshot
from gateway.listener import GuardedProtocol
from gateway.metrics_registry import HTTP_CONNECTIONS_OPEN
from translators.errors import GatewayError

# Request lines served here: these methods, an origin-form target, HTTP/1.1. Absolute and asterisk
# forms, other methods and versions are aiohttp's.
_METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
log = logging.getLogger("portcullis.http1")

_PAUSE_AT = 1 << 20  # buffered bytes of later requests before reading pauses


class Front:
    """What every lean connection of one listener shares; `protocol` is the listener's factory."""

    def __init__(self, state: GatewayState, server: web.Server, own_paths: frozenset[str], limits: ServerConfig) -> None:
        self.state = state
        self.server = server  # aiohttp's: makes the RequestHandler a connection is handed to
        self.own_paths = own_paths
        self.max_head = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.idle_timeout_s = limits.idle_timeout_s
        self.connections: set[Http1Protocol] = set()
        self.draining = False
        self.served = 0
        self.handed_over = 0

    def protocol(self) -> Http1Protocol:
        return Http1Protocol(self)

    async def drain(self, grace_s: float) -> None:
        """Stop serving: close idle connections now, busy ones after their answer or at `grace_s`."""
        self.draining = True
        busy = []
        for conn in list(self.connections):
            if conn.busy and conn.task is not None:
                busy.append(conn.task)  # ends after its answer: the connection closes when draining
            else:
                conn.close()
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for conn in list(self.connections):
            if conn.task is not None:
                conn.task.cancel()
            conn.close()


class Http1Protocol(asyncio.Protocol):
    __slots__ = (
        "_block", "_buffer", "_fields", "_front", "_idle_handle", "_idle_since", "_live", "_loop", "_read_paused", "_remote",
        "_request", "_transport", "_waiter", "_write_paused", "busy", "task",
    )

    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._block = b""  # the last header fields read, and what they said
        self._fields: Fields | None = None
        self._remote: str | None = None
        self._live = False  # connected and not handed over
        self._write_paused = False
        self._read_paused = False
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        # One task serves the connection's requests in turn, made at its first request: a task per
        # request costs more than waking this one (Task.__init__ registers each in a WeakSet).
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a request is being served
        self._request: Request | None = None  # the next one, parsed, for the task
        self._waiter: asyncio.Future[None] | None = None  # the task waits on it for `_request`

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport instances
        self._transport = tcp
        peer = tcp.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, (list, tuple)) else None
        tcp_nodelay(tcp, True)
        self._live = True
        self._front.connections.add(self)
        HTTP_CONNECTIONS_OPEN.inc()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if not self._live:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if not self.busy and not self._write_paused:
            self._next()
        elif len(self._buffer) > _PAUSE_AT and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes, as aiohttp's handler lets it

    def connection_lost(self, exc: Exception | None) -> None:
        if self._live:
            self._release()
        if self.task is not None:
            self.task.cancel()  # the call completes as 499; the upstream call is cancelled

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._live and not self.busy and self._buffer:
            self._next()

    # serving

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _release(self) -> None:
        self._live = False
        self._front.connections.discard(self)
        HTTP_CONNECTIONS_OPEN.dec()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        waiter = self._waiter
        if waiter is not None:  # the task waits for a request that will not come here: it ends
            self._waiter = None
            waiter.cancel()

    def _next(self) -> None:
        """Serve the next request in the buffer when it is whole; hand the connection over if not ours."""
        buf = self._buffer
        front = self._front
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > front.max_head:
                self._hand_over()
            return
        snapshot = front.state.current  # read once: a reload swaps it, this request keeps its own
        served = None if end > front.max_head else self._parse(buf, end, snapshot)
        if served is None:
            self._hand_over()
            return
        head, keep_alive, body_end, matched = served
        body = buf[end + 4:body_end]
        self._buffer = buf[body_end:]
        if self._read_paused and len(self._buffer) < _PAUSE_AT and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        front.served += 1
        self.busy = True
        request = (snapshot, head, body, keep_alive, matched)
        if self.task is None:
            self.task = self._loop.create_task(self._serve(request))
            return
        self._request = request
        waiter = self._waiter
        if waiter is not None:  # else `_serve` itself called this after an answer: it takes it next
            self._waiter = None
            waiter.set_result(None)

    def _parse(self, buf: bytes, end: int, snapshot: Snapshot) -> tuple[Head, bool, int, edge.Matched | None] | None:
        """The head, keep-alive, where the body ends and the route: None for a request that is aiohttp's."""
        front = self._front
        line_end = buf.find(b"\r\n", 0, end)
        if line_end < 0:
            return None  # no header fields at all, so no Host
        parts = buf[:line_end].decode("latin-1").split(" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if version != "HTTP/1.1" or method not in _METHODS or target[:1] != "/" or not (
            target.isascii() and target.isprintable()
        ):
            return None
        block = buf[line_end:end]
        if block == self._block:  # a keep-alive client sending the same header fields again
            fields = self._fields
        else:
            fields = read_fields(block, front.max_headers)
            self._block, self._fields = block, fields
        if fields is None:
            return None
        body_end = end + 4 + fields.length
        if body_end > len(buf):
            return None  # the body is still arriving: aiohttp reads it, under its body timeout
        if fields.grpc_web and method == "POST":
            return None
        split = split_target(target)
        if split is None:
            return None
        path, query = split
        if path in front.own_paths or (
            front.state.inference is not None and (path == "/v2" or path.startswith("/v2/"))
        ):
            return None
        head = Head(method, path, target, fields.headers, query, self._remote, fields.host)
        try:
            matched = edge.route(snapshot.runtime, head)
        except GatewayError:
            return head, fields.keep_alive, body_end, None  # 404 or 405: rendered by the edge, through the phases
        binding = matched[0]
        if binding.client_streaming or binding.server_streaming:
            return None
        return head, fields.keep_alive, body_end, matched

    async def _serve(self, request: Request) -> None:
        """The connection's requests, one at a time and in order, until it closes or is handed over."""
        loop = self._loop
        while True:
            snapshot, head, body, keep_alive, matched = request
            try:
                answer = await edge.answer(snapshot, head, body, matched)
            except asyncio.CancelledError:
                self.busy = False
                task = self.task
                if not self._live or task is None or task.cancelling():
                    return  # the client went away, or the drain ran out of time
                answer = None  # one from below (an upstream call cancelled under us): no answer, as before
            try:
                if answer is not None:
                    self._answer(head, keep_alive, answer)
            except Exception:  # a bug here must not leave the connection busy for ever
                log.exception("response to %s %s not sent", head.method, head.path)
                self.busy = False
                self.close()
                return
            transport = self._transport
            if not self._live or transport is None or transport.is_closing():
                return  # closed (not keep-alive, draining, an unsendable answer) or handed over
            if self._request is None:
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                except asyncio.CancelledError:
                    return  # the connection went away while idle
            taken = self._request
            assert taken is not None  # `_next` stored it before waking this task, or while it answered
            request, self._request = taken, None

    def _answer(self, head: Head, keep_alive: bool, answer: Answer) -> None:
        """Write an answer, then take the next request if the client pipelined one."""
        transport = self._transport
        if transport is None or not self._live:
            self.busy = False
            return
        keep_alive = keep_alive and not self._front.draining
        try:
            data = encode(answer, head.method, keep_alive)
        except ValueError:  # as aiohttp does with such a header: no answer, the connection closes
            log.exception("response to %s %s not sent", head.method, head.path)
            self.busy = False
            transport.close()
            return
        transport.write(data)
        self.busy = False
        if not keep_alive:
            transport.close()
            return
        self._arm_idle()
        if self._buffer and not self._write_paused:
            self._next()

    def _hand_over(self) -> None:
        """From the first request not served here on, the connection is aiohttp's."""
        front = self._front
        transport = self._transport
        assert transport is not None
        data, self._buffer = self._buffer, b""
        self._release()
        front.handed_over += 1
        handler = front.server()
        outer = transport.get_protocol()
        if isinstance(outer, GuardedProtocol):
            outer.replace_inner(handler)  # the guard stays: connection count, lost_future for streams
        else:
            transport.set_protocol(handler)
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        handler.connection_made(transport)
        if data:
            handler.data_received(data)

    def _arm_idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(self._idle_since + self._front.idle_timeout_s, self._idle)

    def _idle(self) -> None:
        self._idle_handle = None
        if not self._live or self.busy:
            return  # gone, or busy: re-armed after the answer
        due = self._idle_since + self._front.idle_timeout_s
        if self._loop.time() < due:
            self._idle_handle = self._loop.call_at(due, self._idle)
            return
        self.close()


# A parsed request for the connection's task: the snapshot it runs under, its head, its body, whether
# the connection stays open after it, and its route (None: a routing error the edge renders).
Request = tuple[Snapshot, Head, bytes, bool, "edge.Matched | None"]
