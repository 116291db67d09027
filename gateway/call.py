"""`Call`: the per-request state, made once at the edge and read by every phase.

One typed object per request (REST or WebSocket): its identity, the matched route, the upstream
outcome and the timings that the access log, metrics and tracing policies read.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from translators.errors import GatewayError


@dataclass(slots=True)
class Call:
    request_id: str
    method: str
    path: str
    client_ip: str
    started: float = field(default_factory=time.perf_counter)
    route: str | None = None
    service: str | None = None
    upstream: str | None = None
    principal: str | None = None
    status: int = 0
    grpc_code: str | None = None
    upstream_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    error: GatewayError | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def new_request_id(given: str | None) -> str:
        # A client-supplied id is kept when it is sane, so a trace spans client and backends.
        if given and len(given) <= 128 and given.isprintable():
            return given
        return uuid.uuid4().hex

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started
