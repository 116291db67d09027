"""The `jwt` policy without sockets: every algorithm, every refusal, the forgeries, claims and config."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from multidict import CIMultiDict

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.auth.jwt import JwtConfig, JwtPolicy, bearer_token, build, metadata_value, scopes_of
from gateway.policies.base import RouteConfigs
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    claims,
    confused_token,
    ec_key,
    ed_key,
    hmac_token,
    jwks,
    rsa_key,
    unsigned_token,
)
from translators.errors import GatewayError
from translators.status import render_error

ECHO = "echo.v1.EchoService"
HS_ISSUER = "https://hs.test"
SECRET = "s" * 64
ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
KEYS = {
    "RS256": rsa_key("rsa"), "ES256": ec_key("p256"), "ES384": ec_key("p384", "ES384"),
    "ES512": ec_key("p521", "ES512"), "EdDSA": ed_key("ed"),
}


def signer(alg: str) -> Any:
    return KEYS["RS256"] if alg[:2] in ("RS", "PS") else KEYS[alg]


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(*KEYS.values())))
    return path


@pytest.fixture
def config(jwks_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HS_SECRET", SECRET)
    return {
        "issuers": [
            {"issuer": ISSUER, "audiences": [AUDIENCE, "other"], "algorithms": ASYMMETRIC,
             "jwks_file": str(jwks_file), "leeway_s": 5},
            {"issuer": HS_ISSUER, "audiences": [AUDIENCE], "algorithms": ["HS256", "HS384", "HS512"],
             "secret_env": "HS_SECRET", "consumer_claim": "client_id"},
        ],
        "forward_claims": {"sub": "x-user-id", "email": "x-user-email"},
        "tier_claim": "tier",
    }


def policy(config: dict[str, Any], by_route: dict[str, dict[str, Any]] | None = None) -> JwtPolicy:
    default = JwtConfig.model_validate(config)
    routes = {k: JwtConfig.model_validate({**config, **v}) for k, v in (by_route or {}).items()}
    return build(RouteConfigs(default, routes))


def call(token: str | None = None, route: str = f"{ECHO}.Echo", **headers: str) -> Call:
    h = CIMultiDict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return Call(request_id="r", method="POST", path="/v1/echo", client_ip="192.0.2.1", headers=h,
                route=route, service=ECHO)


async def refused(p: JwtPolicy, c: Call) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await p.on_request(c)
    return info.value


@pytest.mark.parametrize("alg", ASYMMETRIC)
async def test_every_asymmetric_algorithm(config: dict[str, Any], alg: str) -> None:
    p = policy(config)
    c = call(signer(alg).sign(claims(scope="echo.read echo.write", email="a@example.org", tier="gold"), alg=alg))
    await p.on_request(c)
    assert c.consumer == "alice" and c.scopes == {"echo.read", "echo.write"} and c.claims["iss"] == ISSUER
    assert c.attributes["tier"] == "gold"
    assert dict(c.upstream_metadata) == {"x-consumer-id": "alice", "x-user-id": "alice", "x-user-email": "a@example.org"}
    assert {"authorization", "x-user-id", "grpc-metadata-x-user-id", "x-consumer-id"} <= c.hidden_headers


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_every_hmac_algorithm(config: dict[str, Any], alg: str) -> None:
    p = policy(config)
    c = call(hmac_token(claims(iss=HS_ISSUER, client_id="svc-1", scp=["a", "b"]), SECRET.encode(), alg))
    await p.on_request(c)
    assert c.consumer == "svc-1" and c.scopes == {"a", "b"}


def _expect_invalid(err: GatewayError, c: Call, token: str, reason: str) -> None:
    assert err.code is grpc.StatusCode.UNAUTHENTICATED, err.message
    assert c.attributes["auth_failure"] == reason, (c.attributes, err.message)
    status, headers, body = render_error(err)
    assert status == 401
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="') and challenge.endswith('"')
    for part in token.split("."):
        if len(part) > 8:
            assert part.encode() not in body and part not in challenge
    assert c.consumer is None and c.upstream_metadata == []


def _forgeries() -> dict[str, tuple[str, str]]:
    rsa, now = rsa_key("rsa"), int(time.time())
    good = claims()
    return {
        "alg none": (unsigned_token(good, kid="rsa"), "algorithm_not_allowed"),
        "alg None": (unsigned_token(good, alg="None"), "algorithm_not_allowed"),
        "HS256 with the RSA public key as secret": (confused_token(good, rsa), "algorithm_not_allowed"),
        "RS256 at the HMAC issuer": (rsa.sign(claims(iss=HS_ISSUER, client_id="x")), "algorithm_not_allowed"),
        "signed by another key with the same kid": (rsa_key("impostor").sign(good, kid="rsa"), "bad_signature"),
        "an unknown kid": (rsa_key("impostor").sign(good), "unknown_kid"),
        "an RSA kid claimed by an EC token": (ec_key("p256").sign(good, kid="rsa"), "algorithm_not_allowed"),
        "expired": (rsa.sign(claims(ttl=-60)), "expired"),
        "not yet valid": (rsa.sign(claims(nbf=now + 600)), "not_yet_valid"),
        "issued in the future": (rsa.sign(claims(iat=now + 600)), "not_yet_valid"),
        "wrong audience": (rsa.sign(claims(aud="someone-else")), "bad_audience"),
        "wrong issuer": (rsa.sign(claims(iss="https://evil.test")), "untrusted_issuer"),
        "no exp": (rsa.sign({k: v for k, v in good.items() if k != "exp"}), "missing_claim"),
        "no aud": (rsa.sign({k: v for k, v in good.items() if k != "aud"}), "missing_claim"),
        "no sub": (rsa.sign({k: v for k, v in good.items() if k != "sub"}), "missing_claim"),
        "malformed": ("not.a.token", "malformed_token"),
        "tampered payload": (rsa.sign(good)[:-4] + "AAAA", "bad_signature"),
        "too large": (rsa.sign(claims(pad="x" * 9000)), "malformed_token"),
    }


@pytest.mark.parametrize("case", list(_forgeries()))
async def test_refusals_are_401_with_a_bearer_challenge_and_no_token_echo(config: dict[str, Any], case: str) -> None:
    token, reason = _forgeries()[case]
    c = call(token)
    _expect_invalid(await refused(policy(config), c), c, token, reason)


async def test_leeway_tolerates_small_skew(config: dict[str, Any]) -> None:
    await policy(config).on_request(call(rsa_key("rsa").sign(claims(ttl=-2))))


async def test_missing_or_non_bearer_credentials(config: dict[str, Any]) -> None:
    p = policy(config)
    for c in (call(), call(Authorization="Basic dXNlcjpwYXNz"), call(Authorization="Bearer ")):
        err = await refused(p, c)
        assert err.code is grpc.StatusCode.UNAUTHENTICATED and c.attributes["auth_failure"] == "missing_credentials"
        assert render_error(err)[1]["WWW-Authenticate"] == "Bearer"  # RFC 6750 3.1: no error code
    anonymous = policy({**config, "anonymous": True})
    c = call()
    await anonymous.on_request(c)
    assert c.consumer is None
    await refused(anonymous, call(rsa_key("rsa").sign(claims(ttl=-60))))  # a bad token still fails


async def test_options_hide_and_per_route(config: dict[str, Any]) -> None:
    p = policy({**config, "hide_credentials": False, "consumer_metadata": None},
               {f"{ECHO}.GetItem": {"enabled": False}})
    c = call(rsa_key("rsa").sign(claims()))
    await p.on_request(c)
    assert "authorization" not in c.hidden_headers and "x-consumer-id" not in dict(c.upstream_metadata)
    await p.on_request(call(route=f"{ECHO}.GetItem"))


def test_helpers() -> None:
    assert bearer_token("bearer abc") == "abc" and bearer_token("Token abc") is None and bearer_token(None) is None
    assert scopes_of({"scope": "a  b", "scp": ["c", 1, ""]}) == {"a", "b", "c"}
    assert scopes_of({"scp": "x y"}) == {"x", "y"} and scopes_of({}) == frozenset()
    assert metadata_value(True) == "true" and metadata_value(42) == "42" and metadata_value(["a", 1]) == "a,1"
    assert metadata_value({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'
    assert metadata_value("zoë@example.org") == "zo%C3%AB@example.org"
    assert metadata_value("line\nbreak") == "line%0Abreak"


def gateway_config(policies: list[dict[str, Any]]) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
        "services": {ECHO: {"backend": "echo"}},
        "policies": policies,
    })


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"algorithms": ["none"]}, "policies.0.config.issuers.0.algorithms: Value error, 'none' is never accepted"),
        ({"algorithms": ["RS256", "NONE"]}, "policies.0.config.issuers.0.algorithms"),
        ({"algorithms": ["RS257"]}, "policies.0.config.issuers.0.algorithms: Value error, unknown algorithm"),
        ({"algorithms": ["RS256", "HS256"]}, "policies.0.config.issuers.0: Value error, HS* algorithms need secret_env"),
        ({"algorithms": []}, "policies.0.config.issuers.0.algorithms"),
        ({"audiences": []}, "policies.0.config.issuers.0.audiences"),
        ({"jwks_file": "/nonexistent.json"}, "policies.0.config.issuers.0.jwks_file: Value error, /nonexistent.json"),
        ({"jwks_url": "http://idp.example/jwks"}, "policies.0.config.issuers.0.jwks_url: Value error, must be an https"),
        ({"jwks_url": "https://idp.example/jwks"}, "set exactly one of jwks_file, jwks_url, secret_env"),
        ({"jwks_file": None, "secret_env": "HS_SECRET"}, "with secret_env, algorithms must all be HS"),
        ({"jwks_file": None, "secret_env": "UNSET_VAR", "algorithms": ["HS256"]},
         "environment variable UNSET_VAR is not set"),
        ({"jwks_file": None, "secret_env": "SHORT", "algorithms": ["HS512"]}, "shorter than 64 bytes"),
        ({"leeway_s": -1}, "policies.0.config.issuers.0.leeway_s"),
    ],
)
def test_bad_issuers_fail_at_start_up_naming_the_key(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], expected: str
) -> None:
    monkeypatch.setenv("SHORT", "x" * 40)
    monkeypatch.delenv("UNSET_VAR", raising=False)
    issuer = {**config["issuers"][0], **change}
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(gateway_config([{"name": "jwt", "config": {**config, "issuers": [issuer]}}]))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"issuers": []}, "policies.0.config.issuers"),
        ({"forward_claims": {"sub": "grpc-user"}}, "forward_claims.sub: 'grpc-user' is not a metadata key"),
        ({"forward_claims": {"sub": "X-User"}}, "forward_claims.sub"),
        ({"consumer_metadata": "who-bin"}, "policies.0.config.consumer_metadata"),
        ({"surprise": 1}, "policies.0.config.surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_policy_settings_fail_at_start_up(config: dict[str, Any], change: dict[str, Any], expected: str) -> None:
    with pytest.raises(PolicyConfigError) as info:
        build_pipeline(gateway_config([{"name": "jwt", "config": {**config, **change}}]))
    assert expected in str(info.value)


def test_duplicate_issuers_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(PolicyConfigError, match="two issuers share one"):
        build_pipeline(gateway_config([{"name": "jwt", "config": {
            **config, "issuers": [config["issuers"][0], config["issuers"][0]]}}]))


def test_loopback_http_is_allowed_for_jwks_urls(config: dict[str, Any]) -> None:
    issuer = {**config["issuers"][0], "jwks_file": None, "jwks_url": "http://127.0.0.1:9/jwks"}
    p = policy({**config, "issuers": [issuer]})
    assert list(p.sources) == [("url", "http://127.0.0.1:9/jwks")]
