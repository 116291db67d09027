"""REST/JSON calls: read the body, translate, call the upstream, translate back.

The request path for one matched binding: `translators.request` builds the message,
`upstream` moves its bytes, `translators.response` renders the reply. Streaming methods go to
`handlers/http_stream.py`: server streams are framed per message (newline-delimited JSON, a JSON
array or Server-Sent Events), client streams take their messages from the body. `unary` is the
transport-neutral part of a unary call (request head and body bytes in, JSON body and headers out),
shared by aiohttp's path (`handle`) and the lean HTTP/1.1 server (`gateway/http1.py`).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from google.protobuf.message import Message
from multidict import CIMultiDict

from gateway.call import Call
from gateway.exchange import RequestHead
from gateway.handlers import http_stream
from gateway.handlers.responses import finish_headers, unary_reply
from gateway.resilience import retries_possible, retry_after
from gateway.runtime import Runtime
from gateway.upstream import Upstream
from translators.errors import GatewayError, PayloadTooLarge, RequestTimeout
from translators.metadata import parse_grpc_timeout, to_metadata
from translators.request import build_request
from translators.routes import Binding

__all__ = ("deadline", "finish_headers", "handle", "read_body", "unary", "upstream_metadata")


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading them when the length is known,
    and a client that sends it slower than `timeout_s` allows (408)."""
    first = body_if_arrived(request, limit)
    if request.content.at_eof():
        return first
    return await _read_rest(request, first, limit, timeout_s)


def body_if_arrived(request: web.Request, limit: int) -> bytes:
    """What arrived of the body, refusing more than `limit` bytes when the length is known; the whole
    body when `request.content.at_eof()` then holds. A small body has usually arrived with the head:
    it is taken without a timer, an iterator or even a coroutine."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    return request.content.read_nowait(-1)


async def _read_rest(request: web.Request, first: bytes, limit: int, timeout_s: float) -> bytes:
    content = request.content
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


def upstream_metadata(request: RequestHead, call: Call, runtime: Runtime) -> list[tuple[str, str | bytes]]:
    # The call's headers: the request's, plus what the edge derived (a WebSocket's bearer subprotocol).
    # Credentials a policy consumed (call.hidden_headers) never reach the backend.
    metadata = to_metadata(call.headers.items(), runtime.forward_headers, call.hidden_headers)
    forwarded_for = request.headers.get("X-Forwarded-For")
    metadata.append(("x-forwarded-for", f"{forwarded_for}, {call.client_ip}" if forwarded_for else call.client_ip))
    if request.host:
        metadata.append(("x-forwarded-host", request.host))
    metadata.append(("x-request-id", call.request_id))
    metadata.extend(call.upstream_metadata)
    return metadata


def deadline(request: RequestHead, route_timeout: float) -> float:
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
        settings = runtime.settings[binding.name]
        metadata = upstream_metadata(request, call, runtime)
        timeout = deadline(request, settings.timeout_s)
        return await http_stream.client_stream(request, call, runtime, upstream, binding, variables, metadata, timeout)
    options = binding.request.options
    if binding.request.takes_body:
        body = body_if_arrived(request, options.max_body_bytes)
        if not request.content.at_eof():
            body = await _read_rest(request, body, options.max_body_bytes, runtime.config.server.body_timeout_s)
    else:
        body = b""
    if binding.server_streaming:
        payload, metadata, timeout = await _outbound(request, call, runtime, binding, variables, body)
        stream = upstream.server_stream(binding.rpc_path, payload, metadata, timeout)
        return await http_stream.respond(request, call, binding, stream)
    out, headers = await unary(request, call, runtime, upstream, binding, variables, body)
    return web.Response(body=out, headers=headers)


async def _outbound(
    request: RequestHead, call: Call, runtime: Runtime, binding: Binding, variables: dict[str, str], body: bytes,
) -> tuple[bytes, list[tuple[str, str | bytes]], float]:
    """The request message's bytes, its metadata and its deadline; `on_message` has seen the message."""
    message = _message(request, call, binding, variables, body)
    if runtime.pipeline.inspects_messages:
        await runtime.pipeline.on_message(call, message)
    return _wire(request, call, runtime, binding, message)


def _message(request: RequestHead, call: Call, binding: Binding, variables: dict[str, str], body: bytes) -> Message:
    call.bytes_in = len(body)
    query = request.query.items()
    if call.hidden_query:
        query = [(k, v) for k, v in query if k not in call.hidden_query]  # type: ignore[assignment]
    content_type = request.headers.get("Content-Type") if body else None  # read only with a body
    return build_request(binding.request, variables, query, content_type, body)


def _wire(
    request: RequestHead, call: Call, runtime: Runtime, binding: Binding, message: Message
) -> tuple[bytes, list[tuple[str, str | bytes]], float]:
    """After `on_message` (the request message, once, to the policies that read content, before any
    backend sees it): the message's bytes, its metadata and its deadline."""
    metadata = upstream_metadata(request, call, runtime)
    timeout = deadline(request, runtime.settings[binding.name].timeout_s)
    return message.SerializeToString(), metadata, timeout


async def unary(
    request: RequestHead, call: Call, runtime: Runtime, upstream: Upstream, binding: Binding,
    variables: dict[str, str], body: bytes,
) -> tuple[bytes, CIMultiDict[str]]:
    """One unary call from its request head and whole body: the JSON reply and its headers.

    The body's size against the route's limit is checked here too (the lean server reads bodies
    itself); aiohttp's path checked it before reading.
    """
    options = binding.request.options
    if not binding.request.takes_body:
        body = b""
    elif len(body) > options.max_body_bytes:
        raise PayloadTooLarge(options.max_body_bytes)
    # `_outbound` written out: one coroutine less per request.
    message = _message(request, call, binding, variables, body)
    if runtime.pipeline.inspects_messages:
        await runtime.pipeline.on_message(call, message)
    payload, metadata, timeout = _wire(request, call, runtime, binding, message)
    started = time.perf_counter()
    try:
        try:
            result = await upstream.unary(binding.rpc_path, payload, metadata, timeout)
        except GatewayError as err:
            settings = runtime.settings[binding.name]
            if not retries_possible(settings.retry, request.method):
                raise
            # The deadline counts from the first attempt (perf_counter and monotonic run at one rate).
            deadline_at = time.monotonic() - (time.perf_counter() - started) + timeout
            result = await retry_after(
                err,
                lambda remaining: upstream.unary(binding.rpc_path, payload, metadata, remaining),
                settings.retry,
                deadline_at,
                getattr(upstream, "retry_budget", None),
            )
    finally:
        call.upstream_s = time.perf_counter() - started
    return unary_reply(call, binding, result)
