"""REST/JSON calls: read the body, translate, call the upstream, translate back.

The request path for one matched binding: `translators.request` builds the message,
`upstream` moves its bytes, `translators.response` renders the reply. Server-streaming methods
answer newline-delimited JSON, one `{"result": ...}` line per message and a final
`{"error": <google.rpc.Status>}` line if the stream fails after it started (grpc-gateway's framing).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
from aiohttp import web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.resilience import retries_possible, with_retries
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError, PayloadTooLarge, RequestTimeout
from translators.metadata import parse_grpc_timeout, response_headers, to_metadata
from translators.request import build_request
from translators.response import render, to_json_value
from translators.routes import Binding
from translators.status import render_status

JSON = "application/json"


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading them when the length is known,
    and a client that sends it slower than `timeout_s` allows (408)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    content = request.content
    # A small body has usually arrived with the head: take it without a timer or an iterator.
    first = content.read_nowait(-1)
    if content.at_eof():
        return first
    chunks, size = [first], len(first)
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(timeout_s) from None
    return b"".join(chunks)


def upstream_metadata(request: web.Request, call: Call, runtime: Runtime) -> list[tuple[str, str | bytes]]:
    headers = request.headers.items()
    if call.hidden_headers:  # credentials a policy consumed and must not reach the backend
        headers = [(k, v) for k, v in headers if k.lower() not in call.hidden_headers]  # type: ignore[assignment]
    metadata = to_metadata(headers, runtime.forward_headers)
    forwarded_for = request.headers.get("X-Forwarded-For")
    metadata.append(("x-forwarded-for", f"{forwarded_for}, {call.client_ip}" if forwarded_for else call.client_ip))
    if request.host:
        metadata.append(("x-forwarded-host", request.host))
    metadata.append(("x-request-id", call.request_id))
    metadata.extend(call.upstream_metadata)
    return metadata


def deadline(request: web.Request, route_timeout: float) -> float:
    """The route's timeout, shortened by the client's `Grpc-Timeout` when that is smaller."""
    given = request.headers.get("Grpc-Timeout")
    if given is None:
        return route_timeout
    return min(route_timeout, parse_grpc_timeout(given))


async def handle(
    request: web.Request, call: Call, runtime: Runtime, upstream: Upstream, binding: Binding,
    variables: dict[str, str],
) -> web.StreamResponse:
    if binding.client_streaming:
        raise GatewayError(
            grpc.StatusCode.UNIMPLEMENTED, f"{binding.rpc_path} is client-streaming: not served over plain HTTP"
        )
    options = binding.request.options
    limits = runtime.config.server
    body = await read_body(request, options.max_body_bytes, limits.body_timeout_s) if binding.request.takes_body else b""
    call.bytes_in = len(body)
    query = request.query.items()
    if call.hidden_query:
        query = [(k, v) for k, v in query if k not in call.hidden_query]  # type: ignore[assignment]
    message = build_request(binding.request, variables, query, request.headers.get("Content-Type"), body)
    metadata = upstream_metadata(request, call, runtime)
    settings = runtime.settings[binding.name]
    timeout = deadline(request, settings.timeout_s)
    payload = message.SerializeToString()
    if binding.server_streaming:
        return await _stream(request, call, upstream, binding, payload, metadata, timeout)
    started = time.perf_counter()
    try:
        if retries_possible(settings.retry, request.method):
            result = await with_retries(
                lambda remaining: upstream.unary(binding.rpc_path, payload, metadata, remaining),
                settings.retry,
                request.method,
                timeout,
                getattr(upstream, "retry_budget", None),
            )
        else:
            result = await upstream.unary(binding.rpc_path, payload, metadata, timeout)
    finally:
        call.upstream_s = time.perf_counter() - started
    try:
        reply = binding.response_class.FromString(result.body)
    except DecodeError:
        raise GatewayError(grpc.StatusCode.INTERNAL, "backend sent a response that does not decode") from None
    out = render(binding.response, reply)
    call.bytes_out = len(out)
    response = web.Response(body=out, headers={"Content-Type": JSON})
    for key, value in response_headers(result.initial_metadata, result.trailing_metadata):
        response.headers.add(key, value)
    return response


async def _stream(
    request: web.Request, call: Call, upstream: Upstream, binding: Binding, payload: bytes,
    metadata: list[tuple[str, str | bytes]], timeout: float,
) -> web.StreamResponse:
    response: web.StreamResponse | None = None
    started = time.perf_counter()
    stream = upstream.server_stream(binding.rpc_path, payload, metadata, timeout)
    try:
        async for raw in stream:
            result = to_json_value(binding.response, binding.response_class.FromString(raw))
            line = orjson.dumps({"result": result}) + b"\n"
            if response is None:  # headers go out with the first message, not before
                response = _stream_response(call)
                await response.prepare(request)
            await response.write(line)
            call.bytes_out += len(line)
    except GatewayError as err:
        if response is None:
            raise
        call.error = err
        call.grpc_code = err.code.name
        line = orjson.dumps({"error": orjson.Fragment(render_status(err.code, err.message, list(err.details)))})
        await response.write(line + b"\n")
    finally:
        await stream.aclose()
        call.upstream_s = time.perf_counter() - started  # a stream's upstream time is the whole stream
    if response is None:  # an empty stream still answers 200 with no lines
        response = _stream_response(call)
        await response.prepare(request)
    await response.write_eof()
    return response


def finish_headers(response: web.StreamResponse, call: Call) -> None:
    """Headers every response carries, set before it is sent (errors and streams included)."""
    response.headers["X-Request-Id"] = call.request_id
    for key, value in call.response_headers.items():
        response.headers[key] = value


def _stream_response(call: Call) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    finish_headers(response, call)
    return response
