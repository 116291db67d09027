"""gRPC streams over plain HTTP: server streams framed per message, client streams from the body.

Called by `handlers/rest.py` for a binding whose method streams. A response stream is written one
message at a time, never buffered whole: newline-delimited JSON by default, a JSON array when the
route asks for it, Server-Sent Events when the client accepts `text/event-stream` (framing in
`translators.stream_framing`). Headers go out with the first message, so an error before it is an
ordinary `google.rpc.Status` response; a failure after it is the format's final error chunk.
`response.write` waits for the socket to drain, and the h2 client only credits a stream's window as
messages are taken, so a slow reader slows the backend down. A client that disconnects cancels the
handler (and with it the gRPC call) at once, even while the backend is quiet.

A client stream's request body is cut into messages as it arrives (NDJSON, or one JSON array),
each built like a unary request body (path variables and query applied to every message), screened
by `pipeline.on_message`, and sent upstream; a bidirectional method answers with a response
stream as above.

Every message passed on is counted, with its size, in `portcullis_stream_messages_total` and
`portcullis_stream_message_bytes` (route: the binding's name; format; direction), through a
`StreamMeter` whose label children are resolved once per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.handlers.responses import finish_headers, unary_response
from gateway.listener import lost_future
from gateway.metrics_registry import STREAM_MESSAGE_BYTES, STREAM_MESSAGES
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError, UnsupportedMediaType
from translators.metadata import Metadata
from translators.request import build_request
from translators.response import render
from translators.routes import Binding
from translators.status import render_status
from translators.stream_framing import RequestSplitter, StreamFramer, choose_format, is_request_stream_type

STREAM_JSON = "application/json"  # what each cut message is, for the request translator


class StreamMeter:
    """One stream direction's message metrics, labels resolved once: a message costs one increment
    and one observation."""

    __slots__ = ("_bytes", "_count")

    def __init__(self, route: str, fmt: str, direction: str) -> None:
        self._count = STREAM_MESSAGES.labels(route, fmt, direction)
        self._bytes = STREAM_MESSAGE_BYTES.labels(route, fmt, direction)

    def __call__(self, size: int) -> None:
        self._count.inc()
        self._bytes.observe(size)


async def respond(
    request: web.Request, call: Call, binding: Binding, stream: AsyncGenerator[bytes, None]
) -> web.StreamResponse:
    """Write `stream` (serialized response messages) to the client in the negotiated format."""
    fmt = choose_format(request.headers.get("Accept"), binding.response.options.stream_format)
    framer = StreamFramer(fmt)
    counted = StreamMeter(binding.name, fmt, "out")
    response: web.StreamResponse | None = None
    started = time.perf_counter()
    try:
        async with cancel_on_disconnect(request):
            async for raw in stream:
                try:
                    message = binding.response_class.FromString(raw)
                except DecodeError:
                    raise GatewayError(grpc.StatusCode.INTERNAL, "backend sent a message that does not decode") from None
                chunk = framer.message(render(binding.response, message))
                if response is None:  # headers go out with the first message, not before
                    response = await _prepare(request, call, framer)
                await response.write(chunk)
                call.bytes_out += len(chunk)
                counted(len(chunk))
    except GatewayError as err:
        if response is None:
            raise
        call.error, call.grpc_code = err, err.code.name
        await response.write(framer.error(render_status(err.code, err.message, list(err.details))))
    finally:
        await stream.aclose()
        call.upstream_s = time.perf_counter() - started  # a stream's upstream time is the whole stream
    if response is None:  # an empty stream still answers 200
        response = await _prepare(request, call, framer)
    tail = framer.end()
    if tail:
        await response.write(tail)
    await response.write_eof()
    return response


async def _prepare(request: web.Request, call: Call, framer: StreamFramer) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": framer.content_type})
    if framer.format == "sse":
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # ask buffering proxies in front to pass events on
    finish_headers(response, call)
    await response.prepare(request)
    return response


@contextlib.asynccontextmanager
async def cancel_on_disconnect(request: web.Request) -> AsyncIterator[None]:
    """Cancel the current task if the client's connection is lost inside the block."""
    lost = lost_future(request.transport)
    task = asyncio.current_task()
    if lost is None or task is None:
        yield
        return

    def on_lost(_: asyncio.Future[None]) -> None:
        task.cancel()

    lost.add_done_callback(on_lost)
    try:
        yield
    finally:
        lost.remove_done_callback(on_lost)


async def client_stream(
    request: web.Request, call: Call, runtime: Runtime, upstream: Upstream, binding: Binding,
    variables: dict[str, str], metadata: Metadata, timeout: float,
) -> web.StreamResponse:
    """A client-streaming or bidirectional method, its request messages cut from the body."""
    if not is_request_stream_type(request.headers.get("Content-Type")):
        raise UnsupportedMediaType(request.headers.get("Content-Type", ""))
    requests = request_messages(request, call, runtime, binding, variables)
    if binding.server_streaming:
        return await respond(request, call, binding, upstream.bidi(binding.rpc_path, requests, metadata, timeout))
    started = time.perf_counter()
    try:
        async with cancel_on_disconnect(request):
            result = await upstream.client_stream(binding.rpc_path, requests, metadata, timeout)
    finally:
        call.upstream_s = time.perf_counter() - started
    return unary_response(call, binding, result)


async def request_messages(
    request: web.Request, call: Call, runtime: Runtime, binding: Binding, variables: dict[str, str]
) -> AsyncIterator[bytes]:
    """The serialized request messages of the body, each screened by the pipeline, as they arrive."""
    plan = binding.request
    splitter = RequestSplitter(plan.options.max_body_bytes)
    query = [(k, v) for k, v in request.query.items() if k not in call.hidden_query]
    pipeline = runtime.pipeline
    meter: list[StreamMeter] = []  # made at the first message, once the body's format is known

    async def messages(pieces: list[bytes]) -> AsyncIterator[bytes]:
        for piece in pieces:
            message = build_request(plan, variables, query, STREAM_JSON, piece)
            await pipeline.on_message(call, message)
            if not meter:
                meter.append(StreamMeter(binding.name, splitter.format, "in"))
            meter[0](len(piece))
            yield message.SerializeToString()

    async for chunk in request.content.iter_any():
        call.bytes_in += len(chunk)
        async for serialized in messages(splitter.feed(chunk)):
            yield serialized
    async for serialized in messages(splitter.finish()):
        yield serialized
