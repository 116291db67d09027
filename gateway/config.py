"""`GatewayConfig`: the one YAML file, declared, validated at start-up, then frozen.

Every model is a frozen pydantic v2 model with `extra="forbid"` and a description on each field.
`load_config` reads the file and turns any validation error into a `ConfigError` that names the
file, the key path and what was expected; the CLI prints it and exits non-zero. Relative paths in
the file are resolved against the file's own directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.inference_config import InferenceConfig
from gateway.resilience import RetryBudgetConfig, RetryConfig
from gateway.tls import ListenerTLS
from translators.options import TranscodeOptions


class ConfigError(ValueError):
    """An invalid config file; the message is ready to print."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Model):
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    tls: ListenerTLS | None = Field(None, description="TLS termination; None serves plain HTTP.")


class ServerConfig(_Model):
    workers: int = Field(1, ge=1, le=64, description="Worker processes sharing the port (SO_REUSEPORT).")
    shutdown_grace_s: float = Field(
        10.0, ge=0, le=600, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="Largest request body accepted; larger is a 413."
    )
    max_connections: int = Field(10_000, ge=1, description="Open client connections per worker; more get a 503.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="A new connection must send a complete request head within this (slow loris)."
    )
    body_timeout_s: float = Field(30.0, gt=0, description="Reading a request body may take this long; then 408.")
    idle_timeout_s: float = Field(60.0, gt=0, description="Keep-alive connections idle longer are closed.")
    max_header_bytes: int = Field(8190, ge=256, description="Longest request line or header field.")
    max_headers: int = Field(100, ge=1, description="Most header fields in one request.")


class StubsSource(_Model):
    kind: Literal["stubs"] = "stubs"
    modules: tuple[str, ...] = Field(description="Generated `*_pb2` modules to serve, e.g. echo.v1.echo_pb2.")


class DescriptorSetSource(_Model):
    kind: Literal["descriptor_set"]
    path: Path = Field(description="FileDescriptorSet built with protoc --descriptor_set_out --include_imports.")


class ReflectionSource(_Model):
    kind: Literal["reflection"]
    backend: str = Field(description="Backend (by name) whose server reflection lists the services.")
    services: tuple[str, ...] = Field((), description="Services to take; empty takes all but grpc.* ones.")
    timeout_s: float = Field(5.0, gt=0, description="How long to wait for the backend at start-up.")


DescriptorSource = Annotated[
    StubsSource | DescriptorSetSource | ReflectionSource, Field(discriminator="kind")
]


class BackendTLS(_Model):
    ca_file: Path | None = Field(None, description="CA bundle to verify the backend; None uses the system roots.")
    cert_file: Path | None = Field(None, description="Client certificate for mTLS towards the backend.")
    key_file: Path | None = Field(None, description="Client key for mTLS towards the backend.")
    server_name: str | None = Field(None, description="Name to verify instead of the address host.")


class HealthCheck(_Model):
    enabled: bool = Field(True, description="Poll grpc.health.v1 to feed /readyz.")
    interval_s: float = Field(5.0, gt=0, description="Seconds between checks.")
    timeout_s: float = Field(1.0, gt=0, description="Deadline of one check.")
    service: str = Field("", description="Service name to ask about; empty asks about the server.")


class OutlierConfig(_Model):
    enabled: bool = Field(True, description="Eject addresses that keep failing.")
    consecutive_failures: int = Field(5, ge=1, description="UNAVAILABLE failures in a row before ejection.")
    base_ejection_s: float = Field(10.0, gt=0, description="Ejection time; multiplied by the ejection count.")
    max_ejection_multiplier: int = Field(10, ge=1, description="Cap on that multiplier.")
    max_ejection_percent: float = Field(
        100.0, gt=0, le=100, description="Most addresses ejected at once (at least one can always be)."
    )


class BackendConfig(_Model):
    addresses: tuple[str, ...] = Field(min_length=1, description="host:port list, used round robin.")
    tls: BackendTLS | None = Field(None, description="TLS towards the backend; None is plaintext.")
    health: HealthCheck = Field(default_factory=HealthCheck, description="Health checking.")
    outlier: OutlierConfig = Field(default_factory=OutlierConfig, description="Outlier ejection per address.")
    retry_budget: RetryBudgetConfig = Field(
        default_factory=RetryBudgetConfig, description="Retry throttling shared by all calls to this backend."
    )
    channels_per_address: int = Field(1, ge=1, le=16, description="HTTP/2 connections per address.")
    client: Literal["h2", "grpcio"] = Field(
        "h2",
        description="gRPC client: 'h2' is the gateway's lean asyncio HTTP/2 client (gateway/upstreams/), "
        "'grpcio' is grpc.aio channels.",
    )

    @field_validator("addresses")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return value


