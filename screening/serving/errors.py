"""The serving errors: one tree, each class naming the protocol status it stands for.

    ServingError                 (status: a gRPC code name; http: the REST status)
    ├── InvalidInput             INVALID_ARGUMENT / 400: wrong shape, datatype, name, data or body
    ├── ModelNotFound            NOT_FOUND / 404: no such model or version
    ├── ModelNotReady            UNAVAILABLE / 503: known, but no version of it is ready
    ├── QueueFull                RESOURCE_EXHAUSTED / 429: the model's queue is at its bound
    ├── LoadFailed               INVALID_ARGUMENT / 400: a load or reload refused; what served still serves
    └── InferenceFailed          INTERNAL / 500: onnxruntime failed on a request it had accepted

The library raises only these; onnxruntime's errors are translated where they enter (`model.py`).
The gateway maps `status` to its own error type at its boundary, in one place.
"""

from __future__ import annotations


class ServingError(Exception):
    status = "INTERNAL"
    http = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    status, http = "INVALID_ARGUMENT", 400


class ModelNotFound(ServingError):
    status, http = "NOT_FOUND", 404


class ModelNotReady(ServingError):
    status, http = "UNAVAILABLE", 503


class QueueFull(ServingError):
    status, http = "RESOURCE_EXHAUSTED", 429


class LoadFailed(ServingError):
    status, http = "INVALID_ARGUMENT", 400


class InferenceFailed(ServingError):
    status, http = "INTERNAL", 500
