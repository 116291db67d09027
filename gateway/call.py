"""`Call`: the per-request state, made once at the edge and read by every phase.

One typed object per request (REST or WebSocket): its identity, what the client sent (headers and
query, read-only), what the policies decided (consumer, scopes, extra upstream metadata, response
headers, headers to hide from the backend), the upstream outcome and the timings that the access
log, metrics and tracing policies read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any

from translators.errors import GatewayError


@dataclass(slots=True)
class Call:
    request_id: str
    method: str
    path: str
    client_ip: str
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive for real requests
    query: Mapping[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    started_unix: float = field(default_factory=time.time)
    route: str | None = None  # the binding name, "pkg.Service.Method" (+ "#N")
    service: str | None = None
    upstream: str | None = None
    consumer: str | None = None  # who is calling, once authenticated
    scopes: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict)
    upstream_metadata: list[tuple[str, str | bytes]] = field(default_factory=list)  # added by policies
    hidden_headers: set[str] = field(default_factory=set)  # lower-case names never forwarded
    hidden_query: set[str] = field(default_factory=set)  # query keys never forwarded
    response_headers: dict[str, str] = field(default_factory=dict)  # added to any response, errors too
    trace_id: str | None = None
    status: int = 0
    grpc_code: str | None = None
    upstream_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    error: GatewayError | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # per-policy notes for the access log

    @staticmethod
    def new_request_id(given: str | None) -> str:
        # A client-supplied id is kept when it is sane, so one id spans client, gateway and backends.
        if given and len(given) <= 128 and given.isprintable():
            return given
        # 128 random bits as 32 hex digits; an id, not a secret: Python's generator (seeded from
        # os.urandom in every process, workers included) saves a getrandom syscall per request.
        return f"{getrandbits(128):032x}"

    @property
    def method_name(self) -> str | None:
        """The route without its additional-binding suffix: "pkg.Service.Method"."""
        return self.route.split("#", 1)[0] if self.route else None

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started
