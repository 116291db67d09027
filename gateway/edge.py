"""The edge: make the `Call`, match the route, run the pipeline, render every error.

This is the only catch-all handler of the public app. It reads the current `Runtime` once per
request (a reload swaps it by reference, so in-flight requests finish under the one they started
with), so routing, policies and upstreams are consistent for the whole call. The error renderer is
outermost: whatever fails below becomes a `google.rpc.Status` JSON body with the table's status,
carrying the headers policies added (rate-limit headers, CORS, request id) like any response.

A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) is routed by the method it asks
about, so the CORS policy of that route answers it; with no CORS policy it is a 405.

A WebSocket upgrade goes to a passthrough route when its path is one (`handlers/passthrough.py`),
to the multiplexed mode on `websocket_mux.path` (`handlers/multiplex.py`; each of its streams then
runs the pipeline as a call of its own), else to the streaming method on that path
(`handlers/websocket.py`). Its Origin is checked and its
credentials (a `bearer.<token>` subprotocol or a cookie) put on the call before `on_request` runs,
so authentication and rate limits apply at the upgrade; errors before the 101 are ordinary
responses (403 for a refused Origin), after it they are close frames. A gRPC-Web request (POST
with a grpc-web content type) is routed by its gRPC path to `handlers/grpc_web.py`, and its errors
are rendered as gRPC-Web trailers-only responses instead of JSON. A /v2 request goes to the
inference service when one is configured (`handlers/inference.py`), which runs the same pipeline
phases and renders errors as the Open Inference Protocol's `{"error": ...}` bodies.

`answer` is the same edge for a plain unary REST request, without aiohttp: the lean HTTP/1.1
server (`gateway/http1.py`) hands it a parsed head and the whole body and writes the `Answer`
itself. It runs the same routing, phases, translation, upstream call and error rendering as
`handle`, so both paths answer with the same status, headers and body.
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web
from multidict import CIMultiDict

from gateway.call import Call
from gateway.exchange import Answer, RequestHead
from gateway.handlers import grpc_web, inference, multiplex, passthrough, rest, websocket
from gateway.handlers.responses import finish_headers, stamp_headers, stamp_reply
from gateway.handlers.sockets import is_upgrade, screen_upgrade
from gateway.keys import SOCKETS, STATE
from gateway.lifecycle import Snapshot
from gateway.pipeline import Reply, settle
from gateway.runtime import Runtime
from translators.errors import GatewayError, MethodNotAllowed, NotFound
from translators.routes import Binding
from translators.status import render_error

log = logging.getLogger("portcullis.edge")


def error_response(err: GatewayError) -> web.Response:
    status, headers, body = render_error(err)
    return web.Response(status=status, headers=headers, body=body)


def new_call(request: RequestHead) -> Call:
    # Positional: keywords cost a name search over Call's 26 parameters, per request.
    return Call(
        Call.new_request_id(request.headers.get("X-Request-Id")),
        request.method,
        request.path,
        request.remote or "",
        request.headers,
        request.query,
    )


async def handle(request: web.Request) -> web.StreamResponse:
    snapshot = request.app[STATE].current  # read once: a reload swaps it, this call keeps its own
    runtime = snapshot.runtime
    call = new_call(request)
    response: web.StreamResponse
    try:
        if is_upgrade(request):
            response = await _upgrade(request, call, snapshot)
        elif grpc_web.is_grpc_web(request):
            response = await _grpc_web(request, call, snapshot)
        elif inference.serves(request):  # /v2: the Open Inference Protocol, errors in its own body
            response = await inference.handle(request, call, snapshot)
        else:
            response = await _http(request, call, snapshot)
        call.grpc_code = call.grpc_code or "OK"
    except Reply as reply:
        response = web.Response(status=reply.status, headers=reply.headers, body=reply.body)
    except GatewayError as err:
        call.error, call.grpc_code = err, err.code.name
        response = grpc_web.error_response(request, err) if grpc_web.is_grpc_web(request) else error_response(err)
    except ConnectionResetError:  # the client dropped the connection while we read its body
        call.status, call.grpc_code = 499, grpc.StatusCode.CANCELLED.name
        await settle(runtime.pipeline.on_complete(call))
        raise
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, call.request_id)
        internal = GatewayError(grpc.StatusCode.INTERNAL, "internal gateway error")
        call.error, call.grpc_code = internal, internal.code.name
        response = grpc_web.error_response(request, internal) if grpc_web.is_grpc_web(request) else error_response(internal)
    except BaseException:  # the client went away (CancelledError): still log the call
        call.status = 499
        call.grpc_code = grpc.StatusCode.CANCELLED.name
        await settle(runtime.pipeline.on_complete(call))
        raise
    call.status = response.status
    if not response.prepared:
        finish_headers(response, call)
    pending = runtime.pipeline.on_complete(call)
    if pending is not None:
        await pending
    return response


Matched = tuple[Binding, dict[str, str]]


def route(runtime: Runtime, request: RequestHead) -> Matched:
    """The binding of a REST request; a CORS preflight is routed by the method it asks about."""
    method = request.method
    if method == "OPTIONS":
        method = request.headers.get("Access-Control-Request-Method") or method
    raw_path = request.raw_path
    return runtime.routes.match(method, raw_path.split("?", 1)[0] if "?" in raw_path else raw_path)


def _note_route(call: Call, runtime: Runtime, binding: Binding) -> str:
    """Put the route on the call before `on_request`; the name of its upstream."""
    call.route, call.service = binding.name, binding.service
    call.upstream = upstream = runtime.settings[binding.name].backend
    return upstream


def _preflight_ends(request: RequestHead, binding: Binding) -> None:
    """After `on_request`: a preflight the CORS policy did not answer (with a Reply) is a 405."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        raise MethodNotAllowed("OPTIONS", [binding.http_method])


