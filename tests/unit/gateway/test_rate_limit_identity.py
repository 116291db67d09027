"""Who a request is counted as: X-Forwarded-For trust rules and bucket keys."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.policies.rate_limit.identity import (
    KeyPart,
    OneKey,
    TrustedProxies,
    forwarded_for,
    key_part,
    parse_address,
    parse_key,
)

PROXIES = TrustedProxies((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # An untrusted peer's header is never read: a client cannot pick its own bucket.
        ("203.0.113.9", ["1.1.1.1"], "203.0.113.9"),
        # A trusted peer: the right-most untrusted entry, not the left-most the client wrote.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        # Several trusted hops are skipped.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.1.1.1, 10.2.2.2"], "198.51.100.7"),
        # A proxy that added a second header instead of appending.
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7, 10.1.1.1"], "198.51.100.7"),
        # Every hop trusted: the left-most is the client.
        ("10.0.0.2", ["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
        # Garbage ends the walk at the nearest trusted hop.
        ("10.0.0.2", ["6.6.6.6, bogus, 10.1.1.1"], "10.1.1.1"),
        ("10.0.0.2", ["bogus"], "10.0.0.2"),
        # No header, or an empty one: the peer.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", [" , "], "10.0.0.2"),
        # Ports, IPv6 and IPv4-mapped addresses.
        ("10.0.0.2", ["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("fd00::5", ["2001:db8::1, fd00::6"], "2001:db8::1"),
        ("::ffff:10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("::ffff:203.0.113.9", ["1.1.1.1"], "203.0.113.9"),
        # A peer that is not an address (a unix socket) is kept as it is.
        ("", ["1.1.1.1"], ""),
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    assert PROXIES.client_address(peer, xff) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert TrustedProxies(()).client_address("10.0.0.2", ["198.51.100.7"]) == "10.0.0.2"


def test_forwarded_for_reads_every_header() -> None:
    headers = CIMultiDict([("x-forwarded-for", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    assert forwarded_for(CIMultiDictProxy(headers)) == ["1.1.1.1", "2.2.2.2"]
    assert forwarded_for({"X-Forwarded-For": "3.3.3.3"}) == ["3.3.3.3"]
    assert forwarded_for({}) == []


def test_parse_address() -> None:
    assert str(parse_address(" 192.0.2.1 ")) == "192.0.2.1"
    assert parse_address("example.com") is None
    assert parse_address("[::1") is None


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("ip", (KeyPart("ip"),)),
        ("consumer+route", (KeyPart("consumer"), KeyPart("route"))),
        ("header:X-Tenant", (KeyPart("header", "X-Tenant"),)),
        ("global", (KeyPart("global"),)),
    ],
)
def test_parse_key(spec: str, parts: tuple[KeyPart, ...]) -> None:
    assert parse_key(spec) == parts


@pytest.mark.parametrize("spec", ["", "user", "header:", "header:X Y", "ip+ip", "global+ip"])
def test_parse_key_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_key(spec)


def test_key_parts_fall_back_to_the_address_and_hide_header_values() -> None:
    headers = {"X-Api-Key": "secret-value"}
    assert key_part(KeyPart("consumer"), None, "r", headers, "192.0.2.1") == "i=192.0.2.1"
    assert key_part(KeyPart("consumer"), "a|b", "r", headers, "192.0.2.1") == "c=a%7Cb"
    hidden = key_part(KeyPart("header", "X-Api-Key"), None, "r", headers, "192.0.2.1")
    assert hidden.startswith("h=") and "secret" not in hidden
    assert key_part(KeyPart("header", "X-Missing"), None, "r", headers, "192.0.2.1") == "i=192.0.2.1"
    assert key_part(KeyPart("route"), None, "pkg.S.M", headers, "192.0.2.1") == "r=pkg.S.M"
    assert key_part(KeyPart("consumer"), "x" * 500, "r", headers, "ip").startswith("c#")


def test_hop_cache_is_bounded() -> None:
    proxies = TrustedProxies((ipaddress.ip_network("10.0.0.0/8"),), cache_size=16)
    for i in range(1000):  # forged hops, all distinct
        hop = f"198.51.{i // 256}.{i % 256}"
        assert proxies.client_address("10.0.0.2", [hop]) == hop
    assert proxies.classify.cache_info().currsize <= 16


@pytest.mark.parametrize("part", [KeyPart("consumer"), KeyPart("ip"), KeyPart("route"), KeyPart("global"),
                                  KeyPart("header", "X-Tenant")])
def test_one_key_is_key_part_remembered(part: KeyPart) -> None:
    one = OneKey("lim", part)
    cases = [
        (consumer, route, headers, ip)
        for consumer in (None, "", "alice", "a|b", "x" * 500)
        for route in (None, "pkg.S.M")
        for headers in ({}, {"X-Tenant": ""}, {"X-Tenant": "t1"}, {"X-Tenant": "y" * 300})
        for ip in ("192.0.2.1", "2001:db8::1")
    ]
    for _ in range(2):  # the second time from the tables
        for consumer, route, headers, ip in cases:
            assert one(consumer, route, headers, ip) == "lim:" + key_part(part, consumer, route, headers, ip)


def test_one_key_tables_are_bounded() -> None:
    one = OneKey("lim", KeyPart("header", "X-Tenant"))
    for i in range(3 * OneKey.CACHED_KEYS):
        one(None, None, {"X-Tenant": f"t{i}"}, "192.0.2.1")
        one(None, None, {}, f"198.51.{i // 256 % 256}.{i % 256}")
    assert len(one.by_value) <= OneKey.CACHED_KEYS and len(one._by_ip) <= OneKey.CACHED_KEYS
    one(None, None, {"X-Tenant": "z" * 300}, "192.0.2.1")
    assert "z" * 300 not in one.by_value  # a long client-chosen value is hashed each time, never kept
