"""The edge: make the `Call`, match the route, run the pipeline, render every error.

This is the only catch-all handler of the public app. It reads the current `Runtime` once per
request (a reload swaps it by reference, so in-flight requests finish under the one they started
with), so routing, policies and upstreams are consistent for the whole call. The error renderer is
outermost: whatever fails below becomes a `google.rpc.Status` JSON body with the table's status.
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web

from gateway.call import Call
from gateway.handlers import rest
from gateway.keys import RUNTIME, UPSTREAMS
from translators.errors import GatewayError
from translators.status import render_error

log = logging.getLogger("portcullis.edge")


def error_response(err: GatewayError) -> web.Response:
    status, headers, body = render_error(err)
    return web.Response(status=status, headers=headers, body=body)


async def handle(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    call = Call(
        request_id=Call.new_request_id(request.headers.get("X-Request-Id")),
        method=request.method,
        path=request.path,
        client_ip=request.remote or "",
    )
    response: web.StreamResponse
    try:
        binding, variables = runtime.routes.match(request.method, request.raw_path.split("?", 1)[0])
        call.route, call.service = binding.name, binding.service
        call.upstream = runtime.backend_of(binding.service)
        await runtime.pipeline.on_request(call)
        upstream = request.app[UPSTREAMS][call.upstream]
        response = await rest.handle(request, call, runtime, upstream, binding, variables)
        call.grpc_code = call.grpc_code or "OK"
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
        response.headers["X-Request-Id"] = call.request_id
    await runtime.pipeline.on_complete(call)
    return response