class TranscodingConfig(_Model):
    reject_unknown_query_parameters: bool | None = Field(None, description="400 on unknown query parameters.")
    reject_unknown_fields: bool | None = Field(None, description="400 on unknown JSON fields.")
    path_conflict: Literal["reject", "path_wins"] | None = Field(
        None, description="A path field given again with another value: 400 or path wins."
    )
    always_print_primitive_fields: bool | None = Field(None, description="Print fields holding defaults.")
    preserve_proto_field_names: bool | None = Field(None, description="snake_case names out.")
    enums_as_ints: bool | None = Field(None, description="Enums as numbers out.")
    stream_format: Literal["ndjson", "json_array"] | None = Field(
        None,
        description="Server streams over plain HTTP: newline-delimited JSON (default) or one JSON array; "
        "a client sending Accept: text/event-stream gets Server-Sent Events either way.",
    )

    def over(self, base: TranscodeOptions) -> TranscodeOptions:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return TranscodeOptions(**{**_options_dict(base), **changes})


def _options_dict(options: TranscodeOptions) -> dict[str, object]:
    return {name: getattr(options, name) for name in TranscodeOptions.__slots__}


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

    path: str = Field(description="Exact request path, e.g. /chat.")
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

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

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
    path: str = Field("/ws", description="Exact path of the multiplexed WebSocket upgrade.")
    max_streams: int = Field(
        100, ge=1, le=10_000,
        description="Streams open at once on one socket; an open beyond them is refused (RESOURCE_EXHAUSTED).",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class MethodConfig(_Model):
    timeout_ms: int | None = Field(None, ge=1, description="Deadline of this method; overrides the service's.")
    retry: RetryConfig | None = Field(None, description="Retries of this method; overrides the service's.")
    transcoding: TranscodingConfig = Field(default_factory=TranscodingConfig, description="Overrides.")
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-method policy settings, by policy name, over the service's."
    )
    websocket: WebSocketConfig | None = Field(None, description="WebSocket settings over the service's.")


class ServiceConfig(_Model):
    backend: str = Field(description="Backend name that serves this service.")
    timeout_ms: int = Field(15000, ge=1, description="Default deadline of the service's calls.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of UNAVAILABLE calls.")
    transcoding: TranscodingConfig = Field(default_factory=TranscodingConfig, description="Overrides.")
    methods: dict[str, MethodConfig] = Field(default_factory=dict, description="Per-method overrides.")
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-service policy settings, by policy name, over the global ones."
    )
    websocket: WebSocketConfig | None = Field(None, description="WebSocket settings over the global ones.")


class HttpRuleConfig(_Model):
    """A `google.api.HttpRule` for a method whose proto has none (grpc-gateway's grpc_api_configuration)."""

    selector: str = Field(description="pkg.Service.Method")
    get: str | None = None
    put: str | None = None
    post: str | None = None
    delete: str | None = None
    patch: str | None = None
    body: str = ""
    response_body: str = ""


class PolicyEntry(_Model):
    name: str = Field(description="A registered policy: access_log, cors, ...")
    config: dict[str, Any] = Field(default_factory=dict, description="Its global settings.")


class MetadataConfig(_Model):
    forward_headers: tuple[str, ...] = Field(
        (), description="Extra request headers forwarded as gRPC metadata under their own names."
    )


class FleetConfig(_Model):
    """Model activations shared by a fleet of gateways over Redis pub/sub (`gateway/fleet.py`)."""

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="redis://, rediss:// or unix:// URL of the fleet's Redis."
    )
    channel: str = Field(
        "portcullis:fleet:models", min_length=1, max_length=200,
        description="Pub/sub channel of model changes; the fleet's current state is kept under '<channel>:state'.",
    )
    gateway_id: str | None = Field(
        None, min_length=1, max_length=200,
        description="This gateway's name in the fleet (its own messages are ignored); default: host:pid:random.",
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="Longest wait for Redis when publishing or reading.")
    retry_s: float = Field(1.0, gt=0, le=300, description="Wait before subscribing again after Redis was lost.")
    keepalive_s: float = Field(
        5.0, gt=0, le=300,
        description="A subscription quiet this long sends Redis a PING; no PONG within timeout_s means Redis "
        "hung or the path to it broke without closing: the gateway subscribes again and converges.",
    )

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


