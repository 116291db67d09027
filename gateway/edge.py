"""The edge: make the `Call`, match the route, run the pipeline, render every error.

This is the only catch-all handler of the public app. It reads the current `Runtime` once per
request (a reload swaps it by reference, so in-flight requests finish under the one they started
with), so routing, policies and upstreams are consistent for the whole call. The error renderer is
outermost: whatever fails below becomes a `google.rpc.Status` JSON body with the table's status,
carrying the headers policies added (rate-limit headers, CORS, request id) like any response.

A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) is routed by the method it asks
about, so the CORS policy of that route answers it; with no CORS policy it is a 405.
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web

from gateway.call import Call
from gateway.handlers import rest
from gateway.handlers.rest import finish_headers
from gateway.keys import STATE
from gateway.pipeline import Reply
from translators.errors import GatewayError, MethodNotAllowed
from translators.status import render_error

log = logging.getLogger("portcullis.edge")


def error_response(err: GatewayError) -> web.Response:
    status, headers, body = render_error(err)
    return web.Response(status=status, headers=headers, body=body)


def new_call(request: web.Request) -> Call:
    return Call(
        request_id=Call.new_request_id(request.headers.get("X-Request-Id")),
        method=request.method,
        path=request.path,
        client_ip=request.remote or "",
        headers=request.headers,
        query=request.query,
    )


async def handle(request: web.Request) -> web.StreamResponse:
    snapshot = request.app[STATE].current  # read once: a reload swaps it, this call keeps its own
    runtime = snapshot.runtime
    call = new_call(request)
    response: web.StreamResponse
    try:
        raw_path = request.raw_path.split("?", 1)[0]
        asked = request.headers.get("Access-Control-Request-Method")
        preflight = request.method == "OPTIONS" and asked is not None
        binding, variables = runtime.routes.match(asked if preflight and asked else request.method, raw_path)
        call.route, call.service = binding.name, binding.service
        call.upstream = runtime.settings[binding.name].backend
        await runtime.pipeline.on_request(call)
        if preflight:
            raise MethodNotAllowed("OPTIONS", [binding.http_method])
        upstream = snapshot.upstreams[call.upstream]
        response = await rest.handle(request, call, runtime, upstream, binding, variables)
        call.grpc_code = call.grpc_code or "OK"
    except Reply as reply:
        response = web.Response(status=reply.status, headers=reply.headers, body=reply.body)
    except GatewayError as err:
        call.error, call.grpc_code = err, err.code.name
        response = error_response(err)
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, call.request_id)
        internal = GatewayError(grpc.StatusCode.INTERNAL, "internal gateway error")
        call.error, call.grpc_code = internal, internal.code.name
        response = error_response(internal)
    except BaseException:  # the client went away (CancelledError): still log the call
        call.status = 499
        call.grpc_code = grpc.StatusCode.CANCELLED.name
        await runtime.pipeline.on_complete(call)
        raise
    call.status = response.status
    if not response.prepared:
        finish_headers(response, call)
    await runtime.pipeline.on_complete(call)
    return response

