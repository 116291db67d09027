"""`Call`: the per-request state, made once at the edge and read by every phase.

One typed object per request (REST or WebSocket): its identity, what the client sent (headers and
query, read-only), what the policies decided (consumer, scopes, extra upstream metadata, response
headers, headers to hide from the backend), the upstream outcome and the timings that the access
log, metrics and tracing policies read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from random import getrandbits
from time import perf_counter, time
from typing import Any

from gateway.exchange import HeaderBlock
from translators.errors import GatewayError


# eq=False: a call is an identity (hashed by it: the metrics policy keeps the calls in flight in a set).
@dataclass(slots=True, init=False, eq=False)
class Call:
    request_id: str
    method: str
    path: str
    client_ip: str
    headers: Mapping[str, str]  # case-insensitive for real requests
    query: Mapping[str, str]
    started: float
    started_unix: float
    route: str | None  # the binding name, "pkg.Service.Method" (+ "#N")
    service: str | None
    upstream: str | None
    consumer: str | None  # who is calling, once authenticated
    scopes: frozenset[str]
    claims: dict[str, Any]
    upstream_metadata: list[tuple[str, str | bytes]]  # added by policies
    hidden_headers: set[str]  # lower-case names never forwarded
    hidden_query: set[str]  # query keys never forwarded
    response_headers: dict[str, str]  # added to any response, errors too
    # When response_headers holds exactly a block's fields (the policy that set them says which),
    # that block: a unary reply may then carry it rendered (`stamp_reply`) instead of merging them.
    response_block: HeaderBlock | None
    trace_id: str | None
    status: int
    grpc_code: str | None
    upstream_s: float
    bytes_in: int
    bytes_out: int
    error: GatewayError | None
    attributes: dict[str, Any]  # per-policy notes for the access log
    finished: float  # perf_counter() when completion began (the pipeline's on_complete), else 0.0
    in_flight: bool  # counted in portcullis_http_requests_in_flight by the metrics policy's general path

    # Written out rather than generated: the dataclass `__init__` tests every defaulted field against
    # its sentinel and calls a factory per container, about a third more per request (one Call each).
    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        client_ip: str,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        started: float | None = None,
        started_unix: float | None = None,
        route: str | None = None,
        service: str | None = None,
        upstream: str | None = None,
        consumer: str | None = None,
        scopes: frozenset[str] = frozenset(),
        claims: dict[str, Any] | None = None,
        upstream_metadata: list[tuple[str, str | bytes]] | None = None,
        hidden_headers: set[str] | None = None,
        hidden_query: set[str] | None = None,
        response_headers: dict[str, str] | None = None,
        trace_id: str | None = None,
        status: int = 0,
        grpc_code: str | None = None,
        upstream_s: float = 0.0,
        bytes_in: int = 0,
        bytes_out: int = 0,
        error: GatewayError | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.client_ip = client_ip
        self.headers = {} if headers is None else headers
        self.query = {} if query is None else query
        self.started = perf_counter() if started is None else started
        self.started_unix = time() if started_unix is None else started_unix
        self.route = route
        self.service = service
        self.upstream = upstream
        self.consumer = consumer
        self.scopes = scopes
        self.claims = {} if claims is None else claims
        self.upstream_metadata = [] if upstream_metadata is None else upstream_metadata
        self.hidden_headers = set() if hidden_headers is None else hidden_headers
        self.hidden_query = set() if hidden_query is None else hidden_query
        self.response_headers = {} if response_headers is None else response_headers
        self.response_block = None
        self.trace_id = trace_id
        self.status = status
        self.grpc_code = grpc_code
        self.upstream_s = upstream_s
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.error = error
        self.attributes = {} if attributes is None else attributes
        self.finished = 0.0
        self.in_flight = False

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
        return perf_counter() - self.started
