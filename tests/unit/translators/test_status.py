"""The one gRPC-to-HTTP table and the google.rpc.Status renderer."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from translators.errors import GatewayError, MethodNotAllowed, PayloadTooLarge, UnsupportedMediaType
from translators.status import HTTP_STATUS, details_from_trailers, render_error

C = grpc.StatusCode
CANONICAL = {
    C.OK: 200, C.CANCELLED: 499, C.UNKNOWN: 500, C.INVALID_ARGUMENT: 400, C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404, C.ALREADY_EXISTS: 409, C.PERMISSION_DENIED: 403, C.UNAUTHENTICATED: 401,
    C.RESOURCE_EXHAUSTED: 429, C.FAILED_PRECONDITION: 400, C.ABORTED: 409, C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501, C.INTERNAL: 500, C.UNAVAILABLE: 503, C.DATA_LOSS: 500,
}


def test_table_is_canonical_and_complete() -> None:
    assert HTTP_STATUS == CANONICAL
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_render_shape(code: grpc.StatusCode) -> None:
    status, headers, body = render_error(GatewayError(code, "boom"))
    assert status == CANONICAL[code]
    doc = json.loads(body)
    assert doc == {"code": code.value[0], "message": "boom", "details": []}
    assert headers["Content-Type"] == "application/json"
    assert ("WWW-Authenticate" in headers) == (code is C.UNAUTHENTICATED)


def test_gateway_errors_keep_their_http_status() -> None:
    assert render_error(MethodNotAllowed("PUT", ["GET", "POST"]))[0] == 405
    assert render_error(MethodNotAllowed("PUT", ["GET"]))[1]["Allow"] == "GET"
    assert render_error(PayloadTooLarge(10))[0] == 413
    assert render_error(UnsupportedMediaType("text/xml"))[0] == 415


def _details_bin() -> bytes:
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="book.title", description="empty")]
    )
    detail = any_pb2.Any()
    detail.Pack(bad)
    return status_pb2.Status(code=3, message="bad", details=[detail]).SerializeToString()


def test_details_decoded_from_trailer() -> None:
    details = details_from_trailers([("other", "x"), ("grpc-status-details-bin", _details_bin())])
    assert details == [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "book.title", "description": "empty"}],
    }]


def test_details_from_base64_text_and_garbage() -> None:
    text = base64.b64encode(_details_bin()).decode().rstrip("=")
    assert details_from_trailers([("grpc-status-details-bin", text)])[0]["@type"].endswith("BadRequest")
    assert details_from_trailers([("grpc-status-details-bin", b"\xff\xff garbage")]) == []


def test_unknown_detail_type_is_kept_raw() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/acme.Unknown", value=b"\x08\x01")
    raw = status_pb2.Status(code=3, details=[detail]).SerializeToString()
    got = details_from_trailers([("grpc-status-details-bin", raw)])
    assert got == [{"@type": "type.googleapis.com/acme.Unknown", "value": "CAE="}]
