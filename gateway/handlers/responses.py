"""Response pieces every handler shares: the headers every response carries, and a unary JSON reply.

Owns nothing long-lived: `finish_headers` stamps the request id and the headers policies added
(rate-limit, CORS) on any response before it is sent, errors and streams included;
`unary_reply` renders one backend reply with its metadata as headers, transport-neutral (the lean
HTTP/1.1 server writes it itself), and `unary_response` wraps that for aiohttp.
"""

from __future__ import annotations

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from multidict import CIMultiDict

from gateway.call import Call
from gateway.upstream import UnaryResult
from translators.errors import GatewayError
from translators.metadata import response_headers
from translators.response import render
from translators.routes import Binding

JSON = "application/json"


def finish_headers(response: web.StreamResponse, call: Call) -> None:
    """Headers every response carries, set before it is sent (errors and streams included)."""
    stamp_headers(response.headers, call)  # type: ignore[arg-type]  # a CIMultiDict behind the interface


def stamp_headers(headers: CIMultiDict[str], call: Call) -> None:
    """`finish_headers` for a transport-neutral answer's headers."""
    headers["X-Request-Id"] = call.request_id
    for key, value in call.response_headers.items():
        headers[key] = value


def unary_reply(call: Call, binding: Binding, result: UnaryResult) -> tuple[bytes, CIMultiDict[str]]:
    """The JSON body and headers (Content-Type, then the backend's metadata) of one backend reply."""
    try:
        reply = binding.response_class.FromString(result.body)
    except DecodeError:
        raise GatewayError(grpc.StatusCode.INTERNAL, "backend sent a response that does not decode") from None
    out = render(binding.response, reply)
    call.bytes_out = len(out)
    pairs = response_headers(result.initial_metadata, result.trailing_metadata)
    pairs.insert(0, ("Content-Type", JSON))
    return out, CIMultiDict(pairs)


def unary_response(call: Call, binding: Binding, result: UnaryResult) -> web.Response:
    out, headers = unary_reply(call, binding, result)
    return web.Response(body=out, headers=headers)
