"""gRPC-Web: browsers' gRPC (application/grpc-web, +proto, -text), unary and server streaming.

The edge sends a POST whose content type is gRPC-Web here, with the method named by its gRPC path
(`RouteTable.match_rpc`), after the pipeline's `on_request`. The body's one message (framing in
`translators.grpc_web`) passes `on_message` and goes upstream as is: no JSON is involved. The reply
is HTTP 200 with the request's content type: each response message a frame, then a trailer frame
carrying grpc-status, grpc-message and trailing metadata, as Envoy's grpc_web filter answers. An
error before any message is a trailers-only response (the status in headers, empty body), so a
gRPC-Web client reads every failure, the gateway's own (401, 429, ...) included, as a gRPC status.
Client and bidirectional streams are not part of gRPC-Web: UNIMPLEMENTED. Messages are counted, with
their sizes, in the stream metrics (format `grpc_web` or `grpc_web_text`; in: the request message,
out: each response message's frame as written).
"""

from __future__ import annotations

import time

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.handlers.http_stream import StreamMeter, cancel_on_disconnect
from gateway.handlers.responses import finish_headers
from gateway.handlers.rest import deadline, read_body, upstream_metadata
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import BadRequest, GatewayError
from translators.grpc_web import (
    is_text,
    media_type,
    message_frame,
    request_messages,
    trailer_frame,
    trailer_lines,
)
from translators.metadata import response_headers
from translators.routes import Binding

_C = grpc.StatusCode


def is_grpc_web(request: web.Request) -> bool:
    return request.method == "POST" and media_type(request.headers.get("Content-Type")) is not None


def error_response(request: web.Request, err: GatewayError) -> web.Response:
    """A trailers-only answer: HTTP 200, the status in headers, no body."""
    media = media_type(request.headers.get("Content-Type")) or "application/grpc-web+proto"
    headers = {"Content-Type": media, **err.headers}
    for key, value in trailer_lines(err.code, err.message):
        headers[key] = value
    return web.Response(status=200, headers=headers)


async def handle(
    request: web.Request, call: Call, runtime: Runtime, upstream: Upstream, binding: Binding
) -> web.StreamResponse:
    if binding.client_streaming:
        raise GatewayError(_C.UNIMPLEMENTED, f"{binding.rpc_path} is client-streaming: gRPC-Web has no client streams")
    media = media_type(request.headers.get("Content-Type")) or "application/grpc-web+proto"
    text = is_text(media)
    limits = runtime.config.server
    body = await read_body(request, binding.request.options.max_body_bytes * 2, limits.body_timeout_s)
    call.bytes_in = len(body)
    messages = request_messages(body, text)
    if len(messages) != 1:
        raise BadRequest(f"a gRPC-Web request carries one message, not {len(messages)}")
    payload = messages[0]
    try:
        message = binding.request.message_class.FromString(payload)
    except DecodeError:
        raise BadRequest("the request message does not decode") from None
    await runtime.pipeline.on_message(call, message)
    fmt = "grpc_web_text" if text else "grpc_web"
    StreamMeter(binding.name, fmt, "in")(len(payload))
    metadata = upstream_metadata(request, call, runtime)
    timeout = deadline(request, runtime.settings[binding.name].timeout_s)
    started = time.perf_counter()
    if not binding.server_streaming:
        try:
            result = await upstream.unary(binding.rpc_path, payload, metadata, timeout)
        finally:
            call.upstream_s = time.perf_counter() - started
        response = web.StreamResponse(headers={"Content-Type": media})
        for key, value in response_headers(result.initial_metadata, ()):
            response.headers.add(key.removeprefix("Grpc-Metadata-"), value)
        finish_headers(response, call)
        await response.prepare(request)
        frame = message_frame(result.body, text)
        out = frame + trailer_frame(_C.OK, "", result.trailing_metadata, text)
        await response.write(out)
        StreamMeter(binding.name, fmt, "out")(len(frame))
        call.bytes_out = len(out)
        await response.write_eof()
        return response
    return await _stream(request, call, upstream, binding, payload, metadata, timeout, media)


async def _stream(
    request: web.Request, call: Call, upstream: Upstream, binding: Binding, payload: bytes,
    metadata: list[tuple[str, str | bytes]], timeout: float, media: str,
) -> web.StreamResponse:
    text = is_text(media)
    counted = StreamMeter(binding.name, "grpc_web_text" if text else "grpc_web", "out")
    response: web.StreamResponse | None = None
    started = time.perf_counter()
    stream = upstream.server_stream(binding.rpc_path, payload, metadata, timeout)
    status, message = _C.OK, ""
    try:
        async with cancel_on_disconnect(request):
            async for raw in stream:
                if response is None:
                    response = await _prepare(request, call, media)
                frame = message_frame(raw, text)
                await response.write(frame)
                call.bytes_out += len(frame)
                counted(len(frame))
    except GatewayError as err:
        if response is None:
            raise
        call.error, call.grpc_code = err, err.code.name
        status, message = err.code, err.message
    finally:
        await stream.aclose()
        call.upstream_s = time.perf_counter() - started
    if response is None:
        response = await _prepare(request, call, media)
    await response.write(trailer_frame(status, message, (), text))
    await response.write_eof()
    return response


async def _prepare(request: web.Request, call: Call, media: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": media})
    finish_headers(response, call)
    await response.prepare(request)
    return response
