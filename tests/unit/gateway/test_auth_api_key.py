"""The `api_key` policy without sockets: where the key is read, what is granted, hidden and refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from multidict import CIMultiDict

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.pipeline import Pipeline, settle
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.auth import keystore
from gateway.policies.auth.api_key import ApiKeyConfig, ApiKeyPolicy, build
from gateway.policies.base import RouteConfigs
from translators.errors import GatewayError
from translators.status import render_error

ECHO = "echo.v1.EchoService"


def call(headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
         route: str = f"{ECHO}.Echo") -> Call:
    return Call(request_id="r", method="POST", path="/v1/echo", client_ip="192.0.2.1",
                headers=CIMultiDict(headers or {}), query=query or {}, route=route, service=ECHO)


def policy(config: dict[str, Any], by_route: dict[str, dict[str, Any]] | None = None) -> ApiKeyPolicy:
    default = ApiKeyConfig.model_validate(config)
    routes = {k: ApiKeyConfig.model_validate({**config, **v}) for k, v in (by_route or {}).items()}
    return build(RouteConfigs(default, routes))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "keys.yaml"
    alice, _ = keystore.add(path, "alice", ("echo.read",), "gold")
    revoked, record = keystore.add(path, "mallory")
    keystore.revoke(path, record.id)
    return path, alice, revoked


async def refused(p: ApiKeyPolicy, c: Call) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await settle(Pipeline((p,)).on_request(c))
    return info.value


async def test_a_valid_key_grants_its_consumer(keys: tuple[Path, str, str]) -> None:
    path, alice, _ = keys
    p = policy({"key_file": str(path)})
    c = call({"x-api-key": alice})
    await settle(Pipeline((p,)).on_request(c))
    assert c.consumer == "alice" and c.scopes == {"echo.read"} and c.attributes["tier"] == "gold"
    assert c.attributes["api_key_id"].startswith("k_") and "auth_failure" not in c.attributes
    assert c.upstream_metadata == [("x-consumer-id", "alice")]
    # The key is not forwarded, and nor is anything that would arrive as x-consumer-id.
    assert {"x-api-key", "x-consumer-id", "grpc-metadata-x-consumer-id"} <= c.hidden_headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing_credentials"), ({"X-API-Key": ""}, "missing_credentials"),
     ({"X-API-Key": "pk_nope"}, "unknown_key"), ("revoked", "revoked_key")],
)
async def test_missing_unknown_and_revoked_keys_are_401(keys: tuple[Path, str, str], headers: Any,
                                                         reason: str) -> None:
    path, _, revoked = keys
    p = policy({"key_file": str(path)})
    c = call({"X-API-Key": revoked} if headers == "revoked" else headers)
    err = await refused(p, c)
    assert err.code is grpc.StatusCode.UNAUTHENTICATED and c.attributes["auth_failure"] == reason
    assert c.consumer is None and c.upstream_metadata == []
    status, response_headers, body = render_error(err)
    assert status == 401 and response_headers["WWW-Authenticate"].startswith("ApiKey")
    assert b"pk_" not in body  # the key is never echoed; revoked and unknown read the same
    assert err.message in ("an API key is required", "invalid API key")


async def test_query_parameter_when_configured_and_hidden(keys: tuple[Path, str, str]) -> None:
    path, alice, _ = keys
    p = policy({"key_file": str(path), "header": None, "query_param": "api_key"})
    c = call(query={"api_key": alice})
    await settle(Pipeline((p,)).on_request(c))
    assert c.consumer == "alice" and c.hidden_query == {"api_key"}
    off = policy({"key_file": str(path)})  # query off by default
    err = await refused(off, call(query={"api_key": alice}))
    assert err.code is grpc.StatusCode.UNAUTHENTICATED


async def test_hide_credentials_false_forwards_the_key(keys: tuple[Path, str, str]) -> None:
    path, alice, _ = keys
    p = policy({"key_file": str(path), "hide_credentials": False, "header": "X-Key", "consumer_metadata": None})
    c = call({"X-Key": alice})
    await settle(Pipeline((p,)).on_request(c))
    assert c.consumer == "alice" and c.hidden_headers == set() and c.upstream_metadata == []


async def test_anonymous_lets_a_missing_key_through_but_not_a_bad_one(keys: tuple[Path, str, str]) -> None:
    path, _, revoked = keys
    p = policy({"key_file": str(path), "anonymous": True})
    c = call()
    await settle(Pipeline((p,)).on_request(c))
    assert c.consumer is None
    assert (await refused(p, call({"X-API-Key": revoked}))).code is grpc.StatusCode.UNAUTHENTICATED


async def test_routes_can_turn_it_off(keys: tuple[Path, str, str]) -> None:
    path, _, _ = keys
    p = policy({"key_file": str(path)}, {f"{ECHO}.GetItem": {"enabled": False}})
    await settle(Pipeline((p,)).on_request(call(route=f"{ECHO}.GetItem")))
    await refused(p, call())


async def test_the_running_policy_sees_revocations(keys: tuple[Path, str, str]) -> None:
    path, alice, _ = keys
    p = policy({"key_file": str(path), "reload_interval_s": 0.05})
    await p.start()
    try:
        await settle(Pipeline((p,)).on_request(call({"X-API-Key": alice})))
        record = next(r for r in keystore.read(path).keys if r.consumer == "alice")
        keystore.revoke(path, record.id)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if p.stores[path].reloads:
                break
        err = await refused(p, c := call({"X-API-Key": alice}))
        assert err.code is grpc.StatusCode.UNAUTHENTICATED and c.attributes["auth_failure"] == "revoked_key"
    finally:
        await p.stop()
    assert p._watchers == []


async def test_grants_are_remembered_per_index_and_never_for_a_wrong_key(keys: tuple[Path, str, str]) -> None:
    path, alice, revoked = keys
    p = policy({"key_file": str(path)})
    for _ in range(2):
        await settle(Pipeline((p,)).on_request(c := call({"X-API-Key": alice})))
        assert c.consumer == "alice" and c.upstream_metadata == [("x-consumer-id", "alice")]
    for wrong in (revoked, "pk_nope"):
        await refused(p, call({"X-API-Key": wrong}))
    cache = p._default.granted
    assert list(cache) == [alice] and cache[alice][0] is p.stores[path].index
    bob, _ = keystore.add(path, "bob")
    assert p.stores[path].refresh() is True  # a new index: what was remembered is stale
    await settle(Pipeline((p,)).on_request(c := call({"X-API-Key": bob})))
    assert c.consumer == "bob" and list(cache) == [bob]
    await settle(Pipeline((p,)).on_request(c := call({"X-API-Key": alice})))
    assert c.consumer == "alice" and c.attributes["tier"] == "gold" and list(cache) == [bob, alice]


async def test_each_call_gets_its_own_notes_after_any_earlier_one(keys: tuple[Path, str, str]) -> None:
    # The notes are made once per key and copied onto a call: a call's own notes (a later policy's,
    # or one changed) never reach the next call, and a note set before stays first.
    path, alice, _ = keys
    p = policy({"key_file": str(path)})
    await settle(Pipeline((p,)).on_request(first := call({"X-API-Key": alice})))
    key_id = first.attributes["api_key_id"]
    assert list(first.attributes.items()) == [("api_key_id", key_id), ("tier", "gold")]
    first.attributes["tier"] = "changed"
    first.attributes["ratelimit"] = {"rejected": "x"}
    second = call({"X-API-Key": alice})
    second.attributes["earlier"] = 1
    await settle(Pipeline((p,)).on_request(second))
    assert list(second.attributes.items()) == [("earlier", 1), ("api_key_id", key_id), ("tier", "gold")]
    await settle(Pipeline((p,)).on_request(third := call({"X-API-Key": alice})))
    assert third.attributes == {"api_key_id": key_id, "tier": "gold"} and third.attributes is not first.attributes


def gateway_config(policies: list[dict[str, Any]], service_policies: dict[str, Any] | None = None) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
        "services": {ECHO: {"backend": "echo", "policies": service_policies or {}}},
        "policies": policies,
    })


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "policies.0.config.key_file: Field required"),
        ({"key_file": "/nonexistent/keys.yaml"}, "policies.0.config.key_file: Value error, /nonexistent/keys.yaml"),
        ({"key_file": "KEYS", "header": None}, "policies.0.config: Value error, set header, query_param or both"),
        ({"key_file": "KEYS", "header": "X Key"}, "policies.0.config.header"),
        ({"key_file": "KEYS", "consumer_metadata": "grpc-consumer"}, "policies.0.config.consumer_metadata"),
        ({"key_file": "KEYS", "reload_interval_s": 0}, "policies.0.config.reload_interval_s"),
    ],
)
def test_bad_config_names_the_key_path(keys: tuple[Path, str, str], config: dict[str, Any], expected: str) -> None:
    path = str(keys[0])
    config = {k: (path if v == "KEYS" else v) for k, v in config.items()}
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(gateway_config([{"name": "api_key", "config": config}]))
    assert expected in str(info.value)


def test_a_bad_key_file_fails_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{id: 1}]\n")
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(gateway_config([{"name": "api_key", "config": {"key_file": str(path)}}]))
    assert "policies.0.config.key_file" in str(info.value) and "keys.0.id" in str(info.value)


def test_route_overrides_share_one_store(keys: tuple[Path, str, str]) -> None:
    path = str(keys[0])
    pipeline = build_pipeline(gateway_config(
        [{"name": "api_key", "config": {"key_file": path}}], {"api_key": {"header": "X-Other"}}))
    (p,) = pipeline.policies
    assert isinstance(p, ApiKeyPolicy) and len(p.stores) == 1
