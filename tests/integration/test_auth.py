"""API keys, JWTs and authorization through a real gateway, real backends and a real JWKS endpoint.

Tokens are signed here with keys made here (RSA, EC, Ed25519, HMAC); the JWKS is served by a local
aiohttp app whose document a test can swap, and which counts its fetches. The echo backend's
`__metadata__` hook shows what reached the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.__main__ import main
from gateway.policies import PolicyConfigError
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    confused_token,
    ec_key,
    ed_key,
    hmac_token,
    jwks,
    rsa_key,
    unsigned_token,
)

from .conftest import Backends, Gateway, StartGateway, demo_config

ECHO = "echo.v1.EchoService"
HS_ISSUER = "https://hs.test"
SECRET = "integration-secret-" + "x" * 48


class JwksServer:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.doc)


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    try:
        yield server
    finally:
        await runner.cleanup()


def add_key(path: Path, consumer: str, capsys: pytest.CaptureFixture[str], scopes: str = "", tier: str = "") -> str:
    argv = ["keys", "add", "--file", str(path), "--consumer", consumer, "--scopes", scopes]
    capsys.readouterr()
    assert main([*argv, "--tier", tier] if tier else argv) == 0
    return capsys.readouterr().out.strip()


def key_id(path: Path, consumer: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["keys", "list", "--file", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return next(r["id"] for r in rows if r["consumer"] == consumer)


async def echo_labels(gw: Gateway, headers: dict[str, str] | None = None) -> tuple[int, Mapping[str, str], Any]:
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "__metadata__"}, headers=headers or {}) as r:
        body = await r.json()
        return r.status, r.headers.copy(), body


def _assert_refused(status: int, headers: Mapping[str, str], body: Any, token: str | None = None) -> None:
    assert status == 401, body
    assert set(body) == {"code", "message", "details"} and body["code"] == 16
    assert headers["WWW-Authenticate"].startswith("Bearer")
    if token is not None:
        assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token", error_description="')
        for part in token.split("."):
            if len(part) > 8:
                assert part not in str(body) and part not in headers["WWW-Authenticate"]


# --- API keys ------------------------------------------------------------------------------------


async def test_api_keys_from_the_cli_in_a_running_gateway(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.yaml"
    alice = add_key(keys, "alice", capsys, "echo.read", "gold")
    bob = add_key(keys, "bob", capsys)
    raw = demo_config(
        demo_backends,
        metadata={"forward_headers": ["x-api-key"]},  # would reach the backend but for hide_credentials
        policies=[{"name": "api_key", "config": {"key_file": str(keys), "reload_interval_s": 0.05}}],
    )
    gw = await start_gateway(raw)

    status, headers, body = await echo_labels(gw)
    assert status == 401 and body["code"] == 16 and headers["WWW-Authenticate"].startswith("ApiKey")
    assert headers["X-Request-Id"]

    status, _, body = await echo_labels(gw, {"X-API-Key": alice, "Grpc-Metadata-X-Consumer-Id": "admin",
                                             "X-Consumer-Id": "admin"})
    assert status == 200
    labels = body["labels"]
    assert labels["x-consumer-id"] == "alice"  # the gateway's word, not the client's
    assert "x-api-key" not in labels and alice not in str(labels)

    status, _, body = await echo_labels(gw, {"X-API-Key": alice + "x"})
    assert status == 401 and alice not in str(body)

    assert main(["keys", "revoke", "--file", str(keys), "--id", key_id(keys, "alice", capsys)]) == 0
    for _ in range(100):
        status, _, _ = await echo_labels(gw, {"X-API-Key": alice})
        if status == 401:
            break
        await asyncio.sleep(0.02)
    assert status == 401, "revocation never took effect"
    assert (await echo_labels(gw, {"X-API-Key": bob}))[0] == 200

    carol = add_key(keys, "carol", capsys)
    for _ in range(100):
        status, _, body = await echo_labels(gw, {"X-API-Key": carol})
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200 and body["labels"]["x-consumer-id"] == "carol"


async def test_api_key_in_the_query_is_hidden_from_the_backend(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    alice = add_key(keys, "alice", capsys)
    policy = {"key_file": str(keys), "query_param": "api_key"}
    hidden = await start_gateway(demo_config(demo_backends, policies=[{"name": "api_key", "config": policy}]))
    async with hidden.http.get(f"{hidden.url}/v1/items/7", params={"api_key": alice}) as r:
        assert r.status == 200, await r.text()
    # Not hidden, the key would be mapped onto the request message: an unknown field, so a 400.
    shown = await start_gateway(demo_config(demo_backends, metadata={"forward_headers": ["x-api-key"]}, policies=[
        {"name": "api_key", "config": {**policy, "hide_credentials": False}}]))
    async with shown.http.get(f"{shown.url}/v1/items/7", params={"api_key": alice}) as r:
        assert r.status == 400
    status, _, body = await echo_labels(shown, {"X-API-Key": alice})
    assert status == 200 and body["labels"]["x-api-key"] == alice


async def test_anonymous_routes_by_override(
    tmp_path: Path, demo_backends: Backends, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.yaml"
    add_key(keys, "alice", capsys)
    raw = demo_config(demo_backends, policies=[{"name": "api_key", "config": {"key_file": str(keys)}}])
    raw["services"][ECHO]["methods"] = {"GetItem": {"policies": {"api_key": {"enabled": False}}}}
    raw["services"]["library.v1.LibraryService"]["policies"] = {"api_key": {"enabled": False}}
    gw = await start_gateway(raw)
    async with gw.http.get(f"{gw.url}/v1/items/7") as r:
        assert r.status == 200
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books") as r:
        assert r.status == 200
    assert (await echo_labels(gw))[0] == 401


# --- JWT -----------------------------------------------------------------------------------------


def jwt_policy(idp: JwksServer, refetch_interval_s: float = 0.5, **changes: Any) -> dict[str, Any]:
    return {"name": "jwt", "config": {
        "issuers": [
            {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_url": idp.url, "refetch_interval_s": refetch_interval_s,
             "algorithms": ["RS256", "RS512", "PS256", "ES256", "ES384", "EdDSA"]},
            {"issuer": HS_ISSUER, "audiences": [AUDIENCE], "algorithms": ["HS256", "HS384"], "secret_env": "PC_JWT_SECRET"},
        ],
        "forward_claims": {"sub": "x-user-id", "email": "x-user-email"},
        **changes,
    }}


@pytest.fixture
def hs_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PC_JWT_SECRET", SECRET)
    return SECRET


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_jwt_every_key_type(idp: JwksServer, hs_secret: str, demo_backends: Backends,
                                  start_gateway: StartGateway) -> None:
    rsa, p256, p384, ed = rsa_key("rsa-1"), ec_key("ec-256"), ec_key("ec-384", "ES384"), ed_key("ed-1")
    idp.doc = jwks(rsa, p256, p384, ed)
    gw = await start_gateway(demo_config(demo_backends, policies=[jwt_policy(idp)]))
    tokens = {
        "RS256": rsa.sign(claims(email="a@example.org")),
        "RS512": rsa.sign(claims(email="a@example.org"), alg="RS512"),
        "PS256": rsa.sign(claims(email="a@example.org"), alg="PS256"),
        "ES256": p256.sign(claims(email="a@example.org")),
        "ES384": p384.sign(claims(email="a@example.org")),
        "EdDSA": ed.sign(claims(email="a@example.org")),
        "HS256": hmac_token(claims(iss=HS_ISSUER, email="a@example.org"), hs_secret.encode()),
        "HS384": hmac_token(claims(iss=HS_ISSUER, email="a@example.org"), hs_secret.encode(), "HS384"),
    }
    for alg, token in tokens.items():
        status, _, body = await echo_labels(gw, bearer(token))
        assert status == 200, (alg, body)
        labels = body["labels"]
        assert labels["x-user-id"] == "alice" and labels["x-consumer-id"] == "alice", alg
        assert labels["x-user-email"] == "a@example.org"
        assert "authorization" not in labels and "grpcgateway-authorization" not in labels  # hidden
    assert idp.hits == 1  # fetched once at start-up, cached since


async def test_jwt_refusals(idp: JwksServer, hs_secret: str, demo_backends: Backends,
                            start_gateway: StartGateway) -> None:
    rsa = rsa_key("rsa-1")
    idp.doc = jwks(rsa)
    gw = await start_gateway(demo_config(demo_backends, policies=[jwt_policy(idp)]))
    now = claims()["iat"]
    forged = {
        "alg none": unsigned_token(claims(), kid="rsa-1"),
        "HS256 signed with the RSA public key": confused_token(claims(), rsa),
        "HS256 with the RSA public key, at the HMAC issuer": confused_token(claims(iss=HS_ISSUER), rsa),
        "expired": rsa.sign(claims(ttl=-120)),
        "not yet valid": rsa.sign(claims(nbf=now + 600)),
        "wrong audience": rsa.sign(claims(aud="another-api")),
        "wrong issuer": rsa.sign(claims(iss="https://evil.test")),
        "HMAC token with a wrong secret": hmac_token(claims(iss=HS_ISSUER), b"w" * 64),
    }
    for case, token in forged.items():
        status, headers, body = await echo_labels(gw, bearer(token))
        assert status == 401, case
        _assert_refused(status, headers, body, token)
    status, headers, body = await echo_labels(gw)
    _assert_refused(status, headers, body)
    assert headers["WWW-Authenticate"] == "Bearer"


async def test_jwks_rotation_and_refetch_rate_limit(idp: JwksServer, hs_secret: str, demo_backends: Backends,
                                                    start_gateway: StartGateway) -> None:
    a, b = rsa_key("key-a"), ec_key("key-b")
    idp.doc = jwks(a)
    # An interval long enough that a flood of 40 requests surely fits in it, even on a slow machine.
    gw = await start_gateway(demo_config(demo_backends, policies=[jwt_policy(idp, refetch_interval_s=1.0)]))
    assert idp.hits == 1
    assert (await echo_labels(gw, bearer(a.sign(claims()))))[0] == 200
    idp.doc = jwks(b)  # the issuer rotates to key B
    await asyncio.sleep(1.05)
    loop = asyncio.get_running_loop()
    since = loop.time()  # the refetch for key B happens after this instant
    status, _, body = await echo_labels(gw, bearer(b.sign(claims(sub="bob"))))
    assert status == 200 and body["labels"]["x-user-id"] == "bob"
    assert idp.hits == 2  # exactly one refetch for the new kid

    async def unknown(n: int) -> int:
        token = SigningKey(f"bogus-{n}", "RS256", a.private).sign(claims())
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}, headers=bearer(token)) as r:
            return r.status

    # One refetch per interval at most, whatever the flood: on a loaded machine a flood can outlast
    # the interval, and then (only then) one more refetch is allowed per interval it spanned.
    assert await asyncio.gather(*(unknown(n) for n in range(40))) == [401] * 40
    spanned = int((loop.time() - since) / 1.0)
    assert 2 <= idp.hits <= 2 + spanned  # within the interval: no refetch at all
    await asyncio.sleep(1.05)
    before, since = idp.hits, loop.time()
    assert await asyncio.gather(*(unknown(n) for n in range(40))) == [401] * 40
    spanned = int((loop.time() - since) / 1.0)
    assert before + 1 <= idp.hits <= before + 1 + spanned  # the interval passed: exactly one refetch
    assert (await echo_labels(gw, bearer(a.sign(claims()))))[0] == 401  # key A is gone


async def test_jwks_endpoint_down_is_503_not_401(hs_secret: str, demo_backends: Backends,
                                                 start_gateway: StartGateway) -> None:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = JwksServer()
    down.url = f"http://127.0.0.1:{port}/jwks"
    gw = await start_gateway(demo_config(demo_backends, policies=[jwt_policy(down)]))
    status, headers, body = await echo_labels(gw, bearer(rsa_key("rsa-1").sign(claims())))
    assert status == 503 and headers["Retry-After"] and body["code"] == 14


# --- authorization -------------------------------------------------------------------------------


async def test_authorize_with_api_keys_and_tokens(
    tmp_path: Path, idp: JwksServer, hs_secret: str, demo_backends: Backends, start_gateway: StartGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "keys.yaml"
    reader = add_key(keys, "reader", capsys, "echo.read")
    writer = add_key(keys, "writer", capsys, "echo.read,echo.write")
    rsa = rsa_key("rsa-1")
    idp.doc = jwks(rsa)
    raw = demo_config(demo_backends, policies=[
        {"name": "api_key", "config": {"key_file": str(keys), "anonymous": True}},
        {"name": "jwt", "config": {**jwt_policy(idp)["config"], "anonymous": True}},
        {"name": "authorize"},
    ])
    raw["services"][ECHO]["policies"] = {"authorize": {"required_scopes": ["echo.read"]}}
    raw["services"][ECHO]["methods"] = {"Echo": {"policies": {"authorize": {"required_scopes": ["echo.write"]}}}}
    raw["services"]["library.v1.LibraryService"]["policies"] = {"authorize": {"allowed_consumers": ["writer"]}}
    gw = await start_gateway(raw)

    async def get_item(headers: dict[str, str]) -> int:
        async with gw.http.get(f"{gw.url}/v1/items/7", headers=headers) as r:
            return r.status

    async with gw.http.get(f"{gw.url}/v1/items/7") as r:
        assert r.status == 401 and (await r.json())["code"] == 16
    assert await get_item({"X-API-Key": reader}) == 200
    status, headers, body = await echo_labels(gw, {"X-API-Key": reader})
    assert status == 403 and body["code"] == 7 and "echo.write" in body["message"]
    assert headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="echo.write"'
    assert (await echo_labels(gw, {"X-API-Key": writer}))[0] == 200
    # The same rules with scopes from a token.
    assert await get_item(bearer(rsa.sign(claims(scope="echo.read")))) == 200
    assert (await echo_labels(gw, bearer(rsa.sign(claims(scope="echo.read")))))[0] == 403
    assert (await echo_labels(gw, bearer(rsa.sign(claims(scp=["echo.write"])))))[0] == 200
    # A bad token is refused even where a missing one would be let through to authorize.
    assert (await echo_labels(gw, bearer(rsa.sign(claims(ttl=-120)))))[0] == 401
    # allowed_consumers on the library service.
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books", headers={"X-API-Key": reader}) as r:
        assert r.status == 403
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books", headers={"X-API-Key": writer}) as r:
        assert r.status == 200


# --- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("jwt-none", "policies.0.config.issuers.0.algorithms: Value error, 'none' is never accepted"),
        ("jwt-mixed", "policies.0.config.issuers.0: Value error, HS* algorithms need secret_env"),
        ("api_key-missing", "policies.0.config.key_file: Value error"),
        ("authorize-scope", "policies.0.config.required_scopes"),
    ],
)
async def test_bad_auth_config_fails_at_start_up(
    tmp_path: Path, idp: JwksServer, demo_backends: Backends, start_gateway: StartGateway, policy: str,
    expected: str,
) -> None:
    issuer = jwt_policy(idp)["config"]["issuers"][0]
    entries = {
        "jwt-none": {"name": "jwt", "config": {"issuers": [{**issuer, "algorithms": ["none"]}]}},
        "jwt-mixed": {"name": "jwt", "config": {"issuers": [{**issuer, "algorithms": ["RS256", "HS256"]}]}},
        "api_key-missing": {"name": "api_key", "config": {"key_file": str(tmp_path / "nope.yaml")}},
        "authorize-scope": {"name": "authorize", "config": {"required_scopes": ["two words"]}},
    }
    with pytest.raises(PolicyConfigError) as info:
        await start_gateway(demo_config(demo_backends, policies=[entries[policy]]))
    assert expected in str(info.value)
    assert idp.hits == 0


def test_check_reports_a_bad_issuer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "descriptors: [{kind: stubs, modules: [echo.v1.echo_pb2]}]\n"
        "backends: {echo: {addresses: ['127.0.0.1:1']}}\n"
        "services: {echo.v1.EchoService: {backend: echo}}\n"
        "policies:\n"
        "  - name: jwt\n"
        "    config:\n"
        "      issuers:\n"
        "        - {issuer: 'https://idp', audiences: [api], algorithms: [none], jwks_url: 'https://idp/jwks'}\n"
    )
    assert main(["check", "-c", str(config)]) == 2
    assert "policies.0.config.issuers.0.algorithms" in capsys.readouterr().err

