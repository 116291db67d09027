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
from multidict import CIMultiDict, istr

from gateway.call import Call
from gateway.exchange import HeaderBlock
from gateway.upstream import UnaryResult
from translators.errors import GatewayError
from translators.metadata import response_headers
from translators.response import render
from translators.routes import Binding

JSON = "application/json"
_REQUEST_ID = istr("X-Request-Id")  # folded once, not per response


def finish_headers(response: web.StreamResponse, call: Call) -> None:
    """Headers every response carries, set before it is sent (errors and streams included)."""
    stamp_headers(response.headers, call)  # type: ignore[arg-type]  # a CIMultiDict behind the interface


def stamp_headers(headers: CIMultiDict[str], call: Call) -> None:
    """`finish_headers` for a transport-neutral answer's headers.

    Each added header replaces any of its name. One `update` (in C) does that for all of
    `call.response_headers` at once, as a loop of assignments would, because each policy writes
    its own headers under one spelling of their names, so no two keys there differ only in case."""
    headers[_REQUEST_ID] = call.request_id
    if call.response_headers:
        headers.update(call.response_headers)


def stamp_reply(headers: CIMultiDict[str], call: Call) -> HeaderBlock | None:
    """`stamp_headers` for the headers of a unary reply (`unary_reply`'s), which hold none of a
    header block's names: when what the policies added is exactly the block one of them noted
    (`call.response_block`), that block is returned, to be sent as rendered after the headers
    (`Answer.block`), and its fields are not merged in."""
    headers[_REQUEST_ID] = call.request_id
    added = call.response_headers
    if added:
        block = call.response_block
        if block is not None and added == block.fields:
            return block
        headers.update(added)
    return None


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
