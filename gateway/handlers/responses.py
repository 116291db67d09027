"""Response pieces every handler shares: the headers every response carries, and a unary JSON reply.

Owns nothing long-lived: `finish_headers` stamps the request id and the headers policies added
(rate-limit, CORS) on any response before it is sent, errors and streams included;
`unary_response` renders one backend reply with its metadata as headers.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.upstream import UnaryResult
from translators.errors import GatewayError
from translators.metadata import response_headers
from translators.response import render
from translators.routes import Binding

JSON = "application/json"


def finish_headers(response: web.StreamResponse, call: Call) -> None:
    """Headers every response carries, set before it is sent (errors and streams included)."""
    response.headers["X-Request-Id"] = call.request_id
    for key, value in call.response_headers.items():
        response.headers[key] = value


def unary_response(call: Call, binding: Binding, result: UnaryResult) -> web.Response:
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
