"""`GatewayConfig`: the one YAML file, declared, validated at start-up, then frozen.

Every model is a frozen pydantic v2 model with `extra="forbid"` and a description on each field.
`load_config` reads the file and turns any validation error into a `ConfigError` that names the
file, the key path and what was expected; the CLI prints it and exits non-zero. Relative paths in
the file are resolved against the file's own directory. The backend and WebSocket blocks are
declared in `backend_config` and `websocket_config` and re-exported here, as are the other blocks
declared beside this module (`inference_config`, `tls`, `resilience`); this module holds the root,
the listeners and server limits, descriptor sources, services and methods, policies and the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.backend_config import BackendConfig, BackendTLS, HealthCheck, OutlierConfig
from gateway.inference_config import InferenceConfig
from gateway.resilience import RetryBudgetConfig, RetryConfig
from gateway.tls import ListenerTLS
from gateway.websocket_config import WebSocketConfig, WebSocketMuxConfig, WebSocketRoute
from translators.options import TranscodeOptions

# What this module declares and the blocks it re-exports, so that no importer needs the modules beside it.
__all__ = (
    "BackendConfig", "BackendTLS", "ConfigError", "DescriptorSetSource", "DescriptorSource", "FleetConfig",
    "GatewayConfig", "HealthCheck", "HttpRuleConfig", "Listener", "MetadataConfig", "MethodConfig",
    "OutlierConfig", "PolicyEntry", "ReflectionSource", "RetryBudgetConfig", "ServerConfig", "ServiceConfig",
    "StubsSource", "TranscodingConfig", "WebSocketConfig", "WebSocketMuxConfig", "WebSocketRoute",
    "load_config",
)


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
