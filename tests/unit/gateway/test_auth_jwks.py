"""JWKS parsing, key/algorithm fit, and the refresh rules (TTL, rate-limited refetch, stale keys)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.policies.auth.jwks import (
    FAMILY,
    JwksError,
    KeySet,
    KeysUnavailable,
    RefreshingSource,
    jwks_file_source,
    parse_jwks,
)
from tests.support.tokens import ec_key, ed_key, jwks, rsa_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_keeps_signing_keys_and_drops_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    doc = jwks(rsa_key("r1"), ec_key("e1"), ed_key("d1"))
    doc["keys"] += [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "secret"},  # a shared secret has no place in a JWKS
        {**rsa_key("r1").jwk(), "kid": "private", "d": "AAAA"},  # private material
        {**rsa_key("r1").jwk(), "kid": "enc", "use": "enc"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not an object",
    ]
    keys = parse_jwks(doc, "test")
    assert sorted(keys.by_kid) == ["d1", "e1", "r1"]
    assert len(caplog.records) == 5


@pytest.mark.parametrize("doc", [[], {"keys": "x"}, {"nokeys": []}, {"keys": []}, {"keys": [{"kty": "oct"}]}])
def test_parse_refuses_documents_without_usable_keys(doc: object) -> None:
    with pytest.raises(JwksError, match="origin"):
        parse_jwks(doc, "origin")


def test_each_key_fits_only_the_algorithms_of_its_type() -> None:
    keys = parse_jwks(jwks(rsa_key("r"), ec_key("p256"), ec_key("p384", "ES384"), ed_key("ed")), "t")
    fits = {kid: sorted(a for a in FAMILY if k.fits(a)) for kid, k in keys.by_kid.items()}
    assert fits == {
        "r": ["PS256", "PS384", "PS512", "RS256", "RS384", "RS512"],
        "p256": ["ES256"],
        "p384": ["ES384"],
        "ed": ["EdDSA"],
    }
    declared = parse_jwks({"keys": [{**rsa_key("r").jwk(), "alg": "PS256"}]}, "t").by_kid["r"]
    assert declared.fits("PS256") and not declared.fits("RS256")  # a JWK's own alg pins it
    assert not keys.by_kid["r"].fits("none") and not keys.by_kid["r"].fits("HS256")


def test_a_token_without_kid_matches_only_a_lone_key() -> None:
    one = parse_jwks(jwks(rsa_key("r")), "t")
    two = parse_jwks(jwks(rsa_key("r"), ed_key("ed")), "t")
    assert one.find(None) is one.by_kid["r"] and two.find(None) is None and two.find("nope") is None


def source(fetch_results: list[KeySet | Exception], clock: FakeClock, interval: float = 10.0
           ) -> tuple[RefreshingSource, list[int]]:
    calls: list[int] = []

    async def fetch() -> KeySet:
        calls.append(1)
        await asyncio.sleep(0.01)  # long enough for concurrent callers to pile up
        result = fetch_results[min(len(calls), len(fetch_results)) - 1]
        if isinstance(result, Exception):
            raise result
        return result

    return RefreshingSource("test", 300.0, interval, fetch, clock=clock), calls


async def test_an_unknown_kid_refetches_once_per_interval_whatever_the_traffic() -> None:
    a, b = parse_jwks(jwks(rsa_key("a")), "t"), parse_jwks(jwks(rsa_key("a"), rsa_key("b")), "t")
    clock = FakeClock()
    src, calls = source([a, b], clock)
    await src.refresh(on_demand=False)
    assert len(calls) == 1 and (await src.key("a")) is not None
    clock.now += 10
    found = await asyncio.gather(*(src.key("b") for _ in range(20)))
    assert all(k is not None and k.kid == "b" for k in found) and len(calls) == 2  # one shared fetch
    results = await asyncio.gather(*(src.key(f"unknown-{n}") for n in range(50)))
    assert results == [None] * 50 and len(calls) == 2  # within the interval: none
    clock.now += 10
    await asyncio.gather(*(src.key(f"unknown-{n}") for n in range(50)))
    assert len(calls) == 3 and src.fetches == 3


async def test_failed_refreshes_keep_the_keys_and_no_keys_is_unavailable() -> None:
    a = parse_jwks(jwks(rsa_key("a")), "t")
    clock = FakeClock()
    src, calls = source([OSError("down"), a, ValueError("garbage")], clock)
    with pytest.raises(KeysUnavailable):
        await src.key("a")
    clock.now += 10
    assert (await src.key("a")) is not None
    clock.now += 10
    assert await src.key("b") is None and (await src.key("a")) is not None  # stale but kept
    assert len(calls) == 3


async def test_the_refresh_loop_runs_between_start_and_stop() -> None:
    a = parse_jwks(jwks(rsa_key("a")), "t")
    src, calls = source([a], FakeClock())
    src.cache_ttl_s = 0.02
    await src.start()
    await asyncio.sleep(0.15)
    await src.stop()
    seen = len(calls)
    assert seen >= 3
    await asyncio.sleep(0.05)
    assert len(calls) == seen


async def test_a_jwks_file_is_reread_for_an_unknown_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(rsa_key("a"))))
    src = jwks_file_source(path, 300.0, 0.1)
    assert (await src.key("a")) is not None and src.fetches == 0
    path.write_text(json.dumps(jwks(rsa_key("a"), ed_key("b"))))
    await asyncio.sleep(0.1)
    key = await src.key("b")
    assert key is not None and key.kty == "OKP" and src.fetches == 1
