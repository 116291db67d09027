"""The `authorize` policy without sockets: 401 without a principal, 403 for consumers and scopes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.metrics_registry import REGISTRY
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.auth.authorize import AuthorizeConfig, AuthorizePolicy, build
from gateway.policies.base import RouteConfigs
from translators.errors import GatewayError
from translators.status import render_error

ECHO = "echo.v1.EchoService"


def policy(config: dict[str, Any], by_route: dict[str, dict[str, Any]] | None = None) -> AuthorizePolicy:
    default = AuthorizeConfig.model_validate(config)
    routes = {k: AuthorizeConfig.model_validate({**config, **v}) for k, v in (by_route or {}).items()}
    return build(RouteConfigs(default, routes))


def call(consumer: str | None = None, scopes: set[str] | None = None, route: str = f"{ECHO}.Echo") -> Call:
    c = Call(request_id="r", method="POST", path="/v1/echo", client_ip="192.0.2.1", route=route, service=ECHO)
    c.consumer = consumer
    c.scopes = frozenset(scopes or ())
    return c


async def refused(p: AuthorizePolicy, c: Call) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await p.on_request(c)
    return info.value


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("portcullis_auth_failures_total", {"reason": reason}) or 0.0


async def test_nobody_is_401_and_counted() -> None:
    before = failures("no_principal")
    for config in ({}, {"required_scopes": ["a"]}):
        c = call()
        err = await refused(policy(config), c)
        assert err.code is grpc.StatusCode.UNAUTHENTICATED and c.attributes["auth_failure"] == "no_principal"
    assert failures("no_principal") == before + 2


async def test_any_authenticated_consumer_when_nothing_else_is_asked() -> None:
    await policy({}).on_request(call("alice"))


async def test_scopes_are_all_required() -> None:
    p = policy({"required_scopes": ["echo.read", "echo.write"]})
    await p.on_request(call("alice", {"echo.read", "echo.write", "more"}))
    c = call("alice", {"echo.read"})
    err = await refused(p, c)
    assert err.code is grpc.StatusCode.PERMISSION_DENIED and c.attributes["auth_failure"] == "insufficient_scope"
    status, headers, _ = render_error(err)
    assert status == 403 and err.message == "missing scopes: echo.write"
    assert headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="echo.read echo.write"'


async def test_allowed_consumers() -> None:
    p = policy({"allowed_consumers": ["alice"]})
    await p.on_request(call("alice"))
    c = call("bob", {"anything"})
    err = await refused(p, c)
    assert err.code is grpc.StatusCode.PERMISSION_DENIED and c.attributes["auth_failure"] == "consumer_not_allowed"


async def test_per_route_settings_and_open_routes() -> None:
    p = policy({}, {f"{ECHO}.GetItem": {"enabled": False}, f"{ECHO}.Echo": {"required_scopes": ["w"]}})
    await p.on_request(call(route=f"{ECHO}.GetItem"))
    await refused(p, call("alice", route=f"{ECHO}.Echo"))
    await p.on_request(call("alice", route=f"{ECHO}.Expand"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"required_scopes": ["has space"]}, "services.echo.v1.EchoService.policies.authorize.required_scopes"),
        ({"allowed_consumers": [""]}, "services.echo.v1.EchoService.policies.authorize.allowed_consumers"),
        ({"required_scope": ["a"]}, "required_scope: Extra inputs are not permitted"),
    ],
)
def test_bad_overrides_name_the_key_path(override: dict[str, Any], expected: str) -> None:
    config = GatewayConfig.model_validate({
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
        "services": {ECHO: {"backend": "echo", "policies": {"authorize": override}}},
        "policies": [{"name": "authorize"}],
    })
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(config)
    assert expected in str(info.value)