class GatewayConfig(_Model):
    listen: Listener = Field(default_factory=Listener, description="Public REST listener.")
    admin: Listener = Field(default_factory=lambda: Listener(port=9901), description="Admin listener.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="Process and limits.")
    transcoding: TranscodingConfig = Field(default_factory=TranscodingConfig, description="Global defaults.")
    descriptors: tuple[DescriptorSource, ...] = Field(min_length=1, description="Where services come from.")
    backends: dict[str, BackendConfig] = Field(min_length=1, description="gRPC backends by name.")
    services: dict[str, ServiceConfig] = Field(min_length=1, description="Served services by full name.")
    http_rules: tuple[HttpRuleConfig, ...] = Field((), description="Extra HTTP rules by method selector.")
    metadata: MetadataConfig = Field(default_factory=MetadataConfig, description="Header forwarding.")
    policies: tuple[PolicyEntry, ...] = Field(
        (), description="Policies in the order their phases run; the response renderer is outside them all."
    )
    websocket: WebSocketConfig = Field(
        default_factory=WebSocketConfig, description="gRPC streams over WebSocket: global settings."
    )
    websocket_routes: tuple[WebSocketRoute, ...] = Field(
        (), description="WebSocket routes proxied to WebSocket backends."
    )
    inference: InferenceConfig | None = Field(
        None, description="Model serving by the Open Inference Protocol (/v2 and a gRPC listener); None: off."
    )
    websocket_mux: WebSocketMuxConfig = Field(
        default_factory=WebSocketMuxConfig, description="Several gRPC streams over one WebSocket (off by default)."
    )
    fleet: FleetConfig | None = Field(
        None, description="Share screening model activations with the other gateways over Redis; None: off."
    )

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for name, service in self.services.items():
            if service.backend not in self.backends:
                raise ValueError(f"services.{name}.backend: unknown backend {service.backend!r}")
        for source in self.descriptors:
            if isinstance(source, ReflectionSource) and source.backend not in self.backends:
                raise ValueError(f"descriptors: reflection backend {source.backend!r} is not defined")
        paths = [route.path for route in self.websocket_routes]
        if len(paths) != len(set(paths)):
            raise ValueError("websocket_routes: a path is listed twice")
        if self.websocket_mux.enabled and self.websocket_mux.path in paths:
            raise ValueError(f"websocket_mux.path: {self.websocket_mux.path} is also a websocket_routes path")
        return self

    def options_for(self, method: str) -> TranscodeOptions:
        """Transcoding options of "pkg.Service.Method": global, then service, then method."""
        service_name, _, method_name = method.rpartition(".")
        options = self.transcoding.over(TranscodeOptions(max_body_bytes=self.server.max_body_bytes))
        service = self.services.get(service_name)
        if service is not None:
            options = service.transcoding.over(options)
            override = service.methods.get(method_name)
            if override is not None:
                options = override.transcoding.over(options)
        return options

    def retry_for(self, method: str) -> RetryConfig:
        service_name, _, method_name = method.rpartition(".")
        service = self.services[service_name]
        override = service.methods.get(method_name)
        return override.retry if override is not None and override.retry is not None else service.retry

    def websocket_for(self, method: str) -> WebSocketConfig:
        """WebSocket settings of "pkg.Service.Method": global, then service, then method keys set."""
        service_name, _, method_name = method.rpartition(".")
        service = self.services[service_name]
        override = service.methods.get(method_name)
        return self.websocket.over(service.websocket).over(override.websocket if override else None)

    def timeout_s(self, method: str) -> float:
        service_name, _, method_name = method.rpartition(".")
        service = self.services[service_name]
        override = service.methods.get(method_name)
        ms = override.timeout_ms if override and override.timeout_ms else service.timeout_ms
        return ms / 1000.0


def load_config(path: str | Path) -> GatewayConfig:
    """Read, validate and freeze; `ConfigError` names the file, the key path and the expectation."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    from gateway.policies.files import resolve_policy_files  # here: gateway.policies imports this module

    raw = resolve_policy_files(raw, path.parent)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: invalid config"]
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg']}")
        raise ConfigError("\n".join(lines)) from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    sources = tuple(
        s.model_copy(update={"path": (base / s.path).resolve()}) if isinstance(s, DescriptorSetSource) else s
        for s in config.descriptors
    )
    backends = {}
    for name, backend in config.backends.items():
        if backend.tls is not None:
            tls = backend.tls.model_copy(
                update={
                    k: (base / v).resolve()
                    for k, v in backend.tls.model_dump().items()
                    if k.endswith("_file") and v is not None
                }
            )
            backend = backend.model_copy(update={"tls": tls})
        backends[name] = backend
    listen = config.listen
    if listen.tls is not None:
        listen_tls = listen.tls.model_copy(
            update={k: (base / v).resolve() for k, v in listen.tls.model_dump().items() if k.endswith("_file") and v}
        )
        listen = listen.model_copy(update={"tls": listen_tls})
    inference = config.inference
    if inference is not None:
        grpc_listen = inference.grpc_listen
        if grpc_listen is not None and grpc_listen.tls is not None:
            grpc_tls = grpc_listen.tls.model_copy(update={
                k: (base / v).resolve() for k, v in grpc_listen.tls.model_dump().items() if k.endswith("_file") and v
            })
            grpc_listen = grpc_listen.model_copy(update={"tls": grpc_tls})
        inference = inference.model_copy(
            update={"models_dir": (base / inference.models_dir).resolve(), "grpc_listen": grpc_listen}
        )
    return config.model_copy(
        update={"descriptors": sources, "backends": backends, "listen": listen, "inference": inference}
    )
