"""The one error type above the edge, `GatewayError`, carrying a gRPC status code.

Every failure the gateway reports (its own or a backend's) is a `GatewayError`; foreign exceptions
are translated where they enter (bad input in the translators, `grpc.aio.AioRpcError` in the
upstream module). `translators.status` renders it as HTTP.

    GatewayError(code, message, details, headers)
    ├── BadRequest        INVALID_ARGUMENT, from the request translators
    ├── NotFound          NOT_FOUND, no route
    ├── MethodNotAllowed  no binding for this HTTP method on a matching path (rendered 405)
    ├── PayloadTooLarge   rendered 413
    ├── RequestTimeout    a body sent too slowly, rendered 408
    └── UnsupportedMediaType  rendered 415
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc


class GatewayError(Exception):
    """A failure carried as a gRPC status; `http_status` overrides the table where HTTP is more precise."""

    http_status: int | None = None

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.headers = dict(headers or {})


class BadRequest(GatewayError):
    def __init__(self, message: str, field: str | None = None) -> None:
        details = []
        if field is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": message}],
                }
            )
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message, details)


class NotFound(GatewayError):
    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, message)


class MethodNotAllowed(GatewayError):
    http_status = 405

    def __init__(self, method: str, allowed: Sequence[str]) -> None:
        super().__init__(
            grpc.StatusCode.UNIMPLEMENTED,
            f"method {method} not allowed on this path",
            headers={"Allow": ", ".join(sorted(set(allowed)))},
        )


class PayloadTooLarge(GatewayError):
    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body larger than {limit} bytes")


class RequestTimeout(GatewayError):
    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, f"request body not received within {seconds:g}s")


class UnsupportedMediaType(GatewayError):
    http_status = 415

    def __init__(self, content_type: str) -> None:
        super().__init__(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unsupported content type {content_type!r}: send application/json",
        )
