"""The only gRPC-to-HTTP status table, and the one renderer of `google.rpc.Status` bodies.

Pure: gRPC code and trailers in, (HTTP status, headers, body bytes) out. The table is the canonical
mapping from `google/rpc/code.proto`, the one grpc-gateway's `HTTPStatusFromCode` uses.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the detail types)

from translators.errors import GatewayError

_C = grpc.StatusCode
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _C.OK: 200,
    # 499 is nginx's "client closed request": the caller gave up, not the server.
    _C.CANCELLED: 499,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    # A precondition the client can fix by changing the request: 400, not 412, since HTTP's
    # 412 is reserved for conditional headers (code.proto and grpc-gateway agree).
    _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}
CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}
JSON = "application/json"
DETAILS_KEY = "grpc-status-details-bin"


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def details_from_trailers(trailers: Iterable[tuple[str, str | bytes]]) -> list[dict[str, Any]]:
    """Decode `google.rpc.Status.details` from `grpc-status-details-bin`; undecodable ones are kept typed."""
    for key, value in trailers:
        if key != DETAILS_KEY:
            continue
        raw = value if isinstance(value, bytes) else base64.b64decode(value + "==")
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except DecodeError:  # a corrupt trailer must not turn into a 500 of its own
            return []
        out = []
        for any_msg in status.details:
            try:
                out.append(json_format.MessageToDict(any_msg))
            except (TypeError, KeyError, ValueError):  # type not in the pool: keep the type and the raw bytes
                out.append(
                    {"@type": any_msg.type_url, "value": base64.b64encode(any_msg.value).decode()}
                )
        return out
    return []


def render_error(err: GatewayError) -> tuple[int, dict[str, str], bytes]:
    """A `google.rpc.Status` JSON body for any error, with the status from the table."""
    status = err.http_status or http_status(err.code)
    headers = {"Content-Type": JSON, **err.headers}
    if err.code is _C.UNAUTHENTICATED and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = "Bearer"
    body = orjson.dumps({"code": err.code.value[0], "message": err.message, "details": list(err.details)})
    return status, headers, body


def render_status(code: grpc.StatusCode, message: str, details: list[Mapping[str, Any]]) -> bytes:
    """A `google.rpc.Status` JSON document, e.g. for a stream's final error chunk."""
    return orjson.dumps({"code": code.value[0], "message": message, "details": details})
