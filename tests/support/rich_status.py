"""Rich gRPC errors for the demo backends: a google.rpc.Status with typed details.

Owns the one way a demo servicer fails with details, and the one way a test reads them back. A
servicer raises `StatusError(code, message, *details)`; `translate_status_errors` turns it into
`context.abort` with the serialized google.rpc.Status in the `grpc-status-details-bin` trailer,
which is what grpcio-status's `rpc_status.to_status` sends, so that package is not needed.
`status_from_metadata` reads that trailer on the client side, as `rpc_status.from_call` would. On
the request path this is the backend's half of the error the gateway renders.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_Self = TypeVar("_Self")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class StatusError(Exception):
    """A non-OK gRPC status with google.rpc detail messages (BadRequest, ResourceInfo, ...)."""

    def __init__(self, code: grpc.StatusCode, message: str, *details: Message) -> None:
        if code is grpc.StatusCode.OK:
            raise ValueError("a StatusError needs a non-OK code")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((STATUS_DETAILS_KEY, self.to_status().SerializeToString()),)


def translate_status_errors(
    handler: Callable[[_Self, _Request, grpc.aio.ServicerContext], Awaitable[_Response]],
) -> Callable[[_Self, _Request, grpc.aio.ServicerContext], Awaitable[_Response]]:
    """Wrap a unary servicer method so that a StatusError it raises aborts the RPC with details."""

    @functools.wraps(handler)
    async def translated(self: _Self, request: _Request, context: grpc.aio.ServicerContext) -> _Response:
        try:
            return await handler(self, request, context)
        except StatusError as error:
            await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
            raise AssertionError("unreachable: context.abort always raises") from error

    return translated


def bad_request(violations: Mapping[str, str]) -> error_details_pb2.BadRequest:
    """BadRequest from {field path relative to the request: what is wrong with it}."""
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations.items()
        ]
    )


def resource_info(resource_type: str, name: str, description: str) -> error_details_pb2.ResourceInfo:
    return error_details_pb2.ResourceInfo(
        resource_type=resource_type, resource_name=name, description=description
    )


def precondition_failure(kind: str, subject: str, description: str) -> error_details_pb2.PreconditionFailure:
    return error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=kind, subject=subject, description=description
            )
        ]
    )


def status_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    """The google.rpc.Status in trailing metadata, or None when the server sent none."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None
