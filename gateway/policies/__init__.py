"""The policy registry: one explicit table from a policy's name to its config model and factory.

`build_pipeline` turns the config's ordered `policies:` list into a frozen `Pipeline`, validating
each policy's global settings and every per-service and per-method override at start-up. An error
names the key path (`policies.1.config.burst`, `services.X.policies.rate_limit`) and what was
expected. The order of the list is the order of the phases; there are no numeric priorities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gateway.config import GatewayConfig
from gateway.pipeline import Pipeline, Policy
from gateway.policies.base import PolicyConfig, RouteConfigs, merge


@dataclass(frozen=True, slots=True)
class PolicySpec:
    config: type[PolicyConfig]
    build: Callable[[RouteConfigs[Any]], Policy]


def _registry() -> dict[str, PolicySpec]:
    # Imported here so that each policy module stays importable on its own.
    from gateway.policies import access_log, capture, cors, metrics, rate_limit, screening, tracing
    from gateway.policies.auth import api_key, authorize, jwt

    return {
        "access_log": PolicySpec(access_log.AccessLogConfig, access_log.build),
        "cors": PolicySpec(cors.CorsConfig, cors.build),
        "api_key": PolicySpec(api_key.ApiKeyConfig, api_key.build),
        "jwt": PolicySpec(jwt.JwtConfig, jwt.build),
        "authorize": PolicySpec(authorize.AuthorizeConfig, authorize.build),
        "metrics": PolicySpec(metrics.MetricsConfig, metrics.build),
        "tracing": PolicySpec(tracing.TracingConfig, tracing.build),
        "rate_limit": PolicySpec(rate_limit.RateLimitConfig, rate_limit.build),
        "screening": PolicySpec(screening.ScreeningConfig, screening.build),
        "capture": PolicySpec(capture.CaptureConfig, capture.build),
    }


class PolicyConfigError(ValueError):
    """A policy entry or override that does not validate; the message names the key path."""


def _explain(where: str, exc: ValidationError) -> str:
    lines = [f"{where}: invalid policy config"]
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        lines.append(f"  {where}.{loc}: {error['msg']}" if loc else f"  {where}: {error['msg']}")
    return "\n".join(lines)


def build_pipeline(config: GatewayConfig) -> Pipeline:
    registry = _registry()
    policies: list[Policy] = []
    seen: set[str] = set()
    for index, entry in enumerate(config.policies):
        where = f"policies.{index}"
        spec = registry.get(entry.name)
        if spec is None:
            raise PolicyConfigError(f"{where}.name: unknown policy {entry.name!r}; known: {', '.join(sorted(registry))}")
        if entry.name in seen:
            raise PolicyConfigError(f"{where}.name: policy {entry.name!r} is listed twice")
        seen.add(entry.name)
        try:
            default = spec.config.model_validate(entry.config)
        except ValidationError as exc:
            raise PolicyConfigError(_explain(f"{where}.config", exc)) from None
        by_route: dict[str, PolicyConfig] = {}
        for route, override, at in _overrides(config, entry.name):
            try:
                by_route[route] = merge(spec.config, default, override)
            except ValidationError as exc:
                raise PolicyConfigError(_explain(at, exc)) from None
        policies.append(spec.build(RouteConfigs(default, by_route)))
    for route, names, at in _override_names(config):
        unknown = set(names) - seen
        if unknown:
            raise PolicyConfigError(f"{at}: overrides policies not in the policies list: {', '.join(sorted(unknown))}")
    return Pipeline(tuple(policies))


def _overrides(config: GatewayConfig, name: str) -> list[tuple[str, Mapping[str, Any], str]]:
    """(route key, merged override, key path) for one policy; a method override sits over its service's."""
    out: list[tuple[str, Mapping[str, Any], str]] = []
    for service_name, service in config.services.items():
        service_override = service.policies.get(name)
        if service_override is not None:
            out.append((service_name, service_override, f"services.{service_name}.policies.{name}"))
        for method_name, method in service.methods.items():
            method_override = method.policies.get(name)
            if method_override is not None:
                merged = {**(service_override or {}), **method_override}
                where = f"services.{service_name}.methods.{method_name}.policies.{name}"
                out.append((f"{service_name}.{method_name}", merged, where))
    if config.inference is not None:
        out.extend(config.inference.policy_overrides(name))
    return out


def _override_names(config: GatewayConfig) -> list[tuple[str, list[str], str]]:
    out = []
    for service_name, service in config.services.items():
        out.append((service_name, list(service.policies), f"services.{service_name}.policies"))
        for method_name, method in service.methods.items():
            at = f"services.{service_name}.methods.{method_name}.policies"
            out.append((f"{service_name}.{method_name}", list(method.policies), at))
    if config.inference is not None:
        out.extend(config.inference.policy_names())
    return out
