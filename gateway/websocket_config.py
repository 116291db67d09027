"""The gateway config's WebSocket blocks: gRPC streams over WebSocket, the multiplexed mode, passthrough routes.

Declared here and embedded in `GatewayConfig` (`websocket`, `websocket_mux`, `websocket_routes`) and
in its service and method blocks (`websocket`, over the global one), validated with the rest of the
file at start-up; an Origin list takes exact origins only. `GatewayConfig.websocket_for` merges the
global, service and method settings of a method once, when the route table is built
(`gateway/runtime.py`); on the request path an upgrade reads them from its route: the edge checks
Origin and credentials, then `handlers/websocket.py`, `multiplex.py` or `passthrough.py` run the
socket under its limits (message size, idle timeout, heartbeat, duration).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    return path


AbsolutePath = Annotated[str, AfterValidator(_absolute)]  # a request path: starts with '/'


def _origins(value: tuple[str, ...]) -> tuple[str, ...]:
    for origin in value:
        scheme, sep, host = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not host or "/" in host or "*" in host:
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com (no wildcards, no path)")
    return tuple(o.lower() for o in value)


class WebSocketConfig(_Model):
    """gRPC streams over WebSocket. Set globally; a service's or method's block overrides the keys it sets."""

    enabled: bool = Field(True, description="Serve this route's streaming methods to WebSocket upgrades.")
    allowed_origins: tuple[str, ...] = Field(
        (),
        description="Browser origins (scheme://host[:port]) that may open the WebSocket; an upgrade with "
        "any other Origin is a 403. An upgrade without Origin (not a browser) is allowed. No wildcard.",
    )
    max_message_bytes: int = Field(
        1024 * 1024, ge=1, le=64 * 1024 * 1024, description="Largest inbound frame; larger closes with 1009."
    )
    idle_timeout_s: float = Field(300.0, gt=0, description="No frame either way for this long closes with 1001.")
    heartbeat_s: float = Field(
        20.0, gt=0, description="Ping the client this often; no pong within half of it closes the socket."
    )
    max_duration_s: float = Field(
        3600.0, gt=0, description="gRPC deadline of a stream opened over WebSocket (instead of the route timeout)."
    )
    inbound_queue: int = Field(
        16, ge=1, le=4096,
        description="Client messages read ahead of the backend; when full the gateway stops reading the socket.",
    )
    auth_cookie: str | None = Field(
        None,
        description="Cookie whose value is the bearer token when the upgrade carries no Authorization header "
        "(browsers cannot set headers on a WebSocket).",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _origins(value)

    def over(self, override: WebSocketConfig | None) -> WebSocketConfig:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class WebSocketRoute(_Model):
    """A WebSocket route proxied as is to a WebSocket backend (no transcoding)."""

    path: AbsolutePath = Field(description="Exact request path, e.g. /chat.")
    upstream: str = Field(description="ws:// or wss:// URL of the backend.")
    allowed_origins: tuple[str, ...] = Field(
        (), description="Browser origins allowed to connect; other Origins get a 403; no wildcard."
    )
    subprotocols: tuple[str, ...] = Field(
        (), description="Subprotocols a client may ask for; those it offers are offered to the backend, "
        "and the backend's choice is the client's."
    )
    max_message_bytes: int = Field(1024 * 1024, ge=1, description="Largest message either way; larger: 1009.")
    idle_timeout_s: float = Field(300.0, gt=0, description="No message either way for this long closes both.")
    heartbeat_s: float = Field(20.0, gt=0, description="Ping both sides this often; a missing pong closes both.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Opening the backend connection; then 502.")
    max_connections_per_client: int = Field(
        100, ge=1, description="Open connections to this route per client IP; more are refused with 429."
    )

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _origins(value)

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"{value!r} is not a ws:// or wss:// URL")
        return value


class WebSocketMuxConfig(_Model):
    """Several gRPC streams over one WebSocket, on one path: subprotocol `grpc-ws.mux.json` (JSON
    frames) or `grpc-ws.mux.proto` (binary frames: stream id, kind, protobuf); docs/websocket.md.

    The socket takes Origin, credentials, heartbeat, idle timeout and message size from the global
    `websocket` block; each stream takes the rest (enabled, allowed_origins, inbound_queue,
    max_duration_s) from its method's.
    """

    enabled: bool = Field(False, description="Serve the multiplexed mode on `path`.")
    path: AbsolutePath = Field("/ws", description="Exact path of the multiplexed WebSocket upgrade.")
    max_streams: int = Field(
        100, ge=1, le=10_000,
        description="Streams open at once on one socket; an open beyond them is refused (RESOURCE_EXHAUSTED).",
    )
