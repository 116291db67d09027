"""`Runtime`: everything compiled from one `GatewayConfig`, immutable and swapped by reference.

Built once at start-up (and again on a reload): descriptors loaded from their sources, the route
table compiled, the pipeline assembled. The upstreams are not part of it: they are long-lived
resources owned by `lifecycle.py`, looked up here by backend name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.api import http_pb2
from google.protobuf import json_format

from gateway.config import (
    DescriptorSetSource,
    GatewayConfig,
    ReflectionSource,
    StubsSource,
    WebSocketConfig,
    WebSocketRoute,
)
from gateway.pipeline import Pipeline
from gateway.resilience import RetryConfig
from translators.descriptors import ServiceInfo, from_descriptor_set, from_modules, from_reflection
from translators.openapi import build_openapi
from translators.routes import RouteTable, compile_routes


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What the request path needs of a binding's config, resolved once instead of per request."""

    backend: str
    timeout_s: float
    retry: RetryConfig
    websocket: WebSocketConfig


@dataclass(frozen=True, slots=True)
class Runtime:
    config: GatewayConfig
    routes: RouteTable
    services: tuple[ServiceInfo, ...]
    pipeline: Pipeline
    forward_headers: frozenset[str]
    openapi: dict[str, Any]  # built once: the route table never changes under a runtime
    settings: dict[str, RouteSettings]  # by binding name
    passthrough: dict[str, WebSocketRoute]  # WebSocket routes proxied as they are, by exact path

    def backend_of(self, service: str) -> str:
        return self.config.services[service].backend


def load_services(config: GatewayConfig) -> list[ServiceInfo]:
    """Descriptors from every configured source, keeping only the services the config serves."""
    found: dict[str, ServiceInfo] = {}
    for source in config.descriptors:
        if isinstance(source, StubsSource):
            infos = from_modules(source.modules)
        elif isinstance(source, DescriptorSetSource):
            infos = from_descriptor_set(source.path)
        elif isinstance(source, ReflectionSource):
            backend = config.backends[source.backend]
            infos = from_reflection(backend.addresses[0], source.timeout_s, source.services)
        else:  # pragma: no cover - the discriminated union admits nothing else
            raise TypeError(source)
        for info in infos:
            found.setdefault(info.name, info)
    missing = [name for name in config.services if name not in found]
    if missing:
        raise ValueError(f"services not found in any descriptor source: {', '.join(missing)}")
    return [found[name] for name in config.services]


def build_runtime(config: GatewayConfig, pipeline: Pipeline | None = None) -> Runtime:
    services = load_services(config)
    extra = {}
    for rule in config.http_rules:
        data = {k: v for k, v in rule.model_dump().items() if v not in (None, "")}
        extra[rule.selector] = json_format.ParseDict(data, http_pb2.HttpRule())
    routes = compile_routes(services, config.options_for, extra)
    if pipeline is None:
        from gateway.policies import build_pipeline

        pipeline = build_pipeline(config)
    return Runtime(
        config=config,
        routes=routes,
        services=tuple(services),
        pipeline=pipeline,
        forward_headers=frozenset(h.lower() for h in config.metadata.forward_headers),
        openapi=build_openapi(routes),
        settings={
            b.name: RouteSettings(
                backend=config.services[b.service].backend,
                timeout_s=config.timeout_s(b.name.split("#", 1)[0]),
                retry=config.retry_for(b.name.split("#", 1)[0]),
                websocket=config.websocket_for(b.name.split("#", 1)[0]),
            )
            for b in routes.all_bindings()
        },
        passthrough={route.path: route for route in config.websocket_routes},
    )