async def _http(request: web.Request, call: Call, snapshot: Snapshot) -> web.StreamResponse:
    runtime = snapshot.runtime
    binding, variables = route(runtime, request)
    upstream = _note_route(call, runtime, binding)
    pending = runtime.pipeline.on_request(call)
    if pending is not None:
        await pending
    _preflight_ends(request, binding)
    return await rest.handle(request, call, runtime, snapshot.upstreams[upstream], binding, variables)


async def answer(snapshot: Snapshot, request: RequestHead, body: bytes, matched: Matched | None = None) -> Answer:
    """A unary REST request, routed, run through the phases and rendered: `handle` without aiohttp.

    `matched` is `route(...)` when the caller already matched (to see that the method is unary);
    a routing error is raised again here, inside the renderer. The client going away cancels the
    task running this: the call is completed as 499 and the cancellation goes on.
    """
    runtime = snapshot.runtime
    call = new_call(request)
    status, headers, block, stamped = 200, None, None, False
    try:
        binding, variables = route(runtime, request) if matched is None else matched
        upstream = _note_route(call, runtime, binding)
        pending = runtime.pipeline.on_request(call)
        if pending is not None:
            await pending
        if request.method == "OPTIONS":
            _preflight_ends(request, binding)
        out, headers = await rest.unary(request, call, runtime, snapshot.upstreams[upstream], binding, variables, body)
        call.grpc_code = call.grpc_code or "OK"
        block, stamped = stamp_reply(headers, call), True  # a reply's headers: a block may stay rendered
    except Reply as reply:
        status, headers, out = reply.status, CIMultiDict(reply.headers), reply.body
    except GatewayError as err:
        call.error, call.grpc_code = err, err.code.name
        status, plain, out = render_error(err)
        headers = CIMultiDict(plain)
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, call.request_id)
        internal = GatewayError(grpc.StatusCode.INTERNAL, "internal gateway error")
        call.error, call.grpc_code = internal, internal.code.name
        status, plain, out = render_error(internal)
        headers = CIMultiDict(plain)
    except BaseException:  # the client went away (CancelledError): still log the call
        call.status = 499
        call.grpc_code = grpc.StatusCode.CANCELLED.name
        await settle(runtime.pipeline.on_complete(call))
        raise
    call.status = status
    if not stamped:
        stamp_headers(headers, call)
    pending = runtime.pipeline.on_complete(call)
    if pending is not None:
        await pending
    return Answer(status, headers, out, block)


async def _grpc_web(request: web.Request, call: Call, snapshot: Snapshot) -> web.StreamResponse:
    runtime = snapshot.runtime
    binding = runtime.routes.match_rpc(request.path)
    call.route, call.service = binding.name, binding.service
    call.upstream = runtime.settings[binding.name].backend
    await settle(runtime.pipeline.on_request(call))
    return await grpc_web.handle(request, call, runtime, snapshot.upstreams[call.upstream], binding)


async def _upgrade(request: web.Request, call: Call, snapshot: Snapshot) -> web.StreamResponse:
    runtime = snapshot.runtime
    raw_path = request.raw_path.split("?", 1)[0]
    hub = request.app[SOCKETS]
    route = runtime.passthrough.get(raw_path)
    if route is not None:
        call.route, call.upstream = f"websocket {route.path}", route.upstream
        screen_upgrade(request, call, route.allowed_origins)
        await settle(runtime.pipeline.on_request(call))
        return await passthrough.handle(request, call, runtime, route, hub)
    mux = runtime.config.websocket_mux
    if mux.enabled and raw_path == mux.path:
        call.route = f"mux {mux.path}"
        ws_config = runtime.config.websocket
        screen_upgrade(request, call, ws_config.allowed_origins, ws_config.auth_cookie)
        await settle(runtime.pipeline.on_request(call))
        return await multiplex.handle(request, call, runtime, snapshot.upstreams, hub)
    binding, variables = runtime.routes.match_websocket(raw_path)
    settings = runtime.settings[binding.name]
    if not settings.websocket.enabled:
        raise NotFound(f"{binding.rpc_path} is not served over WebSocket")
    call.route, call.service, call.upstream = binding.name, binding.service, settings.backend
    screen_upgrade(request, call, settings.websocket.allowed_origins, settings.websocket.auth_cookie)
    await settle(runtime.pipeline.on_request(call))
    upstream = snapshot.upstreams[call.upstream]
    return await websocket.handle(request, call, runtime, upstream, binding, variables, hub)
